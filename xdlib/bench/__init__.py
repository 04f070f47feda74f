"""The benchmark (`xdlib bench`, notebooks/benchmark.ipynb; docs/benchmark.md, docs/scale.md).

- `bench`: our distillation vs a naive KD loop, students vs teachers, the matmul peak (`run`, `format_table`);
- `speed`: the `--speed` section (a base-size teacher at the paper's batch);
- `scale`: the `--scale` section (transfer sets of 10k to 1M rows, each size in a fresh process);
- `timing`: medians of repeated calls and an encoder's inference time (the distill stage reads it too).
"""

from __future__ import annotations

__all__ = ["format_table", "run"]


def __getattr__(name: str):
    # why lazily: the distill stage imports xdlib.bench.timing, and `python -m xdlib.bench.scale` measures a fresh
    # process's memory; neither should load the benchmark itself, which calls back into xdlib.stages
    if name in __all__:
        from . import bench

        return getattr(bench, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
