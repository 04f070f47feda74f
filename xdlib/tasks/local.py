"""Your own tasks from files: `local_tasks:` in a params file maps a name to {kind, train, dev, test, format, ...}
(csv, tsv, jsonl, parquet, CoNLL or SQuAD json). Every file is read and checked before anything runs: readable,
UTF-8, its columns there, labels of the right type and inside the declared set."""

from __future__ import annotations

import csv
import functools
import io
import json
from pathlib import Path

from ..metrics import metric_problem
from ..registry import UnknownNameError
from .base import KINDS, TASKS, DataError, Split, Task
from .leakage import held_out_from_train, row_texts

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
DEFAULT_METRICS = {"regression": "pearson", "token": "f1", "qa": "f1"}  # else accuracy
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
        metric = spec.get("metric", DEFAULT_METRICS.get(spec["kind"], "accuracy"))
        if metric_problem(metric, spec["kind"]):
            return (
                f"local_tasks.{name}: metric {metric!r} is not allowed; allowed: {metric_problem(metric, spec['kind'])}"
            )
    return None


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


@functools.cache
def local_task(name: str, spec_json: str) -> Task:
    spec = json.loads(spec_json)
    problem = check_local_tasks({name: spec})
    if problem:
        raise DataError(problem)
    kind = spec["kind"]
    labels = tuple(spec.get("labels") or ())
    if not labels and kind in ("single", "pair", "token"):
        labels = _discover_labels(spec)
    return Task(
        name,
        kind,
        f"local: {spec['train']}",
        functools.partial(load_local, spec, labels),
        labels,
        spec.get("metric", DEFAULT_METRICS.get(kind, "accuracy")),
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
        data["train"], data["dev"] = held_out_from_train(data["train"], lambda i, r: "|".join(row_texts(r)), 10)
    return data


def read_table(path: str, fmt: str, columns: list[str] | None = None) -> list[tuple[int | str, dict]]:
    """(line or row number, record) of a csv/tsv/jsonl/parquet file."""
    if fmt == "parquet":
        import pandas as pd  # imported here: heavy, and the config checks import this module

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
