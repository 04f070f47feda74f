"""The benchmark's `speed` section: distillation from a base-size teacher at the paper's batch, ours vs naive KD.

`xdlib bench --speed [--device cuda]` (a GPU is what it is for; `--speed-rows` sets the transfer set):

- teacher: BERT-base shape (12 x 768), randomly initialised (this measures speed, not accuracy);
- student: l6-h384; transfer set: 20k synthetic sentences of 8-60 words (Arrow); batch 128; max_length 128;
- naive: the common KD loop (teacher forward on every step, batches padded to max_length), in fp32 and in bf16
  autocast; hidden then logits, one epoch each;
- ours: `distil` from the library (teacher run once into the cache with dynamic padding, hidden then logits with
  gradual unfreezing, the same epochs), tokenisation and cache included;
- efficiency: FLOP/s of an l6-h384 training step (batch 128 x 128) over the bf16 matmul peak, eager and compiled;
- profile: the top operators of ours' training steps (torch.profiler).

Targets: ours >= 2x the naive loop end to end; the student's training steps >= 25% of the bf16 matmul peak.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import torch

from .. import losses, recipe
from ..data import collate, encode
from ..devices import autocast, resolve_device
from ..kd import DistillModule, build_teacher_cache, distil, plan_phases
from ..models import HiddenProjection, encoder_flops_per_token, encoder_units, layer_map, seeded
from ..tasks import Task
from ..train import LoopSettings
from .timing import matmul_peak, timed

WORDS = [f"w{i}" for i in range(30518)]  # with the 4 specials: BERT-base's 30522 rows
BASE = {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072}
STUDENT = {"hidden_size": 384, "num_hidden_layers": 6, "num_attention_heads": 12, "intermediate_size": 1536}


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _setup(rows: int, teacher_shape: dict, student_shape: dict, seed: int = 0):
    from datasets import Dataset
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    rng = random.Random(seed)
    texts = [" ".join(rng.choices(WORDS, k=rng.randint(8, 60))) for _ in range(rows)]
    tokenizer = BertTokenizerFast(vocab={w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", *WORDS])})
    vocab = len(tokenizer)
    with seeded(seed):
        teacher = BertForSequenceClassification(BertConfig(vocab_size=vocab, num_labels=3, **teacher_shape)).eval()
        student = BertForSequenceClassification(BertConfig(vocab_size=vocab, num_labels=3, **student_shape))
    return Dataset.from_dict({"text": texts}), texts, tokenizer, teacher, student


def naive(texts, tokenizer, teacher, student, batch_size: int, max_length: int, device, bf16: bool) -> dict:
    """Teacher forward on every step, padded to max_length; hidden (top-aligned [CLS] states) then logits."""

    start = time.perf_counter()
    teacher.to(device).eval()
    student.to(device).train()
    index = layer_map("top", student.config.num_hidden_layers, teacher.config.num_hidden_layers)
    projection = HiddenProjection(len(index), student.config.hidden_size, teacher.config.hidden_size).to(device)
    enc = tokenizer(texts, padding="max_length", truncation=True, max_length=max_length, return_tensors="pt")
    opt = torch.optim.AdamW(list(student.parameters()) + list(projection.parameters()), lr=1e-4)
    g = torch.Generator().manual_seed(0)
    cast = torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=bf16)
    updates = 0
    for stage in ("hidden", "logits"):
        order = torch.randperm(len(texts), generator=g)
        for b in range(0, len(texts), batch_size):
            idx = order[b : b + batch_size]
            x, m = enc["input_ids"][idx].to(device), enc["attention_mask"][idx].to(device)
            unit = torch.ones(len(idx), 1, dtype=torch.long, device=device)
            with cast:
                with torch.no_grad():
                    t_out = teacher(input_ids=x, attention_mask=m, output_hidden_states=True)
                out = student(input_ids=x, attention_mask=m, output_hidden_states=stage == "hidden")
                if stage == "hidden":
                    s_states = projection([h[:, :1].float() for h in out.hidden_states])
                    loss = losses.hidden_mse(s_states, [t_out.hidden_states[i][:, :1].float() for i in index], unit)
                else:
                    loss = losses.LOGIT_LOSSES.get("mse")(out.logits[:, None].float(), t_out.logits[:, None].float(),
                                                          unit, 1.0)  # fmt: skip
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            updates += 1
    _sync(device)
    return {"seconds": time.perf_counter() - start, "updates": updates}


def ours(dataset, tokenizer, teacher, student, batch_size: int, max_length: int, device, work: Path) -> dict:
    """The library's path: Arrow tokenisation, the teacher cache (only the layers used), then `distil`."""

    task = Task("synthetic", "single", "generated", lambda: {}, ("a", "b", "c"))
    small = [{"text": t, "label": i % 3} for i, t in enumerate(dataset[:256]["text"])]
    start = time.perf_counter()
    index = layer_map("top", student.config.num_hidden_layers, teacher.config.num_hidden_layers)
    caches = {
        name: build_teacher_cache(
            teacher,
            tokenizer,
            rows,
            task,
            max_length,
            work / f"cache-{name}",
            device,
            batch_size=256,
            layers=index,
            tokenized_dir=work / "tok",
        )  # fmt: skip
        for name, rows in (("transfer", dataset), ("dev", small))
    }
    _sync(device)
    cache_seconds = time.perf_counter() - start
    projection = HiddenProjection(len(index), student.config.hidden_size, teacher.config.hidden_size)
    module = DistillModule(student, projection, logit_loss="mse")
    n_units = len(encoder_units(student))  # the gradual phases walk one epoch together, as the naive loop's stage
    specs = [recipe.fixed("hidden", 1.0, 1e-4), recipe.fixed("logits", 1.0 / n_units, 1e-4, trains="gradual")]
    phases = plan_phases(specs, n_units)
    settings = LoopSettings(epochs=1.0, lr=1e-4, batch_size=batch_size, progress=False, checkpoint_every=10**9)
    summaries = distil(module, tokenizer, task, dataset, {"train": small, "dev": small}, caches, index, phases,
                       settings, work / "ckpt", torch.device(device), lambda: 0.0, max_length=max_length,
                       tokenized_dir=work / "tok")  # fmt: skip
    _sync(device)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "cache_seconds": cache_seconds, "updates": sum(s["updates"] for s in summaries),
            "phases": len(summaries), "step_seconds": sum(s["seconds"]["steps"] for s in summaries),
            "cache_bytes": caches["transfer"].nbytes(), "cached_layers": caches["transfer"].layers}  # fmt: skip


