"""Export a run's model to ONNX (`torch.onnx.export`, the dynamo exporter) and quantise it to int8 (onnxruntime's
`quantize_dynamic`): a folder that onnxruntime loads with the model's tokenizer (`xdlib.deploy.serve.load`).

`xdlib export RUN_DIR [--int8] [--out DIR] [--force]`. The folder holds `model.onnx` (fp32, or int8
weights with --int8), the tokenizer files, the model's `config.json` and `export.json` (source run, the digest of
its weights, task, opset, quantisation settings, versions). Sequence heads only (single sentence, pair,
regression): token and QA heads need their own post-processing, and are refused in one line.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import warnings
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from ..errors import UserError, errors_only

OPSET = 18
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
KINDS = ("single", "pair", "regression")
# Dynamic int8 quantisation of the weights of MatMul/Gemm nodes (one scale per output channel), activations
# quantised on the fly, signed 8-bit. Per channel, not per tensor: with one scale per tensor the distilled students
# lost 1.0-5.0 points of rt-polarity accuracy (int8 agreeing with fp32 on 89.7-95.0%); per channel, 0.7 gained to
# 1.0 lost, 98.7-99.0% agreeing (central and general-stage students; `xdlib deploy`).
INT8 = {"weight_type": "QInt8", "per_channel": True, "reduce_range": False, "op_types_to_quantize": ["MatMul", "Gemm"]}


class ExportError(UserError, ValueError):
    """A run that cannot be exported, or an output folder in the way."""


def run_config(run_dir: Path) -> dict:
    """A run folder's config.yaml ({} for a folder that is not a run)."""
    import yaml

    path = Path(run_dir) / "config.yaml"
    return yaml.safe_load(path.read_text()) if path.is_file() else {}


def run_task(run_dir: Path, config: dict | None = None):
    """The task a run's model predicts (its target, or a teacher's or student's source; local tasks too), or None
    for a folder that is not a run."""
    from ..tasks import get_task  # why here: the checks of a run folder come before anything heavy

    config = run_config(run_dir) if config is None else config
    name = config.get("target_task") or config.get("source_task")
    return get_task(name, config.get("local_tasks")) if name else None


def default_out(run_dir: str | Path, int8: bool) -> Path:
    """Where an export goes unless told: RUN_DIR/onnx, or RUN_DIR/onnx-int8."""
    return Path(run_dir) / ("onnx-int8" if int8 else "onnx")


def check(run_dir: str | Path, out: str | Path | None, force: bool, int8: bool = False) -> tuple[Path, Path, Any]:
    """(model folder, output folder, task or None) or one ExportError line, before anything heavy is imported."""
    run_dir = Path(run_dir)
    model_dir = run_dir / "model" if (run_dir / "model").is_dir() else run_dir
    if not (model_dir / "config.json").is_file():
        raise ExportError(
            f"{run_dir} has no model (no {run_dir / 'model' / 'config.json'}); allowed: a teacher or distill run, "
            "a finetune run made with save_model: true, or an HF model folder"
        )
    task = run_task(run_dir)
    if task and task.kind not in KINDS:
        raise ExportError(f"{run_dir} is a {task.kind} model ({task.name}); allowed: {', '.join(KINDS)} heads")
    labels = len(json.loads((model_dir / "config.json").read_text()).get("id2label") or {0: 0, 1: 1})
    if task and labels != task.num_labels:  # a model folder put into a run of another task
        raise ExportError(f"{model_dir} has a head of {labels} labels, but its run's task {task.name} has "
                          f"{task.num_labels}; allowed: the run's own model")  # fmt: skip
    out = Path(out) if out else default_out(run_dir, int8)
    if out.resolve() == model_dir.resolve() or out.resolve() in model_dir.resolve().parents:
        raise ExportError(f"--out {out} is or holds the model it exports ({model_dir}): the export would replace it; "
                          "allowed: a folder outside it, such as the default RUN_DIR/onnx")  # fmt: skip
    if out.exists() and not force:
        raise ExportError(f"{out} already exists; allowed: another --out, or --force to replace it")
    return model_dir, out, task


