"""The distillation engine: the module whose loss a phase trains, and the stage machine with gradual unfreezing.

Stages (Mukherjee et al. 2021, Sec. 3; reference `run_xtreme_distil.py`):
  hidden  - MSE between projected student hidden states and the teacher's top-aligned ones (+ attention maps)
  logits  - MSE (or KL) between student and teacher logits on the transfer set
  labels  - cross-entropy on the labelled source data
In logits and labels, the student starts with only its head trainable and unfreezes one unit per phase from the
top layer down, embeddings last. Unlike the reference code: units are single layers (not the whole encoder),
models are selected on dev (never test), and the teacher is run once: its outputs are cached
(`xdlib.teacher_cache`).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import dist, losses
from .data import (
    collate,
    encode,
    encode_set,
    eval_batches,
    gather_units,
    lengths_of,
    take,
    units_of,
)
from .models import HiddenProjection, encoder_units, model_inputs, unit_logits
from .tasks import Split, Task
from .teacher_cache import TeacherCache, build_teacher_cache, cache_key  # noqa: F401  (the engine's names)
from .train import LoopSettings, train

log = logging.getLogger(__name__)


# ---- the student being distilled ----------------------------------------------------------------------------


class DistillModule(nn.Module):
    """Student + projection; forward(batch) returns the loss of the current phase's `objective`."""

    def __init__(
        self,
        student: nn.Module,
        projection: HiddenProjection,
        *,
        logit_loss: str = "mse",
        temperature: float = 1.0,
        attention_loss: bool = False,
        teacher: nn.Module | None = None,
    ):
        super().__init__()
        self.student = student
        self.projection = projection
        self.logit_loss = losses.LOGIT_LOSSES.get(logit_loss)
        self.temperature = temperature
        self.attention_loss = attention_loss
        self.objective = "hidden"
        # The live teacher is needed only for attention maps (too big to cache); not a submodule: never trained.
        self._teacher = [teacher] if teacher is not None else []

    def forward(self, batch: dict) -> dict[str, losses.Part]:
        """The phase's loss terms, each as a sum and a count (the loop divides by the count over every rank); the
        loss is the sum of the terms' means. An objective always returns the same terms: a labels term without
        labelled rows in the batch is 0 over 0, so every rank reduces the same terms."""
        want_hidden = self.objective in ("hidden", "joint")
        out = self.student(
            **model_inputs(batch),
            output_hidden_states=want_hidden,
            output_attentions=want_hidden and self.attention_loss,
        )
        mask = batch["unit_mask"]
        terms: dict[str, losses.Part] = {}
        if want_hidden:
            states = [gather_units(h, batch["unit_pos"]) for h in out.hidden_states]  # L+1 x (B, U, H_s)
            projected = self.projection(states)
            teacher_states = batch["teacher_hidden"].unbind(2)  # L+1 x (B, U, H_t)
            terms["hidden"] = losses.hidden_mse(projected, teacher_states, mask, parts=True)
            if self.attention_loss:
                with torch.no_grad():
                    t_out = self._teacher[0](**model_inputs(batch), output_attentions=True)
                n = len(out.attentions)
                terms["attention"] = losses.attention_mse(
                    list(out.attentions), list(t_out.attentions[-n:]), batch["attention_mask"], parts=True
                )
        if self.objective in ("logits", "joint"):
            logits = unit_logits(out.logits, batch)
            terms["logits"] = self.logit_loss(logits, batch["teacher_logits"], mask, self.temperature, parts=True)
        if self.objective in ("labels", "joint"):
            if "labels" in batch:
                logits = unit_logits(out.logits, batch)
                labels = batch["labels"]
                terms["labels"] = losses.label_loss(logits if labels.dim() == 2 else logits[:, 0], labels, parts=True)
            else:  # zero, but still through the graph: DDP wants every rank's output to reach the same parameters
                zero = out.logits.sum() * 0.0
                terms["labels"] = losses.Part(zero, zero.detach())
        return terms


@dataclass(frozen=True)
class Phase:
    name: str  # checkpoint folder name, e.g. "2-logits-u3"
    objective: str  # hidden | logits | labels | joint
    units: int  # how many unfreezing units (from the top) are trainable; -1 = all
    epochs: float  # the stage's epochs: a stage's phases are the `parts` slices of one run of this many
    teacher: str = (
        "transfer"  # whose outputs: the fine-tuned teacher's ("transfer") or the pretrained one's ("general")
    )
    part: int = 0  # this phase's slice of its stage (from 0), of `parts`: where in the stage's data it trains
    parts: int = 1


def plan_phases(stages: list[str], mode: str, gradual: bool, n_units: int, epochs: float) -> list[Phase]:
    """The stage machine as a flat list of phases.

    stagewise: hidden trains everything at once; logits and labels each run n_units phases when gradual (head
    only, + top layer, ..., + embeddings). A stage's phases split its updates evenly and share one data position:
    together they walk the stage's epochs once, every row once per epoch. joint: one phase, all losses.
    general (first, when asked for): the hidden stage against the *pretrained* teacher's hidden states.
    """
    if mode == "joint":
        return [Phase("joint", "joint", -1, epochs)]
    phases = []
    for s, stage in enumerate(stages, start=1):
        if stage == "general":
            phases.append(Phase(f"{s}-general", "hidden", -1, epochs, teacher="general"))
        elif stage == "hidden" or not gradual:
            phases.append(Phase(f"{s}-{stage}", stage, -1, epochs))
        else:
            phases += [
                Phase(f"{s}-{stage}-u{k}", stage, k, epochs, part=k - 1, parts=n_units) for k in range(1, n_units + 1)
            ]
    return phases


