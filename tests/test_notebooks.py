"""The notebooks: jupytext pairs in sync, parameters cells equal to the configs, the report and benchmark notebooks
executed through papermill at smoke size (the benchmark's beside the other tests: tests/benchmark_smoke.py; the
stage notebooks: test_study_slice.py, test_bad_input.py, test_sweep_reuse.py; the export notebook: test_export.py),
and every params file dry-run (kills and reruns: test_faults.py)."""

import json
import math
import os
import re
import shutil
import subprocess
from pathlib import Path

import jupytext
import nbformat
import pytest

from xdlib.config import ConfigError
from xdlib.notebook import NOTEBOOKS, STAGE_NOTEBOOKS, parameters_source, stage_config, stage_configs

pytestmark = pytest.mark.notebooks
ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("py", sorted(NOTEBOOKS.glob("*.py")), ids=lambda p: p.stem)
def test_jupytext_pair_in_sync_and_without_outputs(py):
    ipynb = nbformat.read(py.with_suffix(".ipynb"), as_version=4)
    assert ipynb.metadata["kernelspec"]["name"] == "python3"
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in ipynb.cells if c.cell_type == "code")
    text = jupytext.read(py)
    assert [(c.cell_type, c.source) for c in text.cells] == [(c.cell_type, c.source) for c in ipynb.cells], (
        f"{py.name} and its .ipynb differ: run `python -m xdlib.notebook`"
    )


@pytest.mark.parametrize("stage", sorted(STAGE_NOTEBOOKS))
def test_parameters_cell_is_the_config(stage):
    nb = jupytext.read(NOTEBOOKS / f"{STAGE_NOTEBOOKS[stage]}.py")
    (cell,) = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert cell.source == parameters_source(stage), "run `python -m xdlib.notebook` after changing a config field"


def test_unknown_notebook_parameter_is_an_error():
    with pytest.raises(ConfigError, match=r"unknown notebook parameter\(s\) 'lr'.*known: .*teacher_lr"):
        stage_config("teacher", {"source_task": "rt-polarity", "lr": 1e-3})


def test_notebook_parameters_layer_over_a_params_file(tmp_path):
    """Defaults, then `params`, then the notebook's values; a listed field left at its default keeps the file's
    value, and a field outside the cell (`-p` in papermill) is still a field."""
    study = tmp_path / "s.yaml"
    study.write_text("name: s\nversion: 3\nfinetune_epochs: 5.0\nfinetune_lr: 0.003\nteacher_lr: 0.002\n")
    namespace = {"params": str(study), "finetune_epochs": 2.0, "finetune_lr": 0.0005, "patience": 2, "pd": pytest}
    cfg = stage_config("finetune", namespace)
    assert (cfg.finetune_epochs, cfg.finetune_lr, cfg.teacher_lr, cfg.patience) == (5.0, 0.0005, 0.002, 2)
    assert cfg.study == "s version 3"
    assert stage_config("finetune", {"finetune_epochs": 2.0}).finetune_epochs == 2.0


def test_notebook_runs_are_one_config_each(tmp_path):
    """`runs`: field changes on top of the notebook's values, one config each, with the params file's
    target_settings applied to each run's own target."""
    study = tmp_path / "s.yaml"
    study.write_text("target_settings:\n  trec6: {finetune_batch_size: 8}\n")
    runs = [{}, {"target_task": "trec6"}, {"target_task": "trec6", "finetune_seed": 1}]
    configs = stage_configs("finetune", {"params": str(study), "target_task": "sms-spam", "runs": runs})
    assert [(c.target_task, c.finetune_batch_size, c.finetune_seed) for c in configs] == [
        ("sms-spam", 32, None),
        ("trec6", 8, None),
        ("trec6", 8, 1),
    ]
    with pytest.raises(ConfigError, match=r"unknown field\(s\) 'lr' in runs; known: .*finetune_lr"):
        stage_configs("finetune", {"runs": [{"lr": 1.0}]})
    with pytest.raises(ConfigError, match=r"unknown notebook parameter\(s\) 'runs' for the teacher notebook"):
        stage_configs("teacher", {"runs": []})


