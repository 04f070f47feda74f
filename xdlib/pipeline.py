"""What each stage computes: train_teacher, distil_student, train_stilts, finetune_student (what they read:
`inputs.py`).

Each takes a validated config and a `stages.Run` (its folder, device and upstream runs, and writers that only the
writing process uses). Which run to reuse, what to run first, locks, process groups and DONE are decided in
`xdlib.stages.ensure`, the one way in; `run_teacher`, `run_distill` and `run_finetune` below are its shorthands.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch
from transformers import AutoModel, AutoTokenizer

from . import __version__, models, references, runs
from .config import ConfigError, DistillConfig, FinetuneConfig, TeacherConfig, parse_arch
from .data import encode
from .devices import compute_precision
from .distill import DistillModule, build_teacher_cache, cache_key, distil, plan_phases
from .finetune import agreement, evaluate, evaluate_splits, fit_task
from .inputs import (
    augment_options,
    held_out_text,
    load_source,
    loop_settings,
    offline_pools,
    qa_options,
    student_for,
)
from .metrics import constant_baseline
from .models import HiddenProjection, layer_map, load_with_head
from .tasks import get_task
from .timing import inference_seconds
from .transfer import transfer_set

log = logging.getLogger(__name__)


# ---- stage 1: teacher --------------------------------------------------------------------------------------------


def train_teacher(cfg: TeacherConfig, run) -> None:
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
    _train_on_source(cfg, run, model, tokenizer, task, data, "teacher", {"teacher_sources": earlier} if earlier else {})


def _teacher_with_head(cfg: TeacherConfig, task, model=None, tokenizer=None):
    """The teacher with a fresh (seeded) head for `task`: teacher_model itself, or the encoder trained so far."""
    if model is None:
        torch.manual_seed(cfg.seed)
        return load_with_head(cfg.teacher_model, task.head, task.num_labels)
    return _fresh_head(model.base_model, task.head, task.num_labels, cfg.seed), tokenizer


def train_stilts(cfg: DistillConfig, run) -> None:
    """The undistilled student fine-tuned on the source task as the teacher was (its epochs, rate and batch):
    the intermediate model of STILTs, which a `stilts` fine-tuning then trains on its target."""
    task = get_task(cfg.source_task, cfg.local_tasks)
    data = load_source(cfg, cfg.source_task, cfg.max_train_samples)
    model, tokenizer = student_for(cfg, task)
    _train_on_source(cfg, run, model, tokenizer, task, data, "stilts")


def _train_on_source(cfg: TeacherConfig, run, model, tokenizer, task, data: dict, stage: str, extra=None) -> None:
    summary = fit_task(
        model,
        tokenizer,
        task,
        data,
        cfg.max_length,
        loop_settings(cfg, "teacher"),
        run.path / "checkpoints",
        run.device,
        desc=stage,
        qa=qa_options(cfg),
    )
    metrics = evaluate_splits(
        model, tokenizer, task, data, cfg.max_length, run.device, qa_options(cfg), dev=summary["dev_metrics"]
    )
    metrics.update(
        stage=stage,
        run_id=run.path.name,
        parameters=models.count_parameters(model),
        train_examples=len(data["train"]),
        xdlib_version=__version__,
        **(extra or {}),
    )
    run.save_hf(model, tokenizer)
    run.write_json("metrics.json", metrics)
    run.write_json("train_summary.json", summary)


def run_teacher(cfg: TeacherConfig) -> Path:
    from .stages import ensure

    return ensure("teacher", cfg)


# ---- stage 2: distillation ---------------------------------------------------------------------------------------


def _teacher_caches(cfg: DistillConfig, run, teacher, t_tok, task, rows: dict, index: list[int], who=None) -> dict:
    """The teacher's outputs over each set of `rows` (transfer, dev), cached on disk under a key of everything they
    depend on (`who`: the teacher, by default its run); the teacher runs once, on the writing process, and the
    others open what it wrote. A cache of the teacher run records the digest of its weights and is rebuilt when
    they changed (a teacher remade under the same id)."""
    caches = {}
    source = None if who else runs.weights_digest(run.upstream["teacher"] / "model")
    who = who or run.upstream["teacher"].name
    for name, part in rows.items():
        key = cache_key(who, part, cfg.max_length, cfg.cache_dtype, index, compute_precision(run.device))
        caches[name] = run.shared(
            build_teacher_cache,
            teacher,
            t_tok,
            part,
            task,
            cfg.max_length,
            Path(cfg.cache_dir) / "teacher-outputs" / key,
            run.device,
            cfg.cache_dtype,
            layers=sorted(set(index)),
            tokenized_dir=Path(cfg.cache_dir) / "tokenized",
            source=source,
        )
    return caches


def _distill_module(cfg: DistillConfig, student, s_tok, teacher, t_tok, device) -> DistillModule:
    """The student with its projection to the teacher's width and the losses the config asks for."""
    if cfg.attention_loss and s_tok.get_vocab() != t_tok.get_vocab():
        raise ConfigError("attention_loss=true needs teacher and student to share a tokenizer; they differ")
    if cfg.attention_loss:
        student.config._attn_implementation = "eager"
        student.set_attn_implementation("eager")
    torch.manual_seed(cfg.seed)
    layers = parse_arch(cfg.student_arch)[0]
    projection = HiddenProjection(layers + 1, student.config.hidden_size, teacher.config.hidden_size)
    return DistillModule(
        student,
        projection,
        logit_loss=cfg.logit_loss,
        temperature=cfg.temperature,
        attention_loss=cfg.attention_loss,
        teacher=teacher.to(device) if cfg.attention_loss else None,
    )