def efficiency(student_shape: dict, batch_size: int, length: int, device, compiled: bool, repeats: int = 10) -> dict:
    """FLOP/s of one l6-h384 training step (bf16 autocast, fused AdamW) over the bf16 matmul peak."""
    from transformers import BertConfig, BertModel

    device = torch.device(device)
    model = BertModel(BertConfig(vocab_size=30522, **student_shape)).train().to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    forward = torch.compile(model) if compiled else model
    ids = torch.randint(5, 30522, (batch_size, length), device=device)

    def step() -> None:
        with autocast(device):
            loss = forward(input_ids=ids).last_hidden_state.float().pow(2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    t = timed(step, repeats, warmup=3, device=device)
    cfg = model.config
    flops = 3 * ids.numel() * (encoder_flops_per_token(cfg) + 4 * length * cfg.hidden_size * cfg.num_hidden_layers)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    peak = matmul_peak(device, dtype, 5)
    return {"step": t, "flops_per_step": flops, "achieved": flops / t["median"], "peak": peak,
            "efficiency": flops / t["median"] / peak, "compiled": compiled}  # fmt: skip


def profile_steps(dataset, tokenizer, student_shape: dict, batch_size: int, max_length: int, device) -> str:
    """Top operators (by device time on CUDA, CPU time elsewhere) of 20 student steps on real dynamic batches."""
    from torch.profiler import ProfilerActivity, profile
    from transformers import BertConfig, BertForSequenceClassification

    device = torch.device(device)
    student = BertForSequenceClassification(BertConfig(vocab_size=len(tokenizer), num_labels=3, **student_shape))
    student.to(device).train()
    opt = torch.optim.AdamW(student.parameters(), lr=1e-4, fused=device.type == "cuda")
    task = Task("synthetic", "single", "generated", lambda: {}, ("a", "b", "c"))
    enc = encode(tokenizer, [{"text": t} for t in dataset[: batch_size * 25]["text"]], task, max_length)
    batches = [collate(enc[i : i + batch_size], tokenizer.pad_token_id, device) for i in range(0, len(enc), batch_size)]

    def step(batch) -> None:
        with autocast(device):
            loss = (
                student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
                .logits.float()
                .pow(2)
                .mean()
            )
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for batch in batches[:5]:
        step(batch)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for batch in batches[5:25]:
            step(batch)
        _sync(device)
    key = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=15)


def run(rows: int = 20_000, batch_size: int = 128, max_length: int = 128, device: str = "auto",
        teacher_shape: dict | None = None, student_shape: dict | None = None) -> dict:  # fmt: skip
    import tempfile

    device = resolve_device(device)
    teacher_shape, student_shape = teacher_shape or BASE, student_shape or STUDENT
    dataset, texts, tokenizer, teacher, student = _setup(rows, teacher_shape, student_shape)
    initial = {k: v.clone() for k, v in student.state_dict().items()}
    report: dict = {"device": str(device), "rows": rows, "batch_size": batch_size, "max_length": max_length,
                    "torch": torch.__version__, "teacher": teacher_shape, "student": student_shape}  # fmt: skip
    if device.type == "cuda":
        report["device_name"] = torch.cuda.get_device_name(device)
    with tempfile.TemporaryDirectory(prefix="xdlib-speed-") as work:
        report["ours"] = ours(dataset, tokenizer, teacher, student, batch_size, max_length, device, Path(work))
    for bf16 in (False, True):
        student.load_state_dict(initial)
        report[f"naive_{'bf16' if bf16 else 'fp32'}"] = naive(texts, tokenizer, teacher, student, batch_size,
                                                              max_length, device, bf16)  # fmt: skip
    for batch, compiled in ((batch_size, False), (batch_size, True), (4 * batch_size, True)):
        name = f"efficiency_{'compiled' if compiled else 'eager'}-b{batch}"
        try:
            report[name] = efficiency(student_shape, batch, max_length, device, compiled)
        except Exception as err:  # torch.compile needs a compiler toolchain; recorded, not fatal
            if not compiled:  # the eager step has no such excuse: our bug
                raise
            report[name] = {"error": f"{type(err).__name__}: {err}"[:300]}
    report["profile"] = profile_steps(dataset, tokenizer, student_shape, batch_size, max_length, device)
    o = report["ours"]["seconds"]
    report["ratios"] = {
        "ours vs naive fp32 (target >= 2)": report["naive_fp32"]["seconds"] / o,
        "ours vs naive bf16": report["naive_bf16"]["seconds"] / o,
        **{f"student step / bf16 matmul peak, {k.split('_', 1)[1]} (target >= 0.25)": v["efficiency"]
           for k, v in report.items() if k.startswith("efficiency_") and "efficiency" in v},
    }  # fmt: skip
    return report
