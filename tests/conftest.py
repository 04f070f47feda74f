"""Shared fixtures: tiny BERT encoders built from a config (no download) with a word-level vocabulary."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(2)


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
        "teacher_epochs": 8.0,
        "teacher_lr": 1e-3,
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
