# %% [markdown]
# # Stage 3 — fine-tune a student (or a baseline) on a target task
#
# `student`: `distilled` (this config's distillation run, built first if missing), `undistilled` (the same
# architecture and initialisation without distillation), `teacher` (the teacher's pretrained model) or any HF
# folder / id. Selection on dev; test metrics once, for the chosen model.
# `papermill notebooks/finetune.ipynb out.ipynb -p target_task sms-spam`

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
student_arch = 'l3-h384'  # l<layers>-h<hidden>; registered: l6-h256, l6-h384, l12-h384
student_heads = None  # attention heads (default: the architecture table or hidden/64)
student_init = 'offline:all-MiniLM-L6-v2'  # random, or a model (HF id, folder, offline:<name>) to copy layers from
student_layers = None  # which layers of student_init to copy (default: evenly spaced)
student_embeddings = 'init'  # init : from student_init; pca : teacher word embeddings PCA-compressed
freeze_word_embeddings = False  # keep word embeddings frozen (the papers multilingual recipe)
augmentation = []  # augmentation resources added to the source inputs
augment_max_examples = None  # cap on examples taken from each augmentation resource
augment_ratio = None  # mixing ratio: at most this many rows per source row from each augmentation resource
augment_mlm_model = 'bert-base-uncased'  # masked LM (HF id / folder) for the mlm augmentation
distill_stages = ['hidden', 'logits', 'labels']  # stages in order: hidden, logits, labels
distill_mode = 'stagewise'  # stagewise (the papers) or joint (all losses, all trainable: ablation)
layer_map = 'top'  # student layer i -> teacher layer: top, uniform or an explicit list
attention_loss = False  # add attention-map MSE over the top layers to the hidden stage
logit_loss = 'mse'  # mse (the papers) or kl (with temperature)
temperature = 1.0  # softmax temperature for the kl logit loss
gradual_unfreezing = True  # unfreeze from the top layer down, one layer per phase, in logits/labels
unfreeze_embeddings_last = True  # embeddings are the last unit unfrozen (else with the bottom layer)
distill_epochs = 1.0  # epochs over the transfer set per stage
distill_lr = 0.0001  # peak learning rate for distillation
distill_batch_size = 32  # examples per optimizer step
cache_dtype = 'float16'  # storage dtype of cached teacher outputs
phase_dev_eval = False  # score every phase on dev, also one with a single evaluation (which selects nothing: diagnostics only)
target_task = 'rt-polarity'  # target task name
student = 'distilled'  # distilled (this configs distillation run), undistilled (same arch and init, no distillation: baseline), teacher (the teachers pretrained model: baseline), or an HF id / folder
target_max_train_samples = None  # cap on target training examples
finetune_epochs = 2.0  # epochs on the target task
finetune_lr = 0.0001  # peak learning rate
finetune_batch_size = 32  # examples per optimizer step
finetune_seed = None  # seed of the fine-tuning alone (data order, dropout, new head); default: seed

# %%
from xdlib.notebook import stage_config

cfg = stage_config("finetune", globals())
print(cfg.run_id())

# %%
from xdlib.stages import ensure

run = ensure("finetune", cfg)  # reused if complete; its upstream runs are made first if missing
run

# %%
import pandas as pd

from xdlib.runs import read_metrics

metrics = read_metrics(run)
pd.Series({k: v for k, v in metrics.items() if k.startswith(("dev_", "test_"))}, name=f"{cfg.target_task}")
