"""Bad configs give one error that names the key, the value and what is allowed; run ids are stable, and see the
compute precision and the task version."""

import dataclasses

import pytest

from xdlib import tasks
from xdlib.config import Config, ConfigError, load_config, load_params
from xdlib.preflight import preflight
from xdlib.stages import run_id

BAD = [
    ({"learning_rate": 1e-4}, r"unknown parameter\(s\) 'learning_rate'.*known: .*distill_lr"),
    ({"max_length": "long"}, r"max_length='long'.*an integer"),
    ({"max_length": 4}, r"max_length=4.*an integer in \[8, 4096\]"),
    ({"distill_lr": -1.0}, r"distill_lr=-1.0.*\[0.0, 1.0\]"),
    ({"student_arch": "tiny"}, r"student_arch='tiny'.*l6-h256"),
    ({"logit_loss": "cosine"}, r"logit_loss='cosine'.*mse, kl"),
    ({"distill_mode": "mixed"}, r"distill_mode='mixed'.*stagewise, joint"),
    ({"distill_stages": ["hidden", "soup"]}, r"distill_stages=.*'hidden', 'logits', 'labels'"),
    ({"progress": "yes"}, r"progress='yes'.*true or false"),
    ({"layer_map": [0, 1]}, r"layer_map=\[0, 1\] has 2 entries.*needs 4"),
    ({"student_layers": [0, 1]}, r"student_layers=\[0, 1\] has 2 entries"),
    ({"student_init": "random", "student_layers": [0, 1, 2]}, r"student_init='random'"),
    ({"student_embeddings": "pca"}, r"student_embeddings='pca' needs student_init='random'"),
    ({"augmentation": "perturb"}, r"augmentation='perturb'.*a list of str"),
    ({"seed": 1.5}, r"seed=1.5.*an integer"),
    ({"student": 3}, r"student=3.*a string"),
]


@pytest.mark.parametrize(("values", "message"), BAD)
def test_bad_values_name_key_value_and_allowed(values, message):
    with pytest.raises(ConfigError, match=message):
        Config.from_dict(values)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"source_task": "imdb"}, r"source_task='imdb' is not a registered task; known: .*rt-polarity"),
        ({"target_task": "squad"}, r"target_task='squad' is not a registered task"),
        ({"augmentation": ["wikipedia"]}, r"augmentation entry 'wikipedia'.*perturb.*task:<name>"),
        ({"teacher_model": "offline:bert-large"}, r"unknown offline model; known: offline:all-MiniLM-L6-v2"),
        ({"teacher_model": "./no/such/folder"}, r"no HF model folder"),
        ({"student_init": "someone/not-a-model", "teacher_model": "./no"}, r"teacher_model='./no'"),
    ],
)
def test_preflight_rejects_unknown_names_before_heavy_work(values, message):
    with pytest.raises(ConfigError, match=message):
        preflight(Config.from_dict(values))


