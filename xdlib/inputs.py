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


def held_out_text(source: dict, pools: frozenset[str] | None = None) -> frozenset[str]:
    """Text no transfer set may contain: the source's own dev/test text, plus the dev/test text of every offline
    task of `pools` (the sentence sources the transfer set draws on; None: every pool). A toy or Hub-only run draws
    on none and never needs the offline packages (an air-gapped cluster has none)."""
    own = {normalise(t) for split, rows in source.items() if split != "train" for r in rows for t in row_texts(r)}
    return (held_out_keys(pools) if pools is None or pools else frozenset()) | frozenset(own)


def offline_pools(cfg: DistillConfig) -> frozenset[str]:
    """The offline sentence pools the transfer set draws on: the source task's (if offline), each corpus's, and
    each `task:` resource's (if offline); perturb and mlm rows come from the source's own text."""
    from .tasks import CORPUS_POOLS

    def pool_of(name: str) -> set[str]:
        task = get_task(name, cfg.local_tasks)
        return {task.text_pool} if task.origin == "offline" else set()

    pools = pool_of(cfg.source_task)
    for name in cfg.augmentation:
        pools |= (
            {CORPUS_POOLS[name]} if name in CORPUS_POOLS else pool_of(name[5:]) if name.startswith("task:") else set()
        )
    return frozenset(pools)


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
