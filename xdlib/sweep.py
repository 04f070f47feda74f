"""Sweeps: expand a params file's grid into cells and run each cell's notebooks through papermill.

A *cell* is one fine-tuning config (source task x augmentation x architecture x target x seed x student, any
subset). Its *jobs* are the stage runs it needs, teacher -> distill -> finetune; cells share jobs with equal run
ids, so each job runs once. Jobs run in waves by stage (all teachers, then all distillations, then all
fine-tunings), so parallel workers never race on one run. Complete runs are skipped; a failed job marks the cells
that need it failed (downstream jobs are not tried) and the sweep goes on with the rest.

A run id holds the precision its stage computes in, and with `device: auto` that depends on the machine (bf16
where there is CUDA). The planning process (a login node without a GPU) may not be the one that runs the job, so
each job takes its run id where it executes, and the sweep records the run that was made there.

Executors (no home-made scheduler): `inline` runs the notebooks one by one from this process; `direct` calls the
stage functions in this process without notebooks (no kernel start-up per run: the embedded CPU study uses it);
`local` and `slurm` submit
them through submitit (LocalExecutor subprocesses, `workers` at a time, one GPU each when there are GPUs; or
Slurm jobs with the params file's `slurm:` settings).

Each job executes notebooks/<stage>.ipynb with the cell's parameters; the executed notebook is stored in the run
folder as `notebook.ipynb` and its log in results/sweeps/<sweep>/logs/. The status table (cell, run ids, state,
wall time, error line, log path) goes to results/sweeps/<sweep>/status.csv and .md.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import shutil
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from . import runs, stages
from .config import Config, ConfigError, fields_of, load_params, with_target_settings
from .notebook import STAGE_NOTEBOOKS
from .preflight import preflight
from .tasks import task_names

log = logging.getLogger(__name__)
# A job passes its whole config; fields outside a notebook's parameters cell are expected (stage_config checks
# every name), so papermill's "Passed unknown parameter" warning says nothing here; its per-cell INFO lines go
# nowhere either: each job's output is in its log file, and the sweep prints one progress line per run.
logging.getLogger("papermill").addFilter(lambda record: not record.getMessage().startswith("Passed unknown parameter"))
logging.getLogger("papermill").setLevel(logging.WARNING)

STAGES = tuple(stages.STAGES)  # upstream first: the stage registry's order
NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
EXECUTORS = ("inline", "direct", "local", "slurm")


def expand_grid(values: dict) -> list[dict]:
    """A params file's `grid:` (key -> list of values, or a list of such mappings) -> one dict per cell."""
    values = dict(values)
    grid = values.pop("grid", None) or {}
    blocks = grid if isinstance(grid, list) else [grid]
    cells = []
    for block in blocks:
        if not isinstance(block, dict) or not all(isinstance(v, list) for v in block.values()):
            raise ConfigError("grid must map each key to a list of values (or be a list of such mappings)")
        empty = [k for k, v in block.items() if not v]
        if empty:
            raise ConfigError(f"grid key {empty[0]!r} has no values; allowed: a non-empty list of values")
        keys = list(block)
        for combo in itertools.product(*(block[k] for k in keys)):
            cell = {**values, **dict(zip(keys, combo))}
            if cell not in cells:
                cells.append(cell)
    return cells or [values]


@dataclass
class Job:
    stage: str
    run_id: str
    config: dict  # the stage config's fields
    runs_dir: str
    state: str = "pending"  # pending | complete (skipped) | done | failed | blocked
    wall: float = 0.0
    error: str = ""
    log_path: str = ""

    @property
    def path(self) -> Path:
        return runs.run_dir(self.runs_dir, self.stage, self.run_id)


def chain_of(cfg: Config) -> list[str]:
    """Every stage whose run a fine-tuning cell needs, upstream first (the stage registry's chain)."""
    return stages.chain("finetune", cfg)


def plan(path: str | Path, overrides: dict | None = None) -> tuple[str, list[Config], dict]:
    """(sweep name, one validated config per cell, executor settings) of a params file."""
    values = load_params(path)
    values.update(overrides or {})
    name = str(values.get("name") or Path(path).stem)
    settings = {"slurm": values.pop("slurm", None) or {}}
    configs = [Config.from_dict(with_target_settings(cell)) for cell in expand_grid(values)]

    known = task_names(values.get("local_tasks"))
    unknown = sorted(set(values.get("target_settings") or {}) - set(known))
    if unknown:  # a base file's settings may name targets an including file's grid leaves out; not unknown tasks
        raise ConfigError(
            f"target_settings names {', '.join(map(repr, unknown))}, which is not a task; allowed: registered tasks "
            f"({', '.join(known)})"
        )
    return name, configs, settings


