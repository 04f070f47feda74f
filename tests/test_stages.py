"""The stage registry: what enters a run id (computed in one place, kept as run_id.json), what `explain` says about a
run, and that the sweep's reuse is the registry's."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest

from xdlib import stages
from xdlib.__main__ import main
from xdlib.config import STAGE_SECTIONS, UNHASHED, Config, fields_of

SMALL = {"max_train_samples": 48, "max_eval_samples": 24, "teacher_epochs": 1.0}


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory, tiny_encoder):
    from conftest import smoke_params

    tmp = tmp_path_factory.mktemp("stages")
    cfg = Config.from_dict(smoke_params(tmp, tiny_encoder) | SMALL)
    return cfg, stages.ensure("teacher", cfg)


def test_the_registry_declares_each_stage_once_upstream_first():
    assert list(stages.STAGES) == ["teacher", "distill", "stilts", "finetune"]
    for name, spec in stages.STAGES.items():
        assert set(spec.sections) <= set(STAGE_SECTIONS[name]), name  # it hashes only what it reads
        assert not set(spec.sections) & set(UNHASHED)
    cfg = Config()
    assert stages.chain("finetune", cfg) == ["teacher", "distill", "finetune"]
    assert stages.chain("finetune", cfg.replace(student="stilts")) == ["stilts", "finetune"]
    assert stages.chain("finetune", cfg.replace(student="undistilled")) == ["finetune"]


def test_a_run_id_is_the_hash_of_its_payload_and_every_run_keeps_it(teacher_run):
    cfg, path = teacher_run
    payload = stages.id_payload("teacher", cfg)
    assert set(payload) == {"stage", "fields", "upstream", "precision", "task_version", "engine"}
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:10]
    assert path.name == f"toy-sentiment-{digest}" == stages.run_id("teacher", cfg)
    assert json.loads((path / "run_id.json").read_text()) == json.loads(json.dumps(payload))
    # the system section never enters it; every other field of the stage's sections does
    assert not set(payload["fields"]) & {f.name for f in fields_of() if f.metadata["section"] in UNHASHED}
    downstream = stages.id_payload("distill", cfg)
    assert downstream["upstream"] == path.name and "teacher_lr" not in downstream["fields"]


def test_explain_says_why_a_run_is_reused_made_or_remade(teacher_run, capsys, tmp_path):
    cfg, path = teacher_run
    assert main(["explain", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"teacher run {path.name}" in out and "run_id.json is the payload computed now" in out
    assert f"teacher   {path.name}: reuse (a complete run has this id" in out
    assert '"teacher_lr": 0.003' in out  # the hashed payload is printed

    store = ["-p", f"runs_dir={cfg.runs_dir}", "-p", f"teacher_model={cfg.teacher_model}", "-p", "progress=false"]
    small = [x for k, v in SMALL.items() for x in ("-p", f"{k}={v}")]
    fixed = ["-p", "source_task=toy-sentiment", "-p", "max_length=32", "-p", "teacher_lr=0.003", "-p", "warmup_ratio=0"]
    fixed += ["-p", "teacher_batch_size=16", "-p", "evals_per_epoch=2", "-p", "patience=20"]
    assert main(["explain", "distill", *store, *small, *fixed]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith(f"  teacher   {path.name}: reuse") for line in lines), lines
    assert any("distill" in line and ": make (no complete run with this id)" in line for line in lines), lines

    copy = tmp_path / "teacher" / path.name  # a complete run whose model is gone is made again
    shutil.copytree(path, copy, ignore=shutil.ignore_patterns("model"))
    assert main(["explain", str(copy)]) == 0
    assert ": remake (it is marked DONE but" in capsys.readouterr().out

    assert main(["explain", str(tmp_path)]) == 2  # neither a run folder nor a stage: one line
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "allowed: a run folder" in err


def test_the_sweep_reuses_what_the_registry_says(teacher_run, monkeypatch):
    """plan_jobs has no reuse rule of its own: it asks `stages.state`."""
    from xdlib import sweep

    cfg, _ = teacher_run
    asked = []

    def state(stage, config, top=True):
        asked.append((stage, top))
        return ("reuse", "told") if stage == "teacher" else ("make", "told")

    monkeypatch.setattr(stages, "state", state)
    jobs, _ = sweep.plan_jobs([cfg.replace(device="cpu")])
    assert {j.stage: j.state for j in jobs.values()} == {"teacher": "complete", "distill": "pending",
                                                         "finetune": "pending"}  # fmt: skip
    assert ("teacher", True) in asked  # the distillation below it still has to run: the teacher needs its model


def test_a_lower_is_better_selection_has_its_own_ids(tmp_path):
    """Dev selection by mse (lower is better) was once by the higher score: such runs have ids of their own, and
    every other run keeps its id (no `selection` key)."""
    rows = "".join(f'{{"text": "w{i} x", "label": {i % 5}.0}}\n' for i in range(20))
    (tmp_path / "r.jsonl").write_text(rows)
    local = {"reg": {"kind": "regression", "train": str(tmp_path / "r.jsonl"), "metric": "mse"},
             "reg-pearson": {"kind": "regression", "train": str(tmp_path / "r.jsonl")}}  # fmt: skip
    mse = Config(local_tasks=local, source_task="reg", target_task="reg", student="undistilled")
    assert stages.id_payload("teacher", mse)["selection"] == "lower"
    assert stages.id_payload("finetune", mse)["selection"] == "lower"
    pearson = mse.replace(source_task="reg-pearson", target_task="reg-pearson")
    assert "selection" not in stages.id_payload("teacher", pearson)
    assert "selection" not in stages.id_payload("teacher", Config())


def test_explain_follows_ensure_up_the_chain(teacher_run, tmp_path, capsys):
    """An upstream run counts only when the run below is made: then it must have its model (a teacher without one is
    remade first); below a reused run it is not read."""
    cfg, path = teacher_run
    store = tmp_path / "runs"
    shutil.copytree(path, store / "teacher" / path.name, ignore=shutil.ignore_patterns("model"))
    report = stages.explain("distill", cfg.replace(runs_dir=str(store)))
    actions = {link["stage"]: link["action"][0] for link in report["chain"]}
    assert actions == {"teacher": "remake", "distill": "make"}
    report = stages.explain("teacher", cfg)
    assert [link["action"][0] for link in report["chain"]] == ["reuse"]


def test_the_teacher_stage_refuses_what_only_a_distillation_reads():
    from xdlib.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=r"unknown parameter\(s\) 'phase_dev_eval' for the teacher stage"):
        load_config("teacher", None, {"phase_dev_eval": True})
    assert load_config("distill", None, {"phase_dev_eval": True}).phase_dev_eval
