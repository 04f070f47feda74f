"""Teacher/student builders, student initialisations and the hidden-state projection.

Students are plain `Bert*` models, so a distilled student saves as an ordinary HF folder that `AutoModel` and
`AutoModelFor*` load. The architecture table and the parser of `student_arch` names are in `architectures`.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn
from transformers import (
    AutoModel,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
    BertConfig,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.utils import logging as hf_logging

from . import pooling as pooling_
from .architectures import Architecture, architecture
from .data import gather_units
from .errors import ConfigError
from .references import resolve_model

log = logging.getLogger(__name__)


# ---- students' initialisation checks ---------------------------------------------------------------------------


def check_student_init(init: str, pcfg, arch: Architecture, arch_name: str, layers: list[int] | None) -> list[int]:
    """The init model's layers the student copies, after checking that its config fits the architecture."""
    if getattr(pcfg, "hidden_size", None) != arch.hidden:
        raise ConfigError(
            f"student_init={init!r} has hidden size {getattr(pcfg, 'hidden_size', None)} but "
            f"student_arch={arch_name!r} has {arch.hidden}; allowed: an l<N>-h{getattr(pcfg, 'hidden_size', 'H')} "
            "architecture, or student_init='random' (optionally with student_embeddings='pca')"
        )
    chosen = layers if layers is not None else evenly_spaced_layers(pcfg.num_hidden_layers, arch.layers)
    if any(i < 0 or i >= pcfg.num_hidden_layers for i in chosen):
        raise ConfigError(
            f"student_layers={chosen} is not allowed; allowed: layer indices in 0..{pcfg.num_hidden_layers - 1} of "
            f"the {pcfg.num_hidden_layers}-layer student_init"
        )
    return chosen


HEAD_CLASSES = {
    "sequence": AutoModelForSequenceClassification,
    "token": AutoModelForTokenClassification,
    "qa": AutoModelForQuestionAnswering,
}
BERT_HEAD_CLASSES = {
    "sequence": BertForSequenceClassification,
    "token": BertForTokenClassification,
    "qa": BertForQuestionAnswering,
}


def head_module(model) -> nn.Module:
    """The task head of an HF head model (what a fresh head replaces): classifier or qa_outputs."""
    for name in ("classifier", "qa_outputs"):
        if hasattr(model, name):
            return getattr(model, name)
    raise TypeError(f"{type(model).__name__} has no classifier or qa_outputs head")


def head_kwargs(head: str, num_labels: int) -> dict:
    if head == "qa":  # start and end logits, whatever head the checkpoint had (a distilled MNLI student has 3)
        return {"num_labels": 2}
    kwargs: dict = {"num_labels": num_labels}
    if head == "sequence" and num_labels == 1:
        kwargs["problem_type"] = "regression"
    return kwargs


_LOAD_LOGGERS = ("transformers.modeling_utils", "transformers.configuration_utils", "transformers.utils.loading_report")


