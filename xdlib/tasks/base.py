"""The task registry: `Task` (where a task's data comes from, its kind, labels and main metric), `register_task`
(adding a task is one decorated loader function), `get_task` and `task_names`."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import UserError
from ..registry import Registry, UnknownNameError

Split = list[dict]
KINDS = ("single", "pair", "regression", "token", "qa")


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
    origin: str = "generated"  # generated (tests), offline (packaged on PyPI), hub, or local (files in params)
    citation: str = ""
    pool: str = ""  # the sentence source it shares with other offline tasks and corpora (default: its own)

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
        from .leakage import held_out_keys, load_raw, without_keys

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
        TASKS.add(name, Task(name, kind, where, loader, tuple(labels), metric, True, version, origin, citation, pool))
        return loader

    return add


def get_task(name: str, local_tasks: dict | None = None) -> Task:
    """A registered task, or one declared in params under `local_tasks` (which wins on a name clash)."""
    if local_tasks and name in local_tasks:
        from .local import local_task

        return local_task(name, json.dumps(local_tasks[name], sort_keys=True))
    if name not in TASKS and local_tasks is not None:
        known = TASKS.names() + sorted(local_tasks)
        raise UnknownNameError(f"unknown task {name!r}; known: {', '.join(known)}")
    return TASKS.get(name)


def task_names(local_tasks: dict | None = None) -> list[str]:
    return sorted(set(TASKS.names()) | set(local_tasks or {}))


def offline_task_names() -> list[str]:
    return [n for n in TASKS if TASKS.get(n).origin == "offline"]
