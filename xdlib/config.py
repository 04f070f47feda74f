"""Typed, validated configs for each stage, built from YAML files and papermill parameters.

One flat namespace of lower_snake_case keys, shared by `params/*.yaml`, the notebooks' `parameters` cells and
the dataclass fields below. Each stage's config *extends* its upstream stage's config, so a distillation config
can build (or find) its teacher, and a fine-tuning config its student:

    TeacherConfig  <-  DistillConfig  <-  FinetuneConfig

Validation happens here, before anything heavy: unknown keys, wrong types and out-of-range values raise one
`ConfigError` naming the key, the value and what is allowed.

Run ids: a stage's id is a short hash of the fields it *owns* (defaults filled, keys sorted) plus its upstream
run id. Fields marked `id=False` (paths, device, progress bars) cannot change the result and are left out.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .fields import (
    STAGE_NAMES,
    STUDENT_ARCH_PATTERN,
    arch_problem,
    coerce,
    device_problem,
    folder_problem,
    layer_map_problem,
    local_tasks_problem,
    opt,
    stages_problem,
)

OFFLINE_MINILM = "offline:all-MiniLM-L6-v2"
# Enters every run id: raised whenever the same config trains other weights, so an old run is never reused under a
# new meaning. 2: gradual-unfreezing phases walk their stage's data once (they replayed its first slice); losses
# are sums divided by counts over every process (token tasks and joint mode under DDP were weighted per rank).
ENGINE_VERSION = 2


@dataclass(frozen=True)
class TeacherConfig:
    """Stage 1 of the study: fine-tune the teacher on the source task."""

    # data
    source_task: str = opt("rt-polarity", "source task name (python -m xdlib tasks lists them)")
    max_length: int = opt(64, "tokens per example after truncation", low=8, high=4096)
    max_train_samples: int | None = opt(None, "cap on source training examples (debug/smoke)", low=1)
    max_eval_samples: int | None = opt(None, "cap on dev/test examples of every task (debug/smoke)", low=1)
    local_tasks: Any = opt(
        None,
        "your own tasks from files: {name: {kind, train, dev, test, format, ...}} (README: local files)",
        check=local_tasks_problem,
    )
    doc_stride: int = opt(128, "QA: tokens shared by consecutive windows of a long context", low=1)
    max_answer_length: int = opt(30, "QA: longest answer span in tokens", low=1)
    # model
    teacher_model: str = opt(OFFLINE_MINILM, "HF id, local folder, or offline:<name> packaged model")
    teacher_sources: list[str] = opt(
        [], "multi-source teacher: tasks it is fine-tuned on first, in order, each with its own head, then source_task"
    )
    # optim
    teacher_epochs: float = opt(1.0, "epochs of teacher fine-tuning", low=0.0)
    teacher_lr: float = opt(5e-5, "peak learning rate", low=0.0, high=1.0)
    teacher_batch_size: int = opt(32, "examples per optimizer step (before accumulation)", low=1)
    lr_schedule: str = opt(
        "linear", "linear = warmup + linear decay; constant = the paper code's", choices=("linear", "constant")
    )
    warmup_ratio: float = opt(0.06, "fraction of steps spent warming up", low=0.0, high=1.0)
    weight_decay: float = opt(0.01, "AdamW weight decay", low=0.0, high=1.0)
    grad_accum_steps: int = opt(1, "gradient accumulation steps", low=1)
    evals_per_epoch: int = opt(1, "dev evaluations per epoch (model selection on dev)", low=1)
    patience: int = opt(5, "stop after this many dev evaluations without improvement", low=1)
    seed: int = opt(0, "seed for data order, dropout and initialisation", low=0)
    # system (cannot change the result: left out of run ids)
    device: str = opt("auto", "auto, cpu, cuda, cuda:N or mps", id=False, check=device_problem)
    runs_dir: str = opt("results/runs", "where run folders are written", id=False, check=folder_problem)
    cache_dir: str = opt("results/cache", "teacher-output caches", id=False, check=folder_problem)
    progress: bool = opt(True, "show tqdm progress bars", id=False)
    checkpoint_every: int = opt(200, "optimizer steps between resumable checkpoints", low=1, id=False)
    study: str = opt("", "the params file: name and version (recorded with each run, not in its id)", id=False)

    # ---- construction -------------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TeacherConfig:
        values = dict(values)
        meta = {k: values.pop(k) for k in ("name", "version", "include", "grid", "description", "slurm",
                                           "target_settings") if k in values}  # params-file metadata # fmt: skip
        if "version" in meta and not values.get("study"):  # which study file made the run: recorded with it
            values["study"] = f"{meta.get('name', '')} version {meta['version']}".strip()
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ConfigError(
                f"unknown parameter(s) {', '.join(map(repr, unknown))} for {cls.__name__}; "
                f"known: {', '.join(sorted(known))}"
            )
        hints = typing.get_type_hints(cls)
        clean = {k: coerce(k, v, hints[k], known[k].metadata) for k, v in values.items()}
        cfg = cls(**clean)
        cfg.validate()
        return cfg

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: dict[str, Any] | None = None) -> TeacherConfig:
        from .params import load_config

        return load_config(cls.stage, path, overrides)

    def replace(self, **changes: Any) -> TeacherConfig:
        return type(self).from_dict({**self.to_dict(), **changes})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        """Cross-field checks; per-field checks happen in `from_dict`."""

    # ---- run ids --------------------------------------------------------------------------------------------
    stage: typing.ClassVar[str] = "teacher"

    def own_fields(self) -> list[str]:
        parent = type(self).__mro__[1]
        inherited = {f.name for f in dataclasses.fields(parent)} if dataclasses.is_dataclass(parent) else set()
        return [f.name for f in dataclasses.fields(self) if f.name not in inherited and f.metadata["id"]]

    def id_fields(self) -> dict[str, Any]:
        fields = {k: getattr(self, k) for k in sorted(self.own_fields())}
        if not fields.get("teacher_sources", True):  # a single-source teacher keeps the id it had before the field
            del fields["teacher_sources"]
        return fields

    def upstream(self) -> TeacherConfig | None:
        return None

    def run_id(self) -> str:
        up = self.upstream()
        payload = {"stage": self.stage, "fields": self.id_fields(), "upstream": up.run_id() if up else None,
                   "precision": self.precision(), "task_version": self.task_version(),
                   "engine": ENGINE_VERSION}  # fmt: skip
        digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:10]
        return f"{_slug(self.label())}-{digest}"

    def label(self) -> str:
        return self.source_task

    def precision(self) -> str:
        """bf16 where the stage computes on CUDA (autocast), else fp32: runs on either never share an id."""
        if self.device.startswith("cuda"):
            return "bf16"
        if self.device == "auto":
            import torch  # only here: configs are checked before heavy imports

            return "bf16" if torch.cuda.is_available() else "fp32"
        return "fp32"

    def task_version(self) -> str:
        """The version of the task this stage trains on: a changed reader or split makes new runs."""
        from .tasks import get_task

        name = getattr(self, "target_task", None) if self.stage == "finetune" else self.source_task
        try:
            return get_task(name, self.local_tasks).version
        except Exception:  # an unknown name is reported by preflight, with the known ones
            return "?"

    def teacher_config(self) -> TeacherConfig:
        names = {f.name for f in dataclasses.fields(TeacherConfig)}
        return TeacherConfig(**{k: v for k, v in self.to_dict().items() if k in names})


@dataclass(frozen=True)
class DistillConfig(TeacherConfig):
    """Stage 2: distil the fine-tuned teacher into a student over the transfer set, stage by stage."""

    # student
    student_arch: str = opt(
        "l3-h384", "l<layers>-h<hidden>; registered: l6-h256, l6-h384, l12-h384", check=arch_problem
    )
    student_heads: int | None = opt(None, "attention heads (default: the architecture table or hidden/64)", low=1)
    student_init: str = opt(OFFLINE_MINILM, "random, or a model (HF id, folder, offline:<name>) to copy layers from")
    student_layers: list[int] | None = opt(None, "which layers of student_init to copy (default: evenly spaced)")
    student_embeddings: str = opt(
        "init", "init = from student_init; pca = teacher word embeddings PCA-compressed", choices=("init", "pca")
    )
    freeze_word_embeddings: bool = opt(False, "keep word embeddings frozen (the paper's multilingual recipe)")
    # transfer set
    augmentation: list[str] = opt([], "augmentation resources added to the source inputs")
    augment_max_examples: int | None = opt(None, "cap on examples taken from each augmentation resource", low=1)
    augment_ratio: float | None = opt(
        None, "mixing ratio: at most this many rows per source row from each augmentation resource", low=0.001
    )
    augment_mlm_model: str = opt("bert-base-uncased", "masked LM (HF id / folder) for the mlm augmentation")
    # recipe
    distill_stages: list[str] = opt(
        list(STAGE_NAMES),
        "stages in order: hidden, logits, labels; general first: match the pretrained teacher on the transfer text",
        check=stages_problem,
    )
    distill_mode: str = opt(
        "stagewise",
        "stagewise (the paper's) or joint (all losses, all trainable: ablation)",
        choices=("stagewise", "joint"),
    )
    layer_map: Any = opt(
        "top", "student layer i -> teacher layer: top, uniform or an explicit list", check=layer_map_problem
    )
    attention_loss: bool = opt(False, "add attention-map MSE over the top layers to the hidden stage")
    logit_loss: str = opt("mse", "mse (the paper's) or kl (with temperature)", choices=("mse", "kl"))
    temperature: float = opt(1.0, "softmax temperature for the kl logit loss", low=1e-3)
    gradual_unfreezing: bool = opt(True, "unfreeze from the top layer down, one layer per phase, in logits/labels")
    unfreeze_embeddings_last: bool = opt(True, "embeddings are the last unit unfrozen (else with the bottom layer)")
    distill_epochs: float = opt(1.0, "epochs over the transfer set per stage", low=0.0)
    distill_lr: float = opt(1e-4, "peak learning rate for distillation", low=0.0, high=1.0)
    distill_batch_size: int = opt(32, "examples per optimizer step", low=1)
    cache_dtype: str = opt("float16", "storage dtype of cached teacher outputs", choices=("float16", "float32"))
    phase_dev_eval: bool = opt(
        False,
        "score every phase on dev, also one with a single evaluation (which selects nothing: diagnostics only)",
        id=False,
    )

    stage: typing.ClassVar[str] = "distill"

    def validate(self) -> None:
        super().validate()
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
        if self.student_embeddings == "pca" and self.student_init != "random":
            raise ConfigError(
                f"student_embeddings='pca' needs student_init='random' (got {self.student_init!r}): the PCA "
                "embeddings replace the init's vocabulary"
            )

    def upstream(self) -> TeacherConfig:
        return self.teacher_config()

    def label(self) -> str:
        return f"{self.source_task}-{self.student_arch}"

    def distill_config(self) -> DistillConfig:
        names = {f.name for f in dataclasses.fields(DistillConfig)}
        return DistillConfig(**{k: v for k, v in self.to_dict().items() if k in names})

    def stilts_config(self) -> StiltsConfig:
        names = {f.name for f in dataclasses.fields(DistillConfig)}
        return StiltsConfig(**{k: v for k, v in self.to_dict().items() if k in names})

    def student_fields(self) -> dict[str, Any]:
        """Everything the undistilled student's initialisation depends on."""
        return {k: getattr(self, k) for k in STUDENT_FIELDS}

    def not_read_by_student(self) -> set[str]:
        """Teacher fields that a student trained without the teacher (the twin, STILTs) never reads: the extra
        sources (only the teacher trains on them) and the teacher's model, which only a random student reads (its
        tokenizer and, with `pca`, its embeddings)."""
        return {"teacher_sources"} | ({"teacher_model"} if self.student_init != "random" else set())


