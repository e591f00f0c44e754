"""Which weights a run uses, and the paper's checkpoint: cached, downloaded once, verified.

By default bavos runs the paper's method: the correlator of the authors' released checkpoint (``--checkpoint
release``), whose file also carries the DINO ViT-S/8 encoder used as the backbone. The file is downloaded once
from the authors' Google Drive link into the cache (``$BAVOS_CACHE``, else ``$XDG_CACHE_HOME/bavos``, else
``~/.cache/bavos``) and read from there without any network call afterwards.

Backbone weights, unless ``--backbone-weights`` is given: the release checkpoint's own ``encoder.*`` weights; for
a bavos checkpoint, the backbone it was trained with (recorded in it); without a checkpoint, timm's hub.
"""

from __future__ import annotations

import html.parser
import http.cookiejar
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bavos.config import DEFAULT_BACKBONE, ModelConfig
from bavos.errors import BavosError, CheckpointError
from bavos.files import atomic_path

RELEASE_ID = "1UhSPueJGpV4di9SVlZDmz0KWkuigQApA"  # the authors' link in the release's README
RELEASE_FILE = "checkpoint_dino-s-8.pth"  # the name the release's start_eval.sh uses
RELEASE_PAGE = f"https://drive.google.com/file/d/{RELEASE_ID}/view"
RELEASE_URL = f"https://drive.google.com/uc?export=download&id={RELEASE_ID}"
CHUNK = 2**20

Progress = Callable[[int, int | None], None]
"""progress(bytes done, bytes in all or None)."""


