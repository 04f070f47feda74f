"""The GPU speed benchmark's parts that run anywhere (`python -m xdlib bench --speed`)."""

import math

import pytest

from xdlib.bench import speed
from xdlib.models import encoder_flops_per_token

SHAPE = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}


def test_training_step_efficiency_is_measured(monkeypatch):
    """The eager step's efficiency: FLOPs of forward and backward (3x the forward's, attention scores included)
    over the measured time, against the matmul peak measured in the same process."""
    monkeypatch.setattr("xdlib.bench.speed.matmul_peak", lambda device, dtype, repeats: 1e9)
    out = speed.efficiency(SHAPE, batch_size=2, length=8, device="cpu", compiled=False, repeats=2)
    from transformers import BertConfig

    cfg = BertConfig(vocab_size=30522, **SHAPE)
    assert out["flops_per_step"] == 3 * 16 * (encoder_flops_per_token(cfg) + 4 * 8 * 32 * 1)
    assert out["achieved"] == pytest.approx(out["flops_per_step"] / out["step"]["median"])
    assert out["efficiency"] == pytest.approx(out["achieved"] / 1e9) and math.isfinite(out["efficiency"])
    assert out["efficiency"] > 0 and out["compiled"] is False


def _bench_report(teacher: float, chance: float = 0.5) -> dict:
    """What `bench.run` holds when `ratios` reads it: two students at the same accuracy."""
    ours = {"seconds": 1.0, "test_accuracy": 0.5, "teacher_test_accuracy": teacher, "test_chance": chance}
    naive = {"seconds": 4.0, "test_accuracy": 0.5, "test_rows": 100}
    return {"naive": naive, "ours": ours, "inference": {}, "training": {"efficiency": 0.5}}


def test_the_student_parity_check_needs_a_teacher_that_learnt():
    """Two students of a teacher at chance agree at chance: parity is not tested (met False), never passed."""
    from xdlib.bench.bench import ratios

    def parity(report):
        (row,) = [r for r in ratios(report) if "ours - naive" in r["what"]]
        return row

    untested = parity(_bench_report(teacher=0.51))  # within the accuracy margin (0.02) of chance
    assert untested["met"] is False and untested["note"].startswith("not tested: the teacher did not learn")
    assert parity(_bench_report(teacher=float("nan")))["met"] is False  # unknown: not shown to have learnt
    tested = parity(_bench_report(teacher=0.8))
    assert tested["met"] is True and tested["note"].startswith("ours 0.500, naive 0.500, teacher 0.800")
