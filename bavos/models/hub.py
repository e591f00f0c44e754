"""Where weights are kept, and the backbone's weights from timm's hub (through huggingface_hub and its cache).

Downloaded checkpoints live in bavos's cache (``$BAVOS_CACHE``, else ``$XDG_CACHE_HOME/bavos``, else
``~/.cache/bavos``). timm's DINO weights (``--checkpoint none``, ``bavos train``) are Hugging Face files: they are read
from Hugging Face's own cache, with no network call when there, else downloaded into it by ``huggingface_hub``
(``HF_HUB_CACHE``, ``HF_HUB_OFFLINE`` and ``HF_ENDPOINT`` work as in every Hugging Face tool).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bavos.errors import WeightsError

Download = Callable[[int, int | None], None]  # (bytes done, total bytes or None when unknown)
"""progress(bytes done, bytes in all or None)."""

HUB_FILES = ("model.safetensors", "pytorch_model.bin")  # what timm's Hugging Face repos hold, preferred first


def cache_dir() -> Path:
    """Where downloaded weights live: $BAVOS_CACHE, else $XDG_CACHE_HOME/bavos, else ~/.cache/bavos."""
    if os.environ.get("BAVOS_CACHE"):
        return Path(os.environ["BAVOS_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "bavos"


def hub_repo(name: str) -> str:
    """The Hugging Face repo holding a timm model's pretrained weights (``timm/vit_small_patch8_224.dino``).

    Raises:
        WeightsError: the model has no weights on the hub.
    """
    from timm.models import get_pretrained_cfg

    try:
        cfg = get_pretrained_cfg(name)
    except (RuntimeError, ValueError):
        cfg = None
    if cfg is None or not cfg.hf_hub_id:
        raise WeightsError(f"{name} has no pretrained weights on timm's hub; pass --backbone-weights PATH")
    return cfg.hf_hub_id.split("@")[0]


def _reporting(progress: Download) -> type:
    """A tqdm class for huggingface_hub that reports bytes to ``progress`` instead of drawing a bar."""
    from tqdm.auto import tqdm

    class Reporting(tqdm):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)
            self.total, self.done = kwargs.get("total"), 0

        def update(self, n: float | None = 1) -> bool | None:
            self.done += int(n or 0)
            progress(self.done, self.total)
            return None

    return Reporting


def _reachable(endpoint: str, timeout: float = 3.0) -> None:
    """Open and close one connection to the hub, so that a machine without network hears it at once:
    huggingface_hub retries a failed connection five times over about 25 s before it gives up.

    Raises:
        OSError: the hub cannot be reached.
    """
    import socket
    import urllib.parse

    url = urllib.parse.urlsplit(endpoint)
    with socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout):
        pass


def hub_weights(name: str, progress: Download | None = None, download_missing: bool = True) -> Path:
    """The hub weights of a timm model: from Hugging Face's cache (no network), else downloaded into it once.

    Raises:
        WeightsError: not cached and not downloadable, or ``download_missing`` is False and not cached (one line, with
            what to do).
    """
    import huggingface_hub
    from huggingface_hub import constants

    repo = hub_repo(name)
    for filename in HUB_FILES:
        cached = huggingface_hub.try_to_load_from_cache(repo, filename)
        if isinstance(cached, str):
            return Path(cached)
    if not download_missing:
        raise WeightsError(f"the weights of {name} are not in the cache ({constants.HF_HUB_CACHE})")
    try:
        if not constants.HF_HUB_OFFLINE:
            _reachable(constants.ENDPOINT)
        return Path(
            huggingface_hub.hf_hub_download(
                repo, HUB_FILES[0], tqdm_class=_reporting(progress) if progress is not None else None
            )
        )
    except (huggingface_hub.errors.HfHubHTTPError, huggingface_hub.errors.LocalEntryNotFoundError, OSError) as e:
        if isinstance(e, huggingface_hub.errors.LocalEntryNotFoundError):  # no connection (or offline), not cached
            reason = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else "no connection"
        elif not isinstance(e, huggingface_hub.errors.HfHubHTTPError):
            reason = f"no connection to {constants.ENDPOINT}: {e.strerror or e}"
        else:
            reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise WeightsError(
            f"the weights of {name} are not in the cache and could not be downloaded ({reason}); run "
            "`bavos weights` on a machine with a connection and copy its cache here, or pass --backbone-weights "
            "PATH (e.g. dino_deitsmall8_pretrain.pth); with neither, --backbone-weights none runs on random weights "
            "(meaningless masks)"
        ) from e
