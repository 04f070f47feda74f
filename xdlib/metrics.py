"""Task metrics. `compute(task, predictions, references)` returns every metric of the task's kind; the task's
`metric` names the main one, which must be registered here (`METRICS`) for the task's kind.

GLUE metrics as in the GLUE paper (accuracy, F1 of the positive class, Matthews correlation, Pearson/Spearman);
entity-level span F1 for token tasks via seqeval (CoNLL-style, the standard for NER).

Adding a metric: compute it in the function of its kinds below, and declare it with `register_metric` (its name,
whether higher is better, the kinds whose output holds it). A task's `higher_is_better` comes from here.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from dataclasses import dataclass

import numpy as np

from .registry import Registry

# scipy, sklearn and seqeval (about 1.5 s together) are imported in the functions that use them: the task registry
# reads `METRICS`, and the config checks, which look tasks up, must stay fast.


@dataclass(frozen=True)
class Metric:
    name: str
    higher_is_better: bool
    kinds: tuple[str, ...]  # the task kinds whose `compute` output holds it
    help: str = ""


METRICS: Registry[Metric] = Registry("metric")


def register_metric(name: str, *, higher_is_better: bool, kinds: tuple[str, ...], help: str = "") -> Metric:
    return METRICS.add(name, Metric(name, higher_is_better, tuple(kinds), help))


CLASSES, SPANS = ("single", "pair"), ("token",)
register_metric("accuracy", higher_is_better=True, kinds=(*CLASSES, *SPANS), help="share right (tokens: tags)")
register_metric("f1", higher_is_better=True, kinds=(*CLASSES, *SPANS, "qa"), help="positive-class/macro, entity, SQuAD")
register_metric("mcc", higher_is_better=True, kinds=CLASSES, help="Matthews correlation")
register_metric("precision", higher_is_better=True, kinds=SPANS, help="entity-level precision")
register_metric("recall", higher_is_better=True, kinds=SPANS, help="entity-level recall")
register_metric("pearson", higher_is_better=True, kinds=("regression",), help="Pearson correlation")
register_metric("spearman", higher_is_better=True, kinds=("regression",), help="Spearman rank correlation")
register_metric("mse", higher_is_better=False, kinds=("regression",), help="mean squared error")
register_metric("exact", higher_is_better=True, kinds=("qa",), help="SQuAD exact match, %")
for _part in ("HasAns", "NoAns"):  # the questions with / without an answer
    register_metric(f"{_part}_exact", higher_is_better=True, kinds=("qa",), help=f"exact match on {_part}, %")
    register_metric(f"{_part}_f1", higher_is_better=True, kinds=("qa",), help=f"SQuAD F1 on {_part}, %")


def metric_names(kind: str) -> list[str]:
    """The registered metrics `compute` gives for tasks of `kind`."""
    return [name for name in METRICS if kind in METRICS.get(name).kinds]


def metric_problem(name: str, kind: str) -> str | None:
    """None if `name` is a registered metric of `kind` tasks, else what is allowed."""
    return None if name in metric_names(kind) else f"a metric of {kind} tasks: {', '.join(metric_names(kind))}"


def classification(preds: np.ndarray, labels: np.ndarray, num_labels: int) -> dict[str, float]:
    from sklearn.metrics import f1_score, matthews_corrcoef  # heavy: see the note at the top

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
    from scipy.stats import pearsonr, spearmanr  # heavy: see the note at the top

    if np.std(preds) == 0 or np.std(labels) == 0:
        return {"pearson": 0.0, "spearman": 0.0, "mse": float(np.mean((preds - labels) ** 2))}
    return {
        "pearson": float(pearsonr(preds, labels)[0]),
        "spearman": float(spearmanr(preds, labels)[0]),
        "mse": float(np.mean((preds - labels) ** 2)),
    }


def span_f1(pred_tags: list[list[str]], gold_tags: list[list[str]]) -> dict[str, float]:
    """Entity-level precision/recall/F1 (seqeval, default CoNLL mode) plus token accuracy."""
    from seqeval.metrics import f1_score as seq_f1  # heavy: see the note at the top
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
    """predictions/references: class ids or floats per example; lists of tag ids per word for token tasks;
    answer strings / lists of gold answer strings for qa tasks."""
    if task.kind == "qa":
        return squad_v2(predictions, references)
    if task.kind == "token":
        names = task.labels
        return span_f1([[names[i] for i in p] for p in predictions], [[names[i] for i in r] for r in references])
    if task.kind == "regression":
        return regression(np.asarray(predictions, dtype=float), np.asarray(references, dtype=float))
    return classification(np.asarray(predictions), np.asarray(references), task.num_labels)


# ---- SQuAD v2 (the official evaluation script's normalisation and scoring) ------------------------------------


def normalize_answer(text: str) -> str:
    """Lower case, drop punctuation and the articles a/an/the, collapse whitespace (official SQuAD rule)."""
    text = "".join(ch for ch in text.lower() if ch not in string.punctuation)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def _squad_f1(gold: str, pred: str) -> float:
    gold_toks, pred_toks = normalize_answer(gold).split(), normalize_answer(pred).split()
    if not gold_toks or not pred_toks:  # a no-answer on either side: 1 if both are empty, else 0
        return float(gold_toks == pred_toks)
    common = sum((Counter(gold_toks) & Counter(pred_toks)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred_toks), common / len(gold_toks)
    return 2 * precision * recall / (precision + recall)


def squad_scores(gold_answers: list[str], pred: str) -> tuple[float, float]:
    """(exact, f1) of one prediction against its gold answers (max over them); no gold answers = ['']."""
    golds = [g for g in gold_answers if normalize_answer(g)] or [""]
    exact = max(float(normalize_answer(g) == normalize_answer(pred)) for g in golds)
    return exact, max(_squad_f1(g, pred) for g in golds)


def squad_v2(predictions: list[str], references: list[list[str]]) -> dict[str, float]:
    """Exact match and F1 (in %, as the official script), overall and split into HasAns / NoAns questions."""
    scores = [squad_scores(refs, pred) for pred, refs in zip(predictions, references)]
    has = [bool([g for g in refs if normalize_answer(g)]) for refs in references]
    out = {}
    for prefix, keep in (("", [True] * len(has)), ("HasAns_", has), ("NoAns_", [not h for h in has])):
        chosen = [s for s, k in zip(scores, keep) if k]
        out[prefix + "exact"] = 100.0 * float(np.mean([s[0] for s in chosen])) if chosen else math.nan
        out[prefix + "f1"] = 100.0 * float(np.mean([s[1] for s in chosen])) if chosen else math.nan
        out[prefix + "total"] = len(chosen)
    return out


def best_null_threshold(answers: list[str], null_margin: list[float], references: list[list[str]]) -> float:
    """The no-answer threshold that maximises F1: predict no answer when `null_margin` (null score minus the best
    span score) exceeds it. Same sweep as the official script's best_f1_thresh, chosen on dev only."""
    f1_answer = [squad_scores(refs, a)[1] for a, refs in zip(answers, references)]
    f1_empty = [squad_scores(refs, "")[1] for refs in references]
    score = best = sum(f1_answer)  # threshold above every margin: every question answered ...
    best_threshold = max(null_margin) + 1.0 if null_margin else 0.0
    for i in sorted(range(len(answers)), key=lambda i: -null_margin[i]):  # ... lower it: highest margins go empty
        score += f1_empty[i] - f1_answer[i]
        if score > best:
            best, best_threshold = score, null_margin[i] - 1e-6
    return best_threshold