def cache_dir() -> Path:
    """Where downloaded weights live: $BAVOS_CACHE, else $XDG_CACHE_HOME/bavos, else ~/.cache/bavos."""
    if os.environ.get("BAVOS_CACHE"):
        return Path(os.environ["BAVOS_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "bavos"


def release_path() -> Path:
    """The cached file of the paper's checkpoint (it may not be there yet)."""
    return cache_dir() / RELEASE_FILE


class DownloadError(CheckpointError):
    """The paper's checkpoint is not cached and could not be downloaded."""


class _ConfirmPage(html.parser.HTMLParser):
    """What a Google Drive page offers in place of a large file: the 'download anyway' form or link, and a title."""

    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.fields: dict[str, str] = {}
        self.link: str | None = None
        self.title = ""
        self._in_form = self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form" and a.get("id") == "download-form":
            self.action, self._in_form = a.get("action", ""), True
        elif tag == "input" and self._in_form and a.get("type") == "hidden" and a.get("name"):
            self.fields[a["name"]] = a.get("value", "")
        elif tag == "a" and "confirm=" in a.get("href", "") and self.link is None:
            self.link = a["href"]
        elif tag == "title":
            self._in_title = True

    def handle_endtag(self, tag: str) -> None:
        self._in_form = self._in_form and tag != "form"
        self._in_title = self._in_title and tag != "title"

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data.strip()


def _confirmed_url(page: str, url: str, jar: http.cookiejar.CookieJar) -> tuple[str | None, str]:
    """The URL that fetches the file behind a confirmation page (or None), and the page's title."""
    parser = _ConfirmPage()
    parser.feed(page)
    if parser.action:
        return f"{urllib.parse.urljoin(url, parser.action)}?{urllib.parse.urlencode(parser.fields)}", parser.title
    if parser.link:
        return urllib.parse.urljoin(url, parser.link), parser.title
    token = next((c.value for c in jar if c.name.startswith("download_warning")), None)
    if token:  # the older flow: the token in a cookie, sent back as confirm=
        sep = "&" if urllib.parse.urlparse(url).query else "?"
        return f"{url}{sep}confirm={urllib.parse.quote(token)}", parser.title
    return None, parser.title


def download(url: str, dest: Path, progress: Progress | None = None, timeout: float = 30.0) -> None:
    """Fetch ``url`` into ``dest`` (atomically), following Google Drive's confirmation page for large files.

    Raises:
        DownloadError: no connection, an HTTP error, or a page where the file should be.
        OutputError: ``dest`` cannot be written.
    """
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    opener.addheaders = [("User-Agent", "bavos (python urllib)")]
    for _ in range(4):
        try:
            response = opener.open(url, timeout=timeout)
        except urllib.error.HTTPError as e:
            raise DownloadError(f"HTTP {e.code} {e.reason} from {url}") from e
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", None) or e
            raise DownloadError(f"no connection ({reason})") from e
        with response:
            if "text/html" not in response.headers.get("Content-Type", ""):
                total = response.headers.get("Content-Length")
                _stream(response, dest, int(total) if total and total.isdigit() else None, progress)
                return
            page = response.read(4 * CHUNK).decode("utf-8", "replace")
            url, title = _confirmed_url(page, response.geturl(), jar)
        if url is None:
            raise DownloadError(f"Google Drive answered with a page, not the file ({title or 'no title'}); "
                                "it may be over its download quota, try later")
    raise DownloadError("Google Drive kept answering with confirmation pages")


def _stream(response: Any, dest: Path, total: int | None, progress: Progress | None) -> None:
    done = 0
    try:
        with atomic_path(dest) as tmp, open(tmp, "wb") as out:
            while chunk := response.read(CHUNK):
                out.write(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
            if total is not None and done != total:
                raise DownloadError(f"the connection closed after {done} of {total} bytes")
    except TimeoutError as e:
        raise DownloadError(f"the download stalled after {done} bytes") from e


def verify_release(path: Path) -> None:
    """Check that ``path`` is the paper's checkpoint: both parts load strictly into ViT-S/8 and the correlator."""
    from bavos.backbone import build_backbone
    from bavos.correlator import load_correlator

    build_backbone(DEFAULT_BACKBONE, str(path))
    load_correlator(path, dim=384, heads=8)


def release_checkpoint(progress: Progress | None = None) -> Path:
    """The paper's checkpoint in the cache, downloaded (and verified) on first use; no network once cached.

    ``$BAVOS_RELEASE_URL`` replaces the Google Drive address (e.g. a mirror on a network without Drive).

    Raises:
        DownloadError: not cached and not downloadable; the message says where to put the file by hand.
    """
    path = release_path()
    if path.is_file():
        return path
    url = os.environ.get("BAVOS_RELEASE_URL") or RELEASE_URL
    part = path.with_name(f"{RELEASE_FILE}.download-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        download(url, part, progress)
        verify_release(part)
        os.replace(part, path)
    except (BavosError, OSError) as e:
        reason = str(e).replace(str(part), "the downloaded file")
        raise DownloadError(f"the paper's checkpoint is not in the cache and could not be downloaded: {reason}. "
                            f"Download {RELEASE_PAGE} and save it as {path}, or pass --checkpoint PATH "
                            "(--checkpoint none: the training-free mode)") from e
    finally:
        part.unlink(missing_ok=True)
    return path


def _hf_cache() -> Path:
    """Hugging Face's hub cache, as its library finds it (read at each call, so the environment may change)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "hub"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "huggingface" / "hub"


def _hf_cached(repo: str, filename: str) -> Path | None:
    """The file of a Hugging Face repo in the local hub cache (refs/main -> snapshots/<commit>/filename), or None."""
    folder = _hf_cache() / f"models--{repo.replace('/', '--')}"
    try:
        commit = (folder / "refs" / "main").read_text().strip()
    except OSError:
        return None
    path = folder / "snapshots" / commit / filename
    return path if path.is_file() else None


def hub_sources(name: str) -> list[tuple[str, Path, Path | None]]:
    """(download URL, where bavos keeps it, where Hugging Face's cache already has it) for a timm model's weights.

    The timm hub's safetensors file first, then the model's original URL (DINO's backbone-only file for
    ``vit_small_patch8_224.dino``).
    """
    from timm.models import get_pretrained_cfg

    from bavos.errors import WeightsError

    try:
        cfg = get_pretrained_cfg(name)
    except (RuntimeError, ValueError):
        cfg = None
    if cfg is None or not (cfg.hf_hub_id or cfg.url):
        raise WeightsError(f"{name} has no pretrained weights on timm's hub; pass --backbone-weights PATH")
    sources = []
    if cfg.hf_hub_id:
        repo = cfg.hf_hub_id.split("@")[0]
        endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
        for filename in ("model.safetensors", "pytorch_model.bin"):
            sources.append((f"{endpoint}/{repo}/resolve/main/{filename}", cache_dir() / "hub" / repo / filename,
                            _hf_cached(repo, filename)))
    if cfg.url:
        sources.append((cfg.url, cache_dir() / "hub" / name / cfg.url.rsplit("/", 1)[-1], None))
    return sources


def hub_weights(name: str, progress: Progress | None = None, download_missing: bool = True) -> Path:
    """The hub weights of a timm model: from Hugging Face's cache or bavos's (no network), else downloaded once.

    Raises:
        WeightsError: not cached and not downloadable (one line, with what to do).
    """
    from bavos.errors import WeightsError

    sources = hub_sources(name)
    for _, ours, theirs in sources:
        for path in (theirs, ours):
            if path is not None and path.is_file():
                return path
    if not download_missing:
        raise WeightsError(f"the weights of {name} are not in the cache ({cache_dir() / 'hub'})")
    reasons = []
    for url, ours, _ in sources:
        try:
            ours.parent.mkdir(parents=True, exist_ok=True)
            download(url, ours, progress, timeout=10.0)
            return ours
        except (DownloadError, OSError) as e:
            reasons.append(str(e))
            if "no connection" in str(e):
                break  # the other sources are no nearer
    raise WeightsError(f"the weights of {name} are not in the cache and could not be downloaded ({reasons[-1]}); "
                       "run `bavos weights` where there is a connection, or pass --backbone-weights PATH "
                       "(e.g. dino_deitsmall8_pretrain.pth)")


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

    def describe(self) -> dict[str, Any]:
        """What summary.json says of the weights."""
        return {"backbone": self.backbone, "backbone_weights": self.backbone_weights,
                "backbone_weights_from": self.backbone_weights_from, "correlator": self.checkpoint,
                "correlator_file": None if self.checkpoint_file is None else str(self.checkpoint_file)}


def recorded_model_config(obj: dict[str, Any] | None) -> dict[str, Any]:
    """The ModelConfig a bavos checkpoint was trained with ({} for the release's or older files)."""
    config = (obj or {}).get("config")
    if not isinstance(config, dict):
        return {}
    model = config.get("ModelConfig", {})
    return model if isinstance(model, dict) else {}


def plan_weights(cfg: ModelConfig, progress: Progress | None = None) -> WeightsPlan:
    """Resolve the checkpoint (downloading the paper's if needed) and which backbone weights go with it."""
    from bavos.correlator import read_checkpoint

    file: Path | None = None
    if cfg.checkpoint == "release":
        file = release_checkpoint(progress)
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
