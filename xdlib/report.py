"""The study's tables and figures, as pure functions of the run store (nothing is trained or measured here).

`collect(runs_dir)` reads every complete run (DONE present; anything else is never counted) into one DataFrame;
`build_report(runs_dir, out_dir)` writes results/tables/*.csv|md and results/figures/*.png, and the same score
tables from dev scores under results/tables/dev/ (the split fine-tuning selects on: a recipe is chosen there,
without reading test). A row is every run whose run id is the same but for the seeds (`comparison.row_fields`):

- results_matrix: every model variant (distilled students, the undistilled baselines, the teacher) x every
  target task, the main metric x100, mean ± sd over seeds (n: distinct trainings, `one_per_training`; a one-seed
  cell says "1 seed" and has no ±);
- augmentation: the same student and source with different transfer sets (bars with seed spread);
- architectures: per distillation run and fine-tuning variant, parameters, transformer FLOPs and measured
  inference speedup vs the teacher, source-task retention, mean target score;
- headline: the paper's table layout (GLUE dev accuracy, SQuAD v2 F1) with the paper's numbers
  (docs/paper.md), ours beside them where we have the same architecture and target, and the delta; "n/a"
  where a cell cannot be compared;
- transfer: per trained variant, the mean over the targets that are not its source beside its matched controls
  (undistilled twin, STILTs, the teacher's model), with the paired differences and their 95% t intervals over
  fine-tuning seeds (`comparison.py`);
- axes: the paper's three axes (source task, augmentation, architecture): each pair of distilled students that
  differ in one of them alone, their paired difference with its 95% t interval;
- scaling: a recipe distilled over transfer sets of several sizes, one row per size, beside its twin and STILTs
  (`scaling.py`; figure scaling.png);
- targets_learnt: per target, its best model (two or more seeds) against chance and that model's seed spread;
- learning_check (once, not per split): every teacher, distillation, STILTs and fine-tuning run's dev score
  against the best constant prediction on its dev rows (`metrics.learning_check`), the runs that did not learn
  first; every score table marks (†) a cell, row or point that rests on one of them;
- runs: every run used, with its git sha, so each number traces back to its config.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from . import comparison, figures
from .comparison import NOT_LEARNT, known_learnt, seed_did_not_learn, target_column, transfer_markdown, transfer_table
from .comparison import flat as _flat
from .config import UNHASHED, Config
from .headline import headline_table
from .runs import atomic_write, damage, fault
from .scaling import scaling_markdown, scaling_table

log = logging.getLogger(__name__)
CHANCE = "chance (best constant prediction)"  # its row in the score tables
TABLES = ("results_matrix", "results_long", "augmentation", "architectures", "headline", "learning_check", "runs")


def collect(runs_dir: str | Path) -> pd.DataFrame:
    """One row per complete run: stage, run_id, its config fields, scalar metrics and provenance."""

    rows = []
    for done in sorted(Path(runs_dir).glob("*/*/DONE")):
        path = done.parent
        problem = damage(path)
        if problem:  # named, never counted; the next sweep that needs it makes it again
            log.warning("not counted: %s/%s is marked DONE but %s", path.parent.name, path.name, problem)
            continue
        config = yaml.safe_load((path / "config.yaml").read_text())
        metrics = json.loads((path / "metrics.json").read_text())
        prov = json.loads((path / "provenance.json").read_text()) if (path / "provenance.json").is_file() else {}
        row = {"stage": path.parent.name, "run_id": path.name}
        row.update({k: _flat(v) for k, v in config.items()})
        row.update({f"m_{k}": v for k, v in metrics.items() if isinstance(v, (int, float, str)) or v is None})
        if isinstance(metrics.get("transfer_composition"), dict):  # the rows of each origin, and what was filtered
            composition = metrics["transfer_composition"].items()  # "task:x" is a resource, "x:removed_held_out" not
            row["m_transfer_rows"] = sum(v for k, v in composition if not k.endswith(":removed_held_out"))
        row.update(git_sha=prov.get("git_sha"), git_dirty=prov.get("git_dirty"), device=prov.get("device_name"))
        row.update(threads=prov.get("threads"), python=prov.get("python"), packages=_flat(prov.get("packages")))
        row.update(seeds=_flat(prov.get("seeds")), start=prov.get("start"), wall_seconds=prov.get("wall_seconds"))
        row["precision"] = metrics.get("compute_precision") or _precision(prov.get("device"))  # in every run id
        row["engine_version"] = metrics.get("engine_version") or prov.get("engine_version") or 1  # 1: made before it
        rows.append(row)
    return pd.DataFrame(rows)


def _precision(device: str | None) -> str | None:
    """The precision a run computed in, from the device its provenance records (`devices.compute_precision`)."""
    return None if not device else "bf16" if str(device).startswith("cuda") else "fp32"


def without_copies(frame: pd.DataFrame) -> pd.DataFrame:
    """The runs with save_model: true that repeat a run without it (every other id field equal, the upstream run
    included: the same training, only the weights kept, as params/deploy.yaml makes them) left out, so each result
    is counted once."""
    if frame.empty or "save_model" not in frame:
        return frame
    kept = frame["save_model"].eq(True)  # NaN (a run made before the field): False
    fields = [
        f.name for f in dataclasses.fields(Config) if f.metadata["section"] not in UNHASHED and f.name != "save_model"
    ]
    fields += ["precision", "engine_version", "m_task_version"]  # in the run id too
    fields += ["m_upstream_run", "m_distill_run"]  # so is the upstream run's id (its precision, say): never a copy
    key = frame[["stage", *[f for f in fields if f in frame]]].map(str).agg("|".join, axis=1)  # NaN as "nan"
    twin = (~kept).groupby(key).transform("any")  # a run of the same key without the model
    frame = frame[~(kept & twin)]
    return frame if frame["save_model"].eq(True).any() else frame.drop(columns="save_model")


def _score(frame: pd.DataFrame, split: str = "test") -> pd.Series:
    """`split` score of each run's main metric on a 0-100 scale (QA metrics already are)."""
    values = [row.get(f"m_{split}_{row['m_main_metric']}") for _, row in frame.iterrows()]
    scale = [_scale(kind) for kind in frame["m_task_kind"]]
    return pd.Series(np.asarray(values, dtype=float) * np.asarray(scale), index=frame.index)


