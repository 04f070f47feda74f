"""The transfer table against hand-computed values: non-source means, spreads over seeds, paired differences."""

import math

import pandas as pd
import pytest

from xdlib.comparison import transfer_markdown, transfer_table


def _runs(variant, student, scores, source="src", seeds=(0,)):
    rows = []
    for target, values in scores.items():
        for seed, score in zip(seeds, values):
            rows.append({"variant": variant, "student": student, "source_task": source, "target_task": target,
                         "score": score, "seed": 0, "finetune_seed": seed, "student_arch": "l3-h384",
                         "student_init": "m", "student_embeddings": "init"})  # fmt: skip
    return rows


def test_transfer_table_by_hand():
    ft = pd.DataFrame(
        _runs("distilled", "distilled", {"src": [90, 90], "a": [60, 64], "b": [70, 74]}, seeds=(0, 1))
        + _runs("twin", "undistilled", {"src": [80, 80], "a": [58, 58], "b": [69, 71]}, seeds=(0, 1))
        + _runs("stilts", "stilts", {"a": [61], "b": [66]})
    )
    table = transfer_table(ft).set_index("variant")
    d = table.loc["distilled"]
    assert d["targets"] == 2  # the source target is left out
    assert d["mean"] == pytest.approx((62 + 72) / 2)  # target means 62 and 72
    assert d["sd_over_seeds"] == pytest.approx(pd.Series([65.0, 69.0]).std())  # per-seed means 65, 69
    assert d["undistilled_mean"] == pytest.approx((58 + 70) / 2) and d["undistilled_seeds"] == 2
    # paired by (target, seed), each seed's difference averaged over the targets: seed 0 (2 + 1) / 2, seed 1 (6 + 3) / 2
    by_seed = pd.Series([1.5, 4.5])
    assert d["vs_undistilled"] == pytest.approx(3.0)
    assert (d["vs_undistilled_seeds"], d["vs_undistilled_targets"]) == (2, 2)
    half = 12.706204736174698 * by_seed.std() / math.sqrt(2)  # t(0.975, 1) * sd / sqrt(2): over seeds, S - 1 df
    assert (d["vs_undistilled_ci95_low"], d["vs_undistilled_ci95_high"]) == pytest.approx((3 - half, 3 + half))
    assert d["vs_undistilled_spread_between_targets"] == pytest.approx(pd.Series([4.0, 2.0]).std())
    assert d["vs_undistilled_per_target"] == "a +4.0, b +2.0"
    assert d["vs_stilts"] == pytest.approx(((60 - 61) + (70 - 66)) / 2)  # the seed the two share: 0
    assert math.isnan(d["vs_stilts_ci95_low"]) and d["vs_stilts_seeds"] == 1  # one seed: no interval
    assert math.isnan(d["stilts_sd_over_seeds"])  # one seed: no spread claimed
    s = table.loc["stilts"]
    assert math.isnan(s["vs_stilts"]) and s["vs_undistilled"] == pytest.approx(((61 - 58) + (66 - 69)) / 2)
    md = transfer_markdown(transfer_table(ft))
    assert "67.0 ± 2.8 (2 seeds)" in md and f"+3.0 [{3 - half:+.1f}, {3 + half:+.1f}] (n=2 seeds, 2 targets)" in md
    assert "+1.5 (1 seed, 2 targets)" in md and "63.5 (1 seed)" in md  # vs STILTs; STILTs' own mean
    assert md.count("no matched control") >= 2  # no teacher's model in this store


def test_missing_targets_are_not_averaged():
    ft = pd.DataFrame(
        _runs("distilled", "distilled", {"a": [60], "b": [70]}) + _runs("twin", "undistilled", {"a": [50]})
    )
    d = transfer_table(ft).set_index("variant").loc["distilled"]
    assert math.isnan(d["undistilled_mean"]) and math.isnan(d["vs_undistilled"])


