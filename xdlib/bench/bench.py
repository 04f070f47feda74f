"""Benchmark: our distillation against a naive KD loop, students against teachers, and the machine's own limit.

`xdlib bench [--size quick|full|smoke] [--device auto|cpu|cuda]` (or notebooks/benchmark.ipynb) prints a
table of ratios and writes results/benchmarks/<device>-<date>.json (machine, threads, versions, every raw timing)
and <device>-<date>-scaling.png. Every timing: warm-up first, then `repeats` measurements, median and min/max;
every ratio is between two measurements of this process on this machine.

1. distillation: ours (teacher run once into the cache with dynamic padding, then hidden -> logits -> labels
   with gradual unfreezing, length-grouped batches) vs a naive KD loop written the common way (teacher forward on
   every step, fp32, batches padded to max_length, no cache), same data, steps, student and teacher; both final
   students are scored on the same test rows.
2. inference: each student shape vs all-MiniLM-L6-v2 and a base-size encoder (all-mpnet-base-v2 when it is
   already cached, else a randomly initialised BERT-base config), batch 1 and 32 at 128 tokens, and rt-polarity's
   real length distribution.
3. hardware efficiency: FLOPs/s of a student training step over the fp32 (or bf16 on GPU) matmul peak measured here.
4. memory: peak resident memory of this process and teacher-cache bytes per example.
5. scaling: examples/s vs sequence length, batch size and threads; distillation cost at 1x/2x/4x transfer set.
"""

from __future__ import annotations

import math
import platform
import resource
import tempfile
import time
from pathlib import Path

import torch

from .. import losses, models, references, runs
from ..assets import cache_root
from ..config import Config
from ..devices import autocast, resolve_device
from ..heads import evaluate
from ..metrics import learning_margin
from ..models import HiddenProjection, layer_map, load_with_head
from ..stages import ensure
from ..stages.base import student_for
from ..tasks import get_task
from ..transfer import AugmentOptions, held_out_text, load_source, transfer_set
from .timing import matmul_peak, timed, timed_each

SIZES = {
    # rows: augmentation rows in the transfer set (plus teacher_rows source rows); dev_rows: dev and test rows (the
    # distillation selects on dev at every phase); real: rt-polarity sentences timed for the real length
    # distribution; students: the shapes timed for inference; step: batch x length of the timed training step
    "smoke": {"rows": 64, "repeats": 1, "teacher_rows": 64, "dev_rows": 50, "max_length": 32, "scaling": False,
              "real": 32, "students": ("l6-h256",), "step": (8, 64)},
    "quick": {"rows": 192, "repeats": 3, "teacher_rows": 192, "dev_rows": 100, "max_length": 128, "scaling": False,
              "real": 32, "students": ("l6-h256", "l6-h384", "l12-h384"), "step": (32, 128)},
    "medium": {"rows": 512, "repeats": 3, "teacher_rows": 1000, "dev_rows": 300, "max_length": 128, "scaling": False,
               "real": 256, "students": ("l6-h256", "l6-h384", "l12-h384"), "step": (32, 128)},
    "full": {"rows": 1000, "repeats": 3, "teacher_rows": 1500, "dev_rows": 300, "max_length": 128, "scaling": True,
             "real": 256, "students": ("l6-h256", "l6-h384", "l12-h384"), "step": (32, 128)},
}  # fmt: skip
PAPER_SPEEDUPS = {"l6-h256": 8.7, "l6-h384": 5.3, "l12-h384": 2.7}


def _bert(arch: str | None = None, **config):
    from transformers import BertConfig, BertModel

    if arch:
        spec = models.architecture(arch)
        config = dict(num_hidden_layers=spec.layers, hidden_size=spec.hidden, num_attention_heads=spec.heads,
                      intermediate_size=4 * spec.hidden)  # fmt: skip
    return BertModel(BertConfig(vocab_size=30522, **config)).eval()


def base_teacher():
    """all-mpnet-base-v2 if already reassembled in the cache (never downloaded here), else BERT-base shape."""
    from transformers import AutoModel

    folder = cache_root() / "models" / "all-mpnet-base-v2"
    if (folder / "DONE").is_file():
        return "all-mpnet-base-v2", models.pretrained(AutoModel, folder).eval()
    return "bert-base (random init)", _bert(num_hidden_layers=12, hidden_size=768, num_attention_heads=12,
                                           intermediate_size=3072)  # fmt: skip


