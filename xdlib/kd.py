"""The distillation engine: the module whose loss a phase trains, and the stage machine with gradual unfreezing.

Stages (Mukherjee et al. 2021, Sec. 3; reference `run_xtreme_distil.py`), each a spec of the recipe (`xdlib.recipe`):
  hidden  - MSE between projected student hidden states and the teacher's top-aligned ones (+ attention maps), at
            the vector each side's head reads for a sequence task ([CLS] or the mean of the tokens)
  logits  - MSE (or KL) between student and teacher logits on the transfer set
  labels  - cross-entropy on the labelled source data
In logits and labels, the student starts with only its head trainable and unfreezes one unit per phase from the
top layer down, embeddings last; each phase trains until dev stops improving, as in the reference code (a Keras
fit with EarlyStopping per unfreezing step, a fresh optimiser each). Unlike the reference code: units are single
layers (not the whole encoder), models are selected on dev (never test), and the teacher is run once: its outputs
are cached (`xdlib.teacher_cache`).
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

from . import dist, losses, pooling
from .data import (
    collate,
    encode,
    encode_set,
    eval_batches,
    lengths_of,
    take,
    units_of,
)
from .models import (
    HiddenProjection,
    encoder_units,
    model_inputs,
    run_model,
    unit_logits,
    unit_states,
    unused_parameters,
)
from .recipe import StageSpec
from .tasks import Split, Task
from .teacher_cache import TeacherCache, build_teacher_cache, cache_key  # noqa: F401  (the engine's names)
from .train import LoopSettings, schedule, train

log = logging.getLogger(__name__)


# ---- the student being distilled ----------------------------------------------------------------------------


class DistillModule(nn.Module):
    """Student + projection; forward(batch) returns the loss terms of the current stage (`loss_weights`)."""

    def __init__(
        self,
        student: nn.Module,
        projection: HiddenProjection,
        *,
        logit_loss: str = "mse",
        temperature: float = 1.0,
        teacher: nn.Module | None = None,
    ):
        super().__init__()
        self.student = student
        self.projection = projection
        self.logit_loss = losses.LOGIT_LOSSES.get(logit_loss)
        self.temperature = temperature
        self.loss_weights: dict[str, float] = {"hidden": 1.0}  # the stage's terms (`recipe.LOSS_TERMS`) and weights
        # The live teacher is needed only for attention maps (too big to cache); not a submodule: never trained.
        self._teacher = [teacher] if teacher is not None else []

    def forward(self, batch: dict) -> dict[str, losses.Part]:
        """The stage's loss terms, each weighted, as a sum and a count (the loop divides by the count over every
        rank); the loss is the sum of the weighted terms' means. A stage always returns the same terms: a labels
        term without labelled rows in the batch is 0 over 0, so every rank reduces the same terms."""
        weights = {term: w for term, w in self.loss_weights.items() if w > 0}
        out = run_model(self.student, batch, hidden="hidden" in weights, attentions="attention" in weights)
        mask = batch["unit_mask"]
        terms: dict[str, losses.Part] = {}
        if "hidden" in weights:  # at the vector the head reads (sequence tasks) or the words' first sub-tokens
            how = pooling.of(self.student)
            states = [unit_states(h, batch, how) for h in out.hidden_states]  # L+1 x (B, U, H_s)
            projected = self.projection(states)
            teacher_states = batch["teacher_hidden"].unbind(2)  # L+1 x (B, U, H_t)
            terms["hidden"] = losses.hidden_mse(projected, teacher_states, mask, parts=True)
        if "attention" in weights:
            with torch.no_grad():
                t_out = self._teacher[0](**model_inputs(batch), output_attentions=True)
            n = len(out.attentions)
            terms["attention"] = losses.attention_mse(
                list(out.attentions), list(t_out.attentions[-n:]), batch["attention_mask"], parts=True
            )
        if "logits" in weights:
            logits = unit_logits(out.logits, batch)
            terms["logits"] = self.logit_loss(logits, batch["teacher_logits"], mask, self.temperature, parts=True)
        if "labels" in weights:
            if "labels" in batch:
                logits = unit_logits(out.logits, batch)
                labels = batch["labels"]
                terms["labels"] = losses.label_loss(logits if labels.dim() == 2 else logits[:, 0], labels, parts=True)
            else:  # zero, but still through the graph: DDP wants every rank's output to reach the same parameters
                zero = out.logits.sum() * 0.0
                terms["labels"] = losses.Part(zero, zero.detach())
        return {term: losses.Part(part.total * weights[term], part.count) for term, part in terms.items()}


@dataclass(frozen=True)
class Phase:
    name: str  # checkpoint folder name, e.g. "2-logits-u3"
    spec: StageSpec  # its stage: loss terms, what trains, lr, epochs, patience, floor, selection
    units: int  # how many unfreezing units (from the top) are trainable; -1 = what the stage's terms reach
    index: int = 0  # its place among its stage's phases: where in the stage's data it starts


def plan_phases(specs: list[StageSpec], n_units: int) -> list[Phase]:
    """The recipe as a flat list of phases: a stage that trains `all` is one phase; a `gradual` one is n_units
    phases (head only, + top layer, ..., + embeddings), each trained until dev stops improving, with its own
    budget (at least the stage's `min_updates`), starting where the phase before it planned to end in the data."""
    phases = []
    for s, spec in enumerate(specs, start=1):
        if spec.trains == "all":
            phases.append(Phase(f"{s}-{spec.name}", spec, -1))
        else:
            phases += [Phase(f"{s}-{spec.name}-u{k}", spec, k, index=k - 1) for k in range(1, n_units + 1)]
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
    """phase -> the parameters it trains: those its stage's loss terms reach (DDP wants no unused parameters): the
    head only under logits or labels, the projection only under hidden; a gradual phase trains its top `units`.
    Parameters frozen before distillation (e.g. frozen word embeddings) and those no loss reaches (BERT's pooler
    under mean pooling) stay frozen."""
    frozen = {id(p) for p in module.student.parameters() if not p.requires_grad}
    frozen |= unused_parameters(module.student)
    units = unfreezing_units(module.student, embeddings_last, frozen)
    head_ids = {id(p) for p in units[0]}
    projection = [p for p in module.projection.parameters() if id(p) not in frozen]

    def trainable(phase: Phase) -> list[nn.Parameter]:
        terms = {t for t, w in phase.spec.loss.items() if w > 0}
        chosen = units if phase.units < 0 else units[: phase.units]
        params = [p for unit in chosen for p in unit if id(p) not in head_ids or terms & {"logits", "labels"}]
        return params + (projection if "hidden" in terms else [])

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
        """The hidden-state loss on the source dev rows (held out of the transfer set), with the dev cache."""
        total, n = 0.0, 0
        saved = module.loss_weights
        module.loss_weights = {"hidden": 1.0}
        for idx in eval_batches(lengths_of(dev_enc), 64):
            total += float(losses.mean_of(module(distil_batch(dev_enc, dev_counts, caches["dev"], idx)))) * len(idx)
            n += len(idx)
        module.loss_weights = saved
        return total / max(n, 1)

    selection = {"dev": (dev_metric, task.higher_is_better), "hidden_loss": (dev_hidden_loss, False),
                 "none": (None, True)}  # fmt: skip
    trainable_in = phase_parameters(module, embeddings_last)
    summaries = []
    for phase in phases:
        spec = phase.spec
        module.loss_weights = dict(spec.loss)
        if spec.data == "labelled":
            lengths, make_batch = label_enc.lengths, lambda idx: collate(take(label_enc, idx), pad, device)
        else:
            lengths = transfer_enc.lengths
            make_batch = functools.partial(distil_batch, transfer_enc, counts[spec.teacher], caches[spec.teacher])
        evaluate, higher = selection[spec.select]
        settings = dataclasses.replace(base, epochs=spec.epochs, lr=spec.lr, patience=spec.patience,
                                       min_updates=spec.min_updates)  # fmt: skip
        summary = train(
            module,
            trainable_in(phase),
            lengths,
            make_batch,
            settings,
            ckpt_root / phase.name,
            evaluate=evaluate,
            higher_is_better=higher,
            device=device,
            desc=phase.name,
            on_update=on_update,
            select_only=not phase_dev_eval,
            start_update=phase.index * schedule(len(lengths), settings).budget,
        )
        summaries.append({"phase": phase.name, "select": spec.select, **summary})
        log.info("phase %s: dev %s after %d updates", phase.name, summary["best_dev"], summary["updates"])
    return summaries
