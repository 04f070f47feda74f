"""Task heads in training and evaluation: the loss module, prediction and metrics for any model with a head.

Used to fine-tune the teacher on its source task and a student (or baseline) on a target task.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import AutoModel, AutoTokenizer

from . import losses, metrics, models
from .data import collate, encode, eval_batches
from .devices import autocast
from .errors import ConfigError
from .models import run_model, unit_logits
from .qa import QALoss, encode_qa, fit_threshold, predict_qa, qa_metrics
from .tasks import Split, Task
from .train import LoopSettings, train


@dataclass(frozen=True)
class QAOptions:
    doc_stride: int = 128
    max_answer_length: int = 30
    n_best: int = 20


class TaskLoss(nn.Module):
    """forward(batch) -> label loss of `model` (CE / MSE) as a sum and a count (a token task's mean is over words,
    not examples), so the generic loop can train any head model, on one process or several."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batch: dict) -> losses.Part:
        logits = unit_logits(run_model(self.model, batch).logits, batch)
        labels = batch["labels"]
        return losses.label_loss(logits if labels.dim() == 2 else logits[:, 0], labels, parts=True)


@torch.inference_mode()
def predict(model: nn.Module, encoded: list[dict], task: Task, pad_id: int, device, batch_size: int = 64) -> list:
    """Predictions per example: class id, float (regression) or tag ids per word (token tasks; words cut off by
    truncation are predicted as tag 0, 'O', so every word is scored)."""
    model.eval()
    out: list = [None] * len(encoded)
    for idx in eval_batches([len(e["input_ids"]) for e in encoded], batch_size):
        batch = collate([encoded[i] for i in idx], pad_id, device)
        with autocast(torch.device(device)):
            logits = unit_logits(run_model(model, batch).logits, batch).float().cpu()  # one sync per batch
        for row, i in enumerate(idx):
            if task.kind == "token":
                tags = logits[row, : len(encoded[i]["units"])].argmax(-1).tolist()
                out[i] = tags + [0] * (encoded[i]["n_words"] - len(tags))
            elif task.kind == "regression":
                out[i] = float(logits[row, 0, 0])
            else:
                out[i] = int(logits[row, 0].argmax())
    return out


def agreement(model, tokenizer, reference, ref_tokenizer, task: Task, rows: Split, max_length: int, device):
    """How closely `model` follows `reference` on `rows`: the task's main metric with the reference's predictions
    as the labels (for accuracy, the share of predictions that agree). Each model reads its own tokenisation, so
    a student with another vocabulary is compared word for word. None for QA."""
    if task.kind == "qa" or not rows:
        return None
    ours, theirs = (
        predict(m.to(device), encode(tok, rows, task, max_length), task, tok.pad_token_id, device)
        for m, tok in ((model, tokenizer), (reference, ref_tokenizer))
    )
    return metrics.compute(task, ours, theirs)[task.metric]


def _qa_predictions(model, tokenizer, rows: Split, max_length: int, device, qa=None, encoded=None):
    """Best answer text and null margin per qa row (features encoded here unless given)."""
    qa = qa or QAOptions()
    encoded = encoded if encoded is not None else encode_qa(tokenizer, rows, max_length, qa.doc_stride)
    return predict_qa(model, encoded, rows, tokenizer.pad_token_id, device, qa.n_best, qa.max_answer_length)


def evaluate(
    model, tokenizer, task: Task, rows: Split, max_length: int, device, encoded=None, qa: QAOptions | None = None
) -> dict[str, float]:
    """All metrics of `task` on `rows`. QA uses the best no-answer threshold *of these rows* (use
    `evaluate_splits` to fit it on dev and apply it to test)."""
    if task.kind == "qa":
        answers, margins = _qa_predictions(model, tokenizer, rows, max_length, device, qa, encoded)
        threshold = fit_threshold(answers, margins, rows)
        return {**qa_metrics(answers, margins, rows, threshold), "null_threshold": threshold}
    encoded = encoded if encoded is not None else encode(tokenizer, rows, task, max_length)
    preds = predict(model, encoded, task, tokenizer.pad_token_id, device)
    return metrics.compute(task, preds, [r["label"] for r in rows])


