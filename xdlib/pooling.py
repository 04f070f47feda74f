"""How a sequence head reads its encoder: [CLS] (BERT's pooler) or the mean of the real tokens.

Pool as the model was trained to pool. all-MiniLM-L6-v2 and all-mpnet-base-v2 are sentence-transformers models
trained with *mean* pooling (their `1_Pooling/config.json`); a linear probe on MiniLM's [CLS] scores below the
majority class on rt-polarity, so a [CLS] head must first move what the encoder knows into [CLS]. `auto` takes the
model's own pooling from its sentence-transformers files, else [CLS].

A model carries its pooling as `config.xdlib_pooling` (saved in config.json), and a saved folder also carries
sentence-transformers' `modules.json` and `1_Pooling/config.json`, so that sentence-transformers (and our loader)
pool it as it was trained. Token and QA heads read every token: pooling concerns sequence heads only.
"""

from __future__ import annotations

import json
from pathlib import Path

POOLINGS = ("auto", "cls", "mean")
ATTRIBUTE = "xdlib_pooling"  # the config attribute a model's pooling travels in (config.json of a saved model)
_MODE_KEYS = {"cls": "pooling_mode_cls_token", "mean": "pooling_mode_mean_tokens"}


def folder_pooling(folder: str | Path | None) -> str | None:
    """What a model folder says of its pooling: its sentence-transformers `1_Pooling/config.json` (cls or mean; None
    for another mode, e.g. max), else `xdlib_pooling` in its config.json; None where it says nothing."""
    if folder is None or not Path(folder).is_dir():
        return None
    st_file = Path(folder) / "1_Pooling" / "config.json"
    if st_file.is_file():
        modes = json.loads(st_file.read_text())
        chosen = [name for name, key in _MODE_KEYS.items() if modes.get(key)]
        return chosen[0] if len(chosen) == 1 else None
    config = Path(folder) / "config.json"
    if config.is_file():
        return json.loads(config.read_text()).get(ATTRIBUTE)
    return None


def resolve(setting: str, folder: str | Path | None) -> str:
    """`auto` -> the folder's own pooling (else cls); `cls` and `mean` as asked."""
    if setting != "auto":
        return setting
    return folder_pooling(folder) or "cls"


def is_sequence_model(model) -> bool:
    return type(model).__name__.endswith("ForSequenceClassification")


def of(model) -> str:
    """How `model`'s head reads the encoder: mean only for a sequence head whose config says mean."""
    if is_sequence_model(model) and getattr(model.config, ATTRIBUTE, "cls") == "mean":
        return "mean"
    return "cls"


def mean_pool(hidden, attention_mask):
    """(B, T, H), (B, T) -> (B, H): the mean over the real tokens (padding masked out), as sentence-transformers'
    Pooling(pooling_mode_mean_tokens=True): sum(h * m) / max(sum(m), 1e-9). [CLS] and [SEP] count as tokens there."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)


def write_files(folder: str | Path, pooling: str, width: int) -> None:
    """sentence-transformers' description of a saved encoder (Transformer, then Pooling), so that
    `SentenceTransformer(folder)` pools it as it was trained and our loader reads the same."""
    folder = Path(folder)
    (folder / "1_Pooling").mkdir(parents=True, exist_ok=True)
    modes = {"word_embedding_dimension": width, **{key: name == pooling for name, key in _MODE_KEYS.items()},
             "pooling_mode_max_tokens": False, "pooling_mode_mean_sqrt_len_tokens": False}  # fmt: skip
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(modes, indent=2))
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    (folder / "modules.json").write_text(json.dumps(modules, indent=2))
