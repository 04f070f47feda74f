"""Devices and precision: which device a run uses, and the autocast its forward passes run under."""

from __future__ import annotations

import os
from contextlib import ExitStack, nullcontext

import torch


def resolve_device(name: str) -> torch.device:
    """auto = the launcher's GPU (LOCAL_RANK) when there is CUDA, else the CPU; `cuda` also follows LOCAL_RANK."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device(name)


def compute_precision(device) -> str:
    """The precision the forward passes run in on `device` (see `autocast`): part of what a teacher cache keys on."""
    return "bf16" if torch.device(device).type == "cuda" else "fp32"


def autocast(device: torch.device):
    """bf16 autocast on CUDA; plain fp32 elsewhere (CPU bf16 autocast is slower on most CPUs).

    On CUDA, attention also keeps to the flash / memory-efficient / math SDPA kernels: the cuDNN kernel plans
    each new (batch, length) shape, which dynamic padding makes a per-step cost (profiled on an H200).
    """
    if device.type != "cuda":
        return nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    stack = ExitStack()
    stack.enter_context(torch.autocast("cuda", dtype=torch.bfloat16))
    stack.enter_context(sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]))
    return stack