def _scale(kind: str) -> float:
    """Factor to the 0-100 scale of the tables: QA metrics already are percentages."""
    return 1.0 if kind == "qa" else 100.0


def _variant(row) -> str:
    if row["student"] == "distilled":
        aug = "source only" if row["augmentation"] == "-" else f"+{row['augmentation']}"
        return f"{row['student_arch']} distilled from {row['source_task']} ({aug})"
    if row["student"] == "undistilled":
        return f"{row['student_arch']} undistilled"
    if row["student"] == "stilts":
        return f"{row['student_arch']} STILTs (undistilled, fine-tuned on {row['source_task']} first)"
    if row["student"] == "teacher":
        return f"teacher {Path(str(row['teacher_model'])).name}"
    return f"model {row['student']}"


# Named in a variant label already: never appended as key=value (teacher_model only for the teacher's model).
LABELLED = {"student", "source_task", "student_arch", "augmentation"}


def _with_lineage(ft: pd.DataFrame, frame: pd.DataFrame) -> pd.DataFrame:
    """The run-id inputs that are not config fields, from the runs upstream of each fine-tuning: the precision of
    its distillation or STILTs model and of the teacher above it, and the source task's version (NaN where the
    upstream run is not in the store); beside them, whether that upstream model learnt its source
    (`upstream_learnt`, its recorded learning check: not a run-id input)."""
    runs = frame.drop_duplicates("run_id").set_index("run_id") if "run_id" in frame else pd.DataFrame()
    ft = ft.copy()
    upstream = ft["m_upstream_run"] if "m_upstream_run" in ft else pd.Series(np.nan, index=ft.index)
    teacher = upstream.map(runs["m_teacher_run"]) if "m_teacher_run" in runs else pd.Series(np.nan, index=ft.index)
    lineage = {"upstream_precision": (upstream, "precision"), "source_version": (upstream, "m_task_version"),
               "teacher_precision": (teacher, "precision"), "upstream_learnt": (upstream, "m_learnt")}  # fmt: skip
    for column, (via, value) in lineage.items():
        ft[column] = via.map(runs[value]) if value in runs else np.nan
    return ft


