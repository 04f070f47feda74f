"""Deployment benchmark: what ONNX and int8 cost a model in speed and accuracy, on this CPU.

    xdlib deploy --params params/deploy.yaml [--threads N] [--out results]   (notebooks/export.ipynb)
    xdlib deploy RUN_DIR [RUN_DIR ...] [--rows N] [--threads N] [--out results]
    (`python -m xdlib.deploy` is the same command)

With --params: run the params file's sweep (complete runs are reused; its fine-tunings need `save_model: true`),
then measure its teachers on their source task and every fine-tuned model on its target. With run dirs: those runs
(a teacher or distill run, or a finetune run with its model).

For each run: export ONNX fp32 and int8 (kept in RUN_DIR/onnx and RUN_DIR/onnx-int8; reused while the run's
weights are those they were exported from), predict the test rows the run was scored on (its max_eval_samples
draw, at its max_length) with PyTorch fp32, ONNX fp32 and ONNX int8 (`xdlib.deploy.serve`), and time each at batch 1 and
batch 32 on those test sentences (real lengths, each batch padded to its longest). All models are timed in turn in
one process; threads are recorded.
Writes `<out>/tables/deploy.csv|md` (the table and the targets) and `<out>/benchmarks/deploy-<date>.json` (every
raw number).

The heavy modules (sweep, report, stages, export) are imported inside the functions that use them (why: a
params file or run folder is refused before torch is imported).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from .. import options
from ..options import Parser

if TYPE_CHECKING:
    import pandas as pd

BACKENDS = ("pytorch-fp32", "onnx-fp32", "onnx-int8")
# The deployment targets: int8 at least 2x faster than PyTorch fp32 at batch 1; over the fine-tuned targets, a mean
# accuracy change of -0.5 points or better and no target losing more than 1.5 points.
SPEEDUP_B1, MEAN_DELTA, WORST_DELTA = 2.0, -0.5, -1.5


def _latency(predictor, texts: list, batch: int, repeats: int) -> float:
    """Median seconds per call of `batch` texts, over consecutive slices of the test texts (one warm-up call); with
    fewer texts than `batch` (a small --rows), the texts repeated to fill one batch."""
    from ..bench.timing import timed

    predictor.batch_size = batch
    texts = texts * -(-batch // len(texts))  # ceil: at least one whole batch
    slices = [texts[i : i + batch] for i in range(0, len(texts) - batch + 1, batch)][:repeats]
    chunks = itertools.cycle(slices)  # the warm-up takes the first slice; each slice is then timed once
    return timed(lambda: predictor.logits(next(chunks)), len(slices))["median"]


def _agreement(a: list, b: list, regression: bool) -> float:
    """Share of equal class predictions; for regression, the Pearson r of the two prediction vectors."""
    import numpy as np

    if regression:
        return float(np.corrcoef(a, b)[0, 1])
    return sum(x == y for x, y in zip(a, b)) / len(a)


def measure(run_dir: Path, rows: int | None = None, threads: int | None = None) -> dict:
    """Scores, agreement and latencies of one run's model as PyTorch fp32, ONNX fp32 and ONNX int8."""
    import torch

    from ..data import cap
    from .export import exported, run_config, run_task

    run_dir = Path(run_dir)
    config = run_config(run_dir)
    task = run_task(run_dir, config)
    rows = rows or config.get("max_eval_samples")  # the draw its recorded test score is on (transfer.load_source)
    max_length = config.get("max_length") or 128
    test = cap(task.load()["test"], rows, 0)
    texts = [r["text"] if r.get("text_pair") is None else (r["text"], r["text_pair"]) for r in test]
    labels = [r["label"] for r in test]
    folders = {"pytorch-fp32": run_dir / "model" if (run_dir / "model").is_dir() else run_dir}
    for name, int8 in (("onnx-fp32", False), ("onnx-int8", True)):  # reused when made from the weights as they are
        folders[name] = exported(run_dir, int8=int8)
    saved = torch.get_num_threads()
    torch.set_num_threads(threads or saved)
    try:
        return _measured(run_dir, task, test, texts, labels, folders, max_length, threads)
    finally:
        torch.set_num_threads(saved)  # the caller's (a notebook's) threads as they were


