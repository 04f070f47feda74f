"""The stage registry (`@stage`), the `Run` a runner gets, and what every stage reads from the config.

A stage module declares, with `@stage` on its runner: its name, its upstream rule, the config sections its run id
hashes (and, where old ids must stay valid, how), whether it leaves a model, and which task's version it is
scored on. `xdlib.stages` computes run ids and makes runs from these declarations alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safetensors.torch import save_model

from .. import __version__, dist, models, pooling, runs
from ..config import Config
from ..heads import QAOptions, evaluate_splits, fit_task
from ..metrics import learning_check
from ..models import build_student
from ..train import LoopSettings


@dataclass(frozen=True)
class Stage:
    name: str
    runner: Callable  # (cfg, Run, on_update=None) -> None: writes metrics.json (and model/) into the run folder
    sections: tuple[str, ...]  # the config sections its run id hashes
    upstream: Callable[[Config], str | None]  # the stage whose run this one reads, if any
    has_model: bool  # the run leaves a model/ folder that the stage below reads
    label: Callable[[Config], str]  # the readable start of its run id
    task: Callable[[Config], str]  # the task whose version enters its run id
    fields: Callable[[Config], dict[str, Any]] | None = None  # its id fields, where not just its sections'

    def id_fields(self, cfg: Config) -> dict[str, Any]:
        return self.fields(cfg) if self.fields else cfg.section(*self.sections)


STAGES: dict[str, Stage] = {}  # in registration order: upstream stages first


def stage(name: str, **declaration) -> Callable:
    """Register the decorated runner as stage `name` (see `Stage` for what it declares)."""

    def register(runner: Callable) -> Callable:
        STAGES[name] = Stage(name, runner, **declaration)
        return runner

    return register


@dataclass
class Run:
    """What a runner gets: its folder, device, upstream run folders, and writers that only rank 0 uses."""

    path: Path
    device: object
    upstream: dict[str, Path]
    seeds: dict = field(default_factory=dict)

    @property
    def writer(self) -> bool:
        return dist.is_main()

    def write_json(self, name: str, data) -> None:
        if self.writer:
            runs.write_json(self.path / name, data)

    def save_hf(self, model, tokenizer) -> None:
        if self.writer:
            runs.save_hf(model, tokenizer, self.path / "model")

    def save_module(self, module, name: str) -> None:
        if self.writer:
            save_model(module, str(self.path / name))

    @staticmethod
    def shared(make, *args, **kwargs):
        """`make` something every rank reads (a teacher cache): rank 0 makes and writes it, the others wait,
        then open it (make returns at once for what already exists)."""
        return dist.main_first(make, *args, **kwargs)


# ---- what the stages read from the config --------------------------------------------------------------------


def loop_settings(cfg: Config, stage: str, seed: int | None = None) -> LoopSettings:
    """The training loop's settings of `stage`: its own epochs, lr and batch size, and the shared ones."""
    own = {
        "teacher": lambda: (cfg.teacher_epochs, cfg.teacher_lr, cfg.teacher_batch_size),
        "distill": lambda: (cfg.distill_epochs, cfg.distill_lr, cfg.distill_batch_size),
        "finetune": lambda: (cfg.finetune_epochs, cfg.finetune_lr, cfg.finetune_batch_size),
    }
    epochs, lr, batch_size = own[stage]()
    return LoopSettings(
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        lr_schedule=cfg.lr_schedule,
        warmup_ratio=cfg.warmup_ratio,
        weight_decay=cfg.weight_decay,
        grad_accum_steps=cfg.grad_accum_steps,
        evals_per_epoch=cfg.evals_per_epoch,
        patience=cfg.patience,
        seed=cfg.seed if seed is None else seed,
        checkpoint_every=cfg.checkpoint_every,
        progress=cfg.progress,
    )


def fit_and_score(cfg: Config, run, model, tokenizer, task, data: dict, settings: LoopSettings, desc: str, **fit):
    """Fine-tune `model` on `data` (selected on dev), score it on every split and write train_summary.json; returns
    (summary, metrics) with what every run records: its id, parameter and training-example counts, the version."""
    summary = fit_task(model, tokenizer, task, data, cfg.max_length, settings, run.path / "checkpoints", run.device,
                       desc=desc, qa=qa_options(cfg), **fit)  # fmt: skip
    metrics = evaluate_splits(
        model, tokenizer, task, data, cfg.max_length, run.device, qa_options(cfg), dev=summary["dev_metrics"]
    )
    metrics.update(run_id=run.path.name, parameters=models.count_parameters(model),
                   train_examples=len(data["train"]), xdlib_version=__version__)  # fmt: skip
    metrics.update(learning_check(task, metrics.get(f"dev_{task.metric}"), data.get("dev") or []))
    metrics["pooling"] = pooling.of(model)  # as resolved: `auto` reads the model's files, online or offline
    run.write_json("train_summary.json", summary)
    return summary, metrics


def qa_options(cfg: Config) -> QAOptions:
    return QAOptions(doc_stride=cfg.doc_stride, max_answer_length=cfg.max_answer_length)


def student_for(cfg: Config, task):
    """The student (with `task`'s head) that `cfg`'s student section describes; the distilled student and its
    undistilled baseline start from exactly this: PCA embeddings come from the *pretrained* teacher_model (not
    the fine-tuned teacher), so both share one initialisation."""
    return build_student(
        cfg.student_arch,
        task.head,
        task.num_labels,
        init=cfg.student_init,
        teacher_ref=cfg.teacher_model,
        heads=cfg.student_heads,
        layers=cfg.student_layers,
        embeddings=cfg.student_embeddings,
        freeze_word_embeddings=cfg.freeze_word_embeddings,
        seed=cfg.seed,
        pooling=cfg.pooling,
    )


def not_read_by_student(cfg: Config) -> set[str]:
    """Teacher fields that a student trained without the teacher (the twin, STILTs) never reads: the extra
    sources (only the teacher trains on them) and the teacher's model, which only a random student reads (its
    tokenizer and, with `pca`, its embeddings)."""
    return {"teacher_sources"} | ({"teacher_model"} if cfg.student_init != "random" else set())


def teacher_fields(cfg: Config) -> dict[str, Any]:
    """The teacher's id fields: its sections; a single-source teacher keeps the id it had before the field."""
    fields = cfg.section("data", "train", "teacher")
    if not fields["teacher_sources"]:
        del fields["teacher_sources"]
    return fields