def _distill_metrics(cfg: DistillConfig, run, student, s_tok, teacher, task, source, caches, summaries) -> dict:
    """The distilled student's scores beside its teacher's, sizes, FLOPs, cache and phase records, and its
    measured inference speedup (encoder forward, batch 32 x 128 tokens, same device: the architecture table)."""
    device, teacher_dir = run.device, run.upstream["teacher"]
    metrics = evaluate_splits(student, s_tok, task, source, cfg.max_length, device)
    teacher_metrics = runs.read_metrics(teacher_dir)
    main = f"test_{task.metric}"
    metrics.update(
        stage="distill",
        run_id=run.path.name,
        teacher_run=teacher_dir.name,
        parameters=models.count_parameters(student),
        teacher_parameters=models.count_parameters(teacher),
        flops_ratio=models.encoder_flops_per_token(teacher.config) / models.encoder_flops_per_token(student.config),
        teacher_test=teacher_metrics.get(main),
        test_chance=constant_baseline(task, source["test"]) if source.get("test") else None,
        cached_teacher_layers=caches["transfer"].layers,
        compute_precision=compute_precision(device),
        cache_bytes_per_example=caches["transfer"].nbytes() / max(1, len(caches["transfer"])),
        phases=[
            {k: s.get(k) for k in ("phase", "updates", "best_dev", "history", "loss_curve", "seconds")}
            | {k: s.get(k) for k in ("first_losses", "last_losses")}
            for s in summaries
        ],
        xdlib_version=__version__,
    )
    t_sec = inference_seconds(teacher, repeats=3, device=device)
    s_sec = inference_seconds(student, repeats=3, device=device)
    metrics.update(teacher_inference_s=t_sec, student_inference_s=s_sec, speedup=t_sec / s_sec)
    if metrics.get(main) is not None and teacher_metrics.get(main):
        metrics["retention"] = metrics[main] / teacher_metrics[main]
    return metrics


def distil_student(cfg: DistillConfig, run, on_update=None) -> None:
    teacher_dir, device = run.upstream["teacher"], run.device
    task = get_task(cfg.source_task, cfg.local_tasks)
    source = load_source(cfg, cfg.source_task, cfg.max_train_samples)
    transfer_rows, composition = transfer_set(
        source["train"],
        cfg.augmentation,
        augment_options(cfg, len(source["train"])),
        held_out_text(source, offline_pools(cfg)),
    )
    teacher, t_tok = load_with_head(
        str(teacher_dir / "model"),
        task.head,
        task.num_labels,
        **({"attn_implementation": "eager"} if cfg.attention_loss else {}),
    )
    s_layers = parse_arch(cfg.student_arch)[0]
    index = layer_map(cfg.layer_map, s_layers, teacher.config.num_hidden_layers)
    clock = time.perf_counter()
    caches = _teacher_caches(cfg, run, teacher, t_tok, task, {"transfer": transfer_rows, "dev": source["dev"]}, index)
    if "general" in cfg.distill_stages:  # the pretrained teacher's hidden states over the same text
        with models.seeded(cfg.seed):  # its head is never trained nor read: only its hidden states are
            pretrained, _ = load_with_head(cfg.teacher_model, task.head, task.num_labels)
        caches["general"] = _teacher_caches(cfg, run, pretrained, t_tok, task, {"general": transfer_rows}, index,
                                            f"pretrained:{cfg.teacher_model}")["general"]  # fmt: skip
        del pretrained
    student, s_tok = student_for(cfg, task)
    module = _distill_module(cfg, student, s_tok, teacher, t_tok, device)
    n_units = len(models.encoder_units(student)) - (0 if cfg.unfreeze_embeddings_last else 1)
    phases = plan_phases(cfg.distill_stages, cfg.distill_mode, cfg.gradual_unfreezing, n_units, cfg.distill_epochs)

    dev_enc = encode(s_tok, source["dev"], task, cfg.max_length)  # once, not at every dev evaluation

    def dev_metric() -> float:
        return evaluate(student, s_tok, task, source["dev"], cfg.max_length, device, dev_enc)[task.metric]

    cache_seconds, clock = time.perf_counter() - clock, time.perf_counter()
    summaries = distil(
        module,
        s_tok,
        task,
        transfer_rows,
        source,
        caches,
        index,
        phases,
        loop_settings(cfg, "distill"),
        run.path / "checkpoints",
        device,
        dev_metric,
        max_length=cfg.max_length,
        embeddings_last=cfg.unfreeze_embeddings_last,
        on_update=on_update,
        phase_dev_eval=cfg.phase_dev_eval,
        tokenized_dir=Path(cfg.cache_dir) / "tokenized",
    )
    distil_seconds = time.perf_counter() - clock  # every phase, dev evaluations included
    metrics = _distill_metrics(cfg, run, student, s_tok, teacher, task, source, caches, summaries)
    metrics.update(transfer_composition=composition, layer_map=index, cache_seconds=cache_seconds,
                   distil_seconds=distil_seconds)  # fmt: skip
    metrics["dev_teacher_agreement"] = agreement(
        student, s_tok, teacher, t_tok, task, source["dev"], cfg.max_length, device
    )
    run.save_hf(student, s_tok)
    run.save_module(module.projection, "projection.safetensors")
    run.write_json("metrics.json", metrics)


