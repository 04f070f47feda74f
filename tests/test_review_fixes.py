"""Correctness bugs found in review, each pinned by a test that failed before its fix."""

import math

import pytest
import torch
import torch.nn.functional as F

from xdlib import losses
from xdlib.config import Config, ConfigError
from xdlib.data import collate
from xdlib.stages import run_id


def test_a_batch_mixing_labelled_and_unlabelled_rows_keeps_its_labels():
    """Joint mode: source rows (labelled) and augmentation rows (not) in one batch; the label loss sees the first."""
    rows = [{"input_ids": [2, 5, 3], "units": [0], "label": 1}, {"input_ids": [2, 6, 7, 3], "units": [0]}]
    batch = collate(rows, pad_id=0)
    assert batch["labels"].tolist() == [1, -100]
    logits = torch.tensor([[0.0, 2.0], [5.0, -5.0]])
    expected = -math.log(math.exp(2.0) / (1 + math.exp(2.0)))  # row 0 only, by hand
    assert losses.label_loss(logits, batch["labels"]).item() == pytest.approx(expected, abs=1e-6)
    regression = collate([dict(rows[0], label=0.5), rows[1]], pad_id=0)["labels"]
    assert regression[0].item() == 0.5 and math.isnan(regression[1].item())
    loss = losses.label_loss(torch.tensor([[1.5], [9.0]]), regression)
    assert loss.item() == pytest.approx(1.0)  # (1.5 - 0.5)^2, the unlabelled row ignored
    tags = collate([{"input_ids": [2, 5, 6, 3], "units": [1, 2], "label": [1, 0]}, rows[1]], pad_id=0)["labels"]
    assert tags.tolist() == [[1, 0], [-100, -100]]


def test_a_batch_without_any_label_costs_nothing():
    assert losses.label_loss(torch.randn(2, 3), torch.tensor([-100, -100])).item() == 0.0
    assert losses.label_loss(torch.randn(2, 1), torch.tensor([float("nan")] * 2)).item() == 0.0
    logits, labels = torch.randn(4, 3), torch.tensor([0, 2, 1, 1])
    assert losses.label_loss(logits, labels).item() == pytest.approx(F.cross_entropy(logits, labels).item(), abs=1e-6)


def test_run_ids_see_compute_precision_and_task_version(monkeypatch):
    cpu, cuda = Config(device="cpu"), Config(device="cuda")
    assert cpu.precision() == "fp32" and cuda.precision() == "bf16"
    assert run_id("distill", cpu) != run_id("distill", cuda) and run_id("teacher", cpu) != run_id("teacher", cuda)
    import dataclasses

    from xdlib import tasks

    before = run_id("distill", cpu)
    task = tasks.TASKS.get("rt-polarity")
    monkeypatch.setitem(tasks.TASKS._items, "rt-polarity", dataclasses.replace(task, version=task.version + ".1"))
    assert run_id("distill", cpu) != before


def test_evaluation_rows_do_not_depend_on_the_seed():
    from xdlib.transfer import load_source

    data = [load_source(Config(seed=s, max_eval_samples=20), "toy-sentiment", 50) for s in (0, 1)]
    assert data[0]["dev"] == data[1]["dev"] and data[0]["test"] == data[1]["test"]
    assert data[0]["train"] != data[1]["train"]  # the training sample still follows the seed


def test_kl_on_a_regression_source_is_refused():
    from xdlib.preflight import preflight

    with pytest.raises(ConfigError, match="logit_loss='kl' is not allowed with source_task='toy-regression'"):
        preflight(
            Config(source_task="toy-regression", logit_loss="kl", student_init="random"), "distill", network=False
        )


def test_the_undistilled_baseline_head_comes_from_finetune_seed(monkeypatch, base_params, tmp_path):
    from xdlib import models
    from xdlib.stages import finetune

    heads = []

    class Stop(Exception):
        pass

    def capture(model, *args, **kwargs):
        heads.append({k: v.clone() for k, v in models.head_module(model).state_dict().items()})
        raise Stop

    monkeypatch.setattr(finetune, "fit_task", capture)
    for seed in (0, 1):
        cfg = Config.from_dict(base_params | {"student": "undistilled", "seed": seed, "finetune_seed": 5})
        run = type("Run", (), {"device": torch.device("cpu"), "upstream": {}, "seeds": {}, "path": tmp_path})()
        with pytest.raises(Stop):
            finetune.finetune_student(cfg, run)
    assert all(torch.equal(heads[0][k], heads[1][k]) for k in heads[0])  # the same head for either seed


def test_an_encoder_that_does_not_fit_the_head_model_is_refused(monkeypatch, tiny_encoder):
    from xdlib import heads, models

    real = models.pretrained

    def with_an_extra_key(cls, path, **kwargs):
        encoder = real(cls, path, **kwargs)
        encoder.register_buffer("adapter_scale", torch.ones(1))  # a key the head model's encoder does not have
        return encoder

    monkeypatch.setattr(models, "pretrained", with_an_extra_key)
    with pytest.raises(ConfigError, match="does not fit a sequence model: .*unexpected \\['adapter_scale'\\]"):
        heads.fresh_head_from(str(tiny_encoder), "sequence", 2, 0)


def test_headline_and_architectures_never_average_different_students():
    """Bug 6: two augmentations of one architecture and source are two rows, each the mean of its own seeds."""
    import pandas as pd

    from xdlib.report import architecture_table, headline_table

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
