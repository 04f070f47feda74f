"""Generated toy tasks: tiny, learnable in seconds, no download; the tests' tasks (every kind has one)."""

from __future__ import annotations

import random

from .base import Split, register_task

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


@register_task("toy-sentiment", "single", labels=("negative", "positive"))
def toy_sentiment(n: int = 600, seed: int = 0) -> dict[str, Split]:
    """Generated sentences of filler words plus two sentiment words of one polarity; label = that polarity."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.randint(0, 1)
        rows.append({"text": _toy_sentence(rng, TOY_POSITIVE if label else TOY_NEGATIVE), "label": label})
    return _toy_split(rows)


@register_task("toy-pair", "pair", labels=("negative", "positive"))
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


@register_task("toy-regression", "regression", metric="pearson")
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


@register_task("toy-ner", "token", labels=TOY_TAGS, metric="f1")
def toy_ner(n: int = 400, seed: int = 0) -> dict[str, Split]:
    """Generated token task: tag sentiment words B-POS / B-NEG, everything else O."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        words = rng.choices(TOY_VOCAB, k=rng.randint(4, 12))
        tags = [1 if w in TOY_POSITIVE else 2 if w in TOY_NEGATIVE else 0 for w in words]
        rows.append({"words": words, "label": tags})
    return _toy_split(rows)


@register_task("toy-qa", "qa", metric="f1")
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
