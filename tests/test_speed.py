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
