"""A slice of the default study on the real offline data, executed through the notebooks as `make study` does
(tests/study_slice.py, started beside the other tests by conftest.py): one source, one student, two targets; the
teacher and its distilled student beat chance (the best constant prediction) on the source, the student beats it on
every target, and the two fine-tunings share one notebook kernel."""

import json

import pytest
from study_slice import TARGETS, overrides

from xdlib.data import cap
from xdlib.metrics import constant_baseline
from xdlib.sweep import sweep
from xdlib.tasks import get_task

pytestmark = pytest.mark.slow


def test_default_study_slice_beats_chance_on_every_target(study_slice):
    status = json.loads((study_slice / "status.json").read_text())
    assert [s["state"] for s in status] == ["done", "done"], status
    assert len({s["log"] for s in status}) == 1  # one kernel ran both fine-tunings
    runs = study_slice / "runs"
    (distill,) = (runs / "distill").iterdir()
    d = json.loads((distill / "metrics.json").read_text())
    (teacher,) = (runs / "teacher").iterdir()  # the teacher and its student, scored on the same rt-polarity rows
    t = json.loads((teacher / "metrics.json").read_text())
    assert t["test_rows"] == d["test_rows"] and t["test_accuracy"] > d["test_chance"] + 0.05, (t, d["test_chance"])
    assert d["flops_ratio"] == pytest.approx(2.0) and d["test_accuracy"] > d["test_chance"] + 0.05, d
    finetunes = list((runs / "finetune").iterdir())
    assert sorted(json.loads((r / "metrics.json").read_text())["task"] for r in finetunes) == sorted(TARGETS)
    for run in finetunes:
        m = json.loads((run / "metrics.json").read_text())
        task = get_task(m["task"])
        test = get_task(m["task"]).load()["test"]
        chance = constant_baseline(task, cap(test, 300, 0))
        assert m[f"test_{task.metric}"] > chance + 0.05, (m["task"], m[f"test_{task.metric}"], chance)
        executed = (run / "notebook.ipynb").read_text()  # the executed notebook, kept with its run
        assert all(r.name in executed for r in finetunes) and "device cpu" in executed
    again = sweep("params/default.yaml", overrides(study_slice), executor="inline")  # a rerun reuses every run
    assert list(again["state"]) == ["complete", "complete"]
