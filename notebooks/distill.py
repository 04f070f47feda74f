# %% [markdown]
# # Stage 2 — distil the teacher into a student over the transfer set
#
# The transfer set is the source task's inputs plus the `augmentation` resources. The teacher's outputs on it are
# cached once; the student then learns hidden states, logits and labels in stages, unfreezing its layers from the
# top down. When the teacher for `source_task` has no complete run yet, it is fine-tuned first.
# `papermill notebooks/distill.ipynb out.ipynb -p source_task trec6`

# %% tags=["parameters"]
params = None  # a params file (YAML) for every field not set here; -p sets any field of this stage
source_task = 'rt-polarity'  # source task name (xdlib tasks lists them)
teacher_model = 'offline:all-MiniLM-L6-v2'  # HF id, local folder, or offline:<name> packaged model
student_arch = 'l3-h384'  # l<layers>-h<hidden>; registered: l3-h384, l6-h256, l6-h384, l12-h384
student_init = 'offline:all-MiniLM-L6-v2'  # random, or a model (HF id, folder, offline:<name>) to copy layers from
augmentation = []  # augmentation resources added to the source inputs
augment_max_examples = None  # cap on examples taken from each augmentation resource
distill_stages = ['hidden', 'logits', 'labels']  # stages in order: hidden, logits, labels; general first: match the pretrained teacher on the transfer text
distill_epochs = 1.0  # the most epochs of each phase over the stage data (a phase stops when dev stops improving)
distill_lr = 0.0001  # peak learning rate for distillation
distill_batch_size = 32  # examples per optimizer step
max_train_samples = None  # cap on source training examples (debug/smoke)
max_eval_samples = None  # cap on dev/test examples of every task (debug/smoke)
seed = 0  # seed for data order, dropout and initialisation
device = 'auto'  # auto, cpu, cuda, cuda:N or mps
runs_dir = 'results/runs'  # where run folders are written

# %%
from xdlib.notebook import setup, stage_config

cfg = stage_config("distill", globals())  # a wrong name or value stops here, in one line

setup(cfg.device)  # versions, device, commit

# %%
from xdlib.stages import ensure, run_id  # torch: after the config, so a wrong name stops first

print(run_id("distill", cfg))

run = ensure("distill", cfg)  # reused if complete; its upstream runs are made first if missing
run

# %%
import pandas as pd

from xdlib.runs import read_metrics

metrics = read_metrics(run)
summary = {k: metrics.get(k) for k in ("parameters", "teacher_parameters", "flops_ratio", "retention", "speedup")}
pd.Series({**summary, **{k: v for k, v in metrics.items() if k.startswith("test_")}}, name=run.name)

# %% [markdown]
# What the transfer set was made of, and the stage schedule with its first and last losses:

# %%
display(pd.Series(metrics["transfer_composition"], name="rows"))  # noqa: F821 (IPython builtin)
pd.DataFrame(metrics["phases"]).set_index("phase")

# %% [markdown]
# Each phase's training loss (hidden, logits, labels; one line per unfreezing phase), and how closely the student
# follows its teacher on dev (the teacher's predictions as labels):

# %%
from xdlib.notebook import plot_phases

print(f"dev agreement with the teacher ({metrics['main_metric']}): {metrics.get('dev_teacher_agreement')}")
fig = plot_phases(metrics)