def test_hub_id_without_network_is_one_clear_message(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(
        ConfigError,
        match=r"teacher_model='google/electra-base-discriminator' could not be loaded.*offline:all-MiniLM-L6-v2",
    ):
        preflight(Config.from_dict({"teacher_model": "google/electra-base-discriminator"}), "teacher")


def test_kl_on_a_regression_source_is_refused():
    with pytest.raises(ConfigError, match="logit_loss='kl' is not allowed with source_task='toy-regression'"):
        preflight(
            Config(source_task="toy-regression", logit_loss="kl", student_init="random"), "distill", network=False
        )


def test_run_id_ignores_paths_and_progress_but_not_hyperparameters():
    base = Config()
    assert run_id("distill", base) == run_id("distill", Config(runs_dir="/elsewhere", progress=False, device="cpu"))
    assert run_id("distill", base) != run_id("distill", base.replace(distill_lr=3e-5))
    # an upstream change (teacher) changes the downstream id; a downstream change leaves the teacher id alone
    assert run_id("distill", base) != run_id("distill", base.replace(teacher_lr=1e-5))
    assert run_id("teacher", base) == run_id("teacher", base.replace(distill_lr=3e-5))
    assert run_id("distill", base) == run_id("distill", Config.from_dict(base.to_dict()))


def test_baseline_finetune_ids_do_not_depend_on_distillation_settings():
    a = Config(student="undistilled")
    assert run_id("finetune", a) == run_id("finetune", a.replace(distill_lr=3e-5))
    assert run_id("finetune", a) != run_id("finetune", a.replace(student_arch="l2-h384"))
    assert run_id("finetune", Config()) != run_id("finetune", Config().replace(distill_lr=3e-5))


def test_run_ids_see_compute_precision_and_task_version(monkeypatch):
    cpu, cuda = Config(device="cpu"), Config(device="cuda")
    assert cpu.precision() == "fp32" and cuda.precision() == "bf16"
    assert run_id("distill", cpu) != run_id("distill", cuda) and run_id("teacher", cpu) != run_id("teacher", cuda)

    before = run_id("distill", cpu)
    task = tasks.TASKS.get("rt-polarity")
    monkeypatch.setitem(tasks.TASKS._items, "rt-polarity", dataclasses.replace(task, version=task.version + ".1"))
    assert run_id("distill", cpu) != before


def test_yaml_include_and_override(tmp_path):
    (tmp_path / "base.yaml").write_text("name: base\nversion: 1\nmax_length: 32\nseed: 1\n")
    (tmp_path / "child.yaml").write_text("include: base.yaml\nseed: 2  # why: a second seed\n")
    cfg = load_config("teacher", tmp_path / "child.yaml", {"teacher_epochs": 2})
    assert (cfg.max_length, cfg.seed, cfg.teacher_epochs) == (32, 2, 2.0)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("max_length: [1, 2\n", "not valid YAML"),
        ("- a\n- b\n", "must hold a mapping"),
        ("include: self.yaml\n", "includes itself"),
    ],
)
def test_malformed_params_files(tmp_path, text, message):
    path = tmp_path / "self.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_params(path)


def test_missing_params_file():
    with pytest.raises(ConfigError, match="does not exist"):
        load_params("params/nope.yaml")


def test_the_params_files_version_is_recorded_not_in_the_run_id():

    cfg = load_config("finetune", "params/default.yaml")
    assert cfg.study == "default version 6" and load_config("distill", "params/default.yaml").study == cfg.study
    assert run_id("finetune", cfg) == run_id(
        "finetune", cfg.replace(study="")
    )  # which file made a run does not change what it is


def test_docs_name_every_parameter():
    """docs/parameters.md lists every field (`python -m xdlib params <stage>` prints them from the code)."""
    import dataclasses
    from pathlib import Path

    from xdlib.config import Config

    text = (Path(__file__).resolve().parent.parent / "docs" / "parameters.md").read_text()
    missing = [f.name for f in dataclasses.fields(Config) if f"`{f.name}`" not in text]
    assert not missing, f"add to docs/parameters.md: {missing}"


def test_controls_ids_hold_only_what_their_training_reads(base_params):
    """The twin and STILTs never read the teacher's extra sources, nor (from a pretrained init) its model; the
    teacher's-model baseline never reads its extra sources: such arms share their controls."""
    from xdlib.config import ENGINE_VERSION

    base = Config.from_dict(base_params | {"student_init": "offline:all-MiniLM-L6-v2", "student_arch": "l3-h384"})
    other = {"teacher_model": "offline:all-mpnet-base-v2", "teacher_sources": ["toy-pair"]}
    for student in ("undistilled", "stilts"):
        a, b = base.replace(student=student), base.replace(student=student, **other)
        assert run_id("finetune", a) == run_id("finetune", b), student
    teacher = base.replace(student="teacher")
    assert run_id("finetune", teacher) == run_id("finetune", teacher.replace(teacher_sources=["toy-pair"]))
    assert run_id("finetune", teacher) != run_id("finetune", teacher.replace(teacher_model="offline:all-mpnet-base-v2"))
    # a random student takes the teacher's tokenizer: its twin reads the teacher's model
    random = base.replace(student="undistilled", student_init="random", student_arch="l2-h32")
    assert run_id("finetune", random) != run_id("finetune", random.replace(teacher_model="offline:all-mpnet-base-v2"))
    distilled = base.replace(student="distilled")
    assert run_id("finetune", distilled) != run_id("finetune", distilled.replace(teacher_sources=["toy-pair"]))
    assert ENGINE_VERSION >= 2
