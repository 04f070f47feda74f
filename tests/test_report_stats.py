"""The report's tables over synthetic run stores (config.yaml, metrics.json, provenance.json, DONE, as runs write
them): dev-score tables beside the test ones; a row is every run whose run id is the same but for the seeds; a
control is matched on every field of its own run id or named missing; differences are paired by (target, seed), each
seed's averaged over the targets, with a 95% t interval over the seeds; a one-seed row has no ±; a training is
counted once; the headline and architecture tables never average different students."""

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from xdlib import report
from xdlib.config import Config
from xdlib.headline import headline_table
from xdlib.report import architecture_table, build_report

BASE = Config().to_dict() | {"source_task": "src", "max_train_samples": 2000, "target_max_train_samples": 600,
                                     "augmentation": ["plot-sentences"], "progress": False}  # fmt: skip
MAIN = "l3-h384 distilled from src (+plot-sentences)"
TWIN = "l3-h384 undistilled"
STILTS = "l3-h384 STILTs (undistilled, fine-tuned on src first)"
T95_2 = 4.302652729911275  # Student t, 0.975 quantile, 2 degrees of freedom
INTERVAL = (
    "95% t interval over fine-tuning seeds (each seed's difference averaged over the targets; S−1 degrees of freedom)"
)


def _run(runs, stage, run_id, metrics, device="cpu", **config):
    path = runs / stage / run_id
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(yaml.safe_dump(BASE | config))
    common = {"stage": stage, "run_id": run_id, "main_metric": "accuracy", "task_kind": "single", "task_version": 1}
    (path / "metrics.json").write_text(json.dumps(common | metrics))
    (path / "provenance.json").write_text(json.dumps({"device": device, "seeds": {"seed": 0}}))
    (path / "DONE").write_text("")


def _source_runs(runs, rows=2000):
    """A teacher, its distillation and the STILTs model, on `rows` source rows."""
    score = {"test_accuracy": 0.8, "dev_accuracy": 0.82}
    _run(runs, "teacher", f"t{rows}", score, max_train_samples=rows)
    _run(runs, "distill", f"d{rows}", {"teacher_run": f"t{rows}", "test_accuracy": 0.76, "dev_accuracy": 0.79,
         "parameters": 1e7, "teacher_parameters": 2e7, "flops_ratio": 2.0, "teacher_test": 0.8, "retention": 0.95,
         "speedup": 2.0, "student_inference_s": 0.5, "teacher_inference_s": 1.0}, max_train_samples=rows)  # fmt: skip
    _run(runs, "stilts", f"s{rows}", score, max_train_samples=rows)


def _finetunes(runs, name, student, upstream, scores, seeds=(0,), dev=5.0, version=1, device="cpu", engine=None,
               **config):  # fmt: skip
    """One fine-tuning per target and seed; test scores as given (x100), dev scores `dev` points higher."""
    for target, values in scores.items():
        for seed, value in zip(seeds, values):
            metrics = {
                "student": student,
                "task": target,
                "task_version": version,
                "test_accuracy": value / 100,
                "dev_accuracy": (value + dev) / 100,
                "test_chance": 0.25,
                "parameters": 1e7,
                "upstream_run": upstream,
                "distill_run": upstream if student == "distilled" else None,
            }
            if engine is not None:
                metrics["engine_version"] = engine
            _run(runs, "finetune", f"{name}-{target}-{seed}-v{version}", metrics, device, student=student,
                 target_task=target, finetune_seed=seed, **config)  # fmt: skip


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("report")
    runs = tmp_path / "runs"
    _source_runs(runs, 2000)
    _source_runs(runs, 600)
    three = (0, 1, 2)
    _finetunes(runs, "main", "distilled", "d2000", {"ta": [60, 64, 62], "tb": [70, 71, 75]}, three)
    _finetunes(runs, "gpu", "distilled", "d2000", {"ta": [90], "tb": [90]}, device="cuda:0")  # bf16: not a seed
    _finetunes(runs, "lr", "distilled", "d2000", {"ta": [50], "tb": [50]}, finetune_lr=3e-4)
    _finetunes(runs, "rows600", "distilled", "d600", {"ta": [55], "tb": [65]}, max_train_samples=600)
    _finetunes(runs, "twin", "undistilled", None, {"ta": [58, 61, 60], "tb": [69, 73, 70]}, three)
    _finetunes(runs, "twin300", "undistilled", None, {"ta": [40], "tb": [40]}, target_max_train_samples=300)
    _finetunes(runs, "stilts", "stilts", "s2000", {"ta": [61, 62, 60], "tb": [70, 70, 71]}, three)
    _finetunes(runs, "teacher300", "teacher", None, {"ta": [80, 81], "tb": [85, 86]}, (0, 1),
               target_max_train_samples=300)  # fmt: skip
    with pytest.MonkeyPatch.context() as patch:  # the figures are not what is tested here: 3 s saved
        patch.setattr(report.figures, "figures", lambda *args: [])
        build_report(runs, tmp_path / "results")
    return tmp_path / "results" / "tables"


def _md_row(md: str, label: str) -> str:
    (line,) = [line for line in md.splitlines() if line.startswith(f"| {label} ")]
    return line


