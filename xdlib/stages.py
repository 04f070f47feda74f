"""The stage registry and `ensure`: the one way a run is resolved, reused or made, with its upstream runs.

    teacher  <-  distill  <-  finetune        (a stage's config extends its upstream stage's config)
                 stilts   <-  finetune        (the STILTs baseline: the student trained on the source first)

`ensure(stage, cfg)` returns the folder of the run that `cfg` describes: a complete run is reused; otherwise its
upstream runs are ensured first (a fine-tuning of the `distilled` student needs its distillation, which needs its
teacher), then it is made under a lock, and DONE is written last. The CLI, the notebooks, the sweep and the
benchmark all come in here.

Several processes (torchrun, accelerate launch, srun) run the same call: every rank computes, rank 0 alone writes
run folders, teacher caches, checkpoints and DONE, and the others wait for it at a barrier before they read.
Reuse checks only read the run store; reopening a complete run whose model is missing is `runs.reopen`.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from . import dist, runs
from .config import ENGINE_VERSION, DistillConfig, FinetuneConfig, StiltsConfig, TeacherConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Stage:
    name: str
    config: type[TeacherConfig]
    narrow: Callable[[TeacherConfig], TeacherConfig]  # a downstream config -> this stage's own config
    upstream: Callable[[TeacherConfig], str | None]  # the stage this config's run reads, if any
    runner: str  # function name in xdlib.pipeline: (cfg, Run, on_update=None) -> None
    has_model: bool  # the run leaves a model/ folder that the stage below reads


STAGES: dict[str, Stage] = {
    "teacher": Stage("teacher", TeacherConfig, lambda c: c.teacher_config(), lambda c: None, "train_teacher", True),
    "distill": Stage(
        "distill", DistillConfig, lambda c: c.distill_config(), lambda c: "teacher", "distil_student", True
    ),
    "stilts": Stage("stilts", StiltsConfig, lambda c: c.stilts_config(), lambda c: None, "train_stilts", True),
    "finetune": Stage(
        "finetune",
        FinetuneConfig,
        lambda c: c,
        lambda c: {"distilled": "distill", "stilts": "stilts"}.get(c.student),
        "finetune_student",
        False,
    ),
}


def chain(stage: str, cfg: TeacherConfig) -> list[tuple[str, TeacherConfig]]:
    """(stage, its own config) of every run that `cfg` at `stage` needs, upstream first, itself last."""
    own = STAGES[stage].narrow(cfg)
    up = STAGES[stage].upstream(own)
    return (chain(up, own) if up else []) + [(stage, own)]


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
            from safetensors.torch import save_model

            save_model(module, str(self.path / name))

    @staticmethod
    def shared(make, *args, **kwargs):
        """`make` something every rank reads (a teacher cache): rank 0 makes and writes it, the others wait,
        then open it (make returns at once for what already exists)."""
        return dist.main_first(make, *args, **kwargs)


def ensure(stage: str, cfg: TeacherConfig, *, on_update=None, _checked: bool = False) -> Path:
    """The folder of the complete run of `stage` that `cfg` describes, made (with its upstream runs) if needed."""
    from .preflight import preflight  # heavy imports only once there is work to do

    spec = STAGES[stage]
    cfg = spec.narrow(cfg)
    dist.init_from_env(cfg.device)
    path = runs.run_dir(cfg.runs_dir, stage, cfg.run_id())
    # a top-level call wants what it asked for: a complete run without its model is made again
    if dist.broadcast(runs.usable(path, needs_model=spec.has_model)):
        return path
    if not _checked:
        preflight(cfg)  # every name and model reference, before any upstream work
    upstream_stage = spec.upstream(cfg)
    upstream = {upstream_stage: ensure(upstream_stage, cfg, _checked=True)} if upstream_stage else {}
    from .devices import resolve_device

    device = resolve_device(cfg.device)
    with runs.locked(path) if dist.is_main() else nullcontext() as lock:
        if dist.broadcast(runs.usable(path, needs_model=spec.has_model)):  # made by another process meanwhile
            return path
        if dist.is_main() and runs.is_complete(path):  # complete, but its model is gone or it is damaged: made again
            log.warning("%s/%s is marked DONE but %s: making it again", stage, path.name,
                        runs.damage(path, spec.has_model) or "its model is gone")  # fmt: skip
            runs.reopen(path)
        rank, world = dist.rank_world()
        run = Run(path, device, upstream, {"seed": cfg.seed})
        with runs.open_run(path, cfg.to_dict(), device, run.seeds, write=run.writer) as provenance:
            import importlib

            runner = getattr(importlib.import_module(".pipeline", __package__), spec.runner)
            runner(cfg, run, **({"on_update": on_update} if on_update is not None else {}))
            provenance["upstream"] = {k: v.name for k, v in upstream.items()} or None
            provenance["world_size"] = world
            provenance["engine_version"] = ENGINE_VERSION  # in the run id too; the report groups by it
            dist.barrier()  # every rank is done computing before DONE marks the run complete
        if run.writer:
            shutil.rmtree(path / "checkpoints", ignore_errors=True)
            runs.made(lock)
    dist.barrier()
    return path
