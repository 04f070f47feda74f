"""ONNX export (torch.onnx + onnxruntime quantize_dynamic) and the predict API: the same logits as PyTorch, int8
agreeing with fp32 on a real task, and one line for a run that cannot be exported."""

import json
import subprocess
import sys

import pytest
import torch

from xdlib.deploy import serve
from xdlib.deploy.export import OPSET, _fp32_export_of, export

TEXTS = ["good film", "a bad , dull film with a good cast", "great", ("good plot", "bad acting")]


@pytest.fixture(scope="module")
def tiny_classifier(tmp_path_factory, tiny_encoder):
    """A tiny BERT with a seeded 2-class head, as a toy-sentiment run folder (model/ and config.yaml)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    run = tmp_path_factory.mktemp("run")
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_encoder, num_labels=2)
    model.save_pretrained(run / "model")
    AutoTokenizer.from_pretrained(tiny_encoder).save_pretrained(run / "model")
    (run / "config.yaml").write_text("source_task: toy-sentiment\n")
    return run


@pytest.fixture(scope="module")
def exported(tiny_classifier, tmp_path_factory):
    """A copy of the tiny classifier's run with its fp32 export in RUN/onnx (one torch.onnx export, ~3 s, shared)."""
    import shutil

    run = tmp_path_factory.mktemp("exported") / "run"
    shutil.copytree(tiny_classifier, run)
    export(run)
    return run


@pytest.mark.slow  # ONNX export: in make test, not in make test-fast
def test_onnx_fp32_gives_the_logits_of_pytorch(exported):
    out = exported / "onnx"
    meta = json.loads((out / "export.json").read_text())
    assert meta["precision"] == "fp32" and meta["opset"] >= 17 and meta["source_run"] == exported.name
    assert meta["task"] == "toy-sentiment"
    onnx, hf = serve.load(out, batch_size=3), serve.load(exported / "model", batch_size=3)
    a, b = onnx.logits(TEXTS), hf.logits(TEXTS)  # batches of 3 and 1, each padded to its own longest
    assert a.shape == (4, 2) and abs(a - b).max() < 1e-4
    assert onnx.predict(TEXTS) == hf.predict(TEXTS)


@pytest.mark.slow  # ONNX export: in make test, not in make test-fast
def test_int8_quantises_the_runs_own_fp32_export(tiny_classifier, exported, tmp_path):
    """With RUN/onnx there, int8 quantises that graph (no second torch.onnx export; export.json says so) and
    predicts as an int8 made from a fresh export; an fp32 export of another model is not used."""
    fresh = serve.load(export(tiny_classifier, tmp_path / "fresh", int8=True)).logits(TEXTS[:3])  # no RUN/onnx
    assert json.loads((tmp_path / "fresh" / "export.json").read_text())["quantized_from"] is None
    run = exported  # with RUN/onnx
    reused = export(run, tmp_path / "reused", int8=True)
    assert json.loads((reused / "export.json").read_text())["quantized_from"] == str(run / "onnx" / "model.onnx")
    assert abs(serve.load(reused).logits(TEXTS[:3]) - fresh).max() < 1e-6
    record = run / "onnx" / "export.json"
    meta = json.loads(record.read_text())
    try:
        record.write_text(json.dumps(meta | {"source_model": "/elsewhere"}))
        assert _fp32_export_of(run, run / "model") is None
        record.write_text(json.dumps(meta | {"opset": OPSET - 1}))
        assert _fp32_export_of(run, run / "model") is None
    finally:  # the shared export as it was
        record.write_text(json.dumps(meta))
    assert _fp32_export_of(run, run / "model") == run / "onnx" / "model.onnx"


