"""The report's figures: the transfer heatmap, augmentation bars and the architecture scatter (matplotlib, seaborn).

Pure functions of the tables `xdlib.report` builds; each is written without a version stamp, so a rerun is
byte-identical, and with its labels whole (`bbox_inches="tight"`).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display, before pyplot is imported
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from .comparison import NOT_LEARNT, did_not_learn, difference_matrix, seed_did_not_learn, target_column  # noqa: E402


def save(fig, path: Path) -> Path:
    """Write a figure without a version stamp (so reruns are byte-identical) and close it."""
    fig.tight_layout()
    fig.savefig(path, dpi=120, metadata={"Software": None}, bbox_inches="tight")  # long row labels stay whole
    plt.close(fig)
    return path


def figures(matrix: pd.DataFrame, ft: pd.DataFrame, arch: pd.DataFrame, out: Path, frame=None) -> list[Path]:
    """Every figure the runs allow: the transfer matrix (differences against the twin), quality against measured
    speed, the augmentation comparison and the architectures."""
    written = []
    differences = difference_matrix(ft) if not ft.empty else pd.DataFrame()
    if not differences.empty and differences.notna().any().any():
        marks = difference_matrix(ft, marks=True)
        written.append(transfer_figure(differences, out / "transfer_matrix.png", marks))
    if not matrix.empty:
        written.append(scores_figure(matrix, out / "scores_matrix.png", score_marks(matrix, ft)))
    if frame is not None and not ft.empty:
        points = speed_points(ft, frame)
        if not points.empty:
            written.append(speed_figure(points, out / "quality_vs_speed.png"))
    written += augmentation_figure(ft, out)
    if not arch.empty:
        written.append(architectures_figure(arch, out / "architectures.png"))
    return written


def _heatmap_size(table: pd.DataFrame) -> tuple[float, float]:
    labels = max((len(str(label)) for label in table.index), default=0)  # room for the row labels, whole
    # at least 3.2 in high: a one-row heatmap keeps room for its two-line title, colour bar and caption
    return 1.6 + 1.1 * table.shape[1] + 0.075 * labels, max(3.2, 1.2 + 0.45 * table.shape[0])


def score_marks(matrix: pd.DataFrame, ft: pd.DataFrame) -> pd.DataFrame:
    """The cells of `matrix` (variant x target, and Avg) that rest on a fine-tuning run that did not learn."""
    if ft.empty:
        return pd.DataFrame(False, index=matrix.index, columns=matrix.columns)
    failed = ft.assign(failed=seed_did_not_learn(ft)).groupby(["variant", target_column(ft)])["failed"].any().unstack()
    marks = failed.reindex(index=matrix.index, columns=matrix.columns).eq(True)  # NaN (no run there): unmarked
    if "Avg" in marks:
        marks["Avg"] = marks.drop(columns="Avg").any(axis=1)
    return marks


def _marked_text(values: pd.DataFrame, marks: pd.DataFrame | None, fmt: str) -> tuple[np.ndarray, pd.DataFrame]:
    """Each cell's annotation, with the mark where a model in it did not learn; and the marked cells (drawn ones)."""
    blank = pd.DataFrame(False, index=values.index, columns=values.columns)
    marks = (blank if marks is None else marks.reindex_like(values).eq(True)) & values.notna()
    text = np.array([[format(v, fmt) + (NOT_LEARNT if m else "") if v == v else "" for v, m in zip(vs, ms)]
                     for vs, ms in zip(values.to_numpy(dtype=float), marks.to_numpy())])  # fmt: skip
    return text, marks


def _hatch(ax, marks: pd.DataFrame) -> bool:
    """Hatch the marked cells (a heatmap's cell (i, j) spans [j, j + 1] x [i, i + 1]): over the colours, under the
    numbers (zorder 2 of 1 and 3); whether any is. Also keeps the row labels horizontal, as `_heatmap_size` makes
    room for them (seaborn turns a lone row's label vertical, over the caption)."""
    for i, j in zip(*np.nonzero(marks.to_numpy())):
        ax.add_patch(Rectangle((j, i), 1, 1, fill=False, hatch="///", edgecolor="0.5", linewidth=0, zorder=2))
    ax.tick_params(axis="y", labelrotation=0)
    return bool(marks.to_numpy().any())


MARK_CAPTION = f"{NOT_LEARNT.strip()}, hatched: a model that did not learn (learning_check.md): not a result"