def _targets(ft: pd.DataFrame) -> pd.Series:
    """The column each run lands in: its target task, or 'task vN' where runs of two versions of it are there."""
    if "m_task_version" not in ft:
        return ft["target_task"]
    versions = ft.groupby("target_task")["m_task_version"].transform(lambda v: v.map(str).nunique())
    named = ft["target_task"] + " v" + ft["m_task_version"].map(comparison.setting_text)
    return ft["target_task"].where(versions <= 1, named)


def _labels(ft: pd.DataFrame) -> pd.Series:
    """One label per row (`comparison.row_keys`): the kind's name, then ', key=value' for every setting of its run
    id (`comparison.run_fields`) where it departs from the most common value among the runs whose id holds that
    setting, or every row's value where no value is the most common (so only departures lengthen a label, and two
    rows never share one)."""
    keys = comparison.key_frame(ft)
    rows = comparison.row_keys(ft, keys)
    kinds = ft["student"].astype(str)
    relevant = comparison.run_fields(ft)  # each run's own: the twin's teacher_model only where its init reads it
    suffix = pd.Series("", index=ft.index)
    for name in keys.columns:
        holds = pd.Series([name in own and name not in LABELLED for own in relevant], index=ft.index)
        holds &= ~((kinds == "teacher") & (name == "teacher_model"))  # the teacher's model names it
        if name == "source_version" and "source_task" in ft:  # the source task names it, unless one source has two
            holds &= ft.groupby("source_task")[name].transform(lambda v: v.map(str).nunique() > 1).astype(bool)
        values = keys.loc[holds, name]
        if values.nunique() > 1:
            counts = values.value_counts()
            # no value is the most common one (a search grid): every row names its own
            departs = values[values != counts.index[0]] if counts.iloc[0] > counts.iloc[1] else values
            suffix[departs.index] += [f", {name}={v}" for v in departs]
    labels = pd.Series([_variant(row) for _, row in ft.iterrows()], index=ft.index)
    labels = pd.Series([_with_suffix(label, extra) for label, extra in zip(labels, suffix)], index=ft.index)
    shared = rows.groupby(labels).transform("nunique") > 1  # one label, two rows: the key tells them apart
    if shared.any():
        labels[shared] += [f" [{hashlib.sha256(r.encode()).hexdigest()[:6]}]" for r in rows[shared]]
    return labels


def _with_suffix(label: str, extra: str) -> str:
    if not extra:
        return label
    return label[:-1] + extra + ")" if label.endswith(")") else f"{label} ({extra[2:]})"


def finetune_scores(frame: pd.DataFrame, split: str = "test") -> pd.DataFrame:
    """The fine-tuning runs with `score` (the `split` score, x100), `target` (the column) and `variant` (the row:
    every run-id setting but the seeds, `comparison.row_fields`)."""
    ft = frame[frame["stage"] == "finetune"].copy()
    if ft.empty:
        return ft
    ft = _with_lineage(ft, frame)
    ft["score"] = _score(ft, split)
    if "target_task" in ft:
        ft["target"] = _targets(ft)
    ft = one_per_training(ft)
    ft["variant"] = _labels(ft)
    return ft


def one_per_training(ft: pd.DataFrame) -> pd.DataFrame:
    """One run per (row, target, seed, effective fine-tuning seed: finetune_seed, or seed where it is unset), the
    first by run id: finetune_seed unset and finetune_seed equal to seed are the same training under two run ids,
    one seed (never a second seed with a spread of 0). Runs whose seeds differ are different trainings (the seed
    draws the distillation, the undistilled initialisation and the capped training rows) and are all kept."""
    if ft.empty:
        return ft
    seed = ft["seed"] if "seed" in ft else pd.Series(0, index=ft.index)
    target = target_column(ft) if "target" in ft or "target_task" in ft else pd.Series("", index=ft.index)
    same = pd.DataFrame({"row": comparison.row_keys(ft), "target": target.astype(str),
                         "seed": seed.map(comparison.setting_text), "fseed": comparison.finetune_seed(ft)})  # fmt: skip
    order = ft["run_id"].astype(str).sort_values(kind="stable").index if "run_id" in ft else ft.index
    first = ~same.loc[order].duplicated()
    return ft[first.reindex(ft.index).to_numpy()]


