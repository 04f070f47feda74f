"""Stage 2: distil the fine-tuned teacher into a student over the transfer set, stage by stage (`xdlib.kd`)."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from .. import __version__, models, pooling, runs
from ..architectures import parse_arch
from ..bench.timing import inference_seconds
from ..config import Config
from ..data import encode
from ..devices import compute_precision
from ..errors import ConfigError
from ..heads import agreement, evaluate, evaluate_splits
from ..kd import DistillModule, distil, plan_phases
from ..metrics import chance_corrected_retention, constant_baseline, learning_check
from ..models import HiddenProjection, layer_map, load_with_head
from ..recipe import stage_specs
from ..tasks import get_task
from ..teacher_cache import build_teacher_cache, cache_key
from ..transfer import augment_options, held_out_text, load_source, offline_pools, transfer_set
from .base import loop_settings, stage, student_for


def teacher_caches(cfg: Config, run, teacher, t_tok, task, rows: dict, index: list[int], who=None) -> dict:
    """The teacher's outputs over each set of `rows` (transfer, dev), cached on disk under a key of everything they
    depend on (`who`: the teacher, by default its run); the teacher runs once, on the writing process, and the
    others open what it wrote. A cache of the teacher run records the digest of its weights and is rebuilt when
    they changed (a teacher remade under the same id)."""
    caches = {}
    source = None if who else runs.weights_digest(run.upstream["teacher"] / "model")
    who = f"{who or run.upstream['teacher'].name}:{pooling.of(teacher)}"  # a sequence unit is what the head reads
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


def distill_module(cfg: Config, student, s_tok, teacher, t_tok, device) -> DistillModule:
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
        teacher=teacher.to(device) if cfg.attention_loss else None,
    )


def distill_metrics(cfg: Config, run, student, s_tok, teacher, task, source, caches, summaries) -> dict:
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
    dev = f"dev_{task.metric}"
    metrics.update(learning_check(task, metrics.get(dev), source.get("dev") or []))
    # the teacher's source skill the student kept, chance counted out (dev: selection and checks never read test)
    metrics["teacher_dev"] = teacher_metrics.get(dev)
    metrics["dev_retention_vs_chance"] = chance_corrected_retention(
        metrics.get(dev), teacher_metrics.get(dev), metrics["dev_constant"], task.higher_is_better
    )
    metrics["pooling"] = pooling.of(student)  # as resolved: `auto` reads the init's files, online or offline
    return metrics


@stage(
    "distill",
    sections=("student", "distill"),
    upstream=lambda cfg: "teacher",
    has_model=True,
    label=lambda cfg: f"{cfg.source_task}-{cfg.student_arch}",
    task=lambda cfg: cfg.source_task,
)
def distil_student(cfg: Config, run, on_update=None) -> None:
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
        cfg.pooling,
        **({"attn_implementation": "eager"} if cfg.attention_loss else {}),
    )
    s_layers = parse_arch(cfg.student_arch)[0]
    index = layer_map(cfg.layer_map, s_layers, teacher.config.num_hidden_layers)
    clock = time.perf_counter()
    caches = teacher_caches(cfg, run, teacher, t_tok, task, {"transfer": transfer_rows, "dev": source["dev"]}, index)
    specs = stage_specs(cfg)
    if any(spec.teacher == "general" for spec in specs):  # the pretrained teacher's hidden states over the same text
        with models.seeded(cfg.seed):  # its head is never trained nor read: only its hidden states are
            pretrained, _ = load_with_head(cfg.teacher_model, task.head, task.num_labels, cfg.pooling)
        caches["general"] = teacher_caches(cfg, run, pretrained, t_tok, task, {"general": transfer_rows}, index,
                                            f"pretrained:{cfg.teacher_model}")["general"]  # fmt: skip
        del pretrained
    student, s_tok = student_for(cfg, task)
    module = distill_module(cfg, student, s_tok, teacher, t_tok, device)
    if cfg.projection_init == "pca":  # from the data (a PCA of the teacher's vectors), not from noise
        module.projection.init_pca(caches["transfer"], index)
    n_units = len(models.encoder_units(student)) - (0 if cfg.unfreeze_embeddings_last else 1)
    phases = plan_phases(specs, n_units)

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
    metrics = distill_metrics(cfg, run, student, s_tok, teacher, task, source, caches, summaries)
    metrics.update(transfer_composition=composition, layer_map=index, cache_seconds=cache_seconds,
                   distil_seconds=distil_seconds)  # fmt: skip
    metrics["dev_teacher_agreement"] = agreement(
        student, s_tok, teacher, t_tok, task, source["dev"], cfg.max_length, device
    )
    run.save_hf(student, s_tok)
    run.save_module(module.projection, "projection.safetensors")
    run.write_json("metrics.json", metrics)