def transfer_figure(differences: pd.DataFrame, path: Path, marks: pd.DataFrame | None = None) -> Path:
    """Sources (each distilled student, its source in its label) as rows, targets as columns; each cell the student
    minus its undistilled twin, paired by seed; blank: its own source or no pair; † and hatched: the student's
    distillation, or a fine-tuning of it or of its twin on that target, did not learn."""
    fig, ax = plt.subplots(figsize=_heatmap_size(differences))
    bound = max(1.0, float(differences.abs().max().max()))
    text, marks = _marked_text(differences.astype(float), marks, "+.1f")
    sns.heatmap(differences.astype(float), annot=text, fmt="", cmap="RdBu", center=0, vmin=-bound, vmax=bound,
                cbar_kws={"label": "difference, test x100"}, ax=ax)  # fmt: skip
    xlabel = "target task (blank: the student's own source, or no paired twin)"
    ax.set_xlabel(xlabel + (f"\n{MARK_CAPTION}" if _hatch(ax, marks) else ""))
    ax.set_ylabel("distilled student (source task, recipe)")
    ax.set_title(
        "Transfer: distilled student minus its undistilled twin\n(test x100, mean over paired fine-tuning seeds)"
    )
    return save(fig, path)


def scores_figure(matrix: pd.DataFrame, path: Path, marks: pd.DataFrame | None = None) -> Path:
    """Each model's mean score on each target; † and hatched: a cell resting on a fine-tuning that did not learn."""
    fig, ax = plt.subplots(figsize=_heatmap_size(matrix))
    text, marks = _marked_text(matrix.astype(float), marks, ".1f")
    sns.heatmap(matrix, annot=text, fmt="", cmap="viridis", cbar_kws={"label": "test score x100"}, ax=ax)
    ax.set_xlabel("target task" + (f"\n{MARK_CAPTION}" if _hatch(ax, marks) else ""))
    ax.set_ylabel("model")
    ax.set_title("Scores: each model fine-tuned on each target (mean over seeds)")
    return save(fig, path)


KIND_NAMES = {"distilled": "distilled student", "undistilled": "undistilled twin", "stilts": "STILTs",
              "teacher": "teacher's pretrained model"}  # fmt: skip


def speed_points(ft: pd.DataFrame, frame: pd.DataFrame) -> pd.DataFrame:
    """Each model's mean over the target set most models were scored on (a model scored on more is drawn over that
    set), against its measured inference speed (examples per second, batch 32 x 128 tokens, measured in its
    distillation run on this machine): a control is as fast as the student whose architecture it has; the teacher's
    model as the teacher."""
    dist = frame[frame["stage"] == "distill"] if "stage" in frame else frame.iloc[0:0]
    if dist.empty or "m_student_inference_s" not in dist:
        return pd.DataFrame()
    targets = ft.groupby("variant")["target"].agg(frozenset)
    common = targets.value_counts().index[0]  # the target set most models have: like with like, over it alone
    rows = []
    covers = targets[[common <= t for t in targets]].index  # a twin also scored on another target is drawn too
    for variant, runs in ft[ft["variant"].isin(covers) & ft["target"].isin(common)].groupby("variant"):
        kind = str(runs["student"].iloc[0])
        arch = str(runs["student_arch"].iloc[0]) if kind != "teacher" else None
        teacher = str(runs["teacher_model"].iloc[0])
        own = dist[dist["run_id"].isin(runs.get("m_distill_run", pd.Series(dtype=object)))]
        same = own if not own.empty else dist[(dist["student_arch"] == arch) & (dist["teacher_model"] == teacher)]
        same = same if not same.empty else dist[dist["student_arch"] == arch]
        if kind == "teacher":
            seconds = dist[dist["teacher_model"] == teacher]["m_teacher_inference_s"]
        else:
            seconds = same["m_student_inference_s"]
        if seconds.empty or kind not in KIND_NAMES:
            continue
        per_target = runs.groupby("target")["score"].mean()
        rows.append({"variant": variant, "kind": KIND_NAMES[kind], "speed": 32 / float(seconds.median()),
                     "score": per_target.mean()})  # fmt: skip
    return pd.DataFrame(rows)