STUDENT_FIELDS = ("student_arch", "student_heads", "student_init", "student_layers", "student_embeddings",
                  "freeze_word_embeddings")  # fmt: skip


@dataclass(frozen=True)
class StiltsConfig(DistillConfig):
    """The undistilled student fine-tuned on the source task (intermediate-task training, "STILTs"), trained as
    the teacher was; a `stilts` fine-tuning starts from it. The control that separates what distillation adds from
    what training on the source task adds. Its run depends on the source, the teacher's training settings and the
    student's initialisation, not on the distillation recipe."""

    stage: typing.ClassVar[str] = "stilts"

    def upstream(self) -> None:
        return None

    def id_fields(self) -> dict[str, Any]:
        training = {k: v for k, v in self.teacher_config().id_fields().items() if k not in self.not_read_by_student()}
        return {"source_training": training, "student": self.student_fields()}


# Teacher fields that only concern the source task: a baseline fine-tuned on a target does not depend on them.
SOURCE_ONLY = ("source_task", "max_train_samples", "teacher_epochs", "teacher_lr", "teacher_batch_size")


@dataclass(frozen=True)
class FinetuneConfig(DistillConfig):
    """Stage 3: fine-tune a student (or a baseline) on a target task; select on dev, then test once."""

    target_task: str = opt("rt-polarity", "target task name")
    student: str = opt(
        "distilled",
        "distilled (this config's distillation run), undistilled (same arch and init, "
        "no distillation: baseline), stilts (the undistilled student fine-tuned on the source task first: "
        "baseline), teacher (the teacher's pretrained model: baseline), or an HF id / folder",
    )
    target_max_train_samples: int | None = opt(None, "cap on target training examples", low=1)
    finetune_epochs: float = opt(2.0, "epochs on the target task", low=0.0)
    finetune_lr: float = opt(1e-4, "peak learning rate", low=0.0, high=1.0)
    finetune_batch_size: int = opt(32, "examples per optimizer step", low=1)
    finetune_seed: int | None = opt(
        None, "seed of the fine-tuning alone (data order, dropout, new head); default: seed", low=0
    )
    save_model: bool = opt(False, "keep the fine-tuned model (HF folder model/ in the run): to export or serve it")
    finetune_word_embeddings: bool = opt(
        True, "train the word embeddings on the target (false: frozen; a 3-layer student's update takes half the time)"
    )

    stage: typing.ClassVar[str] = "finetune"

    def upstream(self) -> TeacherConfig | None:
        return {"distilled": self.distill_config, "stilts": self.stilts_config}.get(self.student, lambda: None)()

    def id_fields(self) -> dict[str, Any]:
        fields = super().id_fields()
        for name, default in (("finetune_word_embeddings", True), ("save_model", False)):
            if fields.get(name) is default:  # the id a run had before the field
                del fields[name]
        if self.student in ("distilled", "stilts"):
            return fields  # everything else is in the upstream run's id (distillation or STILTs)
        # Baselines have no upstream run: their id holds the shared settings (seed, lengths, optimiser, teacher
        # model) and, for the undistilled student, everything its initialisation depends on.
        unread = {"teacher_sources"}  # no baseline trains on the teacher's extra sources
        if self.student == "undistilled":
            unread |= self.not_read_by_student()
        elif self.student != "teacher":  # a model of the user's: the teacher's model is not read
            unread.add("teacher_model")
        shared = {k: v for k, v in self.teacher_config().id_fields().items() if k not in SOURCE_ONLY + tuple(unread)}
        fields["baseline"] = shared
        if self.student == "undistilled":
            fields["baseline_student"] = self.student_fields()
        return fields

    def label(self) -> str:
        who = self.student_arch if self.student in ("distilled", "undistilled", "stilts") else _slug(self.student)
        return f"{self.target_task}-{self.student}-{who}"


STAGES: dict[str, type[TeacherConfig]] = {
    "teacher": TeacherConfig,
    "distill": DistillConfig,
    "stilts": StiltsConfig,
    "finetune": FinetuneConfig,
}


def config_for_stage(stage: str) -> type[TeacherConfig]:
    if stage not in STAGES:
        raise ConfigError(f"unknown stage {stage!r}; known: {', '.join(STAGES)}")
    return STAGES[stage]


# ---- helpers -------------------------------------------------------------------------------------------------


def parse_arch(name: str) -> tuple[int, int]:
    """'l6-h384' -> (6, 384)."""
    match = STUDENT_ARCH_PATTERN.match(name)
    if not match:
        raise ConfigError(f"student_arch={name!r} is not allowed; allowed: {arch_problem('')}")
    return int(match.group(1)), int(match.group(2))


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-")[:40]


def describe(cls: type[TeacherConfig]) -> list[tuple[str, Any, str]]:
    """(name, default, help) for every field: used by `python -m xdlib params` and the docs."""
    out = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        out.append((f.name, default, f.metadata["help"]))
    return out