def _mean_std(values: pd.Series) -> pd.Series:
    return pd.Series(
        {"mean": values.mean(), "std": values.std(ddof=1) if len(values) > 1 else np.nan, "n": len(values)}
    )


def _cell(mean, std, n) -> str:
    """'64.6 ± 1.3 (n=3)': mean ± sd over seeds; a one-seed cell says so and has no ±; NaN n: not a seeded run."""
    if pd.isna(mean):
        return "n/a"
    if pd.isna(n):
        return f"{mean:.1f}"
    return f"{mean:.1f} ± {std:.1f} (n={n:.0f})" if n > 1 and not pd.isna(std) else f"{mean:.1f} (1 seed)"


MATRIX_NOTE = (
    "Cells: mean ± sd over fine-tuning seeds (n = distinct seeds: finetune_seed unset and finetune_seed equal to "
    "seed are one training, counted once; the sd is the spread between seeds, not a confidence interval); "
    "'1 seed': a single run, no spread. A row is every run whose run id is the same but for the seeds "
    "(`comparison.row_fields`). Avg: the mean of the row's cells."
)


def results_tables(ft: pd.DataFrame, split: str = "test") -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """(long table, matrix of means with Avg, markdown matrix with mean ± sd (n) and a note)."""
    ft = ft.assign(target=ft["target"] if "target" in ft else ft["target_task"], not_learnt=seed_did_not_learn(ft))
    long = ft.groupby(["variant", "target"])["score"].apply(_mean_std).unstack().reset_index()
    failed = ft.groupby(["variant", "target"])["not_learnt"].sum().reset_index()  # seeds that did not learn
    long = long.merge(failed, on=["variant", "target"], how="left")
    chance_col = f"m_{split}_chance"
    if chance_col in ft:  # the best constant prediction on the same rows: what "beats chance" means
        chance = ft.dropna(subset=[chance_col]).drop_duplicates("target").copy()
        long = pd.concat([long, pd.DataFrame({
            "variant": CHANCE, "target": chance["target"],
            "mean": [v * _scale(k) for v, k in zip(chance[chance_col], chance["m_task_kind"])], "std": np.nan,
            "n": np.nan})])  # fmt: skip
    long = long.sort_values(["variant", "target"]).reset_index(drop=True).rename(columns={"target": "target_task"})
    matrix = long.pivot(index="variant", columns="target_task", values="mean")
    matrix["Avg"] = matrix.mean(axis=1, skipna=False)
    marks = np.where(long["not_learnt"] > 0, NOT_LEARNT, "")
    cells = [_cell(m, s, n) + mark for m, s, n, mark in zip(long["mean"], long["std"], long["n"], marks)]
    md = long.assign(cell=cells).pivot(index="variant", columns="target_task", values="cell").fillna("n/a")
    marked = long.groupby("variant")["not_learnt"].sum().reindex(matrix.index) > 0  # an Avg over a marked cell
    md["Avg"] = [(f"{v:.1f}" if not pd.isna(v) else "n/a") + (NOT_LEARNT if m else "")
                 for v, m in zip(matrix["Avg"], marked)]  # fmt: skip
    scores = "Test" if split == "test" else f"{split.capitalize()} (the split fine-tuning selects on)"
    return long, matrix, md.to_markdown() + f"\n\n{scores} score x100. {MATRIX_NOTE}" + _mark_note(ft)


def _mark_note(ft: pd.DataFrame) -> str:
    """What the matrix's mark means, naming each marked cell's fine-tuning seeds that did not learn."""
    failed = ft[ft["not_learnt"]]
    if failed.empty:
        return ""
    seeds = failed.assign(fseed=comparison.finetune_seed(failed)).groupby(["variant", "target"])["fseed"]
    cells = "; ".join(f"{v} on {t}: seed {', '.join(map(str, sorted(s)))}" for (v, t), s in seeds)
    return (
        f"\n\n{NOT_LEARNT.strip()}: a model that did not learn: the cell's fine-tuning seed(s) scored at or below the "
        "best constant prediction + the metric's margin on dev (`learning_check.md`), so the cell is not a result, "
        f"nor is its row's Avg. {cells}."
    )