def unfreezing_units(student, embeddings_last: bool, frozen: set[int]) -> list[list[nn.Parameter]]:
    units = encoder_units(student)
    if not embeddings_last:
        units = units[:-2] + [units[-2] + units[-1]]
    return [[p for p in unit if id(p) not in frozen] for unit in units]


def student_counts(student_enc, cache: TeacherCache) -> np.ndarray:
    """Units both sides have (tokenizers may truncate different numbers of words): the student's units are
    trimmed to these counts when a batch is taken."""
    return np.minimum(units_of(student_enc), np.diff(cache.offsets))


def phase_parameters(module: DistillModule, embeddings_last: bool):
    """phase -> the parameters it trains: hidden trains everything but the head (DDP wants no unused parameters);
    a gradual phase trains its top `units`; without hidden states the projection takes no part, except in joint
    mode. Parameters frozen before distillation (e.g. frozen word embeddings) stay frozen."""
    frozen = {id(p) for p in module.student.parameters() if not p.requires_grad}
    units = unfreezing_units(module.student, embeddings_last, frozen)
    everything = [p for p in module.parameters() if id(p) not in frozen]
    head_ids = {id(p) for p in units[0]}
    projection_ids = {id(p) for p in module.projection.parameters()}

    def trainable(phase: Phase) -> list[nn.Parameter]:
        if phase.objective == "hidden":
            return [p for p in everything if id(p) not in head_ids]
        if phase.units < 0 and phase.objective != "joint":
            return [p for p in everything if id(p) not in projection_ids]
        if phase.units < 0:
            return everything
        return [p for unit in units[: phase.units] for p in unit]

    return trainable


def teacher_batch(enc, counts, cache: TeacherCache, idx: list[int], layer_index, pad: int, device) -> dict:
    """A student batch with the teacher's cached outputs at the units both sides have."""
    examples = take(enc, idx)
    for example, i in zip(examples, idx):
        example["units"] = example["units"][: counts[i]]
    batch = collate(examples, pad, device)
    hidden, logits, mask = cache.batch(idx, [int(counts[i]) for i in idx], layer_index, device)
    batch.update(teacher_hidden=hidden, teacher_logits=logits, unit_mask=mask)
    return batch


def distil(
    module: DistillModule,
    tokenizer,
    task: Task,
    transfer_rows: Split,
    source: dict[str, Split],
    caches: dict[str, TeacherCache],
    layer_index: list[int],
    phases: list[Phase],
    base: LoopSettings,
    ckpt_root: Path,
    device,
    dev_metric,
    max_length: int,
    embeddings_last: bool = True,
    on_update=None,
    phase_dev_eval: bool = False,
    tokenized_dir: Path | None = None,
) -> list[dict]:
    """Run every phase in order (finished phases are skipped on resume); returns each phase's summary. A phase is
    scored on dev only where it selects among several evaluations, or everywhere with `phase_dev_eval`."""
    module.to(device)
    caches = {name: cache.to_device(device) for name, cache in caches.items()}
    pad = tokenizer.pad_token_id
    # Arrow-backed (the writing rank tokenises into the cache, the others map what it wrote); dev stays a list
    transfer_enc = dist.main_first(encode_set, tokenizer, transfer_rows, task, max_length, tokenized_dir)
    counts = {name: student_counts(transfer_enc, cache) for name, cache in caches.items() if name != "dev"}
    dev_enc = encode(tokenizer, source["dev"], task, max_length)
    dev_counts = student_counts(dev_enc, caches["dev"])
    label_enc = dist.main_first(encode_set, tokenizer, source["train"], task, max_length, tokenized_dir)

    def distil_batch(enc, counts, cache, idx):
        return teacher_batch(enc, counts, cache, idx, layer_index, pad, device)

    @torch.inference_mode()
    def dev_hidden_loss() -> float:
        total, n = 0.0, 0
        saved = module.objective
        module.objective = "hidden"
        for idx in eval_batches(lengths_of(dev_enc), 64):
            total += float(losses.mean_of(module(distil_batch(dev_enc, dev_counts, caches["dev"], idx)))) * len(idx)
            n += len(idx)
        module.objective = saved
        return total / max(n, 1)

    trainable_in = phase_parameters(module, embeddings_last)
    summaries = []
    for phase in phases:
        module.objective = phase.objective
        if phase.objective == "labels":
            lengths, make_batch = label_enc.lengths, lambda idx: collate(take(label_enc, idx), pad, device)
        else:
            lengths = transfer_enc.lengths
            make_batch = functools.partial(distil_batch, transfer_enc, counts[phase.teacher], caches[phase.teacher])
        if phase.teacher != "transfer":  # the general stage: no dev cache of the pretrained teacher, no selection
            evaluate, higher = None, True
        elif phase.objective == "hidden":  # scored by the dev hidden-state loss (lower is better)
            evaluate, higher = dev_hidden_loss, False
        else:
            evaluate, higher = dev_metric, task.higher_is_better
        summary = train(
            module,
            trainable_in(phase),
            lengths,
            make_batch,
            dataclasses.replace(base, epochs=phase.epochs),
            ckpt_root / phase.name,
            evaluate=evaluate,
            higher_is_better=higher,
            device=device,
            desc=phase.name,
            on_update=on_update,
            select_only=not phase_dev_eval,
            part=(phase.part, phase.parts),
        )
        summaries.append({"phase": phase.name, **summary})
        log.info("phase %s: dev %s", phase.name, summary["best_dev"])
    return summaries
