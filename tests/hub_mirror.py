"""Tiny local mirrors of the Hub datasets the paper uses, in the Hub repos' own layout and feature types:

    <root>/nyu-mll/glue/<config>/<split>-00000-of-00001.parquet      (ClassLabel `label`, int32 `idx`)
    <root>/rajpurkar/squad_v2/squad_v2/<split>-00000-of-00001.parquet (`answers` struct of text / answer_start)
    <root>/unimelb-nlp/wikiann/<lang>/<split>-00000-of-00001.parquet  (`ner_tags` Sequence(ClassLabel))
    <root>/Salesforce/wikitext/<config>/train-00000-of-00001.parquet

Rows are generated from templates, a few dozen per split, so that a tiny model can learn something from them.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

import datasets
from datasets import ClassLabel, Dataset, Features, Sequence, Value

from xdlib.tasks import GLUE, WIKIANN_LANGUAGES, WIKIANN_TAGS

PEOPLE = ["the man", "a woman", "the child", "an old farmer", "the teacher", "a young doctor"]
DOINGS = [("plays the guitar", "makes music", "sleeps"), ("cooks dinner", "prepares food", "swims in the lake"),
          ("reads a book", "looks at pages", "runs a marathon"), ("paints a wall", "uses a brush", "drives a bus")]  # fmt: skip
GOOD = ["a moving and charming film", "great acting and a lovely story", "brilliant , funny and warm"]
BAD = ["a dull and boring mess", "awful dialogue and weak acting", "tedious , clumsy and long"]
GLUE_SPLITS = {"mnli": ("train", "validation_matched", "validation_mismatched", "test_matched", "test_mismatched")}
PLACES = [("Paris", "France"), ("Berlin", "Germany"), ("Rome", "Italy"), ("Madrid", "Spain"), ("Vienna", "Austria")]
GERMAN = [("Angela", "Merkel"), ("Thomas", "Mann"), ("Clara", "Schumann"), ("Max", "Planck")]


def _glue_rows(config: str, rng: random.Random, n: int, test: bool) -> dict[str, list]:
    kind, fields, labels, _, _ = GLUE[config]
    rows: dict[str, list] = {f: [] for f in fields} | {"label": [], "idx": []}
    for i in range(n):
        who, (act, entailed, other) = rng.choice(PEOPLE), rng.choice(DOINGS)
        label = rng.randrange(len(labels)) if labels else round(rng.uniform(0, 5), 2)
        if kind == "single":
            text = rng.choice(GOOD if label == 1 else BAD)
            rows[fields[0]].append(f"{who} said it was {text}")
        elif kind == "regression":
            rows[fields[0]].append(f"{who} {act} .")
            rows[fields[1]].append(f"{who} {act if label > 2.5 else other} .")
        else:  # pairs: the first label entails, the last contradicts (mnli's middle one is neutral)
            second = (
                [entailed, "is happy today", other][min(label, 2)]
                if len(labels) == 3
                else (entailed if label == 0 else other)
            )
            rows[fields[0]].append(f"{who} {act} .")
            rows[fields[1]].append(f"{who} {second} .")
        rows["label"].append(-1 if test and labels else label)
        rows["idx"].append(i)
    return rows


def _glue_features(config: str) -> Features:
    kind, fields, labels, _, _ = GLUE[config]
    label = ClassLabel(names=list(labels)) if labels else Value("float32")
    return Features({**{f: Value("string") for f in fields}, "label": label, "idx": Value("int32")})


def _squad_rows(rng: random.Random, n: int) -> dict[str, list]:
    rows: dict[str, list] = {k: [] for k in ("id", "title", "context", "question", "answers")}
    for i in range(n):
        city, country = rng.choice(PLACES)
        context = f"{city} is the capital of {country} . Many people visit {city} every year ."
        answerable = i % 3 != 0
        question = f"What is the capital of {country} ?" if answerable else f"What is the oldest bridge in {city} ?"
        answers = {"text": [city], "answer_start": [0]} if answerable else {"text": [], "answer_start": []}
        for key, value in (("id", f"q{i}"), ("title", f"{country} {i}"), ("context", context), ("question", question),
                           ("answers", answers)):  # fmt: skip
            rows[key].append(value)
    return rows


SQUAD_FEATURES = Features({"id": Value("string"), "title": Value("string"), "context": Value("string"),
                           "question": Value("string"),
                           "answers": Sequence({"text": Value("string"), "answer_start": Value("int32")})})  # fmt: skip
WIKIANN_FEATURES = Features({"tokens": Sequence(Value("string")), "ner_tags": Sequence(ClassLabel(names=list(WIKIANN_TAGS))),
                             "langs": Sequence(Value("string")), "spans": Sequence(Value("string"))})  # fmt: skip


def _wikiann_rows(lang: str, rng: random.Random, n: int) -> dict[str, list]:
    tag = {t: i for i, t in enumerate(WIKIANN_TAGS)}
    rows: dict[str, list] = {"tokens": [], "ner_tags": [], "langs": [], "spans": []}
    for _ in range(n):
        (first, last), (city, _) = rng.choice(GERMAN), rng.choice(PLACES)
        tokens = [first, last, "besuchte", city, "."]
        tags = [tag["B-PER"], tag["I-PER"], tag["O"], tag["B-LOC"], tag["O"]]
        rows["tokens"].append(tokens)
        rows["ner_tags"].append(tags)
        rows["langs"].append([lang] * len(tokens))
        rows["spans"].append([f"PER: {first} {last}", f"LOC: {city}"])
    return rows


def _write(root: Path, repo: str, config: str, split: str, rows: dict, features: Features) -> None:
    folder = root / repo / config
    folder.mkdir(parents=True, exist_ok=True)
    Dataset.from_dict(rows, features=features).to_parquet(str(folder / f"{split}-00000-of-00001.parquet"))


def build_mirror(root: Path, n: int = 48, glue: tuple[str, ...] = tuple(GLUE), languages=WIKIANN_LANGUAGES) -> Path:
    """Write the mirror under `root`; returns it. `n` training rows per split (evaluation splits get n // 2)."""
    datasets.disable_progress_bars()
    rng = random.Random(0)
    for config in glue:
        splits = GLUE_SPLITS.get(config, ("train", "validation", "test"))
        for split in splits:
            rows = _glue_rows(config, rng, n if split == "train" else n // 2, test=split.startswith("test"))
            _write(root, "nyu-mll/glue", config, split, rows, _glue_features(config))
    for split in ("train", "validation"):
        _write(root, "rajpurkar/squad_v2", "squad_v2", split, _squad_rows(rng, n if split == "train" else n // 2),
               SQUAD_FEATURES)  # fmt: skip
    for lang in languages:
        for split in ("train", "validation", "test"):
            rows = _wikiann_rows(lang, rng, n if split == "train" else n // 2)
            _write(root, "unimelb-nlp/wikiann", lang, split, rows, WIKIANN_FEATURES)
    text = {"text": [f" {who} {act} in {city} . " for who in PEOPLE for act, _, _ in DOINGS for city, _ in PLACES]}
    _write(root, "Salesforce/wikitext", "wikitext-103-raw-v1", "train", text, Features({"text": Value("string")}))
    return root


def mirror_words(root: Path) -> list[str]:
    """Every word of the mirror's text, for a whole-word tokenizer of a tiny test model."""
    import pyarrow.parquet as pq

    words: set[str] = set()
    for path in root.rglob("*.parquet"):
        for column in pq.read_table(path).to_pylist():
            for value in column.values():
                for text in value if isinstance(value, list) else [value]:
                    if isinstance(text, str):
                        words.update(re.findall(r"\w+|[^\w\s]", text.lower()))
                    elif isinstance(text, dict):
                        words.update(w for t in text.get("text", []) for w in re.findall(r"\w+|[^\w\s]", t.lower()))
    return sorted(words)
