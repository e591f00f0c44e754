"""Which weights a run uses, and the paper's checkpoint: cached, downloaded once, verified.

By default bavos runs the paper's method: the correlator of the authors' released checkpoint (``--checkpoint
release``), whose file also carries the DINO ViT-S/8 encoder used as the backbone. The file is downloaded once
from the authors' Google Drive link into the cache (``$BAVOS_CACHE``, else ``$XDG_CACHE_HOME/bavos``, else
``~/.cache/bavos``) and read from there without any network call afterwards.

Backbone weights, unless ``--backbone-weights`` is given: the release checkpoint's own ``encoder.*`` weights; for
a bavos checkpoint, the backbone it was trained with (recorded in it); without a checkpoint, timm's hub.
"""

from __future__ import annotations

import contextlib
import os
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bavos.config import DEFAULT_BACKBONE, ModelConfig
from bavos.errors import BavosError, CheckpointError
from bavos.io.files import hidden_sibling
from bavos.io.owners import sweep
from bavos.models.hub import Download, cache_dir

RELEASE_ID = "1UhSPueJGpV4di9SVlZDmz0KWkuigQApA"  # the authors' link in the release's README
RELEASE_FILE = "checkpoint_dino-s-8.pth"  # the name the release's start_eval.sh uses
RELEASE_PAGE = f"https://drive.google.com/file/d/{RELEASE_ID}/view"
RELEASE_URL = f"https://drive.google.com/uc?export=download&id={RELEASE_ID}"


def release_path() -> Path:
    """The cached file of the paper's checkpoint (it may not be there yet)."""
    return cache_dir() / RELEASE_FILE


class DownloadError(CheckpointError):
    """The paper's checkpoint is not cached and could not be downloaded."""


def download(url: str, dest: Path, progress: Download | None = None, timeout: float = 30.0) -> None:
    """Fetch ``url`` into ``dest`` with gdown, which follows Google Drive's confirmation page for large files (and
    fetches any other address as it is). gdown writes a partial file beside ``dest`` and moves it into place.

    Raises:
        DownloadError: no connection, an HTTP error, or a page where the file should be (Drive's quota, a removed
            file), in one line.
    """
    import gdown

    try:
        gdown.download(url=url, output=str(dest), quiet=True, progress=progress, timeout=timeout)
    except gdown.exceptions.FileURLRetrievalError as e:
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        if len(lines) > 1 and lines[0].endswith(":"):  # "Failed to retrieve file url:" and then the reason
            lines = lines[1:]
        reason = lines[0][:200] if lines else "no file behind the link"
        raise DownloadError(
            f"Google Drive did not give the file ({reason}); it may be over its download quota, try later"
        ) from e
    except OSError as e:  # requests' connection and HTTP errors are OSErrors
        import requests  # gdown's own dependency

        if isinstance(e, requests.exceptions.HTTPError):
            raise DownloadError(f"the server refused ({_first_line(e)})") from e
        host = urllib.parse.urlsplit(url).hostname or url
        raise DownloadError(f"no connection to {host}") from e
    finally:
        for partial in dest.parent.glob(f"{dest.name}*.part"):  # gdown's partial file, after a failure
            partial.unlink(missing_ok=True)


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]


def verify_release(path: Path) -> None:
    """Check that ``path`` is the paper's checkpoint: both parts load strictly into ViT-S/8 and the correlator."""
    from bavos.models.backbone import build_backbone
    from bavos.models.correlator import load_correlator

    build_backbone(DEFAULT_BACKBONE, str(path))
    load_correlator(path, dim=384, heads=8)


def cached_problem(path: Path) -> str | None:
    """Why the cached paper's checkpoint at ``path`` cannot be used (an incomplete file: a download cut short, or a
    copy that stopped), or None. Cheap: it reads the file's ends, not its weights."""
    from bavos.models.backbone import incomplete

    cut = incomplete(path)
    return None if cut is None else cut.removesuffix("; fetch it again")


# What random weights mean for each command's work
MEANINGLESS = "masks are meaningless (tests, benchmarks)"
LEARNS_NOTHING = "the correlator learns nothing useful"


def random_weights_note(
    outcome: str, checkpoint: str | None = None, option: str = "--checkpoint", python: bool = False
) -> str:
    """The one warning about a backbone with random weights, for segment, train and the Python API: set by
    ``--backbone-weights none``, or (``checkpoint`` given, as ``option`` named it) recorded by a checkpoint trained
    on such a backbone; ``outcome`` says what that means for the work."""
    none, hub = (
        ("backbone_weights='none'", "backbone_weights='hub'")
        if python
        else ("--backbone-weights none", "--backbone-weights hub")
    )
    if checkpoint is None:
        return f"{none}: the backbone has random weights; {outcome}"
    named = f"checkpoint={checkpoint!r}" if python else f"{option} {checkpoint}"
    return (
        f"{named}: that checkpoint was trained on a backbone with random weights (it records backbone weights "
        f"'none'), so this run uses random weights too: {outcome}; pass {hub} or a file for real ones"
    )


# What to do without the paper's checkpoint, by the option that asked for it (segment's, train's)
WITHOUT_RELEASE = {
    "--checkpoint": "Without it: --checkpoint none (the training-free mode) needs DINO's weights from timm's hub "
    "(downloaded once, or --backbone-weights FILE); offline with neither, --checkpoint none --backbone-weights none "
    "runs on random weights (meaningless masks)",
    "--init-from": "Without it: --init-from none trains a new correlator on DINO's weights from timm's hub "
    "(downloaded once, or --backbone-weights FILE); offline with neither, --backbone-weights none trains on random "
    "weights (it learns nothing useful)",
}