def learnt_table(long: pd.DataFrame) -> pd.DataFrame:
    """Whether each target measures anything: its best model (the highest mean among the rows with two or more
    seeds, so that a spread exists) against chance, and that model's sd over seeds; learnt: best >= chance + 10
    and sd <= 3 points (x100)."""
    chance = long[long["variant"] == CHANCE].set_index("target_task")["mean"]
    seeded = long[(long["variant"] != CHANCE) & (long["n"] >= 2)]
    rows = []
    for target, runs in seeded.groupby("target_task"):
        best = runs.loc[runs["mean"].idxmax()]
        level = chance.get(target, np.nan)
        rows.append({"target": target, "chance": level, "best_model": best["variant"], "best_mean": best["mean"],
                     "best_sd_over_seeds": best["std"], "seeds": int(best["n"]),
                     "learnt": bool(best["mean"] >= level + 10 and best["std"] <= 3)})  # fmt: skip
    return pd.DataFrame(rows)


STAGE_KINDS = {"teacher": "teacher", "distill": "distilled", "stilts": "stilts"}  # finetune: its own student
STAGES = (*STAGE_KINDS, "finetune")


def _learnt_rank(value) -> int:
    """Did not learn first (0), then unknown (1: made before the check), then learnt (2)."""
    return 1 if pd.isna(value) else 2 if value else 0


def learning_check_table(frame: pd.DataFrame, labels: pd.Series | None = None) -> pd.DataFrame:
    """One row per teacher, distillation, STILTs and fine-tuning run: its dev score in the main metric (its own
    units: a share for accuracy and F1, % for QA) against the best constant prediction on the same dev rows, the
    margin and whether it learnt (`metrics.learning_check`; None: made before the check); for a distillation, its
    teacher's dev score and the retention with chance counted out. A fine-tuning is named by its row of the score
    tables where `labels` (run id -> variant) holds it. Runs that did not learn first."""
    labels = labels if labels is not None else pd.Series(dtype=object)
    rows = []
    for _, run in frame[frame["stage"].isin(STAGES)].iterrows():
        stage, main = run["stage"], run.get("m_main_metric")
        run = run.copy()
        run["student"] = STAGE_KINDS.get(stage, run.get("student"))
        label = labels.get(run["run_id"]) if stage == "finetune" else None
        rows.append({"stage": stage, "run_id": run["run_id"],
                     "task": run.get("target_task" if stage == "finetune" else "source_task"),
                     "model": label if isinstance(label, str) else _variant(run),
                     "dev_score": run.get(f"m_dev_{main}", np.nan), "dev_constant": run.get("m_dev_constant", np.nan),
                     "learning_margin": run.get("m_learning_margin", np.nan),
                     "learnt": known_learnt([run.get("m_learnt")]), "teacher_dev": run.get("m_teacher_dev", np.nan),
                     "dev_retention_vs_chance": run.get("m_dev_retention_vs_chance", np.nan)})  # fmt: skip
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    order = table["learnt"].map(_learnt_rank) * len(STAGES) + table["stage"].map(STAGES.index)
    return table.iloc[np.lexsort([table["run_id"], order])].reset_index(drop=True)


def learning_check_markdown(table: pd.DataFrame) -> str:
    """The table, after one line that counts the runs that did not learn and names them."""
    failed = table[table["learnt"].map(_learnt_rank) == 0]
    unknown = int(table["learnt"].isna().sum())
    names = ", ".join(f"{r.run_id} ({r.stage}, {r.task})" for r in failed.itertuples())
    head = f"{len(failed)} of {len(table)} models did not learn" + (f": {names}." if names else ".")
    if unknown:
        head += f" {unknown} made before the learning check: unknown (neither learnt nor not)."
    return head + (
        " A reading never rests on a model that did not learn: the score tables mark its cells and rows"
        f" ({NOT_LEARNT.strip()}) and they are not results.\n\n"
        + table.astype(object).where(table.notna(), None).to_markdown(index=False, floatfmt=".3f", missingval="")
        + "\n\nDev score and the best constant prediction's (dev_constant) on the same dev rows, in the main "
        "metric's own units (a share for accuracy and F1, % for QA); learnt: the score beats the constant by "
        "learning_margin (`metrics.LEARNING_MARGINS`). The task: the source for a teacher, distillation or STILTs "
        "run, the target for a fine-tuning. dev_retention_vs_chance (distillation): (student - constant) / "
        "(teacher - constant) on the source's dev rows. A blank: not recorded (a run made before the check)."
    )