@pytest.fixture(scope="module")
def made_store(tmp_path_factory, tiny_encoder) -> Path:
    """A teacher, a distillation and a fine-tuning (toy-regression) made in this process at smoke size: each
    beats its floor. (The stage notebooks themselves run through papermill in test_study_slice.py, at a real size,
    and in test_bad_input.py and test_sweep_reuse.py.)"""
    from conftest import smoke_params

    from xdlib.config import Config
    from xdlib.stages import ensure

    params = smoke_params(tmp_path_factory.mktemp("store"), tiny_encoder) | {"target_task": "toy-regression"}
    ensure("finetune", Config.from_dict(params))
    runs = Path(params["runs_dir"])
    for stage in ("teacher", "distill", "finetune"):
        (run,) = (runs / stage).iterdir()
        metrics = json.loads((run / "metrics.json").read_text())
        main = metrics["main_metric"]
        values = [metrics[f"{s}_{main}"] for s in ("dev", "test")]
        assert all(math.isfinite(v) for v in values)
        floor = {"teacher": 0.8, "distill": 0.7, "finetune": 0.5}[stage]  # accuracy, accuracy, pearson
        assert values[1] > floor, (stage, metrics)
    return runs


@pytest.fixture(scope="module")
def reported(tmp_path_factory, made_store) -> Path:
    """`xdlib report --html` over the made store: the tables and figures, then notebooks/report.ipynb executed over
    them (papermill) and converted to OUT/report.html (nbconvert); its out_dir."""
    from xdlib.__main__ import main

    out_dir = tmp_path_factory.mktemp("report")
    assert main(["report", "--runs", str(made_store), "--out", str(out_dir), "--html"]) == 0
    return out_dir


def test_the_report_notebook_runs_under_papermill(reported):
    assert (reported / "tables" / "results_matrix.csv").is_file()
    assert (reported / "figures" / "scores_matrix.png").is_file()  # transfer_matrix.png needs a twin
    html = (reported / "report.html").read_text()
    figures = list((reported / "figures").glob("*.png"))
    embedded = re.findall(r'<img [^>]*src="data:image/png;base64,', html)
    assert len(embedded) == len(figures) >= 3  # every figure shown inline, embedded in the page
    assert all(f">figure: {p.stem}<" in html for p in figures)


