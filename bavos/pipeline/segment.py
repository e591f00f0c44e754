"""The segmentation pipeline: video -> key frames -> attention window by window -> hierarchy -> labels.

Passes over the video, each a stream of frames, so that memory does not grow with the video's length:

1. keys: decode every frame, run the backbone on the key frames only (their keys are what every frame attends to);
2. hierarchy: decode, run the backbone on every processed frame and, window by window, compute the attention rows
   and cluster them (level 0 and the streamed first global round); then the remaining global rounds;
3. labels: the same rows again (from queries kept by ``--query-cache``, in memory or in a temporary file, or
   computed again) give every token its label at every level, written window by window to a temporary file;
4. writing (``bavos.pipeline.outputs``): decode again and write each frame's mask and overlay frame.

Host memory holds the key set, one window's rows and working set, the leaders of the first global round and the
levels above it (each bounded by the number of clusters, not the number of frames). Time grows linearly with the
number of frames when the key set is bounded (``--max-key-frames``, 30 by default: clips up to 300 processed frames
keep every key frame of the paper's setting).
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Generator, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from bavos.config import SegmentConfig
from bavos.errors import InputError
from bavos.io.background import Ahead
from bavos.io.sources import FrameSource
from bavos.io.video import Frame, VideoInfo
from bavos.models.costs import (
    ClusterCounts,
    Estimate,
    FrameSets,
    Pace,
    QueryPlan,
    attention_bytes,
    attention_plan,
    every_query_plan,
    query_bytes,
    query_plan,
    segment_estimate,
)
from bavos.models.devices import HeapTrimmer, strict_float32
from bavos.models.loading import PREPROCESS_CHUNK_BYTES, Models, frame_tokens
from bavos.pipeline.attention import key_frame_indices, window_attention
from bavos.pipeline.cluster import (
    MergeTree,
    MergeTreeBuilder,
    bins,
    cap_hierarchy,
    distinct_centroids,
    label_window,
    log_and_dots,
    neighbours,
)
from bavos.pipeline.masks import MAX_IDS_8BIT, ids_by_area, nearest_processed, upsample_ids
from bavos.pipeline.products import products
from bavos.pipeline.store import FrameLabels, LabelStore, QueryStore
from bavos.progress import Callback, Progress, as_progress

Estimates = Callable[[str, Estimate], None]
"""estimates(what the run learnt, the whole run's estimate refined with it) (``analyse``)."""


class _Clock:
    """Seconds spent per kind of work: ``with clock("backbone"): ...``; and, per pass, the seconds the model waited
    for decoded frames (``waits``) and spent decoding (``decode``).

    On CUDA each interval is a pair of CUDA events, read once the device has passed them (``seconds``): timing a
    stage never makes the host wait for the device, which would stall the work queued behind it.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._seconds: dict[str, float] = {}
        self._paced = 0.0  # the backbone's seconds after its first batch (see run_pace)
        self._pending: list[tuple[str, bool, torch.cuda.Event, torch.cuda.Event]] = []  # kind, paced, start, end
        self.waits: dict[str, float] = dict.fromkeys(("keys", "hierarchy", "labels"), 0.0)  # 0: nothing decoded
        self.decode = 0.0
        self.batches = 0  # backbone batches run
        self.paced_frames = 0  # the backbone's frames after its first batch

    @contextmanager
    def backbone(self, frames: int) -> Iterator[None]:
        """``with clock.backbone(frames): ...``: time a backbone batch of ``frames`` frames."""
        paced = self.batches > 0  # the first batch pays the libraries' and the device's warm-up: not the run's pace
        with self._timed("backbone", paced):
            yield
        self.paced_frames += frames if paced else 0
        self.batches += 1

    def __call__(self, kind: str) -> AbstractContextManager[None]:
        return self._timed(kind, False)

    @contextmanager
    def _timed(self, kind: str, paced: bool) -> Iterator[None]:
        if self.device.type == "cuda":
            stream = torch.cuda.current_stream(self.device)  # the run's device, which need not be the current one
            start = torch.cuda.Event(enable_timing=True)
            start.record(stream)
            yield
            end = torch.cuda.Event(enable_timing=True)
            end.record(stream)
            self._pending.append((kind, paced, start, end))
            while self._pending and self._pending[0][3].query():  # those the device has passed: no wait
                self._count(*self._pending.pop(0))
            return
        began = time.perf_counter()
        yield
        self._add(kind, paced, time.perf_counter() - began)

    def _add(self, kind: str, paced: bool, seconds: float) -> None:
        self._seconds[kind] = self._seconds.get(kind, 0.0) + seconds
        self._paced += seconds if paced else 0.0

    def _count(self, kind: str, paced: bool, start: torch.cuda.Event, end: torch.cuda.Event) -> None:
        end.synchronize()
        self._add(kind, paced, start.elapsed_time(end) / 1000)

    def _settle(self) -> None:
        while self._pending:
            self._count(*self._pending.pop(0))

    @property
    def seconds(self) -> dict[str, float]:
        """Seconds per kind so far (on CUDA, once the device has done the work timed)."""
        self._settle()
        return dict(self._seconds)

    @property
    def paced_seconds(self) -> float:
        """The backbone's seconds after its first batch."""
        self._settle()
        return self._paced

    def frames(self, ahead: Ahead, stage: str) -> None:
        """Count a finished stream of frames of pass ``stage``."""
        self.waits[stage] = self.waits.get(stage, 0.0) + ahead.waited
        self.decode += ahead.busy


@dataclass
class Keys:
    """The key frames of a video and what pass 1 learnt of it.

    Attributes:
        k: (K, heads, N, d) float32 keys of the key frames, on the models' device.
        positions: processed-frame position of each key frame.
        decoded: number of decoded frames.
        grid: patch grid (h, w), N = h * w.
        q: processed-frame position -> (heads, N, d) float32 queries of that key frame, in host memory (computed
            with its keys, so passes 2 and 3 need not run the backbone on key frames again); of every processed
            frame, on the device, where pass 1 kept them all (``costs.every_query_plan``).
    """

    k: Tensor
    positions: list[int]
    decoded: int
    grid: tuple[int, int]
    q: dict[int, Tensor] = field(default_factory=dict)

    def processed(self, stride: int) -> int:
        """Number of processed frames (every ``stride``-th decoded frame)."""
        return -(-self.decoded // stride)


@dataclass
class _Batch:
    """Frames for the backbone: (B, H, W, 3) uint8 ``images`` (pinned for a copy to CUDA), the processed
    ``positions`` of its frames, and the frames ``decoded`` so far. A batch with no images only counts frames."""

    positions: list[int]
    images: Tensor | None
    decoded: int


AHEAD = 2  # batches decoded ahead of the backbone
TICK = 16  # frames between progress counts when no batch is made


def _stack(images: list[np.ndarray], pin: bool) -> Tensor:
    batch = torch.from_numpy(np.stack(images))
    return batch.pin_memory() if pin else batch


def _batches(source: FrameSource, cfg: SegmentConfig, wanted: Callable[[int], bool], pin: bool) -> Iterator[_Batch]:
    """Batches of the processed frames ``wanted`` keeps, in order; a count every TICK frames; a last count."""
    positions: list[int] = []
    images: list[np.ndarray] = []
    decoded = 0
    for frame in source.frames():
        decoded += 1
        if frame.index % cfg.frame_stride == 0 and wanted(frame.index // cfg.frame_stride):
            positions.append(frame.index // cfg.frame_stride)
            images.append(frame.image)
            if len(images) == cfg.batch_size:
                batch = _Batch(positions, _stack(images, pin), decoded)
                positions, images = [], []  # the frames live on in the batch only while it waits
                yield batch
                continue
        if decoded % TICK == 0:
            yield _Batch([], None, decoded)
    if images:
        yield _Batch(positions, _stack(images, pin), decoded)
    yield _Batch([], None, decoded)


def _frames_ahead(source: FrameSource, models: Models, cfg: SegmentConfig, wanted: Callable[[int], bool]) -> Ahead:
    """_batches decoded in a background thread (in this one with ``cfg.background`` off)."""
    pin = models.device.type == "cuda"
    return Ahead(lambda: _batches(source, cfg, wanted, pin), AHEAD if cfg.background else 0)


def key_pass(source: FrameSource, models: Models, cfg: SegmentConfig, clock: _Clock, progress: Progress) -> Keys:
    """Pass 1: count the frames and compute the key frames' keys (again for a video whose container miscounts).

    On a GPU with room for every processed frame's queries (``costs.every_query_plan``), the backbone runs on every
    frame here and keeps their queries on the device: the later passes then decode nothing and run no backbone.
    """
    cfg.check_patch(models.backbone.patch_size)
    announced = source.frames_expected()  # announced, or the packets counted: pass 1 then needs no second run
    chosen = (
        set(key_frame_indices(-(-announced // cfg.frame_stride), cfg.key_ratio, cfg.key_frame_bound))
        if announced
        else set()
    )
    patch = models.backbone.patch_size
    grid = (cfg.model_size[0] // patch, cfg.model_size[1] // patch)
    every = False  # every processed frame's queries kept on the device
    if announced:
        video = query_bytes(-(-announced // cfg.frame_stride), grid[0] * grid[1], models.backbone.embed_dim)
        every = every_query_plan(video, models.device)
    computed: dict[int, tuple[Tensor, Tensor]] = {}  # position -> (q, k) in host memory (on the device: every)
    queries: dict[int, Tensor] = {}  # position -> q of every processed frame, on the device (every)
    if chosen:  # "keys 48/48 frames" counts frames read
        which = "every frame" if every else f"the {len(chosen)} key frame{'s' * (len(chosen) != 1)}"
        progress.describe("keys", f"decoding every frame, the backbone on {which}")

    def run(wanted: Callable[[int], bool], count: bool) -> int:
        frames = 0
        with _frames_ahead(source, models, cfg, wanted) as batches:
            if count:  # the first run: the device warms up while the first frames are decoded
                warm_up(models, cfg, clock)
            for batch in batches:
                frames = batch.decoded
                if count:
                    progress("keys", frames, announced)
                if batch.images is None:
                    continue
                with clock.backbone(len(batch.images)):
                    q, k = frame_tokens(models, cfg, batch.images)
                for i, p in enumerate(batch.positions):
                    if every:
                        queries[p] = q[i]
                    if p in chosen or not every:  # a key frame's keys apart from their batch's, which goes
                        computed[p] = (q[i], k[i].clone()) if every else (q[i].cpu(), k[i].cpu())
            clock.frames(batches, "keys")
        return frames

    decoded = run((lambda position: True) if every else chosen.__contains__, True)
    if not decoded:
        raise InputError(f"{source.path}: no frames were decoded")
    final = key_frame_indices(-(-decoded // cfg.frame_stride), cfg.key_ratio, cfg.key_frame_bound)
    missing = set(final) - set(computed)
    if missing:  # the container announced another frame count (or none)
        every = False  # its own frames' queries are all there; those of the keys run again may be on the host
        run(missing.__contains__, False)
    progress("keys", decoded, decoded)
    k = torch.stack([computed[p][1] for p in final]).to(models.device)
    if len(queries) == -(-decoded // cfg.frame_stride):  # every processed frame's: no frame needs the backbone again
        return Keys(k, final, decoded, grid, queries)
    return Keys(k, final, decoded, grid, {p: computed[p][0] for p in final})


def warm_up(models: Models, cfg: SegmentConfig, clock: _Clock) -> None:
    """On CUDA: the backbone on a blank batch of the run's size, and the attention's and the clustering's kernels
    on its tokens, so that the libraries' set-up (cuDNN's and cuBLAS's choices for these shapes, the Triton kernels'
    compilation or loading) is paid beside the decoding of the first frames rather than by the first window. Timed
    as "warm-up". Nothing elsewhere: a CPU has no such set-up."""
    if models.device.type != "cuda":
        return
    h, w = cfg.model_size
    with clock("warm-up"):
        q, k = frame_tokens(models, cfg, torch.zeros(cfg.batch_size, h, w, 3, dtype=torch.uint8))
        rows = window_attention(q[:1], k[:1], models.scale).flatten(0, 1)  # (N, N)
        log, dots = log_and_dots(rows)
        neighbours(rows, log, dots, bins(rows), cfg.tau)


def query_windows(
    source: FrameSource,
    models: Models,
    cfg: SegmentConfig,
    clock: _Clock,
    stage: str,
    keys: Keys,
    skip: set[int] | None = None,
) -> Generator[tuple[int, Tensor | None], None, None]:
    """Every window's (w, heads, N, d) queries in order, on the models' device; None for the windows in ``skip``,
    whose frames are decoded but not run through the backbone. The key frames' queries come from ``keys.q`` (pass 1),
    the others from the backbone. ``stage`` names the pass in the clock's waits.

    Raises:
        InputError: the video gave fewer frames than in pass 1.
    """
    skip = skip or set()
    total = keys.processed(cfg.frame_stride)

    def wanted(position: int) -> bool:
        return position // cfg.window not in skip and position not in keys.q

    def computed() -> Generator[
        tuple[int, Tensor], None, None
    ]:  # (position, queries) of the frames run through the backbone
        with _frames_ahead(source, models, cfg, wanted) as batches:
            for batch in batches:
                if batch.images is None:
                    continue
                with clock.backbone(len(batch.images)):
                    q, _ = frame_tokens(models, cfg, batch.images)
                yield from zip(batch.positions, q, strict=True)
            clock.frames(batches, stage)

    stream = computed()
    wanted_any = any(wanted(position) for position in range(total))  # else nothing is decoded at all
    try:
        for window in range(-(-total // cfg.window)):
            if window in skip:
                yield window, None
                continue
            rows = []
            for position in range(window * cfg.window, min((window + 1) * cfg.window, total)):
                if position in keys.q:
                    rows.append(keys.q[position].to(models.device, non_blocking=True))
                    continue
                got, q = next(stream, (None, None))
                if got != position or q is None:
                    raise InputError(
                        f"{source.path}: decoding gave other frames than in the first pass "
                        f"(frame {position} of {total} expected)"
                    )
                rows.append(q)
            yield window, torch.stack(rows)
        if wanted_any:
            next(stream, None)  # ends the stream: its waits are counted
    finally:
        stream.close()


@dataclass
class Analysis:
    """Everything known about a video after clustering (passes 1 to 3).

    Attributes:
        labels: (processed frames, levels, N) labels at every level, in a temporary file.
        mapping: cluster index at the cut level -> output id (-1: no token chose it); ids by decreasing area.
    """

    info: VideoInfo
    keys: Keys
    hierarchy: MergeTree
    labels: FrameLabels
    mapping: np.ndarray
    stride: int
    areas: list[np.ndarray] = field(default_factory=list)  # per level, the tokens of each cluster
    timings: dict[str, float] = field(default_factory=dict)  # seconds per kind of work (summary.json's timings)
    waits: dict[str, float] = field(default_factory=dict)  # per pass, seconds the model waited for frames
    seconds: float = 0.0  # wall time of passes 1 to 3
    peak_gpu_mb: float | None = None  # CUDA memory allocated at most during passes 1 to 3 (None: not on CUDA)
    device: torch.device = torch.device("cpu")  # the model's: a GPU upsamples the masks in pass 4 (iter_masks)

    @property
    def decoded(self) -> int:
        return self.keys.decoded

    @property
    def processed(self) -> int:
        return self.keys.processed(self.stride)

    @property
    def grid(self) -> tuple[int, int]:
        return self.keys.grid

    @property
    def id_dtype(self) -> type:
        return np.uint8 if int(self.mapping.max()) < MAX_IDS_8BIT else np.uint16

    def ids(self, position: int) -> np.ndarray:
        """(h, w) output ids of processed frame ``position`` (0 = the largest cluster)."""
        labels = self.labels.frame(position)[self.hierarchy.cut]
        return self.mapping[labels].astype(self.id_dtype).reshape(self.grid)

    def close(self) -> None:
        self.labels.close()


def _temp_path(folder: Path, stem: str) -> Path:
    """A new file for a temporary store, unique across processes."""
    handle, name = tempfile.mkstemp(prefix=f".bavos-{stem}-", dir=folder)
    os.close(handle)
    return Path(name)


class _WindowCache:
    """Windows' tensors kept from the hierarchy pass for the labels pass, within a byte budget (windows in order);
    copied to host memory with ``host``."""

    def __init__(self, budget: int, host: bool = False) -> None:
        self.room, self.host = budget, host
        self.kept: dict[int, Tensor] = {}

    def offer(self, window: int, x: Tensor) -> bool:
        """Keep ``x`` if it fits what is left of the budget; whether it was kept."""
        if x.nbytes > self.room:
            return False
        self.kept[window] = x.cpu() if self.host else x
        self.room -= x.nbytes
        return True

    def take(self, window: int) -> Tensor | None:
        return self.kept.pop(window, None)


class _QueryCache:
    """The frames' queries kept from the hierarchy pass for the labels pass: in host memory (or where they are, on
    the device, with ``on_device``) within a byte budget (windows in order), or in a temporary file
    (``QueryStore``)."""

    def __init__(self, budget: int, store: QueryStore | None, on_device: bool = False) -> None:
        self.memory, self.store = _WindowCache(budget, host=not on_device), store

    @property
    def kept(self) -> set[int]:
        return set(self.memory.kept) | (self.store.kept if self.store is not None else set())

    def offer(self, window: int, q: Tensor) -> None:
        if self.store is None or not self.store.offer(window, q):
            self.memory.offer(window, q)

    def take(self, window: int, read: bool = True) -> Tensor | None:
        """The window's queries, let go (None when not kept, or not ``read``: the rows were kept instead)."""
        q = self.memory.take(window)
        if self.store is None or q is not None:
            return q if read else None
        if not read:
            self.store.drop(window)
            return None
        return self.store.take(window)

    def close(self) -> None:
        if self.store is not None:
            self.store.close()


def analyse(
    source: FrameSource,
    models: Models,
    cfg: SegmentConfig,
    progress: Progress | Callback | None = None,
    workdir: Path | None = None,
    estimates: Estimates | None = None,
) -> Analysis:
    """Passes 1 to 3: the key frames, the hierarchy, and every token's label at every level.

    Args:
        workdir: where the labels' temporary file goes (default: the system's temporary folder); the caller
            closes the analysis (``Analysis.close``) to remove it.
        progress: told the stages "keys" (frames), "hierarchy" and "labels" (windows).
        estimates: called with the whole run's cost estimate (:func:`estimate_cost`) refined by what the run
            learns: after the first window ("the first window's N clusters") and after the hierarchy ("the
            hierarchy's N clusters"); not called for a video of unknown length.
    """
    cuda = models.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(models.device)
    try:
        # attention and clustering in float32 whatever the networks' precision, the clustering's products as asked
        with strict_float32(models.device), products(cfg.products):
            resolved = cfg.for_device(models.device.type)
            analysis = _analyse(source, models, resolved, as_progress(progress), workdir, estimates)
        if cuda:
            analysis.peak_gpu_mb = torch.cuda.max_memory_allocated(models.device) / 2**20
        return analysis
    finally:
        if cuda:
            torch.cuda.empty_cache()  # the key set and windows' buffers go back to the device


def _analyse(
    source: FrameSource,
    models: Models,
    cfg: SegmentConfig,
    progress: Progress,
    workdir: Path | None,
    estimates: Estimates | None,
) -> Analysis:
    clock = _Clock(models.device)

    def refine(
        said: str, counts: ClusterCounts, windows_done: int, seconds: Callable[[], float], labelled: int = 0
    ) -> None:
        """Say the whole run's estimate again with what is now known: its clusters, and its own pace so far (the
        backbone's frames, the ``seconds()`` of the windows' attention and clustering, and the assignment of the
        ``labelled`` windows of the labels pass, against their estimates). Asked for only when someone listens: on
        CUDA the clock's reading waits for the device."""
        if estimates is None:
            return
        estimate = estimate_cost(source, models, cfg, workdir, counts)
        if estimate is not None:
            estimates(said, estimate.paced(run_pace(clock, estimate, windows_done, seconds(), labelled)))

    def windows_seconds() -> float:
        return clock.seconds.get("attention", 0.0) + clock.seconds.get("clustering", 0.0)

    started = time.perf_counter()
    keys = key_pass(source, models, cfg, clock, progress)
    processed = keys.processed(cfg.frame_stride)
    windows = -(-processed // cfg.window)
    n = keys.grid[0] * keys.grid[1]
    trim = HeapTrimmer()  # after each window: the freed heap handed back when it piles up
    trim.release()

    builder = MergeTreeBuilder(cfg.tau, keep_level0=cfg.level == 0 and cfg.max_objects > 0)
    workdir = Path(workdir or tempfile.gettempdir())
    store0 = LabelStore(_temp_path(workdir, "level0"), 1, n)  # level-0 labels: kept on disk for pass 3
    video_rows = attention_bytes(processed, n, keys.k.shape[0])
    rows_cache = _WindowCache(attention_plan(cfg.attention_cache_mb, video_rows, models.device))
    video_queries = query_bytes(processed, n, models.backbone.embed_dim)
    every = len(keys.q) == processed  # pass 1 kept every frame's queries on the device
    plan = (
        QueryPlan()
        if rows_cache.room >= video_rows or every
        else query_plan(cfg.query_cache_mb, video_queries, models.device, workdir)
    )
    queries = _QueryCache(
        plan.memory, QueryStore(_temp_path(workdir, "queries")) if plan.disk else None, on_device=plan.device
    )
    windows_q = query_windows(source, models, cfg, clock, "hierarchy", keys)
    try:
        for index, q in windows_q:
            assert q is not None  # this pass skips no window
            with clock("attention"):
                rows = window_attention(q, keys.k, models.scale)  # (w, N, M)
            with clock("clustering"):
                labels0 = builder.add_window(rows.reshape(-1, rows.shape[-1]))
            store0.append(labels0.reshape(-1, 1, n))
            if index == 0:
                first_window = builder.level0_size
                refine(
                    f"the first window's {first_window} cluster{'s' * (first_window != 1)}",
                    ClusterCounts(per_window=first_window),
                    1,
                    windows_seconds,
                )
            if not rows_cache.offer(index, rows):  # kept rows need no queries in the labels pass
                queries.offer(index, q)
            del rows
            trim()
            progress("hierarchy", index + 1, windows)
        clustered = windows_seconds() if estimates is not None else 0.0  # the windows' alone, without the rounds
        with clock("clustering"):
            hierarchy = builder.finish(cfg.level)
        distinct = len(distinct_centroids(hierarchy)[0]) if hierarchy.converged else 0
        top = hierarchy.sizes[hierarchy.cut]
        known = ClusterCounts(builder.level0_size / windows, tuple(hierarchy.real_sizes), distinct, top)
        refine(f"the hierarchy's {top} cluster{'s' * (top != 1)}", known, windows, lambda: clustered)
        labels, areas = _label_pass(
            source,
            models,
            cfg,
            clock,
            keys,
            hierarchy,
            store0,
            queries,
            rows_cache,
            progress,
            workdir,
            trim,
            lambda done: refine(
                "the labels pass's first window" if done == 1 else f"the labels pass's first {done} windows",
                known,
                windows,
                lambda: clustered,
                labelled=done,
            ),
        )
        trim.release()  # the windows' buffers are not needed again: writing starts from a trimmed heap
    finally:
        windows_q.close()  # its decoding thread ends now, not when a traceback holding it goes
        store0.close()
        queries.close()
    timings = {"decode": clock.decode, **clock.seconds}
    info = replace(source.info, fps=cfg.fps) if source.info.is_folder else source.info
    analysis = Analysis(
        info,
        keys,
        hierarchy,
        CutLabels(labels, hierarchy.converged + 1),
        np.zeros(1, np.int64),
        cfg.frame_stride,
        areas,
        timings,
        dict(clock.waits),
        time.perf_counter() - started,
        device=models.device,
    )
    return capped_analysis(analysis, cfg.max_objects)  # as bavos recut caps it: one rule, one result


def capped_analysis(analysis: Analysis, max_objects: int) -> Analysis:
    """The analysis with its cut level capped at ``max_objects`` clusters (``cluster.cap_hierarchy``: the largest
    kept, the others merged into their nearest), the capped labels following the merge tree, and the output ids by
    area. Its hierarchy must hold the real levels only, and its labels be ``CutLabels`` of them."""
    hierarchy, areas, labels = analysis.hierarchy, list(analysis.areas), analysis.labels
    if not isinstance(labels, CutLabels):
        raise TypeError("capped_analysis: the labels must be CutLabels of the real levels")
    cut = hierarchy.cut
    parent = cap_hierarchy(hierarchy, areas[cut], max_objects)
    if parent is not None:
        areas.append(np.bincount(parent, weights=areas[cut], minlength=hierarchy.sizes[-1]).astype(np.int64))
        labels = CutLabels(labels.base, labels.real, cut, parent)
    return replace(analysis, labels=labels, areas=areas, mapping=ids_by_area(areas[hierarchy.cut]))


class CutLabels:
    """The labels of the real levels (0 .. converged) of some store, with a capped level computed on the fly."""

    def __init__(
        self, base: FrameLabels, real: int, capped_from: int | None = None, parent: np.ndarray | None = None
    ) -> None:
        self.base, self.real, self.capped_from, self.parent = base, real, capped_from, parent

    def frame(self, index: int) -> np.ndarray:
        rows = self.base.frame(index)[: self.real]  # (real levels, N)
        if self.parent is None:
            return rows
        capped = self.parent[rows[self.capped_from or 0]].astype(rows.dtype)
        return np.concatenate([rows, capped[None]])

    def close(self) -> None:
        self.base.close()


def _label_pass(
    source: FrameSource,
    models: Models,
    cfg: SegmentConfig,
    clock: _Clock,
    keys: Keys,
    hierarchy: MergeTree,
    store0: LabelStore,
    queries: _QueryCache,
    rows_cache: _WindowCache,
    progress: Progress,
    workdir: Path,
    trim: HeapTrimmer,
    labelled: Callable[[int], None],
) -> tuple[LabelStore, list[np.ndarray]]:
    """Pass 3: every token's label at every level, window by window, into a temporary file; and each cluster's
    token count, per level. ``labelled(done)`` is called after the first 1, 2, 4, 8, ... windows while more follow:
    the run's estimate then takes the pace of this pass's assignment, which the hierarchy pass does not tell, and
    which differs from window to window."""
    n = keys.grid[0] * keys.grid[1]
    windows = -(-keys.processed(cfg.frame_stride) // cfg.window)
    dtype = np.uint16 if max(hierarchy.sizes) <= 65536 else np.int32
    store = LabelStore(_temp_path(workdir, "labels"), len(hierarchy.sizes), n, dtype)
    areas = [np.zeros(size, dtype=np.int64) for size in hierarchy.sizes]
    kept = queries.kept | set(rows_cache.kept)  # these windows need neither decoding nor the backbone again
    decoded = query_windows(source, models, cfg, clock, "labels", keys, kept) if len(kept) < windows else None
    try:
        for index in range(windows):
            fresh = next(decoded)[1] if decoded is not None else None  # one item per window, in order
            rows = rows_cache.take(index)
            q = queries.take(index, read=rows is None)
            if rows is None:
                with clock("attention"):
                    q = q if q is not None else fresh
                    if q is None:  # neither kept nor decoded: the windows' order broke
                        raise RuntimeError(f"window {index}: no queries")
                    rows = window_attention(q.to(models.device), keys.k, models.scale)
            with clock("labels"):
                labels = label_window(
                    rows.reshape(-1, rows.shape[-1]), store0.window(index).reshape(-1), hierarchy
                )  # (levels, w * N)
            store.append(labels.reshape(len(hierarchy.sizes), -1, n).transpose(1, 0, 2))
            for level, counts in enumerate(areas):
                counts += np.bincount(labels[level], minlength=len(counts))
            del rows
            trim()
            if index + 1 < windows and (index + 1) & index == 0:  # a power of two
                labelled(index + 1)
            progress("labels", index + 1, windows)
        if decoded is not None:
            next(decoded, None)  # ends the stream: its waits are counted
    except BaseException:
        store.close()
        raise
    finally:
        if decoded is not None:
            decoded.close()
    return store, areas


FRAMES_AHEAD = 8  # frames decoded ahead of the masks in pass 4
MASKS_BEHIND = 8  # frames with their masks waiting for the writer thread at most
WRITE_THREADS_MAX = 8  # the pool that makes the frames' PNGs and overlay frames: at most this many threads


def write_threads() -> int:
    """Threads of the writing pool (with the background threads: ``outputs.write_frames``): the cores this process
    may use (its CPU affinity), at most ``WRITE_THREADS_MAX``. The model has finished when the writing starts, so
    they take no core from it."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # no affinity on this system
        cores = os.cpu_count() or 1
    return max(1, min(WRITE_THREADS_MAX, cores))


# a written frame's own working bytes per pixel beyond the queues: the encoder's frames (its lookahead, in 4:4:4 at
# worst), the ids at frame size, the overlay and the mask PNG (measured, docs/performance.md)
WRITE_BYTES_PER_PIXEL = 56


def iter_masks(
    source: FrameSource,
    analysis: Analysis,
    upsample: str,
    background: bool = True,
    waits: dict[str, float] | None = None,
) -> Generator[tuple[Frame, np.ndarray], None, None]:
    """Pass 4: every decoded frame with its (H, W) ids at frame size (upsampled on the analysis's device when it is
    a GPU: the same ids, without the CPU's time).

    Args:
        background: decode the frames ahead in a background thread.
        waits: gets ``"writing"``, the seconds spent waiting for decoded frames, and adds to ``"decode"`` the seconds
            spent decoding, when the frames end.
    """
    seen = 0
    device = analysis.device if analysis.device.type == "cuda" else None
    with Ahead(source.frames, FRAMES_AHEAD if background else 0) as frames:
        for frame in frames:
            seen += 1
            if seen > analysis.decoded:
                break
            ids = analysis.ids(nearest_processed(frame.index, analysis.stride, analysis.processed))
            yield frame, upsample_ids(ids, frame.image.shape[:2], upsample, device=device)
        if waits is not None:
            waits["writing"] = frames.waited
            waits["decode"] = waits.get("decode", 0.0) + frames.busy
    if seen < analysis.decoded:
        raise InputError(
            f"{source.path}: gives {seen} frames now, {analysis.decoded} when it was segmented: the "
            "video changed (or its end is damaged); segment it again"
        )


def run_pace(clock: _Clock, estimate: Estimate, windows: int, seconds: float, labelled: int = 0) -> Pace:
    """The run's pace so far: its backbone's seconds over the estimate's for the frames it ran after its first batch
    (which pays the warm-up, seconds on a GPU), the attention and clustering ``seconds`` of its first ``windows``
    windows over the estimate's for them, and the labels pass's assignment of its first ``labelled`` full windows
    over the estimate's; 1 (the labels': the clustering's) where nothing was measured yet."""
    backbone = clock.paced_frames * estimate.frame_seconds
    clustering = windows * estimate.window_seconds
    assigned, assigning = clock.seconds.get("labels", 0.0), labelled * estimate.label_window_seconds
    return Pace(
        clock.paced_seconds / backbone if backbone > 0 else 1.0,
        seconds / clustering if clustering > 0 and seconds > 0 else 1.0,
        assigned / assigning if assigning > 0 and assigned > 0 else None,
    )


def estimate_cost(
    source: FrameSource,
    models: Models,
    cfg: SegmentConfig,
    workdir: Path | None = None,
    counts: ClusterCounts | None = None,
) -> Estimate | None:
    """Time per stage and peak memory of segmenting ``source`` (``bavos.models.costs``), or None when its length is
    unknown. ``workdir``: where the temporary files will go (as for :func:`analyse`); ``counts``: the clusters as far
    as they are known (default: none known yet)."""
    cfg = cfg.for_device(models.device.type)
    expected = source.frames_expected()
    if not expected:
        return None
    frames = -(-expected // cfg.frame_stride)
    patch = models.backbone.patch_size
    keys = len(key_frame_indices(frames, cfg.key_ratio, cfg.key_frame_bound))
    grid = (cfg.model_size[0] // patch, cfg.model_size[1] // patch)
    n = grid[0] * grid[1]
    queries = query_plan(
        cfg.query_cache_mb,
        query_bytes(frames, n, models.backbone.embed_dim),
        models.device,
        Path(workdir or tempfile.gettempdir()),
    )
    rows = attention_plan(cfg.attention_cache_mb, attention_bytes(frames, n, keys), models.device)
    pixels = source.info.width * source.info.height
    return segment_estimate(
        frames,
        grid,
        keys,
        cfg.batch_size,
        cfg.window,
        models.device,
        models.backbone.embed_dim,
        models.heads,
        pixels,
        rows,
        queries,
        counts or ClusterCounts(),
        cfg.max_objects,
        frame_sets(pixels, min(expected, cfg.batch_size), bool(cfg.background)),
    )


def frame_sets(pixels: int, batch: int, background: bool) -> FrameSets:
    """Bytes held at the frames' own size (``pixels`` a frame), from the queues' lengths."""
    held = batch * ((AHEAD if background else 0) + 2)  # the batches waiting, the one made, the one in use
    floats = 4 * 3 * pixels * max(1, min(batch, PREPROCESS_CHUNK_BYTES // max(1, 12 * pixels)))
    ahead, behind = (FRAMES_AHEAD, MASKS_BEHIND) if background else (0, 0)
    pooled = write_threads() + 1 if background else 0  # frames with their ids and overlay frames in the pool
    return FrameSets(
        3 * pixels * held + floats,
        pixels * (3 * ahead + (3 + 2) * behind + (3 + 2 + 3) * pooled + WRITE_BYTES_PER_PIXEL),
        3 * pixels * batch + floats,
    )


def video_tokens(source: FrameSource, models: Models, cfg: SegmentConfig) -> tuple[Tensor, Tensor]:
    """Every processed frame's queries (T, heads, N, d) and the key set (K, heads, N, d): for tests and benchmarks
    on short videos (memory grows with the video)."""
    cfg = cfg.for_device(models.device.type)
    clock = _Clock(models.device)
    keys = key_pass(source, models, cfg, clock, as_progress(None))
    q = torch.cat([q for _, q in query_windows(source, models, cfg, clock, "hierarchy", keys) if q is not None])
    return q, keys.k


def source_id(path: str | Path) -> str:
    """The absolute path that identifies an input (recorded as ``source`` in summary.json)."""
    return str(Path(path).absolute().resolve())


def output_name(path: Path) -> str:
    """Output folder name of an input: the file stem, or the folder name of a frame folder, taken from the absolute
    path, so that ".", ".." and "clip/" name the folder itself (a link keeps its own name, as given)."""
    path = Path(os.path.abspath(path))
    return (path.name if path.is_dir() else path.stem) or "root"
