"""Recipes that learn: pooling as the model was trained, runs that stop when dev stops improving, the recipe as
data, and a learning check on every model."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from xdlib import metrics, pooling
from xdlib.config import Config, ConfigError
from xdlib.models import unit_states
from xdlib.recipe import stage_specs
from xdlib.tasks import get_task
from xdlib.train import LoopSettings, train


def test_mean_pooling_matches_a_hand_computation_with_padding_masked():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]], [[5.0, 6.0], [7.0, 8.0], [9.0, 10.0]]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])  # the first row's third position is padding
    pooled = pooling.mean_pool(hidden, mask)
    assert torch.allclose(pooled, torch.tensor([[2.0, 3.0], [7.0, 8.0]]))  # (1+3)/2, (2+4)/2; (5+7+9)/3, ...
    batch = {"attention_mask": mask, "unit_pos": torch.zeros(2, 1, dtype=torch.long)}
    assert torch.equal(unit_states(hidden, batch, "mean"), pooled[:, None])
    assert torch.equal(unit_states(hidden, batch, "cls"), hidden[:, :1])  # [CLS]: position 0


def test_auto_pooling_reads_the_models_sentence_transformers_files(tmp_path):
    assert pooling.resolve("auto", tmp_path) == "cls"  # a folder that says nothing: [CLS]
    pooling.write_files(tmp_path, "mean", 8)
    assert pooling.folder_pooling(tmp_path) == "mean" and pooling.resolve("auto", tmp_path) == "mean"
    assert pooling.resolve("cls", tmp_path) == "cls"  # asked for explicitly: as asked
    modes = json.loads((tmp_path / "1_Pooling" / "config.json").read_text())
    assert modes["pooling_mode_mean_tokens"] and not modes["pooling_mode_cls_token"]
    assert json.loads((tmp_path / "modules.json").read_text())[1]["path"] == "1_Pooling"


def test_a_saved_mean_pooled_model_reloads_and_pools_as_in_training(tmp_path, tiny_encoder):
    """A student built with mean pooling, saved as an ordinary HF folder (with sentence-transformers' pooling
    files), reloaded by our loader with pooling=auto: the same logits as before the save, from the mean of the real
    tokens (not [CLS]); its head never reads BERT's pooler, which is not trained."""
    from transformers import AutoTokenizer

    from xdlib import runs
    from xdlib.data import collate, encode
    from xdlib.heads import fresh_head_from
    from xdlib.models import build_student, load_with_head, run_model, unused_parameters

    task = get_task("toy-sentiment")
    model, tok = build_student("l2-h64", "sequence", 2, init=str(tiny_encoder), teacher_ref=str(tiny_encoder),
                               heads=4, pooling="mean")  # fmt: skip
    assert pooling.of(model) == "mean" and unused_parameters(model)
    model.eval()
    rows = task.load()["dev"][:6]
    batch = collate(encode(tok, rows, task, 32), tok.pad_token_id)
    assert (batch["attention_mask"] == 0).any()  # padding is there, and masked out
    before = run_model(model, batch, hidden=True)
    by_hand = model.classifier(pooling.mean_pool(before.hidden_states[-1], batch["attention_mask"]))
    assert torch.allclose(before.logits, by_hand, atol=1e-6)
    assert not torch.allclose(before.logits, model(**{k: batch[k] for k in ("input_ids", "attention_mask")}).logits)
    runs.save_hf(model, tok, tmp_path / "model")
    assert pooling.folder_pooling(tmp_path / "model") == "mean"
    again, _ = load_with_head(str(tmp_path / "model"), "sequence", 2)  # pooling=auto: as its files say
    again.eval()
    assert pooling.of(again) == "mean"
    assert torch.allclose(run_model(again, batch).logits, before.logits, atol=1e-6)
    # a fine-tuning starts from the same encoder, pooled the same way (a fresh head)
    fresh, _ = fresh_head_from(str(tmp_path / "model"), "sequence", 2, seed=0)
    assert pooling.of(fresh) == "mean"
    assert AutoTokenizer.from_pretrained(tmp_path / "model")  # still an ordinary HF folder


class SquaredError(nn.Module):
    """forward(batch) -> mean of (model(x[rows]) - target)^2: a loss for the loop on a tiny linear model."""

    def __init__(self, model: nn.Module, x: torch.Tensor, target: float = 0.0):
        super().__init__()
        self.model, self.x, self.target = model, x, target

    def forward(self, batch):
        return (self.model(self.x[batch["idx"]]) - self.target).pow(2).mean()


def _rows(idx):
    return {"idx": torch.tensor(idx)}