def evaluate_splits(
    model, tokenizer, task: Task, data: dict[str, Split], max_length: int, device, qa=None, dev: dict | None = None
) -> dict:
    """Split-prefixed metrics (dev_*, test_*, and extra reported splits such as test_mismatched) of the model as it
    is now; QA's no-answer threshold is chosen on dev and applied unchanged to the other splits. `dev`: the dev
    metrics of these very weights when already computed (fit_task's best evaluation): not recomputed."""
    out = {"task": task.name, "task_kind": task.kind, "task_version": task.version, "main_metric": task.metric}
    threshold = None
    for split in ["dev"] + sorted(s for s in data if s not in ("train", "dev")):
        rows = data.get(split)
        if not rows:
            continue
        if split == "dev" and dev is not None and task.kind != "qa":
            values = dev
        elif task.kind == "qa":
            answers, margins = _qa_predictions(model, tokenizer, rows, max_length, device, qa)
            if threshold is None:
                threshold = fit_threshold(answers, margins, rows)
                out["null_threshold"] = threshold
            values = qa_metrics(answers, margins, rows, threshold)
        else:
            values = evaluate(model, tokenizer, task, rows, max_length, device)
        out.update({f"{split}_{k}": v for k, v in values.items()})
        out[f"{split}_rows"] = len(rows)  # what the scores were computed on (model cards, reports)
    return out


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
    qa: QAOptions | None = None,
    word_embeddings: bool = True,
    on_update=None,
) -> dict:
    """Fine-tune `model` on data['train'], selecting on data['dev'] by the task's main metric. The summary's
    `dev_metrics` are every dev metric of the selected weights when all evaluations ran in this call (else None).
    `word_embeddings=False` keeps the word embedding matrix frozen."""
    model.to(device)
    if task.kind == "qa":
        qa = qa or QAOptions()
        train_enc = encode_qa(tokenizer, data["train"], max_length, qa.doc_stride)
        dev_enc = encode_qa(tokenizer, data["dev"], max_length, qa.doc_stride)
        loss = QALoss(model)
    else:
        train_enc = encode(tokenizer, data["train"], task, max_length)
        dev_enc = encode(tokenizer, data["dev"], task, max_length)
        loss = TaskLoss(model)

    scored: list[dict] = []  # every dev evaluation of this call, in order

    def dev_score() -> float:
        scored.append(evaluate(model, tokenizer, task, data["dev"], max_length, device, dev_enc, qa))
        return scored[-1][task.metric]

    frozen = models.unused_parameters(model) | (set() if word_embeddings else {id(model.get_input_embeddings().weight)})
    summary = train(
        loss,
        [p for p in model.parameters() if id(p) not in frozen],
        [len(e["input_ids"]) for e in train_enc],
        lambda idx: collate([train_enc[i] for i in idx], tokenizer.pad_token_id, device),
        settings,
        ckpt_dir,
        evaluate=dev_score,
        higher_is_better=task.higher_is_better,
        device=device,
        desc=desc,
        on_update=on_update,
    )
    # train keeps the first evaluation with the best score; a resumed run lacks the ones before the kill
    complete = len(scored) == len(summary["history"])
    best = [m for m in scored if m[task.metric] == summary["best_dev"]] if complete else []
    return {**summary, "dev_metrics": best[0] if best else None}


def fresh_head_from(encoder_dir: str, head: str, num_labels: int, seed: int, pooling: str = "auto"):
    """A head model whose encoder comes from `encoder_dir` and whose task head is freshly initialised: the
    checkpoint is task-agnostic, its source-task head is not reused. It pools as `pooling` says (`auto`: as the
    folder's pooling files say, else [CLS])."""
    model = fresh_head(models.pretrained(AutoModel, encoder_dir), head, num_labels, seed, encoder_dir)
    models.set_pooling(model, models.resolve_pooling(pooling, encoder_dir))
    return model, AutoTokenizer.from_pretrained(encoder_dir)


def fresh_head(encoder, head: str, num_labels: int, seed: int, where: str = "the encoder"):
    """A head model around a copy of `encoder`'s weights, with a fresh `head` (seeded)."""
    torch.manual_seed(seed)
    own = {k: v for k, v in encoder.config.to_dict().items() if k not in ("id2label", "label2id", "problem_type")}
    config = encoder.config.__class__.from_dict({**own, **models.head_kwargs(head, num_labels)})  # the old head goes
    model = models.HEAD_CLASSES[head].from_config(config)
    result = model.base_model.load_state_dict(encoder.state_dict(), strict=False)
    # only the pooler may differ (token and QA heads have none); anything else means another architecture
    mismatched = [k for k in (*result.missing_keys, *result.unexpected_keys) if not k.startswith("pooler.")]
    if mismatched:
        raise ConfigError(
            f"the encoder in {where} does not fit a {head} model: missing {list(result.missing_keys)[:8]}, "
            f"unexpected {list(result.unexpected_keys)[:8]}; allowed: a checkpoint of the same architecture"
        )
    return model
