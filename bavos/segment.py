"""The segmentation pipeline: video -> backbone tokens -> attention -> clusters -> full-size masks.

Three streaming passes over the video: (1) decode and run the backbone, keeping only per-frame queries and the
key frames' keys; (2) cluster the attention window by window; (3) decode again and write each frame's mask and
overlay frame. Full-size frames are never all held in memory. Per-frame queries and the key-frame candidates'
keys wait in host memory; on a GPU the device holds the chosen key set and one window's queries at a time, so
its memory does not grow with the video's length beyond the key set.
"""

from __future__ import annotations

import ctypes
import functools
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from bavos.attention import AttentionWindows, key_frame_indices
from bavos.backbone import Backbone, build_backbone
from bavos.cluster import ClusterResult, cluster_video
from bavos.config import NORMALIZATION, ModelConfig, SegmentConfig, result_settings, to_dict
from bavos.correlator import Correlator, load_correlator
from bavos.costs import Estimate, segment_estimate
from bavos.devices import precision_context, resolve_device
from bavos.errors import ConfigError, InputError, OutputError, WeightsError
from bavos.render import overlay, write_mask
from bavos.video import Frame, OverlayWriter, VideoInfo, VideoSource
from bavos.weights import Progress as DownloadProgress
from bavos.weights import WeightsPlan, plan_weights

Progress = Callable[[str, int, int | None], None]
"""progress(stage, done, total): stages "decode", "backbone", "clustering", "writing"; total may be None."""

MAX_IDS_8BIT = 255  # ids 0..254 fit an 8-bit indexed PNG, 255 is DAVIS's void label
MAX_IDS = 65536  # more clusters than MAX_IDS_8BIT are written as 16-bit PNGs, ids 0..65535


def _no_progress(stage: str, done: int, total: int | None) -> None:
    return None


@dataclass
class Models:
    """The networks of a run, loaded once and reused for every input.

    Attributes:
        config: the model config as resolved (backbone name and weights filled in).
        weights: which weights were used and where each came from.
    """

    backbone: Backbone
    correlator: Correlator | None
    device: torch.device
    config: ModelConfig
    weights: WeightsPlan
    requested: ModelConfig  # the model config as asked (None: decided by the checkpoint)

    @property
    def scale(self) -> float:
        """Logit scale of the attention that is clustered."""
        return self.correlator.scale if self.correlator is not None else self.backbone.scale


def load_models(config: ModelConfig, device: str = "auto", index: int | None = None,
                progress: DownloadProgress | None = None, plan: WeightsPlan | None = None) -> Models:
    """Build the frozen backbone and the correlator (on CUDA device ``index``) as ``plan_weights`` resolves them.

    Args:
        progress: reports the download of the paper's checkpoint, when it is not cached yet.
        plan: the weights, when already planned (``plan_weights(config)``).
    """
    dev = resolve_device(device, index)
    plan = plan or plan_weights(config, progress)
    try:
        backbone = build_backbone(plan.backbone, plan.backbone_weights, plan.backbone_loaded, progress).to(dev)
    except WeightsError as e:
        if plan.backbone_weights_from != "checkpoint":
            raise
        raise WeightsError(f"{e} (the backbone weights recorded in {plan.checkpoint_file}; pass --backbone-weights "
                           "to use others)") from e
    correlator = None
    if plan.checkpoint_file is not None:
        correlator = load_correlator(plan.checkpoint_file, backbone.embed_dim, config.correlator_heads,
                                     plan.loaded).to(dev)
    return Models(backbone, correlator, dev, plan.model_config(config), replace(plan, loaded=None), config)


@dataclass
class Tokens:
    """Per-frame attention inputs of a video.

    Attributes:
        q: (T, heads, N, d) float32 queries of every processed frame, in host memory (moved per window).
        k: (K, heads, N, d) float32 keys of the key frames, on the models' device.
        grid: patch grid (h, w), N = h * w.
        processed: decoded index of each processed frame.
        decoded: number of decoded frames.
    """

    q: Tensor
    k: Tensor
    grid: tuple[int, int]
    processed: list[int]
    decoded: int
    timings: dict[str, float] = field(default_factory=dict)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (e.g. musl)
        return None