def test_rows_separate_on_every_run_id_field_but_the_seeds(store):
    long = pd.read_csv(store / "results_long.csv")
    assert (
        set(long["variant"])
        == {
            "chance (best constant prediction)",
            MAIN,
            MAIN[:-1] + ", precision=bf16)",  # a GPU run of the same config: its own row, never a fourth seed
            MAIN[:-1] + ", finetune_lr=0.0003)",  # a fine-tuning setting separates distilled rows
            MAIN[:-1] + ", max_train_samples=600)",
            TWIN,
            TWIN + " (target_max_train_samples=300)",  # and baselines
            STILTS,
            "teacher offline:all-MiniLM-L6-v2 (target_max_train_samples=300)",
        }
    )
    main = long[long["variant"] == MAIN].set_index("target_task")
    assert list(main["n"]) == [3, 3] and main.loc["ta", "mean"] == pytest.approx(62.0)


def test_a_control_is_matched_on_its_whole_run_id_or_named_missing(store):
    table = pd.read_csv(store / "transfer.csv").set_index("variant")
    main = table.loc[MAIN]
    assert (main["undistilled_control"], main["stilts_control"]) == (TWIN, STILTS)
    assert main["teacher_control"] == "no matched control"  # the only teacher's model has another target cap
    rows600 = table.loc[MAIN[:-1] + ", max_train_samples=600)"]
    assert rows600["stilts_control"] == "no matched control"  # STILTs was trained on 2,000 source rows
    assert rows600["undistilled_control"] == TWIN  # the twin's run id does not hold the source rows
    lr = table.loc[MAIN[:-1] + ", finetune_lr=0.0003)"]
    assert lr["undistilled_control"] == "no matched control" and math.isnan(lr["vs_undistilled"])
    md = (store / "transfer.md").read_text()
    assert "no matched control" in _md_row(md, MAIN[:-1] + ", max_train_samples=600)")


def test_a_difference_has_a_t_interval_over_seeds_not_over_target_seed_pairs(store):
    """The targets of one seed share its draw: each seed's difference is averaged over the targets (each weighs the
    same), and the interval is over the S seeds, S - 1 degrees of freedom (not over the T x S pairs)."""
    main = pd.read_csv(store / "transfer.csv").set_index("variant").loc[MAIN]
    by_seed = pd.Series([(60 - 58 + 70 - 69) / 2, (64 - 61 + 71 - 73) / 2, (62 - 60 + 75 - 70) / 2])
    mean, half = by_seed.mean(), T95_2 * by_seed.std(ddof=1) / math.sqrt(3)
    assert main["vs_undistilled"] == pytest.approx(mean, abs=1e-4)
    assert main["vs_undistilled_ci95_low"] == pytest.approx(mean - half, abs=1e-4)
    assert main["vs_undistilled_ci95_high"] == pytest.approx(mean + half, abs=1e-4)
    assert (main["vs_undistilled_seeds"], main["vs_undistilled_targets"]) == (3, 2)
    assert main["vs_undistilled_per_target"] == "ta +2.3, tb +1.3"  # descriptive, beside the interval
    md = (store / "transfer.md").read_text()
    assert f"{mean:+.1f} [{mean - half:+.1f}, {mean + half:+.1f}] (n=3 seeds, 2 targets)" in _md_row(md, MAIN)
    assert "sd over targets" not in md and "95% t CI" in md and INTERVAL in md
    docs = (Path(__file__).parents[1] / "docs" / "parameters.md").read_text()
    assert INTERVAL in " ".join(docs.split())  # the report bullets say the same


def test_a_one_seed_row_is_flagged_and_has_no_plus_minus(store):
    matrix = (store / "results_matrix.md").read_text()
    lr = _md_row(matrix, MAIN[:-1] + ", finetune_lr=0.0003)")
    assert "±" not in lr and lr.count("1 seed") == 2
    assert "62.0 ± 2.0 (n=3)" in _md_row(matrix, MAIN)
    transfer = pd.read_csv(store / "transfer.csv").set_index("variant")
    rows600 = transfer.loc[MAIN[:-1] + ", max_train_samples=600)"]
    assert rows600["vs_undistilled"] == pytest.approx(((55 - 58) + (65 - 69)) / 2) and rows600["seeds"] == 1
    assert math.isnan(rows600["vs_undistilled_ci95_low"]) and math.isnan(rows600["sd_over_seeds"])
    cells = _md_row((store / "transfer.md").read_text(), MAIN[:-1] + ", max_train_samples=600)").split("|")
    assert cells[3].strip() == "60.0 (1 seed)"  # its own mean; its twin (3 seeds) keeps its spread
    assert cells[7].strip() == "-3.5 (1 seed, 2 targets)"  # vs the twin: no interval


