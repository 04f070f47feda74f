"""The teacher-output cache: the teacher runs once over a transfer set, and its hidden states (of the layers the
student's layer map reads) and logits at each example's units are stored as memory-mapped .npy files.

The cache is keyed on everything its outputs depend on (`cache_key`), records the digest of the teacher weights it
came from (rebuilt when they changed), and is built once under a lock, atomically (tmp dir + rename).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import pooling, runs
from .data import collate, encode_set, eval_batches, lengths_of, rows_digest, take, to_device, units_of
from .devices import autocast
from .models import run_model, unit_logits, unit_states
from .tasks import Split, Task

# ---- teacher-output cache -----------------------------------------------------------------------------------


@dataclass
class TeacherCache:
    """Teacher outputs at each example's units, packed: example i owns rows offsets[i]:offsets[i+1].

    hidden: (total_units, len(layers), H_t) the teacher hidden states that the student's layer map reads (0 = the
    embedding output), in the order of `layers`; logits: (total_units, C). Stored as .npy files (fp16 by default)
    and memory-mapped, so it costs disk, not RAM, at paper scale.
    """

    hidden: np.ndarray
    logits: np.ndarray
    offsets: np.ndarray
    layers: list[int]
    resident: tuple[torch.Tensor, torch.Tensor] | None = None  # (hidden, logits) copied to an accelerator

    @classmethod
    def open(cls, path: Path) -> TeacherCache:
        load = lambda name: np.load(path / f"{name}.npy", mmap_mode="r", allow_pickle=False)  # noqa: E731
        layers = json.loads((path / "layers.json").read_text())
        return cls(load("hidden"), load("logits"), load("offsets"), layers)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def units(self, i: int) -> int:
        return int(self.offsets[i + 1] - self.offsets[i])

    def to_device(self, device, fraction: float = 0.25) -> TeacherCache:
        """On CUDA, a copy held in GPU memory (when it takes under `fraction` of the free memory), so a batch is
        one device-side gather instead of a host read and copy per step; elsewhere (or too big) self."""
        device = torch.device(device)
        if device.type != "cuda" or self.nbytes() > fraction * torch.cuda.mem_get_info(device)[0]:
            return self
        on = lambda a: torch.from_numpy(np.array(a)).to(device)  # a writable copy of the map  # noqa: E731
        return TeacherCache(self.hidden, self.logits, self.offsets, self.layers, (on(self.hidden), on(self.logits)))

    def batch(self, indices: list[int], counts: list[int], layers: list[int], device) -> tuple[torch.Tensor, ...]:
        """hidden (B, U, len(layers), H_t), logits (B, U, C), mask (B, U) for the first counts[b] units (the
        rest zero); `layers` are teacher hidden-state indices, each one this cache stored. One vectorised gather
        for the whole batch, from the memory map or the resident copy."""
        layers = [self.layers.index(i) for i in layers]  # teacher index -> stored position
        n = np.asarray(counts)
        starts = self.offsets[np.asarray(indices)]
        valid = np.arange(n.max())[None, :] < n[:, None]  # (B, U)
        rows = np.where(valid, starts[:, None] + np.arange(n.max())[None, :], starts[:, None])
        mask = to_device(torch.from_numpy(valid.astype(np.int64)), device)
        if self.resident is not None:
            r = to_device(torch.from_numpy(rows), device)
            hidden = self.resident[0][r][:, :, layers].float()
            logits = self.resident[1][r].float()
        else:
            hidden = torch.from_numpy(np.asarray(self.hidden[rows.ravel()][:, layers], dtype=np.float32))
            logits = torch.from_numpy(np.asarray(self.logits[rows.ravel()], dtype=np.float32))
            hidden = to_device(hidden.view(*rows.shape, *hidden.shape[1:]), device)
            logits = to_device(logits.view(*rows.shape, -1), device)
        return hidden * mask[..., None, None], logits * mask[..., None], mask

    def nbytes(self) -> int:
        return int(self.hidden.nbytes + self.logits.nbytes + self.offsets.nbytes)


def cache_key(teacher_id: str, rows: Split, max_length: int, dtype: str, layers: list[int], precision: str) -> str:
    """What the cached outputs depend on: teacher run, rows, length, storage dtype, the layers kept and the
    compute precision (a bf16 CUDA pass and an fp32 CPU pass never share a cache)."""
    digest = hashlib.sha256()
    digest.update(json.dumps([teacher_id, max_length, dtype, sorted(set(layers)), precision]).encode())
    digest.update(rows_digest(rows).encode())
    return digest.hexdigest()[:16]


def _cache_is_current(path: Path, source: str | None) -> bool:
    """A complete cache at `path`, made from the weights whose digest is `source` (any, when None)."""
    if not (path / "DONE").is_file():
        return False
    if source is None:
        return True
    try:
        return json.loads((path / "source.json").read_text()).get("weights") == source
    except (OSError, ValueError, AttributeError):
        return False


def build_teacher_cache(
    teacher,
    tokenizer,
    rows,
    task: Task,
    max_length: int,
    path: Path,
    device,
    dtype: str = "float16",
    batch_size: int = 64,
    layers: list[int] | None = None,
    tokenized_dir: Path | None = None,
    source: str | None = None,
) -> TeacherCache:
    """Run the teacher once over `rows` (a list of dicts or a datasets.Dataset) and store its outputs at the loss
    units (atomic: tmp dir + rename): the hidden states of `layers` only (default: every one), and the logits.
    Tokenised through Arrow (cached in `tokenized_dir`), so the rows never become a Python list here.

    `source` is the digest of the teacher's weights (`runs.weights_digest`): recorded with the cache, which is
    rebuilt when it differs (a teacher remade under the same run id). The build holds a lock, as a run does: two
    distillations that share a teacher (l6-h256 and l6-h384 of one grid) started at once build it once; the second
    waits, then opens it. The lock's journal gets a line per build (`runs.made`)."""
    path = Path(path)
    if _cache_is_current(path, source) and not _leftovers(path):
        return TeacherCache.open(path)
    with runs.locked(path) as lock:
        for leftover in _leftovers(path):  # a killed build's temporary folder: under the lock, no build is running
            shutil.rmtree(leftover, ignore_errors=True)
        if not _cache_is_current(path, source):  # else made by another process meanwhile
            _write_teacher_cache(teacher, tokenizer, rows, task, max_length, path, device, dtype, batch_size, layers,
                                 tokenized_dir, source)  # fmt: skip
            runs.made(lock)
    return TeacherCache.open(path)


