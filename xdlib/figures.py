"""The report's figures: the transfer heatmap, augmentation bars and the architecture scatter (matplotlib, seaborn).

Pure functions of the tables `xdlib.report` builds; each is written without a version stamp, so a rerun is
byte-identical, and with its labels whole (`bbox_inches="tight"`).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display, before pyplot is imported
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from .comparison import target_column  # noqa: E402


def save(fig, path: Path) -> Path:
    """Write a figure without a version stamp (so reruns are byte-identical) and close it."""
    fig.tight_layout()
    fig.savefig(path, dpi=120, metadata={"Software": None}, bbox_inches="tight")  # long row labels stay whole
    plt.close(fig)
    return path


def figures(matrix: pd.DataFrame, ft: pd.DataFrame, arch: pd.DataFrame, out: Path) -> list[Path]:
    written = []
    if not matrix.empty:
        labels = max((len(str(label)) for label in matrix.index), default=0)  # room for the row labels, whole
        fig, ax = plt.subplots(figsize=(1.6 + 1.1 * matrix.shape[1] + 0.075 * labels, 1.0 + 0.45 * matrix.shape[0]))
        sns.heatmap(matrix, annot=True, fmt=".1f", cmap="viridis", cbar_kws={"label": "test score x100"}, ax=ax)
        ax.set_xlabel("target task")
        ax.set_ylabel("")
        ax.set_title("Transfer: each model fine-tuned on each target")
        written.append(save(fig, out / "transfer_matrix.png"))
    dist = ft[ft["student"] == "distilled"] if not ft.empty else ft
    if not dist.empty:  # like with like: students whose source, architecture and recipe match, augmentation varies
        dist = dist[~dist["variant"].str.contains("=")]
        varied = dist.groupby(["source_task", "student_arch"])["augmentation"].transform("nunique") > 1
        dist = dist[varied]
    if not dist.empty and dist["augmentation"].nunique() > 1:
        dist = dist.assign(target_task=target_column(dist))
        fig, ax = plt.subplots(figsize=(1.5 + 1.3 * dist["target_task"].nunique(), 3.5))
        sns.barplot(data=dist.sort_values(["target_task", "augmentation"]), x="target_task", y="score",
                    hue="augmentation", errorbar="sd", ax=ax)  # fmt: skip
        ax.set_ylabel("test score x100 (mean, bars: sd over seeds)")
        ax.set_title("Augmentation resources in the transfer set")
        written.append(save(fig, out / "augmentation.png"))
    if not arch.empty:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for _, row in arch.iterrows():
            ax.scatter(row["parameters_M"], row["mean_over_targets"])
            ax.annotate(
                f"{row['arch']} {row['speedup_measured']:.1f}x", (row["parameters_M"], row["mean_over_targets"])
            )
        ax.set_xlabel("student parameters (M)")
        ax.set_ylabel("mean over targets, test score x100")
        ax.set_title("Architectures (label: measured speedup)")
        written.append(save(fig, out / "architectures.png"))
    return written