def test_a_run_stops_at_its_patience(tmp_path):
    """A dev score that never improves: the best is the first evaluation, then `patience` worse ones, then stop."""
    model = nn.Linear(2, 1)
    scores = iter([0.9] + [0.5] * 100)
    settings = LoopSettings(epochs=10.0, lr=0.01, batch_size=32, evals_per_epoch=1, patience=3, progress=False)
    summary = train(SquaredError(model, torch.randn(320, 2)), list(model.parameters()), [1] * 320, _rows, settings,
                    tmp_path / "run", evaluate=lambda: next(scores))  # fmt: skip
    # the starting weights are the best (update 0), then 3 evaluations without improvement
    assert summary["stopped_early"] and [h["update"] for h in summary["history"]] == [0, 10, 20, 30]
    assert summary["updates"] == 3 * summary["schedule"]["eval_every"] < summary["total_updates"] == 100
    assert summary["best_dev"] == 0.9


def test_a_run_keeps_its_starting_weights_when_training_only_harms_dev(tmp_path):
    """A later stage or unfreezing phase that only lowers dev ends with the weights it was given."""
    model = nn.Linear(2, 1)
    start = model.weight.detach().clone()

    def closeness():  # dev: how close the weights still are to where they began
        return -float((model.weight.detach() - start).abs().sum())

    settings = LoopSettings(epochs=2.0, lr=0.1, batch_size=16, progress=False)
    summary = train(SquaredError(model, torch.randn(64, 2), target=5.0), list(model.parameters()), [1] * 64, _rows,
                    settings, tmp_path / "run", evaluate=closeness)  # fmt: skip
    assert summary["history"][0]["update"] == 0 and summary["best_dev"] == 0.0
    assert torch.equal(model.weight.detach(), start) and summary["updates"] > 0


def test_the_recipe_is_data_a_params_file_overrides():
    cfg = Config.from_dict({"distill_lr": 5e-5, "recipe": {"logits": {"lr": "3e-4", "epochs": 4, "patience": 2,
                            "loss": {"logits": 1.0, "labels": 0.5}, "trains": "all"}}})  # fmt: skip
    hidden, logits, labels = stage_specs(cfg)
    assert (hidden.lr, hidden.select, hidden.trains) == (5e-5, "hidden_loss", "all")
    assert (logits.lr, logits.epochs, logits.patience, logits.trains) == (3e-4, 4.0, 2, "all")
    assert logits.loss == {"logits": 1.0, "labels": 0.5} and labels.loss == {"labels": 1.0}
    assert labels.data == "labelled" and labels.min_updates == cfg.phase_min_updates
    assert [s.trains for s in stage_specs(cfg.replace(gradual_unfreezing=False))] == ["all"] * 3
    assert [s.name for s in stage_specs(cfg.replace(distill_mode="joint"))] == ["joint"]


@pytest.mark.parametrize(
    "recipe, says",
    [
        (
            {"logits": {"loss": {"cosine": 1.0}}},
            "unknown loss term 'cosine'; allowed: hidden, attention, logits, labels",
        ),
        ({"logits": {"momentum": 0.9}}, "recipe.logits.momentum: an unknown setting; allowed: loss, trains"),
        ({"hidden": {"select": "test"}}, "recipe.hidden.select: one of dev, hidden_loss, none"),
        ({"labels": {"loss": {"logits": 1.0}}}, "allowed: loss {labels: w}"),
        ({"hidden": {"loss": {"attention": 1.0}}}, "set attention_loss: true"),
    ],
)
def test_a_bad_stage_spec_is_refused_in_one_line(recipe, says):
    with pytest.raises(ConfigError) as err:
        Config.from_dict({"recipe": recipe})
    assert says in str(err.value) and "\n" not in str(err.value)


def test_a_constant_predictor_is_flagged_as_not_learnt():
    task = get_task("toy-sentiment")
    rows = [{"label": 1}] * 60 + [{"label": 0}] * 40
    constant = metrics.constant_baseline(task, rows)
    assert constant == 0.6  # the majority class
    assert metrics.learning_check(task, 0.6, rows) == {"dev_constant": 0.6, "learning_margin": 0.02, "learnt": False}
    assert metrics.learning_check(task, 0.61, rows)["learnt"] is False  # within the margin
    assert metrics.learning_check(task, 0.63, rows)["learnt"] is True
    # a student at the majority class kept none of its teacher's skill; one at the teacher's score, all of it
    assert metrics.chance_corrected_retention(0.6, 0.8, constant) == 0.0
    assert metrics.chance_corrected_retention(0.8, 0.8, constant) == 1.0
    assert metrics.chance_corrected_retention(0.7, 0.8, constant) == pytest.approx(0.5)
    assert metrics.chance_corrected_retention(0.7, 0.6, constant) is None  # a teacher at chance: nothing to keep