def test_every_score_table_has_a_dev_version_beside_it(store):
    for name in ("results_matrix", "results_long", "augmentation", "transfer", "architectures", "headline"):
        for ext in ("csv", "md"):
            assert (store / "dev" / f"{name}.{ext}").is_file(), f"dev/{name}.{ext}"
    assert not (store / "dev" / "runs.csv").exists()  # not a score table
    test, dev = (pd.read_csv(store / d / "results_matrix.csv").set_index("variant") for d in (".", "dev"))
    assert test.loc[MAIN, "ta"] == pytest.approx(62.0) and dev.loc[MAIN, "ta"] == pytest.approx(67.0)
    assert "chance (best constant prediction)" not in dev.index  # no dev chance recorded: none invented
    arch = pd.read_csv(store / "dev" / "architectures.csv").query("distill_run == 'd2000'")
    assert len(arch) == 3  # one row per fine-tuning variant of the student: never averaged together
    assert set(arch["source_dev_accuracy"]) == {0.79} and set(arch["finetunes"]) == {6, 2}
    assert arch["retention"].tolist() == pytest.approx([0.79 / 0.82] * 3, abs=1e-4)  # vs the teacher's dev score
    md = (store / "dev" / "results_matrix.md").read_text()
    assert "Dev (the split fine-tuning selects on)" in md and "the sd is the spread between seeds" in md


def test_two_versions_of_a_target_task_or_of_the_engine_never_pool(tmp_path, monkeypatch):
    """A task version is a column ('ta v2'); config.ENGINE_VERSION, recorded by a run as `engine_version` (1 when
    absent: made before it), is a row."""
    runs = tmp_path / "runs"
    _source_runs(runs)
    _finetunes(runs, "main", "distilled", "d2000", {"ta": [60], "tb": [70]})
    _finetunes(runs, "main", "distilled", "d2000", {"ta": [64]}, version=2)
    _finetunes(runs, "engine2", "distilled", "d2000", {"ta": [62, 66], "tb": [72, 73]}, (0, 1), engine=2)
    monkeypatch.setattr(report.figures, "figures", lambda *args: [])
    build_report(runs, tmp_path / "results")
    long = pd.read_csv(tmp_path / "results" / "tables" / "results_long.csv")
    main = long[long["variant"] == MAIN[:-1] + ", engine_version=1)"].set_index("target_task")
    assert sorted(main.index) == ["ta v1", "ta v2", "tb"] and set(main["n"]) == {1}
    assert list(long[long["variant"] == MAIN]["n"]) == [2, 2]  # engine 2, the most common: no departure named


def _tables(runs):
    """The report's fine-tuning scores and transfer table of a run store (what build_report writes, unwritten)."""
    from xdlib.comparison import transfer_table

    ft = report.finetune_scores(report.without_copies(report.collect(runs)))
    return ft, transfer_table(ft).set_index("variant")


def test_a_random_init_twin_is_its_own_row_per_teacher_and_matched_on_it(tmp_path):
    """A random-init twin reads teacher_model (its tokenizer): its run id holds it, so twins of two teachers are two
    rows, and a random-init student's twin is the one of its own teacher (none: no matched control)."""
    runs = tmp_path / "runs"
    _source_runs(runs)
    two = (0, 1)
    _finetunes(runs, "main", "distilled", "d2000", {"ta": [60, 62], "tb": [70, 72]}, two, student_init="random")
    _finetunes(runs, "third", "distilled", "d2000", {"ta": [60, 62], "tb": [70, 72]}, two, student_init="random",
               teacher_model="third/teacher")  # fmt: skip
    _finetunes(runs, "twin", "undistilled", None, {"ta": [50, 52], "tb": [60, 62]}, two, student_init="random")
    _finetunes(runs, "twinb", "undistilled", None, {"ta": [40, 40], "tb": [40, 40]}, two, student_init="random",
               teacher_model="other/teacher")  # fmt: skip
    ft, table = _tables(runs)
    n = ft.groupby(["variant", "target"]).size()
    assert set(n.index.get_level_values(0)) == {
        MAIN, MAIN[:-1] + ", teacher_model=third/teacher)", TWIN, TWIN + " (teacher_model=other/teacher)"
    }  # fmt: skip
    assert set(n) == {2}  # never the two twins pooled as four seeds
    assert table.loc[MAIN, "undistilled_control"] == TWIN and table.loc[MAIN, "vs_undistilled"] == pytest.approx(10)
    third = table.loc[MAIN[:-1] + ", teacher_model=third/teacher)"]
    assert third["undistilled_control"] == "no matched control" and math.isnan(third["vs_undistilled"])


def test_a_difference_uses_only_the_seeds_paired_on_every_target(tmp_path):
    """Targets with different numbers of seeds: the difference is over the seeds with a pair on every target, each
    target weighing the same (as the mean cells count seeds), and one such seed gets no interval."""
    runs = tmp_path / "runs"
    _source_runs(runs)
    _finetunes(runs, "main", "distilled", "d2000", {"ta": [60, 64, 62]}, (0, 1, 2))
    _finetunes(runs, "main", "distilled", "d2000", {"tb": [70]})
    _finetunes(runs, "twin", "undistilled", None, {"ta": [58, 61, 60]}, (0, 1, 2))
    _finetunes(runs, "twin", "undistilled", None, {"tb": [69]})
    main = _tables(runs)[1].loc[MAIN]
    assert main["seeds"] == 1 and main["vs_undistilled_seeds"] == 1
    assert main["vs_undistilled"] == pytest.approx(((60 - 58) + (70 - 69)) / 2)  # seed 0, the one on both targets
    assert math.isnan(main["vs_undistilled_ci95_low"]) and math.isnan(main["vs_undistilled_ci95_high"])


