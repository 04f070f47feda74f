# %% [markdown]
# # Benchmark — our distillation vs a naive KD loop, students vs teachers, and the hardware limit
#
# Same as `xdlib bench`: every ratio is between two measurements of this run on this machine (warm-up,
# then median of repeats). Raw timings go to `results/benchmarks/<device>-<date>-<size>.json`.

# %% tags=["parameters"]
size = "quick"  # smoke (tests), quick (under 3 minutes on 2 cores) or full (under 20 minutes, with scaling)
device = "auto"  # auto, cpu or cuda
out_dir = "results/benchmarks"  # where the JSON and the scaling figure are written

# %%
from xdlib.bench import format_table, run

report = run(size, device, out_dir)
print(format_table(report))

# %% [markdown]
# Raw inference timings (seconds, median of the repeats):

# %%
import pandas as pd

pd.DataFrame(
    {m: {k: v["median"] for k, v in row.items() if isinstance(v, dict)} for m, row in report["inference"].items()}
).T
