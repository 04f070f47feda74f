# %% [markdown]
# # Report — the study's tables and figures, from the run store only
#
# Reads every complete run under `runs_dir` (a run without `DONE` is never counted) and writes
# `results/tables/*.csv|md` and `results/figures/*.png`, and the same score tables from dev scores under
# `results/tables/dev/` (choose recipes there, without reading test). Trains nothing. Same as `xdlib report`.

# %% tags=["parameters"]
runs_dir = "results/runs"  # the run store to read
out_dir = "results"  # where tables/ and figures/ are written
build = True  # false: show the tables and figures out_dir already holds (make study built them for its own runs)

# %%
from xdlib.report import build_report, collect

if build:
    frame = collect(runs_dir)
    outputs = build_report(runs_dir, out_dir)
    print(len(frame), "complete runs;", len(outputs), "files written")

# %% [markdown]
# Every table (test scores x100; the same tables from dev scores are in `tables/dev/`), then every figure.

# %%
from pathlib import Path

from IPython.display import Image, Markdown, display

FIRST = ["headline", "results_matrix", "transfer", "axes", "scaling", "architectures", "augmentation",
         "targets_learnt", "deploy"]  # fmt: skip
tables = sorted(Path(out_dir, "tables").glob("*.md"), key=lambda p: (p.stem not in FIRST, FIRST.index(p.stem)
                if p.stem in FIRST else 0, p.stem))  # fmt: skip
for path in tables:
    text = path.read_text().strip() or "(no rows)"
    display(Markdown(f"## {path.stem}\n\n{text}"))

# %% [markdown]
# The same score tables from dev scores (where recipes and settings are chosen; test is read once):

# %%
for path in sorted(Path(out_dir, "tables", "dev").glob("*.md"), key=lambda p: p.stem):
    text = path.read_text().strip() or "(no rows)"
    display(Markdown(f"## dev: {path.stem}\n\n{text}"))

# %%
for path in sorted(Path(out_dir, "figures").glob("*.png")):
    display(Markdown(f"## figure: {path.stem}"))
    display(Image(filename=str(path)))