def _current_meta(folder: Path, model_dir: Path) -> dict | None:
    """export.json of `folder` when it holds a complete export (model.onnx) of `model_dir` as its weights are now
    (the digest it recorded, `runs.weights_digest`) at our opset, else None: an export of weights since remade
    is never reused."""
    from ..runs import weights_digest  # why here: runs imports torch

    try:
        meta = json.loads((folder / "export.json").read_text())
    except (OSError, ValueError):
        return None
    same = (
        isinstance(meta, dict)
        and meta.get("source_model") == str(model_dir.resolve())
        and meta.get("opset") == OPSET
        and (folder / "model.onnx").is_file()
        and meta.get("source_weights") is not None
        and meta.get("source_weights") == weights_digest(model_dir)
    )
    return meta if same else None


def _fp32_export_of(run_dir: Path, model_dir: Path) -> Path | None:
    """RUN_DIR/onnx/model.onnx when it is a complete fp32 export of this model's current weights at our opset
    (int8 quantises it instead of exporting again: the dynamo export is most of an export's time), else None."""
    folder = default_out(run_dir, False)
    meta = _current_meta(folder, model_dir)
    return folder / "model.onnx" if meta and meta.get("precision") == "fp32" else None


def exported(run_dir: str | Path, int8: bool = False) -> Path:
    """RUN_DIR/onnx (or onnx-int8 with `int8`): reused when it is an export of the run's model as it is now, else
    exported again (replacing an export of weights since remade)."""
    run_dir = Path(run_dir)
    folder = default_out(run_dir, int8)
    model_dir = run_dir / "model" if (run_dir / "model").is_dir() else run_dir
    precision = "int8" if int8 else "fp32"
    meta = _current_meta(folder, model_dir)
    if meta and meta.get("precision") == precision and not _leftovers(folder):
        return folder
    with _locked(folder.parent):  # another process's export of this run may have made it meanwhile
        meta = _current_meta(folder, model_dir)
        if meta and meta.get("precision") == precision:
            _remove_leftovers(folder)
            return folder
    return export(run_dir, folder, int8=int8, force=True)


LOCK = ".xdlib-export.lock"  # in the folder that exports are written into: one export there at a time


@contextmanager
def _locked(*folders: Path):
    """Exclusive locks on the folders exports are written into or read from (flock on a lock file in each, opened
    for writing so that it works on NFS too), taken in path order, held from the first check to the rename: two
    exports into one folder take turns, neither removes what the other is writing, and an int8 export's fp32 source
    is not replaced while it is quantised."""
    import fcntl

    with ExitStack() as stack:
        for folder in sorted({f.resolve() for f in folders}):
            folder.mkdir(parents=True, exist_ok=True)
            handle = stack.enter_context(open(folder / LOCK, "a"))  # closed (and so released) also on a kill
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        yield


TMP = "xdlib-export-"  # `.<out name>.xdlib-export-<random>`: an export being written, or a previous one being replaced


def _leftovers(out: Path) -> list[Path]:
    """What killed exports into `out` left beside it: `.<name>.xdlib-export-<random>` folders (an export not yet
    renamed, or the previous export being replaced). Never read; removed under the lock by the next export into
    `out`."""
    return [p for p in out.parent.glob(f".{out.name}.{TMP}*") if p.is_dir()] if out.parent.is_dir() else []


def _remove_leftovers(out: Path) -> None:
    for leftover in _leftovers(out):
        shutil.rmtree(leftover, ignore_errors=True)


def _commit(tmp: Path, out: Path) -> None:
    """`tmp`, complete, becomes `out`. Two renames in one folder: at any instant `out` is the previous export, the
    new one, or absent (a kill between the renames; the next export makes it again), never a mix of the two."""
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.{TMP}", dir=out.parent))
        out.rename(old)  # onto the empty folder just made: atomic
    tmp.rename(out)
    if old is not None:
        shutil.rmtree(old)


