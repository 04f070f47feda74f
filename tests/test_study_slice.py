"""A slice of the default study on the real offline data, executed through the notebooks as `make study` does:
one source, one student, two targets; the distilled student beats chance (the best constant prediction) on every
target, and the two fine-tunings share one notebook kernel."""

import json

import pytest

from xdlib.data import cap
from xdlib.metrics import constant_baseline
from xdlib.sweep import sweep
from xdlib.tasks import get_task

pytestmark = pytest.mark.slow
TARGETS = ["sms-spam", "trec6"]


def test_default_study_slice_beats_chance_on_every_target(tmp_path):
    overrides = {
        "runs_dir": str(tmp_path / "runs"),
        "cache_dir": str(tmp_path / "cache"),
        "max_train_samples": 600,
        "augment_max_examples": 300,
        "target_max_train_samples": 500,
        "max_eval_samples": 300,
        "max_length": 48,
        "grid": {"target_task": TARGETS, "student": ["distilled"]},
    }
    status = sweep("params/default.yaml", overrides, executor="inline")
    assert list(status["state"]) == ["done", "done"], status[["state", "error"]]
    assert status["log"].nunique() == 1  # one kernel ran both fine-tunings
    runs = tmp_path / "runs"
    (distill,) = (runs / "distill").iterdir()
    d = json.loads((distill / "metrics.json").read_text())
    assert d["flops_ratio"] == pytest.approx(2.0) and d["test_accuracy"] > 0.6  # rt-polarity, 2 classes
    for run in (runs / "finetune").iterdir():
        m = json.loads((run / "metrics.json").read_text())
        task = get_task(m["task"])
        test = get_task(m["task"]).load()["test"]
        chance = constant_baseline(task, cap(test, 300, 0))
        assert m[f"test_{task.metric}"] > chance + 0.05, (m["task"], m[f"test_{task.metric}"], chance)
        executed = (run / "notebook.ipynb").read_text()  # the executed notebook, kept with its run
        assert all(r.name in executed for r in (runs / "finetune").iterdir()) and "device cpu" in executed
    again = sweep("params/default.yaml", overrides, executor="inline")  # a rerun reuses every complete run
    assert list(again["state"]) == ["complete", "complete"]