def _join_job_tasks() -> int:
    """Inside a submitit job of several tasks (a cell given N GPUs): export RANK, WORLD_SIZE, MASTER_ADDR... for
    `dist.init_from_env`, which `ensure` calls. Returns this task's rank (0 in a job of one task)."""
    tasks = int(os.environ.get("SUBMITIT_LOCAL_NTASKS") or os.environ.get("SLURM_NTASKS") or 1)
    if tasks <= 1 or "SUBMITIT_FOLDER" not in os.environ and "SUBMITIT_LOCAL_JOB_ID" not in os.environ:
        return 0
    import submitit

    return submitit.helpers.TorchDistributedEnvironment().export().rank


def group_jobs(jobs: list[Job]) -> list[list[Job]]:
    """Jobs that one notebook kernel runs in turn: the fine-tunings of one student (its targets and seeds) share a
    kernel, which saves a start-up (torch and transformers imported) per run; every other job runs alone."""
    student_fields = [f.name for f in fields_of("distill")] + ["student"]
    groups: dict[str, list[Job]] = {}
    for job in jobs:
        key = job.run_id if job.stage != "finetune" else repr([job.config.get(k) for k in student_fields])
        groups.setdefault(key, []).append(job)
    return list(groups.values())


def resolved_here(job: Job) -> Job:
    """The job with the run id this process gives its config: where the job executes, `device: auto` means the
    device this machine has, and the run id holds its precision."""
    return dataclasses.replace(job, run_id=stages.run_id(job.stage, Config.from_dict(job.config, job.stage)))


Outcome = tuple[str, float, str, str]  # state, wall seconds, error line, the run id where the job executed


def execute_job(group: list[Job], log_dir: str, gpu: int | None = None) -> list[Outcome]:
    """Run a stage notebook through papermill (in a subprocess kernel) for a group of jobs (`group_jobs`: one,
    or a student's fine-tunings, the notebook's `runs`); returns (state, wall, error line, run id) per job. Each
    run folder keeps the executed notebook."""
    import papermill

    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
    group = [resolved_here(j) for j in group]  # the runs the notebook's kernel, on this machine, makes
    first = group[0]
    start = time.time()
    needs_model = stages.STAGES[first.stage].has_model  # as ensure: a top-level run needs its model
    if all(runs.usable(j.path, needs_model=needs_model) for j in group):
        return [("complete", 0.0, "", j.run_id) for j in group]
    rank = _join_job_tasks()  # the kernel inherits the environment: its ensure() joins the process group
    Path(log_dir).mkdir(parents=True, exist_ok=True)
    suffix = f"-rank{rank}" if rank else ""
    out = Path(log_dir) / f"{first.stage}-{first.run_id}{suffix}.ipynb"
    parameters = dict(first.config)
    if len(group) > 1:
        parameters["runs"] = [{k: v for k, v in j.config.items() if first.config.get(k) != v} for j in group]
    error = ""
    try:
        with open(Path(log_dir) / f"{first.stage}-{first.run_id}{suffix}.log", "w") as stream:
            papermill.execute_notebook(
                str(NOTEBOOK_DIR / f"{first.stage}.ipynb"),
                str(out),
                parameters=parameters,
                cwd=os.getcwd(),
                progress_bar=False,
                log_output=False,  # the output goes to the job's log file (stdout_file), not the sweep's
                extra_arguments=["--IPKernelApp.log_level=ERROR"],  # not a TCP warning per kernel on the console
                stdout_file=stream,
                stderr_file=stream,
            )
    except Exception as err:  # a failed cell: recorded, the sweep goes on
        line = f"{getattr(err, 'ename', type(err).__name__)}: {getattr(err, 'evalue', str(err))}"
        log.debug("job %s failed:\n%s", first.run_id, traceback.format_exc())
        error = line.splitlines()[0][:300] if line else "failed"
    wall = (time.time() - start) / len(group)
    results = []
    for j in group:
        made = runs.usable(j.path, needs_model=needs_model)
        if made and rank == 0 and out.is_file():
            shutil.copyfile(out, j.path / ".notebook.ipynb.tmp")
            os.replace(j.path / ".notebook.ipynb.tmp", j.path / "notebook.ipynb")
        results.append(("done" if made else "failed", wall, error, j.run_id))  # made or not, whatever cell failed
    return results


