"""Extractive QA (SQuAD v2 style): doc-stride features, span search with the no-answer option, and the
no-answer threshold chosen on dev.

Long contexts are cut into windows of `max_length` tokens that overlap by `doc_stride` tokens (the tokenizer's
`stride`); each window is one *feature*. Training labels a feature with the answer's (start, end) tokens, or
(0, 0) — the [CLS] position — when the answer is not inside it (or there is none). At prediction time each
example takes its best span over all its windows (n-best starts x ends, length <= max_answer_length) and its
null margin = [CLS] score - best span score; it answers "" when the margin exceeds the threshold fitted on dev.
"""

from __future__ import annotations

import torch
from torch import nn

from . import metrics
from .data import collate, eval_batches
from .devices import autocast
from .tasks import Split


def encode_qa(tokenizer, rows: Split, max_length: int, doc_stride: int) -> list[dict]:
    """Features (windows) of qa rows: input ids, the example they come from, context offsets, answer span."""
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("extractive QA needs a fast tokenizer (offsets); this model's tokenizer is not one")
    stride = min(doc_stride, max_length // 2)
    enc = tokenizer(
        [r["question"] for r in rows],
        [r["context"] for r in rows],
        truncation="only_second",
        max_length=max_length,
        stride=stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
    )
    features = []
    for i, ids in enumerate(enc["input_ids"]):
        example = enc["overflow_to_sample_mapping"][i]
        sequence_ids = enc.sequence_ids(i)
        offsets = [tuple(o) if s == 1 else None for o, s in zip(enc["offset_mapping"][i], sequence_ids)]
        feature = {"input_ids": ids, "units": [0], "example": example, "offsets": offsets, "span": [0, 0]}
        if "token_type_ids" in enc:
            feature["token_type_ids"] = enc["token_type_ids"][i]
        answers = rows[example].get("answers") or []
        if answers:
            start_char = answers[0]["start"]
            end_char = start_char + len(answers[0]["text"])
            inside = [j for j, o in enumerate(offsets) if o is not None]
            if offsets[inside[0]][0] <= start_char and offsets[inside[-1]][1] >= end_char:
                start = next(j for j in inside if offsets[j][1] > start_char)
                end = max(j for j in inside if offsets[j][0] < end_char)
                feature["span"] = [start, end]
        features.append(feature)
    return features


class QALoss(nn.Module):
    """forward(batch) -> mean of start/end cross-entropy (the HF head's own loss)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batch: dict) -> torch.Tensor:
        inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}
        spans = batch["spans"]
        return self.model(**inputs, start_positions=spans[:, 0], end_positions=spans[:, 1]).loss


@torch.inference_mode()
def predict_qa(
    model, features: list[dict], rows: Split, pad_id: int, device, n_best: int = 20, max_answer_length: int = 30
) -> tuple[list[str], list[float]]:
    """Best non-empty answer text and null margin (null score - best span score) per example."""
    model.eval()
    best_text = [""] * len(rows)
    best_score = [-float("inf")] * len(rows)
    null_score = [float("inf")] * len(rows)
    for idx in eval_batches([len(f["input_ids"]) for f in features], 64):
        batch = collate([features[i] for i in idx], pad_id, device)
        inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}
        with autocast(torch.device(device)):
            out = model(**inputs)
        starts, ends = out.start_logits.float().cpu(), out.end_logits.float().cpu()
        for row, i in enumerate(idx):
            feature, ex = features[i], features[i]["example"]
            offsets = feature["offsets"]
            n = len(feature["input_ids"])
            s_log, e_log = starts[row, :n], ends[row, :n]
            null_score[ex] = min(null_score[ex], float(s_log[0] + e_log[0]))
            for s in s_log.topk(min(n_best, n)).indices.tolist():
                for e in e_log.topk(min(n_best, n)).indices.tolist():
                    if offsets[s] is None or offsets[e] is None or e < s or e - s + 1 > max_answer_length:
                        continue
                    score = float(s_log[s] + e_log[e])
                    if score > best_score[ex]:
                        best_score[ex] = score
                        best_text[ex] = rows[ex]["context"][offsets[s][0] : offsets[e][1]]
    margins = [ns - bs if bs > -float("inf") else float("inf") for ns, bs in zip(null_score, best_score)]
    return best_text, margins


def gold_answers(rows: Split) -> list[list[str]]:
    return [[a["text"] for a in r.get("answers") or []] for r in rows]


def qa_metrics(answers: list[str], margins: list[float], rows: Split, threshold: float) -> dict[str, float]:
    """SQuAD v2 metrics of the predictions with the no-answer threshold applied."""
    final = ["" if m > threshold else a for a, m in zip(answers, margins)]
    return metrics.squad_v2(final, gold_answers(rows))


def fit_threshold(answers: list[str], margins: list[float], rows: Split) -> float:
    finite = [m if m != float("inf") else 1e9 for m in margins]
    return metrics.best_null_threshold(answers, finite, gold_answers(rows))
