"""Model references: what `teacher_model`, `student_init` and `student` may name (an HF id, a local folder, or
`offline:<name>`, a packaged model), where each resolves to, and whether it can be reached before any heavy work
(a 3 s probe switches the Hub client to offline mode when there is no network)."""

from __future__ import annotations

import functools
import logging
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from huggingface_hub import constants
from transformers import AutoConfig

from . import assets
from .errors import ConfigError

log = logging.getLogger(__name__)


def resolve_model(ref: str) -> str:
    """`offline:<name>` -> cached folder, a local folder -> itself, anything else -> a Hub id (unchanged)."""
    if ref.startswith("offline:"):
        return str(assets.model_dir(ref.split(":", 1)[1]))
    return ref


def model_config(ref: str, network: bool = True):
    """The config.json of the model `ref` names, without its weights (None for 'random', or a Hub id in a dry
    run)."""
    if ref == "random" or (not network and not ref.startswith(("offline:", ".", "/", "~"))):
        return None
    return AutoConfig.from_pretrained(resolve_model(ref))


@functools.cache
def hub_offline() -> str | None:
    """Why this process works offline (cached Hub files only), or None when the Hub answers. Without
    HF_HUB_OFFLINE set, one TCP connect (3 s timeout) decides, once: an unreachable Hub then switches
    huggingface_hub to offline mode, so that each lookup fails at once instead of retrying for 25 s."""
    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout=3).close()
        return None
    except OSError as err:
        constants.HF_HUB_OFFLINE = True
        os.environ["HF_HUB_OFFLINE"] = "1"  # for datasets, imported later
        log.debug("%s is unreachable (%s): working offline, with cached Hub files only", constants.ENDPOINT, err)
        return f"{constants.ENDPOINT} is unreachable: {err}"


def check_model_reachable(ref: str, key: str, network: bool = True) -> None:
    """Fail fast, with one clear message, on a missing folder or an unreachable Hub id (before heavy work).
    With network=False (dry runs) a Hub id is accepted unchecked."""
    if ref == "random":
        return
    if ref.startswith("offline:"):
        name = ref.split(":", 1)[1]
        if name not in assets.offline_model_names():
            known = ", ".join("offline:" + n for n in assets.offline_model_names())
            raise ConfigError(f"{key}={ref!r}: unknown offline model; known: {known}")
        return
    if ref.startswith((".", "/", "~")) or os.sep in ref and Path(ref).exists():
        if not (Path(ref).expanduser() / "config.json").is_file():
            raise ConfigError(f"{key}={ref!r}: no HF model folder (config.json) there")
        return
    if not network:
        return
    offline = hub_offline()
    try:
        AutoConfig.from_pretrained(ref)
    except Exception as err:  # OSError, HTTP errors, offline mode
        raise ConfigError(
            f"{key}={ref!r} could not be loaded: not a local folder, and the Hugging Face Hub did not serve it "
            f"({offline or type(err).__name__ + ': ' + str(err).splitlines()[0][:160]}). Without network use a "
            "local folder or "
            f"one of: {', '.join('offline:' + n for n in assets.offline_model_names())}"
        ) from None