def _measured(run_dir, task, test, texts, labels, folders, max_length, threads) -> dict:
    from .. import metrics
    from . import serve

    recorded = {}
    if (run_dir / "metrics.json").is_file():
        recorded = json.loads((run_dir / "metrics.json").read_text())
    out = {"run": run_dir.name, "path": str(run_dir), "stage": run_dir.parent.name, "task": task.name, "metric": task.metric,
           "rows": len(test), "max_length": max_length, "recorded": recorded.get(f"test_{task.metric}")}  # fmt: skip
    regression = task.kind == "regression"
    predictions = {}
    for name, folder in folders.items():
        predictor = serve.load(folder, max_length=max_length, threads=threads)
        predictions[name] = predictor.predict(texts)
        score = metrics.compute(task, predictions[name], labels)[task.metric]
        out[name] = {"score": score, "batch1_ms": 1e3 * _latency(predictor, texts, 1, 100),
                     "batch32_ms": 1e3 * _latency(predictor, texts, 32, 9)}  # fmt: skip
    fp32, int8 = predictions["onnx-fp32"], predictions["onnx-int8"]
    out["agreement_kind"] = "pearson r" if regression else "share"
    out["int8_agreement"] = _agreement(fp32, int8, regression)
    out["onnx_vs_pytorch_agreement"] = _agreement(fp32, predictions["pytorch-fp32"], regression)
    out["int8_delta_points"] = 100 * (out["onnx-int8"]["score"] - out["pytorch-fp32"]["score"])
    out["int8_speedup_batch1"] = out["pytorch-fp32"]["batch1_ms"] / out["onnx-int8"]["batch1_ms"]
    out["int8_speedup_batch32"] = out["pytorch-fp32"]["batch32_ms"] / out["onnx-int8"]["batch32_ms"]
    out["int8_size_mb"] = sum(f.stat().st_size for f in folders["onnx-int8"].glob("model.onnx*")) / 1e6
    out["fp32_size_mb"] = sum(f.stat().st_size for f in folders["onnx-fp32"].glob("model.onnx*")) / 1e6
    return out


class SweepFailed(RuntimeError):
    """A cell of the deployment sweep failed: nothing to measure it with."""


def sweep_runs(params: str, overrides: dict | None = None, executor: str = "inline") -> list[Path]:
    """A params file's teacher runs, then its fine-tuning runs, after its sweep made whatever was missing."""
    from ..errors import UserError
    from ..sweep import plan, sweep
    from ..tasks import get_task
    from .export import KINDS

    _name, configs, _settings = plan(params, overrides)  # every check before the sweep trains anything
    without = sorted({c.target_task for c in configs if not c.save_model})
    if without:
        raise UserError(f"{params}: its fine-tunings on {', '.join(without)} do not keep their model; allowed: a "
                        "params file with save_model: true (params/deploy.yaml)")  # fmt: skip
    kinds = {c.target_task: get_task(c.target_task, c.local_tasks).kind for c in configs}
    other = sorted(f"{t} ({k})" for t, k in kinds.items() if k not in KINDS)
    if other:
        raise UserError(f"{params}: the targets {', '.join(other)} have heads export does not support; allowed: "
                        f"targets with {', '.join(KINDS)} heads")  # fmt: skip
    status = sweep(params, overrides, executor=executor)
    failed = status[~status["state"].isin(("complete", "done"))]  # done: made by this sweep
    if len(failed):
        raise SweepFailed(f"{len(failed)} cell(s) of {params} did not complete: {failed['error'].iloc[0]}; the "
                          "status table and each log: results/sweeps/<name>/status.md")  # fmt: skip
    runs = Path(configs[0].runs_dir)
    teachers = [runs / "teacher" / r for r in dict.fromkeys(status.get("teacher_run", [])) if isinstance(r, str)]
    return teachers + [runs / "finetune" / r for r in status["finetune_run"]]


