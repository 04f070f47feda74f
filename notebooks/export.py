# %% [markdown]
# # Export — every model of a study as ONNX fp32 and int8: speed and accuracy on this CPU
#
# Runs the params file's sweep (complete runs are reused; `params/deploy.yaml` fine-tunes each model of the default
# study once with `save_model: true`), exports each teacher and each fine-tuned model with `xdlib export`
# (fp32, and int8 by onnxruntime's dynamic quantisation), predicts the test rows each run was scored on with PyTorch
# fp32, ONNX fp32 and ONNX int8, and times each at batch 1 and batch 32. Writes `results/tables/deploy.csv|md` and
# the raw numbers to `results/benchmarks/deploy-<date>.json`. Same as `xdlib deploy --params ...`.

# %% tags=["parameters"]
params = "params/deploy.yaml"  # a params file whose fine-tunings keep their model (save_model: true)
overrides = {}  # field changes on top of the params file (as -p in xdlib sweep)
executor = "inline"  # the sweep's executor: inline (each run through its notebook) or direct
threads = None  # threads for PyTorch and onnxruntime (None: torch's default, all cores)
out_dir = "results"  # tables/deploy.* and benchmarks/deploy-<date>.json go here

# %%
from xdlib.deploy import run, sweep_runs

run_dirs = sweep_runs(params, overrides, executor)
frame, checks, raw = run(run_dirs, threads=threads, out=out_dir)
print(f"{len(frame)} models measured; raw numbers: {raw}")

# %% [markdown]
# Scores (x100) on each task's test rows: PyTorch fp32, ONNX fp32 and ONNX int8, the change int8 makes, and how
# often int8 predicts what fp32 predicts (regression: the Pearson r of the two predictions).

# %%
frame[["model", "task", "recorded", "pytorch-fp32 score", "onnx-fp32 score", "onnx-int8 score",
       "int8 delta (points)", "int8 agrees", "int8 r with fp32"]]  # fmt: skip

# %% [markdown]
# Latency (milliseconds per call; batch 1 and batch 32 at the test sentences' own lengths) and model size:

# %%
frame[["model", "task", *[c for c in frame if c.endswith(" ms") or "speedup" in c or c.endswith(" MB")]]]

# %% [markdown]
# The targets: int8 at least 2x faster than PyTorch fp32 at batch 1; over the fine-tuned models a mean change of
# -0.5 points or better, and no model losing more than 1.5 points.

# %%
checks

# %% [markdown]
# The change int8 makes, per model and target:

# %%
ft = frame[frame["stage"] == "finetune"]
ft.pivot_table(index="model", columns="task", values="int8 delta (points)")
