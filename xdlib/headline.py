"""The headline table: the paper's printed results (docs/paper.md) and ours beside them, one row per distilled
variant; a delta only where ours is at the paper's scale (MNLI source, no caps, a full-size teacher)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import comparison
from .comparison import target_column

# docs/paper.md, "Headline results": GLUE dev accuracy, SQuAD v2 F1 (the MiniLM paper's baselines included)
PAPER_COLUMNS = ("mnli", "qnli", "qqp", "rte", "sst2", "mrpc", "squad_v2")
PAPER_HEADLINE = {
    # model: (params, speedup, MNLI, QNLI, QQP, RTE, SST-2, MRPC, SQuAD2)
    "BERT-base": ("109M", "1x", 84.5, 91.7, 91.3, 68.6, 93.2, 87.3, 76.8),
    "DistilBERT": ("66M", "2x", 82.2, 89.2, 88.5, 59.9, 91.3, 87.5, 70.7),
    "TinyBERT": ("66M", "2x", 83.5, 90.5, 90.6, 72.2, 91.6, 88.4, 73.1),
    "MiniLM 6x768": ("66M", "2x", 84.0, 91.0, 91.0, 71.5, 92.0, 88.4, 76.4),
    "MiniLM 6x384": ("22M", "5.3x", 82.8, 90.3, 90.6, 68.9, 91.3, 86.6, 72.9),
    "XtremeDistil l6-h256": ("13M", "8.7x", 83.9, 89.5, 90.6, 80.1, 91.2, 90.0, 74.1),
    "XtremeDistil l6-h384": ("22M", "5.3x", 85.4, 90.3, 91.0, 80.9, 92.3, 90.0, 76.6),
    "XtremeDistil l12-h384": ("33M", "2.7x", 87.2, 91.9, 91.3, 85.6, 93.1, 90.4, 80.2),
}


# The paper's rows are MNLI-distilled students on full data: ours are set beside them (with a delta) only when the
# same holds, i.e. MNLI source, no caps, and a teacher trained on (nearly) all of MNLI's 392,702 training pairs
# (5% of them are our dev split). Anything else is labelled toy size and shown without a delta.
CAPS = ("max_train_samples", "max_eval_samples", "target_max_train_samples")
PAPER_SCALE_TEACHER_EXAMPLES = 350_000


def _paper_scale(mine: pd.DataFrame, frame: pd.DataFrame) -> bool:
    if set(mine["source_task"]) != {"mnli"} or any(c in mine and mine[c].notna().any() for c in CAPS):
        return False
    teachers = frame[(frame["stage"] == "teacher") & (frame["source_task"] == "mnli")]
    examples = teachers["m_train_examples"] if "m_train_examples" in teachers else pd.Series(dtype=float)
    return bool(len(examples)) and examples.min() >= PAPER_SCALE_TEACHER_EXAMPLES


def headline_table(ft: pd.DataFrame, frame: pd.DataFrame | None = None) -> pd.DataFrame:
    """Paper rows as printed, then ours, one row per distilled variant (architecture, source, augmentation and
    recipe: never averaged across them), the mean over its seeds on the paper's columns, with the delta vs the
    paper's row of the same architecture only at paper scale (see above); n/a where we have no run. Rows that are
    not at paper scale say "toy size" and carry no delta."""
    frame = ft if frame is None else frame
    cols = [c.upper() if c != "squad_v2" else "SQuAD2" for c in PAPER_COLUMNS]
    rows = []
    for model, (params, speed, *values) in PAPER_HEADLINE.items():
        rows.append({"model": f"paper: {model}", "params": params, "speedup": speed,
                     **{c: f"{v:.1f}" for c, v in zip(cols, values)}, "Avg": f"{np.mean(values):.1f}"})  # fmt: skip
    dist = ft[ft["student"] == "distilled"] if not ft.empty else ft
    for variant in sorted(set(dist["variant"])) if not dist.empty else []:  # like with like: one recipe per row
        mine = dist[dist["variant"] == variant]
        arch = mine["student_arch"].iloc[0]
        comparable = _paper_scale(mine, frame)
        paper = PAPER_HEADLINE.get(f"XtremeDistil {arch}") if comparable else None
        cells, ours = {}, []
        for col, task, i in zip(cols, PAPER_COLUMNS, range(len(cols))):
            scores = mine[target_column(mine) == task]["score"]  # one task version: 'task vN' columns match none
            if scores.empty:
                cells[col] = "n/a"
                continue
            ours.append(scores.mean())
            delta = f" ({scores.mean() - paper[2 + i]:+.1f})" if paper else ""
            runs = mine[target_column(mine) == task]
            failed = comparison.seed_did_not_learn(runs).any()
            cells[col] = f"{scores.mean():.1f}{delta}" + (comparison.NOT_LEARNT if failed else "")
        avg = f"{np.mean(ours):.1f}" if len(ours) == len(cols) else "n/a"
        seeds = comparison.finetune_seed(mine).nunique()
        label = f"ours: {variant}; mean over {seeds} seed{'s' if seeds > 1 else ''}"
        label += "" if comparable else " (toy size: not comparable)"
        if comparison.model_learnt(mine) is False:  # † on a cell: a seed, or the student itself, did not learn
            label += "; † did not learn: not a result"
        rows.append({"model": label, "params": f"{mine['m_parameters'].iloc[0] / 1e6:.0f}M",
                     "speedup": "see architectures", **cells, "Avg": avg})  # fmt: skip
    return pd.DataFrame(rows)
