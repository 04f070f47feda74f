"""Glue between the parameterised notebooks and the configs.

Each notebook in notebooks/ has one `parameters` cell (papermill's tag) whose names are exactly the fields of its
stage's config, with the config defaults; `parameters_source(stage)` renders that cell and a test keeps the two in
sync. The cell after it calls `stage_config(stage, globals())`, which rejects names papermill injected that are
not config fields (papermill itself only warns) and returns the validated config.

`python -m xdlib.notebook` rewrites the parameters cells of notebooks/*.py from the configs and re-pairs the
.ipynb files with jupytext (outputs stripped, kernelspec kept).
"""

from __future__ import annotations

import dataclasses
import types
from pathlib import Path
from typing import Any

from .config import ConfigError, TeacherConfig, config_for_stage

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
STAGE_NOTEBOOKS = {"teacher": "teacher", "distill": "distill", "finetune": "finetune"}
_IPYTHON_NAMES = {"In", "Out", "get_ipython", "exit", "quit", "open"}


def parameters_source(stage: str) -> str:
    """The body of a stage notebook's parameters cell: every config field with its default and help."""
    lines = []
    for f in dataclasses.fields(config_for_stage(stage)):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        note = f.metadata["help"].replace("'", "").replace("=", ":")  # papermill's parser trips on these
        lines.append(f"{f.name} = {default!r}  # {note}")
    return "\n".join(lines)


def stage_config(stage: str, namespace: dict[str, Any]) -> TeacherConfig:
    """The validated config of `stage` from a notebook's globals; unknown parameter names are an error."""
    cls = config_for_stage(stage)
    known = {f.name for f in dataclasses.fields(cls)}
    names = {
        k
        for k, v in namespace.items()
        if not k.startswith("_")
        and k not in _IPYTHON_NAMES
        and not isinstance(v, (types.ModuleType, types.FunctionType, types.BuiltinFunctionType, type))
    }
    unknown = sorted(names - known)
    if unknown:
        raise ConfigError(
            f"unknown notebook parameter(s) {', '.join(map(repr, unknown))} for the {stage} notebook; "
            f"known: {', '.join(sorted(known))}"
        )
    return cls.from_dict({k: namespace[k] for k in known if k in namespace})


def sync(notebooks: Path = NOTEBOOKS) -> list[Path]:
    """Rewrite the parameters cell of each stage notebook's .py from the config, then write the paired .ipynb
    without outputs. Returns the files written."""
    import jupytext

    written = []
    for stage, name in STAGE_NOTEBOOKS.items():
        py = notebooks / f"{name}.py"
        nb = jupytext.read(py)
        cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        if len(cells) != 1:
            raise ValueError(f"{py} must have exactly one cell tagged 'parameters'")
        cells[0].source = parameters_source(stage)
        jupytext.write(nb, py, fmt="py:percent")
        written.append(py)
    for py in sorted(notebooks.glob("*.py")):
        nb = jupytext.read(py)
        for cell in nb.cells:
            if cell.cell_type == "code":
                cell.outputs, cell.execution_count = [], None
        nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
        jupytext.write(nb, py.with_suffix(".ipynb"))
        written.append(py.with_suffix(".ipynb"))
    return written


if __name__ == "__main__":
    for path in sync():
        print(path)