def execute_group(group: list[Job], log_dir: str) -> list[Outcome]:
    """A group of jobs through its stage's notebook, or in this process for a stage without one (STILTs'
    intermediate model, which its fine-tuning notebook would otherwise make)."""

    if group[0].stage in STAGE_NOTEBOOKS:
        return execute_job(group, log_dir)
    return [execute_direct(job, log_dir) for job in group]


def execute_direct(job: Job, log_dir: str) -> Outcome:
    """`ensure` the job's run in this process (no notebook); returns (state, wall, error line, the id of the run
    `ensure` returned)."""
    start = time.time()
    try:
        _join_job_tasks()
        path = stages.ensure(job.stage, Config.from_dict(job.config, job.stage))
    except Exception as err:  # a failed cell: recorded, the sweep goes on
        Path(log_dir).mkdir(parents=True, exist_ok=True)
        Path(job.log_path).write_text(traceback.format_exc())
        return (
            "failed",
            time.time() - start,
            f"{type(err).__name__}: {str(err).splitlines()[0][:300] if str(err) else ''}",
            job.run_id,
        )
    return "done", time.time() - start, "", path.name


def _gpu_count() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:  # pragma: no cover
        return 0


def _record(group: list[Job], outcomes: list[Outcome], progress) -> None:
    """Each job's outcome, and the run it made or found where it executed (its id may differ from the planned
    one: `device: auto` on a machine unlike the planner's)."""
    for job, (state, wall, error, *where) in zip(group, outcomes):
        job.state, job.wall, job.error = state, wall, error
        job.run_id = where[0] if where else job.run_id
        progress.update(1)


