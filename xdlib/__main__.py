"""Command line: `python -m xdlib <command>`.

tasks [--params F]                 every task: kind, metric, origin, split sizes, source
params [stage]                     every parameter of a stage with its default and meaning
run <stage> [--params F] [-p k=v]  one stage (teacher | distill | finetune); upstream stages run if missing
study <params.yaml> [--dry-run]    every cell of the file's grid (finetune runs), then a results table
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import sys

import yaml

from .config import ConfigError, FinetuneConfig, config_for_stage, describe, load_params


def parse_overrides(pairs: list[str]) -> dict:
    """-p key=value (value parsed as YAML: 3, 1e-4, true, [a, b]); papermill's -p syntax."""
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"-p {pair!r}: expected key=value")
        key, value = pair.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    return out


def expand_grid(values: dict) -> list[dict]:
    """A params file's `grid:` (key -> list of values, or a list of such dicts) -> one dict per cell."""
    grid = values.pop("grid", None) or {}
    blocks = grid if isinstance(grid, list) else [grid]
    cells = []
    for block in blocks:
        if not isinstance(block, dict) or not all(isinstance(v, list) for v in block.values()):
            raise ConfigError("grid must map each key to a list of values (or be a list of such mappings)")
        keys = list(block)
        for combo in itertools.product(*(block[k] for k in keys)):
            cell = {**values, **dict(zip(keys, combo))}
            if cell not in cells:
                cells.append(cell)
    return cells or [values]


def study(path: str, overrides: dict, dry_run: bool) -> int:
    from . import runs
    from .pipeline import preflight, run_finetune

    values = load_params(path)
    values.update(overrides)
    configs = [FinetuneConfig.from_dict(cell) for cell in expand_grid(values)]
    for cfg in configs:  # validate everything before any training
        preflight(cfg)
    rows = []
    for i, cfg in enumerate(configs, 1):
        done = runs.is_complete(runs.run_dir(cfg.runs_dir, "finetune", cfg.run_id()))
        print(f"[{i}/{len(configs)}] {cfg.run_id()} {'(complete)' if done else ''}", flush=True)
        if dry_run:
            continue
        metrics = json.loads((run_finetune(cfg) / "metrics.json").read_text())
        rows.append(
            {
                "source": cfg.source_task,
                "student": cfg.student,
                "arch": cfg.student_arch,
                "target": cfg.target_task,
                "metric": metrics["main_metric"],
                "dev": metrics.get(f"dev_{metrics['main_metric']}"),
                "test": metrics.get(f"test_{metrics['main_metric']}"),
            }
        )
    if rows:
        import pandas as pd

        print(pd.DataFrame(rows).to_string(index=False, float_format=lambda x: f"{x:.4f}"))
    return 0


def list_tasks(params: str | None) -> None:
    """Every task: kind, main metric, origin and source; split sizes for offline and local tasks (loaded: the
    first call downloads the pinned wheels); Hub tasks are listed without loading."""
    from .tasks import DataError, get_task, task_names

    local = load_params(params).get("local_tasks") if params else None
    print(f"{'task':16s} {'kind':10s} {'metric':9s} {'origin':9s} {'train':>7s} {'dev':>6s} {'test':>6s}  source")
    for name in task_names(local):
        task = get_task(name, local)
        sizes = ["", "", ""]
        if task.origin in ("offline", "local", "generated"):
            try:
                data = task.load()
                sizes = [str(len(data.get(s, []))) for s in ("train", "dev", "test")]
            except DataError as err:
                sizes = ["error", "", ""]
                print(f"  {name}: {err}", file=sys.stderr)
        print(
            f"{name:16s} {task.kind:10s} {task.metric:9s} {task.origin:9s} {sizes[0]:>7s} {sizes[1]:>6s} {sizes[2]:>6s}  {task.source}"
        )
    print("hub tasks need the network; offline tasks are real data packaged on PyPI (sizes after leakage removal)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m xdlib", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_tasks = sub.add_parser("tasks")
    p_tasks.add_argument("--params", help="also list this params file's local_tasks")
    p_params = sub.add_parser("params")
    p_params.add_argument("stage", nargs="?", default="finetune")
    p_run = sub.add_parser("run")
    p_run.add_argument("stage")
    p_run.add_argument("--params")
    p_run.add_argument("-p", dest="overrides", action="append", default=[])
    p_study = sub.add_parser("study")
    p_study.add_argument("params")
    p_study.add_argument("-p", dest="overrides", action="append", default=[])
    p_study.add_argument("--dry-run", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        if args.command == "tasks":
            list_tasks(args.params)
        elif args.command == "params":
            for name, default, help_text in describe(config_for_stage(args.stage)):
                print(f"{name:26s} {default!r:32s} {help_text}")
        elif args.command == "run":
            from .pipeline import RUNNERS

            cls = config_for_stage(args.stage)
            values = load_params(args.params) if args.params else {}
            values.pop("grid", None)
            FinetuneConfig.from_dict(values)  # a study file may hold downstream keys; unknown ones still fail
            known = {name for name, _, _ in describe(cls)}
            values = {k: v for k, v in values.items() if k in known}
            values.update(parse_overrides(args.overrides))  # -p is strict: only this stage's keys
            print(RUNNERS[args.stage](cls.from_dict(values)))
        elif args.command == "study":
            return study(args.params, parse_overrides(args.overrides), args.dry_run)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