def release_checkpoint(progress: Download | None = None, option: str = "--checkpoint") -> Path:
    """The paper's checkpoint in the cache, downloaded (and verified) on first use; no network once cached. An
    incomplete file in the cache is downloaded again (and replaced only by a verified one).

    ``$BAVOS_RELEASE_URL`` replaces the Google Drive address (e.g. a mirror on a network without Drive).

    Raises:
        DownloadError: not cached and not downloadable; the message says where to put the file by hand, or what
            to give ``option`` (one of ``WITHOUT_RELEASE``) instead.
    """
    path = release_path()
    if path.is_file() and cached_problem(path) is None:
        return path
    url = os.environ.get("BAVOS_RELEASE_URL") or RELEASE_URL
    # named by this process (owners.owner_tag): what a killed download left (95 MB) goes with the next one
    tmp = hidden_sibling(path, "tmp")
    part = tmp.with_name(f"{tmp.name}-download")
    created = not path.parent.exists()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        sweep(path.parent)
        download(url, part, progress)
        verify_release(part)
        os.replace(part, path)
    except (BavosError, OSError) as e:
        reason = str(e).replace(str(part), "the downloaded file")
        there = f"in the cache is {cached_problem(path)}" if path.is_file() else "is not in the cache"
        raise DownloadError(
            f"the paper's checkpoint {there} and could not be downloaded: {reason}. "
            f"Download {RELEASE_PAGE} and save it as {path}, or pass {option} PATH. {WITHOUT_RELEASE[option]}"
        ) from e
    finally:
        part.unlink(missing_ok=True)
        if created and not path.is_file():
            with contextlib.suppress(OSError):
                path.parent.rmdir()  # a cache folder made for nothing is not left behind (only when empty)
    return path


@dataclass(frozen=True)
class WeightsPlan:
    """The weights a run uses and where each came from.

    Attributes:
        backbone: timm model name.
        backbone_weights: "hub", "none" or a weights file.
        backbone_weights_from: "--backbone-weights", "checkpoint" (the release's encoder, or what a bavos
            checkpoint was trained with) or "default" (timm's hub).
        checkpoint: "release", "none" or the checkpoint path as given.
        checkpoint_file: the correlator's file, None in the training-free mode.
        loaded: the checkpoint's contents (read once), or None.
    """

    backbone: str
    backbone_weights: str
    backbone_weights_from: str
    checkpoint: str
    checkpoint_file: Path | None
    loaded: dict[str, Any] | None = None

    @property
    def backbone_loaded(self) -> dict[str, Any] | None:
        """The checkpoint's contents when the backbone weights come from that same file (read once), else None."""
        same = self.checkpoint_file is not None and self.backbone_weights == str(self.checkpoint_file)
        return self.loaded if same else None

    def model_config(self, base: ModelConfig) -> ModelConfig:
        """``base`` with the backbone and its weights filled in as resolved."""
        from dataclasses import replace

        return replace(base, backbone=self.backbone, backbone_weights=self.backbone_weights)

    def random_note(self, python: bool = False, option: str = "--checkpoint", outcome: str = MEANINGLESS) -> str:
        """What a user is told of a backbone with random weights (``backbone_weights == "none"``): where that setting
        came from, in the command line's words (the checkpoint's ``option``) or, with ``python``, in keywords'."""
        from_checkpoint = self.checkpoint if self.backbone_weights_from == "checkpoint" else None
        return random_weights_note(outcome, from_checkpoint, option, python)

    def describe(self) -> dict[str, Any]:
        """What summary.json says of the weights."""
        return {
            "backbone": self.backbone,
            "backbone_weights": self.backbone_weights,
            "backbone_weights_from": self.backbone_weights_from,
            "correlator": self.checkpoint,
            "correlator_file": None if self.checkpoint_file is None else str(self.checkpoint_file),
        }


def recorded_model_config(obj: dict[str, Any] | None) -> dict[str, Any]:
    """The ModelConfig a bavos checkpoint was trained with ({} for the release's or older files)."""
    config = (obj or {}).get("config")
    if not isinstance(config, dict):
        return {}
    model = config.get("ModelConfig", {})
    return model if isinstance(model, dict) else {}


def plan_weights(cfg: ModelConfig, progress: Download | None = None, option: str = "--checkpoint") -> WeightsPlan:
    """Resolve the checkpoint (downloading the paper's if needed) and which backbone weights go with it; ``option``
    is the one that named the checkpoint (``release_checkpoint``'s)."""
    from bavos.models.correlator import read_checkpoint

    file: Path | None = None
    if cfg.checkpoint == "release":
        file = release_checkpoint(progress, option)
    elif cfg.checkpoint != "none":
        file = Path(cfg.checkpoint)
    loaded = read_checkpoint(file) if file is not None else None
    recorded = recorded_model_config(loaded)
    backbone = cfg.backbone or recorded.get("backbone") or DEFAULT_BACKBONE
    if cfg.backbone_weights:
        weights, source = cfg.backbone_weights, "--backbone-weights"
    elif loaded is not None and "model_state_dict" in loaded:
        weights, source = str(file), "checkpoint"  # the release's file carries its encoder
    elif recorded.get("backbone_weights"):
        weights, source = str(recorded["backbone_weights"]), "checkpoint"
    else:
        weights, source = "hub", "default"
    return WeightsPlan(backbone, weights, source, cfg.checkpoint, file, loaded)
