"""Task heads in training and evaluation: the loss module, prediction and metrics for any model with a head.

Used to fine-tune the teacher on its source task and a student (or baseline) on a target task.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import losses, metrics
from .data import collate, encode, eval_batches, gather_units
from .tasks import Split, Task
from .train import LoopSettings, autocast, train


def unit_logits(model_output_logits: torch.Tensor, batch: dict) -> torch.Tensor:
    """Head logits at the loss units: (B, C) for sequence heads -> (B, 1, C); (B, T, C) -> (B, U, C)."""
    if model_output_logits.dim() == 2:
        return model_output_logits.unsqueeze(1)
    return gather_units(model_output_logits, batch["unit_pos"])


def model_inputs(batch: dict) -> dict:
    return {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}


class TaskLoss(nn.Module):
    """forward(batch) -> label loss of `model` (CE / MSE), so the generic loop can train any head model."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batch: dict) -> torch.Tensor:
        logits = unit_logits(self.model(**model_inputs(batch)).logits, batch)
        labels = batch["labels"]
        return losses.label_loss(logits if labels.dim() == 2 else logits[:, 0], labels)


@torch.inference_mode()
def predict(model: nn.Module, encoded: list[dict], task: Task, pad_id: int, device, batch_size: int = 64) -> list:
    """Predictions per example: class id, float (regression) or tag ids per word (token tasks; words cut off by
    truncation are predicted as tag 0, 'O', so every word is scored)."""
    model.eval()
    out: list = [None] * len(encoded)
    for idx in eval_batches([len(e["input_ids"]) for e in encoded], batch_size):
        batch = collate([encoded[i] for i in idx], pad_id, device)
        with autocast(torch.device(device)):
            logits = unit_logits(model(**model_inputs(batch)).logits, batch).float()
        for row, i in enumerate(idx):
            if task.kind == "token":
                tags = logits[row, : len(encoded[i]["units"])].argmax(-1).tolist()
                out[i] = tags + [0] * (encoded[i]["n_words"] - len(tags))
            elif task.kind == "regression":
                out[i] = float(logits[row, 0, 0])
            else:
                out[i] = int(logits[row, 0].argmax())
    return out


def evaluate(model, tokenizer, task: Task, rows: Split, max_length: int, device, encoded=None) -> dict[str, float]:
    encoded = encoded if encoded is not None else encode(tokenizer, rows, task, max_length)
    preds = predict(model, encoded, task, tokenizer.pad_token_id, device)
    return metrics.compute(task, preds, [r["label"] for r in rows])


def fit_task(
    model,
    tokenizer,
    task: Task,
    data: dict[str, Split],
    max_length: int,
    settings: LoopSettings,
    ckpt_dir: Path,
    device,
    desc: str,
) -> dict:
    """Fine-tune `model` on data['train'], selecting on data['dev'] by the task's main metric."""
    model.to(device)
    train_enc = encode(tokenizer, data["train"], task, max_length)
    dev_enc = encode(tokenizer, data["dev"], task, max_length)

    def dev_score() -> float:
        return evaluate(model, tokenizer, task, data["dev"], max_length, device, dev_enc)[task.metric]

    return train(
        TaskLoss(model),
        list(model.parameters()),
        [len(e["input_ids"]) for e in train_enc],
        lambda idx: collate([train_enc[i] for i in idx], tokenizer.pad_token_id, device),
        settings,
        ckpt_dir,
        evaluate=dev_score,
        higher_is_better=task.higher_is_better,
        device=device,
        desc=desc,
    )


def cap(rows: Split, limit: int | None, seed: int) -> Split:
    """A seeded random subset of at most `limit` rows (all rows when limit is None)."""
    if limit is None or len(rows) <= limit:
        return rows
    keep = np.random.default_rng(seed).permutation(len(rows))[:limit]
    return [rows[i] for i in sorted(keep)]