def constant_baseline(task, rows: list[dict]) -> float:
    """The best score a constant prediction gets on `rows` in the task's main metric ("chance"): the best single
    class for classification, 0 for correlations and entity F1 (all O), the labels' variance for mse (predicting
    their mean), answering nothing for QA."""
    if task.kind == "qa":
        return squad_v2([""] * len(rows), [[a["text"] for a in r.get("answers") or []] for r in rows])[task.metric]
    if task.metric == "mse":
        return float(np.var(np.asarray([r["label"] for r in rows], dtype=np.float64)))
    if task.kind == "token" and task.metric == "accuracy":  # every word tagged with the most common tag
        tags = np.concatenate([np.asarray(r["label"]) for r in rows]) if rows else np.zeros(0)
        return float(np.bincount(tags).max() / len(tags)) if len(tags) else 0.0
    if task.kind in ("regression", "token"):
        return 0.0
    labels = np.asarray([r["label"] for r in rows])
    return max(
        classification(np.full_like(labels, c), labels, task.num_labels)[task.metric] for c in range(task.num_labels)
    )


# How far past the best constant prediction a dev score must be for a model to count as having learnt, in the
# metric's own units: 2 points of a share (accuracy, F1), 0.05 of a correlation, 2 points of a percentage (QA),
# 5% of the constant's mean squared error. A floor, not a significance test: on 300 dev rows one standard error
# of an accuracy near 0.6 is about 2.8 points, and a run's dev score is the best of several evaluations.
LEARNING_MARGINS = {"accuracy": 0.02, "f1": 0.02, "mcc": 0.05, "pearson": 0.05, "spearman": 0.05}
QA_MARGIN = 2.0
MSE_MARGIN = 0.05  # a share of the constant's error


def learning_margin(task, constant: float) -> float:
    if task.kind == "qa":
        return QA_MARGIN
    if task.metric == "mse":
        return MSE_MARGIN * constant
    return LEARNING_MARGINS.get(task.metric, 0.02)


def learning_check(task, dev_score: float | None, dev_rows: list[dict]) -> dict:
    """Whether a model learnt its task: its dev score against the best constant prediction on the same rows, by the
    metric's margin (`LEARNING_MARGINS`). Recorded in every run's metrics.json; a table marks a model that did not."""
    constant = constant_baseline(task, dev_rows) if dev_rows else None
    if constant is None or dev_score is None:
        return {"dev_constant": constant, "learning_margin": None, "learnt": None}
    margin = learning_margin(task, constant)
    learnt = dev_score >= constant + margin if task.higher_is_better else dev_score <= constant - margin
    return {"dev_constant": constant, "learning_margin": margin, "learnt": bool(learnt)}


def chance_corrected_retention(
    student: float | None, teacher: float | None, constant: float | None, higher_is_better: bool = True
) -> float | None:
    """(student - constant) / (teacher - constant): the share of what the teacher learnt beyond the best constant
    prediction that the student kept (0 for a constant predictor, 1 for the teacher's score). None where the teacher
    did not beat the constant (nothing to keep)."""
    if None in (student, teacher, constant):
        return None
    if (teacher - constant) * (1 if higher_is_better else -1) <= 0:
        return None
    return (student - constant) / (teacher - constant)