def _errors_only(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.ERROR


@contextlib.contextmanager
def _quiet_loading():
    """transformers' load report, its num_labels-vs-id2label warning and its weight-loading bar silenced: a head is
    replaced on purpose here, run after run; `pretrained` warns about what is not expected. (A filter, not a
    level: transformers runs extra checks when its logger's level is WARNING or above.)"""
    loggers = [logging.getLogger(name) for name in _LOAD_LOGGERS]
    bars = hf_logging.is_progress_bar_enabled()
    for logger in loggers:
        logger.addFilter(_errors_only)
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(_errors_only)
        if bars:
            hf_logging.enable_progress_bar()


def pretrained(cls, path, **kwargs):
    """cls.from_pretrained with fp32 weights whatever dtype the checkpoint was saved in (transformers 5 loads a
    config's dtype, e.g. float16, by default: fp16 master weights make training diverge). bf16 compute on GPUs
    comes from autocast, not from the weights. A new (or resized) task head and pooler are expected and logged at
    INFO; any other weight missing from the checkpoint is a warning."""
    with _quiet_loading():
        model, info = cls.from_pretrained(path, dtype=torch.float32, output_loading_info=True, **kwargs)
    prefix = f"{model.base_model_prefix}."
    in_encoder = model.base_model is model
    mismatched = [k[0] if isinstance(k, tuple) else k for k in info.get("mismatched_keys", ())]
    missing = sorted({*info.get("missing_keys", ()), *mismatched})  # a head of another size is a new head
    unexpected = [k for k in missing if "pooler." not in k and (in_encoder or k.startswith(prefix))]
    if unexpected:
        log.warning(
            "%s: %d weights not in the checkpoint, initialised at random: %s", path, len(unexpected), unexpected[:6]
        )
    log.info(
        "%s loaded: %d new head/pooler weights, %d checkpoint weights unused",
        path,
        len(missing) - len(unexpected),
        len(info.get("unexpected_keys", ())),
    )
    return model


def load_with_head(
    ref: str, head: str, num_labels: int, pooling: str = "auto", **extra
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Any HF encoder (id / folder / offline:<name>) with a task head; a fresh head is initialised if needed. Its
    sequence head pools as `pooling` says (`auto`: as the folder's pooling files say, else [CLS])."""
    path = resolve_model(ref)
    model = pretrained(HEAD_CLASSES[head], path, ignore_mismatched_sizes=True, **head_kwargs(head, num_labels), **extra)
    set_pooling(model, resolve_pooling(pooling, path))
    tokenizer = AutoTokenizer.from_pretrained(path)
    return model, tokenizer


def resolve_pooling(setting: str, path: str | None) -> str:
    """`auto`: as the model at `path` (a folder, or a Hub id) says it pools, else [CLS]; `cls` or `mean`: as asked,
    without looking the model up."""
    return pooling_.resolve(setting, local_folder(path) if setting == "auto" and path else None)


def local_folder(path: str):
    """A folder holding what a resolved model reference says of its pooling: itself when it is a folder; for a Hub
    id, its snapshot with sentence-transformers' `1_Pooling/config.json` fetched (from_pretrained does not fetch
    it; offline, from the cache). None when the Hub model has no such file (it pools at [CLS])."""
    if Path(path).is_dir():
        return path
    try:
        from huggingface_hub import hf_hub_download

        return str(Path(hf_hub_download(path, "1_Pooling/config.json")).parent.parent)
    except Exception:  # no pooling file in the repo (or not reachable and not cached): nothing says mean
        return None


# ---- pooling: how a sequence head reads the encoder (xdlib.pooling) ---------------------------------------------


def set_pooling(model: PreTrainedModel, pooling: str) -> PreTrainedModel:
    """Record how `model`'s sequence head pools (cls or mean); saved with its config. A mean-pooled BERT head does
    not read BERT's pooler, so the pooler is frozen (`unused_parameters`)."""
    setattr(model.config, pooling_.ATTRIBUTE, pooling)
    if pooling == "mean" and pooling_.is_sequence_model(model):
        sequence_head(model, None)  # a head we cannot feed a pooled vector: refused now, not mid-training
    return model


def unused_parameters(model: nn.Module) -> set[int]:
    """Ids of parameters that no loss reaches: BERT's [CLS] pooler under mean pooling. Never trained (DDP wants every
    trained parameter to get a gradient)."""
    if pooling_.of(model) != "mean":
        return set()
    pooler = getattr(model.base_model, "pooler", None)
    return {id(p) for p in pooler.parameters()} if pooler is not None else set()


# Sequence heads that can read a pooled vector, by model type: dropout + linear classifier after a [CLS] pooler that
# mean pooling skips (BERT, ALBERT), or a classification head over features[:, 0] (RoBERTa-likes, MPNet, ELECTRA).
# Others (DistilBERT's pre_classifier, DeBERTa's ContextPooler) would lose a trained layer: refused.
LINEAR_HEADS = ("bert", "albert")
FEATURE_HEADS = ("roberta", "xlm-roberta", "camembert", "mpnet", "electra")


def sequence_head(model, pooled: torch.Tensor | None):
    """Logits of a sequence head fed a pooled vector (B, H) instead of its own [CLS] read. BERT-like heads: dropout +
    linear classifier (BERT's [CLS] pooler is skipped); RoBERTa/MPNet-like heads read features[:, 0]: they are given
    the pooled vector as that one position. `pooled=None` only checks that the head is one of these."""
    classifier = getattr(model, "classifier", None)
    kind = model.config.model_type
    if kind in LINEAR_HEADS and isinstance(classifier, nn.Linear):
        return None if pooled is None else classifier(model.dropout(pooled))
    if kind in FEATURE_HEADS and hasattr(classifier, "out_proj"):
        return None if pooled is None else classifier(pooled.unsqueeze(1))
    raise ConfigError(
        f"pooling='mean' is not supported for {type(model).__name__} (its head is neither BERT's nor RoBERTa's); "
        "allowed: pooling='cls'"
    )


class ModelOutput(dict):
    """What `run_model` returns: logits, hidden_states and attentions, read as attributes like an HF output."""

    __getattr__ = dict.get


def run_model(model, batch: dict, hidden: bool = False, attentions: bool = False):
    """`model`'s forward on a batch, its sequence head reading the encoder the way the model pools: the one place
    every training loss, prediction and teacher pass calls a model."""
    inputs = model_inputs(batch)
    if pooling_.of(model) != "mean":
        return model(**inputs, output_hidden_states=hidden, output_attentions=attentions)
    out = model.base_model(**inputs, output_hidden_states=hidden, output_attentions=attentions)
    logits = sequence_head(model, pooling_.mean_pool(out.last_hidden_state, batch["attention_mask"]))
    return ModelOutput(logits=logits, hidden_states=out.hidden_states, attentions=out.attentions)


def unit_states(hidden: torch.Tensor, batch: dict, pooling: str) -> torch.Tensor:
    """(B, T, H) -> (B, U, H): a hidden state at the loss units; under mean pooling a sequence example's one unit is
    its mean-pooled vector (what the head reads), else the state at each unit's position ([CLS] for sequences)."""
    if pooling == "mean":
        return pooling_.mean_pool(hidden, batch["attention_mask"]).unsqueeze(1)
    return gather_units(hidden, batch["unit_pos"])


class Pooled(nn.Module):
    """forward(**inputs) -> logits of a model as it pools: what ONNX export and serving run."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.config = model.config

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        batch = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            batch["token_type_ids"] = token_type_ids
        return run_model(self.model, batch).logits


# ---- students --------------------------------------------------------------------------------------------------


def evenly_spaced_layers(source_layers: int, target_layers: int) -> list[int]:
    """Which of `source_layers` to copy into a `target_layers` student: 6 -> 3 gives [0, 2, 4]."""
    if target_layers > source_layers:
        raise ConfigError(f"cannot copy {target_layers} layers from a model with {source_layers}")
    step = source_layers / target_layers
    return [int(i * step) for i in range(target_layers)]


def pca_embeddings(weight: torch.Tensor, width: int) -> torch.Tensor:
    """Project a (vocab, H_t) embedding matrix onto its top `width` principal components (the paper's
    multilingual recipe: mBERT's word embeddings reduced to the student width with PCA).

    The result is rescaled to the source matrix's overall standard deviation so that LayerNorm'd inputs start
    in the same range as the teacher's.
    """
    if width > weight.shape[1]:
        raise ConfigError(f"PCA embeddings need student hidden <= teacher hidden ({width} > {weight.shape[1]})")
    centered = weight.float() - weight.float().mean(0, keepdim=True)
    # Exact SVD of the (H_t, H_t) covariance is cheap even for a 120k-word vocabulary.
    eigvecs, _, _ = torch.linalg.svd(centered.T @ centered)  # symmetric PSD: U holds the eigenvectors, descending
    projected = centered @ eigvecs[:, :width]  # (vocab, width) = (vocab, H_t) @ (H_t, width)
    return projected * (weight.float().std() / projected.std())


@contextlib.contextmanager
def seeded(seed: int):
    """torch's CPU RNG seeded for the block and restored after it: building a model leaves the caller's RNG as it
    was (runs seed their own training, and record it)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def build_student(
    arch_name: str,
    head: str,
    num_labels: int,
    *,
    init: str,
    teacher_ref: str,
    heads: int | None = None,
    layers: list[int] | None = None,
    embeddings: str = "init",
    freeze_word_embeddings: bool = False,
    seed: int = 0,
    pooling: str = "auto",
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A BERT student with a task head, initialised randomly or from a layer subset of a pretrained encoder. It pools
    as `pooling` says (`auto`: as its init model does; a random student reads [CLS]).

    Tokenizer: the init model's when copying from one; otherwise the teacher's (so `pca` embeddings line up
    with the vocabulary they came from, and a random student shares the teacher's word pieces).
    """
    arch = architecture(arch_name, heads)
    with seeded(seed):  # the random parts (head, random layers) depend on the seed only
        if init == "random":
            tokenizer = AutoTokenizer.from_pretrained(resolve_model(teacher_ref))
            config = BertConfig(
                vocab_size=len(tokenizer),
                hidden_size=arch.hidden,
                num_hidden_layers=arch.layers,
                num_attention_heads=arch.heads,
                intermediate_size=arch.intermediate,
                **head_kwargs(head, num_labels),
            )
            model = BERT_HEAD_CLASSES[head](config)
            if embeddings == "pca":
                teacher = pretrained(AutoModel, resolve_model(teacher_ref))
                source = teacher.get_input_embeddings().weight.detach()
                if source.shape[0] != config.vocab_size:
                    raise ConfigError(f"teacher vocabulary {source.shape[0]} != tokenizer size {config.vocab_size}")
                model.get_input_embeddings().weight.data.copy_(pca_embeddings(source, arch.hidden))
                del teacher
        else:
            path = resolve_model(init)
            tokenizer = AutoTokenizer.from_pretrained(path)
            source_model = pretrained(AutoModel, path)
            pcfg = source_model.config
            chosen = check_student_init(init, pcfg, arch, arch_name, layers)
            if not hasattr(source_model, "encoder") or not hasattr(source_model.encoder, "layer"):
                raise ConfigError(
                    f"student_init={init!r} is a {pcfg.model_type} model; layer copying needs a BERT-like one"
                )
            config = BertConfig(**{**pcfg.to_dict(), "num_hidden_layers": arch.layers, **head_kwargs(head, num_labels)})
            config.architectures = None
            model = BERT_HEAD_CLASSES[head](config)
            encoder = model.base_model
            encoder.embeddings.load_state_dict(source_model.embeddings.state_dict())
            for target, source in enumerate(chosen):
                encoder.encoder.layer[target].load_state_dict(source_model.encoder.layer[source].state_dict())
            if getattr(source_model, "pooler", None) is not None and encoder.pooler is not None:
                encoder.pooler.load_state_dict(source_model.pooler.state_dict())
            log.info("student %s initialised from %s layers %s", arch_name, init, chosen)
    set_pooling(model, resolve_pooling(pooling, None if init == "random" else resolve_model(init)))
    if freeze_word_embeddings:
        model.get_input_embeddings().weight.requires_grad_(False)
    return model, tokenizer


def encoder_units(model: PreTrainedModel) -> list[list[nn.Parameter]]:
    """Parameter groups for gradual unfreezing, top down: [head + pooler], layer L-1, ..., layer 0, embeddings."""
    base = model.base_model
    base_ids = {id(p) for p in base.parameters()}
    head = [p for p in model.parameters() if id(p) not in base_ids]
    if getattr(base, "pooler", None) is not None:
        head += list(base.pooler.parameters())
    layers = [list(layer.parameters()) for layer in reversed(base.encoder.layer)]
    return [head, *layers, list(base.embeddings.parameters())]


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def encoder_flops_per_token(config) -> int:
    """Transformer-layer FLOPs per token (multiply-adds x 2), ignoring attention over length and embeddings:
    each layer has 4 H^2 (QKV + output) + 2 H I (FFN) weights."""
    h, i = config.hidden_size, config.intermediate_size
    return 2 * config.num_hidden_layers * (4 * h * h + 2 * h * i)


class HiddenProjection(nn.Module):
    """Dropout + Linear per student hidden state, lifting the student width to the teacher's (as the reference
    code's `dense_{stage}_{i}` layers). Identity when the widths are equal, as there."""

    def __init__(self, n_states: int, student_hidden: int, teacher_hidden: int, dropout: float = 0.1):
        super().__init__()
        self.identity = student_hidden == teacher_hidden
        self.proj = nn.ModuleList(
            []
            if self.identity
            else [
                nn.Sequential(nn.Dropout(dropout), nn.Linear(student_hidden, teacher_hidden)) for _ in range(n_states)
            ]
        )
        for layer in self.proj:
            nn.init.trunc_normal_(layer[1].weight, std=0.02)
            nn.init.zeros_(layer[1].bias)

    @torch.no_grad()
    def init_pca(self, cache, layers: list[int], rows: int = 8192) -> None:
        """Start each lift from the data: its weight the top H_s principal directions of the teacher's cached
        vectors at that state (H_t, H_s), its bias their mean, so the student's coordinates start as coordinates
        along the teacher's main axes of variation. Reads at most `rows` cached units per state."""
        if self.identity:
            return
        width = self.proj[0][1].in_features
        for linear, teacher_layer in zip((p[1] for p in self.proj), layers):
            stored = cache.layers.index(teacher_layer)
            vectors = torch.from_numpy(np.asarray(cache.hidden[:rows, stored], dtype=np.float32))  # (N, H_t)
            mean = vectors.mean(0)
            _, _, v_t = torch.linalg.svd(vectors - mean, full_matrices=False)  # rows of v_t: directions, descending
            directions = v_t[:width].T  # (H_t, k), k = min(N, H_t, H_s); any missing ones stay as initialised
            linear.weight[:, : directions.shape[1]] = directions
            linear.bias.copy_(mean)

    def forward(self, states: list[torch.Tensor]) -> list[torch.Tensor]:
        if self.identity:
            return list(states)
        return [proj(state) for proj, state in zip(self.proj, states)]


def layer_map(mode, student_layers: int, teacher_layers: int) -> list[int]:
    """Teacher hidden-state index for each of the student's L+1 hidden states (embedding output first).

    top: student state i <- teacher state N_t - L + i (the paper: "align all the layers of the student to the
    topmost layers of the teacher"); uniform: spread over the teacher's depth; or an explicit list.
    """
    if isinstance(mode, list):
        if any(i < 0 or i > teacher_layers for i in mode) or len(mode) != student_layers + 1:
            raise ConfigError(
                f"layer_map={mode} is not allowed; allowed: {student_layers + 1} teacher hidden-state indices (one "
                f"per student hidden state, the embeddings first), each in the teacher's 0..{teacher_layers}"
            )
        return list(mode)
    if mode == "top":
        if student_layers > teacher_layers:
            raise ConfigError(
                f"layer_map='top' needs student layers ({student_layers}) <= teacher layers ({teacher_layers}); "
                "use layer_map='uniform' or an explicit list"
            )
        return [teacher_layers - student_layers + i for i in range(student_layers + 1)]
    return [round(i * teacher_layers / student_layers) for i in range(student_layers + 1)]


# ---- head outputs at the loss units ----------------------------------------------------------------------------


def unit_logits(model_output_logits: torch.Tensor, batch: dict) -> torch.Tensor:
    """Head logits at the loss units: (B, C) for sequence heads -> (B, 1, C); (B, T, C) -> (B, U, C)."""
    if model_output_logits.dim() == 2:
        return model_output_logits.unsqueeze(1)
    return gather_units(model_output_logits, batch["unit_pos"])


def model_inputs(batch: dict) -> dict:
    return {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}
