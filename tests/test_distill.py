"""End-to-end distillation with tiny models on a generated task: losses fall, the student agrees with its
teacher, checkpoints are ordinary HF folders, and an interrupted run resumes to the same weights."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

from xdlib import runs
from xdlib.config import Config, ConfigError
from xdlib.data import encode
from xdlib.heads import predict
from xdlib.stages import ensure, id_payload, run_id
from xdlib.tasks import get_task
from xdlib.train import Interrupted, loss_curve


@pytest.fixture(scope="module")
def distilled(tmp_path_factory, tiny_encoder):
    tmp = tmp_path_factory.mktemp("distill")
    from conftest import smoke_params

    params = smoke_params(tmp, tiny_encoder) | {"distill_epochs": 2.0}  # the quality checks: phases of 2 epochs
    path = ensure("distill", Config.from_dict(params))
    return params, path


def test_every_stage_lowers_its_loss(distilled):
    _, path = distilled
    metrics = json.loads((path / "metrics.json").read_text())
    by_stage = {}
    for phase in metrics["phases"]:
        by_stage.setdefault(phase["phase"].split("-")[1], []).append(phase)
    assert set(by_stage) == {"hidden", "logits", "labels"}
    for stage, phases in by_stage.items():  # first losses of the stage's first phase vs last of its last one
        start, end = sum(phases[0]["first_losses"]) / 5, sum(phases[-1]["last_losses"]) / 5
        assert end < 0.8 * start, (stage, start, end)


def test_student_agrees_with_teacher_on_held_out(distilled):
    params, path = distilled
    metrics = json.loads((path / "metrics.json").read_text())
    teacher_dir = runs.run_dir(params["runs_dir"], "teacher", metrics["teacher_run"]) / "model"
    task = get_task("toy-sentiment")
    data = task.load()
    for split in ("test", "dev"):
        preds = []
        for folder in (teacher_dir, path / "model"):
            model = AutoModelForSequenceClassification.from_pretrained(folder)
            tok = AutoTokenizer.from_pretrained(folder)
            preds.append(predict(model, encode(tok, data[split], task, 32), task, tok.pad_token_id, "cpu"))
        agreement = sum(a == b for a, b in zip(*preds)) / len(data[split])
        assert agreement >= 0.85, (split, agreement)
    assert metrics["dev_teacher_agreement"] == pytest.approx(agreement)  # the run records the same dev agreement
    assert metrics["test_accuracy"] > 0.7  # chance is 0.5
    assert metrics["flops_ratio"] > 2


def test_loss_curve_averages_equal_spans_of_updates():
    assert loss_curve([4.0, 2.0, 3.0, 1.0, 5.0], points=2) == [[3, 3.0], [5, 3.0]]  # (4+2+3)/3, (1+5)/2
    assert loss_curve([1.0, 2.0], points=100) == [[1, 1.0], [2, 2.0]]
    assert loss_curve([]) == []


def test_checkpoint_is_an_ordinary_hf_folder(distilled):
    _, path = distilled
    encoder = AutoModel.from_pretrained(path / "model")
    classifier = AutoModelForSequenceClassification.from_pretrained(path / "model")
    ids = AutoTokenizer.from_pretrained(path / "model")("good movie", return_tensors="pt")
    assert encoder(**ids).last_hidden_state.shape == (1, ids["input_ids"].shape[1], 32)
    assert classifier(**ids).logits.shape == (1, 2)
    assert (path / "DONE").is_file() and (path / "provenance.json").is_file()
    prov = json.loads((path / "provenance.json").read_text())
    assert {"git_sha", "packages", "device", "seeds", "wall_seconds"} <= set(prov)


def test_finetune_reuses_the_distilled_student(distilled):
    params, path = distilled
    before = path.stat().st_mtime
    out = ensure("finetune", Config.from_dict(params))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["distill_run"] == path.name and path.stat().st_mtime == before
    assert metrics["test_accuracy"] > 0.6


@pytest.mark.slow  # in make test, not in make test-fast (over 5 s)
def test_resume_after_interruption_gives_identical_weights(tmp_path, tiny_encoder):
    from conftest import smoke_params

    params = smoke_params(tmp_path / "a", tiny_encoder) | {"checkpoint_every": 3, "distill_epochs": 1.0}
    cfg = Config.from_dict(params)
    calls = {"n": 0}

    def kill_midway(update):
        calls["n"] += 1
        if calls["n"] == 40:  # inside the logits stage, between checkpoints
            raise Interrupted("simulated kill")

    with pytest.raises(Interrupted):
        ensure("distill", cfg, on_update=kill_midway)
    run_dir = runs.run_dir(cfg.runs_dir, "distill", run_id("distill", cfg))
    assert not runs.is_complete(run_dir) and runs.read_metrics(run_dir) is None
    resumed = ensure("distill", cfg)
    straight = ensure("distill", cfg.replace(runs_dir=str(tmp_path / "b" / "runs")))
    a, b = load_file(resumed / "model" / "model.safetensors"), load_file(straight / "model" / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_token_task_distils_on_word_units(tmp_path, tiny_encoder):
    from conftest import smoke_params

    params = smoke_params(tmp_path, tiny_encoder) | {"source_task": "toy-ner", "target_task": "toy-ner"}
    path = ensure("distill", Config.from_dict(params))
    metrics = json.loads((path / "metrics.json").read_text())
    assert metrics["main_metric"] == "f1" and metrics["test_f1"] > 0.5  # entity F1; predicting all O scores 0
    assert metrics["teacher_test"] > 0.5


def test_joint_mode_with_kl_and_attention_loss(tmp_path, tiny_encoder):
    from conftest import smoke_params

    params = smoke_params(tmp_path, tiny_encoder) | {
        "distill_mode": "joint",
        "distill_epochs": 2.0,  # one phase: the whole run
        "logit_loss": "kl",
        "temperature": 2.0,
        "attention_loss": True,
        "student_init": str(tiny_encoder),
        "student_arch": "l2-h64",
        "student_heads": None,
    }
    path = ensure("distill", Config.from_dict(params))
    metrics = json.loads((path / "metrics.json").read_text())
    (phase,) = metrics["phases"]
    assert phase["phase"] == "1-joint"
    assert sum(phase["last_losses"]) < 0.8 * sum(phase["first_losses"])
    assert metrics["test_accuracy"] > 0.7


def test_cache_batch_gathers_ragged_units_from_map_and_resident_copy(tmp_path):
    """Rows offsets[i]:offsets[i]+counts[b] of example i, zero-padded; the same from a resident tensor copy."""
    from xdlib.kd import TeacherCache

    offsets = np.array([0, 2, 3, 6])  # examples own 2, 1 and 3 unit rows
    hidden = np.arange(6 * 4 * 2, dtype=np.float16).reshape(6, 4, 2)  # (rows, states, width)
    logits = np.arange(6 * 3, dtype=np.float16).reshape(6, 3)
    for name, array in (("hidden", hidden), ("logits", logits), ("offsets", offsets)):
        np.save(tmp_path / f"{name}.npy", array)
    (tmp_path / "layers.json").write_text("[0, 1, 2, 3]")  # the teacher states this cache holds
    mapped = TeacherCache.open(tmp_path)
    resident = TeacherCache(
        mapped.hidden, mapped.logits, mapped.offsets, mapped.layers, (torch.tensor(hidden), torch.tensor(logits))
    )
    for cache in (mapped, resident):
        h, lg, mask = cache.batch([2, 0], [3, 1], [1, 3], "cpu")  # example 0 trimmed to 1 unit by the student
        assert h.shape == (2, 3, 2, 2) and lg.shape == (2, 3, 3) and mask.tolist() == [[1, 1, 1], [1, 0, 0]]
        assert torch.equal(h[0], torch.tensor(hidden[3:6][:, [1, 3]], dtype=torch.float32))
        assert torch.equal(h[1, 0], torch.tensor(hidden[0][[1, 3]], dtype=torch.float32))
        assert not h[1, 1:].any() and not lg[1, 1:].any()
        assert torch.equal(lg[0], torch.tensor(logits[3:6], dtype=torch.float32))


def test_phases_report_where_their_time_went(distilled):
    _, path = distilled
    metrics = json.loads((path / "metrics.json").read_text())
    assert 0 < metrics["test_chance"] < 1  # best constant prediction on the same test rows, beside test_accuracy
    scored = [p["best_dev"] is not None for p in metrics["phases"]]
    for phase, was_scored in zip(metrics["phases"], scored):
        seconds = phase["seconds"]
        assert set(seconds) == {"total", "steps", "eval", "checkpoint"}
        assert (seconds["eval"] > 0) == was_scored and seconds["checkpoint"] > 0 and seconds["steps"] > 0
        assert seconds["steps"] + seconds["eval"] + seconds["checkpoint"] == pytest.approx(seconds["total"], abs=1e-3)


@pytest.mark.parametrize("phase_dev_eval", [False, True])
def test_distillation_scores_a_phase_only_where_it_selects(tmp_path, tiny_encoder, phase_dev_eval):
    from conftest import smoke_params

    # one update a phase (no floor): every phase evaluates once, no choice to make
    params = smoke_params(tmp_path, tiny_encoder) | {"evals_per_epoch": 1, "distill_epochs": 0.01,
                                                     "phase_min_updates": 0}  # fmt: skip
    cfg = Config.from_dict(params | {"phase_dev_eval": phase_dev_eval})
    metrics = json.loads((ensure("distill", cfg) / "metrics.json").read_text())
    assert len(metrics["phases"]) == 9 and all(p["updates"] == 1 for p in metrics["phases"])
    assert all((p["best_dev"] is not None) == phase_dev_eval for p in metrics["phases"])
    assert all((p["seconds"]["eval"] > 0) == phase_dev_eval for p in metrics["phases"])


def test_single_evaluation_phases_are_scored_only_on_request(tmp_path):
    """A phase that evaluates once selects nothing: it is not scored unless phase_dev_eval asks for diagnostics;
    either way it ends with the same weights (evaluation draws no random numbers)."""
    from torch import nn

    from xdlib.train import LoopSettings, train

    def run(select_only: bool, name: str, epochs: float = 1.0):
        torch.manual_seed(0)
        model = nn.Linear(4, 1)
        x = torch.randn(16, 4)  # one batch: one update an epoch
        calls = []

        class Loss(nn.Module):
            def __init__(self):
                super().__init__()
                self.model = model

            def forward(self, batch):
                return self.model(x[batch["idx"]]).pow(2).mean()

        def evaluate():
            calls.append(1)
            return -float(model.weight.detach().abs().sum())

        settings = LoopSettings(epochs=epochs, lr=0.01, batch_size=16, evals_per_epoch=1, progress=False)
        summary = train(Loss(), list(model.parameters()), [1] * 16, lambda idx: {"idx": torch.tensor(idx)},
                        settings, tmp_path / name, evaluate=evaluate, select_only=select_only)  # fmt: skip
        return summary, len(calls), model.weight.detach().clone()

    skipped, n_skipped, w_skipped = run(True, "a")
    scored, n_scored, w_scored = run(False, "b")
    assert n_skipped == 0 and skipped["best_dev"] is None and skipped["seconds"]["eval"] == 0
    # scored: the starting weights and the final ones (evaluation draws no random numbers: the same weights)
    assert n_scored == 2 and scored["best_dev"] is not None and torch.equal(w_skipped, w_scored)
    assert run(True, "c", epochs=2.0)[1] == 3  # two evaluations in the run: a choice, so they happen, and the start


def test_stilts_trains_the_twin_on_the_source_then_the_target(tmp_path, tiny_encoder):
    """student=stilts: the undistilled twin fine-tuned on the source task (its own run, with a model, independent
    of the distillation recipe), then on the target with a fresh head."""
    from conftest import smoke_params

    params = smoke_params(tmp_path, tiny_encoder) | {"student": "stilts", "target_task": "toy-regression"}
    cfg = Config.from_dict(params)
    assert run_id("stilts", cfg) == run_id("stilts", cfg.replace(distill_lr=1.0))
    assert run_id("stilts", cfg) != run_id("stilts", cfg.replace(teacher_lr=1e-2))
    path = ensure("finetune", cfg)
    (stilts,) = (tmp_path / "runs" / "stilts").iterdir()
    source = json.loads((stilts / "metrics.json").read_text())
    assert source["stage"] == "stilts" and source["test_accuracy"] > 0.7  # toy-sentiment, chance 0.5
    target = json.loads((path / "metrics.json").read_text())
    assert target["upstream_run"] == stilts.name and target["distill_run"] is None
    assert target["test_pearson"] > 0.5
    assert not (tmp_path / "runs" / "distill").exists() and not (tmp_path / "runs" / "teacher").exists()


def test_general_stage_matches_the_pretrained_teacher_first(tmp_path, tiny_encoder):
    """distill_stages [general, ...]: a first hidden-state phase against the *pretrained* teacher's outputs over
    the transfer text (their own cache), then the task stages against the fine-tuned teacher's."""
    from conftest import smoke_params

    params = smoke_params(tmp_path, tiny_encoder) | {"distill_stages": ["general", "hidden", "logits"]}
    with pytest.raises(ConfigError, match="general first if present"):
        Config.from_dict(params | {"distill_stages": ["hidden", "general"]})
    path = ensure("distill", Config.from_dict(params))
    metrics = json.loads((path / "metrics.json").read_text())
    general, hidden = metrics["phases"][0], metrics["phases"][1]
    assert general["phase"] == "1-general" and hidden["phase"] == "2-hidden"
    assert sum(general["last_losses"]) < 0.8 * sum(general["first_losses"])
    caches = sorted((tmp_path / "cache" / "teacher-outputs").iterdir())
    assert len(caches) == 3  # transfer and dev of the fine-tuned teacher, transfer of the pretrained one
    hiddens = [np.load(c / "hidden.npy") for c in caches]
    shapes = [h.shape for h in hiddens]
    transfer = [h for h in hiddens if shapes.count(h.shape) == 2]  # the two caches over the transfer text
    assert len(transfer) == 2 and not np.allclose(*transfer)  # two teachers over the same text differ


