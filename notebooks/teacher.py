# %% [markdown]
# # Stage 1 — fine-tune the teacher on the source task
#
# The teacher (`teacher_model`) gets a task head and is fine-tuned on `source_task`; the model is chosen on the
# dev split and tested once. The run lands in `results/runs/teacher/<run_id>/` and is reused by every later run
# with the same settings. Run with papermill: `papermill notebooks/teacher.ipynb out.ipynb -p source_task trec6`.

# %% tags=["parameters"]
params = None  # a params file (YAML) for every field not set here; -p sets any field of this stage
source_task = 'rt-polarity'  # source task name (xdlib tasks lists them)
teacher_model = 'offline:all-MiniLM-L6-v2'  # HF id, local folder, or offline:<name> packaged model
teacher_epochs = 1.0  # epochs of teacher fine-tuning
teacher_lr = 5e-05  # peak learning rate
teacher_batch_size = 32  # examples per optimizer step (before accumulation)
max_train_samples = None  # cap on source training examples (debug/smoke)
max_eval_samples = None  # cap on dev/test examples of every task (debug/smoke)
seed = 0  # seed for data order, dropout and initialisation
device = 'auto'  # auto, cpu, cuda, cuda:N or mps
runs_dir = 'results/runs'  # where run folders are written

# %%
from xdlib.notebook import setup, stage_config

cfg = stage_config("teacher", globals())  # a wrong name or value stops here, in one line

setup(cfg.device)  # versions, device, commit

# %%
from xdlib.stages import ensure, run_id  # torch: after the config, so a wrong name stops first

print(run_id("teacher", cfg))

run = ensure("teacher", cfg)  # reused if complete; its upstream runs are made first if missing
run

# %%
import pandas as pd

from xdlib.runs import read_metrics

metrics = read_metrics(run)
pd.Series({k: v for k, v in metrics.items() if k.startswith(("dev_", "test_"))}, name=cfg.source_task)

# %% [markdown]
# Training loss and the dev score at each evaluation (the model kept is the one at the best dev point):

# %%
import json

from xdlib.notebook import plot_dev_history

fig = plot_dev_history({cfg.source_task: json.loads((run / "train_summary.json").read_text())})
