"""Faults: a small real study killed with SIGKILL at seven moments drawn at random, rerun after each kill, ends with
the tables of an uninterrupted run; a full disk fails in one line and the run resumes once there is space.

The kills come from fault points in the library (`runs.fault`, XDLIB_FAULT="<point>:<n>"): the process kills itself
the n-th time it reaches the point, so each kill lands where it is meant to (a time-based kill would mostly land
in the imports). The studies run as children of a forkserver that imported torch once: a start costs 0.1 s, not
25 s, and each child is a fresh process, killed for real.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import random
import re
import signal
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from conftest import smoke_params

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
# what a clock measured, not what was trained: differs between any two runs, killed or not
TIMED = re.compile(r"(^|_)(start|end|seconds|wall_seconds|inference_s|speedup(_measured)?)$|_seconds$")


def _context():
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["xdlib.stages", "xdlib.sweep", "xdlib.report", "xdlib.__main__"])
    return ctx


def _cli(args: list[str], fault: str | None, log: str) -> None:
    """A child: `python -m xdlib <args>` with XDLIB_FAULT set, its output in `log`."""
    if fault:
        os.environ["XDLIB_FAULT"] = fault
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    from xdlib.__main__ import main

    sys.exit(main(args))


def _run(ctx, args: list[str], fault: str | None, log: Path) -> int:
    child = ctx.Process(target=_cli, args=(args, fault, str(log)))
    child.start()
    child.join(600)
    return child.exitcode


def _params(root: Path, encoder: Path, name: str) -> Path:
    values = smoke_params(root / name, encoder) | {"name": "faults", "checkpoint_every": 4, "teacher_epochs": 4.0}
    values["grid"] = {"target_task": ["toy-sentiment", "toy-regression"]}
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def _untimed(csv: Path) -> pd.DataFrame:
    frame = pd.read_csv(csv)
    return frame[[c for c in frame.columns if not TIMED.search(c) and c != "git_dirty"]]


def _metrics(path: Path) -> dict:
    return {k: v for k, v in json.loads(path.read_text()).items() if not TIMED.search(k) and k != "phases"}


def test_study_killed_at_random_moments_ends_with_the_uninterrupted_tables(tmp_path, tiny_encoder):
    ctx = _context()
    params = _params(tmp_path, tiny_encoder, "study")  # both studies run at this path: the same runs_dir in the tables
    study = ["study", str(params), "--executor", "direct"]
    assert _run(ctx, study, None, tmp_path / "straight.log") == 0
    (tmp_path / "study").rename(tmp_path / "straight")
    rng = random.Random(20261126)
    moments = [  # (where, XDLIB_FAULT): each rerun goes on from where the kill before it left the store
        ("teacher training, between checkpoints", f"update:{rng.randint(2, 50)}"),
        ("writing the teacher cache", f"cache:{rng.randint(1, 6)}"),
        ("inside a distillation phase", f"update:{rng.randint(5, 60)}"),
        ("while a checkpoint is written", f"checkpoint:{rng.randint(1, 6)}"),
        ("while a model folder is written", "save:1"),
        ("after metrics.json, before DONE", "run:1"),
        ("during the report", f"report:{rng.randint(1, 6)}"),
    ]
    runs, reference = tmp_path / "study" / "runs", tmp_path / "straight" / "runs"
    for where, fault in moments:
        code = _run(ctx, study, fault, tmp_path / "killed.log")
        assert code == -signal.SIGKILL, (where, fault, code, (tmp_path / "killed.log").read_text()[-2000:])
        for done in runs.glob("*/*/DONE"):  # nothing half-written counts: every complete run is the reference's
            run = done.relative_to(runs).parent
            assert _metrics(runs / run / "metrics.json") == _metrics(reference / run / "metrics.json"), (where, run)
    assert _run(ctx, study, None, tmp_path / "killed.log") == 0
    assert sorted(p.relative_to(runs) for p in runs.glob("*/*/DONE")) == sorted(
        p.relative_to(reference) for p in reference.glob("*/*/DONE")
    )
    a, b = tmp_path / "straight" / "tables", tmp_path / "study" / "tables"
    for name in ("results_matrix", "results_long", "augmentation", "headline"):  # scores only: byte for byte
        for ext in ("csv", "md"):
            assert (a / f"{name}.{ext}").read_bytes() == (b / f"{name}.{ext}").read_bytes(), f"{name}.{ext}"
    for name in ("architectures", "runs"):  # and every column that is not a clock reading
        pd.testing.assert_frame_equal(_untimed(a / f"{name}.csv"), _untimed(b / f"{name}.csv"), check_exact=True)
    figure = "figures/scores_matrix.png"  # written for any study (transfer_matrix.png needs a twin to pair with)
    assert (tmp_path / "straight" / figure).read_bytes() == (tmp_path / "study" / figure).read_bytes()


def test_a_run_marked_done_but_damaged_is_named_never_counted_and_made_again(tmp_path, base_params, caplog):
    from safetensors.torch import load_file

    from xdlib.config import Config
    from xdlib.report import build_report, collect
    from xdlib.stages import ensure

    cfg = Config.from_dict(base_params | {"distill_epochs": 1.0, "finetune_epochs": 1.0})
    finetune = ensure("finetune", cfg)
    distill, teacher = finetune.parent.parent / "distill", finetune.parent.parent / "teacher"
    (distill,), (teacher,) = distill.iterdir(), teacher.iterdir()
    weights = {k: v.clone() for k, v in load_file(teacher / "model" / "model.safetensors").items()}  # not mmapped
    (finetune / "metrics.json").write_text('{"test_accuracy": 0.9')  # cut short
    (distill / "metrics.json").unlink()
    data = (teacher / "model" / "model.safetensors").read_bytes()
    (teacher / "model" / "model.safetensors").write_bytes(data[: len(data) // 2])
    frame = collect(cfg.runs_dir)
    assert list(frame["stage"]) == ["teacher"]  # its metrics are whole: it counts for the report, not as a model
    build_report(cfg.runs_dir, tmp_path / "out")
    said = caplog.text
    assert f"finetune/{finetune.name} is marked DONE but metrics.json is unreadable" in said
    assert f"distill/{distill.name} is marked DONE but metrics.json is missing" in said
    caplog.clear()
    assert ensure("finetune", cfg) == finetune  # made again, each damaged run named as it goes
    said = caplog.text
    for stage, run, what in [("teacher", teacher, "model/model.safetensors is corrupt"),
                             ("distill", distill, "metrics.json is missing"),
                             ("finetune", finetune, "metrics.json is unreadable")]:  # fmt: skip
        assert f"{stage}/{run.name} is marked DONE but {what}: making it again" in said
    assert len(collect(cfg.runs_dir)) == 3
    again = load_file(teacher / "model" / "model.safetensors")
    assert all(torch.equal(weights[k], again[k]) for k in weights)  # the same teacher, trained again


def test_a_full_disk_fails_in_one_line_and_the_run_resumes_once_there_is_space(tmp_path, base_params):
    ctx = _context()
    for name in ("full", "straight"):
        values = base_params | {"runs_dir": str(tmp_path / name / "runs"), "cache_dir": str(tmp_path / name / "cache")}
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(values | {"checkpoint_every": 4}))
    run = ["run", "teacher", "--params"]
    assert _run(ctx, [*run, str(tmp_path / "straight.yaml")], None, tmp_path / "straight.log") == 0
    log = tmp_path / "full.log"  # every write of a checkpoint from the 5th on meets a full disk
    assert _run(ctx, [*run, str(tmp_path / "full.yaml")], "checkpoint:5:enospc", log) == 1
    said = log.read_text()
    assert "Traceback" not in said and said.count("error:") == 1, said[-3000:]
    last = said.strip().splitlines()[-1]
    assert last.startswith("error: the disk is full writing ") and "last.tmp" in last and "resumes" in last, last
    (teacher,) = (tmp_path / "full" / "runs" / "teacher").iterdir()
    assert not (teacher / "DONE").exists() and (teacher / "checkpoints" / "last" / "trainer.json").is_file()
    assert json.loads((teacher / "checkpoints" / "last" / "trainer.json").read_text())["update"] == 16
    assert _run(ctx, [*run, str(tmp_path / "full.yaml")], None, log) == 0  # space is back: it resumes
    (straight,) = (tmp_path / "straight" / "runs" / "teacher").iterdir()
    assert _metrics(teacher / "metrics.json") == _metrics(straight / "metrics.json")


def test_two_sweeps_started_at_once_on_one_store_make_each_run_once(tmp_path, base_params):
    ctx = _context()
    params = tmp_path / "sweep.yaml"
    params.write_text(yaml.safe_dump(base_params | {"grid": {"target_task": ["toy-sentiment", "toy-regression"]}}))
    children = [
        ctx.Process(target=_cli, args=(["sweep", str(params), "-p", f"name={n}", "--executor", "direct"], None, log))
        for n, log in (("one", str(tmp_path / "one.log")), ("two", str(tmp_path / "two.log")))
    ]
    for child in children:
        child.start()
    for child in children:
        child.join(600)
    assert [c.exitcode for c in children] == [0, 0], (tmp_path / "one.log").read_text()[-2000:]
    runs = Path(base_params["runs_dir"])
    assert len(list(runs.glob("*/*/DONE"))) == 4  # teacher, distillation, two fine-tunings
    journals = sorted((runs / ".locks").glob("*.lock"))  # a line per completed making of a run
    assert len(journals) == 4 and [j.read_text().count("made ") for j in journals] == [1, 1, 1, 1]
    for name in ("one", "two"):
        status = pd.read_csv(runs.parent / "sweeps" / name / "status.csv")
        assert set(status["state"]) <= {"done", "complete"}, status
