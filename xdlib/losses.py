"""Distillation losses. Plain tensor functions; shapes in comments.

Positions: every loss works on "units" — the [CLS] vector for sequence tasks (U = 1) or the first sub-token of
each word for token tasks (U = words) — so teachers and students with different tokenizers line up on words.
`mask` is (B, U) with 1 for a real unit and 0 for padding.

Every loss is a mean over its elements (units x features, labelled targets, ...). Each one can also return that
mean's parts, `Part(total, count)` (with `parts=True`): under several processes the training loop divides every
rank's total by the count summed over all ranks, so N processes train on exactly the global batch's mean, also
where ranks hold different numbers of words or labelled rows (token tasks, joint mode).

Reference: Mukherjee et al. 2021, XtremeDistilTransformers (arXiv 2106.04563) and its code,
github.com/microsoft/xtreme-distil-transformers `models.py` (keras losses 'mse' per output, summed over outputs).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .registry import Registry

LOGIT_LOSSES: Registry = Registry("logit loss")


class Part(NamedTuple):
    """A loss as the sum over its elements and their count: mean = total / count (0 where nothing counts)."""

    total: Tensor  # () float
    count: Tensor  # () float: the elements the mean divides by

    def mean(self) -> Tensor:
        return self.total / self.count.clamp_min(1.0)


def mean_of(out: Tensor | Part | dict[str, Part]) -> Tensor:
    """The loss a module returned, as one number: a mean as it is, a part's mean, or the sum of the terms' means."""
    if isinstance(out, Part):
        return out.mean()
    if isinstance(out, dict):
        return sum(part.mean() for part in out.values())
    return out


def _out(part: Part, parts: bool) -> Tensor | Part:
    return part if parts else part.mean()


def _masked_sq(diff: Tensor, mask: Tensor) -> Part:
    """diff**2 summed over real units and the feature dimension, and that element count. diff (B, U, D), mask (B, U)."""
    weights = mask.to(diff.dtype).unsqueeze(-1)  # (B, U, 1)
    return Part((diff.pow(2) * weights).sum(), weights.sum() * diff.shape[-1])


def hidden_mse(student_states: list[Tensor], teacher_states: list[Tensor], mask: Tensor, parts: bool = False):
    """Stage 1: sum over matched layers of the MSE between projected student and teacher hidden states.

    student_states[i], teacher_states[i]: (B, U, H_t); mask (B, U).
    Keras' 'mse' on each of the L+1 outputs, summed (reference `compile_model`, stage 1); padding is masked.
    Every layer has the same element count (units x H_t), so the sum of the layers' means is one total over it.
    """
    if len(student_states) != len(teacher_states):
        raise ValueError(f"{len(student_states)} student states vs {len(teacher_states)} teacher states")
    layers = [_masked_sq(s.float() - t.float(), mask) for s, t in zip(student_states, teacher_states)]
    return _out(Part(sum(p.total for p in layers), layers[0].count), parts)


def attention_mse(student_attn: list[Tensor], teacher_attn: list[Tensor], attention_mask: Tensor, parts: bool = False):
    """Optional stage-1 term: MSE between attention-probability maps of matched layers, summed over layers.

    student_attn[i]: (B, h_s, T, T); teacher_attn[i]: (B, h_t, T, T); attention_mask (B, T) over tokens.
    When h_s != h_t (e.g. l6-h256's 8 heads vs a 12-head teacher) both maps are averaged over heads first, so
    head-averaged maps are compared; with equal counts heads are matched one to one. Only real query rows and
    key columns count. Needs teacher and student to share a tokenizer (token positions must line up). Every layer
    has the same head count, so every layer's mean has the same count of real cells.
    """
    pair = attention_mask.to(torch.float32)
    pair = pair[:, None, :, None] * pair[:, None, None, :]  # (B, 1, T, T)
    total = torch.zeros((), device=attention_mask.device)
    count = torch.zeros((), device=attention_mask.device)
    for s, t in zip(student_attn, teacher_attn):
        s, t = s.float(), t.float()
        if s.shape[1] != t.shape[1]:
            s, t = s.mean(1, keepdim=True), t.mean(1, keepdim=True)
        weights = pair.expand_as(s)
        total = total + ((s - t).pow(2) * weights).sum()
        count = weights.sum()
    return _out(Part(total, count), parts)


@LOGIT_LOSSES.register("mse")
def logit_mse(student_logits: Tensor, teacher_logits: Tensor, mask: Tensor, temperature: float = 1.0, parts=False):
    """Stage 2 (the paper's): MSE between raw logits, no temperature (reference code: loss='mse').

    student_logits, teacher_logits: (B, U, C); mask (B, U). `temperature` is accepted and ignored.
    """
    return _out(_masked_sq(student_logits.float() - teacher_logits.float(), mask), parts)


@LOGIT_LOSSES.register("kl")
def logit_kl(student_logits: Tensor, teacher_logits: Tensor, mask: Tensor, temperature: float = 1.0, parts=False):
    """Option: Hinton et al. 2015 KD. KL(p_T || p_S) of temperature-T softmaxes, summed over classes, averaged
    over real units ("batchmean"), times T^2 so gradients keep their scale as T changes.
    """
    log_p_s = F.log_softmax(student_logits.float() / temperature, dim=-1)  # (B, U, C)
    log_p_t = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(-1)  # (B, U)
    weights = mask.to(kl.dtype)
    return _out(Part((kl * weights).sum() * temperature**2, weights.sum()), parts)


def label_loss(logits: Tensor, labels: Tensor, parts: bool = False):
    """Stage 3: cross-entropy on gold labels (ignore_index -100), or MSE for regression (one output).

    logits: (B, U, C) or (B, C); labels: matching (B, U) / (B,) class ids or float targets.
    """
    # means over the labelled targets only, and 0 (not NaN) for a batch without any; no host sync either way
    if logits.shape[-1] == 1 and labels.is_floating_point():
        keep = ~torch.isnan(labels)
        error = (logits.squeeze(-1).float() - torch.nan_to_num(labels.float())) ** 2
        return _out(Part((error * keep).sum(), keep.sum().float()), parts)
    flat = labels.reshape(-1).long()
    total = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), flat, ignore_index=-100, reduction="sum")
    return _out(Part(total, (flat != -100).sum().float()), parts)