def speed_figure(points: pd.DataFrame, path: Path) -> Path:
    """Each point numbered on the plot and named in full in the legend below it (long labels never overlap)."""
    points = points.sort_values(["speed", "score"], ascending=[True, False]).reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(9, 4.2 + 0.22 * len(points)))
    markers = dict(zip(KIND_NAMES.values(), "o^sD"))
    colors = dict(zip(KIND_NAMES.values(), sns.color_palette(n_colors=4)))
    for i, row in points.iterrows():
        ax.scatter(row["speed"], row["score"], marker=markers.get(row["kind"], "o"), color=colors.get(row["kind"]),
                   s=70, label=f"{i + 1}. {row['variant']} ({row['kind']})")  # fmt: skip
    _number_points(ax, points["speed"], points["score"])
    span = points["speed"].max() - points["speed"].min()
    ax.set_xlim(points["speed"].min() - 0.1 * span - 1, points["speed"].max() + 0.1 * span + 1)
    ax.set_xlabel("measured inference speed (examples/s, batch 32 x 128 tokens, this machine)")
    ax.set_ylabel("mean over the targets, test score x100")
    ax.set_title("Quality against speed: every student and control (marker: kind; number: the legend below)")
    ax.legend(loc="upper left", bbox_to_anchor=(0, -0.18), fontsize=7, frameon=False)
    return save(fig, path)


def _number_points(ax, xs: pd.Series, ys: pd.Series) -> None:
    """Number each point (1, 2, ... in order) beside it; points that nearly coincide (within 3% of either axis'
    span) get their numbers stacked, so that each stays readable."""
    xs, ys = list(xs), list(ys)
    drawn = [y for y in ys if y == y]  # NaN: not drawn
    xspan = (max(xs) - min(xs)) or 1.0
    yspan = (max(drawn) - min(drawn) if drawn else 0.0) or 1.0
    placed: list[tuple[float, float]] = []
    for i, (x, y) in enumerate(zip(xs, ys)):
        if x != x or y != y:  # NaN: not drawn
            continue
        near = sum(abs(x - px) < 0.03 * xspan and abs(y - py) < 0.03 * yspan for px, py in placed)
        ax.annotate(str(i + 1), (x, y), xytext=(6, 4 + 11 * near), textcoords="offset points", fontsize=9)
        placed.append((x, y))


def augmentation_figure(ft: pd.DataFrame, out: Path) -> list[Path]:
    dist = ft[ft["student"] == "distilled"] if not ft.empty else ft
    if not dist.empty:  # like with like: students whose source, architecture and recipe match, augmentation varies
        dist = dist[~dist["variant"].str.contains("=")]
        varied = dist.groupby(["source_task", "student_arch"])["augmentation"].transform("nunique") > 1
        dist = dist[varied]
    if dist.empty or dist["augmentation"].nunique() < 2:
        return []
    named = (
        dist["augmentation"].astype(str).replace({"-": "none (source inputs only)", "": "none (source inputs only)"})
    )
    dist = dist.assign(target_task=target_column(dist), augmentation=named)
    fig, ax = plt.subplots(figsize=(2.5 + 1.3 * dist["target_task"].nunique(), 4))
    sns.barplot(data=dist.sort_values(["target_task", "augmentation"]), x="target_task", y="score",
                hue="augmentation", errorbar="sd", ax=ax)  # fmt: skip
    ax.set_xlabel("target task")
    ax.set_ylabel("test score x100 (mean; bars: sd over seeds)")
    ax.set_title("Augmentation: the transfer set's extra text")
    ax.legend(title="augmentation", fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))  # never over a bar
    return [save(fig, out / "augmentation.png")]


def architectures_figure(arch: pd.DataFrame, path: Path) -> Path:
    """Each row of the architectures table (a distillation run and one fine-tuning variant of its student): measured
    speedup against its mean over targets, named by that variant (the tables' label: source, teacher and recipe)
    and its run."""
    variants = arch["finetune_variant"] if "finetune_variant" in arch else pd.Series(None, index=arch.index)
    longest = max([len(str(v)) for v in variants.dropna()] or [60])
    fig, ax = plt.subplots(figsize=(max(8, 0.075 * longest), 4 + 0.22 * len(arch)))  # as wide as the legend
    for i, row in arch.reset_index(drop=True).iterrows():
        extra = "source only" if str(row["augmentation"]) in ("-", "", "nan") else f"+{row['augmentation']}"
        variant = row.get("finetune_variant")
        variant = variant if isinstance(variant, str) else f"{row['arch']} from {row['source']} ({extra})"
        name = f"{variant}, run {row['distill_run']}"
        ax.scatter(row["speedup_measured"], row["mean_over_targets"], s=50, label=f"{i + 1}. {name}")
    _number_points(
        ax, arch["speedup_measured"].reset_index(drop=True), arch["mean_over_targets"].reset_index(drop=True)
    )
    ax.set_xlabel("measured speedup over its teacher (batch 32 x 128 tokens, this machine)")
    ax.set_ylabel("mean over targets, test score x100")
    ax.set_title("Students: quality against measured speedup")
    ax.legend(loc="upper left", bbox_to_anchor=(0, -0.18), fontsize=7, frameon=False)
    return save(fig, path)


