"""Experiment tracking: `report_to` (the transformers `TrainingArguments.report_to` convention): none, tensorboard,
mlflow, or a list of them.

- tensorboard: event files in RUN_DIR/tensorboard (`torch.utils.tensorboard`), written while the run trains: each
  phase's loss and learning rate at every update, its dev score at every evaluation, then the run's final metrics
  and its config as hparams (and as text).
- mlflow: one MLflow run per xdlib run, in `MLFLOW_TRACKING_URI` or else a file store `mlruns/` beside the run
  store, tagged with stage, run id and git sha, with the config as params, the same curves and final metrics, and
  metrics.json as an artefact.

Only the process that writes the run (rank 0) logs. A resumed run continues its curves: the same event folder and the
same MLflow run (its id is kept in RUN_DIR/mlflow.json), each phase's steps counted from where it stopped.
`report_to` is a system setting: it never enters a run id. Each tracker is an extra (`pip install
'xdlib[tensorboard]'`, `'xdlib[mlflow]'`), imported only when a run logs to it.
"""

from __future__ import annotations

import contextvars
import importlib.util
import json
import logging
import os
import re
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)
REPORTERS = ("none", "tensorboard", "mlflow")
PACKAGES = {"tensorboard": "tensorboard", "mlflow": "mlflow"}  # reporter -> the package it needs (and its extra)
_current: contextvars.ContextVar[Tracker | None] = contextvars.ContextVar("xdlib_tracker", default=None)


def reporters(value: Any) -> list[str]:
    """`report_to` as a list: "none" -> [], "tensorboard" -> ["tensorboard"], a list as it is (less "none")."""
    values = [value] if isinstance(value, str) else list(value or [])
    return [v for v in values if v != "none"]


def report_to_problem(value: Any) -> str | None:
    """Config check of `report_to`: None, or what is allowed."""
    allowed = f"one of {', '.join(REPORTERS)}, or a list of them"
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, (list, tuple)) or not all(isinstance(v, str) and v in REPORTERS for v in values):
        return allowed
    if "none" in values and len(values) > 1:
        return f"{allowed} (none alone)"
    return None


def check_installed(value: Any) -> None:
    """Each tracker's package is importable (found, not imported): else one line naming the extra to install."""
    from .config import ConfigError

    for name in reporters(value):
        if importlib.util.find_spec(PACKAGES[name]) is None:
            raise ConfigError(
                f"report_to={name} needs the {PACKAGES[name]} package, which is not installed; allowed: "
                f"pip install 'xdlib[{name}]' (pip install -e '.[{name}]' in a checkout), or report_to=none"
            )


def _tag(text: str) -> str:
    """A metric name both trackers accept: letters, digits, _ - . / and spaces."""
    return re.sub(r"[^\w\-./ ]", "_", text).strip()


def _flat(config: dict) -> dict[str, Any]:
    """Config values as hparams / params: scalars as they are, anything else as its JSON text."""
    out = {}
    for key, value in sorted(config.items()):
        out[key] = value if isinstance(value, (bool, int, float, str)) else json.dumps(value)
    return out