def _labels(run_dirs: list[Path]) -> dict[str, str]:
    """run id -> the model's name as the study's tables write it (variant, with its departing settings)."""
    from ..report import collect, finetune_scores
    from ..stages import STAGES

    labels = {}
    for runs_dir in {p.parent.parent for p in run_dirs if p.parent.name in STAGES}:  # a run store's runs only
        frame = collect(runs_dir)
        frame = frame[frame["run_id"].isin({p.name for p in run_dirs})]
        if frame.empty:
            continue
        ft = finetune_scores(frame)
        labels.update(dict(zip(ft["run_id"], ft["variant"])) if not ft.empty else {})
        for _, row in frame[frame["stage"] == "teacher"].iterrows():
            first = row.get("teacher_sources")
            sources = f", first on {first}" if isinstance(first, str) and first != "-" else ""
            labels[row["run_id"]] = f"teacher {Path(str(row['teacher_model'])).name} ({row['source_task']}{sources})"
    return labels


def table(results: list[dict]) -> pd.DataFrame:
    """One row per measured model: scores x100, the int8 change, agreement, latencies and speedups."""
    import pandas as pd

    labels = _labels([Path(r["path"]) for r in results])
    rows = []
    for r in results:
        s = {b: r[b] for b in BACKENDS}
        rows.append({
            "model": labels.get(r["run"], r["run"]), "task": r["task"], "stage": r["stage"], "metric": r["metric"],
            "rows": r["rows"], "recorded": None if r["recorded"] is None else round(100 * r["recorded"], 1),
            **{f"{b} score": round(100 * s[b]["score"], 1) for b in BACKENDS},
            "int8 delta (points)": round(r["int8_delta_points"], 1),
            "int8 agrees": round(100 * r["int8_agreement"], 1) if r["agreement_kind"] == "share" else None,
            "int8 r with fp32": round(r["int8_agreement"], 4) if r["agreement_kind"] != "share" else None,
            **{f"{b} b1 ms": round(s[b]["batch1_ms"], 1) for b in BACKENDS},
            **{f"{b} b32 ms": round(s[b]["batch32_ms"]) for b in BACKENDS},
            "int8 speedup b1": round(r["int8_speedup_batch1"], 2), "int8 speedup b32": round(r["int8_speedup_batch32"], 2),
            "int8 MB": round(r["int8_size_mb"], 1), "fp32 MB": round(r["fp32_size_mb"], 1), "run": r["run"],
        })  # fmt: skip
    return pd.DataFrame(rows)


def targets(frame: pd.DataFrame) -> pd.DataFrame:
    """The deployment targets, measured: speed over every model, accuracy over the fine-tuned models."""
    import pandas as pd

    ft = frame[frame["stage"] == "finetune"] if (frame["stage"] == "finetune").any() else frame
    delta = ft["int8 delta (points)"]
    worst = ft.loc[delta.idxmin()]
    slowest = frame.loc[frame["int8 speedup b1"].idxmin()]
    return pd.DataFrame([
        {"target": f"int8 >= {SPEEDUP_B1:g}x faster than PyTorch fp32 at batch 1 (slowest model)",
         "value": slowest["int8 speedup b1"], "met": bool(slowest["int8 speedup b1"] >= SPEEDUP_B1),
         "where": f"{slowest['model']} on {slowest['task']}"},
        {"target": f"mean int8 change over {len(ft)} fine-tuned models >= {MEAN_DELTA:+g} points",
         "value": round(delta.mean(), 2), "met": bool(delta.mean() >= MEAN_DELTA),
         "where": f"mean |change| {delta.abs().mean():.2f}"},
        {"target": f"no fine-tuned model loses more than {-WORST_DELTA:g} points",
         "value": worst["int8 delta (points)"], "met": bool(worst["int8 delta (points)"] >= WORST_DELTA),
         "where": f"{worst['model']} on {worst['task']}"},
    ])  # fmt: skip


