"""Issue 24, items 6 and 7: run ids and reuse do not depend on the machine that plans, and what is derived from a
run (teacher caches, ONNX exports) is as fresh as the run's weights; a shared teacher cache is built once."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from xdlib import runs

ROWS = 24  # transfer rows of the cache tests: one batch


# ---- 6. a sweep planned where there is no GPU, run where there is one ------------------------------------------


def test_a_sweep_planned_without_cuda_and_run_with_it_records_the_runs_it_made(tmp_path, base_params, monkeypatch):
    """Planned on a 'login node' (no CUDA: `device: auto` ids say fp32), executed on a 'GPU node' (CUDA: the jobs
    make bf16 runs). CUDA is mocked only where a run id reads it (`precision`), so everything still computes on the
    CPU; the notebooks run in this process (papermill stubbed by what the notebooks do: `ensure` each config). No
    cell fails or is blocked, and the status names the runs the jobs made; a second sweep planned without CUDA
    finds them."""
    import papermill

    from xdlib import sweep as sweep_module
    from xdlib.config import Config, with_target_settings
    from xdlib.notebook import stage_configs
    from xdlib.stages import chain, ensure, run_id

    gpu = {"present": False}
    precision = Config.precision

    def machine_precision(self):
        with pytest.MonkeyPatch.context() as m:
            m.setattr(torch.cuda, "is_available", lambda: gpu["present"])
            return precision(self)

    monkeypatch.setattr(Config, "precision", machine_precision)
    plan_jobs = sweep_module.plan_jobs

    def planned_on_the_login_node(configs, **kwargs):
        planned = plan_jobs(configs, **kwargs)
        gpu["present"] = True  # the jobs run on a GPU node
        return planned

    monkeypatch.setattr(sweep_module, "plan_jobs", planned_on_the_login_node)

    def notebook(input_path, output_path, parameters, **_):  # what notebooks/<stage>.ipynb does
        stage = Path(input_path).stem
        for cfg in stage_configs(stage, dict(parameters)):
            ensure(stage, cfg)

    monkeypatch.setattr(papermill, "execute_notebook", notebook)
    small = {
        "teacher_epochs": 1.0,
        "distill_epochs": 1.0,
        "finetune_epochs": 1.0,
        "max_train_samples": 32,
        "target_max_train_samples": 32,
        "max_eval_samples": 32,
        "evals_per_epoch": 1,
    }
    values = base_params | small | {"name": "login", "grid": {"target_task": ["toy-sentiment", "toy-regression"]}}
    params = tmp_path / "login.yaml"
    params.write_text(yaml.safe_dump(values))

    status = sweep_module.sweep(params, executor="inline")
    assert list(status["state"]) == ["done", "done"], status[["state", "error"]]
    store = Path(base_params["runs_dir"])
    for target, row in zip(("toy-sentiment", "toy-regression"), status.to_dict("records")):
        cfg = Config.from_dict(with_target_settings({**values, "target_task": target}))
        assert cfg.precision() == "bf16"  # the GPU node's
        for stage in chain("finetune", cfg):
            assert row[f"{stage}_run"] == run_id(stage, cfg)
            assert runs.is_complete(store / stage / row[f"{stage}_run"])
    made = {p.parent.name for p in store.glob("*/*/DONE")}
    assert made == {r for col in ("teacher_run", "distill_run", "finetune_run") for r in status[col]}
    stamps = {p: p.stat().st_mtime_ns for p in store.glob("*/*/DONE")}

    gpu["present"] = False  # planned on the login node again: its fp32 ids are not there, the jobs find theirs
    again = sweep_module.sweep(params, executor="inline")
    assert list(again["state"]) == ["complete", "complete"], again[["state", "error"]]
    assert list(again["finetune_run"]) == list(status["finetune_run"])
    assert {p: p.stat().st_mtime_ns for p in store.glob("*/*/DONE")} == stamps  # nothing made twice


# ---- 7. derived artefacts follow the weights they came from --------------------------------------------------


def _classifier(encoder: Path, seed: int):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_pretrained(encoder, num_labels=2)
    return model.eval(), AutoTokenizer.from_pretrained(encoder)


def _teacher_run(root: Path, encoder: Path, seed: int) -> Path:
    """A complete teacher run folder (model/, config.yaml, metrics.json, DONE) with a seeded head."""
    path = root / "runs" / "teacher" / "toy-sentiment-0123456789"
    path.mkdir(parents=True, exist_ok=True)
    runs.save_hf(*_classifier(encoder, seed), path / "model")
    (path / "config.yaml").write_text("source_task: toy-sentiment\n")
    runs.write_json(path / "metrics.json", {"stage": "teacher"})
    (path / "DONE").write_text("")
    return path


def test_a_teacher_remade_under_its_id_gets_a_new_cache(tmp_path, base_params, tiny_encoder):
    """The teacher-output cache of a teacher run remade under the same id (other weights) is built again, from the
    new weights; while the weights stay, it is reused."""
    from xdlib.config import Config
    from xdlib.stages import Run
    from xdlib.stages.distill import teacher_caches
    from xdlib.tasks import get_task

    cfg = Config.from_dict(base_params)
    task = get_task("toy-sentiment")
    rows = {"transfer": task.load()["train"][:ROWS]}
    teacher_dir = _teacher_run(tmp_path, tiny_encoder, seed=0)
    run = Run(tmp_path / "runs" / "distill" / "d", torch.device("cpu"), {"teacher": teacher_dir})

    def logits() -> np.ndarray:
        from xdlib.models import load_with_head

        teacher, tok = load_with_head(str(teacher_dir / "model"), task.head, task.num_labels)
        return np.array(teacher_caches(cfg, run, teacher, tok, task, rows, [0, 2, 4])["transfer"].logits)

    first = logits()
    assert np.array_equal(logits(), first)  # the same weights: reused
    teacher_dir.joinpath("DONE").unlink()  # remade under its id, with another head
    runs.save_hf(*_classifier(tiny_encoder, seed=1), teacher_dir / "model")
    (teacher_dir / "DONE").write_text("")
    second = logits()
    assert not np.allclose(second, first), "the cache of the old weights was reused"
    fresh = tmp_path / "fresh"
    from xdlib.kd import build_teacher_cache
    from xdlib.models import load_with_head

    teacher, tok = load_with_head(str(teacher_dir / "model"), task.head, task.num_labels)
    built = build_teacher_cache(teacher, tok, rows["transfer"], task, cfg.max_length, fresh, "cpu", layers=[0, 2, 4])
    assert np.array_equal(second, np.array(built.logits))  # the new weights' outputs
    journals = list((Path(cfg.cache_dir) / ".locks").glob("teacher-outputs-*.lock"))
    assert [j.read_text().count("made ") for j in journals] == [2]  # built twice: once per weights


def test_reopen_removes_what_was_derived_from_the_run(tmp_path):
    run = tmp_path / "runs" / "teacher" / "t-0123456789"
    for folder in ("model", "onnx", "onnx-int8"):
        (run / folder).mkdir(parents=True)
        (run / folder / "x").write_text("")
    for name in ("DONE", "metrics.json", "weights.json"):
        (run / name).write_text("{}")
    runs.reopen(run)
    assert sorted(p.name for p in run.iterdir()) == ["metrics.json", "model"]


@pytest.mark.slow  # in make test, not in make test-fast (over 5 s)
def test_an_export_of_weights_since_remade_is_redone(tmp_path, tiny_encoder):
    """RUN_DIR/onnx records the digest of the weights it was exported from: after the run's model is remade it is
    neither quantised to int8 nor reused, but exported again; an export of the current weights is reused."""
    pytest.importorskip("onnxruntime")
    from xdlib.deploy import serve
    from xdlib.deploy.export import _fp32_export_of, export

    run = tmp_path / "run"
    runs.save_hf(*_classifier(tiny_encoder, seed=0), run / "model")
    (run / "config.yaml").write_text("source_task: toy-sentiment\n")
    export(run)  # RUN_DIR/onnx
    assert _fp32_export_of(run, run / "model") == run / "onnx" / "model.onnx"
    runs.save_hf(*_classifier(tiny_encoder, seed=1), run / "model")  # the run remade: other weights
    assert _fp32_export_of(run, run / "model") is None, "int8 would quantise the old weights' graph"

    from xdlib.deploy.export import exported

    texts = ["good film", "a bad , dull film", "great"]
    assert exported(run) == run / "onnx"
    stamp = (run / "onnx" / "model.onnx").stat().st_mtime_ns
    new = serve.load(run / "model").logits(texts)
    assert abs(serve.load(run / "onnx").logits(texts) - new).max() < 1e-4  # the new weights'
    assert exported(run) == run / "onnx" and (run / "onnx" / "model.onnx").stat().st_mtime_ns == stamp  # reused
    int8 = exported(run, int8=True)
    assert json.loads((int8 / "export.json").read_text())["quantized_from"] == str(run / "onnx" / "model.onnx")


# ---- 7. two distillations that share a teacher cache build it once -----------------------------------------


def _build_in_child(encoder: str, cache: str, rows: list, marker: str, barrier, out: str) -> None:
    """A child: build (or open) the teacher cache at `cache` once `barrier` lets both children go. Each build
    writes this process's id to `marker` and takes a second (so the two would overlap without a lock)."""
    from xdlib import kd
    from xdlib import runs as child_runs
    from xdlib.models import load_with_head
    from xdlib.tasks import get_task

    real = child_runs.fault

    def slow(point, path=None):
        if point == "cache":
            with open(marker, "a") as fh:
                fh.write(f"{os.getpid()}\n")
            time.sleep(1.0)
        real(point, path)

    child_runs.fault = slow
    task = get_task("toy-sentiment")
    teacher, tok = load_with_head(encoder, task.head, task.num_labels)
    barrier.wait(60)
    built = kd.build_teacher_cache(teacher, tok, rows, task, 32, Path(cache), "cpu", layers=[0, 4])
    Path(out).write_text(json.dumps(np.array(built.logits).tolist()))


