# %% [markdown]
# # Stage 1 — fine-tune the teacher on the source task
#
# The teacher (`teacher_model`) gets a task head and is fine-tuned on `source_task`; the model is chosen on the
# dev split and tested once. The run lands in `results/runs/teacher/<run_id>/` and is reused by every later run
# with the same settings. Run with papermill: `papermill notebooks/teacher.ipynb out.ipynb -p source_task trec6`.

# %% tags=["parameters"]
source_task = 'rt-polarity'  # source task name (python -m xdlib tasks lists them)
max_length = 64  # tokens per example after truncation
max_train_samples = None  # cap on source training examples (debug/smoke)
max_eval_samples = None  # cap on dev/test examples of every task (debug/smoke)
local_tasks = None  # your own tasks from files: {name: {kind, train, dev, test, format, ...}} (README: local files)
doc_stride = 128  # QA: tokens shared by consecutive windows of a long context
max_answer_length = 30  # QA: longest answer span in tokens
teacher_model = 'offline:all-MiniLM-L6-v2'  # HF id, local folder, or offline:<name> packaged model
teacher_epochs = 1.0  # epochs of teacher fine-tuning
teacher_lr = 5e-05  # peak learning rate
teacher_batch_size = 32  # examples per optimizer step (before accumulation)
lr_schedule = 'linear'  # linear : warmup + linear decay; constant : the paper codes
warmup_ratio = 0.06  # fraction of steps spent warming up
weight_decay = 0.01  # AdamW weight decay
grad_accum_steps = 1  # gradient accumulation steps
evals_per_epoch = 1  # dev evaluations per epoch (model selection on dev)
patience = 5  # stop after this many dev evaluations without improvement
seed = 0  # seed for data order, dropout and initialisation
device = 'auto'  # auto, cpu, cuda, cuda:N or mps
runs_dir = 'results/runs'  # where run folders are written
cache_dir = 'results/cache'  # teacher-output caches
progress = True  # show tqdm progress bars
checkpoint_every = 200  # optimizer steps between resumable checkpoints
study = ''  # the params file: name and version (recorded with each run, not in its id)

# %%
from xdlib.notebook import stage_config

cfg = stage_config("teacher", globals())
print(cfg.run_id())

# %%
from xdlib.stages import ensure

run = ensure("teacher", cfg)  # reused if complete; its upstream runs are made first if missing
run

# %%
import pandas as pd

from xdlib.runs import read_metrics

metrics = read_metrics(run)
pd.Series({k: v for k, v in metrics.items() if k.startswith(("dev_", "test_"))}, name=cfg.source_task)
