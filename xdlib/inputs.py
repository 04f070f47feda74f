"""What a stage reads: its data (capped and seeded), its training-loop settings, its transfer-set options and
leakage keys, and the student its config describes. Shared by the stages (`pipeline.py`) and the benchmark."""

from __future__ import annotations

from .config import DistillConfig, TeacherConfig
from .data import cap
from .finetune import QAOptions
from .models import build_student
from .tasks import get_task, held_out_keys, normalise, row_texts
from .train import LoopSettings
from .transfer import AugmentOptions


def loop_settings(cfg: TeacherConfig, stage: str, seed: int | None = None) -> LoopSettings:
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


def load_source(cfg: TeacherConfig, task_name: str, train_cap: int | None) -> dict:
    """Every split of a task; train capped at `train_cap` (a sample drawn with `seed`), the evaluation splits at
    max_eval_samples with a fixed draw: runs that differ only in seed are scored on the same rows."""
    data = get_task(task_name, cfg.local_tasks).load()
    return {
        split: cap(rows, train_cap, cfg.seed) if split == "train" else cap(rows, cfg.max_eval_samples, 0)
        for split, rows in data.items()
    }


def augment_options(cfg: DistillConfig, n_source: int) -> AugmentOptions:
    caps = [
        c for c in (cfg.augment_max_examples, cfg.augment_ratio and max(1, round(cfg.augment_ratio * n_source))) if c
    ]
    return AugmentOptions(
        seed=cfg.seed, cap=min(caps) if caps else None, mlm_model=cfg.augment_mlm_model, local_tasks=cfg.local_tasks
    )


def qa_options(cfg: TeacherConfig) -> QAOptions:
    return QAOptions(doc_stride=cfg.doc_stride, max_answer_length=cfg.max_answer_length)


def held_out_text(source: dict, offline: bool = True) -> frozenset[str]:
    """Text no transfer set may contain: the source's own dev/test text, plus every offline task's when the
    transfer set draws on the offline data (`offline`): offline tasks share sentence pools. A toy or Hub-only run
    does not, and never needs the offline packages (an air-gapped cluster has none)."""
    own = {normalise(t) for split, rows in source.items() if split != "train" for r in rows for t in row_texts(r)}
    return (held_out_keys() if offline else frozenset()) | frozenset(own)


def uses_offline_data(cfg: DistillConfig) -> bool:
    """Whether the transfer set holds offline (packaged) text: an offline source task, or an augmentation from an
    offline corpus or from another task that is offline."""
    from .tasks import CORPORA

    def offline_task(name: str) -> bool:
        return get_task(name, cfg.local_tasks).origin == "offline"

    return offline_task(cfg.source_task) or any(
        a in CORPORA or (a.startswith("task:") and offline_task(a[5:])) for a in cfg.augmentation
    )


def student_for(cfg: DistillConfig, task):
    """The student (with `task`'s head) that `cfg`'s student_* fields describe; the distilled student and its
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
    )
