"""Experiment tracking (`report_to`): tensorboard's EventAccumulator reads back a tiny run's losses, learning rates
and dev scores, a resumed run continues the same curves, MLflow's search_runs finds the run with its metrics and
tags, `report_to` never enters a run id, and a bad value or a missing extra is one line."""

import json

import pytest

from xdlib import tracking
from xdlib.config import Config, ConfigError
from xdlib.stages import ensure, run_id


def _scalars(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0}).Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


@pytest.mark.slow  # in make test, not in make test-fast (over 5 s)
def test_tensorboard_holds_each_phases_loss_lr_and_dev_scores(base_params):
    params = base_params | {"report_to": "tensorboard"}
    path = ensure("distill", Config.from_dict(params))
    scalars = _scalars(path / "tensorboard")
    metrics = json.loads((path / "metrics.json").read_text())
    phases = [p for p in metrics["phases"] if p["updates"]]
    assert phases
    for phase in phases:
        losses = scalars[f"{phase['phase']}/loss"]
        assert [s for s, _ in losses] == list(range(1, phase["updates"] + 1)), phase["phase"]
        assert [round(v, 6) for _, v in losses[-5:]] == pytest.approx(phase["last_losses"], abs=1e-6)
        assert f"{phase['phase']}/lr" in scalars
    with_dev = [p for p in phases if p.get("history")]
    for phase in with_dev:
        logged = scalars[f"{phase['phase']}/dev"]
        assert [s for s, _ in logged] == [h["update"] for h in phase["history"]]
        assert [v for _, v in logged] == pytest.approx([h["dev"] for h in phase["history"]])
    assert scalars["final/test_accuracy"] == [(0, pytest.approx(metrics["test_accuracy"]))]
    (teacher,) = (path.parent.parent / "teacher").iterdir()  # its upstream run logs too, into its own folder
    assert any(tag.endswith("/loss") for tag in _scalars(teacher / "tensorboard"))


@pytest.mark.slow  # in make test, not in make test-fast (over 5 s)
def test_a_resumed_run_continues_its_curves(base_params, tmp_path, monkeypatch):
    """A distillation killed inside a phase is FAILED in MLflow; resumed, the same MLflow run is FINISHED, and every
    phase's curve holds each of its updates' losses once or (between its last checkpoint and the kill) twice at the
    same step, in the run's one event folder."""
    import mlflow

    from xdlib.train import Interrupted

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    params = base_params | {"report_to": ["tensorboard", "mlflow"], "checkpoint_every": 3, "distill_epochs": 1.0}
    cfg = Config.from_dict(params)
    calls = {"n": 0}

    def kill(update):
        calls["n"] += 1
        if calls["n"] == 20:  # inside a phase, between checkpoints
            raise Interrupted("killed")

    with pytest.raises(Interrupted):
        ensure("distill", cfg, on_update=kill)
    client = mlflow.MlflowClient((tmp_path / "mlruns").as_uri())
    (killed,) = (tmp_path / "runs" / "distill").iterdir()
    mlflow_run = json.loads((killed / "mlflow.json").read_text())["run_id"]
    assert client.get_run(mlflow_run).info.status == "FAILED"
    path = ensure("distill", cfg)
    assert client.get_run(mlflow_run).info.status == "FINISHED"  # the same MLflow run, resumed
    scalars = _scalars(path / "tensorboard")
    phases = [p for p in json.loads((path / "metrics.json").read_text())["phases"] if p["updates"]]
    for phase in phases:
        steps = [s for s, _ in scalars[f"{phase['phase']}/loss"]]
        assert sorted(set(steps)) == list(range(1, phase["updates"] + 1)), (phase["phase"], steps)
        assert len(steps) - len(set(steps)) < params["checkpoint_every"], steps  # only since the last checkpoint
    assert len(list((path / "tensorboard").glob("events.*"))) == 2  # the killed session's file and the resumed one


