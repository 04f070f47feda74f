"""Timing: medians of repeated calls (CUDA synchronised), and an encoder's measured inference time."""

from __future__ import annotations

import torch


@torch.inference_mode()
def inference_seconds(model, batch_size: int = 32, length: int = 128, repeats: int = 5, device="cpu") -> float:
    """Median seconds of one encoder forward pass on a random (batch_size, length) batch, after a warm-up."""
    encoder = model.base_model.eval().to(device)
    length = min(length, encoder.config.max_position_embeddings)
    ids = torch.randint(5, encoder.config.vocab_size, (batch_size, length), generator=torch.Generator().manual_seed(0))
    ids = ids.to(device)
    mask = torch.ones_like(ids)
    return timed(lambda: encoder(input_ids=ids, attention_mask=mask), repeats, device=device)["median"]


def timed(fn, repeats: int, warmup: int = 1, device=None) -> dict:
    """Median, min, max seconds of `fn()` over `repeats` runs after `warmup` runs (CUDA synchronised)."""
    return timed_each({"fn": fn}, repeats, warmup, device)["fn"]


def timed_each(fns: dict, repeats: int, warmup: int = 1, device=None) -> dict[str, dict]:
    """`timed` for several functions measured in turn (round robin, one call each per repeat), so that a slow
    spell of a shared machine slows them all alike and their ratios stay true."""
    import statistics
    import time

    sync = torch.cuda.synchronize if device is not None and torch.device(device).type == "cuda" else (lambda: None)
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    sync()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - start)
    return {name: {"median": statistics.median(t), "min": min(t), "max": max(t), "all": t} for name, t in times.items()}


def matmul_peak(device, dtype, repeats: int) -> float:
    """FLOP/s of a large square matmul: the practical peak of this device and dtype."""
    n = 2048
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    t = timed(lambda: a @ b, max(repeats, 3), device=device)
    return 2 * n**3 / t["median"]
