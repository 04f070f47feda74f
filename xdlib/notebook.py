"""Glue between the parameterised notebooks and the configs.

Each stage notebook has one `parameters` cell (papermill's tag) that lists the fields a user of that stage sets
(`NOTEBOOK_FIELDS`), with the config defaults and help, and `params`: a params file for every other field.
Any field of the stage can still be given with `-p` (`xdlib params <stage>` lists them); the cell after
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

from .config import Config, ConfigError, describe, load_config

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
STAGE_NOTEBOOKS = {"teacher": "teacher", "distill": "distill", "finetune": "finetune"}


def require_report_notebook() -> Path:
    """notebooks/report.ipynb, which `--html` executes; one line when xdlib is installed without its notebooks."""
    from .errors import UserError

    path = NOTEBOOKS / "report.ipynb"
    if not path.is_file():  # an installed wheel holds the package, not the notebooks
        raise UserError(f"--html needs {path}, which is not there (xdlib is installed without its notebooks); "
                        "allowed: run from a checkout (pip install -e .), or leave out --html")  # fmt: skip
    return path


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
RUNS_LINE = (  # the fine-tuning notebook may run several fine-tunings in one kernel (the sweep groups a student's)
    "runs = []  # several fine-tunings in one kernel: a list of {field: value} changes to the values above, one run each"
)
EXTRAS = {"teacher": ("params",), "distill": ("params",), "finetune": ("params", "runs")}


def parameters_source(stage: str) -> str:
    """The body of a stage notebook's parameters cell: `params` and the stage's user fields with default and help."""
    fields = {name: (default, note) for name, default, note in describe(stage)}
    lines = [PARAMS_LINE] + ([RUNS_LINE] if "runs" in EXTRAS[stage] else [])
    for name in NOTEBOOK_FIELDS[stage]:
        default, note = fields[name]
        note = note.replace("'", "").replace("=", ":")  # papermill's parser trips on these
        lines.append(f"{name} = {default!r}  # {note}")
    return "\n".join(lines)


def stage_config(stage: str, namespace: dict[str, Any]) -> Config:
    """The validated config of `stage` from a notebook's globals: defaults, then the `params` file, then the
    notebook's values (a listed field left at its default does not override the file). Unknown names are an
    error."""
    return stage_configs(stage, {k: v for k, v in namespace.items() if k != "runs"})[0]


def stage_configs(stage: str, namespace: dict[str, Any]) -> list[Config]:
    """`stage_config`, once per entry of the notebook's `runs` (field changes on top of its values; one config
    when `runs` is empty or absent)."""
    defaults = {name: default for name, default, _ in describe(stage)}
    names = {
        k
        for k, v in namespace.items()
        if not k.startswith("_")
        and k not in _IPYTHON_NAMES
        and not isinstance(v, (types.ModuleType, types.FunctionType, types.BuiltinFunctionType, type))
    }
    extras = EXTRAS[stage]
    unknown = sorted(names - set(defaults) - set(extras))
    if unknown:
        raise ConfigError(
            f"unknown notebook parameter(s) {', '.join(map(repr, unknown))} for the {stage} notebook; "
            f"known: {', '.join(extras)}, {', '.join(sorted(defaults))}"
        )
    listed = set(NOTEBOOK_FIELDS[stage])
    overrides = {k: namespace[k] for k in names & set(defaults) if k not in listed or namespace[k] != defaults[k]}
    changes = namespace.get("runs") or [{}]
    if not isinstance(changes, list) or not all(isinstance(c, dict) for c in changes):
        raise ConfigError(f"runs={changes!r} is not allowed; allowed: a list of {{field: value}} mappings")
    for change in changes:
        wrong = sorted(set(change) - set(defaults))
        if wrong:
            raise ConfigError(
                f"unknown field(s) {', '.join(map(repr, wrong))} in runs; known: {', '.join(sorted(defaults))}"
            )
    return [load_config(stage, namespace.get("params"), {**overrides, **change}) for change in changes]


def setup(device: str = "auto") -> dict:
    """The first output of an executed notebook: package versions, the device, threads and the commit."""
    from .devices import resolve_device  # why here: torch; the notebook's config errors come before it
    from .runs import environment

    env = environment(resolve_device(device))
    sha = (env.get("git_sha") or "unknown")[:10] + (" (uncommitted changes)" if env.get("git_dirty") else "")
    versions = ", ".join(f"{k} {v}" for k, v in env["packages"].items() if v)
    print(f"xdlib at {sha}; python {env['python']}; {versions}")
    print(f"device {env['device']} ({env['device_name']}), {env['threads']} threads")
    return env


def plot_phases(metrics: dict):
    """A distillation run's training loss per phase (one panel per stage, phases in turn) and, where a phase was
    scored on dev, its dev score."""
    import matplotlib.pyplot as plt

    phases = metrics.get("phases") or []
    stage_of = [p["phase"].split("-")[1] if "-" in p["phase"] else p["phase"] for p in phases]  # "2-logits-u3"
    stages = list(dict.fromkeys(stage_of))
    fig, axes = plt.subplots(1, max(1, len(stages)), figsize=(4 * max(1, len(stages)), 3), squeeze=False)
    offsets = dict.fromkeys(stages, 0)
    for phase, stage in zip(phases, stage_of):
        ax, start = axes[0][stages.index(stage)], offsets[stage]
        curve = phase.get("loss_curve") or []
        ax.plot([start + u for u, _ in curve], [v for _, v in curve], label=phase["phase"])
        offsets[stage] = start + (phase.get("updates") or 0)
        ax.set(title=f"{stage} loss", xlabel="update", yscale="log")
    fig.tight_layout()
    return fig


def plot_dev_history(summaries: dict[str, dict]):
    """Fine-tuning runs' training loss and dev score (the task's main metric) over their updates, one line per
    run (label -> train summary); each run keeps the model at its best dev point."""
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5))
    for label, summary in summaries.items():
        curve = summary.get("loss_curve") or []
        left.plot([u for u, _ in curve], [v for _, v in curve], label=label)
        history = summary.get("history") or []
        right.plot([h["update"] for h in history], [h["dev"] for h in history], marker="o", label=label)
    left.set(title="training loss", xlabel="update")
    right.set(title="dev score (main metric)", xlabel="update")
    right.legend(fontsize="small")
    fig.tight_layout()
    return fig


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
        if py.with_suffix(".ipynb").is_file():  # an unchanged cell keeps its id: a re-pair changes only what changed
            old = jupytext.read(py.with_suffix(".ipynb")).cells
            for cell, before in zip(nb.cells, old):
                if (cell.cell_type, cell.source) == (before.cell_type, before.source) and "id" in before:
                    cell["id"] = before["id"]
        jupytext.write(nb, py.with_suffix(".ipynb"))
        written.append(py.with_suffix(".ipynb"))
    return written


if __name__ == "__main__":
    for path in sync():
        print(path)
