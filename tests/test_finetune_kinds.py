"""Every task kind fine-tunes a tiny model end to end (stages.ensure) and beats chance on its test split; the heads
and the fine-tuning stage: the selected weights' dev metrics, frozen word embeddings, an undistilled baseline's head
(from finetune_seed), and an encoder that does not fit its head model (refused)."""

import json
from collections import Counter

import pytest

from xdlib.config import Config, ConfigError
from xdlib.stages import ensure, id_payload, run_id
from xdlib.tasks import get_task


def chance(name: str) -> float:
    """The score of the best constant prediction on the test split, in the task's main metric."""
    task = get_task(name)
    test = task.load()["test"]
    if task.kind in ("single", "pair"):
        return max(Counter(r["label"] for r in test).values()) / len(test)
    if task.kind == "qa":  # always "no answer": F1 100 on NoAns questions, 0 elsewhere
        return 100.0 * sum(not r["answers"] for r in test) / len(test)
    return 0.0  # pearson of a constant; span F1 of all-O


@pytest.mark.parametrize(
    ("name", "margin", "overrides"),
    [
        ("toy-sentiment", 0.2, {}),
        ("toy-pair", 0.2, {}),
        ("toy-regression", 0.5, {}),
        ("toy-ner", 0.5, {}),
        ("toy-qa", 20.0, {"finetune_epochs": 8.0, "max_length": 40, "doc_stride": 16}),
    ],
)
def test_each_kind_beats_chance(base_params, name, margin, overrides):
    cfg = Config.from_dict(base_params | {"target_task": name, "student": "teacher"} | overrides)
    path = ensure("finetune", cfg)
    metrics = json.loads((path / "metrics.json").read_text())
    main = metrics["main_metric"]
    assert metrics["task_version"] == "1" and metrics["test_" + main] > chance(name) + margin, metrics
    assert metrics["dev_" + main] == pytest.approx(metrics["best_dev"], abs=1e-6)  # chosen on dev, tested once
    if name == "toy-qa":
        assert {"test_HasAns_f1", "test_NoAns_f1", "null_threshold"} <= set(metrics)


@pytest.mark.parametrize("name", ["toy-sentiment", "toy-ner"])
def test_dev_metrics_of_the_selected_weights(tiny_encoder, tmp_path, name):
    """fit_task hands back the dev metrics of the weights it selected (so they are not computed twice): they equal
    a fresh evaluation of the model it leaves behind; a run resumed from a finished phase has none to hand back."""
    from xdlib.heads import evaluate, fit_task
    from xdlib.models import load_with_head
    from xdlib.train import LoopSettings

    task = get_task(name)
    data = task.load()
    model, tok = load_with_head(str(tiny_encoder), task.head, task.num_labels)
    settings = LoopSettings(epochs=3.0, lr=1e-3, batch_size=16, evals_per_epoch=2, patience=20, warmup_ratio=0.0,
                            progress=False)  # fmt: skip
    cpu = __import__("torch").device("cpu")
    summary = fit_task(model, tok, task, data, 32, settings, tmp_path / "ckpt", cpu, desc="t")
    assert len(summary["history"]) >= 2 and summary["dev_metrics"] is not None
    assert summary["dev_metrics"] == evaluate(model, tok, task, data["dev"], 32, cpu)
    assert summary["dev_metrics"][task.metric] == summary["best_dev"]
    again = fit_task(model, tok, task, data, 32, settings, tmp_path / "ckpt", cpu, desc="t")  # phase DONE: loaded
    assert again["dev_metrics"] is None and again["best_dev"] == summary["best_dev"]


def test_frozen_word_embeddings_stay_as_loaded(base_params, tiny_encoder, tmp_path):
    """word_embeddings=False (finetune_word_embeddings: false): the word embeddings stay as loaded, every other
    weight moves, and the model still learns; the field is in a run id only when it departs from the default (a run
    made before the field keeps its id)."""
    import torch

    from xdlib.heads import evaluate, fit_task
    from xdlib.models import load_with_head
    from xdlib.train import LoopSettings

    cfg = Config.from_dict(base_params | {"finetune_word_embeddings": False})
    assert (
        "finetune_word_embeddings" not in id_payload("finetune", cfg.replace(finetune_word_embeddings=True))["fields"]
    )
    assert run_id("finetune", cfg) != run_id("finetune", cfg.replace(finetune_word_embeddings=True))
    task = get_task("toy-sentiment")
    data = task.load()
    model, tok = load_with_head(str(tiny_encoder), task.head, task.num_labels)
    words = model.get_input_embeddings().weight.detach().clone()
    layer = model.base_model.encoder.layer[0].output.dense.weight.detach().clone()
    settings = LoopSettings(epochs=3.0, lr=1e-3, batch_size=16, evals_per_epoch=1, patience=20, warmup_ratio=0.0,
                            progress=False)  # fmt: skip
    cpu = torch.device("cpu")
    fit_task(model, tok, task, data, 32, settings, tmp_path / "ckpt", cpu, desc="t", word_embeddings=False)
    assert torch.equal(model.get_input_embeddings().weight, words)
    assert not torch.equal(model.base_model.encoder.layer[0].output.dense.weight, layer)
    assert evaluate(model, tok, task, data["test"], 32, cpu)["accuracy"] > chance("toy-sentiment") + 0.2


def test_the_undistilled_baseline_head_comes_from_finetune_seed(monkeypatch, base_params, tmp_path):
    import torch

    from xdlib import models
    from xdlib.stages import base, finetune

    heads = []

    class Stop(Exception):
        pass

    def capture(model, *args, **kwargs):
        heads.append({k: v.clone() for k, v in models.head_module(model).state_dict().items()})
        raise Stop

    monkeypatch.setattr(base, "fit_task", capture)  # the fine-tuning every stage's runner goes through
    for seed in (0, 1):
        cfg = Config.from_dict(base_params | {"student": "undistilled", "seed": seed, "finetune_seed": 5})
        run = type("Run", (), {"device": torch.device("cpu"), "upstream": {}, "seeds": {}, "path": tmp_path})()
        with pytest.raises(Stop):
            finetune.finetune_student(cfg, run)
    assert all(torch.equal(heads[0][k], heads[1][k]) for k in heads[0])  # the same head for either seed


def test_an_encoder_that_does_not_fit_the_head_model_is_refused(monkeypatch, tiny_encoder):
    import torch

    from xdlib import heads, models

    real = models.pretrained

    def with_an_extra_key(cls, path, **kwargs):
        encoder = real(cls, path, **kwargs)
        encoder.register_buffer("adapter_scale", torch.ones(1))  # a key the head model's encoder does not have
        return encoder

    monkeypatch.setattr(models, "pretrained", with_an_extra_key)
    with pytest.raises(ConfigError, match="does not fit a sequence model: .*unexpected \\['adapter_scale'\\]"):
        heads.fresh_head_from(str(tiny_encoder), "sequence", 2, 0)
