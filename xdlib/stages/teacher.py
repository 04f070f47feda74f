"""Stage 1: fine-tune the teacher on the source task (and first on each of `teacher_sources`, in turn)."""

from __future__ import annotations

import torch

from ..config import Config
from ..heads import fit_task, fresh_head
from ..models import load_with_head
from ..tasks import get_task
from ..transfer import load_source
from .base import fit_and_score, loop_settings, stage, teacher_fields


@stage(
    "teacher",
    sections=("data", "train", "teacher"),
    fields=teacher_fields,
    upstream=lambda cfg: None,
    has_model=True,
    label=lambda cfg: cfg.source_task,
    task=lambda cfg: cfg.source_task,
)
def train_teacher(cfg: Config, run) -> None:
    """Fine-tune teacher_model on source_task; a multi-source teacher is first fine-tuned on each of
    `teacher_sources` in turn (sequentially, a fresh head for each task): one head at the end, so distillation's
    logits and labels stages stay as they are, while the encoder has learnt every source."""
    model, tokenizer, earlier = None, None, []
    for name in cfg.teacher_sources:
        task = get_task(name, cfg.local_tasks)
        data = load_source(cfg, name, cfg.max_train_samples)
        model, tokenizer = _teacher_with_head(cfg, task, model, tokenizer)
        settings = loop_settings(cfg, "teacher")
        summary = fit_task(model, tokenizer, task, data, cfg.max_length, settings,
                           run.path / "checkpoints" / f"source-{name}", run.device, desc=f"teacher on {name}")  # fmt: skip
        earlier.append({"task": name, "best_dev": summary["best_dev"], "updates": summary["updates"]})
    task = get_task(cfg.source_task, cfg.local_tasks)
    data = load_source(cfg, cfg.source_task, cfg.max_train_samples)
    model, tokenizer = _teacher_with_head(cfg, task, model, tokenizer)
    train_on_source(cfg, run, model, tokenizer, task, data, "teacher", {"teacher_sources": earlier} if earlier else {})


def _teacher_with_head(cfg: Config, task, model=None, tokenizer=None):
    """The teacher with a fresh (seeded) head for `task`: teacher_model itself, or the encoder trained so far."""
    if model is None:
        torch.manual_seed(cfg.seed)
        return load_with_head(cfg.teacher_model, task.head, task.num_labels, cfg.pooling)
    return fresh_head(model.base_model, task.head, task.num_labels, cfg.seed), tokenizer


def train_on_source(cfg: Config, run, model, tokenizer, task, data: dict, stage: str, extra=None) -> None:
    """Fine-tune `model` on the source task with the teacher's settings, score it, and save it: the teacher, and
    the STILTs intermediate model."""
    _, metrics = fit_and_score(cfg, run, model, tokenizer, task, data, loop_settings(cfg, "teacher"), stage)
    metrics.update(stage=stage, **(extra or {}))
    run.save_hf(model, tokenizer)
    run.write_json("metrics.json", metrics)
