"""Every figure the docs quote from a raw benchmark file is there: each `results/benchmarks/` file the README or
docs/ name exists (a `*` pattern matches at least one), and each `<!-- from FILE: path=value, ... -->` marker's
values are in FILE and in the text it follows (its paragraph or table)."""

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
NAMED = re.compile(r"results/benchmarks/([\w.*-]+\.(?:json|md|txt|png))")
MARKER = re.compile(r"<!-- from (results/benchmarks/[\w.-]+\.json): (.*?) -->")


def _current(doc: Path) -> str:
    """The doc's text; docs/history.md records past versions, whose files need not be kept."""
    return "" if doc.name == "history.md" else doc.read_text()


def _lookup(data, path: str):
    """`a.b[2].c` in nested JSON; a key may itself hold dots (the longest key that fits is taken)."""
    while path:
        if path.startswith("["):
            index, _, path = path[1:].partition("]")
            data, path = data[int(index)], path.removeprefix(".")
            continue
        fits = [k for k in data if path == k or path.startswith((k + ".", k + "["))]
        assert fits, f"no key of {sorted(data)} starts {path!r}"
        key = max(fits, key=len)
        data, path = data[key], path[len(key) :].removeprefix(".")
    return data


def _markers():
    for doc in DOCS:
        lines = _current(doc).split("\n")
        for i, line in enumerate(lines):
            for file, pairs in MARKER.findall(line):
                block = []
                for above in reversed(lines[:i]):  # the paragraph or table the marker follows, less other markers
                    if not above.strip():
                        break
                    if not above.startswith("<!--"):
                        block.append(above)
                for pair in pairs.split(", "):
                    path, _, value = pair.rpartition("=")
                    yield pytest.param(doc, file, path, value, "\n".join(block), id=f"{doc.name}:{file[19:]}:{path}")


def test_every_named_benchmark_file_is_committed():
    named = {(doc.name, name) for doc in DOCS for name in NAMED.findall(_current(doc))}
    assert len(named) >= 8, named  # the test reads what it should
    missing = [(doc, n) for doc, n in sorted(named) if not list((ROOT / "results" / "benchmarks").glob(n))]
    assert not missing, missing


@pytest.mark.parametrize("doc, file, path, value, block", list(_markers()))
def test_a_quoted_figure_is_in_its_raw_file_and_in_the_text(doc, file, path, value, block):
    raw = _lookup(json.loads((ROOT / file).read_text()), path)
    decimals = len(value.partition(".")[2])
    assert round(float(raw), decimals) == pytest.approx(float(value), abs=1e-9), (file, path, raw)
    text = re.sub(r"(?<=\d),(?=\d{3})", "", block).replace("−", "-")  # 1,214 -> 1214; the typographic minus
    assert re.search(rf"(?<![\d.]){re.escape(value)}(?!\d)", text), f"{value} is not in the text above the marker"


def test_the_docs_carry_markers_for_each_raw_file_they_quote_figures_from():
    files = {file for param in _markers() for file in [param.values[1]]}
    assert len(list(_markers())) >= 45 and len(files) >= 6, files  # as many as the docs hold: none dropped unseen