def run_jobs(jobs: list[Job], log_dir: Path, executor: str, workers: int, settings: dict, progress) -> None:
    """Execute pending jobs (one stage's wave) with the chosen executor, filling in state/wall/error."""
    pending = [j for j in jobs if j.state == "pending"]
    for job in pending:
        job.log_path = str(log_dir / f"{job.stage}-{job.run_id}.log")
    if executor == "direct":
        for job in pending:
            _record([job], [execute_direct(job, str(log_dir))], progress)
        return
    groups = group_jobs(pending)
    for group in groups:
        for job in group:
            job.log_path = str(log_dir / f"{group[0].stage}-{group[0].run_id}.log")
    if executor == "inline":
        for group in groups:
            _record(group, execute_group(group, str(log_dir)), progress)
        return
    import submitit

    folder = log_dir / "submitit"
    per_cell = settings.get("gpus_per_cell", 1)  # processes (one per GPU, or CPU processes) that share one run
    if executor == "local":
        ex = submitit.LocalExecutor(folder=folder)
        ex.update_parameters(timeout_min=settings.get("timeout_min", 24 * 60), tasks_per_node=per_cell)
    else:  # tasks_per_node / gpus_per_node for N GPUs per cell come from the params file's slurm: settings
        ex = submitit.AutoExecutor(folder=folder, cluster="slurm")
        ex.update_parameters(**settings.get("slurm", {}))
    gpus = _gpu_count() if executor == "local" else 0
    if executor == "local":
        slots = max(1, min(workers, gpus // per_cell) if gpus else workers)
    else:
        slots = len(groups) or 1
    for start in range(0, len(groups), slots):
        batch = groups[start : start + slots]
        submitted = []
        for i, group in enumerate(batch):
            if executor == "local" and gpus:  # this slot's own GPUs
                ex.update_parameters(
                    gpus_per_node=per_cell, visible_gpus=tuple(range(i * per_cell, (i + 1) * per_cell))
                )
            submitted.append((group, ex.submit(execute_group, group, str(log_dir))))
        for group, handle in submitted:
            try:
                outcomes = handle.results()[0]  # rank 0's, in a job of several tasks
            except Exception as err:  # the job process itself died
                line = f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"
                outcomes = [("failed", 0.0, line, job.run_id) for job in group]
            _record(group, outcomes, progress)


def plan_jobs(configs: list[Config], remote: bool = False) -> tuple[dict[tuple[str, str, bool], Job], list[tuple]]:
    """Every cell's chain of jobs (cells share jobs with equal run ids), each job marked complete where the run
    store already has it: last stage first, so an upstream run without its model (metrics only) is rerun only
    when a stage below it still has to run; a damaged run is named and runs again. The ids are this machine's: a
    job with `device: auto` takes its own where it executes (`resolved_here`), so it shares a job only with jobs
    that are also `auto`. With a `remote` executor (Slurm) such a job is never marked complete here: what it
    reuses is decided where it runs, so a GPU-less login node does not skip a job whose GPU run does not exist."""
    jobs: dict[tuple[str, str, bool], Job] = {}
    cells = []
    for cfg in configs:
        chain = []
        for stage in chain_of(cfg):
            key = (stage, stages.run_id(stage, cfg), cfg.device == "auto")
            if key not in jobs:
                jobs[key] = Job(stage, key[1], stages.stage_config(stage, cfg), cfg.runs_dir)
            chain.append(jobs[key])
        cells.append((cfg, chain))
    for stage in reversed(STAGES):
        for job in (j for j in jobs.values() if j.stage == stage):
            below = [c[c.index(job) + 1] for _, c in cells if job in c and c[-1] is not job]
            wanted = any(j.state != "complete" for j in below)
            if remote and job.config.get("device") == "auto":
                continue
            # the registry's rule: a run read by a stage still to run needs its model, otherwise its metrics do
            action, why = stages.state(stage, Config.from_dict(job.config, stage), top=wanted)
            if action == "remake":
                log.warning("%s/%s: %s: it runs again", stage, job.run_id, why)
            job.state = "complete" if action == "reuse" else job.state
    return jobs, cells


def _status_row(i: int, cfg: Config, chain: list[Job], dry_run: bool) -> dict:
    """One cell's line of the status table: its runs, state, wall time, first error and log."""
    states = [j.state for j in chain]
    state = next((s for s in ("failed", "blocked", "pending") if s in states), None)
    state = state or ("complete" if all(s == "complete" for s in states) else "done")
    return {
        "cell": i,
        "source": cfg.source_task,
        "target": cfg.target_task,
        "student": cfg.student,
        "arch": cfg.student_arch,
        "augmentation": "+".join(cfg.augmentation) or "-",
        "seed": cfg.seed,
        **{f"{j.stage}_run": j.run_id for j in chain},
        "state": "planned" if dry_run and state == "pending" else state,
        "wall_s": round(sum(j.wall for j in chain), 1),
        "error": next((j.error for j in chain if j.error), ""),
        "log": next((j.log_path for j in chain if j.state in ("failed", "blocked")), chain[-1].log_path),
    }


def sweep(
    path: str | Path,
    overrides: dict | None = None,
    dry_run: bool = False,
    executor: str = "inline",
    workers: int = 1,
    out_dir: str | Path | None = None,
    gpus_per_cell: int = 1,
):
    """Run (or, with dry_run, only plan) every cell of a params file; returns the status DataFrame."""
    import pandas as pd
    from tqdm.auto import tqdm

    if executor not in EXECUTORS:
        raise ConfigError(f"executor {executor!r} is not allowed; allowed: {', '.join(EXECUTORS)}")
    if workers < 1:
        raise ConfigError(f"--workers {workers} is not allowed; allowed: 1 or more parallel jobs")
    if gpus_per_cell < 1 or (gpus_per_cell > 1 and executor != "local"):
        raise ConfigError(
            f"--gpus-per-cell {gpus_per_cell} is not allowed with --executor {executor}; allowed: 1, or N >= 1 with "
            "--executor local (Slurm: tasks_per_node and gpus_per_node under the params file's slurm:)"
        )
    name, configs, settings = plan(path, overrides)
    settings["gpus_per_cell"] = gpus_per_cell
    for cfg in configs:  # every input checked before any training
        preflight(cfg, network=not dry_run)
    jobs, cells = plan_jobs(configs, remote=executor == "slurm")
    # beside the run store: results/runs -> results/sweeps/<name>
    sweep_dir = Path(out_dir or Path(configs[0].runs_dir).parent / "sweeps") / name
    log_dir = sweep_dir / "logs"
    todo = [j for j in jobs.values() if j.state == "pending"]
    if not dry_run:
        with tqdm(total=len(todo), desc=f"sweep {name}", unit="run") as progress:
            for stage in STAGES:
                wave = [j for j in todo if j.stage == stage]
                for job in wave:  # upstream failed: don't try
                    for _cfg, chain in cells:
                        if job in chain and any(j.state in ("failed", "blocked") for j in chain[: chain.index(job)]):
                            job.state, job.error = "blocked", "an upstream run failed"
                            progress.update(1)
                            break
                run_jobs(wave, log_dir, executor, workers, settings, progress)
    status = pd.DataFrame([_status_row(i, cfg, chain, dry_run) for i, (cfg, chain) in enumerate(cells)])
    if not dry_run:
        sweep_dir.mkdir(parents=True, exist_ok=True)
        runs.atomic_write(sweep_dir / "status.csv", status.to_csv(index=False))
        runs.atomic_write(sweep_dir / "status.md", status.to_markdown(index=False) + "\n")
    return status
