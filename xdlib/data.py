"""Tokenisation, dynamic-padding collation, length-grouped batches and seeded caps (transfer sets: transfer.py).

An *encoded* example is a dict of Python lists: input_ids, token_type_ids (if the tokenizer makes them), units
(the positions the losses read: [0] = [CLS] for sequence tasks, the first sub-token of each word for token
tasks) and label. Batches are padded only to their own longest member (dynamic padding), and examples of similar
length are batched together, so little compute is spent on padding.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
from pathlib import Path

import numpy as np
import torch

from .tasks import Split, Task


def encode(tokenizer, rows: Split, task: Task, max_length: int) -> list[dict]:
    """Tokenise rows of `task` (truncating to max_length); keep labels."""
    if task.kind == "token":
        enc = tokenizer([r["words"] for r in rows], is_split_into_words=True, truncation=True, max_length=max_length)
    else:
        texts = [r["text"] for r in rows]
        pairs = [r.get("text_pair") for r in rows]
        enc = tokenizer(
            texts, pairs if any(p is not None for p in pairs) else None, truncation=True, max_length=max_length
        )
    out = []
    for i, row in enumerate(rows):
        ex = {"input_ids": enc["input_ids"][i]}
        if "token_type_ids" in enc:
            ex["token_type_ids"] = enc["token_type_ids"][i]
        if task.kind == "token":
            ex["units"] = first_subtokens(enc.word_ids(i))
            ex["n_words"] = len(row["words"])
        else:
            ex["units"] = [0]
        if row.get("label") is not None:
            ex["label"] = row["label"]
        out.append(ex)
    return out


class EncodedSet:
    """Encoded examples kept in Arrow (a `datasets.Dataset`, memory-mapped from its on-disk cache file when it has
    one) instead of a Python list of dicts: a transfer set of any size costs disk, not RAM. `lengths` and `n_units`
    are numpy arrays; `take(indices)` returns the dicts that `collate` pads."""

    def __init__(self, dataset):
        self.dataset = dataset
        self.table = dataset.data.table  # pyarrow: a batch is one `take`, without datasets' formatting layer
        self.lengths = self.table.column("length").to_numpy()
        self.n_units = self.table.column("n_units").to_numpy()

    def __len__(self) -> int:
        return len(self.dataset)

    def take(self, indices) -> list[dict]:
        import pyarrow as pa

        columns = self.table.take(pa.array(np.asarray(indices, dtype=np.int64))).to_pydict()
        keys = [k for k in columns if k not in ("length", "n_units")]
        rows = [dict(zip(keys, values)) for values in zip(*(columns[k] for k in keys))]
        for row in rows:
            for key in ("label", "token_type_ids", "n_words"):
                if key in row and row[key] is None:
                    del row[key]
        return rows


def take(encoded, indices) -> list[dict]:
    """Examples `indices` of a list of encoded dicts or an EncodedSet (copies: callers may trim them)."""
    if isinstance(encoded, EncodedSet):
        return encoded.take(indices)
    return [dict(encoded[i]) for i in indices]


def lengths_of(encoded) -> np.ndarray:
    if isinstance(encoded, EncodedSet):
        return encoded.lengths
    return np.asarray([len(e["input_ids"]) for e in encoded], dtype=np.int64)


def units_of(encoded) -> np.ndarray:
    if isinstance(encoded, EncodedSet):
        return encoded.n_units
    return np.asarray([len(e["units"]) for e in encoded], dtype=np.int64)


def rows_digest(rows) -> str:
    """A digest of every column of `rows` (a list of dicts or a datasets.Dataset, read in batches): inputs and
    labels, so two sets with the same text but other labels never share what is derived from them."""
    digest = hashlib.sha256()
    if isinstance(rows, list):
        for row in rows:
            digest.update(json.dumps(row, sort_keys=True, default=str).encode())
        return digest.hexdigest()
    columns = sorted(rows.column_names)
    for start in range(0, len(rows), 10_000):
        batch = rows[start : start + 10_000]
        for values in zip(*(batch[k] for k in columns)):
            row = {k: v for k, v in zip(columns, values) if v is not None}  # a list's missing key, as a list's row
            digest.update(json.dumps(row, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def encode_set(tokenizer, rows, task: Task, max_length: int, cache_dir: str | Path | None = None) -> EncodedSet:
    """`encode` through Arrow: `datasets.Dataset.map` in batches of 1,000 rows, compact integer columns, written to
    `cache_dir/<key>.arrow` (reused when it is there) and memory-mapped. `rows`: a list of dicts or a Dataset."""
    from datasets import Dataset, Features, Sequence, Value

    keys = ("text", "text_pair", "words", "label")
    if isinstance(rows, list):
        present = [k for k in keys if any(r.get(k) is not None for r in rows)]
        rows = Dataset.from_dict({k: [r.get(k) for r in rows] for k in present})
    label = {"regression": Value("float32"), "token": Sequence(Value("int64"))}.get(task.kind, Value("int64"))
    features = Features(
        {
            "input_ids": Sequence(Value("int32")),
            "token_type_ids": Sequence(Value("int8")),
            "units": Sequence(Value("int32")),
            "n_words": Value("int32"),
            "label": label,
            "length": Value("int32"),
            "n_units": Value("int32"),
        }
    )

    def tokenize(batch: dict) -> dict:
        names = list(batch)
        examples = encode(tokenizer, [dict(zip(names, v)) for v in zip(*batch.values())], task, max_length)
        return {
            "input_ids": [e["input_ids"] for e in examples],
            "token_type_ids": [e.get("token_type_ids") for e in examples],
            "units": [e["units"] for e in examples],
            "n_words": [e.get("n_words") for e in examples],
            "label": [e.get("label") for e in examples],
            "length": [len(e["input_ids"]) for e in examples],
            "n_units": [len(e["units"]) for e in examples],
        }

    # every column the set holds comes from the rows, the tokenizer and the task (its label names map labels to ids)
    identity = [tokenizer.name_or_path, len(tokenizer), max_length, task.name, task.kind, list(task.labels)]
    identity += [task.version, rows_digest(rows)]
    key = hashlib.sha256(json.dumps(identity).encode()).hexdigest()[:16]
    cache_file = None
    if cache_dir is not None:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        cache_file = str(Path(cache_dir) / f"{key}.arrow")
    # large sets tokenise in several processes (the tokenizer is pickled to each); small ones stay in this one
    large = len(rows) >= 50_000
    workers = min(8, os.cpu_count() or 1) if large else None
    with _progress_bars(large):  # a bar for a set that takes a while; a small one tokenises in a second
        encoded = rows.map(
            tokenize,
            batched=True,
            batch_size=1000,
            num_proc=workers if workers and workers > 1 else None,
            remove_columns=rows.column_names,
            features=features,
            cache_file_name=cache_file,
            new_fingerprint=key,
            desc="tokenise",
        )
    return EncodedSet(encoded)


@contextlib.contextmanager
def _progress_bars(show: bool):
    """datasets' progress bars on or off for the block, then as they were."""
    from datasets.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    was_on = not are_progress_bars_disabled()
    (enable_progress_bars if show else disable_progress_bars)()
    try:
        yield
    finally:
        (enable_progress_bars if was_on else disable_progress_bars)()


