"""The stages, their run ids, and `ensure`: the one way a run is resolved, reused or made, with its upstream runs.

    teacher  <-  distill  <-  finetune        (one config: each stage reads its own sections)
                 stilts   <-  finetune        (the STILTs control: the student trained on the source first)

A stage is one module here (`teacher`, `distill`, `stilts`, `finetune`) whose runner is registered with `@stage`
(`base.py`), declaring its upstream rule and the config sections its run id hashes. `run_id` is computed here
only: the stage, its id fields, the upstream run's id, the compute precision, the task's version and the engine
version, hashed; every run folder keeps that payload as `run_id.json`, and `explain` prints it with what `ensure`
would do. `ensure(stage, cfg)` returns the folder of the complete run that `cfg` describes: a complete run is
reused; otherwise its upstream runs are ensured first, then it is made under a lock, and DONE is written last.
The CLI, the notebooks, the sweep and the benchmark all come in here.

Several processes (torchrun, accelerate launch, srun) run the same call: every rank computes, rank 0 alone writes
run folders, teacher caches, checkpoints and DONE, and the others wait for it at a barrier before they read.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from contextlib import nullcontext
from pathlib import Path

from .. import dist, runs, tracking
from ..config import ENGINE_VERSION, Config, fields_of, slug
from ..devices import resolve_device
from ..errors import UserError
from ..tasks import get_task

# isort: off
# each module registers its stage when imported: upstream stages first, the order the sweep walks
from . import teacher, distill, stilts, finetune  # noqa: F401

# isort: on
from .base import STAGES, Run, Stage, stage

__all__ = ["STAGES", "Run", "Stage", "chain", "ensure", "explain", "id_payload", "run_id", "stage", "state"]
log = logging.getLogger(__name__)


def chain(stage_name: str, cfg: Config) -> list[str]:
    """Every stage whose run `cfg` at `stage_name` needs, upstream first, itself last."""
    up = STAGES[stage_name].upstream(cfg)
    return (chain(up, cfg) if up else []) + [stage_name]


def _task(name: str, cfg: Config):
    """The task a stage trains on, or None for an unknown name (preflight reports it, with the known ones)."""
    try:
        return get_task(name, cfg.local_tasks)
    except Exception:
        return None


def id_payload(stage_name: str, cfg: Config) -> dict:
    """What a run id hashes: the stage, its id fields, its upstream run's id, precision, task and engine versions."""
    spec = STAGES[stage_name]
    up, task = spec.upstream(cfg), _task(spec.task(cfg), cfg)
    payload = {
        "stage": stage_name,
        "fields": spec.id_fields(cfg),
        "upstream": run_id(up, cfg) if up else None,
        "precision": cfg.precision(),
        "task_version": task.version if task else "?",  # a changed reader or split makes new runs
        "engine": ENGINE_VERSION,
    }
    if task and not task.higher_is_better:  # dev selection by a lower-is-better metric (mse) was once
        payload["selection"] = "lower"  # by the higher score: such runs were remade; every other id stays
    return payload


def run_id(stage_name: str, cfg: Config) -> str:
    digest = hashlib.sha256(json.dumps(id_payload(stage_name, cfg), sort_keys=True).encode()).hexdigest()[:10]
    return f"{slug(STAGES[stage_name].label(cfg))}-{digest}"


def run_path(stage_name: str, cfg: Config) -> Path:
    return runs.run_dir(cfg.runs_dir, stage_name, run_id(stage_name, cfg))


def stage_config(stage_name: str, cfg: Config) -> dict:
    """The fields a stage reads (its run folder's config.yaml)."""
    return {f.name: getattr(cfg, f.name) for f in fields_of(stage_name)}


def _action(path: Path, spec: Stage, top: bool = True) -> tuple[str, str | None]:
    """('make', None), ('remake', what is damaged) or ('reuse', None): the one reuse rule (`state`, `ensure`)."""
    if not runs.is_complete(path):
        return "make", None
    problem = runs.damage(path, needs_model=spec.has_model and top)
    return ("remake", problem) if problem else ("reuse", None)


