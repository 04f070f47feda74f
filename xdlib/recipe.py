"""The distillation recipe as data (as torchdistill's): each stage a spec of its loss terms and weights, what it
trains, its learning rate, epochs, patience, floor of updates and what it selects on.

A params file overrides any of it, stage by stage:

    recipe:
      hidden: {epochs: 3, lr: 3.0e-4}
      logits: {loss: {logits: 1.0, labels: 0.5}, trains: all, patience: 3}

What is left unset comes from the shared settings (`distill_lr`, `distill_epochs`, `patience`,
`phase_min_updates`) and the stage's defaults below. A stage spec is checked like any parameter: an unknown stage,
key or loss term is one line naming what is allowed. The engine (`xdlib.kd`) reads the specs; it branches on none
of the stage names.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from .errors import ConfigError
from .fields import finite_number

# Loss terms a stage can weigh (what `kd.DistillModule` computes): hidden states (through the projection, at the
# vector each side's head reads for a sequence task, at the words' first sub-tokens for a token task), attention
# maps, the teacher's logits (by `logit_loss`), and the gold labels of labelled rows.
LOSS_TERMS = ("hidden", "attention", "logits", "labels")
TRAINS = {
    "all": "every student parameter a term reaches, at once",
    "gradual": "the head first, then one more layer from the top down per phase, embeddings last",
}
SELECTS = {
    "dev": "the source task's dev score (the student's head)",
    "hidden_loss": "the hidden-state loss on the source dev rows (lower is better)",
    "none": "no selection: the final weights",
}
OVERRIDABLE = ("loss", "trains", "select", "lr", "epochs", "patience", "min_updates")


@dataclass(frozen=True)
class StageSpec:
    """One stage of the recipe. `data` and `teacher` define the stage; the rest a params file may override."""

    name: str
    loss: dict[str, float]  # term -> weight; the stage's loss is sum(weight x term mean)
    trains: str  # all | gradual
    select: str  # dev | hidden_loss | none
    data: str = "transfer"  # transfer (the teacher's outputs over the transfer set) | labelled (source train rows)
    teacher: str = "transfer"  # the fine-tuned teacher's outputs, or the pretrained one's (general)
    lr: float | None = None  # None: distill_lr
    epochs: float | None = None  # the most epochs of each phase; None: distill_epochs
    patience: int | None = None  # dev evaluations without improvement before a phase stops; None: patience
    min_updates: int | None = None  # the floor of each phase's updates; None: phase_min_updates


DEFAULTS = {
    # beyond the paper: hidden states of the *pretrained* teacher over the transfer text, before the task stages
    "general": StageSpec("general", {"hidden": 1.0}, "all", "none", teacher="general"),
    # the paper's three stages (Sec. 3; reference run_xtreme_distil.py): the projected hidden states, then the logits
    # on the transfer set, then the gold labels; logits and labels unfreeze gradually
    "hidden": StageSpec("hidden", {"hidden": 1.0}, "all", "hidden_loss"),
    "logits": StageSpec("logits", {"logits": 1.0}, "gradual", "dev"),
    "labels": StageSpec("labels", {"labels": 1.0}, "gradual", "dev", data="labelled"),
    # an ablation (distill_mode: joint): every loss at once, everything trainable
    "joint": StageSpec("joint", {"hidden": 1.0, "logits": 1.0, "labels": 1.0}, "all", "dev"),
}
STAGES = tuple(DEFAULTS)
STAGE_NAMES = ("hidden", "logits", "labels")  # the paper's stages, in order: distill_stages' default


def stages_problem(value: list) -> str | None:
    """distill_stages: stages of the recipe (joint is `distill_mode: joint`), each once; a stage that reads the
    pretrained teacher (general) first."""
    known = [name for name in DEFAULTS if name != "joint"]
    general = [name for name in value if name in DEFAULTS and DEFAULTS[name].teacher == "general"]
    general_first = not general or value.index(general[0]) == 0
    if value and all(v in known for v in value) and len(set(value)) == len(value) and general_first:
        return None
    return f"a non-empty list of distinct stages from {known}, general first if present"


def recipe_problem(value: Any) -> str | None:
    """None for a valid `recipe` override, else what is allowed (one line)."""
    if not isinstance(value, dict):
        return f"a mapping of stage -> settings; stages: {', '.join(STAGES)}"
    for stage, spec in value.items():
        if stage not in DEFAULTS:
            return f"stages from {', '.join(STAGES)} (got {stage!r})"
        if not isinstance(spec, dict):
            return f"recipe.{stage} as a mapping of settings from {list(OVERRIDABLE)}"
        for key, setting in spec.items():
            problem = _setting_problem(key, setting)
            if problem:
                return f"recipe.{stage}.{key}: {problem}"
    return None


def _setting_problem(key: str, value: Any) -> str | None:
    if key not in OVERRIDABLE:
        return f"an unknown setting; allowed: {', '.join(OVERRIDABLE)}"
    if key == "loss":
        if not isinstance(value, dict) or not value:
            return f"a non-empty mapping of loss term -> weight; terms: {', '.join(LOSS_TERMS)}"
        unknown = [t for t in value if t not in LOSS_TERMS]
        if unknown:
            return f"unknown loss term {unknown[0]!r}; allowed: {', '.join(LOSS_TERMS)}"
        weights = [finite_number(w) for w in value.values()]
        if not all(w is not None and w >= 0 for w in weights) or not any(weights):
            return "weights are finite numbers >= 0, at least one above 0"
    elif key == "trains" and value not in TRAINS:
        return f"one of {', '.join(TRAINS)}"
    elif key == "select" and value not in SELECTS:
        return f"one of {', '.join(SELECTS)}"
    elif key == "lr" and not (finite_number(value) is not None and 0 < finite_number(value) <= 1):
        return "a number in (0, 1]"
    elif key == "epochs" and not (finite_number(value) is not None and finite_number(value) >= 0):
        return "a finite number >= 0"
    elif key in ("patience", "min_updates") and not (isinstance(value, int) and not isinstance(value, bool)
                                                     and value >= (1 if key == "patience" else 0)):  # fmt: skip
        return "an integer >= 1" if key == "patience" else "an integer >= 0"
    return None


def stage_specs(cfg) -> list[StageSpec]:
    """The stages `cfg` runs, in order, each with every setting filled in: the stage's defaults, the shared
    settings, then the params file's `recipe` on top. `gradual_unfreezing: false` makes every stage train `all`;
    `attention_loss: true` adds the attention term (weight 1) to every stage that matches hidden states."""
    names = ["joint"] if cfg.distill_mode == "joint" else list(cfg.distill_stages)
    specs = []
    for name in names:
        spec = DEFAULTS[name]
        loss = dict(spec.loss)
        if cfg.attention_loss and "hidden" in loss and spec.teacher == "transfer":
            loss["attention"] = 1.0
        spec = replace(
            spec,
            loss=loss,
            trains=spec.trains if cfg.gradual_unfreezing else "all",
            lr=cfg.distill_lr,
            epochs=cfg.distill_epochs,
            patience=cfg.patience,
            min_updates=cfg.phase_min_updates,
        )
        overrides = dict((cfg.recipe or {}).get(name, {}))
        for key in ("lr", "epochs"):
            if key in overrides:
                overrides[key] = finite_number(overrides[key])
        if "loss" in overrides:
            overrides["loss"] = {term: finite_number(w) for term, w in overrides["loss"].items()}
        specs.append(replace(spec, **overrides))
    for spec in specs:
        if "attention" in spec.loss and not cfg.attention_loss:
            raise ConfigError(f"recipe.{spec.name}.loss names 'attention' but attention_loss is false; allowed: set "
                         "attention_loss: true (the teacher is then loaded with eager attention)")  # fmt: skip
        if spec.teacher == "general" and (set(spec.loss) - {"hidden"} or spec.select != "none"):
            raise ConfigError(f"recipe.{spec.name}: the pretrained teacher has no task head nor dev outputs; allowed: loss "
                         "{hidden: w} and select: none")  # fmt: skip
        if spec.data == "labelled" and set(spec.loss) - {"labels"}:
            raise ConfigError(f"recipe.{spec.name}.loss: its rows are the labelled source rows, without teacher outputs; "
                         "allowed: loss {labels: w}")  # fmt: skip
    return specs


def fixed(name: str, epochs: float, lr: float, trains: str = "all") -> StageSpec:
    """A stage of `epochs` exactly, without selection (benchmarks time a fixed number of updates)."""
    return replace(DEFAULTS[name], trains=trains, select="none", lr=lr, epochs=epochs, patience=1, min_updates=0)