def release_free_heap() -> None:
    """Hand the C heap's free pages back to the OS (glibc's malloc_trim; nothing elsewhere).

    Each clustering window allocates and frees blocks of a few to tens of MB; glibc keeps freed heap pages
    resident, and long-lived small allocations between them stop it from reusing or returning them, so without
    this the resident memory grows window after window (330 MB over 128 windows at 160x224) although the live
    data does not.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def _preprocess(images: list[np.ndarray], cfg: SegmentConfig, device: torch.device) -> Tensor:
    """(H, W, 3) uint8 frames -> (B, 3, h, w) normalised, resized bilinearly (no antialiasing, as released)."""
    x = torch.from_numpy(np.stack(images)).to(device).permute(0, 3, 1, 2).float() / 255  # (B, 3, H, W)
    x = F.interpolate(x, size=cfg.resolution, mode="bilinear", align_corners=False, antialias=False)
    mean, std = (torch.tensor(v, device=device).view(1, 3, 1, 1) for v in NORMALIZATION[cfg.normalization])
    return (x - mean) / std


class _HostRows:
    """Tensors appended along their first dimension into one float32 host buffer.

    The buffer is sized from an expected count and grown by half when more rows come, so rows are never held
    twice (as concatenating per-batch copies at the end would) and no long-lived small copies are scattered over
    the heap between the backbone's transient tensors (which, at 0.8 MB per key frame, had fragmented it into
    about 10 MB of resident memory per key frame).
    """

    def __init__(self, expected: int) -> None:
        self.expected = max(1, expected)
        self.buffer: Tensor | None = None
        self.count = 0

    @property
    def rows(self) -> Tensor:
        """(count, ...) the rows appended so far."""
        assert self.buffer is not None, "no rows were appended"
        return self.buffer[: self.count]

    def append(self, x: Tensor) -> None:
        """Copy ``x`` (n, ...) from any device and dtype after the rows already there."""
        needed = self.count + x.shape[0]
        if self.buffer is None or needed > self.buffer.shape[0]:
            capacity = max(needed, self.expected if self.buffer is None else self.buffer.shape[0] * 3 // 2)
            grown = torch.empty(capacity, *x.shape[1:], dtype=torch.float32)
            if self.buffer is not None:
                grown[: self.count] = self.buffer[: self.count]
            self.buffer = grown
        self.buffer[self.count : needed].copy_(x)
        self.count = needed


class _TokenCollector:
    """Runs batches of frames through the backbone (and correlator) and keeps queries and key-frame keys.

    Queries of every frame and keys of every key-frame candidate (every ``key_ratio``-th frame) are host copies:
    views would keep the whole batch's q, k and v alive, and the device holds only the key set and one window's
    queries at a time.
    """

    def __init__(self, models: Models, cfg: SegmentConfig, expected: int | None) -> None:
        self.models, self.cfg = models, cfg
        expected = expected or 64
        self.q = _HostRows(expected)
        self.k = _HostRows(-(-expected // cfg.key_ratio))
        self.count = 0
        self.seconds = 0.0

    @torch.no_grad()
    def add(self, images: list[np.ndarray]) -> None:
        start = time.perf_counter()
        models = self.models
        x = _preprocess(images, self.cfg, models.device)
        with precision_context(models.device, self.cfg.precision):  # float32 unless bf16 / fp16 was asked for
            out = models.backbone(x)
            if models.correlator is not None:
                q, k = models.correlator.query_key(out.keys)  # (B, heads, N, d) each
            else:
                q, k = out.q, out.k
        self.q.append(q)
        candidates = [i for i in range(len(images)) if (self.count + i) % self.cfg.key_ratio == 0]
        if candidates:
            self.k.append(k[candidates])
        self.count += len(images)
        if models.device.type == "cuda":
            torch.cuda.synchronize(models.device)
        self.seconds += time.perf_counter() - start


def extract_tokens(source: VideoSource, models: Models, cfg: SegmentConfig, progress: Progress) -> Tokens:
    """Pass 1: decode every frame, feed every ``stride``-th frame to the backbone in batches."""
    cfg = cfg.for_device(models.device.type)
    cfg.check_patch(models.backbone.patch_size)
    total = source.info.frame_count
    expected = None if total is None else -(-total // cfg.stride)
    collector = _TokenCollector(models, cfg, expected)
    batch: list[np.ndarray] = []
    processed: list[int] = []
    decoded = 0
    start = time.perf_counter()
    for frame in source.frames():
        decoded += 1
        progress("decode", decoded, total)
        if frame.index % cfg.stride:
            continue
        batch.append(frame.image)
        processed.append(frame.index)
        if len(batch) == cfg.batch_size:
            collector.add(batch)
            batch = []
            progress("backbone", collector.count, expected)
    if batch:
        collector.add(batch)
    release_free_heap()
    if not processed:
        raise InputError(f"{source.path}: no frames were decoded")
    progress("backbone", collector.count, collector.count)
    keys = key_frame_indices(len(processed), cfg.key_ratio, cfg.max_key_frames)
    patch = models.backbone.patch_size
    grid = (cfg.resolution[0] // patch, cfg.resolution[1] // patch)
    timings = {"backbone": collector.seconds, "decode": time.perf_counter() - start - collector.seconds}
    # candidate j is frame j * ratio
    k = collector.k.rows[torch.tensor([i // cfg.key_ratio for i in keys])].to(models.device)
    return Tokens(collector.q.rows, k, grid, processed, decoded, timings)


def cluster_tokens(tokens: Tokens, models: Models, cfg: SegmentConfig, progress: Progress) -> ClusterResult:
    """Pass 2: attention window by window, hierarchical clustering, assignment of every token.

    The hierarchy and the assignment each go over every window's attention; up to ``cfg.attention_cache_mb`` of
    the first pass's rows are kept for the second instead of being computed again.
    """
    rows = AttentionWindows(tokens.q, tokens.k, models.scale, cfg.window, cache_bytes=cfg.attention_cache_mb * 2**20)
    done = 0

    def windows() -> Iterator[Tensor]:
        nonlocal done
        for window in rows:
            yield window.float()
            del window
            release_free_heap()
            done += 1
            progress("clustering", done, 2 * len(rows))

    return cluster_video(windows, cfg.tau, cfg.level, cfg.max_objects)


def relabel_by_area(labels: np.ndarray, clusters: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Renumber clusters by patch count, largest first (id 0 = background); absent clusters get -1.

    Args:
        labels: (T, N) cluster indices.
        clusters: number of clusters at that level (clusters no token chose still get a -1 entry).

    Returns:
        (T, N) ids, uint8 for up to 255 clusters (8-bit masks), else uint16 (16-bit masks), and the (clusters,) map
        from cluster index to id.
    """
    counts = np.bincount(labels.ravel(), minlength=clusters)
    present = np.flatnonzero(counts)
    if len(present) > MAX_IDS:
        raise ConfigError(f"{len(present)} clusters do not fit a 16-bit mask ({MAX_IDS} at most); "
                          "lower the count with --max-objects")
    order = present[np.argsort(-counts[present], kind="stable")]
    mapping = np.full(len(counts), -1, dtype=np.int64)
    mapping[order] = np.arange(len(order))
    return mapping[labels].astype(np.uint8 if len(present) <= MAX_IDS_8BIT else np.uint16), mapping