def run_distill(cfg: DistillConfig, on_update=None) -> Path:
    from .stages import ensure

    return ensure("distill", cfg, on_update=on_update)


# ---- stage 3: student fine-tuning ---------------------------------------------------------------------------------


def _fresh_head_from(encoder_dir: str, head: str, num_labels: int, seed: int):
    """A head model whose encoder comes from `encoder_dir` and whose task head is freshly initialised: the
    checkpoint is task-agnostic, its source-task head is not reused."""
    model = _fresh_head(models.pretrained(AutoModel, encoder_dir), head, num_labels, seed, encoder_dir)
    return model, AutoTokenizer.from_pretrained(encoder_dir)


def _fresh_head(encoder, head: str, num_labels: int, seed: int, where: str = "the encoder"):
    """A head model around a copy of `encoder`'s weights, with a fresh `head` (seeded)."""
    torch.manual_seed(seed)
    own = {k: v for k, v in encoder.config.to_dict().items() if k not in ("id2label", "label2id", "problem_type")}
    config = encoder.config.__class__.from_dict({**own, **models.head_kwargs(head, num_labels)})  # the old head goes
    model = models.HEAD_CLASSES[head].from_config(config)
    result = model.base_model.load_state_dict(encoder.state_dict(), strict=False)
    # only the pooler may differ (token and QA heads have none); anything else means another architecture
    mismatched = [k for k in (*result.missing_keys, *result.unexpected_keys) if not k.startswith("pooler.")]
    if mismatched:
        raise ConfigError(
            f"the encoder in {where} does not fit a {head} model: missing {list(result.missing_keys)[:8]}, "
            f"unexpected {list(result.unexpected_keys)[:8]}; allowed: a checkpoint of the same architecture"
        )
    return model


def finetune_student(cfg: FinetuneConfig, run, on_update=None) -> None:
    device = run.device
    task = get_task(cfg.target_task, cfg.local_tasks)
    data = load_source(cfg, cfg.target_task, cfg.target_max_train_samples)
    upstream = next(iter(run.upstream.values()), None)  # the distillation, or the STILTs intermediate model
    seed = cfg.finetune_seed if cfg.finetune_seed is not None else cfg.seed
    run.seeds["finetune_seed"] = seed
    if cfg.student in ("distilled", "stilts"):
        model, tokenizer = _fresh_head_from(str(upstream / "model"), task.head, task.num_labels, seed)
    elif cfg.student == "undistilled":
        model, tokenizer = student_for(cfg, task)  # the distilled student's initialisation (seed)
        if seed != cfg.seed:  # its head, like every other arm's fresh head, from finetune_seed
            torch.manual_seed(seed)
            for module in models.head_module(model).modules():
                model._init_weights(module)
    else:
        ref = cfg.teacher_model if cfg.student == "teacher" else cfg.student
        model, tokenizer = _fresh_head_from(references.resolve_model(ref), task.head, task.num_labels, seed)
    summary = fit_task(
        model,
        tokenizer,
        task,
        data,
        cfg.max_length,
        loop_settings(cfg, "finetune", seed),
        run.path / "checkpoints",
        device,
        desc=f"finetune {task.name}",
        qa=qa_options(cfg),
        word_embeddings=cfg.finetune_word_embeddings,
    )
    metrics = evaluate_splits(
        model, tokenizer, task, data, cfg.max_length, device, qa_options(cfg), dev=summary["dev_metrics"]
    )
    metrics.update(
        stage="finetune",
        run_id=run.path.name,
        student=cfg.student,
        distill_run=upstream.name if cfg.student == "distilled" else None,
        upstream_run=upstream.name if upstream else None,
        parameters=models.count_parameters(model),
        train_examples=len(data["train"]),
        best_dev=summary["best_dev"],
        test_chance=constant_baseline(task, data["test"]) if data.get("test") else None,
        xdlib_version=__version__,
    )
    run.write_json("metrics.json", metrics)
    run.write_json("train_summary.json", summary)
    if cfg.save_model:
        run.save_hf(model, tokenizer)


def run_finetune(cfg: FinetuneConfig) -> Path:
    from .stages import ensure

    return ensure("finetune", cfg)
