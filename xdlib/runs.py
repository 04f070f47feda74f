"""The run store: results/runs/<stage>/<run_id>/ with config.yaml, metrics.json, provenance.json, model/ and
DONE (written last). A run without DONE is never read as a result; rerunning it resumes from its checkpoints.
"""

from __future__ import annotations

import errno
import json
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
import yaml

from . import git_state, pooling

PACKAGES = ("torch", "transformers", "datasets", "safetensors", "tokenizers", "numpy", "pandas", "papermill")


_FAULT_HITS: dict[str, int] = {}


def fault(point: str, path: str | Path | None = None) -> None:
    """A fault-injection point for the fault tests (tests/test_faults.py); nothing happens unless XDLIB_FAULT names
    it. XDLIB_FAULT="<point>:<n>" kills this process with SIGKILL the n-th time it reaches `point`;
    "<point>:<n>:enospc" raises there, from the n-th time on, the OSError a full disk raises. Points: update (after
    an optimizer step), cache (a teacher-cache batch written), checkpoint (half a checkpoint written), save (half a
    model folder written), run (metrics written, DONE not yet), report (between two tables)."""
    spec = os.environ.get("XDLIB_FAULT")
    if not spec or spec.split(":")[0] != point:
        return
    _, n, *kind = spec.split(":")
    _FAULT_HITS[point] = hits = _FAULT_HITS.get(point, 0) + 1
    if kind == ["enospc"] and hits >= int(n):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path or point))
    if not kind and hits == int(n):
        os.kill(os.getpid(), signal.SIGKILL)


def atomic_write(path: str | Path, text: str) -> None:
    """Write `text` to a temp file beside `path`, then rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def write_json(path: str | Path, data: Any) -> None:
    atomic_write(path, json.dumps(data, indent=1, sort_keys=True, default=str) + "\n")


def run_dir(runs_dir: str | Path, stage: str, run_id: str) -> Path:
    return Path(runs_dir) / stage / run_id


def is_complete(path: str | Path) -> bool:
    return (Path(path) / "DONE").is_file()


def has_model(path: str | Path) -> bool:
    """The run's HF model folder is there (written atomically: present means whole)."""
    return (Path(path) / "model" / "config.json").is_file()


def damage(path: str | Path, needs_model: bool = False) -> str | None:
    """What makes a run marked DONE unusable, or None: metrics.json or config.yaml missing or unreadable, or
    (`needs_model`) a model folder without readable weights. Such a run is never counted in a table and is made
    again by the next sweep or `run` that needs it."""
    path = Path(path)
    for name, parse in (("metrics.json", json.loads), ("config.yaml", yaml.safe_load)):
        try:
            if not isinstance(parse((path / name).read_text()), dict):
                return f"{name} holds no mapping"
        except FileNotFoundError:
            return f"{name} is missing"
        except (OSError, ValueError, UnicodeDecodeError, yaml.YAMLError):
            return f"{name} is unreadable"
    if needs_model:
        if not has_model(path):
            return "model/ is missing"
        weights = sorted((path / "model").glob("*.safetensors"))
        if not weights:
            return "model/ has no .safetensors weights"
        from safetensors import safe_open

        for file in weights:
            try:
                with safe_open(str(file), "pt") as handle:  # reads the header; checks it against the file's size
                    handle.keys()
            except Exception:  # the library's own error types differ across versions
                return f"model/{file.name} is corrupt"
    return None


def usable(path: str | Path, needs_model: bool) -> bool:
    """Whether the run at `path` can be returned as it is: complete, undamaged and, when a stage below reads its
    weights (`needs_model`), with its model folder. A complete run without its model (a run store copied without
    weights) still counts for the report. Only reads: reopening a run is `reopen`."""
    return is_complete(path) and damage(path, needs_model) is None


def reopen(path: str | Path) -> None:
    """Drop a complete run's DONE so that it runs again (its results are rewritten, its id is kept), and what was
    derived from its weights inside it: its ONNX exports (RUN_DIR/onnx*), its weights digest, and its tracking
    (RUN_DIR/tensorboard, RUN_DIR/mlflow.json: the new training's curves start afresh, in a new MLflow run). Teacher
    caches elsewhere record the digest of the weights they came from and are rebuilt when it differs."""
    import shutil

    path = Path(path)
    (path / "DONE").unlink(missing_ok=True)
    (path / WEIGHTS_DIGEST).unlink(missing_ok=True)
    (path / "mlflow.json").unlink(missing_ok=True)
    for folder in [*path.glob("onnx*"), path / "tensorboard"]:
        if folder.is_dir():
            shutil.rmtree(folder, ignore_errors=True)


WEIGHTS_DIGEST = "weights.json"  # in a run folder: the digest of model/*.safetensors, with each file's size and mtime