class Tracker:
    """The run's trackers; each is opened at its first use, so a run that cannot start leaves no tracking behind."""

    def __init__(self, names: list[str], run_dir: Path, stage: str, config: dict, runs_dir: str | Path):
        self.names, self.run_dir, self.stage, self.config = names, Path(run_dir), stage, config
        self.runs_dir = Path(runs_dir)
        self._writer = None
        self._mlflow = None  # (client, run id)

    # ---- tensorboard -------------------------------------------------------------------------------------------
    def writer(self):
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.run_dir / "tensorboard"))
        return self._writer

    # ---- mlflow ------------------------------------------------------------------------------------------------
    def mlflow(self):
        if self._mlflow is None:
            from mlflow.tracking import MlflowClient

            from . import git_state

            uri = os.environ.get("MLFLOW_TRACKING_URI") or (self.runs_dir.resolve().parent / "mlruns").as_uri()
            if uri.startswith("file:"):  # MLflow 3 keeps its file store working only when asked (a database URI in
                os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # MLFLOW_TRACKING_URI needs no such flag)
            client = MlflowClient(tracking_uri=uri)
            record = self.run_dir / "mlflow.json"
            known = json.loads(record.read_text()) if record.is_file() else {}
            run_id = None
            if known.get("tracking_uri") == uri:  # a resumed run: its MLflow run goes on, if it is still there
                try:
                    client.update_run(known["run_id"], status="RUNNING")
                    run_id = known["run_id"]
                except Exception:  # deleted from the store meanwhile: a new MLflow run below
                    run_id = None
            if run_id is None:
                name = "xdlib"
                experiment = client.get_experiment_by_name(name)
                experiment_id = experiment.experiment_id if experiment else client.create_experiment(name)
                tags = {"stage": self.stage, "run_id": self.run_dir.name, "git_sha": str(git_state()["git_sha"]),
                        "study": str(self.config.get("study", ""))}  # fmt: skip
                created = client.create_run(experiment_id, tags=tags, run_name=f"{self.stage}/{self.run_dir.name}")
                run_id = created.info.run_id
                from mlflow.entities import Param

                from .runs import atomic_write

                params = [Param(k, str(v)[:6000]) for k, v in _flat(self.config).items()]
                for i in range(0, len(params), 100):  # log_batch takes at most 100 params at a time
                    client.log_batch(run_id, params=params[i : i + 100])
                atomic_write(record, json.dumps({"tracking_uri": uri, "run_id": run_id}))  # whole, as every run file
            self._mlflow = client, run_id
        return self._mlflow

    # ---- both --------------------------------------------------------------------------------------------------
    def _off(self, name: str, err: Exception) -> None:
        """A tracker that fails (an unreachable MLflow server, a full disk) is turned off with one warning: the run
        itself goes on, its results unchanged."""
        logger.warning("report_to=%s failed (%s: %s); the run goes on without it", name, type(err).__name__, err)
        self.names = [n for n in self.names if n != name]

    def scalars(self, points: list[tuple[str, int, float]]) -> None:
        """(name, step, value) points to every tracker of the run."""
        for name in list(self.names):
            try:
                self._scalars(name, points)
            except Exception as err:
                self._off(name, err)

    def _scalars(self, tracker: str, points: list[tuple[str, int, float]]) -> None:
        points = [(_tag(name), int(step), float(value)) for name, step, value in points]
        if tracker == "tensorboard":
            writer = self.writer()
            for name, step, value in points:
                writer.add_scalar(name, value, step)
        if tracker == "mlflow":
            from mlflow.entities import Metric

            client, run_id = self.mlflow()
            stamp = int(time.time() * 1000)
            metrics = [Metric(name, value, stamp, step) for name, step, value in points]
            for i in range(0, len(metrics), 1000):  # log_batch takes at most 1000 metrics at a time
                client.log_batch(run_id, metrics=metrics[i : i + 1000])

    def finish(self, metrics: dict) -> None:
        """The run's final numbers, its config as hparams, metrics.json as an artefact; then closed."""
        final = {_tag(f"final/{k}"): float(v) for k, v in (metrics or {}).items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool)}  # fmt: skip
        self.scalars([(k, 0, v) for k, v in final.items()])
        for name in list(self.names):
            try:
                self._finish(name, final)
            except Exception as err:
                self._off(name, err)
        self.close()

    def _finish(self, tracker: str, final: dict) -> None:
        if tracker == "tensorboard":
            from torch.utils.tensorboard.summary import hparams

            writer = self.writer()
            experiment, start, end = hparams(_flat(self.config), final)
            for summary in (experiment, start, end):
                writer.file_writer.add_summary(summary)
            import yaml

            writer.add_text("config", "```\n" + yaml.safe_dump(self.config, sort_keys=True) + "```")
        if tracker == "mlflow":
            client, run_id = self.mlflow()
            if (self.run_dir / "metrics.json").is_file():
                client.log_artifact(run_id, str(self.run_dir / "metrics.json"))
            client.set_terminated(run_id)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


@contextmanager
def tracking(names: list[str], run_dir: Path, stage: str, config: dict, runs_dir: str | Path):
    """The tracker of the run being made, for `log` calls inside the block (none when `names` is empty)."""
    tracker = Tracker(names, run_dir, stage, config, runs_dir) if names else None
    token = _current.set(tracker)
    try:
        yield tracker
    except BaseException:  # a failed or interrupted run: its MLflow run says so (a resume sets it running again)
        if tracker is not None and tracker._mlflow is not None:
            client, run_id = tracker._mlflow
            try:
                client.set_terminated(run_id, status="FAILED")
            except Exception as err:  # never in place of the run's own error
                logger.warning("report_to=mlflow: could not mark %s failed (%s)", run_id, err)
        raise
    finally:
        _current.reset(token)
        if tracker is not None:
            tracker.close()


def log(values: dict[str, float], step: int) -> None:
    """Scalars at `step` to the current run's trackers; nothing when it has none (or on ranks other than 0)."""
    tracker = _current.get()
    if tracker is not None:
        tracker.scalars([(name, step, value) for name, value in values.items()])


def log_series(name: str, steps, values) -> None:
    """One scalar's values at consecutive steps (a phase's losses since the last flush)."""
    tracker = _current.get()
    if tracker is not None:
        tracker.scalars([(name, step, value) for step, value in zip(steps, values)])