def augmentation_table(ft: pd.DataFrame) -> pd.DataFrame:
    dist = ft[ft["student"] == "distilled"]
    if dist.empty:
        return pd.DataFrame()
    dist = dist.assign(target_task=target_column(dist))
    keys = ["source_task", "student_arch", "augmentation", "variant", "target_task"]  # variant: the whole row key
    table = dist.groupby(keys)["score"].apply(_mean_std).unstack().reset_index()
    return table.sort_values(keys).reset_index(drop=True)


def architecture_table(frame: pd.DataFrame, ft: pd.DataFrame, split: str = "test") -> pd.DataFrame:
    """One row per distillation run and fine-tuning variant of its student (two fine-tuning recipes are never
    averaged together): sizes, speed, the `split` source score beside the teacher's, retention, and the mean over
    targets of the fine-tunings."""
    dist = frame[frame["stage"] == "distill"]
    if dist.empty:
        return pd.DataFrame()
    runs = frame.drop_duplicates("run_id").set_index("run_id")
    rows = []
    for _, run in dist.sort_values("run_id").iterrows():
        mine = ft[(ft["student"] == "distilled")] if not ft.empty else ft
        mine = mine[mine["m_distill_run"] == run["run_id"]] if not mine.empty else mine
        main = run["m_main_metric"]
        score = run.get(f"m_{split}_{main}", np.nan)
        if split == "test":
            teacher, retention = run.get("m_teacher_test", np.nan), run.get("m_retention", np.nan)
        else:  # the teacher's own run holds its dev score
            teacher_run = run.get("m_teacher_run")
            teacher = runs[f"m_{split}_{main}"].get(teacher_run, np.nan) if f"m_{split}_{main}" in runs else np.nan
            retention = score / teacher if teacher and not pd.isna(teacher) else np.nan
        for variant, fine in mine.groupby("variant") if len(mine) else [(None, mine)]:
            rows.append(
                {
                    "distill_run": run["run_id"],
                    "source": run["source_task"],
                    "arch": run["student_arch"],
                    "init": run["student_init"] if run["student_embeddings"] != "pca" else "random + PCA embeddings",
                    "augmentation": run["augmentation"],
                    "seed": run["seed"],
                    "parameters_M": run["m_parameters"] / 1e6,
                    "teacher_parameters_M": run["m_teacher_parameters"] / 1e6,
                    "flops_ratio": run["m_flops_ratio"],
                    "speedup_measured": run.get("m_speedup", np.nan),
                    f"source_{split}_{main}": score,
                    f"teacher_source_{split}": teacher,
                    "retention": retention,
                    # the share of the teacher's skill above the constant kept, on source dev (`metrics.py`)
                    "dev_retention_vs_chance": run.get("m_dev_retention_vs_chance", np.nan),
                    "learnt": known_learnt([run.get("m_learnt")]),
                    "finetune_variant": variant,
                    "targets": target_column(fine).nunique() if len(fine) else 0,
                    "finetunes": len(fine),
                    # each target weighs the same: the mean over targets of the mean over that target's fine-tunings
                    "mean_over_targets": fine.groupby(target_column(fine))["score"].mean().mean()
                    if len(fine)
                    else np.nan,
                }
            )
    return pd.DataFrame(rows)


def _write(
    table: pd.DataFrame, tables: Path, name: str, md: str | None = None, digits: str | None = "%.4f"
) -> list[Path]:

    fault("report", tables / name)
    atomic_write(tables / f"{name}.csv", table.to_csv(index=False, float_format=digits))
    atomic_write(tables / f"{name}.md", (md or table.to_markdown(index=False, floatfmt=".3f")) + "\n")
    return [tables / f"{name}.csv", tables / f"{name}.md"]