def test_two_processes_that_want_one_teacher_cache_build_it_once(tmp_path, tiny_encoder):
    from xdlib.tasks import get_task

    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["xdlib.kd", "xdlib.models"])
    teacher = tmp_path / "teacher"
    model, tok = _classifier(tiny_encoder, seed=0)
    model.save_pretrained(teacher)
    tok.save_pretrained(teacher)
    rows = get_task("toy-sentiment").load()["train"][:ROWS]
    cache, marker = tmp_path / "cache" / "teacher-outputs" / "shared", tmp_path / "builds.txt"
    barrier = ctx.Barrier(2)
    outs = [tmp_path / f"out-{i}.json" for i in range(2)]
    children = [
        ctx.Process(target=_build_in_child, args=(str(teacher), str(cache), rows, str(marker), barrier, str(o)))
        for o in outs
    ]
    for child in children:
        child.start()
    for child in children:
        child.join(300)
    assert [c.exitcode for c in children] == [0, 0]
    assert len(marker.read_text().split()) == 1, "the cache was built by both processes"
    assert json.loads(outs[0].read_text()) == json.loads(outs[1].read_text())
    (journal,) = (tmp_path / "cache" / ".locks").glob("*.lock")
    assert journal.read_text().count("made ") == 1


def test_a_slurm_sweep_leaves_reuse_of_auto_jobs_to_the_node_that_runs_them(base_params, monkeypatch):
    """A login node without CUDA sees an fp32 run of an `auto` job: it must not skip the job, whose GPU node would
    make (or find) a bf16 one. Local executors run here, so there the planner's answer stands."""
    from xdlib import sweep as sweep_module
    from xdlib.config import Config

    monkeypatch.setattr(sweep_module.runs, "is_complete", lambda path: True)
    monkeypatch.setattr(sweep_module.runs, "damage", lambda path, needs_model=False: None)
    auto = Config.from_dict(base_params | {"device": "auto"})
    cpu = Config.from_dict(base_params | {"device": "cpu"})
    for remote, want in ((True, "pending"), (False, "complete")):
        jobs, _ = sweep_module.plan_jobs([auto], remote=remote)
        assert {j.state for j in jobs.values()} == {want}, remote
    jobs, _ = sweep_module.plan_jobs([cpu], remote=True)  # a fixed device has one id wherever it is computed
    assert {j.state for j in jobs.values()} == {"complete"}
