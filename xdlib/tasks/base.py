"""The task registry: `Task` (where a task's data comes from, its kind, labels and main metric), `register_task`
(adding a task is one decorated loader function), and loading with the leakage rule applied (`held_out_keys`).
`get_task` and `task_names`, which also know the tasks declared in params, are in `local`."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import UserError
from ..metrics import METRICS, metric_problem
from ..registry import Registry
from .leakage import Split, normalise, row_texts, without_keys

KINDS = ("single", "pair", "regression", "token", "qa")


class DataError(UserError, ValueError):
    """A malformed data file: the message names the file, the line and what was expected."""


@dataclass(frozen=True)
class Task:
    name: str
    kind: str
    source: str  # where the data comes from, for `xdlib tasks` and the README
    loader: Callable[[], dict[str, Split]]
    labels: tuple[str, ...] = ()  # class or tag names; empty for regression and qa
    metric: str = "accuracy"  # main metric: registered in metrics.METRICS for this kind
    higher_is_better: bool | None = None  # None: the metric's (metrics.METRICS)
    version: str = "1"
    origin: str = "generated"  # generated (tests), offline (packaged on PyPI), hub, or local (files in params)
    citation: str = ""
    pool: str = ""  # the sentence source it shares with other offline tasks and corpora (default: its own)

    def __post_init__(self):
        problem = metric_problem(self.metric, self.kind)
        if problem:
            raise DataError(f"task {self.name}: metric {self.metric!r} is not allowed; allowed: {problem}")
        if self.higher_is_better is None:
            object.__setattr__(self, "higher_is_better", METRICS.get(self.metric).higher_is_better)

    @property
    def text_pool(self) -> str:
        return self.pool or self.name

    @property
    def head(self) -> str:
        return {"token": "token", "qa": "qa"}.get(self.kind, "sequence")

    @property
    def num_labels(self) -> int:
        return {"regression": 1, "qa": 2}.get(self.kind, len(self.labels))

    def load(self) -> dict[str, Split]:
        """All splits (train, dev, and test where there is one; some tasks add e.g. test_mismatched).

        Offline tasks come back with the dev/test sentences of the other offline tasks of their pool (the same
        sentence source) removed from train."""
        data = load_raw(self) if self.origin == "offline" else self.loader()
        missing = [s for s in ("train", "dev") if not data.get(s)]
        if missing:
            raise DataError(f"task {self.name} has no {' or '.join(missing)} examples")
        data = {split: [dict(r) for r in rows] for split, rows in data.items()}
        if self.origin == "offline":
            data["train"] = without_keys(data["train"], held_out_keys(frozenset({self.text_pool}), self.name))
        return data


TASKS: Registry[Task] = Registry("task")


def register_task(
    name: str,
    kind: str,
    *,
    labels: tuple[str, ...] = (),
    metric: str = "accuracy",
    origin: str = "generated",
    source: str | None = None,
    citation: str = "",
    version: str = "1",
    pool: str = "",
):
    """Register the decorated loader (no arguments -> {"train", "dev"[, "test"]: rows}) as task `name`."""

    def add(loader: Callable[[], dict[str, Split]]):
        where = source or f"{origin} ({getattr(loader, '__module__', '')}.{getattr(loader, '__name__', name)})"
        task = Task(name, kind, where, loader, tuple(labels), metric, None, version, origin, citation, pool)
        TASKS.add(name, task)
        return loader

    return add


def offline_task_names() -> list[str]:
    return [n for n in TASKS if TASKS.get(n).origin == "offline"]


@functools.cache
def load_raw(task: Task) -> dict[str, Split]:
    return task.loader()


@functools.cache
def held_out_keys(pools: frozenset[str] | None = None, exclude: str | None = None) -> frozenset[str]:
    """Normalised dev/test sentences of the offline tasks of `pools` (every pool: None), but `exclude`: text no
    training split of another task of those pools and no transfer set drawn from them may contain (the leakage
    rule: see `leakage`)."""
    keys: set[str] = set()
    for name in offline_task_names():
        if name == exclude or (pools is not None and TASKS.get(name).text_pool not in pools):
            continue
        for split, rows in load_raw(TASKS.get(name)).items():
            if split != "train":
                keys.update(normalise(t) for r in rows for t in row_texts(r))
    keys.discard("")
    return frozenset(keys)