def build_report(
    runs_dir: str | Path = "results/runs", out_dir: str | Path = "results", run_ids: set[str] | None = None
) -> list[Path]:
    """Write every table and figure for the complete runs under `runs_dir` (only those in `run_ids` where given: a
    study's own runs in a store that several studies share); returns the paths written."""
    frame = collect(runs_dir)
    if run_ids is not None and not frame.empty:  # first: a study's own save_model run is its result, not a copy
        frame = frame[frame["run_id"].isin(run_ids)]
    frame = without_copies(frame)
    tables, figs = Path(out_dir) / "tables", Path(out_dir) / "figures"
    tables.mkdir(parents=True, exist_ok=True)
    figs.mkdir(parents=True, exist_ok=True)
    if frame.empty:
        raise ValueError(f"no complete runs under {runs_dir}: nothing to report (run a sweep first)")
    written = []
    for split, where in (("test", tables), ("dev", tables / "dev")):  # dev: for recipe choices, test unread
        where.mkdir(exist_ok=True)
        ft = finetune_scores(frame, split)
        matrix = pd.DataFrame()
        if not ft.empty:
            long, matrix, md = results_tables(ft, split)
            written += _write(long, where, "results_long")
            written += _write(matrix.reset_index(), where, "results_matrix", md)
            written += _write(augmentation_table(ft), where, "augmentation")
            if split == "test":  # chance is the best constant prediction on the test rows
                written += _write(learnt_table(long), where, "targets_learnt", digits="%.2f")
            transfer = transfer_table(ft)
            if not transfer.empty:
                written += _write(transfer, where, "transfer", transfer_markdown(transfer, split))
            axes = comparison.axis_table(ft)
            if not axes.empty:
                written += _write(axes, where, "axes", comparison.axis_markdown(axes, split))
            scaling = scaling_table(frame, ft, split)  # retention on dev in both
            if not scaling.empty:
                written += _write(scaling, where, "scaling", scaling_markdown(scaling, split))
                if split == "test":
                    written.append(figures.scaling_figure(scaling, figs / "scaling.png"))
        arch = architecture_table(frame, ft, split)
        written += _write(arch, where, "architectures")
        written += _write(headline_table(ft, frame), where, "headline")
        if split == "test":
            written += figures.figures(matrix, ft, arch, figs, frame)
    # once for every split: whether each model learnt is read on dev, whatever split a table reports
    labels = ft.set_index("run_id")["variant"] if not ft.empty else None  # the last split's: dev
    check = learning_check_table(frame, labels)
    if not check.empty:
        written += _write(check, tables, "learning_check", learning_check_markdown(check))
    # runs.csv: every config field, metric and provenance field of every run (the run store itself, with its
    # weights, is not committed); runs.md: the columns a reader scans
    keep = ["stage", "run_id", "source_task", "target_task", "student", "student_arch", "augmentation", "seed",
            "finetune_seed", "git_sha", "git_dirty", "device", "wall_seconds"]  # fmt: skip
    frame = frame.sort_values(["stage", "run_id"])
    md = frame[[c for c in keep if c in frame]].to_markdown(index=False)
    written += _write(frame, tables, "runs", md, digits=None)  # every value as recorded (learning rates: 5e-05)
    return written


def html_report(out_dir: str | Path = "results", runs_dir: str | Path = "results/runs") -> Path:
    """out_dir/report.html: notebooks/report.ipynb executed over the tables and figures out_dir holds (it builds
    nothing) and converted by nbconvert with the code cells hidden, every table and figure inline (images embedded).
    Written whole or not at all."""
    import tempfile

    import nbformat
    import papermill
    from nbconvert import HTMLExporter

    from .errors import errors_only
    from .notebook import require_report_notebook

    notebook_path = require_report_notebook()
    out_dir = Path(out_dir).resolve()
    # not papermill's "Executing notebook with kernel", nor nbconvert's "alternative text is missing" per figure
    with errors_only("papermill", "traitlets"), tempfile.TemporaryDirectory() as tmp:
        executed = Path(tmp) / "report.ipynb"
        papermill.execute_notebook(str(notebook_path), str(executed), progress_bar=False,
                                   parameters={"runs_dir": str(runs_dir), "out_dir": str(out_dir), "build": False},
                                   cwd=str(notebook_path.parent.parent), log_output=False,
                                   extra_arguments=["--IPKernelApp.log_level=ERROR"])  # fmt: skip
        notebook = nbformat.read(executed, as_version=4)
        exporter = HTMLExporter(exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True)
        html, _ = exporter.from_notebook_node(notebook)
    path = out_dir / "report.html"
    atomic_write(path, html)
    return path