def test_a_learning_check_for_a_lower_is_better_metric():
    class Task:
        kind, metric, higher_is_better = "regression", "mse", False

    rows = [{"label": v} for v in (0.0, 1.0, 2.0, 3.0)]  # variance 1.25: the error of predicting the mean
    check = metrics.learning_check(Task, 1.0, rows)
    assert check["dev_constant"] == pytest.approx(1.25) and check["learnt"] is True
    assert metrics.learning_check(Task, 1.24, rows)["learnt"] is False  # within 5% of the constant's error


def test_a_mean_pooled_distillation_caches_and_matches_the_pooled_vectors(tmp_path, tiny_encoder):
    """pooling: mean end to end on the toy task: the teacher cache holds each layer's mean-pooled vector (not
    [CLS]), the student's folder says mean, and every run records the pooling it resolved to."""
    import numpy as np
    from conftest import smoke_params

    from xdlib import runs
    from xdlib.data import collate, encode
    from xdlib.kd import TeacherCache
    from xdlib.models import load_with_head, run_model
    from xdlib.stages import ensure
    from xdlib.transfer import load_source

    params = smoke_params(tmp_path, tiny_encoder) | {"pooling": "mean", "max_train_samples": 64,
                                                     "max_eval_samples": 32, "distill_epochs": 1.0}  # fmt: skip
    path = ensure("distill", Config.from_dict(params))
    metrics = runs.read_metrics(path)
    assert metrics["pooling"] == "mean" and pooling.folder_pooling(path / "model") == "mean"
    teacher_dir = runs.run_dir(params["runs_dir"], "teacher", metrics["teacher_run"])
    assert runs.read_metrics(teacher_dir)["pooling"] == "mean"
    # the dev cache against the teacher's mean-pooled hidden states, computed here
    (dev_cache,) = [p for p in (tmp_path / "cache" / "teacher-outputs").iterdir() if (p / "DONE").is_file()
                    and TeacherCache.open(p).offsets[-1] == 32]  # fmt: skip
    cache = TeacherCache.open(dev_cache)
    teacher, tok = load_with_head(str(teacher_dir / "model"), "sequence", 2)
    teacher.eval()
    task = get_task("toy-sentiment")
    cfg = Config.from_dict(params)
    dev = load_source(cfg, "toy-sentiment", cfg.max_train_samples)["dev"]  # the dev rows the run read
    batch = collate(encode(tok, dev[:4], task, params["max_length"]), tok.pad_token_id)
    with torch.no_grad():
        out = run_model(teacher, batch, hidden=True)
    top = cache.layers[-1]
    expected = pooling.mean_pool(out.hidden_states[top], batch["attention_mask"]).numpy()
    stored = np.asarray(cache.hidden[:4, -1], dtype=np.float32)
    assert np.allclose(stored, expected, atol=2e-3)  # fp16 storage
    cls = out.hidden_states[top][:, 0].numpy()
    assert not np.allclose(stored, cls, atol=2e-3)  # not [CLS]


def test_each_phase_trains_what_its_loss_terms_reach(tiny_encoder):
    """hidden: the encoder and the projection, not the head; logits/labels: the head and (gradual) the top units, not
    the projection; mean pooling: BERT's pooler never."""
    from xdlib.kd import DistillModule, Phase, phase_parameters
    from xdlib.models import HiddenProjection, build_student
    from xdlib.recipe import DEFAULTS

    student, _ = build_student("l2-h64", "sequence", 2, init=str(tiny_encoder), teacher_ref=str(tiny_encoder),
                               heads=4, pooling="mean")  # fmt: skip
    module = DistillModule(student, HiddenProjection(3, 64, 128))
    trainable = phase_parameters(module, embeddings_last=True)
    ids = lambda params: {id(p) for p in params}  # noqa: E731
    head, pooler = ids(student.classifier.parameters()), ids(student.bert.pooler.parameters())
    projection, top = ids(module.projection.parameters()), ids(student.bert.encoder.layer[-1].parameters())
    hidden = ids(trainable(Phase("1-hidden", DEFAULTS["hidden"], -1)))
    assert projection <= hidden and top <= hidden and not hidden & head and not hidden & pooler
    first = ids(trainable(Phase("2-logits-u1", DEFAULTS["logits"], 1)))
    assert first == head  # the head alone
    second = ids(trainable(Phase("2-logits-u2", DEFAULTS["logits"], 2)))
    assert second == head | top and not second & projection and not second & pooler