@torch.inference_mode()
def inference(device, repeats: int, real_lengths: list[int], size: str, shapes) -> dict:
    """Encoder forward time of each teacher and student shape; every model is timed in turn at each repeat
    (timing.timed_each), so a slow spell of the machine cannot favour one side of a ratio."""
    from transformers import AutoModel

    teachers = {"all-MiniLM-L6-v2": models.pretrained(AutoModel, references.resolve_model("offline:all-MiniLM-L6-v2"))}
    if size != "smoke":
        name, model = base_teacher()
        teachers[name] = model
    every = {name: model.to(device).eval() for name, model in {**teachers, **{a: _bert(a) for a in shapes}}.items()}
    g = torch.Generator().manual_seed(0)
    batches = [sorted(real_lengths)[i : i + 32] for i in range(0, len(real_lengths), 32)]

    def inputs(vocab: int) -> dict[str, list[dict]]:
        """Random ids for each measurement: 1 x 128, 32 x 128, and the real lengths in batches of 32 (padded)."""
        out = {f"bs{bs}_len128": [{"input_ids": torch.randint(5, vocab, (bs, 128), generator=g)}] for bs in (1, 32)}
        out["rt_polarity_lengths"] = [
            {"input_ids": torch.randint(5, vocab, (len(ls), max(ls)), generator=g),
             "attention_mask": (torch.arange(max(ls))[None] < torch.tensor(ls)[:, None]).long()}
            for ls in batches
        ]  # fmt: skip
        return {key: [{k: v.to(device) for k, v in b.items()} for b in bs] for key, bs in out.items()}

    data = {name: inputs(model.config.vocab_size) for name, model in every.items()}
    out = {name: {"parameters": models.count_parameters(model)} for name, model in every.items()}
    for key in ("bs1_len128", "bs32_len128", "rt_polarity_lengths"):
        fns = {name: (lambda m=model, bs=data[name][key]: [m(**b) for b in bs]) for name, model in every.items()}
        with autocast(torch.device(device)):
            for name, result in timed_each(fns, repeats, device=device).items():
                out[name][key] = result
    for model in every.values():
        model.cpu()
    return out


