"""Transfer sets: the source task's inputs plus the augmentation resources named in params.

An augmentation resource is named in params (`augmentation: [...]`):
  perturb                      source inputs with words dropped and swapped (no model needed)
  mlm                          source inputs with ~15% of words replaced by a masked LM's samples
                               (augment_mlm_model: any HF masked LM)
  plot-sentences | guardian-headlines | movie-dialog   unlabelled offline corpora (tasks.CORPORA)
  task:<name>                  another task's training inputs, labels dropped
  hub:<dataset id>[:<config>]  the first text column of a Hub dataset's train split
Every resource's rows are filtered against every offline task's dev/test text (tasks.held_out_keys).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .data import cap
from .models import pretrained
from .references import resolve_model
from .registry import Registry
from .tasks import (
    CORPORA,
    CORPUS_POOLS,
    Split,
    get_task,
    held_out_keys,
    hub_dataset,
    normalise,
    row_texts,
    task_names,
    without_keys,
)


@dataclass(frozen=True)
class AugmentOptions:
    seed: int = 0
    cap: int | None = None  # rows per resource
    mlm_model: str = "bert-base-uncased"
    mlm_probability: float = 0.15
    local_tasks: dict | None = None


AUGMENTATIONS: Registry[Callable[[Split, AugmentOptions], Split]] = Registry("augmentation resource")


def _source_texts(row: dict) -> list[tuple[str, str]]:
    return [(k, row[k]) for k in ("text", "text_pair") if row.get(k)] + (
        [("words", " ".join(row["words"]))] if row.get("words") else []
    )


def perturb(source_rows: Split, opts: AugmentOptions) -> Split:
    """Generated augmentation without a model: each source input with ~15% of its words dropped and one
    adjacent pair swapped (a cheap token-level perturbation in the spirit of TinyBERT's augmentation)."""
    rng = random.Random(f"perturb:{opts.seed}")
    out = []
    for row in source_rows[: opts.cap or len(source_rows)]:
        new = {}
        for key, text in _source_texts(row):
            words = [w for w in text.split() if rng.random() > 0.15] or text.split()
            if len(words) > 2:
                j = rng.randrange(len(words) - 1)
                words[j], words[j + 1] = words[j + 1], words[j]
            new[key] = words if key == "words" else " ".join(words)
        out.append(new)
    return out


@torch.inference_mode()
def mlm_replace(source_rows: Split, opts: AugmentOptions, batch_size: int = 32) -> Split:
    """Masked-LM augmentation (TinyBERT-style word replacement): in each source input, ~15% of the words are
    masked one-for-one and replaced by a token sampled from the masked LM's top-5 (sub-word pieces cleaned).
    Word counts are kept, so token tasks stay aligned."""
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    path = resolve_model(opts.mlm_model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = pretrained(AutoModelForMaskedLM, path).eval()
    rng = random.Random(f"mlm:{opts.seed}")
    gen = torch.Generator().manual_seed(opts.seed)
    jobs = []  # (row index, key, words, masked positions)
    rows = source_rows[: opts.cap or len(source_rows)]
    out: list[dict] = [{} for _ in rows]
    for i, row in enumerate(rows):
        for key, text in _source_texts(row):
            words = text.split()
            chosen = [j for j in range(len(words)) if rng.random() < opts.mlm_probability] or [
                rng.randrange(len(words))
            ]
            jobs.append((i, key, words, chosen))
    for start in range(0, len(jobs), batch_size):
        chunk = jobs[start : start + batch_size]
        masked = [[tokenizer.mask_token if j in set(c) else w for j, w in enumerate(words)] for _, _, words, c in chunk]
        enc = tokenizer(
            masked, is_split_into_words=True, truncation=True, max_length=128, padding=True, return_tensors="pt"
        )
        logits = model(
            **{k: v for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
        ).logits
        for b, (i, key, words, _chosen) in enumerate(chunk):
            new = list(words)
            positions = (enc["input_ids"][b] == tokenizer.mask_token_id).nonzero().flatten().tolist()
            word_ids = enc.word_ids(b)
            for pos in positions:
                top = logits[b, pos].topk(5)
                pick = top.indices[torch.multinomial(top.values.softmax(-1), 1, generator=gen)].item()
                token = tokenizer.convert_ids_to_tokens(pick).removeprefix("##").strip() or new[word_ids[pos]]
                new[word_ids[pos]] = token
            out[i][key] = new if key == "words" else " ".join(new)
    return out


def corpus_rows(sentences: tuple[str, ...] | list[str], source_rows: Split, opts: AugmentOptions, name: str) -> Split:
    """Unlabelled sentences shaped like the source inputs: single sentences, consecutive pairs for pair
    tasks, or word lists for token tasks; seeded subset of at most `cap`."""
    sample = source_rows[0] if source_rows else {}
    if "text_pair" in sample:
        rows = [{"text": a, "text_pair": b} for a, b in zip(sentences[::2], sentences[1::2])]
    elif "words" in sample:
        rows = [{"words": s.split()} for s in sentences]
    else:
        rows = [{"text": s} for s in sentences]
    random.Random(f"{name}:{opts.seed}").shuffle(rows)
    return rows[: opts.cap or len(rows)]


def hub_text(dataset: str, source_rows: Split, opts: AugmentOptions) -> Split:
    """First string column of a Hub dataset's train split (e.g. hub:wikitext:wikitext-103-raw-v1)."""

    dataset_id, _, config = dataset.partition(":")
    split = hub_dataset(dataset_id, config or None, ("train",))["train"]
    column = next((c for c, f in split.features.items() if getattr(f, "dtype", None) == "string"), None)
    if column is None:
        raise ValueError(f"hub:{dataset} has no text column; columns: {list(split.features)}")
    limit = (opts.cap or 100_000) * 2
    texts = [t.strip() for t in split.select(range(min(limit, len(split))))[column] if t and len(t.split()) >= 3]
    return corpus_rows(texts, source_rows, opts, f"hub:{dataset}")


AUGMENTATIONS.add("perturb", perturb)
AUGMENTATIONS.add("mlm", mlm_replace)
for _corpus_name, _corpus in CORPORA.items():
    AUGMENTATIONS.add(_corpus_name, lambda rows, opts, c=_corpus, n=_corpus_name: corpus_rows(c(), rows, opts, n))


def augmentation_rows(name: str, source_rows: Split, opts: AugmentOptions) -> Split:
    """Unlabelled rows of one augmentation resource (see the table above)."""
    if name.startswith("task:"):
        rows = get_task(name.split(":", 1)[1], opts.local_tasks).load()["train"]
        rows = [{k: r[k] for k in ("text", "text_pair", "words") if k in r} for r in rows]
        random.Random(f"{name}:{opts.seed}").shuffle(rows)
        return rows[: opts.cap or len(rows)]
    if name.startswith("hub:"):
        return hub_text(name.split(":", 1)[1], source_rows, opts)
    return AUGMENTATIONS.get(name)(source_rows, opts)


def check_augmentation_name(name: str, local_tasks: dict | None = None) -> str | None:
    """None if `name` is a valid augmentation resource, else what is allowed."""
    if name.startswith("task:") and name.split(":", 1)[1] in task_names(local_tasks):
        return None
    if name in AUGMENTATIONS or (name.startswith("hub:") and len(name) > 4):
        return None
    return (
        f"one of {AUGMENTATIONS.names()}, hub:<dataset id>[:<config>], or task:<name> with a registered task "
        f"({', '.join(task_names(local_tasks))})"
    )


def transfer_set(
    source_rows: Split, augmentation: list[str], opts: AugmentOptions, held_out: frozenset[str] = frozenset()
) -> tuple[Split, dict]:
    """Source inputs (labels kept, used only by the joint mode) plus each augmentation resource's inputs,
    minus any augmentation row that contains held-out (dev/test) text.

    Returns the rows and their composition {origin: count} (and how many rows the leakage filter removed),
    which is recorded with the run."""
    rows = [dict(r, origin="source") for r in source_rows]
    composition: dict = {"source": len(rows)}
    for name in augmentation:
        extra = augmentation_rows(name, source_rows, opts)
        kept = without_keys(extra, held_out)
        rows += [dict(r, origin=name) for r in kept]
        composition[name] = len(kept)
        if len(kept) < len(extra):
            composition[f"{name}:removed_held_out"] = len(extra) - len(kept)
    return rows, composition


# ---- a stage's source rows and transfer set, from its config ------------------------------------------------


def load_source(cfg, task_name: str, train_cap: int | None) -> dict:
    """Every split of a task; train capped at `train_cap` (a sample drawn with `seed`), the evaluation splits at
    max_eval_samples with a fixed draw: runs that differ only in seed are scored on the same rows."""
    data = get_task(task_name, cfg.local_tasks).load()
    return {
        split: cap(rows, train_cap, cfg.seed) if split == "train" else cap(rows, cfg.max_eval_samples, 0)
        for split, rows in data.items()
    }


def augment_options(cfg, n_source: int) -> AugmentOptions:
    caps = [
        c for c in (cfg.augment_max_examples, cfg.augment_ratio and max(1, round(cfg.augment_ratio * n_source))) if c
    ]
    return AugmentOptions(
        seed=cfg.seed, cap=min(caps) if caps else None, mlm_model=cfg.augment_mlm_model, local_tasks=cfg.local_tasks
    )


def held_out_text(source: dict, pools: frozenset[str] | None = None) -> frozenset[str]:
    """Text no transfer set may contain: the source's own dev/test text, plus the dev/test text of every offline
    task of `pools` (the sentence sources the transfer set draws on; None: every pool). A toy or Hub-only run draws
    on none and never needs the offline packages (an air-gapped cluster has none)."""
    own = {normalise(t) for split, rows in source.items() if split != "train" for r in rows for t in row_texts(r)}
    return (held_out_keys(pools) if pools is None or pools else frozenset()) | frozenset(own)


def offline_pools(cfg) -> frozenset[str]:
    """The offline sentence pools the transfer set draws on: the source task's (if offline), each corpus's, and
    each `task:` resource's (if offline); perturb and mlm rows come from the source's own text."""

    def pool_of(name: str) -> set[str]:
        task = get_task(name, cfg.local_tasks)
        return {task.text_pool} if task.origin == "offline" else set()

    pools = pool_of(cfg.source_task)
    for name in cfg.augmentation:
        pools |= (
            {CORPUS_POOLS[name]} if name in CORPUS_POOLS else pool_of(name[5:]) if name.startswith("task:") else set()
        )
    return frozenset(pools)
