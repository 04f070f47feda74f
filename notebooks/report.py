# %% [markdown]
# # Report — the study's tables and figures, from the run store only
#
# Reads every complete run under `runs_dir` (a run without `DONE` is never counted) and writes
# `results/tables/*.csv|md` and `results/figures/*.png`, and the same score tables from dev scores under
# `results/tables/dev/` (choose recipes there, without reading test). Trains nothing. Same as `python -m xdlib report`.

# %% tags=["parameters"]
runs_dir = "results/runs"  # the run store to read
out_dir = "results"  # where tables/ and figures/ are written

# %%
from xdlib.report import build_report, collect

frame = collect(runs_dir)
outputs = build_report(runs_dir, out_dir)
print(len(frame), "complete runs")
sorted(str(p) for p in outputs)

# %%
import pandas as pd

pd.read_csv(f"{out_dir}/tables/results_matrix.csv")

# %%
pd.read_csv(f"{out_dir}/tables/headline.csv")