@pytest.mark.slow  # in make test, not in make test-fast (over 5 s)
def test_mlflow_finds_the_run_with_its_metrics_tags_and_artefact(base_params, tmp_path, monkeypatch):
    import mlflow

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    params = base_params | {"report_to": ["tensorboard", "mlflow"]}
    path = ensure("teacher", Config.from_dict(params))
    store = (tmp_path / "mlruns").as_uri()  # beside the run store (base_params' runs_dir is tmp_path/runs)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    mlflow.set_tracking_uri(store)
    found = mlflow.search_runs(search_all_experiments=True, output_format="list")
    (run,) = found
    metrics = json.loads((path / "metrics.json").read_text())
    assert (
        run.info.status == "FINISHED" and run.data.tags["run_id"] == path.name and run.data.tags["stage"] == "teacher"
    )
    assert run.data.metrics["final/test_accuracy"] == pytest.approx(metrics["test_accuracy"])
    assert run.data.params["teacher_lr"] == str(params["teacher_lr"]) and len(run.data.tags["git_sha"]) == 40
    history = mlflow.MlflowClient(store).get_metric_history(run.info.run_id, "teacher/loss")
    assert len(history) == json.loads((path / "train_summary.json").read_text())["updates"]
    artefacts = [a.path for a in mlflow.MlflowClient(store).list_artifacts(run.info.run_id)]
    assert artefacts == ["metrics.json"] and (path / "tensorboard").is_dir()


def test_report_to_never_enters_a_run_id_and_a_bad_value_is_one_line(capsys, tmp_path):
    from xdlib.__main__ import main

    assert main(["run", "teacher", "-p", "report_to=wandb", "-p", f"runs_dir={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert err == ("error: parameter report_to='wandb' is not allowed; allowed: one of none, tensorboard, mlflow, or "
                   "a list of them\n")  # fmt: skip
    base = Config()
    for value in ("tensorboard", ["tensorboard", "mlflow"], "none"):
        assert run_id("finetune", base) == run_id("finetune", base.replace(report_to=value))
    for bad in ("wandb", ["tensorboard", "wandb"], ["none", "mlflow"], 3):
        with pytest.raises(
            ConfigError, match=r"report_to=.* is not allowed; allowed: one of none, tensorboard, mlflow"
        ):
            Config(report_to=bad).replace()


def test_a_missing_tracker_is_one_line_naming_its_extra(base_params, monkeypatch, capsys):
    import importlib.util

    from xdlib.__main__ import main

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    args = ["run", "teacher", "-p", "report_to=[tensorboard, mlflow]"]
    args += [x for k, v in base_params.items() if k in ("runs_dir", "teacher_model") for x in ("-p", f"{k}={v}")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: report_to=mlflow needs the mlflow package") and err.count("\n") == 1, err
    assert "pip install 'xdlib[mlflow]'" in err


def test_nothing_is_logged_without_a_tracker(tmp_path):
    """`log` without an open tracker (every rank but the one that writes the run) writes nothing."""
    tracking.log({"x": 1.0}, 1)
    with tracking.tracking([], tmp_path, "teacher", {}, tmp_path) as tracker:
        assert tracker is None
        tracking.log({"x": 1.0}, 1)
    assert not list(tmp_path.iterdir())


@pytest.mark.slow  # in make test, not in make test-fast (over 5 s)
def test_a_remade_run_starts_new_curves(base_params, monkeypatch):
    """A complete run whose model is gone is trained again: its old event files go, its curves start afresh, and it
    logs to a new MLflow run."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = Config.from_dict(base_params | {"report_to": ["tensorboard", "mlflow"]})
    path = ensure("teacher", cfg)
    first = {p.name for p in (path / "tensorboard").glob("events.*")}
    first_run = json.loads((path / "mlflow.json").read_text())["run_id"]
    import shutil

    shutil.rmtree(path / "model")
    ensure("teacher", cfg)
    events = {p.name for p in (path / "tensorboard").glob("events.*")}
    assert len(events) == 1 and not events & first
    assert json.loads((path / "mlflow.json").read_text())["run_id"] != first_run
    steps = [s for s, _ in _scalars(path / "tensorboard")["teacher/loss"]]
    assert steps == sorted(set(steps))  # one training's curve, each step once


def test_a_failing_tracker_is_turned_off_and_the_run_goes_on(base_params, monkeypatch, caplog):
    def broken(self, name, points):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tracking.Tracker, "_scalars", broken)
    path = ensure("teacher", Config.from_dict(base_params | {"report_to": "tensorboard"}))
    assert (path / "DONE").is_file()
    assert [r for r in caplog.records if "report_to=tensorboard failed" in r.getMessage()]
