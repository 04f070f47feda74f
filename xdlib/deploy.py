"""Deployment benchmark: what ONNX and int8 cost a model in speed and accuracy, on this CPU.

    python -m xdlib.deploy RUN_DIR [RUN_DIR ...] [--rows 300] [--threads N] [--out results/benchmarks]

For each run (a teacher or distill run, or a finetune run with its model): export ONNX fp32 and int8 (kept in
RUN_DIR/onnx and RUN_DIR/onnx-int8; reused when there), predict the run's task test rows with PyTorch fp32, ONNX
fp32 and ONNX int8 (`xdlib.serve`), and time each at batch 1 and batch 32 on the test sentences themselves (real
lengths, each batch padded to its longest). All models are timed in turn in one process; threads are recorded.
Writes `<out>/deploy-<date>.json` (every raw number) and `.md` (the table).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

BACKENDS = ("pytorch-fp32", "onnx-fp32", "onnx-int8")


def _latency(predictor, texts: list, batch: int, repeats: int) -> float:
    """Median seconds per call of `batch` texts, over consecutive slices of the test texts."""
    predictor.batch_size = batch
    slices = [texts[i : i + batch] for i in range(0, len(texts) - batch + 1, batch)][:repeats]
    predictor.logits(slices[0])  # warm-up
    times = []
    for chunk in slices:
        start = time.perf_counter()
        predictor.logits(chunk)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(run_dir: Path, rows: int, threads: int | None, max_length: int = 128) -> dict:
    import torch

    from . import metrics, serve
    from .data import cap
    from .export import _run_task, default_out, export
    from .tasks import get_task

    task = get_task(_run_task(run_dir))
    test = cap(task.load()["test"], rows, 0)
    texts = [r["text"] if r.get("text_pair") is None else (r["text"], r["text_pair"]) for r in test]
    labels = [r["label"] for r in test]
    folders = {"pytorch-fp32": run_dir / "model"}
    for name, int8 in (("onnx-fp32", False), ("onnx-int8", True)):
        folder = default_out(run_dir, int8)
        folders[name] = folder if (folder / "model.onnx").is_file() else export(run_dir, folder, int8=int8)
    if threads:
        torch.set_num_threads(threads)
    out = {"run": run_dir.name, "task": task.name, "metric": task.metric, "rows": len(test)}
    predictions = {}
    for name, folder in folders.items():
        predictor = serve.load(folder, max_length=max_length, threads=threads)
        predictions[name] = predictor.predict(texts)
        score = metrics.compute(task, predictions[name], labels)[task.metric]
        out[name] = {"score": score, "batch1_ms": 1e3 * _latency(predictor, texts, 1, 100),
                     "batch32_ms": 1e3 * _latency(predictor, texts, 32, 9)}  # fmt: skip
    fp32, int8 = predictions["onnx-fp32"], predictions["onnx-int8"]
    out["int8_agreement"] = sum(a == b for a, b in zip(fp32, int8)) / len(texts)
    out["onnx_vs_pytorch_agreement"] = sum(a == b for a, b in zip(fp32, predictions["pytorch-fp32"])) / len(texts)
    out["int8_delta_points"] = 100 * (out["onnx-int8"]["score"] - out["pytorch-fp32"]["score"])
    out["int8_speedup_batch1"] = out["pytorch-fp32"]["batch1_ms"] / out["onnx-int8"]["batch1_ms"]
    out["int8_speedup_batch32"] = out["pytorch-fp32"]["batch32_ms"] / out["onnx-int8"]["batch32_ms"]
    out["int8_size_mb"] = sum(f.stat().st_size for f in folders["onnx-int8"].glob("model.onnx*")) / 1e6
    out["fp32_size_mb"] = sum(f.stat().st_size for f in folders["onnx-fp32"].glob("model.onnx*")) / 1e6
    return out


def table(results: list[dict]) -> str:
    head = ("| run | task | PyTorch fp32 | ONNX fp32 | ONNX int8 | Δ int8 (points) | int8 agrees | batch 1 ms "
            "(PT / ONNX / int8) | batch 32 ms (PT / ONNX / int8) | int8 speedup b1 / b32 |")  # fmt: skip
    lines = [head, "|" + "---|" * 10]
    for r in results:
        s = [r[b] for b in BACKENDS]
        lines.append(
            f"| {r['run']} | {r['task']} | {100 * s[0]['score']:.1f} | {100 * s[1]['score']:.1f} | "
            f"{100 * s[2]['score']:.1f} | {r['int8_delta_points']:+.1f} | {100 * r['int8_agreement']:.1f}% | "
            + " / ".join(f"{x['batch1_ms']:.1f}" for x in s)
            + " | "
            + " / ".join(f"{x['batch32_ms']:.0f}" for x in s)
            + " | "
            + f"{r['int8_speedup_batch1']:.2f}× / {r['int8_speedup_batch32']:.2f}× |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m xdlib.deploy", description=__doc__)
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--rows", type=int, default=300)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default="results/benchmarks")
    args = parser.parse_args(argv)
    from .export import check
    from .runs import environment

    for run in args.runs:  # every run checked before the first export
        check(run, None, force=True)
    import torch

    results = [measure(Path(run), args.rows, args.threads) for run in args.runs]
    report = {"environment": environment(torch.device("cpu")), "threads": args.threads or torch.get_num_threads(),
              "results": results}  # fmt: skip
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"deploy-{stamp}.json").write_text(json.dumps(report, indent=1, default=str))
    text = table(results)
    (out / f"deploy-{stamp}.md").write_text(text + "\n")
    print(text)
    print(f"threads {report['threads']}; raw: {out / f'deploy-{stamp}.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
