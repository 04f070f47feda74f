"""Shared fixtures: tiny BERT encoders built from a config (no download) with a word-level vocabulary."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One thread: the toy models gain nothing from a second, and the study slice runs beside these tests (below): a
# 2-thread OpenMP team that shares a core spins at every barrier (a toy chain took 100 s instead of 4 s)
torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parent.parent
_SLICE: dict = {}  # the study slice's child process, its folder and its log, once started


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    """Once the tests to run are known (after -m and -k): if one reads the study slice, start it in a child process
    (tests/study_slice.py), one thread, so that its 80 s run beside the toy tests instead of after them."""
    if config.option.collectonly or not any("study_slice" in getattr(i, "fixturenames", ()) for i in items):
        return
    folder = Path(tempfile.mkdtemp(prefix="xdlib-study-slice-"))
    log = open(folder / "log.txt", "w")  # noqa: SIM115 (the child writes it; closed at unconfigure)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    child = subprocess.Popen([sys.executable, str(ROOT / "tests" / "study_slice.py"), str(folder)], cwd=ROOT, env=env,
                             stdout=log, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    _SLICE.update(child=child, folder=folder, log=log)


def pytest_unconfigure(config):
    if _SLICE:
        if _SLICE["child"].poll() is None:  # the session ended first (an interrupt, -x): stop it and its kernels
            os.killpg(_SLICE["child"].pid, 9)
            _SLICE["child"].wait()
        _SLICE["log"].close()
        shutil.rmtree(_SLICE["folder"], ignore_errors=True)


@pytest.fixture(scope="session")
def study_slice() -> Path:
    """The study slice's folder (runs/ and cache/), once its sweep has ended; its status.json has each cell's state."""
    if not _SLICE:  # not started at collection (a test selected some other way): run it here
        import study_slice

        folder = Path(tempfile.mkdtemp(prefix="xdlib-study-slice-"))
        study_slice.main(folder)
        return folder
    child, folder = _SLICE["child"], _SLICE["folder"]
    start = time.time()
    while child.poll() is None and time.time() - start < 900:
        time.sleep(0.5)
    log = (folder / "log.txt").read_text()[-4000:]
    assert child.poll() == 0 and (folder / "status.json").is_file(), (
        f"the study slice failed (status {child.poll()}):\n{log}"
    )
    return folder


def make_tiny_encoder(
    path: Path, hidden: int = 64, layers: int = 4, heads: int = 4, seed: int = 0, words: list[str] | None = None
) -> Path:
    """A random tiny BERT + a whole-word tokenizer over the toy tasks' vocabulary (or `words`), as an HF folder."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    from xdlib.tasks import TOY_VOCAB

    path.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *(words or TOY_VOCAB)]
    tokenizer = BertTokenizerFast(vocab={word: i for i, word in enumerate(vocab)})
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=4 * hidden,
        max_position_embeddings=64,
    )
    BertModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory) -> Path:
    return make_tiny_encoder(tmp_path_factory.mktemp("tiny-encoder"))


def smoke_params(tmp_path: Path, encoder: Path) -> dict:
    """Smoke-size params for the toy task with tiny models; every run lands in tmp_path."""
    return {
        "source_task": "toy-sentiment",
        "teacher_model": str(encoder),
        "max_length": 32,
        "teacher_epochs": 3.0,  # the toy teacher is at 100% dev accuracy after 3 epochs at this rate
        "teacher_lr": 3e-3,
        "teacher_batch_size": 16,
        "student_arch": "l2-h32",
        "student_init": "random",
        "student_heads": 2,
        "distill_epochs": 2.0,
        "distill_lr": 3e-3,
        "distill_batch_size": 16,
        "finetune_epochs": 3.0,
        "finetune_lr": 1e-3,
        "finetune_batch_size": 16,
        "target_task": "toy-sentiment",
        "runs_dir": str(tmp_path / "runs"),
        "cache_dir": str(tmp_path / "cache"),
        "progress": False,
        "warmup_ratio": 0.0,
        "evals_per_epoch": 2,
        "patience": 20,
    }


@pytest.fixture()
def base_params(tmp_path, tiny_encoder) -> dict:
    return smoke_params(tmp_path, tiny_encoder)


def assert_same_weights(one: dict, two: dict) -> None:
    """Two processes' weights against one's: equal up to float reduction order (a global batch's gradient summed in
    one GEMM here and as two halves plus an all-reduce there, with other thread counts): ~1e-7 differences that
    Adam's normalised steps grow, most on small-gradient parameters. Elementwise rtol 1e-3 with atol 1e-3, and the
    whole weight vector within 1e-3 relative distance; a wrong loss weight or data split moves weights by ~1e-2."""
    assert one.keys() == two.keys()
    bad = [k for k in one if not torch.allclose(one[k], two[k], rtol=1e-3, atol=1e-3)]
    assert not bad, bad
    flat = [torch.cat([w[k].flatten() for k in sorted(one)]) for w in (one, two)]
    assert (flat[0] - flat[1]).norm() / flat[0].norm() < 1e-3