def test_a_copy_is_one_of_the_same_upstream_run(tmp_path):
    """save_model: true beside a run without it counts as a copy only where the upstream run is the same too: a
    student distilled in bf16 is another model than the fp32 one, whatever the fine-tuning's own config."""
    runs = tmp_path / "runs"
    _source_runs(runs)
    _run(runs, "distill", "dgpu", {"teacher_run": "t2000", "test_accuracy": 0.77}, device="cuda:0")
    _finetunes(runs, "plain", "distilled", "d2000", {"ta": [60]})
    _finetunes(runs, "kept", "distilled", "dgpu", {"ta": [70]}, save_model=True)
    _finetunes(runs, "copy", "distilled", "d2000", {"ta": [60]}, save_model=True)  # a copy: left out
    kept = report.without_copies(report.collect(runs)).query("stage == 'finetune'")
    assert sorted(kept["run_id"]) == ["kept-ta-0-v1", "plain-ta-0-v1"]
    ft, _ = _tables(runs)
    assert ft["variant"].nunique() == 2 and sorted(ft["upstream_precision"]) == ["bf16", "fp32"]  # two rows


def test_a_training_is_counted_once_whatever_its_run_ids(tmp_path):
    """finetune_seed unset and finetune_seed equal to seed are one training under two run ids: one seed (the first
    run by run id), never 'n=2' with a spread of 0; runs of another seed are other trainings and all count."""
    runs = tmp_path / "runs"
    _source_runs(runs)
    _finetunes(runs, "main", "distilled", "d2000", {"ta": [60, 64, 62], "tb": [70, 71, 75]}, (0, 1, 2))
    _finetunes(runs, "main-unset", "distilled", "d2000", {"ta": [99], "tb": [99]}, (None,))  # = finetune_seed 0
    _finetunes(runs, "twin", "undistilled", None, {"ta": [58], "tb": [69]})
    _finetunes(runs, "twin-unset", "undistilled", None, {"ta": [58], "tb": [69]}, (None,))
    _finetunes(runs, "twin-seed1", "undistilled", None, {"ta": [61], "tb": [73]}, (None,), seed=1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(report.figures, "figures", lambda *args: [])
        build_report(runs, tmp_path / "results")
    tables = tmp_path / "results" / "tables"
    long = pd.read_csv(tables / "results_long.csv").set_index(["variant", "target_task"])
    assert long.loc[(MAIN, "ta"), "n"] == 3 and long.loc[(MAIN, "ta"), "mean"] == pytest.approx(62.0)
    assert long.loc[(TWIN, "ta"), "n"] == 2 and long.loc[(TWIN, "ta"), "mean"] == pytest.approx(59.5)
    assert "± 0.0" not in (tables / "results_matrix.md").read_text()
    main = pd.read_csv(tables / "transfer.csv").set_index("variant").loc[MAIN]
    assert main["seeds"] == 3 and main["undistilled_seeds"] == 2 and main["vs_undistilled_seeds"] == 2
    assert main["vs_undistilled"] == pytest.approx(((60 - 58 + 70 - 69) / 2 + (64 - 61 + 71 - 73) / 2) / 2)


def test_a_search_grid_names_every_value_it_searched(tmp_path):
    """Two rates with the same number of runs: neither is the common one, so each row names its rate (the tie used
    to leave one rate unnamed, as if it were the default)."""
    runs = tmp_path / "runs"
    _source_runs(runs, 2000)
    for lr in (1e-4, 5e-5):
        _finetunes(runs, f"lr{lr}", "distilled", "d2000", {"ta": [60, 62]}, (0, 1), distill_lr=lr)
    labels = set(report.finetune_scores(report.collect(runs))["variant"])
    assert labels == {f"{MAIN[:-1]}, distill_lr={lr})" for lr in ("0.0001", "5e-05")}, labels


def test_headline_and_architectures_never_average_different_students():
    """Bug 6: two augmentations of one architecture and source are two rows, each the mean of its own seeds."""
    rows = []
    for aug, run, base in (("-", "d1", 60.0), ("plot-sentences", "d2", 80.0)):
        for seed, (task, bump) in enumerate([("sst2", 0.0), ("sst2", 2.0), ("rte", 10.0)]):
            rows.append({"stage": "finetune", "student": "distilled", "student_arch": "l6-h256", "source_task": "sst2",
                         "augmentation": aug, "target_task": task, "seed": seed % 2, "score": base + bump,
                         "m_parameters": 13e6, "m_distill_run": run,
                         "variant": f"l6-h256 distilled from sst2 ({'source only' if aug == '-' else '+' + aug})"})  # fmt: skip
    ft = pd.DataFrame(rows)
    ours = headline_table(ft).query("model.str.startswith('ours')")
    assert list(ours["SST2"]) == ["81.0", "61.0"] and list(ours["RTE"]) == ["90.0", "70.0"]  # before: one row, 71
    assert ours["model"].str.contains(r"\(source only\); mean over 2 seeds").tolist() == [False, True]
    dist = pd.DataFrame([{"stage": "distill", "run_id": run, "source_task": "sst2", "student_arch": "l6-h256",
                          "student_init": "random", "student_embeddings": "random", "augmentation": aug, "seed": 0,
                          "m_parameters": 13e6, "m_teacher_parameters": 1e8, "m_flops_ratio": 8.0, "m_speedup": 5.0,
                          "m_main_metric": "accuracy", "m_test_accuracy": 0.8} for run, aug in
                         (("d1", "-"), ("d2", "plot-sentences"))])  # fmt: skip
    arch = architecture_table(dist, ft)
    # each target weighs the same: (61 + 70) / 2, not the mean of three runs (two of them sst2)
    assert list(arch["mean_over_targets"]) == [65.5, 85.5] and list(arch["finetunes"]) == [3, 3]


def test_the_transfer_figure_holds_each_students_paired_difference_against_its_twin(tmp_path):
    """The paper's figure as differences: a row per distilled student, a column per target, each cell the mean over
    seeds of (student - twin) paired by seed, worked out by hand; its own source is blank."""
    from xdlib.comparison import difference_matrix

    runs = tmp_path / "runs"
    _source_runs(runs, 2000)
    three = (0, 1, 2)
    _finetunes(runs, "main", "distilled", "d2000", {"ta": [60, 64, 62], "tb": [70, 71, 75], "src": [80, 81, 82]},
               three)  # fmt: skip
    _finetunes(runs, "twin", "undistilled", None, {"ta": [58, 61, 60], "tb": [69, 73, 70], "src": [70, 70, 70]},
               three)  # fmt: skip
    ft = report.finetune_scores(report.collect(runs))
    matrix = difference_matrix(ft)
    (row,) = matrix.index
    assert row == MAIN
    assert matrix.loc[row, "ta"] == pytest.approx(((60 - 58) + (64 - 61) + (62 - 60)) / 3)
    assert matrix.loc[row, "tb"] == pytest.approx(((70 - 69) + (71 - 73) + (75 - 70)) / 3)
    assert math.isnan(matrix.loc[row, "src"])  # the student's own source task
    written = {p.name for p in build_report(runs, tmp_path / "results")}
    assert {"transfer_matrix.png", "scores_matrix.png", "quality_vs_speed.png"} <= written


def _t_interval(values):
    mean = sum(values) / len(values)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    return mean, mean - T95_2 * sd / math.sqrt(len(values)), mean + T95_2 * sd / math.sqrt(len(values))


def test_an_axis_is_two_students_that_differ_in_that_setting_alone(tmp_path):
    """The paper's axes: two distilled students that differ in augmentation alone, or in source task alone, are
    paired by (target, seed) over the targets that are neither's source, worked out by hand; a student that differs
    in a fine-tuning setting is no axis of either."""
    from xdlib.comparison import axis_table

    runs = tmp_path / "runs"
    _source_runs(runs, 2000)
    score = {"test_accuracy": 0.7, "dev_accuracy": 0.7, "teacher_run": "t2000"}
    _run(runs, "distill", "dnone", score, augmentation=[])
    _run(runs, "teacher", "tsrc2", {"test_accuracy": 0.8}, source_task="src2")
    _run(runs, "distill", "dsrc2", score | {"teacher_run": "tsrc2"}, source_task="src2")
    three = (0, 1, 2)
    _finetunes(runs, "main", "distilled", "d2000", {"ta": [60, 64, 62], "tb": [70, 71, 75], "src2": [50, 50, 50]},
               three)  # fmt: skip
    _finetunes(runs, "none", "distilled", "dnone", {"ta": [58, 61, 60], "tb": [69, 73, 70]}, three, augmentation=[])
    _finetunes(runs, "src2", "distilled", "dsrc2", {"ta": [55], "tb": [60], "src": [70]}, source_task="src2")
    _finetunes(runs, "lr", "distilled", "d2000", {"ta": [50], "tb": [50]}, finetune_lr=3e-4)
    axes = axis_table(report.finetune_scores(report.collect(runs)))
    assert sorted(axes["axis"]) == ["augmentation", "source_task"]
    aug = axes[axes["axis"] == "augmentation"].iloc[0]
    assert (aug["first"], aug["second"]) == ("augmentation=-", "augmentation=plot-sentences")
    per_seed = [((58 - 60) + (69 - 70)) / 2, ((61 - 64) + (73 - 71)) / 2, ((60 - 62) + (70 - 75)) / 2]
    mean, low, high = _t_interval(per_seed)
    assert (aug["difference"], aug["ci95_low"], aug["ci95_high"]) == pytest.approx((mean, low, high))
    assert aug["seeds"] == 3 and aug["targets"] == "ta+tb"
    src = axes[axes["axis"] == "source_task"].iloc[0]  # seed 0 only; the targets that are neither's source
    assert src["targets"] == "ta+tb" and src["seeds"] == 1 and math.isnan(src["ci95_low"])
    assert src["difference"] == pytest.approx(((60 - 55) + (70 - 60)) / 2)


def test_the_scaling_table_has_a_row_per_transfer_size_beside_the_twin_and_stilts(tmp_path):
    """A recipe distilled over three transfer-set sizes: one row per size, its rows (the composition's, without the
    filtered count), its dev retention, its mean over targets with a 95% t interval over seeds, the twin's and
    STILTs' means and the paired difference, worked out by hand; two sizes are no curve."""
    from xdlib.scaling import scaling_markdown, scaling_table

    runs = tmp_path / "runs"
    _source_runs(runs, 2000)
    sizes = {"none": ([], 2000, 0.70), "plot": (["plot-sentences"], 4000, 0.74), "big": (["movie-dialog"], 8000, 0.8)}
    for name, (aug, rows, dev) in sizes.items():
        composition = {"source": 2000, "task:x": rows - 2000, "task:x:removed_held_out": 9} if aug else {"source": 2000}
        _run(runs, "distill", f"d{name}", {"teacher_run": "t2000", "dev_accuracy": dev, "test_accuracy": dev - 0.1,
             "transfer_composition": composition, "cache_seconds": 3.0, "distil_seconds": 7.0},
             augmentation=aug)  # fmt: skip
    three = (0, 1, 2)
    _finetunes(runs, "none", "distilled", "dnone", {"ta": [60, 61, 62], "tb": [70, 70, 70]}, three, augmentation=[])
    _finetunes(runs, "plot", "distilled", "dplot", {"ta": [60, 64, 62], "tb": [70, 71, 75]}, three)
    _finetunes(runs, "big", "distilled", "dbig", {"ta": [66, 65, 70], "tb": [72, 74, 73]}, three,
               augmentation=["movie-dialog"])  # fmt: skip
    _finetunes(runs, "twin", "undistilled", None, {"ta": [58, 61, 60], "tb": [69, 73, 70]}, three)
    _finetunes(runs, "stilts", "stilts", "s2000", {"ta": [61, 62, 60], "tb": [70, 70, 71]}, three)
    frame = report.collect(runs)
    table = scaling_table(frame, report.finetune_scores(frame, "test"), "test")  # retention: on dev all the same
    assert list(table["transfer_rows"]) == [2000, 4000, 8000], table[["recipe", "variant", "transfer_rows"]].to_string()
    assert list(table["source_dev_retention"]) == pytest.approx([0.70 / 0.82, 0.74 / 0.82, 0.80 / 0.82])
    big = table.iloc[2]
    mean, low, high = _t_interval([(66 + 72) / 2, (65 + 74) / 2, (70 + 73) / 2])
    assert (big["mean"], big["ci95_low"], big["ci95_high"], big["seeds"]) == pytest.approx((mean, low, high, 3))
    assert big["undistilled_mean"] == pytest.approx(((58 + 61 + 60) / 3 + (69 + 73 + 70) / 3) / 2)
    assert big["stilts_mean"] == pytest.approx(((61 + 62 + 60) / 3 + (70 + 70 + 71) / 3) / 2)
    vs_twin = _t_interval([((66 - 58) + (72 - 69)) / 2, ((65 - 61) + (74 - 73)) / 2, ((70 - 60) + (73 - 70)) / 2])
    assert (big["vs_undistilled"], big["vs_undistilled_ci95_low"]) == pytest.approx(vs_twin[:2])
    assert (big["teacher_pass_s"], big["distillation_s"]) == (3.0, 7.0)
    assert big["per_seed"] == "69.0, 69.5, 71.5"  # each seed's mean over the targets, beside the interval
    assert table["learnt"].isna().all()  # no learning check recorded: unknown, never marked
    _record(runs, "distill", "dbig", dev_constant=0.5, learning_margin=0.02, learnt=False)
    frame = report.collect(runs)
    table = scaling_table(frame, report.finetune_scores(frame, "test"), "test")
    assert table["learnt"].tolist()[2] is False
    md = scaling_markdown(table)
    assert "| 8000 †" in md and "| 4000 " in md and "a size whose model did not learn" in md
    assert "69.0, 69.5, 71.5" in md
    written = {p.name for p in build_report(runs, tmp_path / "results")}
    assert {"scaling.csv", "scaling.png"} <= written
    ft = report.finetune_scores(frame[frame["run_id"].map(lambda r: "big" not in r and r != "dbig")])
    assert scaling_table(frame, ft).empty  # two sizes: no curve


def test_a_study_reports_its_own_runs_where_it_shares_a_store(tmp_path):
    """A study that reuses another's run store (scaling) writes its tables to a folder of its own name there, from
    its own runs only; the default study and a study with its own store write beside the store."""
    from xdlib.__main__ import study_report_dir, study_run_ids

    status = pd.DataFrame({"cell": [0, 1], "teacher_run": ["t", "t"], "distill_run": ["d", None],
                           "finetune_run": ["f0", "f1"], "stilts_run": [None, "s"], "state": ["done", "done"]})  # fmt: skip
    assert study_run_ids(status) == {"t", "d", "f0", "f1", "s"}

    assert study_report_dir("default", Path("results/runs"), own_store=False) == Path("results")
    assert study_report_dir("beyond", Path("results/beyond/runs"), own_store=True) == Path("results/beyond")
    assert study_report_dir("mine", Path("out/runs"), own_store=True) == Path("out")  # its own store: beside it
    assert study_report_dir("scaling", Path("results/runs"), own_store=False) == Path("results/scaling")
    runs = tmp_path / "runs"
    _source_runs(runs, 2000)
    _finetunes(runs, "main", "distilled", "d2000", {"ta": [60], "tb": [70]})
    _finetunes(runs, "twin", "undistilled", None, {"ta": [58], "tb": [69]})
    build_report(runs, tmp_path / "out", run_ids={"t2000", "d2000", "main-ta-0-v1", "main-tb-0-v1"})
    kept = pd.read_csv(tmp_path / "out" / "tables" / "runs.csv")
    assert set(kept["run_id"]) == {"t2000", "d2000", "main-ta-0-v1", "main-tb-0-v1"}


def test_a_target_is_learnt_when_its_best_seeded_model_beats_chance_by_ten_with_a_small_spread():
    long = pd.DataFrame([
        {"variant": "a", "target_task": "x", "mean": 80.0, "std": 2.0, "n": 3},
        {"variant": "b", "target_task": "x", "mean": 90.0, "std": np.nan, "n": 1},  # one seed: no spread to judge
        {"variant": "a", "target_task": "y", "mean": 60.0, "std": 4.0, "n": 3},  # spread too wide
        {"variant": "a", "target_task": "z", "mean": 59.0, "std": 1.0, "n": 3},  # within 10 of chance
        {"variant": report.CHANCE, "target_task": "x", "mean": 50.0, "std": np.nan, "n": np.nan},
        {"variant": report.CHANCE, "target_task": "y", "mean": 40.0, "std": np.nan, "n": np.nan},
        {"variant": report.CHANCE, "target_task": "z", "mean": 50.0, "std": np.nan, "n": np.nan},
    ])  # fmt: skip
    table = report.learnt_table(long).set_index("target")
    assert table.loc["x", "best_model"] == "a" and table.loc["x", "learnt"]
    assert not table.loc["y", "learnt"] and not table.loc["z", "learnt"]


def test_the_twin_of_a_student_that_is_its_whole_initialisation_is_that_model_fine_tuned(tmp_path, monkeypatch):
    """An l6-h384 initialised from all of a six-layer model: its undistilled twin is that model fine-tuned directly,
    so without an undistilled run the `teacher` runs of that model (another row's teacher control) are its twin,
    paired by seed; a student that is a part of its initialisation (l3-h384) never falls back."""
    from xdlib import comparison

    monkeypatch.setattr(comparison, "whole_arch", lambda ref: "l6-h384" if ref == "org/six" else None)
    runs = tmp_path / "runs"
    _source_runs(runs, 2000)
    three = (0, 1, 2)
    big = {"student_arch": "l6-h384", "student_init": "org/six", "teacher_model": "org/big"}
    _finetunes(runs, "paper", "distilled", "d2000", {"ta": [70, 72, 71], "tb": [80, 80, 83]}, three, **big)
    _finetunes(runs, "l3", "distilled", "d2000", {"ta": [60, 60, 60], "tb": [70, 70, 70]}, three,
               student_init="org/six", teacher_model="org/big")  # fmt: skip
    _finetunes(
        runs, "direct", "teacher", None, {"ta": [69, 70, 70], "tb": [81, 79, 80]}, three, teacher_model="org/six"
    )
    table = comparison.transfer_table(report.finetune_scores(report.collect(runs)))
    paper = table[table["variant"].str.startswith("l6-h384")].iloc[0]
    assert paper["undistilled_control"] == "teacher six"  # its label: the model's name
    per_seed = [((70 - 69) + (80 - 81)) / 2, ((72 - 70) + (80 - 79)) / 2, ((71 - 70) + (83 - 80)) / 2]
    mean, low, _ = _t_interval(per_seed)
    assert (paper["vs_undistilled"], paper["vs_undistilled_ci95_low"]) == pytest.approx((mean, low))
    l3 = table[table["variant"].str.startswith("l3-h384")].iloc[0]
    assert l3["undistilled_control"] == comparison.NO_CONTROL
    # a teacher control fine-tuned another way is not its twin; an undistilled run of the whole model comes first
    other = tmp_path / "other"
    _source_runs(other, 2000)
    _finetunes(other, "paper", "distilled", "d2000", {"ta": [70], "tb": [80]}, **big)
    _finetunes(other, "direct", "teacher", None, {"ta": [69], "tb": [81]}, teacher_model="org/six", finetune_lr=3e-4)
    table = comparison.transfer_table(report.finetune_scores(report.collect(other)))
    assert table.iloc[0]["undistilled_control"] == comparison.NO_CONTROL
    _finetunes(other, "twin", "undistilled", None, {"ta": [60], "tb": [60]}, student_arch="l6-h384",
               student_init="org/six")  # fmt: skip
    _finetunes(other, "same", "teacher", None, {"ta": [69], "tb": [81]}, teacher_model="org/six")
    table = comparison.transfer_table(report.finetune_scores(report.collect(other)))
    assert table.iloc[0]["undistilled_control"].startswith("l6-h384 undistilled")
    assert table.iloc[0]["vs_undistilled"] == pytest.approx(((70 - 60) + (80 - 60)) / 2)


def _record(runs, stage, run_id, **metrics):
    """Add a learning check (or any metric) to a run's metrics.json, as `metrics.learning_check` writes it."""
    path = runs / stage / run_id / "metrics.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | metrics))


def test_a_model_that_did_not_learn_is_listed_first_and_marked_in_every_score_table(tmp_path):
    """One fine-tuning seed at chance (learnt False): learning_check.md counts and lists it first; the matrix cell
    and its Avg carry the mark, with a note naming the seed; the transfer row is marked and its csv says learnt
    False; the figures' marks hold that cell. Runs made before the check stay unknown, never a failure."""
    from xdlib.comparison import difference_matrix
    from xdlib.figures import score_marks

    runs = tmp_path / "runs"
    _source_runs(runs, 2000)  # no learning check recorded: unknown
    three = (0, 1, 2)
    _finetunes(runs, "main", "distilled", "d2000", {"ta": [60, 64, 25], "tb": [70, 71, 75]}, three)
    _finetunes(runs, "twin", "undistilled", None, {"ta": [58, 61, 60], "tb": [69, 73, 70]}, three)
    for name, target, seed in [(n, t, s) for n in ("main", "twin") for t in ("ta", "tb") for s in three]:
        learnt = (name, target, seed) != ("main", "ta", 2)  # its dev score 0.30: at the constant + margin
        _record(runs, "finetune", f"{name}-{target}-{seed}-v1", dev_constant=0.25 if learnt else 0.3,
                learning_margin=0.02, learnt=learnt)  # fmt: skip
    _record(runs, "distill", "d2000", dev_constant=0.5, learning_margin=0.02, learnt=True, teacher_dev=0.82,
            dev_retention_vs_chance=(0.79 - 0.5) / (0.82 - 0.5))  # fmt: skip
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(report.figures, "figures", lambda *args: [])
        build_report(runs, tmp_path / "results")
    tables = tmp_path / "results" / "tables"

    check = (tables / "learning_check.md").read_text()
    assert check.startswith("1 of 15 models did not learn: main-ta-2-v1 (finetune, ta).")
    assert "2 made before the learning check: unknown" in check and "never rests on" in check.splitlines()[0]
    rows = pd.read_csv(tables / "learning_check.csv")
    assert rows["run_id"].iloc[0] == "main-ta-2-v1" and rows["model"].iloc[0] == MAIN
    assert list(rows["stage"][1:3]) == ["teacher", "stilts"] and rows["learnt"][1:3].isna().all()  # then unknown
    assert rows.set_index("run_id").loc["d2000", "dev_retention_vs_chance"] == pytest.approx(0.29 / 0.32, abs=1e-4)
    assert not (tables / "dev" / "learning_check.csv").exists()  # once, not per split

    matrix = (tables / "results_matrix.md").read_text()
    cells = [c.strip() for c in _md_row(matrix, MAIN).split("|")[2:-1]]  # ta, tb, Avg
    assert cells[0] == "49.7 ± 21.5 (n=3) †" and "†" not in cells[1] and cells[2].endswith("†")
    assert "†" not in _md_row(matrix, TWIN)
    assert "at or below the best constant prediction + the metric's margin" in matrix
    assert f"{MAIN} on ta: seed 2." in matrix and "not a result" in matrix
    long = pd.read_csv(tables / "results_long.csv").set_index(["variant", "target_task"])
    assert long.loc[(MAIN, "ta"), "not_learnt"] == 1 and long.loc[(MAIN, "tb"), "not_learnt"] == 0

    transfer = pd.read_csv(tables / "transfer.csv").set_index("variant")
    assert transfer.loc[MAIN, "learnt"] == False  # noqa: E712 (read back from csv)
    assert transfer.loc[MAIN, "undistilled_learnt"] == True  # noqa: E712
    md = (tables / "transfer.md").read_text()
    assert _md_row(md, MAIN).startswith(f"| {MAIN} †") and "did not learn" in md
    headline = (tables / "headline.md").read_text()  # the headline row of a model that did not learn says so
    assert "† did not learn: not a result" in [line for line in headline.splitlines() if "ours:" in line][0]
    arch = pd.read_csv(tables / "architectures.csv")
    assert {"dev_retention_vs_chance", "learnt"} <= set(arch.columns) and arch["learnt"].all()

    ft = report.finetune_scores(report.collect(runs))
    _, test_matrix, _ = report.results_tables(ft)
    marks = score_marks(test_matrix, ft)
    assert marks.loc[MAIN, "ta"] and marks.loc[MAIN, "Avg"] and not marks.loc[MAIN, "tb"]
    assert not marks.loc[TWIN].any()
    transfer_marks = difference_matrix(ft, marks=True)
    assert transfer_marks.loc[MAIN, "ta"] and not transfer_marks.loc[MAIN, "tb"]


def test_a_run_without_a_learning_check_is_unknown_never_a_failure(tmp_path):
    """A store made before the check: no mark anywhere, every run counted as unknown."""
    runs = tmp_path / "runs"
    _source_runs(runs, 2000)
    _finetunes(runs, "main", "distilled", "d2000", {"ta": [60], "tb": [70]})
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(report.figures, "figures", lambda *args: [])
        build_report(runs, tmp_path / "results")
    tables = tmp_path / "results" / "tables"
    assert (tables / "learning_check.md").read_text().startswith("0 of 5 models did not learn. 5 made before")
    for name in ("results_matrix", "transfer"):
        assert "†" not in (tables / f"{name}.md").read_text(), name