def export(run_dir: str | Path, out: str | Path | None = None, int8: bool = False, force: bool = False) -> Path:
    """Write the ONNX folder of `run_dir`'s model (fp32, or int8 with `int8`); returns its path. int8 quantises
    the run's fp32 export (RUN_DIR/onnx) when there is one."""
    model_dir, out, task = check(run_dir, out, force, int8)
    try:
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as err:
        raise ExportError(f"export needs onnxruntime and onnxscript ({err.name} is missing); allowed: "
                          "pip install -e '.[deploy]'") from None  # fmt: skip
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from ..models import (  # why here: torch and transformers, once the run is checked
        Pooled,
        pretrained,
        resolve_pooling,
        set_pooling,
    )
    from ..runs import weights_digest

    weights = weights_digest(model_dir)  # before reading them: an export never records newer weights than its own
    model = pretrained(AutoModelForSequenceClassification, model_dir).eval()
    model = Pooled(
        set_pooling(model, resolve_pooling("auto", model_dir))
    ).eval()  # the graph pools as the model was trained
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    example = tokenizer(["a short one", "and a longer second example sentence"], padding=True, return_tensors="pt")
    names = [n for n in INPUTS if n in example]
    source = [default_out(Path(run_dir), False).parent] if int8 else []  # the fp32 export int8 may quantise
    with _locked(out.parent, *source):
        if out.exists() and not force:  # made by another export since the check
            raise ExportError(f"{out} already exists; allowed: another --out, or --force to replace it")
        _remove_leftovers(out)  # a killed export's: under the lock, no export into `out` is running
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.{TMP}", dir=out.parent))  # beside `out`: atomic rename
        try:
            _write(model, tokenizer, example, names, tmp, Path(run_dir), model_dir, weights, task, int8)
            _commit(tmp, out)  # complete or absent: a killed export leaves no half-written folder under `out`
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def _write(model, tokenizer, example, names, tmp, run_dir, model_dir, weights, task, int8) -> None:
    """The export's files, in the temporary folder `tmp`."""
    import onnxruntime
    import torch

    from .. import __version__

    fp32 = (_fp32_export_of(Path(run_dir), model_dir) if int8 else None) or tmp / (
        "model-fp32.onnx" if int8 else "model.onnx"
    )
    dims = {n: {0: torch.export.Dim("batch"), 1: torch.export.Dim("seq")} for n in names}
    # "torchvision is not installed. Skipping torchvision::nms" and the like; "axis name seq will not be used":
    # every input shares batch and seq
    with errors_only("torch.onnx", "onnx_ir", "onnxscript"), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", FutureWarning)  # torch.export internals, not ours
        if fp32.parent == tmp:
            torch.onnx.export(model, (), str(fp32), kwargs={n: example[n] for n in names}, input_names=names,
                              output_names=["logits"], opset_version=OPSET, dynamo=True, dynamic_shapes=dims,
                              verbose=False, report=False)  # fmt: skip
    if int8:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        settings = {k: v for k, v in INT8.items() if k != "weight_type"}
        with errors_only(""):  # not a root-logger line per unquantised tensor, nor its advice
            quantize_dynamic(fp32, tmp / "model.onnx", weight_type=QuantType[INT8["weight_type"]], **settings)
        for extra in tmp.glob("model-fp32.onnx*"):  # the fp32 graph made here, and its external data
            extra.unlink()
    tokenizer.save_pretrained(tmp)
    model.config.save_pretrained(tmp)
    meta = {
        "source_run": Path(run_dir).resolve().name, "source_model": str(model_dir.resolve()),
        "source_weights": weights,
        "task": task.name if task else None,
        "inputs": names, "opset": OPSET, "precision": "int8" if int8 else "fp32",
        "quantization": {"method": "onnxruntime.quantization.quantize_dynamic", **INT8} if int8 else None,
        "quantized_from": str(fp32) if int8 and fp32.parent != tmp else None,
        "torch": torch.__version__, "onnxruntime": onnxruntime.__version__, "xdlib_version": __version__,
    }  # fmt: skip
    (tmp / "export.json").write_text(json.dumps(meta, indent=1))
    if (Path(run_dir) / "config.yaml").is_file():  # a run's model: its card, for the export
        from .. import cards

        cards.write(tmp, run_dir, export=meta)
