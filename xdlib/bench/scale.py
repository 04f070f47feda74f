"""The benchmark's `scale` section: transfer sets of 10k to 1M rows with a tiny teacher, each size in a fresh process.

`xdlib bench --scale [--scale-rows 10000,100000,1000000]` prints, per size: peak resident memory (all of
it, and its anonymous part: the memory-mapped Arrow files and teacher cache are page cache the kernel can drop),
teacher-cache bytes per unit against the bound (layers used x teacher width x 2 bytes + logits), tokenisation
rows/s and distillation rows/s. The rows are synthetic sentences written straight to Arrow on disk, so no step
holds the transfer set in a Python list: the targets are peak memory at 1M rows <= 1.5x that at 100k, and cache
bytes per unit within the bound.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

WORDS = [f"w{i}" for i in range(2000)]
# tiny on purpose: the section measures how memory and time grow with rows, not model speed (2 cores here)
TEACHER = {"hidden_size": 64, "num_hidden_layers": 4, "num_attention_heads": 2, "intermediate_size": 256}
STUDENT = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 128}


class PeakMemory:
    """Peak RSS (the kernel's VmHWM) and peak anonymous RSS (sampled every 20 ms) of this process, in MB."""

    def __init__(self):
        self.anon = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    @staticmethod
    def _status(key: str) -> float:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.anon = max(self.anon, self._status("RssAnon"))
            time.sleep(0.02)

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        return {"peak_rss_mb": self._status("VmHWM"), "peak_anon_rss_mb": self.anon}


def _sentences(rows: int, seed: int):
    rng = random.Random(seed)
    for _ in range(rows):
        yield {"text": " ".join(rng.choices(WORDS, k=rng.randint(4, 24)))}


def measure(rows: int, work: Path, updates: int = 300, batch_size: int = 32) -> dict:
    """One size, in this process: build the Arrow transfer set, tokenise, cache the teacher, distil `updates` steps."""
    memory = PeakMemory()
    import torch
    from datasets import Dataset, disable_progress_bars
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    from .. import recipe
    from ..data import encode_set
    from ..kd import DistillModule, Phase, build_teacher_cache, distil
    from ..models import HiddenProjection, layer_map, seeded
    from ..tasks import Task
    from ..train import LoopSettings

    disable_progress_bars()
    tokenizer = BertTokenizerFast(vocab={w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", *WORDS])})
    vocab = len(tokenizer)
    with seeded(0):
        teacher = BertForSequenceClassification(BertConfig(vocab_size=vocab, num_labels=2, **TEACHER)).eval()
        student = BertForSequenceClassification(BertConfig(vocab_size=vocab, num_labels=2, **STUDENT))
    task = Task("synthetic", "single", "generated", lambda: {}, ("a", "b"))
    transfer = Dataset.from_generator(_sentences, gen_kwargs={"rows": rows, "seed": 0}, cache_dir=str(work / "hf"))
    small = [dict(r, label=i % 2) for i, r in enumerate(_sentences(64, 1))]

    clock = time.perf_counter()
    encode_set(tokenizer, transfer, task, 64, work / "tokenized-teacher")
    tokenise_seconds = time.perf_counter() - clock
    index = layer_map("top", STUDENT["num_hidden_layers"], TEACHER["num_hidden_layers"])
    clock = time.perf_counter()
    caches = {
        name: build_teacher_cache(
            teacher,
            tokenizer,
            data,
            task,
            64,
            work / f"cache-{name}",
            "cpu",
            layers=index,
            tokenized_dir=work / "tokenized-teacher",
        )  # fmt: skip
        for name, data in (("transfer", transfer), ("dev", small))
    }
    cache_seconds = time.perf_counter() - clock
    units = int(caches["transfer"].offsets[-1])
    # fp16 hidden states of the layers used + fp16 logits, + the 8-byte offset of each row (one unit per row here)
    bound = len(set(index)) * TEACHER["hidden_size"] * 2 + 2 * 2 + 8

    projection = HiddenProjection(STUDENT["num_hidden_layers"] + 1, STUDENT["hidden_size"], TEACHER["hidden_size"])
    module = DistillModule(student, projection, logit_loss="mse")
    epochs = updates * batch_size / rows
    phases = [Phase("1-hidden", recipe.fixed("hidden", epochs, 1e-4), -1),
              Phase("2-logits", recipe.fixed("logits", epochs, 1e-4), -1)]  # fmt: skip
    settings = LoopSettings(epochs=1.0, lr=1e-4, batch_size=batch_size, progress=False, checkpoint_every=10**9)
    clock = time.perf_counter()
    summaries = distil(module, tokenizer, task, transfer, {"train": small, "dev": small}, caches, index, phases,
                       settings, work / "checkpoints", torch.device("cpu"), lambda: 0.0, max_length=64,
                       tokenized_dir=work / "tokenized-student")  # fmt: skip
    distil_seconds = time.perf_counter() - clock
    done = sum(s["updates"] for s in summaries) * batch_size
    step_seconds = sum(s["seconds"]["steps"] for s in summaries)
    return {
        "rows": rows,
        "tokenise_rows_per_s": rows / tokenise_seconds,
        "teacher_cache_rows_per_s": rows / cache_seconds,
        "distil_rows_per_s": done / step_seconds,
        "distil_seconds_with_setup": distil_seconds,
        "cache_bytes_per_unit": caches["transfer"].nbytes() / units,
        "cache_bytes_bound": bound,
        "cached_layers": caches["transfer"].layers,
        "teacher_layers": TEACHER["num_hidden_layers"] + 1,
        **memory.stop(),
    }


def run(sizes: list[int]) -> dict:
    """Each size in its own process (a clean peak-memory reading); returns the rows and the target checks."""
    results = []
    for rows in sizes:
        with tempfile.TemporaryDirectory(prefix="xdlib-scale-") as work:
            out = Path(work) / "result.json"
            flags = ["--rows", str(rows), "--work", work, "--out", str(out)]
            command = [sys.executable, "-m", "xdlib.bench.scale", *flags]
            subprocess.run(command, check=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
            results.append(json.loads(out.read_text()))
    by_rows = {r["rows"]: r for r in results}
    checks = {}
    if 100_000 in by_rows and 1_000_000 in by_rows:
        for key in ("peak_anon_rss_mb", "peak_rss_mb"):
            checks[f"{key} 1M / 100k (target <= 1.5)"] = by_rows[1_000_000][key] / by_rows[100_000][key]
    checks["cache bytes per unit / bound (target <= 1)"] = max(r["cache_bytes_per_unit"] / r["cache_bytes_bound"]
                                                                for r in results)  # fmt: skip
    return {"sizes": results, "checks": checks}


def format_scale(report: dict) -> str:
    keys = ("rows", "peak_rss_mb", "peak_anon_rss_mb", "cache_bytes_per_unit", "cache_bytes_bound",
            "tokenise_rows_per_s", "teacher_cache_rows_per_s", "distil_rows_per_s")  # fmt: skip
    lines = [" | ".join(keys)]
    for r in report["sizes"]:
        lines.append(" | ".join(f"{r[k]:.0f}" if isinstance(r[k], float) else str(r[k]) for k in keys))
    lines += [f"{name}: {value:.3f}" for name, value in report["checks"].items()]
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, required=True)
    parser.add_argument("--work", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    Path(args.out).write_text(json.dumps(measure(args.rows, Path(args.work))))
