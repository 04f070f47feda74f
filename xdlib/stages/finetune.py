"""Stage 3: fine-tune a student (or a baseline) on a target task; select on dev, then test once.

Students: `distilled` (this config's distillation run), `stilts` (the STILTs control's model), and the baselines
without an upstream run: `undistilled` (the distilled student's initialisation), `teacher` (the teacher's
pretrained model) or a model of the user's (HF id or folder).
"""

from __future__ import annotations

import torch

from .. import models, references
from ..config import Config, slug
from ..heads import fresh_head_from
from ..metrics import constant_baseline
from ..tasks import get_task
from ..transfer import load_source
from .base import fit_and_score, loop_settings, not_read_by_student, stage, student_for, teacher_fields

# Teacher fields that only concern the source task: a baseline fine-tuned on a target does not depend on them.
SOURCE_ONLY = ("source_task", "max_train_samples", "teacher_epochs", "teacher_lr", "teacher_batch_size")


def finetune_fields(cfg: Config) -> dict:
    fields = cfg.section("finetune")
    for name, default in (("finetune_word_embeddings", True), ("save_model", False)):
        if fields.get(name) is default:  # the id a run had before the field
            del fields[name]
    if cfg.student in ("distilled", "stilts"):
        return fields  # everything else is in the upstream run's id (distillation or STILTs)
    # Baselines have no upstream run: their id holds the shared settings (seed, lengths, optimiser, teacher
    # model) and, for the undistilled student, everything its initialisation depends on.
    unread = {"teacher_sources"}  # no baseline trains on the teacher's extra sources
    if cfg.student == "undistilled":
        unread |= not_read_by_student(cfg)
    elif cfg.student != "teacher":  # a model of the user's: the teacher's model is not read
        unread.add("teacher_model")
    shared = {k: v for k, v in teacher_fields(cfg).items() if k not in SOURCE_ONLY + tuple(unread)}
    fields["baseline"] = shared
    if cfg.student == "undistilled":
        fields["baseline_student"] = cfg.section("student")
    return fields


def _label(cfg: Config) -> str:
    who = cfg.student_arch if cfg.student in ("distilled", "undistilled", "stilts") else slug(cfg.student)
    return f"{cfg.target_task}-{cfg.student}-{who}"


@stage(
    "finetune",
    sections=("finetune",),
    fields=finetune_fields,
    upstream=lambda cfg: {"distilled": "distill", "stilts": "stilts"}.get(cfg.student),
    has_model=False,
    label=_label,
    task=lambda cfg: cfg.target_task,
)
def finetune_student(cfg: Config, run, on_update=None) -> None:
    task = get_task(cfg.target_task, cfg.local_tasks)
    data = load_source(cfg, cfg.target_task, cfg.target_max_train_samples)
    upstream = next(iter(run.upstream.values()), None)  # the distillation, or the STILTs intermediate model
    seed = cfg.finetune_seed if cfg.finetune_seed is not None else cfg.seed
    run.seeds["finetune_seed"] = seed
    pooling = cfg.pooling if cfg.finetune_pooling == "auto" else cfg.finetune_pooling
    if cfg.student in ("distilled", "stilts"):
        model, tokenizer = fresh_head_from(str(upstream / "model"), task.head, task.num_labels, seed, pooling)
    elif cfg.student == "undistilled":
        model, tokenizer = student_for(cfg.replace(pooling=pooling), task)  # the distilled student's init (seed)
        if seed != cfg.seed:  # its head, like every other arm's fresh head, from finetune_seed
            torch.manual_seed(seed)
            for module in models.head_module(model).modules():
                model._init_weights(module)
    else:
        ref = cfg.teacher_model if cfg.student == "teacher" else cfg.student
        model, tokenizer = fresh_head_from(references.resolve_model(ref), task.head, task.num_labels, seed, pooling)
    settings = loop_settings(cfg, "finetune", seed)
    summary, metrics = fit_and_score(cfg, run, model, tokenizer, task, data, settings, f"finetune {task.name}",
                                     word_embeddings=cfg.finetune_word_embeddings, on_update=on_update)  # fmt: skip
    metrics.update(
        stage="finetune",
        student=cfg.student,
        distill_run=upstream.name if cfg.student == "distilled" else None,
        upstream_run=upstream.name if upstream else None,
        best_dev=summary["best_dev"],
        test_chance=constant_baseline(task, data["test"]) if data.get("test") else None,
    )
    run.write_json("metrics.json", metrics)
    if cfg.save_model:
        run.save_hf(model, tokenizer)