def state(stage_name: str, cfg: Config, top: bool = True) -> tuple[str, str]:
    """What `ensure` would do with this run, and why: ('reuse' | 'make' | 'remake', reason). A run asked for
    directly (`top`) must have its model; one read only by the stage below counts with its metrics alone."""
    path = run_path(stage_name, cfg)
    action, problem = _action(path, STAGES[stage_name], top)
    reason = {
        "make": "no complete run with this id" + (" (a killed run resumes)" if path.exists() else ""),
        "remake": f"it is marked DONE but {problem}",
        "reuse": f"a complete run has this id: {path}",
    }
    return action, reason[action]


def explain(stage_name: str, cfg: Config) -> dict:
    """Everything that decides a run: its id, the hashed payload, and what `ensure` would do (with each upstream's)."""
    links, wanted = [], True  # from the run asked for upward: an upstream run counts only if the run below is made
    for s in reversed(chain(stage_name, cfg)):
        action = state(s, cfg, top=wanted) if wanted else ("unread", "the run below it is reused")
        links.insert(0, {"stage": s, "run_id": run_id(s, cfg), "action": action})
        wanted = action[0] != "reuse"  # a run that is made or remade reads its upstream run's model
    return {"stage": stage_name, "run_id": run_id(stage_name, cfg), "payload": id_payload(stage_name, cfg),
            "chain": links}  # fmt: skip


def ensure(stage_name: str, cfg: Config, *, on_update=None, _checked: bool = False) -> Path:
    """The folder of the complete run of `stage_name` that `cfg` describes, made (with its upstream runs) if needed."""
    from ..preflight import preflight  # why here: preflight reads task data; a reused run never needs it

    spec = STAGES[stage_name]
    dist.init_from_env(cfg.device)
    path = run_path(stage_name, cfg)
    # a top-level call wants what it asked for: a complete run without its model is made again
    if dist.broadcast(_action(path, spec)[0] == "reuse"):
        return path
    if not _checked:
        preflight(cfg, stage_name)  # every name and model reference, before any upstream work
    upstream_stage = spec.upstream(cfg)
    upstream = {upstream_stage: ensure(upstream_stage, cfg, _checked=True)} if upstream_stage else {}
    device = resolve_device(cfg.device)
    with runs.locked(path) if dist.is_main() else nullcontext() as lock:
        fresh = not path.exists()  # under the lock: a run that cannot start (a user error) leaves no folder behind
        action, problem = _action(path, spec)
        if dist.broadcast(action == "reuse"):  # made by another process meanwhile
            return path
        if dist.is_main() and action == "remake":  # complete, but damaged or its model is gone: made again
            log.warning("%s/%s is marked DONE but %s: making it again", stage_name, path.name, problem)
            runs.reopen(path)
        rank, world = dist.rank_world()
        run = Run(path, device, upstream, {"seed": cfg.seed})
        config = stage_config(stage_name, cfg)
        try:
            names = tracking.reporters(cfg.report_to) if run.writer else []  # rank 0 logs
            with (
                runs.open_run(path, config, device, run.seeds, write=run.writer) as provenance,
                tracking.tracking(names, path, stage_name, config, cfg.runs_dir) as tracker,
            ):
                run.write_json("run_id.json", id_payload(stage_name, cfg))
                spec.runner(cfg, run, **({"on_update": on_update} if on_update is not None else {}))
                if run.writer and (path / "model" / "config.json").is_file():  # a saved model: its card, remade with it
                    from .. import cards

                    cards.write(path / "model", path)
                if tracker is not None:  # metrics.json is written, DONE not yet (read_metrics reads complete runs)
                    tracker.finish(json.loads((path / "metrics.json").read_text()))
                provenance["upstream"] = {k: v.name for k, v in upstream.items()} or None
                provenance["world_size"] = world
                provenance["engine_version"] = ENGINE_VERSION  # in the run id too; the report groups by it
                dist.barrier()  # every rank is done computing before DONE marks the run complete
        except UserError:
            if fresh and run.writer:  # under the lock: no other process is making this run now
                runs.discard_unstarted(path, lock)
            raise
        if run.writer:
            shutil.rmtree(path / "checkpoints", ignore_errors=True)
            runs.made(lock)
    dist.barrier()
    return path
