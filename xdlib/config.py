"""One typed, validated config for every stage, built from YAML files, `-p key=value` and papermill parameters.

One flat namespace of lower_snake_case keys, shared by `params/*.yaml`, the notebooks' `parameters` cells and the
fields of `Config` below. Each field carries a section:

    data      the source task and its sizes              student   the student's shape and initialisation
    train     the loop settings every stage shares       distill   the transfer set and the distillation recipe
    teacher   the teacher's model and fine-tuning        finetune  the target task and its fine-tuning
    system    paths, device, progress: never change a result, never in a run id
    diagnostics  what a distillation also records (phase_dev_eval): never in a run id

A stage reads the sections of its own chain (`STAGE_SECTIONS`); which sections enter its run id is declared by the
stage itself (`xdlib.stages`). Validation happens here, before anything heavy: unknown keys, wrong types and
out-of-range values raise one `ConfigError` naming the key, the value and what is allowed. `load_config` is the one
way a stage's config is built from a params file (`include:`, `grid:`, `target_settings:`) and overrides.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .architectures import arch_problem, parse_arch
from .errors import ConfigError
from .fields import (
    coerce,
    device_problem,
    folder_problem,
    layer_map_problem,
    local_tasks_problem,
    opt,
)
from .pooling import POOLINGS
from .recipe import STAGE_NAMES, recipe_problem, stage_specs, stages_problem
from .tracking import report_to_problem

OFFLINE_MINILM = "offline:all-MiniLM-L6-v2"
# Enters every run id: raised whenever the same config trains other weights, so an old run is never reused under a
# new meaning. 2: gradual-unfreezing phases walk their stage's data once (they replayed its first slice); losses
# are sums divided by counts over every process (token tasks and joint mode under DDP were weighted per rank).
# 3: every run trains until dev stops improving (at least patience + 1 evaluations; each gradual phase its own
# budget, at least phase_min_updates); the hidden stage matches the vector the head reads (pooling); projections
# start from a PCA of the teacher's vectors; the recipe's stage specs.
ENGINE_VERSION = 3
SECTIONS = ("data", "train", "teacher", "student", "distill", "finetune", "diagnostics", "system")
# What each stage reads: its own sections and its upstream stages' (a fine-tuning config can make its teacher).
STAGE_SECTIONS = {
    "teacher": ("data", "train", "teacher", "system"),
    "distill": ("data", "train", "teacher", "student", "distill", "diagnostics", "system"),
    "stilts": ("data", "train", "teacher", "student", "distill", "diagnostics", "system"),
    "finetune": SECTIONS,
}
UNHASHED = ("diagnostics", "system")  # sections no run id holds: they never change a result
META_KEYS = ("name", "version", "include", "grid", "description", "slurm", "target_settings")  # params-file keys


@dataclass(frozen=True)
class Config:
    """Every setting of the study: the teacher, the distillation and the fine-tuning read the same object."""

    # data
    source_task: str = opt("rt-polarity", "source task name (xdlib tasks lists them)", section="data")
    max_length: int = opt(64, "tokens per example after truncation", low=8, high=4096, section="data")
    max_train_samples: int | None = opt(None, "cap on source training examples (debug/smoke)", low=1, section="data")
    max_eval_samples: int | None = opt(
        None, "cap on dev/test examples of every task (debug/smoke)", low=1, section="data"
    )
    local_tasks: Any = opt(
        None,
        "your own tasks from files: {name: {kind, train, dev, test, format, ...}} (docs/tasks.md: your own files)",
        check=local_tasks_problem,
        section="data",
    )
    doc_stride: int = opt(128, "QA: tokens shared by consecutive windows of a long context", low=1, section="data")
    max_answer_length: int = opt(30, "QA: longest answer span in tokens", low=1, section="data")
    # train
    lr_schedule: str = opt(
        "linear",
        "linear = warmup + linear decay; constant = the paper code's",
        choices=("linear", "constant"),
        section="train",
    )
    warmup_ratio: float = opt(0.06, "fraction of steps spent warming up", low=0.0, high=1.0, section="train")
    weight_decay: float = opt(0.01, "AdamW weight decay", low=0.0, high=1.0, section="train")
    grad_accum_steps: int = opt(1, "gradient accumulation steps", low=1, section="train")
    evals_per_epoch: int = opt(1, "dev evaluations per epoch (model selection on dev)", low=1, section="train")
    patience: int = opt(5, "stop after this many dev evaluations without improvement", low=1, section="train")
    seed: int = opt(0, "seed for data order, dropout and initialisation", low=0, section="train")
    pooling: str = opt(
        "auto",
        "what a sequence head reads: auto (the model's own: mean for sentence-transformers models, from their "
        "1_Pooling/config.json; else [CLS]), cls or mean",
        choices=POOLINGS,
        section="train",
    )
    # teacher
    teacher_model: str = opt(OFFLINE_MINILM, "HF id, local folder, or offline:<name> packaged model", section="teacher")
    teacher_sources: list[str] = opt(
        [],
        "multi-source teacher: tasks it is fine-tuned on first, in order, each with its own head, then source_task",
        section="teacher",
    )
    teacher_epochs: float = opt(1.0, "epochs of teacher fine-tuning", low=0.0, section="teacher")
    teacher_lr: float = opt(5e-5, "peak learning rate", low=0.0, high=1.0, section="teacher")
    teacher_batch_size: int = opt(32, "examples per optimizer step (before accumulation)", low=1, section="teacher")
    # student
    student_arch: str = opt(
        "l3-h384",
        "l<layers>-h<hidden>; registered: l3-h384, l6-h256, l6-h384, l12-h384",
        check=arch_problem,
        section="student",
    )
    student_heads: int | None = opt(
        None, "attention heads (default: the architecture table or hidden/64)", low=1, section="student"
    )
    student_init: str = opt(
        OFFLINE_MINILM, "random, or a model (HF id, folder, offline:<name>) to copy layers from", section="student"
    )
    student_layers: list[int] | None = opt(
        None, "which layers of student_init to copy (default: evenly spaced)", section="student"
    )
    student_embeddings: str = opt(
        "init",
        "init = from student_init; pca = teacher word embeddings PCA-compressed",
        choices=("init", "pca"),
        section="student",
    )
    freeze_word_embeddings: bool = opt(
        False, "keep word embeddings frozen (the paper's multilingual recipe)", section="student"
    )
    # distill
    augmentation: list[str] = opt([], "augmentation resources added to the source inputs", section="distill")
    augment_max_examples: int | None = opt(
        None, "cap on examples taken from each augmentation resource", low=1, section="distill"
    )
    augment_ratio: float | None = opt(
        None,
        "mixing ratio: at most this many rows per source row from each augmentation resource",
        low=0.001,
        section="distill",
    )
    augment_mlm_model: str = opt(
        "bert-base-uncased", "masked LM (HF id / folder) for the mlm augmentation", section="distill"
    )
    distill_stages: list[str] = opt(
        list(STAGE_NAMES),
        "stages in order: hidden, logits, labels; general first: match the pretrained teacher on the transfer text",
        check=stages_problem,
        section="distill",
    )
    distill_mode: str = opt(
        "stagewise",
        "stagewise (the paper's) or joint (all losses, all trainable: ablation)",
        choices=("stagewise", "joint"),
        section="distill",
    )
    layer_map: Any = opt(
        "top",
        "student layer i -> teacher layer: top, uniform or an explicit list",
        check=layer_map_problem,
        section="distill",
    )
    attention_loss: bool = opt(
        False, "add attention-map MSE over the top layers to the hidden stage", section="distill"
    )
    logit_loss: str = opt("mse", "mse (the paper's) or kl (with temperature)", choices=("mse", "kl"), section="distill")
    temperature: float = opt(1.0, "softmax temperature for the kl logit loss", low=1e-3, section="distill")
    gradual_unfreezing: bool = opt(
        True, "unfreeze from the top layer down, one layer per phase, in logits/labels", section="distill"
    )
    unfreeze_embeddings_last: bool = opt(
        True, "embeddings are the last unit unfrozen (else with the bottom layer)", section="distill"
    )
    distill_epochs: float = opt(
        1.0,
        "the most epochs of each phase over the stage data (a phase stops when dev stops improving)",
        low=0.0,
        section="distill",
    )
    distill_lr: float = opt(1e-4, "peak learning rate for distillation", low=0.0, high=1.0, section="distill")
    distill_batch_size: int = opt(32, "examples per optimizer step", low=1, section="distill")
    phase_min_updates: int = opt(
        30,
        "the floor of every distillation phase's updates: its budget, and early stopping waits for it",
        low=0,
        section="distill",
    )
    recipe: Any = opt(
        {},
        "per-stage overrides of the distillation recipe: {stage: {loss: {term: weight}, trains, select, lr, epochs, "
        "patience, min_updates}} (docs/parameters.md: the recipe)",
        check=recipe_problem,
        section="distill",
    )
    projection_init: str = opt(
        "pca",
        "the student->teacher width projection starts from a PCA of the teacher's cached vectors, or random",
        choices=("pca", "random"),
        section="distill",
    )
    cache_dtype: str = opt(
        "float16", "storage dtype of cached teacher outputs", choices=("float16", "float32"), section="distill"
    )
    # finetune
    target_task: str = opt("rt-polarity", "target task name", section="finetune")
    student: str = opt(
        "distilled",
        "distilled (this config's distillation run), undistilled (same arch and init, "
        "no distillation: baseline), stilts (the undistilled student fine-tuned on the source task first: "
        "baseline), teacher (the teacher's pretrained model: baseline), or an HF id / folder",
        section="finetune",
    )
    target_max_train_samples: int | None = opt(None, "cap on target training examples", low=1, section="finetune")
    finetune_epochs: float = opt(2.0, "epochs on the target task", low=0.0, section="finetune")
    finetune_lr: float = opt(1e-4, "peak learning rate", low=0.0, high=1.0, section="finetune")
    finetune_batch_size: int = opt(32, "examples per optimizer step", low=1, section="finetune")
    finetune_seed: int | None = opt(
        None, "seed of the fine-tuning alone (data order, dropout, new head); default: seed", low=0, section="finetune"
    )
    finetune_pooling: str = opt(
        "auto",
        "what the target head reads: auto (as `pooling` says: the model's own), cls ([CLS], as a plain "
        "AutoModelForSequenceClassification reads any checkpoint) or mean",
        choices=POOLINGS,
        section="finetune",
    )
    save_model: bool = opt(
        False, "keep the fine-tuned model (HF folder model/ in the run): to export or serve it", section="finetune"
    )
    finetune_word_embeddings: bool = opt(
        True,
        "train the word embeddings on the target (false: frozen; a 3-layer student's update takes half the time)",
        section="finetune",
    )
    # system
    device: str = opt("auto", "auto, cpu, cuda, cuda:N or mps", check=device_problem, section="system")
    runs_dir: str = opt("results/runs", "where run folders are written", check=folder_problem, section="system")
    cache_dir: str = opt("results/cache", "teacher-output caches", check=folder_problem, section="system")
    progress: bool = opt(True, "show tqdm progress bars", section="system")
    report_to: Any = opt(
        "none",
        "experiment tracking, as transformers' report_to: none, tensorboard (RUN_DIR/tensorboard), mlflow "
        "(MLFLOW_TRACKING_URI, else mlruns/ beside runs_dir), or a list of them",
        check=report_to_problem,
        section="system",
    )
    checkpoint_every: int = opt(200, "optimizer steps between resumable checkpoints", low=1, section="system")
    study: str = opt("", "the params file: name and version (recorded with each run, not in its id)", section="system")
    phase_dev_eval: bool = opt(
        False,
        "score every phase on dev, also one with a single evaluation (which selects nothing: diagnostics only)",
        section="diagnostics",
    )

    # ---- construction -------------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, values: dict[str, Any], stage: str = "finetune") -> Config:
        """A checked config from flat values; `stage` limits the keys to the sections that stage reads."""
        values = dict(values)
        meta = {k: values.pop(k) for k in META_KEYS if k in values}
        if "version" in meta and not values.get("study"):  # which study file made the run: recorded with it
            values["study"] = f"{meta.get('name', '')} version {meta['version']}".strip()
        known = {f.name: f for f in fields_of(stage)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ConfigError(
                f"unknown parameter(s) {', '.join(map(repr, unknown))} for the {stage} stage; "
                f"known: {', '.join(sorted(known))}"
            )
        hints = typing.get_type_hints(cls)
        clean = {k: coerce(k, v, hints[k], known[k].metadata) for k, v in values.items()}
        cfg = cls(**clean)
        cfg.validate()
        return cfg

    def replace(self, **changes: Any) -> Config:
        return type(self).from_dict({**self.to_dict(), **changes})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def section(self, *names: str) -> dict[str, Any]:
        """The fields of these sections, by name (sorted)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.metadata["section"] in names}

    def validate(self) -> None:
        """Cross-field checks; per-field checks happen in `from_dict`."""
        layers, _ = parse_arch(self.student_arch)
        if isinstance(self.layer_map, list) and len(self.layer_map) != layers + 1:
            raise ConfigError(
                f"layer_map={self.layer_map!r} has {len(self.layer_map)} entries; {self.student_arch} needs "
                f"{layers + 1} (embedding output + one per layer)"
            )
        if self.student_layers is not None:
            if len(self.student_layers) != layers:
                raise ConfigError(
                    f"student_layers={self.student_layers!r} has {len(self.student_layers)} entries; "
                    f"{self.student_arch} has {layers} layers"
                )
            if self.student_init == "random":
                raise ConfigError("student_layers is set but student_init='random'; allowed: a model to copy from")
        stage_specs(self)  # the recipe's cross-field rules (e.g. attention needs attention_loss)
        if self.student_embeddings == "pca" and self.student_init != "random":
            raise ConfigError(
                f"student_embeddings='pca' needs student_init='random' (got {self.student_init!r}): the PCA "
                "embeddings replace the init's vocabulary"
            )

    def precision(self) -> str:
        """bf16 where the stage computes on CUDA (autocast), else fp32: runs on either never share an id."""
        if self.device.startswith("cuda"):
            return "bf16"
        if self.device == "auto":
            import torch  # only here: configs are checked before heavy imports

            return "bf16" if torch.cuda.is_available() else "fp32"
        return "fp32"