def test_html_without_the_notebooks_is_one_line_before_any_work(made_store, tmp_path, monkeypatch, capsys):
    """An installed wheel has no notebooks/: `report --html` and `study --html` say so in one line, before the
    report or the sweep is made."""
    import xdlib.notebook
    from xdlib.__main__ import main

    monkeypatch.setattr(xdlib.notebook, "NOTEBOOKS", tmp_path / "not-installed")
    for args in (["report", "--runs", str(made_store), "--out", str(tmp_path / "out"), "--html"],
                 ["study", "params/smoke.yaml", "--html", "-p", f"runs_dir={tmp_path / 'runs'}"]):  # fmt: skip
        assert main(args) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: --html needs ") and "allowed: run from a checkout" in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists() and not (tmp_path / "runs").exists()


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
LOADED = """<script>window.addEventListener("load", () => { const all = [...document.images];
document.title = "images " + all.filter(i => i.complete && i.naturalWidth > 0).length + "/" + all.length; });
</script></body>"""


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed here (.ci/run installs Debian's chromium)")
def test_the_html_report_opens_in_a_browser_with_every_table_and_image(reported, tmp_path):
    """`xdlib study --html` / `xdlib report --html`: report.html, code hidden, in headless Chromium: every image
    loads, every table is there, and the screenshot is not blank."""
    from PIL import Image

    out_dir = reported
    page = out_dir / "report.html"
    html = page.read_text()
    assert ">dev: results_matrix<" in html  # the dev-score tables too
    assert "xdlib.report import" not in html and "build_report(" not in html  # no code cell shows
    tables = list((out_dir / "tables").glob("*.md"))  # each under its heading, and each with rows as a table
    assert all(f">{path.stem}<" in html for path in tables), [p.stem for p in tables if f">{p.stem}<" not in html]
    dev = list((out_dir / "tables" / "dev").glob("*.md"))
    assert html.count("<table") == sum("|" in path.read_text() for path in [*tables, *dev]) >= 10
    probe = tmp_path / "probe.html"
    probe.write_text(html.replace("</body>", LOADED, 1))
    browser = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1280,2400"]
    dom = subprocess.run([*browser, "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()], capture_output=True,
                         text=True, timeout=120)  # fmt: skip
    figures = len(list((out_dir / "figures").glob("*.png")))
    assert f"<title>images {figures}/{figures}</title>" in dom.stdout, (dom.stdout[:500], dom.stderr[-2000:])
    shot = tmp_path / "report.png"
    subprocess.run([*browser, f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=120, check=True)
    pixels = Image.open(shot).convert("L")
    histogram = pixels.histogram()
    assert pixels.size == (1280, 2400) and max(histogram) < 0.97 * sum(histogram)  # not one colour: not blank
    if os.environ.get("XDLIB_KEEP_SCREENSHOT"):  # to look at it
        shutil.copy(shot, os.environ["XDLIB_KEEP_SCREENSHOT"])


@pytest.mark.parametrize("path", sorted((ROOT / "params").rglob("*.yaml")), ids=lambda p: p.stem)
def test_every_params_file_validates_and_dry_runs(path):
    from xdlib.sweep import sweep

    status = sweep(path, dry_run=True)
    assert len(status) >= 1 and set(status["state"]) <= {"planned", "complete"}
    assert status["finetune_run"].is_unique


@pytest.mark.slow
def test_benchmark_notebook_at_smoke_size(benchmark_smoke):
    """notebooks/benchmark.ipynb at smoke size (executed by tests/benchmark_smoke.py beside the other tests)."""
    out = nbformat.read(benchmark_smoke / "bench.ipynb", as_version=4)
    assert any("distillation speedup vs naive KD" in o.get("text", "") for c in out.cells for o in c.get("outputs", []))
    (raw,) = benchmark_smoke.glob("*-smoke.json")
    report = json.loads(raw.read_text())
    steps = report["naive"]["updates"], report["ours"]["updates"]
    # the same updates: one epoch a stage, no gradual phases, no selection, no floor (bench.distill_config)
    assert 0 < steps[0] == steps[1], steps
    gap = next(r for r in report["ratios"] if "ours - naive" in r["what"])  # an accuracy difference, may be < 0
    assert abs(gap["value"] - (report["ours"]["test_accuracy"] - report["naive"]["test_accuracy"])) < 1e-12
    assert -1 < gap["target"] < 0
    if gap["note"].startswith("not tested"):  # a smoke-size teacher that did not learn: no parity is claimed
        assert gap["met"] is False and report["ours"]["teacher_test_accuracy"] is not None
    else:
        assert gap["met"] == (gap["value"] >= gap["target"])
    shares = [r for r in report["ratios"] if "share of time" in r["what"]]  # dev evals may take none of it
    # an explicit "other" share holds what no part measured: the shares add up by construction, whatever the machine
    assert len(shares) == 5 and sum(r["value"] for r in shares) == pytest.approx(1, abs=1e-9)
    assert all(r["value"] >= 0 for r in shares)
    others = [r for r in report["ratios"] if r is not gap and r not in shares]
    assert all(math.isfinite(r["value"]) and r["value"] > 0 for r in others)
    assert report["ours"]["cache_bytes_per_example"] > 0 and report["peak_rss_mb"] > 0
