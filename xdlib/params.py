"""Params files and the one way a stage's config is built from them: `load_config(stage, params, overrides)`.

A params file is YAML: config fields, plus `name`, `version` (recorded with every run as `study`), `include`
(another params file read first), `grid` (the sweep's cells), `target_settings` (per-target fields) and `slurm`.
The command line (`run --params F -p k=v`), the sweep, `study` and the notebooks all build configs here or
through `from_dict`, which checks every value.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml

from .config import ConfigError, FinetuneConfig, TeacherConfig, config_for_stage


def load_config(stage: str, params: str | Path | None = None, overrides: dict[str, Any] | None = None) -> TeacherConfig:
    """The validated config of `stage` from a params file (its grid left out; for fine-tuning, its
    target_settings applied) with `overrides` on top. The file may hold keys of later stages, which this stage
    ignores, but never unknown ones; `overrides` must be this stage's keys."""
    cls = config_for_stage(stage)
    values = load_params(params) if params else {}
    values.pop("grid", None)
    FinetuneConfig.from_dict(values)  # a study file may hold downstream keys; unknown ones still fail
    known = {f.name for f in dataclasses.fields(cls)}
    settings = values.get("target_settings")
    values = {k: v for k, v in values.items() if k in known or k in ("name", "version")}  # name, version -> study
    overrides = dict(overrides or {})
    if stage == "finetune" and settings:  # the file's target_settings, then the overrides on top
        values = with_target_settings({**values, **overrides, "target_settings": settings})
        values.pop("target_settings")
    return cls.from_dict({**values, **overrides})


def load_params(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a params YAML file; `include: other.yaml` (relative to this file) is read first and overridden
    key by key; a `grid:` in the including file replaces the included file's grid."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"params file {str(path)!r} does not exist")
    if path.resolve() in _seen:
        raise ConfigError(f"params file {str(path)!r} includes itself (cycle: {' -> '.join(map(str, _seen))})")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"params file {str(path)!r} is not UTF-8 text (byte {err.start}); allowed: a UTF-8 YAML file"
        ) from None
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"params file {str(path)!r} is not valid YAML{line}: {problem}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"params file {str(path)!r} must hold a mapping of key: value, got {type(values).__name__}")
    _anchor_paths(values, path.parent)
    include = values.pop("include", None)
    if include is None:
        return values
    base = load_params(path.parent / include, _seen + (path.resolve(),))
    base_grid, own_grid = base.pop("grid", None), values.pop("grid", None)
    grid = own_grid if own_grid is not None else base_grid  # a file's own grid replaces the included one
    merged = {**base, **values}
    if grid:
        merged["grid"] = grid
    return merged


def _anchor_paths(values: dict[str, Any], folder: Path) -> None:
    """Relative data paths in a params file (local_tasks' train/dev/test files) are relative to that file."""
    tasks = values.get("local_tasks")
    if not isinstance(tasks, dict):
        return
    for spec in tasks.values():
        if not isinstance(spec, dict):
            continue
        for split in ("train", "dev", "test"):
            value = spec.get(split)
            if isinstance(value, str) and value and not Path(value).expanduser().is_absolute():
                spec[split] = str(folder / value)


def with_target_settings(values: dict[str, Any]) -> dict[str, Any]:
    """A params file's `target_settings: {task: {key: value}}` applied to a cell whose target_task is that task
    (e.g. more, smaller fine-tuning steps for a token task); the result is an ordinary config, so run ids see it."""
    settings = values.get("target_settings") or {}
    if not isinstance(settings, dict) or not all(isinstance(v, dict) for v in settings.values()):
        raise ConfigError("target_settings must map a target task name to a mapping of parameter: value")
    return {**values, **settings.get(values.get("target_task"), {})}
