"""Task metrics. `compute(task, predictions, references)` returns every metric of the task's kind; the task's
`metric` names the main one.

GLUE metrics as in the GLUE paper (accuracy, F1 of the positive class, Matthews correlation, Pearson/Spearman);
entity-level span F1 for token tasks via seqeval (CoNLL-style, the standard for NER).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import f1_score, matthews_corrcoef


def classification(preds: np.ndarray, labels: np.ndarray, num_labels: int) -> dict[str, float]:
    out = {"accuracy": float((preds == labels).mean())}
    average = "binary" if num_labels == 2 else "macro"
    out["f1"] = float(
        f1_score(
            labels,
            preds,
            average=average,
            labels=list(range(num_labels)) if average == "macro" else None,
            zero_division=0,
        )
    )
    out["mcc"] = float(matthews_corrcoef(labels, preds))
    return out


def regression(preds: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    if np.std(preds) == 0 or np.std(labels) == 0:
        return {"pearson": 0.0, "spearman": 0.0, "mse": float(np.mean((preds - labels) ** 2))}
    return {
        "pearson": float(pearsonr(preds, labels)[0]),
        "spearman": float(spearmanr(preds, labels)[0]),
        "mse": float(np.mean((preds - labels) ** 2)),
    }


def span_f1(pred_tags: list[list[str]], gold_tags: list[list[str]]) -> dict[str, float]:
    """Entity-level precision/recall/F1 (seqeval, default CoNLL mode) plus token accuracy."""
    from seqeval.metrics import f1_score as seq_f1
    from seqeval.metrics import precision_score, recall_score

    flat_p = [t for s in pred_tags for t in s]
    flat_g = [t for s in gold_tags for t in s]
    return {
        "f1": float(seq_f1(gold_tags, pred_tags, zero_division=0)),
        "precision": float(precision_score(gold_tags, pred_tags, zero_division=0)),
        "recall": float(recall_score(gold_tags, pred_tags, zero_division=0)),
        "accuracy": float(np.mean([p == g for p, g in zip(flat_p, flat_g)])) if flat_g else math.nan,
    }


def compute(task, predictions, references) -> dict[str, float]:
    """predictions/references: class ids or floats per example; lists of tag ids per word for token tasks."""
    if task.kind == "token":
        names = task.labels
        return span_f1([[names[i] for i in p] for p in predictions], [[names[i] for i in r] for r in references])
    if task.kind == "regression":
        return regression(np.asarray(predictions, dtype=float), np.asarray(references, dtype=float))
    return classification(np.asarray(predictions), np.asarray(references), task.num_labels)
