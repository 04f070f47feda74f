# %% [markdown]
# # Stage 3 — fine-tune a student (or a baseline) on a target task
#
# `student`: `distilled` (this config's distillation run, built first if missing), `undistilled` (the same
# architecture and initialisation without distillation), `teacher` (the teacher's pretrained model) or any HF
# folder / id. Selection on dev; test metrics once, for the chosen model.
# `papermill notebooks/finetune.ipynb out.ipynb -p target_task sms-spam`

# %% tags=["parameters"]
params = None  # a params file (YAML) for every field not set here; -p sets any field of this stage
runs = []  # several fine-tunings in one kernel: a list of {field: value} changes to the values above, one run each
target_task = 'rt-polarity'  # target task name
student = 'distilled'  # distilled (this configs distillation run), undistilled (same arch and init, no distillation: baseline), stilts (the undistilled student fine-tuned on the source task first: baseline), teacher (the teachers pretrained model: baseline), or an HF id / folder
source_task = 'rt-polarity'  # source task name (xdlib tasks lists them)
student_arch = 'l3-h384'  # l<layers>-h<hidden>; registered: l3-h384, l6-h256, l6-h384, l12-h384
student_init = 'offline:all-MiniLM-L6-v2'  # random, or a model (HF id, folder, offline:<name>) to copy layers from
augmentation = []  # augmentation resources added to the source inputs
finetune_epochs = 2.0  # epochs on the target task
finetune_lr = 0.0001  # peak learning rate
finetune_batch_size = 32  # examples per optimizer step
target_max_train_samples = None  # cap on target training examples
finetune_seed = None  # seed of the fine-tuning alone (data order, dropout, new head); default: seed
max_eval_samples = None  # cap on dev/test examples of every task (debug/smoke)
seed = 0  # seed for data order, dropout and initialisation
device = 'auto'  # auto, cpu, cuda, cuda:N or mps
runs_dir = 'results/runs'  # where run folders are written

# %%
from xdlib.notebook import setup, stage_configs

configs = stage_configs("finetune", globals())  # one per entry of `runs`; a wrong name or value stops here

setup(configs[0].device)  # versions, device, commit

# %%
from xdlib.stages import ensure, run_id  # torch: after the config, so a wrong name stops first

print([run_id("finetune", c) for c in configs])

paths = [ensure("finetune", c) for c in configs]  # each reused if complete; upstream runs made first if missing
paths

# %%
import pandas as pd

from xdlib.runs import read_metrics

metrics = {p.name: read_metrics(p) for p in paths}
pd.DataFrame(
    {
        name: {
            "target": m["task"],
            "student": m["student"],
            **{k: v for k, v in m.items() if k.startswith(("dev_", "test_"))},
        }
        for name, m in metrics.items()
    }
).T

# %% [markdown]
# Training loss and the dev score at each evaluation (each run keeps the model at its best dev point):

# %%
import json

from xdlib.notebook import plot_dev_history

summaries = {
    f"{m['task']} ({name[-6:]})": json.loads((p / "train_summary.json").read_text())
    for (name, m), p in zip(metrics.items(), paths)
}
fig = plot_dev_history(summaries)
