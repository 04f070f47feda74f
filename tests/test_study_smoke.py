"""A real slice of the default study: offline Rotten Tomatoes data and the pretrained MiniLM teacher."""

import json
from pathlib import Path

import pytest

from xdlib.__main__ import main
from xdlib.tasks import get_task

pytestmark = pytest.mark.slow


def test_smoke_study_distilled_student_beats_majority_on_real_data(tmp_path, capsys):
    args = ["study", "params/smoke.yaml", "-p", f"runs_dir={tmp_path / 'runs'}", "-p", f"cache_dir={tmp_path / 'c'}"]
    assert main(args) == 0
    assert "distilled" in capsys.readouterr().out
    (distill,) = (tmp_path / "runs" / "distill").iterdir()
    (finetune,) = (tmp_path / "runs" / "finetune").iterdir()
    test_labels = [r["label"] for r in get_task("rt-polarity").load()["test"]]
    majority = max(sum(test_labels), len(test_labels) - sum(test_labels)) / len(test_labels)
    for run in (distill, finetune):
        metrics = json.loads(Path(run, "metrics.json").read_text())
        assert metrics["test_accuracy"] > majority + 0.05, (run.name, metrics["test_accuracy"], majority)
    assert json.loads((distill / "metrics.json").read_text())["flops_ratio"] == pytest.approx(2.0)
    # a second call reuses every complete run
    assert main(args) == 0
    assert "1 complete" in capsys.readouterr().out
