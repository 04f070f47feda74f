"""Config fields: how each is declared (`opt`: default, help, range, choices, check, whether it enters the run id),
the checks of single values, and the coercion that turns a YAML or notebook value into a checked one."""

from __future__ import annotations

import math
import os
import re
import types
import typing
from dataclasses import field
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .tasks import check_local_tasks


def opt(
    default: Any,
    help: str,
    *,
    choices: tuple | None = None,
    low: float | None = None,
    high: float | None = None,
    section: str,
    check: typing.Callable[[Any], str | None] | None = None,
):
    """A config field: default, one-line help, allowed values, and its section (data, train, teacher, student,
    distill, finetune or system). A stage's run id hashes the sections it declares; `system` (paths, device, progress
    bars) never changes a result and never enters one."""
    meta = {"help": help, "choices": choices, "low": low, "high": high, "section": section, "check": check}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def device_problem(value: str) -> str | None:
    return None if DEVICE_PATTERN.match(value) else "auto, cpu, cuda, cuda:N or mps"


def folder_problem(value: str) -> str | None:
    """A folder that is there or can be made: its nearest existing ancestor is a writable folder."""
    path = Path(str(value)).expanduser().absolute()
    for parent in (path, *path.parents):
        if parent.exists():
            if not parent.is_dir():
                return f"a folder that is there or can be made ({parent} is a file)"
            if not os.access(parent, os.W_OK):
                return f"a writable folder ({parent} is read-only)"
            return None
    return None


def layer_map_problem(value: Any) -> str | None:
    if value in ("top", "uniform") or (isinstance(value, list) and all(isinstance(v, int) for v in value)):
        return None
    return "'top', 'uniform' or a list of teacher layer indices, one per student hidden state"


def local_tasks_problem(value: Any) -> str | None:
    return check_local_tasks(value)


def finite_number(value: Any) -> float | None:
    """`value` as a float when it is a finite number (YAML 1.1 reads 3e-4, without a dot, as a string: read as the
    number it is); None when it is not one."""
    if isinstance(value, str) and re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+", value.strip()):
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def coerce(key: str, value: Any, tp: Any, meta: typing.Mapping[str, Any]) -> Any:
    """Check `value` against the annotation and the field's metadata; return the clean value."""

    def fail(allowed: str) -> typing.NoReturn:
        raise ConfigError(f"parameter {key}={value!r} is not allowed; allowed: {allowed}")

    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        clean = value
    elif origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)][0]
        return coerce(key, value, inner, meta)
    elif origin is list:
        if not isinstance(value, (list, tuple)):
            fail(f"a list of {type_name(args[0])}")
        clean = [coerce(key, v, args[0], {**meta, "check": None}) for v in value]
    elif tp is bool:
        if not isinstance(value, bool):
            fail("true or false")
        clean = value
    elif tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            fail("an integer" + range_text(meta))
        clean = value
    elif tp is float:
        clean = finite_number(value)
        if clean is None:
            fail("a finite number" + range_text(meta))
    elif tp is str:
        if not isinstance(value, str):
            fail("a string" + (f" from {list(meta['choices'])}" if meta.get("choices") else ""))
        clean = value
    else:  # pragma: no cover - only the types above are used
        raise TypeError(tp)
    if meta.get("choices") and clean not in meta["choices"]:
        fail(", ".join(map(str, meta["choices"])))
    low, high = meta.get("low"), meta.get("high")
    if isinstance(clean, (int, float)) and not isinstance(clean, bool):
        if (low is not None and clean < low) or (high is not None and clean > high):
            fail(("an integer" if isinstance(clean, int) else "a number") + range_text(meta))
    if meta.get("check"):
        problem = meta["check"](clean)
        if problem:
            fail(problem)
    return clean


def range_text(meta: typing.Mapping[str, Any]) -> str:
    low, high = meta.get("low"), meta.get("high")
    if low is not None and high is not None:
        return f" in [{low}, {high}]"
    if low is not None:
        return f" >= {low}"
    if high is not None:
        return f" <= {high}"
    return ""