def scaling_figure(table: pd.DataFrame, path: Path) -> Path:
    """A panel per recipe: its distilled students' mean over the non-source targets (95% t interval over seeds)
    against the transfer set's rows, its twin (dashed) and STILTs (dotted) as labelled horizontal lines; a last
    panel: each recipe's source retention on dev."""
    recipes = list(dict.fromkeys(table["recipe"]))
    colors = dict(zip(recipes, sns.color_palette(n_colors=max(3, len(recipes)))))
    fig, axes = plt.subplots(1, len(recipes) + 1, figsize=(5.2 * (len(recipes) + 1), 5.4))
    for ax, recipe in zip(axes, recipes):
        rows, color = table[table["recipe"] == recipe], colors[recipe]
        x = rows["transfer_rows"]
        err = [(rows["mean"] - rows["ci95_low"]).fillna(0), (rows["ci95_high"] - rows["mean"]).fillna(0)]
        ax.errorbar(x, rows["mean"], yerr=err, color=color, marker="o", capsize=4, label="distilled student")
        failed = did_not_learn(rows, "learnt")  # a size whose model did not learn: its number marked
        for xi, yi, mark in zip(x, rows["mean"], failed.map({True: NOT_LEARNT, False: ""})):
            ax.annotate(f"{yi:.1f}{mark}", (xi, yi), xytext=(7, 5), textcoords="offset points", fontsize=8, color=color,
                        bbox={"boxstyle": "round,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.8})  # fmt: skip
        controls = (
            ("undistilled_mean", (0, (6, 3)), "twin", "0.3"),
            ("stilts_mean", (3, (1, 3)), "STILTs", "tab:purple"),
        )
        for column, style, label, line_color in controls:  # dashes and dots offset: equal levels both stay visible
            level = rows[column].dropna()
            if len(level):
                ax.axhline(level.iloc[0], color=line_color, linestyle=style, linewidth=1.4,
                           label=f"{label} {level.iloc[0]:.1f}")  # fmt: skip
        _size_axis(ax, x)
        ax.set_ylabel("mean over non-source targets, test x100")
        ax.set_title(recipe.replace(" -> ", " ->\n", 1), fontsize=10)
        ax.legend(loc="lower left", fontsize=8)
    ax = axes[-1]
    corrected = "source_dev_retention_vs_chance" in table and table["source_dev_retention_vs_chance"].notna().any()
    column = "source_dev_retention_vs_chance" if corrected else "source_dev_retention"  # runs made before the check
    for recipe in recipes:
        rows = table[table["recipe"] == recipe]
        ax.plot(rows["transfer_rows"], 100 * rows[column], color=colors[recipe], marker="o",
                label=recipe.split(",")[0])  # fmt: skip
    if corrected:
        ax.axhline(0, color="grey", linestyle=":", linewidth=1.2, label="chance (a constant prediction)")
    _size_axis(ax, table["transfer_rows"])
    ax.set_ylabel("teacher's gain over chance kept, %" if corrected else "source dev score, % of the teacher's")
    ax.set_title("Source retention (dev)", fontsize=10)
    ax.legend(loc="best", fontsize=7)
    seeds = sorted(set(table["seeds"]))
    over = f"{seeds[0]} seeds" if len(seeds) == 1 else "fine-tuning seeds"
    title = f"Scaling: distilled students as the transfer set grows (error bars: 95% t interval over {over})"
    if did_not_learn(table, "learnt").any():
        title += f"\n{NOT_LEARNT.strip()}: a size whose model did not learn (scaling.md): not a result"
    fig.suptitle(title)
    return save(fig, path)


def _size_axis(ax, sizes: pd.Series) -> None:
    ax.set_xscale("log")
    ticks = []
    for size in sorted(set(sizes)):  # sizes within 10% of each other (7,907 and 8,032 rows) share one tick
        if not ticks or size > 1.1 * ticks[-1]:
            ticks.append(size)
    ax.set_xticks(ticks)
    ax.set_xticklabels([f"{v / 1000:.1f}k" for v in ticks], rotation=45)
    ax.minorticks_off()
    ax.set_xlabel("transfer set rows (source inputs + unlabelled text)")