def test_multi_source_teacher_is_trained_on_each_source_in_turn(tmp_path, tiny_encoder):
    """teacher_sources: fine-tuned on each listed task first (its own head), then on source_task; a teacher
    without them keeps the run id it had before the field existed."""
    from conftest import smoke_params

    params = smoke_params(tmp_path, tiny_encoder) | {"teacher_epochs": 3.0}
    single = Config.from_dict(params)
    assert "teacher_sources" not in id_payload("teacher", single)["fields"]
    cfg = Config.from_dict(params | {"teacher_sources": ["toy-regression"]})
    assert run_id("teacher", cfg) != run_id("teacher", single)
    metrics = json.loads((ensure("teacher", cfg) / "metrics.json").read_text())
    (first,) = metrics["teacher_sources"]
    assert first["task"] == "toy-regression" and first["updates"] > 0 and first["best_dev"] > 0.5  # dev pearson
    assert metrics["test_accuracy"] > 0.7  # then toy-sentiment, chance 0.5
    with pytest.raises(ConfigError, match="teacher_sources entry 'toy-sentiment' is not allowed"):
        from xdlib.preflight import preflight

        preflight(Config.from_dict(params | {"teacher_sources": ["toy-sentiment"]}), network=False)


@pytest.mark.slow  # in make test, not in make test-fast (over 5 s)
def test_a_fine_tuning_is_interrupted_where_asked_and_resumes(tmp_path, tiny_encoder):
    """`ensure("finetune", cfg, on_update=...)` reaches the fine-tuning's own loop (a kill there leaves no complete
    run), and the rerun completes it."""
    from conftest import smoke_params

    cfg = Config.from_dict(smoke_params(tmp_path, tiny_encoder) | {"checkpoint_every": 2})
    ensure("distill", cfg)

    def kill(update):
        if update == 3:
            raise Interrupted("simulated kill")

    with pytest.raises(Interrupted):
        ensure("finetune", cfg, on_update=kill)
    run_dir = runs.run_dir(cfg.runs_dir, "finetune", run_id("finetune", cfg))
    assert not runs.is_complete(run_dir) and list((run_dir / "checkpoints").glob("*/trainer.json"))
    assert runs.is_complete(ensure("finetune", cfg))
