"""Process groups for multi-process runs: `torchrun`, `accelerate launch` and Slurm (through submitit).

A launcher starts N copies of the same command and tells each its place in the environment (RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR, MASTER_PORT); `init_from_env` turns that into a process group: gloo on CPU, nccl on CUDA.
Without those variables (a plain `xdlib`, a notebook) nothing is initialised and every helper below is a
no-op, so one code path serves every launch form. Who writes and who waits is decided in `xdlib.stages`.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import torch

from .config import ConfigError


def env_world_size() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise ConfigError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not allowed; allowed: a whole number") from None


def init_from_env(device: str = "auto") -> None:
    """Join the launcher's process group (once). `device` is the config's: nccl needs CUDA, gloo serves the CPU."""
    if env_world_size() <= 1 or initialized():
        return
    missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise ConfigError(
            f"WORLD_SIZE={os.environ['WORLD_SIZE']} but {', '.join(missing)} not set; allowed: launch with torchrun, "
            "accelerate launch or srun (through the sweep's slurm executor), which set them"
        )
    wants_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if wants_cuda and not torch.cuda.is_available():
        raise ConfigError(f"device={device!r} asks for nccl (CUDA), but this machine has no CUDA; allowed: device=cpu")
    backend = os.environ.get("XDLIB_DIST_BACKEND") or ("nccl" if wants_cuda else "gloo")
    if backend == "nccl" and not torch.cuda.is_available():
        raise ConfigError("XDLIB_DIST_BACKEND=nccl needs CUDA, which this machine does not have; allowed: gloo")
    if wants_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    torch.distributed.init_process_group(backend, timeout=timedelta(minutes=30))


def initialized() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def rank_world() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside a process group."""
    if initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def is_main() -> bool:
    return rank_world()[0] == 0


def barrier() -> None:
    if initialized():
        torch.distributed.barrier()


def broadcast(value: Any) -> Any:
    """Rank 0's `value` on every rank (any picklable object made by our own code)."""
    if not initialized():
        return value
    box = [value]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def gather(value: Any) -> list[Any]:
    """Every rank's `value`, in rank order, on every rank."""
    if not initialized():
        return [value]
    out: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(out, value)
    return out


def main_first(fn, *args, **kwargs) -> Any:
    """Run `fn` on rank 0 (which writes what it makes), then on the others once rank 0 is done (they read it).
    Any rank's failure is raised on every rank, so no rank waits forever at a barrier."""
    error = None
    result = None
    if is_main():
        try:
            result = fn(*args, **kwargs)
        except Exception as err:  # re-raised below, after the others have heard of it
            error = err
    failed = broadcast(None if error is None else f"{type(error).__name__}: {error}")
    if error is not None:
        raise error
    if failed is not None:
        from .errors import PeerFailed

        raise PeerFailed(f"rank 0 failed: {failed}")
    if not is_main():
        result = fn(*args, **kwargs)
    return result