def weights_digest(model_dir: str | Path) -> str | None:
    """sha256 over a model folder's weight files (*.safetensors, else *.bin: names and bytes), or None: what an
    artefact derived from the weights (a teacher cache, an ONNX export) records, to be rebuilt when it differs.
    For a run's model/ the digest is kept in RUN_DIR/weights.json beside each file's size and mtime, so a run's
    weights are read once, and again only when a file changed."""
    import hashlib

    model_dir = Path(model_dir)
    files = sorted(model_dir.glob("*.safetensors")) or sorted(model_dir.glob("*.bin"))
    if not files:
        return None
    stats = {f.name: [f.stat().st_size, f.stat().st_mtime_ns] for f in files}
    record = model_dir.parent / WEIGHTS_DIGEST if model_dir.name == "model" else None
    if record is not None and (model_dir.parent / "config.yaml").is_file():
        try:
            known = json.loads(record.read_text())
            if known.get("files") == stats:
                return known["sha256"]
        except (OSError, ValueError, KeyError, AttributeError):
            pass
    else:
        record = None  # a bare model folder: nothing written beside it
    digest = hashlib.sha256()
    for file in files:
        digest.update(f"{file.name}\0".encode())
        with open(file, "rb") as fh:
            while chunk := fh.read(1 << 22):
                digest.update(chunk)
    sha = digest.hexdigest()
    if record is not None:
        try:
            write_json(record, {"files": stats, "sha256": sha})
        except OSError:  # a read-only run store: computed again next time
            pass
    return sha


@contextmanager
def locked(path: str | Path) -> Iterator[Any]:
    """An exclusive lock on one run (`<runs_dir>/.locks/<stage>-<run_id>.lock`), held while it is made: two
    processes that ensure the same run (two sweeps on one store) never train it twice; the second waits, then
    finds it complete. The lock goes with the process, also when it is killed. Yields the lock file, open for
    appending: `made` writes one line in it per completed making of the run, a journal the fault tests count."""
    import fcntl

    path = Path(path)
    locks = path.parent.parent / ".locks"
    locks.mkdir(parents=True, exist_ok=True)
    name = locks / f"{path.parent.name}-{path.name}.lock"
    while True:
        handle = open(name, "a")
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:  # the file locked is still the one at this name (a holder may unlink it: `discard_unstarted`)
            if os.stat(name).st_ino == os.fstat(handle.fileno()).st_ino:
                break
        except FileNotFoundError:
            pass
        handle.close()
    try:
        yield handle
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def discard_unstarted(path: str | Path, handle=None) -> None:
    """Remove what a run that could not start left, called under its lock (`handle`, the held lock file): its folder
    (config.yaml; never one with a checkpoint or DONE: a killed run resumes), the stage folder if that was made for
    it alone, and the lock file while it journals no making (`locked` re-checks the file it locked, so a process
    that waited on this one takes a fresh lock). A user error before any training leaves nothing behind."""
    path = Path(path)
    if path.is_dir() and not (path / "DONE").exists() and not (path / "checkpoints").exists():
        shutil.rmtree(path, ignore_errors=True)
    try:
        path.parent.rmdir()  # made for this run alone
    except OSError:  # other runs in it, or gone
        pass
    if handle is not None and os.fstat(handle.fileno()).st_size == 0:
        Path(handle.name).unlink(missing_ok=True)


def made(handle) -> None:
    """Append 'made <time> pid <pid> on <host>' to a held lock's journal (after DONE)."""
    handle.write(f"made {time.strftime('%Y-%m-%dT%H:%M:%S')} pid {os.getpid()} on {platform.node()}\n")
    handle.flush()


def save_hf(model, tokenizer, path: Path) -> None:
    """An ordinary Hugging Face folder (safetensors), swapped in whole: a reader never sees half of one."""
    import shutil

    from transformers.utils import logging as hf_logging

    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a "writing shards" bar for one small file says nothing
    try:
        model.save_pretrained(tmp)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    fault("save", tmp)
    tokenizer.save_pretrained(tmp)
    how = getattr(model.config, pooling.ATTRIBUTE, None)
    if how:  # sentence-transformers' pooling files: the folder says how it pools (xdlib.pooling)
        pooling.write_files(tmp, how, model.config.hidden_size)
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)


def environment(device: torch.device | str) -> dict[str, Any]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    device = torch.device(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    return {
        "python": sys.version.split()[0],
        "packages": versions,
        "device": str(device),
        "device_name": name,
        "threads": torch.get_num_threads(),
        "platform": platform.platform(),
        **git_state(),
    }


@contextmanager
def open_run(path: Path, config: dict, device, seeds: dict, write: bool = True) -> Iterator[dict]:
    """Set up a run dir; on clean exit write provenance and then DONE. Yields a dict for extra provenance.
    With write=False (a process that is not the writer) nothing is written."""
    if write:
        path.mkdir(parents=True, exist_ok=True)
        atomic_write(path / "config.yaml", yaml.safe_dump(config, sort_keys=True))
    extra: dict = {}
    start = time.time()
    yield extra
    if not write:
        return
    write_json(
        path / "provenance.json",
        {
            **environment(device),
            "seeds": seeds,
            "start": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(start)),
            "end": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()),
            "wall_seconds": round(time.time() - start, 2),
            **extra,
        },
    )
    fault("run", path)
    atomic_write(path / "DONE", "")


def read_metrics(path: str | Path) -> dict | None:
    """metrics.json of a complete run, else None."""
    path = Path(path)
    if not is_complete(path) or damage(path):
        return None
    return json.loads((path / "metrics.json").read_text())
