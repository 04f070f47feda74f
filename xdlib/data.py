"""Tokenisation, dynamic-padding collation, length-grouped batches and transfer sets.

An *encoded* example is a dict of Python lists: input_ids, token_type_ids (if the tokenizer makes them), units
(the positions the losses read: [0] = [CLS] for sequence tasks, the first sub-token of each word for token
tasks) and label. Batches are padded only to their own longest member (dynamic padding), and examples of similar
length are batched together, so little compute is spent on padding.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import torch

from .registry import Registry
from .tasks import Split, Task, get_task


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
    most_units = max(len(e["units"]) for e in examples)
    B = len(examples)
    ids = torch.full((B, longest), pad_id, dtype=torch.long)
    mask = torch.zeros((B, longest), dtype=torch.long)
    types = torch.zeros((B, longest), dtype=torch.long)
    unit_pos = torch.zeros((B, most_units), dtype=torch.long)
    unit_mask = torch.zeros((B, most_units), dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e["input_ids"])
        ids[i, :n] = torch.tensor(e["input_ids"])
        mask[i, :n] = 1
        if "token_type_ids" in e:
            types[i, :n] = torch.tensor(e["token_type_ids"])
        u = len(e["units"])
        unit_pos[i, :u] = torch.tensor(e["units"], dtype=torch.long)
        unit_mask[i, :u] = 1
    batch = {"input_ids": ids, "attention_mask": mask, "unit_pos": unit_pos, "unit_mask": unit_mask}
    if "token_type_ids" in examples[0]:
        batch["token_type_ids"] = types
    if all("label" in e for e in examples):
        first = examples[0]["label"]
        if isinstance(first, list):
            labels = torch.full((B, most_units), -100, dtype=torch.long)
            for i, e in enumerate(examples):
                kept = e["label"][: len(e["units"])]
                labels[i, : len(kept)] = torch.tensor(kept, dtype=torch.long)
        elif isinstance(first, float):
            labels = torch.tensor([e["label"] for e in examples], dtype=torch.float32)
        else:
            labels = torch.tensor([e["label"] for e in examples], dtype=torch.long)
        batch["labels"] = labels
    return {k: v.to(device) for k, v in batch.items()}


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


# ---- transfer sets ---------------------------------------------------------------------------------------------

AUGMENTATIONS: Registry[Callable[..., Split]] = Registry("augmentation resource")


def perturb(source_rows: Split, seed: int, cap: int | None) -> Split:
    """Generated augmentation without a masked LM: each source input with ~15% of its words dropped and one
    adjacent pair swapped (a cheap token-level perturbation in the spirit of TinyBERT's augmentation)."""
    rng = random.Random(f"perturb:{seed}")
    out = []
    for row in source_rows[: cap or len(source_rows)]:
        new = {}
        for key in ("text", "text_pair"):
            if row.get(key) is None:
                continue
            words = [w for w in row[key].split() if rng.random() > 0.15] or row[key].split()
            if len(words) > 2:
                j = rng.randrange(len(words) - 1)
                words[j], words[j + 1] = words[j + 1], words[j]
            new[key] = " ".join(words)
        if "words" in row:
            new["words"] = list(row["words"])
        out.append(new)
    return out


AUGMENTATIONS.add("perturb", perturb)


def augmentation_rows(name: str, source_rows: Split, seed: int, cap: int | None) -> Split:
    """Unlabelled rows of one augmentation resource: `task:<name>` (another task's training inputs) or a
    registered generator/corpus."""
    if name.startswith("task:"):
        rows = get_task(name.split(":", 1)[1]).load()["train"]
        rows = [{k: r[k] for k in ("text", "text_pair", "words") if k in r} for r in rows]
        random.Random(f"{name}:{seed}").shuffle(rows)
        return rows[: cap or len(rows)]
    return AUGMENTATIONS.get(name)(source_rows, seed, cap)


def check_augmentation_name(name: str) -> str | None:
    """None if `name` is a valid augmentation resource, else what is allowed."""
    from .tasks import TASKS

    if name.startswith("task:") and name.split(":", 1)[1] in TASKS:
        return None
    if name in AUGMENTATIONS:
        return None
    return f"one of {AUGMENTATIONS.names()} or task:<name> with a registered task ({', '.join(TASKS.names())})"


def transfer_set(source_rows: Split, augmentation: list[str], seed: int, cap: int | None) -> tuple[Split, dict]:
    """Source inputs (labels kept, used only by the joint mode) plus each augmentation resource's inputs.

    Returns the rows and their composition {origin: count}, which is recorded with the run.
    """
    rows = [dict(r, origin="source") for r in source_rows]
    composition = {"source": len(rows)}
    for name in augmentation:
        extra = augmentation_rows(name, source_rows, seed, cap)
        rows += [dict(r, origin=name) for r in extra]
        composition[name] = len(extra)
    return rows, composition