def test_a_multi_source_teachers_tasks_are_not_transfer_targets():
    """A teacher fine-tuned on `a` before the source: `a` is a source of that student too (as the report's
    runs table writes the list: joined with '+', '-' when empty)."""
    rows = _runs("two sources", "distilled", {"a": [80], "b": [70], "c": [60]})
    rows += _runs("one source", "distilled", {"a": [50], "b": [70], "c": [60]})
    ft = pd.DataFrame(rows).assign(teacher_sources=["a"] * 3 + ["-"] * 3)
    table = transfer_table(ft).set_index("variant")
    assert table.loc["two sources", "targets"] == 2 and table.loc["two sources", "mean"] == pytest.approx(65)
    assert table.loc["one source", "targets"] == 3 and table.loc["one source", "mean"] == pytest.approx(60)


def test_a_distilled_student_of_another_teacher_is_its_own_variant():
    """Teacher settings (model, sources) departing from the common one name the variant, like distill settings."""
    from xdlib.report import finetune_scores

    base = {"stage": "finetune", "student": "distilled", "source_task": "src", "student_arch": "l3-h384",
            "augmentation": "-", "teacher_sources": "-", "distill_lr": 5e-5, "m_main_metric": "accuracy",
            "m_task_kind": "single", "m_test_accuracy": 0.5, "teacher_model": "m"}  # fmt: skip
    frame = pd.DataFrame([base | {"finetune_seed": 0}, base | {"finetune_seed": 1}, base | {"teacher_model": "other"},
                          base | {"teacher_sources": "a"}])  # fmt: skip
    labels = list(finetune_scores(frame)["variant"])
    assert labels[0] == labels[1] == "l3-h384 distilled from src (source only)"
    assert labels[2] == "l3-h384 distilled from src (source only, teacher_model=other)"
    assert labels[3] == "l3-h384 distilled from src (source only, teacher_sources=a)"


def test_a_run_that_only_kept_its_model_is_counted_once():
    """save_model: true repeats a run (params/deploy.yaml): the copy is left out where the run without the model is
    there, kept where it is the only one, and any other difference keeps both."""
    from xdlib.report import without_copies

    base = {"stage": "finetune", "run_id": "a", "target_task": "t", "student": "distilled", "finetune_seed": 0,
            "study": "default version 5", "target_max_train_samples": float("nan")}  # fmt: skip
    frame = pd.DataFrame([
        base,
        base | {"run_id": "a-kept", "save_model": True, "study": "deploy version 1"},  # a copy: left out
        base | {"run_id": "b-kept", "target_task": "u", "save_model": True},  # no twin: counted
        base | {"run_id": "c-kept", "finetune_seed": 1, "save_model": True},  # another seed: counted
        base | {"run_id": "d", "stage": "distill"},
    ])  # fmt: skip
    assert list(without_copies(frame)["run_id"]) == ["a", "b-kept", "c-kept", "d"]
    plain = frame[~frame["run_id"].str.endswith("kept")]
    assert "save_model" not in without_copies(plain) and list(without_copies(plain)["run_id"]) == ["a", "d"]
    assert without_copies(frame.drop(columns="save_model")).equals(frame.drop(columns="save_model"))


def test_a_student_whose_distillation_did_not_learn_is_marked():
    """The distill run (`upstream_learnt`) at chance marks the row, though every fine-tuning learnt; fine-tunings
    made before the learning check leave the twin unknown (no mark, learnt empty), never a failure."""
    ft = pd.DataFrame(
        _runs("distilled", "distilled", {"a": [60, 64], "b": [70, 74]}, seeds=(0, 1))
        + _runs("twin", "undistilled", {"a": [58, 58], "b": [69, 71]}, seeds=(0, 1))
    )
    distilled = ft["student"] == "distilled"
    ft.loc[distilled, "m_learnt"] = True
    ft["upstream_learnt"] = ft["student"].map({"distilled": False})
    table = transfer_table(ft).set_index("variant")
    assert not table.loc["distilled", "learnt"] and pd.isna(table.loc["distilled", "undistilled_learnt"])
    md = transfer_markdown(transfer_table(ft))
    (row,) = [line for line in md.splitlines() if line.startswith("| distilled")]
    assert row.startswith("| distilled †") and "did not learn" in md.split("\n\n")[-1]
    ft["upstream_learnt"] = ft["student"].map({"distilled": True})
    assert transfer_table(ft).set_index("variant").loc["distilled", "learnt"]
    assert "†" not in transfer_markdown(transfer_table(ft))