def _leftovers(path: Path) -> list[Path]:
    """The temporary folders of builds of this cache that were killed before their rename (`.<name>.<random>`)."""
    return [p for p in path.parent.glob(f".{path.name}.*") if p.is_dir()] if path.parent.is_dir() else []


@torch.inference_mode()
def _write_teacher_cache(
    teacher, tokenizer, rows, task, max_length, path, device, dtype, batch_size, layers, tokenized_dir, source
) -> None:
    teacher.eval().to(device)
    encoded = encode_set(tokenizer, rows, task, max_length, tokenized_dir)
    counts = units_of(encoded)
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum(counts)
    cfg = teacher.config
    layers = list(range(cfg.num_hidden_layers + 1)) if layers is None else sorted(set(layers))
    n_states, width = len(layers), cfg.hidden_size
    n_labels = teacher.num_labels if task.kind != "regression" else 1
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    np_dtype = np.float16 if dtype == "float16" else np.float32
    hidden = np.lib.format.open_memmap(tmp / "hidden.npy", "w+", np_dtype, (int(offsets[-1]), n_states, width))
    logits = np.lib.format.open_memmap(tmp / "logits.npy", "w+", np_dtype, (int(offsets[-1]), n_labels))
    how = pooling.of(teacher)  # a sequence unit is the vector the head reads: [CLS] or the mean of the tokens
    for idx in eval_batches(lengths_of(encoded), batch_size):
        batch = collate(take(encoded, idx), tokenizer.pad_token_id, device)
        with autocast(torch.device(device)):
            out = run_model(teacher, batch, hidden=True)
        states = torch.stack([unit_states(out.hidden_states[i], batch, how) for i in layers], dim=2)
        unit_out = unit_logits(out.logits, batch)  # (B, U, C)
        states_np = states.to(torch.float32).cpu().numpy()  # one device->host copy per batch, not per row
        logits_np = unit_out.to(torch.float32).cpu().numpy()
        for row, i in enumerate(idx):
            n = counts[i]
            hidden[offsets[i] : offsets[i] + n] = states_np[row, :n]
            logits[offsets[i] : offsets[i] + n] = logits_np[row, :n]
        runs.fault("cache", tmp)
    hidden.flush()
    logits.flush()
    del hidden, logits
    np.save(tmp / "offsets.npy", offsets, allow_pickle=False)
    (tmp / "layers.json").write_text(json.dumps(layers))
    (tmp / "source.json").write_text(json.dumps({"weights": source}))
    (tmp / "DONE").write_text("")
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)
