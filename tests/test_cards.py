"""Model cards: every saved model folder of a run (teacher, distilled student, fine-tuned model with save_model, ONNX
export) has a README.md whose metadata huggingface_hub reads back and `cards.check` accepts; its numbers are the
run's; it is rebuilt when the run is remade."""

import json
import shutil

import pytest
import yaml

from xdlib import cards
from xdlib.config import Config
from xdlib.stages import ensure


@pytest.fixture(scope="module")
def store(tmp_path_factory, tiny_encoder):
    from conftest import smoke_params

    params = smoke_params(tmp_path_factory.mktemp("cards"), tiny_encoder) | {"save_model": True}
    return ensure("finetune", Config.from_dict(params)), params


@pytest.mark.slow  # the store below: a tiny teacher, distillation and fine-tuning
def test_every_saved_model_of_a_run_has_a_card_with_its_numbers(store):
    finetune, _ = store
    runs = finetune.parent.parent
    for run in [*runs.glob("teacher/*"), *runs.glob("distill/*"), finetune]:
        data = cards.check(run / "model" / "README.md")
        metrics = json.loads((run / "metrics.json").read_text())
        text = (run / "model" / "README.md").read_text()
        main = metrics["main_metric"]
        assert f"| test | {main} | {metrics[f'test_{main}']:.4f} | {metrics['test_rows']} |" in text, text
        assert f"| dev | {main} | {metrics[f'dev_{main}']:.4f} | {metrics['dev_rows']} |" in text
        (dev, test) = data["model-index"][0]["results"][0]["metrics"], data["model-index"][0]["results"][1]["metrics"]
        assert dev[0]["value"] == metrics[f"dev_{main}"] and test[0]["value"] == metrics[f"test_{main}"]
        assert data["library_name"] == "transformers" and metrics["stage"] in data["tags"]
        assert "arXiv 2106.04563" in text and "archivePrefix={arXiv}" in text and "## How to load" in text
        assert "generated toy data" in text  # the data's terms
    assert "AutoModelForSequenceClassification" in (finetune / "model" / "README.md").read_text()
    distilled = (next(runs.glob("distill/*")) / "model" / "README.md").read_text()
    assert "x faster than its teacher" in distilled and "gradual unfreezing" in distilled


@pytest.mark.slow  # the store below: a tiny teacher, distillation and fine-tuning
def test_a_card_is_rebuilt_when_its_run_is_remade(store):
    finetune, params = store
    (teacher,) = finetune.parent.parent.glob("teacher/*")
    shutil.rmtree(teacher / "model")  # complete, but its model is gone: the next call makes it again
    ensure("teacher", Config.from_dict(params))
    assert cards.check(teacher / "model" / "README.md")["library_name"] == "transformers"


@pytest.mark.slow  # the store below: a tiny teacher, distillation and fine-tuning
def test_an_onnx_export_has_its_own_card(store):
    from xdlib.deploy.export import export

    finetune, _ = store
    folder = export(finetune, int8=True)
    data = cards.check(folder / "README.md")
    assert data["library_name"] == "onnx" and {"onnx", "int8"} <= set(data["tags"])
    assert "serve.load" in (folder / "README.md").read_text()


def test_a_packaged_base_model_gives_its_licence_and_hub_id(tmp_path):
    """A run of the default study's kind (MiniLM teacher and student init, an offline task): apache-2.0 weights,
    the Hub id as base_model, research-use data terms; a random student distilled from it keeps the teacher's
    licence; an unknown base model says `other`."""
    run = tmp_path / "finetune" / "rt-polarity-x"
    run.mkdir(parents=True)
    config = {"teacher_model": "offline:all-MiniLM-L6-v2", "student_init": "offline:all-MiniLM-L6-v2",
              "source_task": "rt-polarity", "target_task": "sms-spam", "student": "distilled", "seed": 0}  # fmt: skip
    metrics = {"stage": "finetune", "task": "sms-spam", "test_f1": 0.9, "test_rows": 300, "dev_f1": 0.8}
    (run / "metrics.json").write_text(json.dumps(metrics))
    for init, licence, base in [("offline:all-MiniLM-L6-v2", "apache-2.0", "sentence-transformers/all-MiniLM-L6-v2"),
                                ("random", "apache-2.0", None), ("./my-model", "other", None)]:  # fmt: skip
        (run / "config.yaml").write_text(yaml.safe_dump(config | {"student_init": init}))
        cards.write(run, run)
        data = cards.check(run / "README.md")
        assert data["license"] == licence and data.get("base_model") == base, (init, data)
    text = (run / "README.md").read_text()
    assert "research use only" in text and "| test | f1 | 0.9000 | 300 |" in text


