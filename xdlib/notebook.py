"""Glue between the parameterised notebooks and the configs.

Each stage notebook has one `parameters` cell (papermill's tag) that lists the fields a user of that stage sets
(`NOTEBOOK_FIELDS`), with the config defaults and help, and `params`: a params file for every other field.
Any field of the stage can still be given with `-p` (`python -m xdlib params <stage>` lists them); the cell after
calls `stage_config(stage, globals())`, which rejects names that are not fields (papermill itself only warns) and
builds the config as the command line does: defaults, then the params file, then the notebook's values. A
listed parameter left at its default does not override the params file. `parameters_source(stage)` renders the
cell and a test keeps the two in sync.

`python -m xdlib.notebook` rewrites the parameters cells of notebooks/*.py from the configs and re-pairs the
.ipynb files with jupytext (outputs stripped, kernelspec kept).
"""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any

from .config import ConfigError, TeacherConfig, config_for_stage, describe
from .params import load_config

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
STAGE_NOTEBOOKS = {"teacher": "teacher", "distill": "distill", "finetune": "finetune"}
_IPYTHON_NAMES = {"In", "Out", "get_ipython", "exit", "quit", "open"}
_COMMON = ("max_eval_samples", "seed", "device", "runs_dir")
NOTEBOOK_FIELDS = {  # what a user of each stage sets; every other field comes from `params` or `-p`
    "teacher": ("source_task", "teacher_model", "teacher_epochs", "teacher_lr", "teacher_batch_size")
    + ("max_train_samples",)
    + _COMMON,
    "distill": ("source_task", "teacher_model", "student_arch", "student_init", "augmentation")
    + ("augment_max_examples", "distill_stages", "distill_epochs", "distill_lr", "distill_batch_size")
    + ("max_train_samples",)
    + _COMMON,
    "finetune": ("target_task", "student", "source_task", "student_arch", "student_init", "augmentation")
    + ("finetune_epochs", "finetune_lr", "finetune_batch_size", "target_max_train_samples", "finetune_seed")
    + _COMMON,
}
PARAMS_LINE = "params = None  # a params file (YAML) for every field not set here; -p sets any field of this stage"


def parameters_source(stage: str) -> str:
    """The body of a stage notebook's parameters cell: `params` and the stage's user fields with default and help."""
    fields = {name: (default, note) for name, default, note in describe(config_for_stage(stage))}
    lines = [PARAMS_LINE]
    for name in NOTEBOOK_FIELDS[stage]:
        default, note = fields[name]
        note = note.replace("'", "").replace("=", ":")  # papermill's parser trips on these
        lines.append(f"{name} = {default!r}  # {note}")
    return "\n".join(lines)


def stage_config(stage: str, namespace: dict[str, Any]) -> TeacherConfig:
    """The validated config of `stage` from a notebook's globals: defaults, then the `params` file, then the
    notebook's values (a listed field left at its default does not override the file). Unknown names are an
    error."""
    defaults = {name: default for name, default, _ in describe(config_for_stage(stage))}
    names = {
        k
        for k, v in namespace.items()
        if not k.startswith("_")
        and k not in _IPYTHON_NAMES
        and not isinstance(v, (types.ModuleType, types.FunctionType, types.BuiltinFunctionType, type))
    }
    unknown = sorted(names - set(defaults) - {"params"})
    if unknown:
        raise ConfigError(
            f"unknown notebook parameter(s) {', '.join(map(repr, unknown))} for the {stage} notebook; "
            f"known: params, {', '.join(sorted(defaults))}"
        )
    listed = set(NOTEBOOK_FIELDS[stage])
    overrides = {k: namespace[k] for k in names & set(defaults) if k not in listed or namespace[k] != defaults[k]}
    return load_config(stage, namespace.get("params"), overrides)


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
