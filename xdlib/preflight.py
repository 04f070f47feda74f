"""Preflight: every check that needs no training, run before any heavy work of a run or a sweep.

Task names and their local files (read and checked), augmentation names, model references (a Hub id is looked up
now, so 'no network' is reported before any work; a config.json is read where the architecture depends on it),
the layer map and the student's initialisation against the teacher's and the init model's configs, and the
device. network=False (dry runs) skips the Hub lookup and the device's presence.
"""

from __future__ import annotations

import functools

import torch

from . import models, references
from .config import Config, ConfigError
from .models import layer_map
from .tasks import check_hub_mirror, get_task, hub_mirror, mirror_files, task_names
from .tracking import check_installed
from .transfer import check_augmentation_name


def preflight(cfg: Config, stage: str = "finetune", network: bool = True) -> None:
    """Every check of what `stage` (and its upstream stages) will read that needs no training: task names,
    augmentation names, model references (a Hub id is looked up now, so 'no network' is reported before any heavy
    work) and the device. network=False (dry runs) skips the Hub lookup and the device's presence."""
    distils = stage != "teacher"  # the distillation, STILTs and fine-tuning stages read the student's sections
    finetunes = stage == "finetune"
    known = task_names(cfg.local_tasks)
    for key in ("source_task", "target_task") if finetunes else ("source_task",):
        name = getattr(cfg, key)
        if name is not None and name not in known:
            raise ConfigError(f"{key}={name!r} is not a registered task; known: {', '.join(known)}")
        if name is not None:
            check_hub_mirror(name)  # with XDLIB_HUB_MIRROR set, its Parquet files are there (nothing is loaded)
            if network and hub_mirror() is None and get_task(name, cfg.local_tasks).origin == "hub":
                references.hub_offline()  # no Hub: datasets reads its cache, without retries
    for name in cfg.teacher_sources:
        if name not in known or name == cfg.source_task or get_task(name, cfg.local_tasks).kind == "qa":
            raise ConfigError(
                f"teacher_sources entry {name!r} is not allowed; allowed: registered tasks other than source_task "
                f"{cfg.source_task!r}, not extractive QA (known: {', '.join(known)})"
            )
    for name in cfg.augmentation if distils else []:
        problem = check_augmentation_name(name, cfg.local_tasks)
        if problem:
            raise ConfigError(f"augmentation entry {name!r} is not allowed; allowed: {problem}")
        if name.startswith("hub:") and hub_mirror() is not None:
            dataset_id, _, config = name[4:].partition(":")
            mirror_files(dataset_id, config or None, ("train",))
    for name in {cfg.source_task, cfg.target_task if finetunes else None} | {
        a[5:] for a in (cfg.augmentation if distils else []) if a.startswith("task:")
    }:  # every local file read and checked: readable, UTF-8, its columns there, labels of the right type and set
        if name and cfg.local_tasks and name in cfg.local_tasks:
            _check_local_files(get_task(name, cfg.local_tasks))
    if distils:
        source = get_task(cfg.source_task, cfg.local_tasks)
        if cfg.logit_loss == "kl" and source.kind == "regression":
            raise ConfigError(
                f"logit_loss='kl' is not allowed with source_task={cfg.source_task!r}, a regression task (one "
                "output: a softmax over it is constant, so the loss would be 0); allowed: logit_loss=mse"
            )
        if source.kind == "qa":
            raise ConfigError(
                f"source_task={cfg.source_task!r} is extractive QA, which cannot be a distillation source yet; "
                "allowed: single, pair, regression or token tasks (QA works as a target_task)"
            )
        if "mlm" in cfg.augmentation:
            references.check_model_reachable(cfg.augment_mlm_model, "augment_mlm_model", network)
    references.check_model_reachable(cfg.teacher_model, "teacher_model", network)
    if distils and cfg.student_init != "random":
        references.check_model_reachable(cfg.student_init, "student_init", network)
    if finetunes and cfg.student not in STUDENT_KEYWORDS:
        import difflib

        close = difflib.get_close_matches(cfg.student, STUDENT_KEYWORDS, n=1, cutoff=0.75)
        if close:  # a misspelt keyword, not a model reference
            raise ConfigError(
                f"student={cfg.student!r} is not allowed (did you mean {close[0]!r}?); allowed: "
                f"{', '.join(STUDENT_KEYWORDS)}, or a model (HF id or folder)"
            )
        references.check_model_reachable(cfg.student, "student", network)
    if network:  # a dry run may plan for another machine (params/gpu.yaml on a laptop)
        check_device(cfg.device)
        check_installed(cfg.report_to)  # each tracker's extra
    if distils:
        arch = models.architecture(cfg.student_arch, cfg.student_heads)
        teacher_layers = getattr(references.model_config(cfg.teacher_model, network), "num_hidden_layers", None)
        if teacher_layers is not None:
            layer_map(cfg.layer_map, arch.layers, teacher_layers)
        init = references.model_config(cfg.student_init, network)
        if init is not None:
            models.check_student_init(cfg.student_init, init, arch, cfg.student_arch, cfg.student_layers)


STUDENT_KEYWORDS = ("distilled", "undistilled", "stilts", "teacher")


@functools.cache
def _check_local_files(task) -> None:
    """Read every file of a local task (a sweep checks each task once, not once per cell); a failure is not
    cached, so a fixed file is read again."""
    task.load()


def check_device(name: str) -> None:
    """The device exists on this machine (the config checked the spelling)."""
    if name.startswith("cuda"):
        count = torch.cuda.device_count()
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= count:
            have = f"{count} CUDA device(s)" if count else "no CUDA"
            raise ConfigError(f"device={name!r} is not on this machine ({have}); allowed: auto, cpu"
                              + (f", cuda:0..cuda:{count - 1}" if count else ""))  # fmt: skip
    if name == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("device='mps' is not on this machine; allowed: auto, cpu")