def fields_of(stage: str = "finetune") -> list[dataclasses.Field]:
    """The config fields a stage reads, in declaration order."""
    if stage not in STAGE_SECTIONS:
        raise ConfigError(f"unknown stage {stage!r}; known: {', '.join(STAGE_SECTIONS)}")
    return [f for f in dataclasses.fields(Config) if f.metadata["section"] in STAGE_SECTIONS[stage]]


# ---- params files ---------------------------------------------------------------------------------------------


def load_config(stage: str, params: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """The validated config of `stage` from a params file (its grid left out; for fine-tuning, its
    target_settings applied) with `overrides` on top. The file may hold keys of later stages, which this stage
    ignores, but never unknown ones; `overrides` must be keys this stage reads."""
    fields_of(stage)  # an unknown stage, before the file is read
    values = load_params(params) if params else {}
    values.pop("grid", None)
    Config.from_dict(values)  # a study file may hold downstream keys; unknown ones still fail
    known = {f.name for f in fields_of(stage)}
    settings = values.get("target_settings")
    values = {k: v for k, v in values.items() if k in known or k in ("name", "version")}  # name, version -> study
    overrides = dict(overrides or {})
    if stage == "finetune" and settings:  # the file's target_settings, then the overrides on top
        values = with_target_settings({**values, **overrides, "target_settings": settings})
        values.pop("target_settings")
    return Config.from_dict({**values, **overrides}, stage)


def load_params(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a params YAML file; `include: other.yaml` (relative to this file) is read first and overridden
    key by key; a `grid:` in the including file replaces the included file's grid."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"params file {str(path)!r} does not exist")
    if path.resolve() in _seen:
        raise ConfigError(f"params file {str(path)!r} includes itself (cycle: {' -> '.join(map(str, _seen))})")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"params file {str(path)!r} is not UTF-8 text (byte {err.start}); allowed: a UTF-8 YAML file"
        ) from None
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"params file {str(path)!r} is not valid YAML{line}: {problem}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"params file {str(path)!r} must hold a mapping of key: value, got {type(values).__name__}")
    _anchor_paths(values, path.parent)
    include = values.pop("include", None)
    if include is None:
        return values
    base = load_params(path.parent / include, _seen + (path.resolve(),))
    base_grid, own_grid = base.pop("grid", None), values.pop("grid", None)
    grid = own_grid if own_grid is not None else base_grid  # a file's own grid replaces the included one
    merged = {**base, **values}
    if grid:
        merged["grid"] = grid
    return merged


def _anchor_paths(values: dict[str, Any], folder: Path) -> None:
    """Relative data paths in a params file (local_tasks' train/dev/test files) are relative to that file."""
    tasks = values.get("local_tasks")
    if not isinstance(tasks, dict):
        return
    for spec in tasks.values():
        if not isinstance(spec, dict):
            continue
        for split in ("train", "dev", "test"):
            value = spec.get(split)
            if isinstance(value, str) and value and not Path(value).expanduser().is_absolute():
                spec[split] = str(folder / value)


def with_target_settings(values: dict[str, Any]) -> dict[str, Any]:
    """A params file's `target_settings: {task: {key: value}}` applied to a cell whose target_task is that task
    (e.g. more, smaller fine-tuning steps for a token task); the result is an ordinary config, so run ids see it."""
    settings = values.get("target_settings") or {}
    if not isinstance(settings, dict) or not all(isinstance(v, dict) for v in settings.values()):
        raise ConfigError("target_settings must map a target task name to a mapping of parameter: value")
    return {**values, **settings.get(values.get("target_task"), {})}


# ---- helpers -------------------------------------------------------------------------------------------------


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-")[:40]


def describe(stage: str = "finetune") -> list[tuple[str, Any, str]]:
    """(name, default, help) for every field a stage reads: used by `xdlib params` and the docs."""
    out = []
    for f in fields_of(stage):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        out.append((f.name, default, f.metadata["help"]))
    return out