def _student_trainer(device):
    """An l6-h384 in training mode and one full optimizer step on a batch of ids (mean-square output loss)."""
    model = _bert("l6-h384").train().to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step(ids: torch.Tensor) -> None:
        with autocast(torch.device(device)):
            loss = model(input_ids=ids).last_hidden_state.float().pow(2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return model, step


def training_efficiency(device, dtype, repeats: int, shape: tuple[int, int] = (32, 128)) -> dict:
    """Achieved FLOP/s of an l6-h384 training step (batch x length: 32 x 128 but at smoke size) over the matmul
    peak."""
    model, step = _student_trainer(device)
    batch, length = shape
    ids = torch.randint(5, 30522, (batch, length), device=device)
    t = timed(lambda: step(ids), repeats, warmup=2, device=device)
    cfg = model.config
    tokens = ids.numel()
    # 3x forward FLOPs (forward + backward), layers' matmuls plus attention scores/values (4 T H per token per layer)
    flops = 3 * tokens * (models.encoder_flops_per_token(cfg) + 4 * length * cfg.hidden_size * cfg.num_hidden_layers)
    peak = matmul_peak(device, dtype, repeats)
    return {"step": t, "flops_per_step": flops, "achieved": flops / t["median"], "peak": peak,
            "efficiency": flops / t["median"] / peak}  # fmt: skip


def _teacher_run(work: Path, size: dict, device: str) -> Path:
    cfg = Config(source_task="rt-polarity", max_train_samples=size["teacher_rows"],
                 max_eval_samples=size["dev_rows"], max_length=size["max_length"], teacher_lr=1e-4,
                 runs_dir=str(work / "runs"), cache_dir=str(work / "cache"), progress=False,
                 device=device, pooling="cls")  # fmt: skip  # cls: the naive loop reads the models' own [CLS] head
    return ensure("teacher", cfg)


def distill_config(work: Path, size: dict, rows: int, device: str, tag: str) -> Config:
    return Config(source_task="rt-polarity", max_train_samples=size["teacher_rows"],
                         max_eval_samples=size["dev_rows"], max_length=64, teacher_lr=1e-4,
                         runs_dir=str(work / "runs"), cache_dir=str(work / tag),
                         progress=False, device=device, student_arch="l3-h384", distill_lr=2e-4,
                         augmentation=["plot-sentences"], augment_max_examples=rows, evals_per_epoch=1,
                         # the naive loop's updates, like for like: one epoch a stage, no selection, no floor
                         gradual_unfreezing=False, phase_min_updates=0, pooling="cls",  # as the naive loop
                         recipe={stage: {"select": "none"} for stage in ("hidden", "logits", "labels")})  # fmt: skip


def ours(work: Path, size: dict, rows: int, device: str, tag: str) -> dict:
    """End-to-end wall time of our distillation (cache build + all stages + dev evaluations), from scratch."""

    cfg = distill_config(work, size, rows, device, tag).replace(max_length=size["max_length"])
    cfg = cfg.replace(runs_dir=str(work / f"runs-{tag}"))
    start = time.perf_counter()
    path = ensure("distill", cfg)
    wall = time.perf_counter() - start
    metrics = runs.read_metrics(path)
    # timed like the naive loop: the teacher's pass (the cache) plus every training phase with its dev evaluations;
    # loading, saving and the final scoring are outside both timings
    seconds = metrics["cache_seconds"] + metrics["distil_seconds"]
    # where the phases' time goes: optimizer steps (incl. batch assembly), dev evaluations, checkpoint writes
    breakdown = {k: sum(p["seconds"][k] for p in metrics["phases"]) for k in ("steps", "eval", "checkpoint")}
    return {"seconds": seconds, "cache_seconds": metrics["cache_seconds"], "run_distill_wall": wall,
            "phase_seconds": breakdown, "phases": len(metrics["phases"]),
            "test_accuracy": metrics["test_accuracy"], "teacher_test_accuracy": metrics["teacher_test"],
            "test_chance": metrics["test_chance"],
            "cache_bytes_per_example":
            metrics["cache_bytes_per_example"], "transfer_rows": sum(metrics["transfer_composition"].values()),
            "updates": sum(p["updates"] for p in metrics["phases"])}  # fmt: skip


def naive(work: Path, size: dict, rows: int, device: str) -> dict:
    """The common KD loop: teacher forward every step (fp32, no cache), batches padded to max_length, the same
    three stages and number of epochs as ours, no gradual unfreezing, the same student initialisation."""

    cfg = distill_config(work, size, rows, device, "naive").replace(max_length=size["max_length"])
    teacher_dir = _teacher_run(work, size, device)
    task = get_task("rt-polarity")
    source = load_source(cfg, "rt-polarity", cfg.max_train_samples)
    transfer, _ = transfer_set(
        source["train"], cfg.augmentation, AugmentOptions(seed=0, cap=rows), held_out_text(source)
    )
    teacher, tok = load_with_head(str(teacher_dir / "model"), "sequence", 2)
    teacher.to(device).eval()
    student, s_tok = student_for(cfg, task)
    student.to(device)
    index = layer_map("top", student.config.num_hidden_layers, teacher.config.num_hidden_layers)
    projection = HiddenProjection(len(index), student.config.hidden_size, teacher.config.hidden_size).to(device)

    def padded(rows_):
        enc = tok([r["text"] for r in rows_], padding="max_length", truncation=True, max_length=cfg.max_length,
                  return_tensors="pt")  # fmt: skip
        return enc["input_ids"], enc["attention_mask"]

    ids_t, mask_t = padded(transfer)
    ids_s, mask_s = padded(source["train"])
    labels = torch.tensor([r["label"] for r in source["train"]])
    params = list(student.parameters()) + list(projection.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.distill_lr)
    g = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    updates = 0
    for stage in ("hidden", "logits", "labels"):
        ids, mask = (ids_s, mask_s) if stage == "labels" else (ids_t, mask_t)
        order = torch.randperm(len(ids), generator=g)
        for b in range(0, len(ids), cfg.distill_batch_size):
            idx = order[b : b + cfg.distill_batch_size]
            x, m = ids[idx].to(device), mask[idx].to(device)
            out = student(input_ids=x, attention_mask=m, output_hidden_states=stage == "hidden")
            if stage == "labels":
                loss = losses.label_loss(out.logits.unsqueeze(1)[:, 0], labels[idx].to(device))
            else:
                with torch.no_grad():
                    t_out = teacher(input_ids=x, attention_mask=m, output_hidden_states=True)
                unit = torch.ones(len(idx), 1, dtype=torch.long, device=device)
                if stage == "hidden":
                    s_states = projection([h[:, :1] for h in out.hidden_states])
                    t_states = [t_out.hidden_states[i][:, :1] for i in index]
                    loss = losses.hidden_mse(s_states, t_states, unit)
                else:
                    loss = losses.LOGIT_LOSSES.get("mse")(out.logits[:, None], t_out.logits[:, None], unit, 1.0)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            updates += 1
    seconds = time.perf_counter() - start
    score = evaluate(student, s_tok, task, source["test"], cfg.max_length, device)["accuracy"]
    return {"seconds": seconds, "test_accuracy": score, "updates": updates, "transfer_rows": len(transfer),
            "test_rows": len(source["test"])}  # fmt: skip


def real_lengths(n: int = 512) -> list[int]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(references.resolve_model("offline:all-MiniLM-L6-v2"))
    rows = get_task("rt-polarity").load()["test"][:n]
    return [len(ids) for ids in tok([r["text"] for r in rows], truncation=True, max_length=128)["input_ids"]]


def scaling(device, work: Path, size: dict, ours_1x: dict) -> dict:
    _, step = _student_trainer(device)

    def throughput(bs: int, length: int) -> float:
        ids = torch.randint(5, 30522, (bs, length), device=device)
        return bs / timed(lambda: step(ids), 3, device=device)["median"]

    out = {"seq_len": {L: throughput(32, L) for L in (32, 64, 128, 256)},
           "batch": {b: throughput(b, 128) for b in (1, 8, 32, 64)}}  # fmt: skip
    if torch.device(device).type == "cpu":
        saved = torch.get_num_threads()
        out["threads"] = {}
        for n in sorted({1, saved}):
            torch.set_num_threads(n)
            out["threads"][n] = throughput(32, 128)
        torch.set_num_threads(saved)
    base = size["rows"]
    # ours() with k x the augmentation rows (the transfer set is the source rows plus those): seconds and rows;
    # 1x is the main measurement above
    out["transfer_set"] = {"1x": {"seconds": ours_1x["seconds"], "rows": ours_1x["transfer_rows"]}}
    for k in (2, 4):
        result = ours(work, size, base * k, str(device), f"scale{k}")
        out["transfer_set"][f"{k}x"] = {"seconds": result["seconds"], "rows": result["transfer_rows"]}
    return out


def run(size: str = "quick", device: str = "auto", out_dir: str | Path = "results/benchmarks") -> dict:
    spec = SIZES[size]
    dev = resolve_device(device)
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    started = time.time()
    report: dict = {"size": size, **runs.environment(dev), "dtype": str(dtype).replace("torch.", ""),
                    "date": time.strftime("%Y-%m-%d %H:%M:%S")}  # fmt: skip
    sections = report["section_seconds"] = {}

    def section(name, fn):
        start = time.perf_counter()
        report[name] = fn()
        sections[name] = time.perf_counter() - start

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        section("teacher", lambda: str(_teacher_run(work, spec, str(dev))))  # common to both methods: not compared
        section("naive", lambda: naive(work, spec, spec["rows"], str(dev)))
        section("ours", lambda: ours(work, spec, spec["rows"], str(dev), "ours"))
        report["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        lengths = real_lengths(spec["real"])
        section("inference", lambda: inference(dev, spec["repeats"], lengths, size, spec["students"]))
        section("training", lambda: training_efficiency(dev, dtype, spec["repeats"], spec["step"]))
        if spec["scaling"]:
            section("scaling", lambda: scaling(dev, work, spec, report["ours"]))
    report["wall_seconds"] = time.time() - started
    report["ratios"] = ratios(report)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{_slug(report['device_name'] or dev.type)}-{time.strftime('%Y%m%d-%H%M')}-{size}"
    runs.write_json(out / f"{stem}.json", report)
    if "scaling" in report:
        scaling_figure(report["scaling"], out / f"{stem}-scaling.png")
    report["json"] = str(out / f"{stem}.json")
    return report


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")[:40] or platform.machine()


def ratios(report: dict) -> list[dict]:
    """The table: what, measured value, target, met."""
    rows = []
    n, o = report["naive"], report["ours"]
    rows.append({"what": "distillation speedup vs naive KD (end to end, teacher included)",
                 "value": n["seconds"] / o["seconds"], "target": 4.0})  # fmt: skip
    # equally good: the accuracy gap within two standard errors of a difference of two accuracies on these test rows
    test_rows = n["test_rows"]
    p = (o["test_accuracy"] + n["test_accuracy"]) / 2
    two_se = 2 * math.sqrt(2 * p * (1 - p) / test_rows) if 0 < p < 1 else 0.0
    note = (f"ours {o['test_accuracy']:.3f}, naive {n['test_accuracy']:.3f}, teacher "
            f"{o.get('teacher_test_accuracy', float('nan')):.3f}, chance {o.get('test_chance', float('nan')):.3f}, "
            f"{test_rows} test rows")  # fmt: skip
    parity = {"what": "  student test accuracy: ours - naive (>= -2 s.e.)",
              "value": o["test_accuracy"] - n["test_accuracy"], "target": -two_se, "note": note}  # fmt: skip
    if not teacher_learnt(o):  # two students of a teacher that learnt nothing agree at chance: no parity shown
        parity.update(met=False, note="not tested: the teacher did not learn (test accuracy within the learning "
                      f"margin of chance); {note}")  # fmt: skip
    rows.append(parity)
    if "phase_seconds" in o:
        parts = {"teacher cache": o["cache_seconds"], **o["phase_seconds"]}
        # what no part measured (model loading, data, python between phases): the shares add up to 1 by construction
        parts["other"] = max(0.0, o["seconds"] - sum(parts.values()))
        total = sum(parts.values())
        for name, value in parts.items():
            rows.append({"what": f"  ours: share of time in {name} ({o['phases']} phases)", "value": value / total,
                         "target": None})  # fmt: skip
    inf = report["inference"]
    for teacher in [t for t in inf if t not in PAPER_SPEEDUPS]:
        for arch, paper in [(a, p) for a, p in PAPER_SPEEDUPS.items() if a in inf]:
            for key in ("bs1_len128", "bs32_len128", "rt_polarity_lengths"):
                value = inf[teacher][key]["median"] / inf[arch][key]["median"]
                target = paper if teacher != "all-MiniLM-L6-v2" else None
                rows.append({"what": f"inference {arch} vs {teacher}, {key}", "value": value, "target": target})
    tr = report["training"]
    rows.append({"what": "training-step FLOP/s / matmul peak", "value": tr["efficiency"], "target": 0.5})
    if "scaling" in report:
        ts = report["scaling"]["transfer_set"]
        per_row = [ts[k]["seconds"] / ts[k]["rows"] for k in ("1x", "4x")]
        rows.append({"what": f"distillation seconds per transfer row, {ts['4x']['rows']} rows / {ts['1x']['rows']} rows",
                     "value": per_row[1] / per_row[0], "target": None, "note": "linear or better when <= 1.1"})  # fmt: skip
    for row in rows:
        if "met" in row:  # decided where the row was made
            continue
        row["met"] = None if row["target"] is None else bool(row["value"] >= row["target"])
        if row.get("note", "").startswith("linear"):
            row["met"] = bool(row["value"] <= 1.1)
    return rows


def teacher_learnt(ours_: dict) -> bool:
    """Whether the teacher beat the best constant prediction on the test rows (`test_chance`) by the learning margin
    (`metrics.learning_margin`); unknown (either missing): not shown to have learnt."""
    teacher, chance = ours_.get("teacher_test_accuracy"), ours_.get("test_chance")
    if teacher is None or chance is None or math.isnan(teacher) or math.isnan(chance):
        return False
    return teacher >= chance + learning_margin(get_task("rt-polarity"), chance)


def scaling_figure(scaling: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [k for k in ("seq_len", "batch", "threads", "transfer_set") if k in scaling]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3))
    for ax, key in zip(axes, panels):
        xs = list(scaling[key])
        ys = [v["seconds"] if isinstance(v, dict) else v for v in scaling[key].values()]
        ax.plot(range(len(xs)), ys, marker="o")
        ax.set_xticks(range(len(xs)), [str(x) for x in xs])
        ax.set_xlabel(key.replace("_", " "))
        ax.set_ylabel("seconds" if key == "transfer_set" else "examples/s")
    fig.suptitle("l6-h384 training throughput; distillation cost vs transfer-set size")
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)


def format_table(report: dict) -> str:
    import pandas as pd

    frame = pd.DataFrame(report["ratios"])
    return frame.to_string(index=False, float_format=lambda x: f"{x:.2f}")