def test_check_refuses_a_card_without_a_licence(tmp_path):
    (tmp_path / "README.md").write_text("---\nlibrary_name: transformers\n---\n# a model\n")
    with pytest.raises(ValueError, match="lacks"):
        cards.check(tmp_path / "README.md")


def _run(root, stage: str, config: dict, metrics: dict):
    run = root / stage / f"{stage}-run"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    (run / "metrics.json").write_text(json.dumps({"stage": stage, **metrics}))
    return run


BASE = {"teacher_model": "offline:all-mpnet-base-v2", "student_init": "offline:all-MiniLM-L6-v2",
        "source_task": "rt-polarity", "target_task": "trec6", "augmentation": ["guardian-headlines"], "seed": 0,
        "student_arch": "l6-h384", "teacher_epochs": 2.0, "teacher_lr": 1e-4}  # fmt: skip
SCORES = {"task": "trec6", "test_accuracy": 0.8, "test_rows": 300, "test_chance": 0.26, "dev_accuracy": 0.7,
          "dev_rows": 200}  # fmt: skip


@pytest.mark.parametrize("student", ["undistilled", "stilts", "teacher"])
def test_a_baselines_card_says_what_it_is_and_names_no_teacher_or_transfer_set(student, tmp_path):
    run = _run(tmp_path, "finetune", BASE | {"student": student}, SCORES)
    cards.write(run, run)
    text = (run / "README.md").read_text()
    assert "- teacher:" not in text and "transfer set" not in text and "guardian" not in text
    assert {
        "undistilled": "An undistilled student",
        "stilts": "fine-tuned on the source task first (STILTs)",
        "teacher": "The teacher's pretrained model `offline:all-mpnet-base-v2`, fine-tuned on trec6",
    }[student] in text
    assert ("source task: rt-polarity" in text) == (student == "stilts")  # fmt: skip
    assert cards.check(run / "README.md")["base_model"] == {"teacher": "sentence-transformers/all-mpnet-base-v2"}.get(
        student, "sentence-transformers/all-MiniLM-L6-v2"
    )


def test_a_distilled_students_card_lists_its_scores_not_chance_with_each_splits_rows_and_its_speedup(tmp_path):
    _run(tmp_path, "distill", BASE, {"task": "rt-polarity", "speedup": 4.2, "flops_ratio": 5.1, "run_id": "d-1"})
    (tmp_path / "distill" / "distill-run").rename(tmp_path / "distill" / "d-1")
    metrics = SCORES | {"distill_run": "d-1", "test_mismatched_accuracy": 0.5, "test_mismatched_rows": 7}
    run = _run(tmp_path, "finetune", BASE | {"student": "distilled"}, metrics)
    cards.write(run, run)
    text = (run / "README.md").read_text()
    assert "| test | accuracy | 0.8000 | 300 |" in text and "| dev | accuracy | 0.7000 | 200 |" in text
    assert "| test_mismatched | accuracy | 0.5000 | 7 |" in text and "chance" not in text
    assert "4.20x faster than its teacher" in text and "run d-1" in text
    assert "- teacher: `offline:all-mpnet-base-v2`" in text
    assert "- guardian-headlines (transfer set): Guardian news headlines of 2020" in text


def test_an_exports_card_gives_its_pytorch_models_scores_as_such_and_no_model_index(tmp_path):
    run = _run(tmp_path, "finetune", BASE | {"student": "distilled"}, SCORES)
    cards.write(tmp_path, run, export={"precision": "int8"})
    text = (tmp_path / "README.md").read_text()
    assert "Scores of the PyTorch model this export was made from" in text and "xdlib deploy" in text
    assert "model-index" not in cards.check(tmp_path / "README.md")


def test_a_joint_distillations_card_describes_one_phase(tmp_path):
    config = BASE | {"distill_mode": "joint", "distill_epochs": 3.0, "augmentation": [], "gradual_unfreezing": True}
    run = _run(tmp_path, "distill", config, {"task": "rt-polarity", "test_accuracy": 0.8, "test_rows": 300})
    cards.write(run, run)
    text = (run / "README.md").read_text()
    assert "in one joint phase (all losses, all layers), 3.0 epochs" in text and "unfreezing" not in text
    assert "- transfer set: rt-polarity inputs only" in text
