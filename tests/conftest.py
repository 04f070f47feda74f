"""Shared fixtures: tiny BERT encoders built from a config (no download) with a word-level vocabulary."""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One thread: the toy models gain nothing from a second, and the study slice runs beside these tests (below): a
# 2-thread OpenMP team that shares a core spins at every barrier (a toy chain took 100 s instead of 4 s)
torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parent.parent
# Work that takes a minute or more and needs nothing from the tests: each runs in a child process (tests/<name>.py
# FOLDER, one thread) started when the tests start, if a test that reads it is among them, beside the toy tests
# instead of after them. The tests that read it run last; the fixture of that name waits for it and gives its folder.
BACKGROUND = ("study_slice", "benchmark_smoke", "export_smoke")
_started: dict[str, tuple[subprocess.Popen, Path]] = {}
_prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _die_with_parent() -> None:
    """In the child, before it runs: SIGKILL when the test process ends, however it ends (PR_SET_PDEATHSIG)."""
    if _prctl(1, signal.SIGKILL) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")


def _start(name: str, config) -> None:
    """tests/<name>.py in a child process on one thread, in a folder under pytest's base temp."""
    folder = config._tmp_path_factory.mktemp(name)
    with open(folder / "log.txt", "w") as log:
        child = subprocess.Popen([sys.executable, str(ROOT / "tests" / f"{name}.py"), str(folder)], cwd=ROOT,
                                 env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=log, stderr=subprocess.STDOUT,
                                 preexec_fn=_die_with_parent if _prctl else None)  # fmt: skip
    _started[name] = child, folder


def _stop(child: subprocess.Popen) -> None:
    """Kill `child` and every process below it (the notebook kernels it started)."""
    for pid in [*descendants(child.pid), child.pid]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    child.wait()


def _reads(item, names) -> bool:
    return any(name in getattr(item, "fixturenames", ()) for name in names)


def pytest_collection_modifyitems(items):
    """The tests that read background work run last, so the others run while it is made (a stable sort)."""
    items.sort(key=lambda item: _reads(item, BACKGROUND))


@pytest.hookimpl(tryfirst=True)
def pytest_runtestloop(session):
    """As the tests start (after -m, -k, --lf): start the background work that one of them reads."""
    if session.config.option.collectonly or session.config.option.setupplan or session.config.option.setuponly:
        return
    for name in BACKGROUND:
        if any(_reads(item, [name]) for item in session.items):
            _start(name, session.config)


def pytest_unconfigure(config):
    """The session ended before some background work did (an interrupt, -x): stop it."""
    for child, _ in _started.values():
        if child.poll() is None:
            _stop(child)


def _finished(name: str, config) -> Path:
    """The folder of background work `name` once its child has ended well; started here if it was not when the tests
    started (a test selected some other way)."""
    if name not in _started:
        _start(name, config)
    child, folder = _started[name]
    try:
        child.wait(timeout=900)
    except subprocess.TimeoutExpired:
        _stop(child)
        pytest.fail(f"tests/{name}.py still ran after 900 s; stopped. Its log: {folder / 'log.txt'}")
    log = (folder / "log.txt").read_text()[-4000:]
    assert child.returncode == 0, f"tests/{name}.py failed (exit status {child.returncode}):\n{log}"
    return folder


@pytest.fixture(scope="session")
def study_slice(pytestconfig) -> Path:
    """The study slice's folder (runs/, cache/, status.json, log.txt), once every cell of its sweep is done."""
    folder = _finished("study_slice", pytestconfig)
    status = json.loads((folder / "status.json").read_text())
    assert all(cell["state"] == "done" for cell in status), status
    return folder


@pytest.fixture(scope="session")
def benchmark_smoke(pytestconfig) -> Path:
    """notebooks/benchmark.ipynb executed at smoke size: the folder with bench.ipynb and its raw JSON."""
    return _finished("benchmark_smoke", pytestconfig)


@pytest.fixture(scope="session")
def export_smoke(pytestconfig) -> Path:
    """notebooks/export.ipynb executed at smoke size over a tiny study: the folder with its tables in out/."""
    return _finished("export_smoke", pytestconfig)


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
        "distill_epochs": 0.5,  # a phase's most: 14 updates (each gradual phase has its own budget, floor 10)
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
        "phase_min_updates": 10,  # toy sets: 2 epochs are 12-26 updates; the default floor (30) would double them
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
