"""Predict with a model folder the same way whatever it holds: an HF folder (PyTorch) or an exported ONNX folder
(onnxruntime, fp32 or int8; `xdlib.deploy.export`).

    from xdlib.deploy import serve
    model = serve.load("results/runs/distill/<run>/onnx-int8")
    model.predict(["a gripping film", "dull"])          # class ids (regression: floats)
    model.predict([("a question?", "a passage")])         # pairs

Inputs are cut into batches of `batch_size`, each padded to its longest input (not to max_length).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import UserError


class Predictor:
    """`logits(texts)` and `predict(texts)` for an HF or ONNX folder; texts are strings or (a, b) pairs."""

    def __init__(self, path: Path, tokenizer, run, regression: bool, max_length: int, batch_size: int):
        self.path, self.tokenizer, self._run = path, tokenizer, run
        self.regression, self.max_length, self.batch_size = regression, max_length, batch_size

    def _encode(self, texts: list) -> dict:
        pairs = [t if isinstance(t, (tuple, list)) else (t, None) for t in texts]
        first, second = [a for a, _ in pairs], [b for _, b in pairs]
        return self.tokenizer(first, second if any(b is not None for b in second) else None, padding="longest",
                              truncation=True, max_length=self.max_length, return_tensors="np")  # fmt: skip

    def logits(self, texts: list) -> np.ndarray:
        out = [self._run(self._encode(texts[i : i + self.batch_size])) for i in range(0, len(texts), self.batch_size)]
        return np.concatenate(out) if out else np.zeros((0, 1), dtype=np.float32)

    def predict(self, texts: list) -> list:
        logits = self.logits(list(texts))
        return logits[:, 0].tolist() if self.regression else logits.argmax(-1).tolist()


def load(path: str | Path, max_length: int = 128, batch_size: int = 32, threads: int | None = None) -> Predictor:
    """A Predictor for an exported ONNX folder (has model.onnx) or an HF model folder (has config.json)."""
    from transformers import AutoConfig, AutoTokenizer

    path = Path(path)
    if not (path / "model.onnx").is_file() and not (path / "config.json").is_file():
        raise UserError(f"{path} holds no model.onnx and no config.json; allowed: an exported ONNX folder "
                        "(xdlib export) or an HF model folder")  # fmt: skip
    tokenizer = AutoTokenizer.from_pretrained(path)
    regression = AutoConfig.from_pretrained(path).num_labels == 1
    if (path / "model.onnx").is_file():
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        session = ort.InferenceSession(str(path / "model.onnx"), options, providers=["CPUExecutionProvider"])
        wanted = [i.name for i in session.get_inputs()]

        def run(batch):
            return session.run(["logits"], {k: batch[k].astype(np.int64) for k in wanted})[0]

    else:
        import torch
        from transformers import AutoModelForSequenceClassification

        from ..models import (  # why here: torch and transformers; ONNX never needs them
            Pooled,
            pretrained,
            resolve_pooling,
            set_pooling,
        )

        model = pretrained(AutoModelForSequenceClassification, path).eval()
        model = Pooled(set_pooling(model, resolve_pooling("auto", path))).eval()  # pooled as its folder says

        def run(batch):
            with torch.inference_mode():
                return model(**{k: torch.from_numpy(v) for k, v in batch.items()}).float().numpy()

    return Predictor(path, tokenizer, run, regression, max_length, batch_size)