def first_subtokens(word_ids: list[int | None]) -> list[int]:
    """Position of the first sub-token of each word that survived truncation."""
    positions, previous = [], None
    for pos, wid in enumerate(word_ids):
        if wid is not None and wid != previous:
            positions.append(pos)
        previous = wid
    return positions


def collate(examples: list[dict], pad_id: int, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """Pad a list of encoded examples to the longest in the batch. Returns tensors on `device`.

    input_ids/attention_mask/token_type_ids (B, T); unit_pos/unit_mask (B, U); labels (B,) or (B, U)
    (token labels padded with -100, regression labels as floats).
    """
    longest = max(len(e["input_ids"]) for e in examples)
    if torch.device(device).type == "cuda":  # tensor-core friendly, and few distinct shapes for the kernels
        longest = -(-longest // 8) * 8
    most_units = max(len(e["units"]) for e in examples)
    B = len(examples)
    # filled in numpy (a row assignment from a list is cheap; torch.tensor per row is not), one tensor each
    ids = np.full((B, longest), pad_id, dtype=np.int64)
    mask = np.zeros((B, longest), dtype=np.int64)
    types = np.zeros((B, longest), dtype=np.int64)
    unit_pos = np.zeros((B, most_units), dtype=np.int64)
    unit_mask = np.zeros((B, most_units), dtype=np.int64)
    for i, e in enumerate(examples):
        n = len(e["input_ids"])
        ids[i, :n] = e["input_ids"]
        mask[i, :n] = 1
        if "token_type_ids" in e:
            types[i, :n] = e["token_type_ids"]
        u = len(e["units"])
        unit_pos[i, :u] = e["units"]
        unit_mask[i, :u] = 1
    ids, mask, types, unit_pos, unit_mask = map(torch.from_numpy, (ids, mask, types, unit_pos, unit_mask))
    batch = {"input_ids": ids, "attention_mask": mask, "unit_pos": unit_pos, "unit_mask": unit_mask}
    if "token_type_ids" in examples[0]:
        batch["token_type_ids"] = types
    if "span" in examples[0]:  # extractive QA: (start, end) token of the answer, (0, 0) = no answer
        batch["spans"] = torch.tensor([e["span"] for e in examples], dtype=torch.long)
    labelled = [e for e in examples if e.get("label") is not None]
    if labelled:  # a joint-mode batch mixes labelled source rows with unlabelled augmentation rows: the latter are
        first = labelled[0]["label"]  # ignored by the label loss (-100 for classes and tags, NaN for regression)
        if isinstance(first, list):
            labels = torch.full((B, most_units), -100, dtype=torch.long)
            for i, e in enumerate(examples):
                kept = (e.get("label") or [])[: len(e["units"])]
                labels[i, : len(kept)] = torch.tensor(kept, dtype=torch.long)
        elif isinstance(first, float):
            labels = torch.tensor([e.get("label", float("nan")) for e in examples], dtype=torch.float32)
        else:
            labels = torch.tensor([e.get("label", -100) for e in examples], dtype=torch.long)
        batch["labels"] = labels
    return {k: to_device(v, device) for k, v in batch.items()}


def to_device(tensor: torch.Tensor, device) -> torch.Tensor:
    """A host tensor on `device`. To CUDA through pinned memory without blocking: a copy from pageable memory
    waits for every kernel queued before it, so the host could not prepare the next batch while the GPU works."""
    if torch.device(device).type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def length_grouped_batches(
    lengths: list[int], batch_size: int, seed: int, epoch: int, group: int = 50
) -> list[list[int]]:
    """Shuffle, sort by length inside mega-batches of `group` batches, split, shuffle the batch order.

    Deterministic in (seed, epoch) and independent of torch's RNG, so a resumed run sees the same order.
    """
    rng = random.Random(f"{seed}:{epoch}")
    order = list(range(len(lengths)))
    rng.shuffle(order)
    batches = []
    span = batch_size * group
    for start in range(0, len(order), span):
        chunk = sorted(order[start : start + span], key=lambda i: -lengths[i])
        batches += [chunk[j : j + batch_size] for j in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def eval_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Length-sorted batches for inference (order is restored by the caller through the indices)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[j : j + batch_size] for j in range(0, len(order), batch_size)]


def gather_units(hidden: torch.Tensor, unit_pos: torch.Tensor) -> torch.Tensor:
    """(B, T, H) hidden states, (B, U) positions -> (B, U, H)."""
    index = unit_pos.unsqueeze(-1).expand(-1, -1, hidden.shape[-1])
    return hidden.gather(1, index)


def cap(rows: Split, limit: int | None, seed: int) -> Split:
    """A seeded random subset of at most `limit` rows (all rows when limit is None)."""
    if limit is None or len(rows) <= limit:
        return rows
    keep = np.random.default_rng(seed).permutation(len(rows))[:limit]
    return [rows[i] for i in sorted(keep)]
