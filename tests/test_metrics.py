"""Every metric against values worked out by hand; the metric registry and what it tells tasks."""

import math

import numpy as np
import pytest

from xdlib import metrics
from xdlib.registry import UnknownNameError
from xdlib.tasks import KINDS, DataError, Task, check_local_tasks, get_task


def test_classification_binary_by_hand():
    # preds 1 1 0 0 1, labels 1 0 0 1 1: TP=2 FP=1 FN=1 TN=1
    out = metrics.classification(np.array([1, 1, 0, 0, 1]), np.array([1, 0, 0, 1, 1]), 2)
    assert out["accuracy"] == pytest.approx(3 / 5)
    assert out["f1"] == pytest.approx(2 / 3)  # P = R = 2/3
    # MCC = (TP*TN - FP*FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = (2 - 1) / sqrt(3*3*2*2) = 1/6
    assert out["mcc"] == pytest.approx(1 / 6)


def test_regression_by_hand():
    out = metrics.regression(np.array([1.0, 2.0, 3.0]), np.array([2.0, 4.0, 6.5]))
    # pearson of (1,2,3) and (2,4,6.5): dx = (-1,0,1), dy = (-2.1667, -0.1667, 2.3333)
    dy = np.array([2.0, 4.0, 6.5]) - 12.5 / 3
    expected = (-1 * dy[0] + 1 * dy[2]) / (math.sqrt(2) * math.sqrt((dy**2).sum()))
    assert out["pearson"] == pytest.approx(expected)
    assert out["spearman"] == pytest.approx(1.0)
    assert out["mse"] == pytest.approx((1 + 4 + 12.25) / 3)


def test_bio_span_f1_by_hand():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    pred = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "O"]]
    # gold spans: PER(0-1), LOC(3), ORG(0); predicted: PER(0-1) ok, ORG(3) wrong, ORG(0) ok -> P = R = 2/3
    out = metrics.span_f1(pred, gold)
    assert out["precision"] == pytest.approx(2 / 3)
    assert out["recall"] == pytest.approx(2 / 3)
    assert out["f1"] == pytest.approx(2 / 3)
    assert out["accuracy"] == pytest.approx(5 / 6)
    # a lone I- tag starts an entity in CoNLL mode; a split entity is two wrong spans
    split = metrics.span_f1([["B-PER", "B-PER"]], [["B-PER", "I-PER"]])
    assert split["f1"] == 0.0


def test_squad_normalisation_and_scores_by_hand():
    assert metrics.normalize_answer("The  Eiffel-Tower!") == "eiffeltower"
    assert metrics.normalize_answer("an apple a day") == "apple day"
    exact, f1 = metrics.squad_scores(["Saint Bernadette Soubirous"], "Bernadette Soubirous")
    assert exact == 0.0
    assert f1 == pytest.approx(2 * (1.0 * 2 / 3) / (1.0 + 2 / 3))  # P = 2/2, R = 2/3 -> 0.8
    assert metrics.squad_scores(["the cat", "a dog"], "dog") == (1.0, 1.0)  # max over gold answers


def test_squad_v2_has_and_no_answer_by_hand():
    refs = [["Denver Broncos"], [], ["1858"], []]
    preds = ["Denver Broncos", "", "in 1858", "Paris"]
    # q1 exact; q2 no-answer correctly empty (1/1); q3 EM 0, F1: P=1/2 R=1 -> 2/3; q4 answered a NoAns -> 0
    out = metrics.squad_v2(preds, refs)
    assert out["exact"] == pytest.approx(100 * 2 / 4)
    assert out["f1"] == pytest.approx(100 * (1 + 1 + 2 / 3 + 0) / 4)
    assert out["HasAns_exact"] == pytest.approx(50.0)
    assert out["HasAns_f1"] == pytest.approx(100 * (1 + 2 / 3) / 2)
    assert out["NoAns_exact"] == pytest.approx(50.0)
    assert out["NoAns_f1"] == pytest.approx(50.0)
    assert (out["HasAns_total"], out["NoAns_total"]) == (2, 2)


def test_best_null_threshold_by_hand():
    refs = [["a b"], [], ["c"], []]
    answers = ["a b", "x", "c", "y"]  # right for the answerable, wrong for the no-answer ones
    margins = [-2.0, 3.0, -1.0, 1.0]  # no-answer questions have the higher null margins
    t = metrics.best_null_threshold(answers, margins, refs)
    # any threshold in [-1, 1) makes q2, q4 empty and keeps q1, q3: F1 = 4/4
    assert -1.0 <= t < 1.0
    final = ["" if m > t else a for a, m in zip(answers, margins)]
    assert metrics.squad_v2(final, refs)["f1"] == pytest.approx(100.0)


def test_compute_dispatches_on_task_kind():
    assert metrics.compute(get_task("toy-ner"), [[0, 1]], [[0, 1]])["f1"] == 1.0
    assert metrics.compute(get_task("toy-qa"), ["good"], [["good"]])["exact"] == 100.0
    assert metrics.compute(get_task("toy-regression"), [1.0, 2.0, 3.0], [1.0, 2.0, 3.0])["pearson"] == pytest.approx(1)


def test_registered_metrics_are_what_compute_gives_for_their_kinds():
    given = {
        "single": metrics.compute(get_task("toy-sentiment"), [0, 1], [0, 1]),
        "pair": metrics.compute(get_task("toy-pair"), [0, 1], [0, 1]),
        "regression": metrics.compute(get_task("toy-regression"), [1.0, 2.0], [1.0, 3.0]),
        "token": metrics.compute(get_task("toy-ner"), [[0, 1]], [[0, 1]]),
        "qa": metrics.compute(get_task("toy-qa"), ["good", ""], [["good"], []]),
    }
    assert set(given) == set(KINDS)
    for kind, scores in given.items():
        assert metrics.metric_names(kind) and set(metrics.metric_names(kind)) <= set(scores), kind
    assert not metrics.METRICS.get("mse").higher_is_better
    assert all(metrics.METRICS.get(name).higher_is_better for name in metrics.METRICS if name != "mse")


def test_a_metrics_direction_reaches_its_task():
    def task(**kw):
        return Task("t", "regression", "generated", dict, **kw)

    assert task(metric="pearson").higher_is_better is True
    assert task(metric="mse").higher_is_better is False
    assert task(metric="mse", higher_is_better=True).higher_is_better is True  # explicit wins
    assert all(get_task(name).higher_is_better is True for name in ("toy-sentiment", "toy-regression", "toy-qa"))
    mine = get_task("mine", {"mine": {"kind": "regression", "train": "x.csv", "metric": "mse"}})  # a local task
    assert mine.metric == "mse" and mine.higher_is_better is False


def test_unknown_metrics_name_the_known_ones():
    with pytest.raises(UnknownNameError, match=r"unknown metric 'bleu'; known: .*accuracy.*mse"):
        metrics.METRICS.get("bleu")
    with pytest.raises(DataError, match=r"metric 'mse' is not allowed; allowed: a metric of single tasks: accuracy"):
        Task("t", "single", "generated", dict, ("a", "b"), "mse")
    problem = check_local_tasks({"mine": {"kind": "single", "train": "x.csv", "metric": "pearson"}})
    assert problem == (
        "local_tasks.mine: metric 'pearson' is not allowed; allowed: a metric of single tasks: accuracy, f1, mcc"
    )
