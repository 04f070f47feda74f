"""The leakage rule's text keys, and deterministic splits. Nothing here knows the task registry.

Several offline tasks and corpora draw on one sentence source, a *pool* (Rotten Tomatoes: rt-polarity, movie-score,
plot-sentences; Cornell movie dialogs: dialog-reply, movie-dialog). Every dev and test sentence of an offline task
is removed from the train split of every other task of its pool, and from all transfer text drawn from that pool
(`base.held_out_keys(pools)`, applied by `Task.load`); only the pools a run uses are loaded. Sentences are compared
by `normalise`. Across pools the only shared texts are a few short stock phrases ("ok", "terrible", "why did the
chicken cross the road"), not leaked examples: tests/test_tasks.py measures them. Splits are made by a stable hash
of a grouping key, independent of PYTHONHASHSEED.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable

Split = list[dict]  # the rows of one split (re-exported by `base`)


def stable_bucket(key: str, buckets: int = 100) -> int:
    """Deterministic bucket of a string, independent of PYTHONHASHSEED."""
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % buckets


def split_by_key(rows: list[dict], key: Callable[[dict], str], dev: int = 10, test: int = 10) -> dict[str, Split]:
    """Deterministic train/dev/test split by a grouping key (e.g. movie), dev% and test% of the buckets."""
    out: dict[str, Split] = {"train": [], "dev": [], "test": []}
    for row in rows:
        bucket = stable_bucket(key(row))
        split = "test" if bucket < test else "dev" if bucket < test + dev else "train"
        out[split].append(row)
    return out


def normalise(text: str) -> str:
    """Comparison key of a sentence: lower case, letters and digits only (so "it's" == "it 's")."""
    return re.sub(r"[\W_]+", "", text.lower())


def row_texts(row: dict) -> list[str]:
    """Every piece of input text of an example, whatever its kind."""
    out = [row[k] for k in ("text", "text_pair", "question", "context") if row.get(k)]
    if row.get("words"):
        out.append(" ".join(row["words"]))
    return out


def dedupe(rows: Split) -> Split:
    """Drop repeated examples (same normalised input text), keeping the first."""
    seen: set[tuple[str, ...]] = set()
    out = []
    for row in rows:
        key = tuple(normalise(t) for t in row_texts(row))
        if key not in seen and any(key):
            seen.add(key)
            out.append(row)
    return out


def without_keys(rows: Split, keys: frozenset[str]) -> Split:
    """Rows none of whose texts (normalised) is in `keys`."""
    return [r for r in rows if not any(normalise(t) in keys for t in row_texts(r))]


def held_out_from_train(rows: Split, key: Callable[[int, dict], str], percent: int = 5) -> tuple[Split, Split]:
    held = [r for i, r in enumerate(rows) if stable_bucket(key(i, r)) < percent]
    rest = [r for i, r in enumerate(rows) if stable_bucket(key(i, r)) >= percent]
    return rest, held
