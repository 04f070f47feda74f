"""Distillation losses. Plain tensor functions; shapes in comments.

Positions: every loss works on "units" — the [CLS] vector for sequence tasks (U = 1) or the first sub-token of
each word for token tasks (U = words) — so teachers and students with different tokenizers line up on words.
`mask` is (B, U) with 1 for a real unit and 0 for padding.

Reference: Mukherjee et al. 2021, XtremeDistilTransformers (arXiv 2106.04563) and its code,
github.com/microsoft/xtreme-distil-transformers `models.py` (keras losses 'mse' per output, summed over outputs).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .registry import Registry

LOGIT_LOSSES: Registry = Registry("logit loss")


def _masked_mean_sq(diff: Tensor, mask: Tensor) -> Tensor:
    """Mean of diff**2 over real units and the feature dimension. diff (B, U, D), mask (B, U)."""
    weights = mask.to(diff.dtype).unsqueeze(-1)  # (B, U, 1)
    denom = weights.sum() * diff.shape[-1]
    return (diff.pow(2) * weights).sum() / denom.clamp_min(1.0)


def hidden_mse(student_states: list[Tensor], teacher_states: list[Tensor], mask: Tensor) -> Tensor:
    """Stage 1: sum over matched layers of the MSE between projected student and teacher hidden states.

    student_states[i], teacher_states[i]: (B, U, H_t); mask (B, U).
    Keras' 'mse' on each of the L+1 outputs, summed (reference `compile_model`, stage 1); padding is masked.
    """
    if len(student_states) != len(teacher_states):
        raise ValueError(f"{len(student_states)} student states vs {len(teacher_states)} teacher states")
    return sum(_masked_mean_sq(s.float() - t.float(), mask) for s, t in zip(student_states, teacher_states))


def attention_mse(student_attn: list[Tensor], teacher_attn: list[Tensor], attention_mask: Tensor) -> Tensor:
    """Optional stage-1 term: MSE between attention-probability maps of matched layers, summed over layers.

    student_attn[i]: (B, h_s, T, T); teacher_attn[i]: (B, h_t, T, T); attention_mask (B, T) over tokens.
    When h_s != h_t (e.g. l6-h256's 8 heads vs a 12-head teacher) both maps are averaged over heads first, so
    head-averaged maps are compared; with equal counts heads are matched one to one. Only real query rows and
    key columns count. Needs teacher and student to share a tokenizer (token positions must line up).
    """
    pair = attention_mask.to(torch.float32)
    pair = pair[:, None, :, None] * pair[:, None, None, :]  # (B, 1, T, T)
    total = torch.zeros((), device=attention_mask.device)
    for s, t in zip(student_attn, teacher_attn):
        s, t = s.float(), t.float()
        if s.shape[1] != t.shape[1]:
            s, t = s.mean(1, keepdim=True), t.mean(1, keepdim=True)
        weights = pair.expand_as(s)
        total = total + ((s - t).pow(2) * weights).sum() / weights.sum().clamp_min(1.0)
    return total


@LOGIT_LOSSES.register("mse")
def logit_mse(student_logits: Tensor, teacher_logits: Tensor, mask: Tensor, temperature: float = 1.0) -> Tensor:
    """Stage 2 (the paper's): MSE between raw logits, no temperature (reference code: loss='mse').

    student_logits, teacher_logits: (B, U, C); mask (B, U). `temperature` is accepted and ignored.
    """
    return _masked_mean_sq(student_logits.float() - teacher_logits.float(), mask)


@LOGIT_LOSSES.register("kl")
def logit_kl(student_logits: Tensor, teacher_logits: Tensor, mask: Tensor, temperature: float = 1.0) -> Tensor:
    """Option: Hinton et al. 2015 KD. KL(p_T || p_S) of temperature-T softmaxes, summed over classes, averaged
    over real units ("batchmean"), times T^2 so gradients keep their scale as T changes.
    """
    log_p_s = F.log_softmax(student_logits.float() / temperature, dim=-1)  # (B, U, C)
    log_p_t = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(-1)  # (B, U)
    weights = mask.to(kl.dtype)
    return (kl * weights).sum() / weights.sum().clamp_min(1.0) * temperature**2


def label_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Stage 3: cross-entropy on gold labels (ignore_index -100), or MSE for regression (one output).

    logits: (B, U, C) or (B, C); labels: matching (B, U) / (B,) class ids or float targets.
    """
    # means over the labelled targets only, and 0 (not NaN) for a batch without any; no host sync either way
    if logits.shape[-1] == 1 and labels.is_floating_point():
        keep = ~torch.isnan(labels)
        error = (logits.squeeze(-1).float() - torch.nan_to_num(labels.float())) ** 2
        return (error * keep).sum() / keep.sum().clamp(min=1)
    flat = labels.reshape(-1).long()
    total = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), flat, ignore_index=-100, reduction="sum")
    return total / (flat != -100).sum().clamp(min=1)
