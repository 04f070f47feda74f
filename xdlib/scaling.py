"""The scaling table: how a distillation recipe's students do as its transfer set grows (`make scaling`).

A *recipe* is every distilled row (`comparison.row_keys`) that is the same but for its transfer set's extra text
(`augmentation`, `augment_max_examples`); a recipe distilled over three or more transfer-set sizes (a curve, not
the default study's augmentation pair) gets one row per size: the rows the transfer set held (`transfer_rows`, from the distillation's composition), the student's
retention of its teacher's source score (on dev), its mean (on `split`) over the targets that are not its source with a 95%
t interval over fine-tuning seeds, its matched twin's and STILTs' means over the same targets (the figure's
horizontal lines) with the paired differences against them, and the wall time of the teacher pass and of the
distillation. Pure functions of the run store's frame (`report.collect`).
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from .comparison import (
    NOT_LEARNT,
    _over_targets,
    _target,
    _teacher_sources,
    did_not_learn,
    finetune_seed,
    key_frame,
    matched,
    model_learnt,
    paired_difference,
    run_fields,
    t_interval,
)

TRANSFER_SET = ("augmentation", "augment_max_examples")
MIN_SIZES = 3


def _recipe_name(run: pd.Series) -> str:
    teacher = str(run["teacher_model"]).split(":")[-1].split("/")[-1]
    init = str(run.get("student_init", "")).split(":")[-1].split("/")[-1]
    return f"{teacher} teacher -> {run['student_arch']} ({init} init), {run['source_task']}"


def _mean_interval(runs: pd.DataFrame, targets: list[str]) -> tuple[float, float, float, int, str]:
    """Mean over targets (each weighs the same) and a 95% t interval over the per-seed means of the seeds on every
    target, centred on their mean (with every seed on every target, the same mean); the seeds, and each seed's
    mean over targets ("41.2, 45.0, 0.0": a seed that collapsed shows, where the interval only widens)."""
    mean, _, seeds = _over_targets(runs, targets)
    runs = runs[_target(runs).isin(targets)]
    per_seed = runs.assign(s=finetune_seed(runs), t=_target(runs)).pivot_table(index="s", columns="t", values="score")
    per_seed = per_seed.dropna().mean(axis=1)
    return (mean, *t_interval(per_seed), seeds, ", ".join(f"{v:.1f}" for v in per_seed))


def scaling_table(frame: pd.DataFrame, ft: pd.DataFrame, split: str = "test") -> pd.DataFrame:
    dist = ft[ft["student"] == "distilled"] if not ft.empty else ft
    if dist.empty or "m_transfer_rows" not in frame:
        return pd.DataFrame()
    keys, fields = key_frame(ft), run_fields(ft)
    recipe_fields = [c for c in keys.columns if c not in TRANSFER_SET]
    recipe = keys.loc[dist.index, recipe_fields].agg("|".join, axis=1)
    runs = frame.drop_duplicates("run_id").set_index("run_id")
    rows, names = [], {}
    for key, group in dist.groupby(recipe):
        if group["variant"].nunique() < MIN_SIZES:
            continue
        name = _recipe_name(runs.loc[group["m_distill_run"].iloc[0]])
        if name in names.values():  # two recipes alike in teacher, student and source: their key tells them apart
            name += f" [{hashlib.sha256(key.encode()).hexdigest()[:6]}]"
        names[key] = name
        for variant, mine in group.groupby("variant"):
            distill = runs.loc[mine["m_distill_run"].iloc[0]]
            main = distill["m_main_metric"]
            score = distill.get(f"m_dev_{main}", np.nan)  # retention on dev, whatever split the targets are read on
            teacher = runs.loc[distill["m_teacher_run"]] if distill.get("m_teacher_run") in runs.index else None
            teacher_score = teacher.get(f"m_dev_{main}", np.nan) if teacher is not None else np.nan
            excluded = {mine["source_task"].iloc[0]} | _teacher_sources(mine)
            targets = sorted(set(_target(mine)) - excluded)
            mean, low, high, seeds, per_seed = _mean_interval(mine, targets)
            row = {"recipe": name, "variant": variant, "transfer_rows": int(distill["m_transfer_rows"]),
                   "learnt": model_learnt(mine), "per_seed": per_seed,
                   "source_dev_retention": score / teacher_score if teacher_score else np.nan,
                   # chance counted out: 0 for a constant predictor (the raw ratio gives it 73.5% on rt-polarity)
                   "source_dev_retention_vs_chance": distill.get("m_dev_retention_vs_chance", np.nan),
                   "targets": "+".join(targets), "mean": mean, "ci95_low": low, "ci95_high": high, "seeds": seeds,
                   "teacher_pass_s": distill.get("m_cache_seconds", np.nan),
                   "distillation_s": distill.get("m_distil_seconds", np.nan)}  # fmt: skip
            for kind in ("undistilled", "stilts"):
                other = matched(ft, keys, mine, kind, fields)
                row[f"{kind}_mean"] = _over_targets(other, targets)[0] if not other.empty else np.nan
                diff = paired_difference(mine, other, targets) if not other.empty else {}
                row.update({f"vs_{kind}": diff.get("mean", np.nan), f"vs_{kind}_ci95_low": diff.get("low", np.nan),
                            f"vs_{kind}_ci95_high": diff.get("high", np.nan), f"vs_{kind}_seeds": diff.get("seeds", 0)})  # fmt: skip
            rows.append(row)
    if not rows:
        return pd.DataFrame()
    return pd.DataFrame(rows).sort_values(["recipe", "transfer_rows"]).reset_index(drop=True)


def _interval(mean, low, high, seeds) -> str:
    if pd.isna(mean):
        return "n/a"
    if pd.isna(low):
        return f"{mean:+.1f} (1 seed)" if seeds == 1 else f"{mean:+.1f}"
    return f"{mean:+.1f} [{low:+.1f}, {high:+.1f}]"


SCALING_MARK_NOTE = (
    f"\n\n{NOT_LEARNT.strip()}: a size whose model did not learn (`learning_check.md`): its distillation at or below "
    "the best constant prediction + margin on the source's dev rows, or a fine-tuning seed on a target's. Not a "
    "result: no reading of the curve rests on it."
)


def scaling_markdown(table: pd.DataFrame, split: str = "test") -> str:
    if table.empty:
        return ""
    failed = did_not_learn(table, "learnt")
    out = pd.DataFrame({
        "recipe": table["recipe"],
        "transfer rows": [f"{n}{NOT_LEARNT if f else ''}" for n, f in zip(table["transfer_rows"], failed)],
        "source retention": [f"{v:.1%}" if not pd.isna(v) else "n/a" for v in table["source_dev_retention"]],
        "vs chance": [f"{v:.1%}" if not pd.isna(v) else "n/a"
                      for v in table.get("source_dev_retention_vs_chance", pd.Series(np.nan, index=table.index))],
        "mean over targets [95% t CI]": [
            "n/a" if pd.isna(m) else f"{m:.1f}" + ("" if pd.isna(lo) else f" [{lo:.1f}, {hi:.1f}]") + f" ({n} seeds)"
            for m, lo, hi, n in zip(table["mean"], table["ci95_low"], table["ci95_high"], table["seeds"])],
        "per seed": table["per_seed"],
        "twin": table["undistilled_mean"].map(lambda v: "n/a" if pd.isna(v) else f"{v:.1f}"),
        "STILTs": table["stilts_mean"].map(lambda v: "n/a" if pd.isna(v) else f"{v:.1f}"),
        "vs twin [95% t CI]": [_interval(*v) for v in zip(table["vs_undistilled"], table["vs_undistilled_ci95_low"],
                                                          table["vs_undistilled_ci95_high"], table["vs_undistilled_seeds"])],
        "vs STILTs [95% t CI]": [_interval(*v) for v in zip(table["vs_stilts"], table["vs_stilts_ci95_low"],
                                                            table["vs_stilts_ci95_high"], table["vs_stilts_seeds"])],
        "teacher pass s": table["teacher_pass_s"].map(lambda v: "n/a" if pd.isna(v) else f"{v:.0f}"),
        "distillation s": table["distillation_s"].map(lambda v: "n/a" if pd.isna(v) else f"{v:.0f}"),
    })  # fmt: skip
    scores = "test" if split == "test" else f"{split} (the split fine-tuning selects on)"
    note = (
        f"\n\nScores: {scores}, x100, over the targets that are not the source. Retention: the distilled student's "
        "source dev score over its teacher's. Differences paired by (target, fine-tuning seed), 95% t interval "
        "over seeds (each seed's difference averaged over the targets). Wall times, as each distillation run recorded them "
        "(this machine, one process): the teacher pass builds the teacher's outputs over the transfer set (opened, "
        "not rebuilt, where an earlier run of the same teacher and rows made them); the distillation is every phase. "
        "Per seed: each fine-tuning seed's mean over the targets."
    )
    return out.to_markdown(index=False) + note + (SCALING_MARK_NOTE if any(failed) else "")
