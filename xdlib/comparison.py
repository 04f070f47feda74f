"""The study's question in one table: what each model transfers to the targets that are not its source task,
and what distillation adds over the two controls with the same student: its undistilled twin (same layers, no
source training) and STILTs (the twin fine-tuned on the source task first, then on the target).

Pure functions of the fine-tuning scores (`report.finetune_scores`); `report.build_report` writes the result as
`results/tables/transfer.csv|md`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

TWIN_KEYS = ("student_arch", "student_init", "student_embeddings")  # the same student before any training


def _seed(frame: pd.DataFrame) -> pd.Series:
    """The fine-tuning seed of each run (finetune_seed, or seed where it is unset)."""
    if "finetune_seed" not in frame:
        return frame["seed"]
    return frame["finetune_seed"].where(frame["finetune_seed"].notna(), frame["seed"]).astype(int)


def _over_targets(runs: pd.DataFrame, targets: list[str]) -> tuple[float, float, int]:
    """(mean over targets of each target's mean score, sd over seeds of the per-seed mean over targets, seeds
    that cover every target): each target weighs the same; the spread is what a rerun with other seeds moves."""
    runs = runs[runs["target_task"].isin(targets)]
    if runs["target_task"].nunique() < len(targets) or not targets:
        return np.nan, np.nan, 0
    mean = runs.groupby("target_task")["score"].mean().mean()
    per_seed = runs.assign(fseed=_seed(runs)).pivot_table(index="fseed", columns="target_task", values="score")
    complete = per_seed.dropna()
    spread = complete.mean(axis=1).std(ddof=1) if len(complete) > 1 else np.nan
    return mean, spread, len(complete)


def _paired(mine: pd.DataFrame, other: pd.DataFrame, targets: list[str]) -> tuple[float, float, str]:
    """(mean over targets of mine - other, sd of the per-target differences, 'target:+d' list)."""
    a = mine[mine["target_task"].isin(targets)].groupby("target_task")["score"].mean()
    b = other[other["target_task"].isin(targets)].groupby("target_task")["score"].mean()
    diff = (a - b).dropna()
    if len(diff) < len(targets) or diff.empty:
        return np.nan, np.nan, ""
    spread = diff.std(ddof=1) if len(diff) > 1 else np.nan
    return diff.mean(), spread, ", ".join(f"{t} {d:+.1f}" for t, d in diff.items())


def _teacher_sources(runs: pd.DataFrame) -> set[str]:
    """The tasks a multi-source teacher was fine-tuned on before the source task (also not transfer targets)."""
    if "teacher_sources" not in runs:
        return set()
    value = runs["teacher_sources"].iloc[0]
    if isinstance(value, (list, tuple)):
        return set(value)
    return set() if pd.isna(value) or value in ("", "-") else set(str(value).split("+"))


def transfer_table(ft: pd.DataFrame) -> pd.DataFrame:
    """One row per trained variant (distilled or STILTs, with a source task): its mean over the targets that are
    not its source (± sd over fine-tuning seeds), the same for its undistilled twin and its STILTs control, and
    the paired per-target differences against each."""
    if ft.empty:
        return pd.DataFrame()
    rows = []
    sourced = ft[ft["student"].isin(["distilled", "stilts"])]
    for variant, mine in sourced.groupby("variant"):
        source = mine["source_task"].iloc[0]
        targets = sorted(set(mine["target_task"]) - {source} - _teacher_sources(mine))
        same = np.logical_and.reduce([ft[k].astype(str) == str(mine[k].iloc[0]) for k in TWIN_KEYS])
        twin = ft[same & (ft["student"] == "undistilled")]
        stilts = ft[same & (ft["student"] == "stilts") & (ft["source_task"] == source)]
        row = {"variant": variant, "source": source, "targets": len(targets)}
        for name, runs in (("", mine), ("undistilled_", twin), ("stilts_", stilts)):
            mean, spread, seeds = _over_targets(runs, targets)
            row.update({f"{name}mean": mean, f"{name}sd_over_seeds": spread, f"{name}seeds": seeds})
        for name, other in (("undistilled", twin), ("stilts", stilts)):
            control = mine["student"].iloc[0] == "stilts" and name == "stilts"  # itself: no comparison
            delta, spread, per_target = (np.nan, np.nan, "") if control else _paired(mine, other, targets)
            row.update({f"vs_{name}": delta, f"vs_{name}_sd_over_targets": spread, f"vs_{name}_per_target": per_target})
        rows.append(row)
    return pd.DataFrame(rows)


def transfer_markdown(table: pd.DataFrame) -> str:
    """The table as a reader scans it: mean ± sd cells, differences with their spread over targets."""
    if table.empty:
        return ""

    def cell(mean, sd):
        return "n/a" if pd.isna(mean) else f"{mean:.1f}" + ("" if pd.isna(sd) else f" ± {sd:.1f}")

    out = pd.DataFrame(
        {
            "variant": table["variant"],
            "non-source targets": table["targets"],
            "mean (± sd over seeds)": [cell(m, s) for m, s in zip(table["mean"], table["sd_over_seeds"])],
            "undistilled twin": [
                cell(m, s) for m, s in zip(table["undistilled_mean"], table["undistilled_sd_over_seeds"])
            ],
            "STILTs": [cell(m, s) for m, s in zip(table["stilts_mean"], table["stilts_sd_over_seeds"])],
            "vs twin (± sd over targets)": [
                cell(m, s) for m, s in zip(table["vs_undistilled"], table["vs_undistilled_sd_over_targets"])
            ],
            "vs STILTs": [
                cell(m, s)
                for m, s in zip(table.get("vs_stilts", np.nan), table.get("vs_stilts_sd_over_targets", np.nan))
            ],
            "per target vs twin": table["vs_undistilled_per_target"],
        }
    )
    return out.to_markdown(index=False)