MD_COLUMNS = ("model", "task", "recorded", "pytorch-fp32 score", "onnx-fp32 score", "onnx-int8 score",
              "int8 delta (points)", "int8 agrees", "int8 r with fp32", "pytorch-fp32 b1 ms", "onnx-int8 b1 ms",
              "int8 speedup b1", "int8 speedup b32")  # fmt: skip


def markdown(frame, checks, threads: int, where: str) -> str:
    return (frame[list(MD_COLUMNS)].to_markdown(index=False, floatfmt="g") + "\n\n" + checks.to_markdown(index=False)
            + f"\n\nScores x100 on each task's test rows (the draw the run was scored on; `recorded` is its run's "
            f"metrics.json). {threads} threads; {where}.\n")  # fmt: skip


def run(run_dirs: list[Path], rows: int | None = None, threads: int | None = None, out: str | Path = "results"):
    """Measure every run, write the table, the targets and the raw JSON; returns (table, targets, json path)."""
    import torch

    from ..runs import atomic_write, environment

    results = []
    for path in run_dirs:
        print(f"measuring {path}", flush=True)
        results.append(measure(path, rows, threads))
    threads = threads or torch.get_num_threads()
    frame, env = table(results), environment(torch.device("cpu"))
    checks = targets(frame)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M")
    out = Path(out)
    raw = out / "benchmarks" / f"deploy-{stamp}.json"
    raw.parent.mkdir(parents=True, exist_ok=True)
    (out / "tables").mkdir(parents=True, exist_ok=True)
    report = {"environment": env, "threads": threads, "results": results, "targets": checks.to_dict("records")}
    where = f"{env['device_name']}, git {str(env.get('git_sha'))[:7]}; raw: {raw.name}"
    texts = {raw: json.dumps(report, indent=1, default=str), out / "tables" / "deploy.csv": frame.to_csv(index=False),
             out / "tables" / "deploy.md": markdown(frame, checks, threads, where)}  # fmt: skip
    for path, text in texts.items():  # every text made first: the files are replaced, each whole, in milliseconds
        atomic_write(path, text)
    return frame, checks, raw


def build_parser() -> Parser:
    parser = Parser(prog="xdlib deploy", description=__doc__,
                    formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("runs", nargs="*", help="run folders (or --params)")
    parser.add_argument("--params", help="a params file whose fine-tunings keep their model (params/deploy.yaml)")
    options.add(parser, "--executor", default="inline", help="the sweep's executor with --params (as xdlib sweep's)")
    options.add(parser, "--rows", default=None, help="test rows (default: the run's max_eval_samples)")
    options.add(parser, "--threads", default=None, help="inference threads (default: every core)")
    parser.add_argument("--out", default="results", help="tables/deploy.* and benchmarks/deploy-<date>.json go here")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from ..errors import guarded

    return guarded(lambda: _deploy(args))


def _deploy(args) -> int:
    from ..errors import UserError, one_line
    from .export import check, run_task

    if bool(args.runs) == bool(args.params):
        raise UserError("give run folders or --params, not both or neither; allowed: xdlib deploy "
                        "RUN_DIR... or xdlib deploy --params params/deploy.yaml")  # fmt: skip
    for path in args.runs:  # every run checked before the first export, its test data too
        check(path, None, force=True)
        task = run_task(Path(path))
        if task is None:
            raise UserError(f"{path} is not a run (no config.yaml naming its task): nothing to score it on; "
                            "allowed: run folders of the run store")  # fmt: skip
        task.load()  # a Hub-only task offline, or a missing local file: its one line now, not after an export
    try:
        run_dirs = sweep_runs(args.params, executor=args.executor) if args.params else [Path(p) for p in args.runs]
    except SweepFailed as err:  # each cell's error is in the sweep's status table: this names the first
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 1
    frame, checks, raw = run(run_dirs, args.rows, args.threads, args.out)
    print(frame[list(MD_COLUMNS)].to_string(index=False))
    print(checks.to_string(index=False))
    print(f"table: {Path(args.out) / 'tables' / 'deploy.md'}; raw: {raw}")
    return 0