def _interp_matrix(out_size: int, in_size: int) -> Tensor:
    """(out, in) bilinear interpolation weights, as F.interpolate(mode="bilinear", align_corners=False)."""
    src = ((torch.arange(out_size, dtype=torch.float64) + 0.5) * (in_size / out_size) - 0.5).clamp_min(0)
    lo = src.floor().long().clamp_max(in_size - 1)
    hi = (lo + 1).clamp_max(in_size - 1)
    frac = (src - lo).to(torch.float32)
    m = torch.zeros(out_size, in_size)
    m[torch.arange(out_size), lo] += 1 - frac
    m[torch.arange(out_size), hi] += frac
    return m


def upsample_ids(ids: np.ndarray, size: tuple[int, int], mode: str, band: int = 256) -> np.ndarray:
    """Patch-grid ids (h, w) -> (H, W) ids at frame size, of the same dtype.

    "bilinear": each present id's mask is upsampled bilinearly and every pixel takes the id of the largest value
    (computed in bands of rows, so 4000x3000 frames stay in bounded memory); "nearest": nearest neighbour.
    """
    height, width = size
    grid = torch.from_numpy(ids.astype(np.int64))
    if mode == "nearest":
        up = F.interpolate(grid[None, None].float(), size=size, mode="nearest")[0, 0]
        return up.numpy().astype(ids.dtype)
    present = torch.unique(grid)
    if len(present) == 1:
        return np.full(size, int(present[0]), dtype=ids.dtype)
    masks = (grid[None] == present[:, None, None]).float()  # (k, h, w)
    rows, cols = _interp_matrix(height, grid.shape[0]), _interp_matrix(width, grid.shape[1])
    right = masks @ cols.T  # (k, h, W)
    out = np.empty(size, dtype=ids.dtype)
    for start in range(0, height, band):
        scores = torch.einsum("yh,khx->kyx", rows[start : start + band], right)  # (k, band, W)
        out[start : start + band] = present[scores.argmax(0)].numpy()
    return out


