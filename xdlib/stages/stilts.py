"""The STILTs control: the undistilled student fine-tuned on the source task as the teacher was.

Intermediate-task training (Phang et al. 2018): a `stilts` fine-tuning starts from it. It separates what
distillation adds from what training on the source task adds. Its run depends on the source, the teacher's
training settings and the student's initialisation, not on the distillation recipe.
"""

from __future__ import annotations

from ..config import Config
from ..tasks import get_task
from ..transfer import load_source
from .base import not_read_by_student, stage, student_for, teacher_fields
from .teacher import train_on_source


def stilts_fields(cfg: Config) -> dict:
    training = {k: v for k, v in teacher_fields(cfg).items() if k not in not_read_by_student(cfg)}
    return {"source_training": training, "student": cfg.section("student")}


@stage(
    "stilts",
    sections=("data", "train", "teacher", "student"),
    fields=stilts_fields,
    upstream=lambda cfg: None,
    has_model=True,
    label=lambda cfg: f"{cfg.source_task}-{cfg.student_arch}",
    task=lambda cfg: cfg.source_task,
)
def train_stilts(cfg: Config, run) -> None:
    """The undistilled student fine-tuned on the source task as the teacher was (its epochs, rate and batch):
    the intermediate model of STILTs, which a `stilts` fine-tuning then trains on its target."""
    task = get_task(cfg.source_task, cfg.local_tasks)
    data = load_source(cfg, cfg.source_task, cfg.max_train_samples)
    model, tokenizer = student_for(cfg, task)
    train_on_source(cfg, run, model, tokenizer, task, data, "stilts")
