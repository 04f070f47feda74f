"""One training run of a token-task loss or a joint-mode distillation, on one process or as a rank of a gloo
group: tests/test_engine.py starts it both ways and compares the weights. Imported by spawned processes."""

from __future__ import annotations

import random
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import AutoModelForTokenClassification, AutoTokenizer

from xdlib.data import collate, encode, lengths_of
from xdlib.heads import TaskLoss
from xdlib.kd import DistillModule
from xdlib.models import HiddenProjection
from xdlib.tasks import TOY_VOCAB, get_task
from xdlib.train import LoopSettings, train

TEACHER_WIDTH = 48  # not the student's 64: the projection takes part


def rows(n: int = 30) -> list[dict]:
    """Sentences of 1 to 8 words, so the ranks of a global batch hold different numbers of words; in joint mode
    only every third row has labels (the rest stand for augmentation text)."""
    rng = random.Random(1)
    out = []
    for _ in range(n):
        words = rng.choices(TOY_VOCAB, k=rng.choice([1, 1, 2, 6, 7, 8]))
        out.append({"words": words, "label": [rng.randrange(3) for _ in words]})
    return out


def run(rank: int, world: int, case: str, encoder: str, out: str, init_file: str) -> None:
    if world > 1:
        torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    task = get_task("toy-ner")
    tokenizer = AutoTokenizer.from_pretrained(encoder)
    torch.manual_seed(0)
    model = AutoModelForTokenClassification.from_pretrained(
        encoder, num_labels=task.num_labels, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0
    )
    data = rows()
    if case == "joint":
        for i, row in enumerate(data):
            if i % 3:
                row.pop("label")
    encoded = encode(tokenizer, data, task, 32)
    pad = tokenizer.pad_token_id
    if case == "token":
        module = TaskLoss(model)

        def make_batch(idx):
            return collate([encoded[i] for i in idx], pad)
    else:
        n_states = model.config.num_hidden_layers + 1
        module = DistillModule(model, HiddenProjection(n_states, model.config.hidden_size, TEACHER_WIDTH, dropout=0.0))
        module.loss_weights = {"hidden": 1.0, "logits": 1.0, "labels": 1.0}  # the joint stage
        # fixed "teacher outputs" per example: (U, L+1, H_t) hidden states and (U, C) logits
        teacher = []
        for i, e in enumerate(encoded):
            g = torch.Generator().manual_seed(i)
            units = len(e["units"])
            teacher.append(
                (torch.randn(units, n_states, TEACHER_WIDTH, generator=g), torch.randn(units, 3, generator=g))
            )

        def make_batch(idx):
            batch = collate([encoded[i] for i in idx], pad)
            most = batch["unit_mask"].shape[1]
            hidden = torch.zeros(len(idx), most, n_states, TEACHER_WIDTH)
            logits = torch.zeros(len(idx), most, 3)
            for b, i in enumerate(idx):
                units = teacher[i][0].shape[0]
                hidden[b, :units], logits[b, :units] = teacher[i]
            return batch | {"teacher_hidden": hidden, "teacher_logits": logits}

    settings = LoopSettings(epochs=2.0, lr=1e-3, batch_size=3, warmup_ratio=0.0, progress=False)
    ckpt = Path(out).parent / f"ckpt-{case}-{world}"
    train(module, list(module.parameters()), lengths_of(encoded).tolist(), make_batch, settings, ckpt)
    if rank == 0:
        save_file({k: v.contiguous() for k, v in module.state_dict().items()}, out)
    if world > 1:
        torch.distributed.destroy_process_group()
