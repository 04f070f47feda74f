"""A run store copied without weights (metrics only, as a committed study's): complete runs are reused, and an
upstream run without its model is trained again only when a stage below it still has to run."""

import shutil
from pathlib import Path

import pytest
import yaml

from xdlib.sweep import sweep


def _states(status) -> list[str]:
    return list(status["state"])


@pytest.mark.slow  # in make test, not in make test-fast (over 5 s)
def test_metrics_only_upstream_is_rerun_only_when_needed(tmp_path, base_params):
    values = base_params | {"name": "reuse", "grid": {"target_task": ["toy-sentiment", "toy-regression"]}}
    params = tmp_path / "reuse.yaml"
    params.write_text(yaml.safe_dump(values))
    runs = Path(base_params["runs_dir"])
    assert _states(sweep(params, executor="direct")) == ["done", "done"]
    for model in runs.glob("*/*/model"):  # strip every run's weights, as a copied or committed store has none
        shutil.rmtree(model)
    stamps = {p.parent.name: p.stat().st_mtime_ns for p in runs.glob("*/*/DONE")}

    assert _states(sweep(params, executor="direct")) == ["complete", "complete"]  # nothing to train: no rerun
    assert {p.parent.name: p.stat().st_mtime_ns for p in runs.glob("*/*/DONE")} == stamps

    (regression,) = runs.glob("finetune/toy-regression-*")
    shutil.rmtree(regression)  # one cell must run again: its teacher and distillation come back with weights
    status = sweep(params, executor="direct")
    assert _states(status) == ["done", "done"], status[["state", "error"]]  # a cell is done when any of its runs ran
    assert all((p / "model" / "config.json").is_file() for p in [*runs.glob("teacher/*"), *runs.glob("distill/*")])
    (sentiment,) = runs.glob("finetune/toy-sentiment-*")
    assert (sentiment / "DONE").stat().st_mtime_ns == stamps[sentiment.name]  # the complete cell was not rerun
    assert (regression / "DONE").is_file()


@pytest.mark.slow
def test_the_local_executor_runs_a_two_cell_sweep(tmp_path, base_params):
    """`--executor local` (submitit's LocalExecutor, 2 workers): both cells done through their notebooks in
    subprocesses, every run complete in the store; a rerun of the same grid in this process finds them all. The
    shared teacher and distillation are made here first (their notebooks run in the papermill test), so each
    worker runs its cell's fine-tuning notebook only."""
    from xdlib.config import Config
    from xdlib.stages import ensure

    values = base_params | {"name": "local", "grid": {"target_task": ["toy-sentiment", "toy-regression"]}}
    params = tmp_path / "local.yaml"
    params.write_text(yaml.safe_dump(values))
    ensure("distill", Config.from_dict(base_params))
    status = sweep(params, executor="local", workers=2)
    assert _states(status) == ["done", "done"], status[["state", "error"]]
    runs = Path(base_params["runs_dir"])
    assert len(list(runs.glob("*/*/DONE"))) == 4  # one teacher, one distillation, two fine-tunings
    assert len(list(runs.glob("finetune/*/notebook.ipynb"))) == 2  # each made by a worker, through its notebook
    assert _states(sweep(params, executor="direct")) == ["complete", "complete"]