def test_export_refuses_in_one_line(tiny_classifier, exported, tmp_path, capsys):
    """No model, a token task's model, an output folder in the way, and a head that is not its run task's: exit 2, one line naming what is allowed;
    --force replaces the folder."""
    token_run = tmp_path / "token-run"
    token_run.mkdir()
    (token_run / "model").symlink_to(tiny_classifier / "model")
    (token_run / "config.yaml").write_text("target_task: toy-ner\n")
    taken = tmp_path / "taken"
    taken.mkdir()
    cases = [
        ([str(tmp_path / "empty")], "has no model", "allowed: a teacher or distill run"),
        ([str(token_run)], "is a token model (toy-ner)", "allowed: single, pair, regression heads"),
        ([str(tiny_classifier), "--out", str(taken)], "already exists", "--force"),
    ]
    (tmp_path / "empty").mkdir()
    other = tmp_path / "other-task"
    other.mkdir()
    (other / "model").symlink_to(tiny_classifier / "model")
    (other / "config.yaml").write_text("target_task: toy-regression\n")
    cases.append(([str(other)], "has a head of 2 labels, but its run's task toy-regression has 1", "the run's own"))
    from xdlib.__main__ import main

    for args, what, allowed in cases:  # in this process: the command's own error path, as a subprocess would take
        assert main(["export", *args]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and what in lines[0] and allowed in lines[0], lines
    assert export(exported, taken, force=True, int8=True) == taken and (taken / "model.onnx").is_file()  # quantised
    from xdlib.deploy.export import ExportError, check

    for out in (tiny_classifier / "model", tiny_classifier, tiny_classifier.parent):  # the model, its run, above
        with pytest.raises(ExportError, match="is or holds the model it exports .* allowed: a folder outside it"):
            check(tiny_classifier, out, force=True)
    assert (tiny_classifier / "model" / "config.json").is_file()


@pytest.mark.slow
def test_int8_agrees_with_fp32_on_a_real_task(study_slice, tmp_path):
    """The study slice's distilled l3-h384 student fine-tuned on trec6 (6 classes): int8 (dynamic, MatMul weights)
    predicts the same class as fp32 on at least 95% of its 300 test questions, and fp32 scores what the run
    recorded."""
    import shutil

    from xdlib.data import cap
    from xdlib.metrics import constant_baseline
    from xdlib.tasks import get_task

    (source,) = (study_slice / "runs" / "finetune").glob("trec6-*")
    run = tmp_path / source.name
    shutil.copytree(source, run, ignore=shutil.ignore_patterns("onnx*"))
    task = get_task("trec6")
    test = cap(task.load()["test"], 300, 0)  # the rows the run was scored on
    texts, labels = [r["text"] for r in test], [r["label"] for r in test]
    fp32 = serve.load(export(run), max_length=48).predict(texts)  # RUN/onnx, which int8 then quantises
    int8 = serve.load(export(run, int8=True), max_length=48).predict(texts)
    agree = sum(a == b for a, b in zip(fp32, int8)) / len(texts)
    accuracy = sum(p == y for p, y in zip(fp32, labels)) / len(texts)
    recorded = json.loads((run / "metrics.json").read_text())["test_accuracy"]
    assert accuracy == pytest.approx(recorded, abs=0.01) and accuracy > constant_baseline(task, test) + 0.05
    assert agree >= 0.95, (accuracy, agree)


def test_a_finetune_run_with_save_model_exports(base_params, tmp_path):
    """save_model: true keeps the fine-tuned HF folder in the run (a run id of its own); its export predicts what the
    fine-tuned model predicts, and scores what the run's metrics say."""
    from xdlib.config import Config
    from xdlib.stages import ensure, run_id
    from xdlib.tasks import get_task

    cfg = Config.from_dict(base_params | {"student": "teacher", "save_model": True})
    assert run_id("finetune", cfg) != run_id("finetune", cfg.replace(save_model=False))
    path = ensure("finetune", cfg)
    test = get_task("toy-sentiment").load()["test"]
    texts = [r["text"] for r in test]
    onnx = serve.load(export(path), max_length=32).predict(texts)
    assert onnx == serve.load(path / "model", max_length=32).predict(texts)
    accuracy = sum(p == r["label"] for p, r in zip(onnx, test)) / len(test)
    assert accuracy == pytest.approx(json.loads((path / "metrics.json").read_text())["test_accuracy"])


def test_deploy_refuses_in_one_line(tiny_classifier, tmp_path, capsys):
    """The benchmark's mistakes: no runs named, a params file whose fine-tunings drop their model or whose target
    has a head export does not support, a run without a model, a model folder that is not a run (no task to score
    it on); exit 2, one line, before anything is trained or exported."""
    (tmp_path / "empty").mkdir()
    token = tmp_path / "token.yaml"
    token.write_text("name: t\nversion: 1\nsource_task: toy-sentiment\ntarget_task: toy-ner\nsave_model: true\n")
    cases = [
        ([], "give run folders or --params", "allowed: xdlib deploy RUN_DIR"),
        (["--params", "params/default.yaml"], "do not keep their model", "allowed: a params file with save_model"),
        (["--params", str(token)], "toy-ner (token) have heads export", "allowed: targets with single, pair"),
        ([str(tmp_path / "empty")], "has no model", "allowed: a teacher or distill run"),
        ([str(tiny_classifier / "model")], "is not a run", "allowed: run folders"),
    ]
    from xdlib.deploy import main

    for args, what, allowed in cases:  # in this process: the command's own error path, as a subprocess would take
        assert main(args) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and what in lines[0] and allowed in lines[0], lines


def test_deploy_of_a_run_whose_data_is_out_of_reach_is_one_line(tiny_classifier, tmp_path, capsys, monkeypatch):
    """A run of a Hub-only task (rte, 2 labels) offline: its data's one line and exit 2, before anything is exported;
    the same for a run store whose local task file has gone."""
    import shutil

    from xdlib.deploy import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("XDLIB_HUB_MIRROR", raising=False)
    hub, local = tmp_path / "hub", tmp_path / "local"
    for run, config, what in [(hub, "target_task: rte\n", "nyu-mll/glue/rte needs the Hugging Face Hub"),
                        (local, f"local_tasks:\n  mine:\n    train: {tmp_path / 'gone.csv'}\n    kind: single\n"
                                "target_task: mine\n", "gone.csv: no such file")]:  # fmt: skip
        shutil.copytree(tiny_classifier, run)
        (run / "config.yaml").write_text(config)
        assert main([str(run), "--out", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and what in err, err
        assert not (run / "onnx").exists() and not (tmp_path / "out").exists()


@pytest.mark.notebooks
def test_export_notebook_measures_a_study(export_smoke):
    """notebooks/export.ipynb at smoke size (executed by tests/export_smoke.py beside the other tests): a sweep with
    save_model, then its teacher (classification) and its fine-tuned student (regression) as PyTorch fp32, ONNX fp32
    and int8, from the run store."""
    import pandas as pd

    out = export_smoke / "out"
    frame = pd.read_csv(out / "tables" / "deploy.csv")
    assert list(frame["stage"]) == ["teacher", "finetune"]
    assert list(frame["task"]) == ["toy-sentiment", "toy-regression"]
    # the measured draw is the one the run was scored on: PyTorch fp32 reproduces the recorded test score
    assert (frame["pytorch-fp32 score"] - frame["recorded"]).abs().max() < 0.051, frame
    assert (frame["onnx-fp32 score"] - frame["pytorch-fp32 score"]).abs().max() < 0.051, frame
    delta = frame["onnx-int8 score"] - frame["pytorch-fp32 score"]
    assert (delta - frame["int8 delta (points)"]).abs().max() < 0.11
    assert frame["int8 agrees"].notna().tolist() == [True, False]  # regression: r, not a share
    assert frame["int8 r with fp32"].iloc[1] > 0.9 and 0 <= frame["int8 agrees"].iloc[0] <= 100
    assert (frame["int8 speedup b1"] > 0).all() and (frame["int8 MB"] < frame["fp32 MB"]).all()
    assert frame["model"].iloc[0].startswith("teacher ") and "distilled" in frame["model"].iloc[1]
    text = (out / "tables" / "deploy.md").read_text()
    assert "no fine-tuned model loses more than 1.5 points" in text and "threads" in text
    (raw,) = (out / "benchmarks").glob("deploy-*.json")
    targets = json.loads(raw.read_text())["targets"]
    assert targets[1]["value"] == pytest.approx(frame["int8 delta (points)"].iloc[1:].mean(), abs=0.01)
    assert [t["met"] for t in targets] == [targets[0]["value"] >= 2, targets[1]["value"] >= -0.5,
                                           targets[2]["value"] >= -1.5]  # fmt: skip


COMMIT_KILL = """
import os, signal, sys
from pathlib import Path
from xdlib.deploy.export import _commit
calls, kill_at = [0], int(sys.argv[1])
rename = Path.rename
def killing_rename(self, target):
    if calls[0] == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
    calls[0] += 1
    return rename(self, target)
Path.rename = killing_rename
_commit(Path(sys.argv[2]), Path(sys.argv[3]))
"""


@pytest.mark.parametrize("kill_at", [0, 1, 2])  # before the first rename, between the two, after both (no kill)
def test_a_kill_in_the_commit_leaves_the_previous_export_or_none(kill_at, tmp_path):
    """An export replacing another is killed (SIGKILL) at each step of its commit: the output folder is the previous
    export whole, or absent, or the new one whole; never a mix. The leftovers are `.onnx.xdlib-export-*` folders that
    the next export into it removes (`_remove_leftovers`, under its lock); no other folder is touched."""
    from xdlib.deploy.export import TMP, _leftovers, _remove_leftovers

    out, tmp = tmp_path / "onnx", tmp_path / f".onnx.{TMP}new"
    (tmp_path / ".onnx.bak").mkdir()  # a user's folder of that name stays
    for folder, tag in ((out, "old"), (tmp, "new")):
        folder.mkdir()
        for name in ("model.onnx", "export.json", "tokenizer.json"):
            (folder / name).write_text(tag)
    done = subprocess.run([sys.executable, "-c", COMMIT_KILL, str(kill_at), str(tmp), str(out)])
    assert done.returncode == (0 if kill_at == 2 else -9)
    expected = {0: "old", 1: None, 2: "new"}[kill_at]
    if expected is None:
        assert not out.exists()
    else:
        assert {p.name: p.read_text() for p in out.iterdir()} == dict.fromkeys(
            ("model.onnx", "export.json", "tokenizer.json"), expected
        )
    assert len(_leftovers(out)) == {0: 2, 1: 2, 2: 0}[kill_at]  # the new one and the (empty, then whole) old one
    _remove_leftovers(out)
    left = sorted(p.name for p in tmp_path.iterdir())
    assert not _leftovers(out) and left == [".onnx.bak"] + (["onnx"] if expected else [])


def _deploy_until(command: list[str], done, what: str) -> None:
    """Start `command` and SIGKILL it as soon as `done()` holds (polled every 20 ms)."""
    import signal
    import time

    killed = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not done():
        assert killed.poll() is None, f"it ended before {what}: " + killed.communicate()[1][-3000:]
        assert time.time() < deadline, f"not {what} within 120 s"
        time.sleep(0.02)
    killed.send_signal(signal.SIGKILL)
    killed.wait()


@pytest.mark.slow  # two deploy processes and four ONNX exports
def test_a_killed_deploy_leaves_the_tables_and_its_rerun_completes(tiny_classifier, tmp_path):
    """`python -m xdlib.deploy A B` killed once A is exported and measured, while B's export is being written: the
    committed tables are untouched, no raw JSON is written, B/onnx is absent (not half-written). The same command
    then completes, reusing A's complete exports, and no killed export's temporary folder is left."""
    import shutil

    from xdlib.deploy.export import TMP, _current_meta

    (a, b), out = (tmp_path / "a", tmp_path / "b"), tmp_path / "results"
    for run in (a, b):
        shutil.copytree(tiny_classifier, run)
    (out / "tables").mkdir(parents=True)
    committed = {name: f"committed {name}\n" for name in ("deploy.csv", "deploy.md")}
    for name, text in committed.items():
        (out / "tables" / name).write_text(text)
    command = [sys.executable, "-m", "xdlib.deploy", str(a), str(b), "--rows", "8", "--threads", "1", "--out", str(out)]

    _deploy_until(command, lambda: list(b.glob(f".onnx.{TMP}*")), "exporting B after measuring A")
    assert {p.name: p.read_text() for p in (out / "tables").iterdir()} == committed
    assert not (out / "benchmarks").exists() and not (b / "onnx").exists() and list(b.glob(f".onnx.{TMP}*"))
    made = {f: (a / f / "export.json").stat().st_mtime_ns for f in ("onnx", "onnx-int8")}  # complete, reused below

    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert not list(tmp_path.glob(f"*/.onnx*.{TMP}*")), "a killed export's temporary folder is left"
    assert {f: (a / f / "export.json").stat().st_mtime_ns for f in made} == made
    for run in (a, b):
        for folder in ("onnx", "onnx-int8"):
            assert _current_meta(run / folder, run / "model") is not None
    assert (out / "tables" / "deploy.md").read_text().count("| toy-sentiment |") == 2
    assert len(list((out / "benchmarks").glob("deploy-*.json"))) == 1