def nearest_processed(index: int, stride: int, count: int) -> int:
    """Position in the processed frames of the one nearest to decoded frame ``index`` (ties: the earlier)."""
    return min((2 * index + stride - 1) // (2 * stride), count - 1)


@dataclass
class Analysis:
    """Everything known about a video after clustering (passes 1 and 2)."""

    info: VideoInfo
    tokens: Tokens
    result: ClusterResult
    ids: np.ndarray  # (T, N) output ids (uint8, or uint16 above 255 clusters), 0 = background
    mapping: np.ndarray  # cluster index -> output id (-1 = absent)
    timings: dict[str, float]


def analyse(source: VideoSource, models: Models, cfg: SegmentConfig, progress: Progress = _no_progress) -> Analysis:
    """Passes 1 and 2: tokens, clustering, and area-ordered ids."""
    cfg = cfg.for_device(models.device.type)
    tokens = extract_tokens(source, models, cfg, progress)
    start = time.perf_counter()
    result = cluster_tokens(tokens, models, cfg, progress)
    ids, mapping = relabel_by_area(result.labels, result.sizes[result.level])
    timings = {**tokens.timings, "clustering": time.perf_counter() - start}
    info = replace(source.info, fps=cfg.fps) if source.info.is_folder else source.info
    return Analysis(info, tokens, result, ids, mapping, timings)


def iter_masks(source: VideoSource, analysis: Analysis, cfg: SegmentConfig) -> Iterator[tuple[Frame, np.ndarray]]:
    """Pass 3: every decoded frame with its (H, W) ids at frame size (the dtype of ``analysis.ids``)."""
    h, w = analysis.tokens.grid
    count = len(analysis.tokens.processed)
    seen = 0
    for frame in source.frames():
        seen += 1
        if seen > analysis.tokens.decoded:
            break
        grid = analysis.ids[nearest_processed(frame.index, cfg.stride, count)].reshape(h, w)
        yield frame, upsample_ids(grid, frame.image.shape[:2], cfg.upsample)
    if seen < analysis.tokens.decoded:
        raise InputError(f"{source.path}: the second decode gave {seen} frames, the first {analysis.tokens.decoded}")


def estimate_cost(source: VideoSource, models: Models, cfg: SegmentConfig) -> Estimate | None:
    """Time per stage and peak memory of segmenting ``source`` (``bavos.costs``), or None when its length is unknown."""
    cfg = cfg.for_device(models.device.type)
    if not source.info.frame_count:
        return None
    frames = -(-source.info.frame_count // cfg.stride)
    patch = models.backbone.patch_size
    keys = len(key_frame_indices(frames, cfg.key_ratio, cfg.max_key_frames))
    heads = models.correlator.heads if models.correlator is not None else models.backbone.num_heads
    return segment_estimate(frames, (cfg.resolution[0] // patch, cfg.resolution[1] // patch), keys, cfg.batch_size,
                            cfg.window, models.device, models.backbone.embed_dim, heads,
                            source.info.width * source.info.height, cfg.attention_cache_mb * 2**20)


def source_id(path: str | Path) -> str:
    """The absolute path that identifies an input (recorded as ``source`` in summary.json)."""
    return str(Path(path).absolute().resolve())


def output_name(path: Path) -> str:
    """Output folder name of an input: the file stem, or the folder name of a frame folder."""
    path = Path(path)
    return path.name if path.is_dir() else path.stem


def _write_outputs(source: VideoSource, analysis: Analysis, cfg: SegmentConfig, folder: Path,
                   progress: Progress) -> dict[str, Any]:
    """Write masks/, overlay.mp4 and hierarchy.npz into ``folder``; return per-id statistics."""
    info = analysis.info
    masks = folder / "masks"
    masks.mkdir()
    n_ids = int(analysis.ids.max()) + 1
    area = np.zeros(n_ids, dtype=np.int64)
    first = np.full(n_ids, -1, dtype=np.int64)
    last = np.full(n_ids, -1, dtype=np.int64)
    writer = OverlayWriter(folder / "overlay.mp4", info.width, info.height, info.fps, info.time_base) \
        if cfg.overlay else None
    try:
        for frame, ids in iter_masks(source, analysis, cfg):
            write_mask(masks / f"{frame.name}.png", ids)
            if writer is not None:
                writer.write(overlay(frame.image, ids, cfg.overlay_alpha), frame.pts)
            counts = np.bincount(ids.ravel(), minlength=n_ids)[:n_ids]
            area += counts
            seen = counts > 0
            first[seen & (first < 0)] = frame.index
            last[seen] = frame.index
            progress("writing", frame.index + 1, analysis.tokens.decoded)
    finally:
        if writer is not None:
            writer.close()
    if cfg.save_hierarchy:
        _save_hierarchy(folder / "hierarchy.npz", analysis)
    return {"area": area, "first": first, "last": last}


def _save_hierarchy(path: Path, analysis: Analysis) -> None:
    result = analysis.result
    with path.open("wb") as f:
        np.savez_compressed(
            f, labels=result.level_labels, sizes=np.array(result.sizes), level=result.level,
            converged=result.converged, grid=np.array(analysis.tokens.grid),
            processed=np.array(analysis.tokens.processed), output_ids=analysis.mapping,
            capped_from=-1 if result.hierarchy.capped_from is None else result.hierarchy.capped_from)


def _summary(source: VideoSource, analysis: Analysis, stats: dict[str, Any], cfg: SegmentConfig, models: Models,
             output: Path, timings: dict[str, float]) -> dict[str, Any]:
    from bavos import __version__

    info, result = analysis.info, analysis.result
    objects = [{"id": i, "area": int(stats["area"][i]), "first_frame": int(stats["first"][i]),
                "last_frame": int(stats["last"][i])} for i in range(len(stats["area"])) if stats["area"][i] > 0]
    return {
        "input": str(source.path), "source": source_id(source.path), "output": str(output),
        "frames": analysis.tokens.decoded,
        "processed_frames": len(analysis.tokens.processed), "fps": info.fps, "width": info.width,
        "height": info.height, "rotation": info.rotation,
        "objects": sum(1 for o in objects if o["id"] > 0), "background": objects[0] if objects else None,
        "object_stats": [o for o in objects if o["id"] > 0],
        "key_frames": int(analysis.tokens.k.shape[0]), "patch_grid": list(analysis.tokens.grid),
        "level": result.level, "converged_level": result.converged, "level_sizes": result.sizes,
        "capped_from": result.hierarchy.capped_from,
        "mode": "correlator" if models.correlator is not None else "training-free",
        "weights": models.weights.describe(), "settings": result_settings(models.requested, cfg),
        "device": str(models.device), "config": to_dict(models.config, cfg),
        "timings": {k: round(v, 4) for k, v in timings.items()}, "version": __version__,
    }


def _publish(tmp: Path, final: Path) -> None:
    """Move a finished temporary folder into place, replacing an older result."""
    old = final.with_name(f".{final.name}.bavos-old-{os.getpid()}")
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def segment_video(video: str | Path, output: str | Path = "out", config: SegmentConfig | None = None,
                  models: Models | None = None, model_config: ModelConfig | None = None,
                  progress: Progress = _no_progress, name: str | None = None) -> dict[str, Any]:
    """Segment one video (file or frame folder) into ``output/<name>/`` (default name: ``output_name``).

    Writes ``masks/*.png`` (one indexed PNG per decoded frame), ``overlay.mp4``, ``hierarchy.npz`` and, last,
    ``summary.json``, all in a temporary folder renamed into place at the end: an interrupted run leaves nothing
    that looks finished.

    Returns:
        The summary (also written to summary.json).
    """
    cfg = config or SegmentConfig()
    models = models or load_models(model_config or ModelConfig(), cfg.device)
    cfg = cfg.for_device(models.device.type)
    started = time.perf_counter()
    source = VideoSource(video)
    final = Path(output) / (name or output_name(source.path))
    analysis = analyse(source, models, cfg, progress)
    tmp = final.with_name(f".{final.name}.bavos-tmp-{os.getpid()}")
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    except OSError as e:
        raise OutputError(f"{final.parent}: cannot create the output folder ({e.strerror or e})") from e
    try:
        start = time.perf_counter()
        stats = _write_outputs(source, analysis, cfg, tmp, progress)
        timings = {**analysis.timings, "writing": time.perf_counter() - start, "total": time.perf_counter() - started}
        summary = _summary(source, analysis, stats, cfg, models, final, timings)
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        _publish(tmp, final)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise OutputError(f"{final}: cannot write outputs ({e.strerror or e})") from e
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return summary
