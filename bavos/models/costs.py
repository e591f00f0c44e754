"""What a run will cost, said before it is paid: time and peak memory from the shapes and a short calibration.

Time: each stage's work is counted from the shapes (matrix-product flops, and elementwise passes over the
attention rows), and turned into seconds with two rates measured once per process on the device: a matrix product
and an elementwise pass of about the sizes the pipeline uses (a short calibration: docs/performance.md, "The
estimates"). The clustering's and the writing's work depend on the video (how many clusters each window holds,
how many the hierarchy keeps): the first estimate assumes ``CLUSTERS_PER_WINDOW``; the pipeline refines it after
the first window (its level-0 clusters) and after the hierarchy (every level's size), see :class:`ClusterCounts`.

Memory: the process's resident memory when the estimate is made (the libraries and the models), plus what the run
allocates: the queries kept in host memory (``--query-cache``), the key set, and the largest window's working set
(attention rows, their logarithms, the n x n distance and neighbour matrices) or the backbone's largest batch.
"""

from __future__ import annotations

import contextlib
import functools
import resource
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

CLUSTERS_PER_WINDOW = 16  # the clustering's data-dependent work is estimated for this many clusters per window
# Until the hierarchy is known: the global levels' distinct centroids (what the labels pass compares every token
# with) per level-0 cluster, also taken as each global level's size: just above the largest share
# ``benchmarks/bench_estimate.py`` measured over the cluster count (docs/performance.md, "The estimates").
DISTINCT_PER_LEVEL0 = 0.4
# The writing, in elementwise operations per decoded pixel: PNG, overlay and preview; and, when the output has more
# than one id, the bilinear upsampling of the ids and the many-coloured PNG and overlay (fitted to the demo's
# writing at one output id and at many: docs/performance.md, "Where the time goes on a CPU").
WRITE_PER_PIXEL = 200
WRITE_PER_PIXEL_IDS = 300
LEADER_BLOCK = 64  # candidate rows the leader pass asks for at once (bavos.pipeline.cluster)
# The clustering's lower bounds (bavos.pipeline.cluster.coarse_rows): key tokens summed into one bin; what a distance
# computed alone costs, in distances of a whole product (a sampled product reads both rows for each pair); and the
# exact distances a token needs per level once the bounds have ruled out the rest (docs/performance.md).
COARSE_BIN = 32
SAMPLED_PAIR_COST = 32
PAIRS_PER_TOKEN = 4
ATTENTION_BLOCK_BYTES = 256 * 2**20  # the attention's largest logit block (bavos.pipeline.attention)


@dataclass(frozen=True)
class Rates:
    """What the device does per second: float32 matrix-product flops and elementwise operations (each a read and a
    write of one float32)."""

    flops: float
    elementwise: float


@functools.lru_cache(maxsize=4)
def calibrate(device: torch.device) -> Rates:
    """Time a 1024 x 2048 x 1024 matrix product and exp/log passes over 8M floats on ``device`` (best of 5)."""
    seeded = torch.Generator(device=device).manual_seed(0)  # its own: the caller's random stream stays as it was
    a = torch.rand(1024, 2048, device=device, generator=seeded)
    b = torch.rand(2048, 1024, device=device, generator=seeded)
    x = torch.rand(8 * 2**20, device=device, generator=seeded)

    def best(fn: object) -> float:
        fn()  # type: ignore[operator]  # warm-up: library initialisation, allocations
        times = []
        for _ in range(5):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            fn()  # type: ignore[operator]
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - start)
        return min(times)

    matmul = best(lambda: a @ b)
    elementwise = best(lambda: x.exp_().log_())
    return Rates(flops=2 * 1024 * 2048 * 1024 / matmul, elementwise=2 * x.numel() / elementwise)


def _proc_bytes(path: str, field: str) -> int | None:
    """A ``field:  N kB`` line of a /proc file, in bytes (None where the file or the field is not there)."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def resident_bytes() -> int:
    """This process's resident memory now (0 where /proc is not there)."""
    return _proc_bytes("/proc/self/status", "VmRSS") or 0


AUTO_QUERY_CAP = 512 * 2**20  # --query-cache auto keeps at most this much in memory (and a tenth of what is free)
AUTO_QUERY_DISK_SHARE = 4  # on a CPU, auto keeps the queries on disk when they take at most 1/4 of the free space
DEVICE_QUERIES_SHARE = 0.25  # on a GPU, auto keeps them in its memory when they take at most this share of its free


@dataclass(frozen=True)
class QueryPlan:
    """Where the labels pass gets the frames' queries: up to ``memory`` bytes of them kept in host memory (in the
    device's with ``device``), or all of them in a temporary file (``disk``); the others are computed again."""

    memory: int = 0
    disk: bool = False
    device: bool = False


def query_plan(asked_mb: int | None, video_bytes: int, device: torch.device, folder: Path) -> QueryPlan:
    """How ``--query-cache`` keeps the frames' queries for the labels pass.

    Args:
        asked_mb: ``--query-cache`` in MB (kept in host memory), or None for auto. Auto, on a CPU: in a temporary file
            in ``folder`` when the video's take at most a quarter of its free space (writing and reading them back
            costs a small part of what the backbone costs on a CPU, and memory stays flat whatever the length).
            On a GPU (where the backbone is faster than a disk): in the device's memory when they take at most
            ``DEVICE_QUERIES_SHARE`` of what is free there (a 300-frame video's take 1.1 GB at 320x480). Else, and
            without the disk space: in host memory when they take at most min(AUTO_QUERY_CAP, a tenth of the
            available host memory), else not kept.
        video_bytes: the queries of every processed frame.
        folder: where the temporary file would go.
    """
    if asked_mb is not None:
        return QueryPlan(memory=asked_mb * 2**20)
    if every_query_plan(video_bytes, device):
        return QueryPlan(memory=video_bytes, device=True)
    if device.type == "cpu":
        folder = Path(folder).absolute()
        while not folder.exists() and folder != folder.parent:  # the output folder may not be made yet
            folder = folder.parent
        try:
            free = shutil.disk_usage(folder).free
        except OSError:
            free = 0
        if video_bytes <= free // AUTO_QUERY_DISK_SHARE:
            return QueryPlan(disk=True)
    room = min(AUTO_QUERY_CAP, (available_bytes(torch.device("cpu")) or 0) // 10)
    return QueryPlan(memory=video_bytes if video_bytes <= room else 0)


AUTO_ATTENTION_CAP = 512 * 2**20  # --attention-cache auto keeps at most this much (and a tenth of what is free)
DEVICE_ROWS_SHARE = 0.5  # ... on a GPU, at most this share of its free memory


def every_query_plan(video_bytes: int, device: torch.device) -> bool:
    """Whether pass 1 runs the backbone on every processed frame and keeps their queries (``video_bytes``) on the
    device: on a GPU, when they take at most ``DEVICE_QUERIES_SHARE`` of its free memory. The later passes then
    decode nothing and run no backbone (a CPU keeps its memory flat instead: its queries wait on disk)."""
    return device.type == "cuda" and video_bytes <= (available_bytes(device) or 0) * DEVICE_QUERIES_SHARE


def query_bytes(frames: int, tokens: int, width: int) -> int:
    """Bytes of the float32 queries of ``frames`` frames of ``tokens`` tokens of ``width`` (heads x head dim)."""
    return frames * tokens * width * 4


def attention_bytes(frames: int, tokens: int, keys: int) -> int:
    """Bytes of the float32 attention rows of ``frames`` frames of ``tokens`` tokens over ``keys`` key frames."""
    return frames * tokens * keys * tokens * 4


def attention_plan(asked_mb: int | None, video_bytes: int, device: torch.device) -> int:
    """Bytes of attention rows ``--attention-cache`` keeps from the hierarchy pass for the labels pass.

    Args:
        asked_mb: ``--attention-cache`` in MB (windows kept in order while they fit), or None for auto. Auto, on a
            CPU: every window's rows in host memory when the video's take at most min(AUTO_ATTENTION_CAP, a tenth
            of the available memory), else none (a part would cost that memory for a part of the time). The rows
            are the attention's result: keeping them saves the labels pass its attention, the largest part of its
            cost at few clusters (docs/performance.md, "The caches").
            On a GPU: every window's rows on the device when they take at most ``DEVICE_ROWS_SHARE`` of its free
            memory, else none; the rest is left to the windows' work and the backbone's batches.
        video_bytes: the rows of every window (processed frames x N x K*N x 4 bytes).
    """
    if asked_mb is not None:
        return asked_mb * 2**20
    free = available_bytes(device) or 0
    room = int(free * DEVICE_ROWS_SHARE) if device.type != "cpu" else min(AUTO_ATTENTION_CAP, free // 10)
    return video_bytes if video_bytes <= room else 0


CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")
# cgroup v2's files, then v1's: the limit, the use, and the use's part the kernel reclaims first (file pages)
CGROUP_FILES = {
    2: ("memory.max", "memory.current", "inactive_file"),
    1: ("memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file"),
}


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # cgroup v2 writes "max" for no limit


def _stat_field(path: Path, field: str) -> int:
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == field and value.strip().isdigit():
                return int(value)
    return 0


def _cgroup_room() -> int | None:
    """Memory this process's cgroups (a Slurm job's, a container's) leave it: the least over its cgroup and the
    ones above, of the limit less the use, the inactive file pages counted as free (None: no limit)."""
    try:
        lines = PROC_CGROUP.read_text().splitlines()
    except OSError:
        return None
    places = []
    for line in lines:
        if line.count(":") < 2:
            continue
        _, controllers, path = line.split(":", 2)
        if controllers == "" and (CGROUP_ROOT / "cgroup.controllers").exists():
            places.append((2, CGROUP_ROOT, path))
        elif "memory" in controllers.split(","):
            places.append((1, CGROUP_ROOT / "memory", path))
    rooms = []
    for version, base, path in places:
        limit_name, use_name, inactive = CGROUP_FILES[version]
        here = base / path.lstrip("/")
        here = here if here.is_dir() else base  # a container sees its own cgroup as the root
        for folder in (here, *[p for p in here.parents if base in (p, *p.parents)]):
            limit, use = _read_int(folder / limit_name), _read_int(folder / use_name)
            if limit is not None and use is not None and limit < 2**60:  # v1 writes a huge number for none
                rooms.append(max(0, limit - use + _stat_field(folder / "memory.stat", inactive)))
    return min(rooms) if rooms else None


def _address_room() -> int | None:
    """What ``ulimit -v`` (RLIMIT_AS) leaves this process's address space (None: no limit)."""
    limit = resource.getrlimit(resource.RLIMIT_AS)[0]
    if limit == resource.RLIM_INFINITY:
        return None
    return max(0, limit - (_proc_bytes("/proc/self/status", "VmSize") or 0))


def host_room() -> tuple[int | None, str]:
    """Memory the run can still take on the host and what bounds it: "this machine has" (MemAvailable), "its
    cgroup's limit leaves" or "ulimit -v leaves" where that is less (None: unknown)."""
    bounds = [
        (room, said)
        for room, said in (
            (_proc_bytes("/proc/meminfo", "MemAvailable"), "this machine has"),
            (_cgroup_room(), "its cgroup's memory limit leaves"),
            (_address_room(), "ulimit -v leaves"),
        )
        if room is not None
    ]
    return min(bounds, key=lambda b: b[0]) if bounds else (None, "this machine has")


def available_bytes(device: torch.device) -> int | None:
    """Memory the run can still take: free GPU memory on CUDA, else ``host_room`` (None when unknown)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    return host_room()[0]


@dataclass(frozen=True)
class Pace:
    """Measured seconds over estimated seconds of the work done so far, per kind: the run's own speed, which scales
    what is left (a calibration of a fraction of a second misreads a busy machine: docs/performance.md, "The
    estimates")."""

    backbone: float = 1.0
    clustering: float = 1.0
    labels: float | None = None  # the labels pass's assignment, once one of its windows is measured (else clustering)


@dataclass(frozen=True)
class Estimate:
    """Seconds per stage and peak memory (host; and device memory on CUDA)."""

    seconds: dict[str, float]
    peak_bytes: int
    device_peak_bytes: int | None = None
    passes: dict[str, float] = field(default_factory=dict)  # seconds of each pass over the video, in order
    queries_kept: int = 0  # bytes of queries kept for the labels pass (--query-cache)
    queries_total: int = 0  # bytes of the whole video's queries
    queries_on_disk: bool = False  # the kept queries wait in a temporary file (--query-cache auto on a CPU)
    frame_seconds: float = 0.0  # one frame's backbone (what the run's pace is measured against)
    window_seconds: float = 0.0  # one full window's attention and clustering in the hierarchy pass
    label_window_seconds: float = 0.0  # one full window's assignment to the global levels in the labels pass
    assigning: float = 0.0  # the labels pass's assignment in all (within the clustering's seconds and that pass's)
    backbone_passes: dict[str, float] = field(default_factory=dict)  # the backbone's seconds within each pass
    rows_kept: int = 0  # bytes of attention rows kept for the labels pass (--attention-cache)
    rows_total: int = 0  # bytes of the whole video's attention rows

    @property
    def total(self) -> float:
        return sum(self.seconds.values())

    def paced(self, pace: Pace) -> Estimate:
        """This estimate at the run's measured pace: the clustering's seconds scaled by ``pace.clustering`` (the
        labels pass's assignment by ``pace.labels`` where it was measured), the rest (the backbone's, and the
        writing's) by ``pace.backbone``. The clustering's pace also holds its fixed costs per window, which the count
        of its work leaves out: tens of times the estimate on small windows, where the writing, at the frames' own
        size, is not slower for it; and the assignment's lower bounds prune far fewer pairs where the centroids lie
        close together (docs/performance.md, "The estimates")."""
        labels = pace.clustering if pace.labels is None else pace.labels

        def clustering(total: float, assigning: float) -> float:
            return (total - assigning) * pace.clustering + assigning * labels

        seconds = {
            k: clustering(v, self.assigning) if k == "clustering" else v * pace.backbone
            for k, v in self.seconds.items()
        }
        passes = {
            k: v * pace.backbone
            if k == "writing"
            else (b := self.backbone_passes.get(k, 0.0)) * pace.backbone
            + clustering(v - b, self.assigning if k == "labels" else 0.0)
            for k, v in self.passes.items()
        }
        return replace(self, seconds=seconds, passes=passes)


@dataclass(frozen=True)
class ClusterCounts:
    """What the clustering's and the writing's cost depend on, as far as it is known.

    Attributes:
        per_window: level-0 clusters of a window (``CLUSTERS_PER_WINDOW`` until the first window is clustered).
        sizes: clusters at each real level 0..converged (None until the hierarchy is built).
        distinct: distinct centroids of the global levels (``bavos.pipeline.cluster.distinct_centroids``; None:
            ``DISTINCT_PER_LEVEL0`` per level-0 cluster until the hierarchy is built).
        ids: output ids of the cut level (None: the last level's size as far as known; ``--max-objects`` caps it).
    """

    per_window: float = CLUSTERS_PER_WINDOW
    sizes: tuple[int, ...] | None = None
    distinct: float | None = None
    ids: float | None = None


@dataclass(frozen=True)
class FrameSets:
    """Bytes held at the frames' own size, which the model's shapes do not show: a 4K frame is 25 MB in RGB.

    Attributes:
        model: on the host while the model works (decoded frames waiting in batches, a batch turned to float a
            few frames at a time).
        writing: on the host while the result is written (frames decoded ahead, frames and their ids waiting for
            the writer, the encoder's frames, a frame's working copies), besides ``WRITE_FIXED_BYTES``.
        device: on the device (a batch, and its float frames a few at a time).
    """

    model: int = 0
    writing: int = 0
    device: int = 0


WRITE_FIXED_BYTES = 160 * 2**20  # the writing pass at any frame size: the encoder, threads, the heap they leave


def vit_flops(tokens: int, dim: int = 384, depth: int = 12) -> float:
    """Forward flops of a ViT over ``tokens`` tokens (qkv, attention, projection, MLP of ratio 4, per block)."""
    return depth * (24 * tokens * dim * dim + 4 * tokens * tokens * dim)


def leader_rows(clusters: float, rows: int) -> float:
    """Candidate rows the greedy leader pass over ``rows`` rows asks for when it makes ``clusters`` groups: every
    leader, plus the rows of a block taken by a leader before them in it (fitted to the rows it asked for over the
    cluster count: docs/performance.md, "The estimates")."""
    return min(rows, max(clusters, LEADER_BLOCK + 20 * clusters**0.5))


def bounded_flops(rows: float, columns: float, m: int, pairs: float) -> float:
    """Flops of the distances of ``rows`` x ``columns`` pairs over ``m`` key tokens found through lower bounds: every
    pair's bound, and ``pairs`` exact distances computed alone."""
    return 4 * rows * columns * m / COARSE_BIN + 4 * m * pairs * SAMPLED_PAIR_COST


def window_work(
    n: int,
    m: int,
    dim: int,
    heads: int,
    distinct: float,
    per_window: float = CLUSTERS_PER_WINDOW,
    attention_again: float = 1.0,
    levels: int = 3,
) -> tuple[tuple[float, float], tuple[float, float], tuple[float, float]]:
    """(flops, elementwise operations) of one window of n rows over m key tokens in the hierarchy pass, in the
    labels pass, and of the labels pass's assignment alone (within the labels pass's), with ``per_window`` level-0
    clusters and ``distinct`` centroids over ``levels`` global levels; the labels pass computes the window's
    attention again with probability ``attention_again`` (0 where ``--attention-cache`` keeps its rows)."""
    attention = 2 * n * dim * m, 8 * heads * n * m  # q k^T of every head; in-place softmax passes
    # self-distances and smoothing (whole products); the leader pass and the level-0 labels through lower bounds
    hierarchy = (
        4 * n * n * m
        + bounded_flops(leader_rows(per_window, n), n, m, PAIRS_PER_TOKEN * n)
        + bounded_flops(per_window, n, m, PAIRS_PER_TOKEN * n)
    )
    assignment = bounded_flops(distinct, n, m, PAIRS_PER_TOKEN * n * levels)  # every global level's nearest
    assigning = assignment, 4 * n * m + 4 * distinct * n
    return (
        (attention[0] + hierarchy, attention[1] + 8 * n * m + 8 * n * n),
        (attention_again * attention[0] + assigning[0], attention_again * attention[1] + assigning[1]),
        assigning,
    )


def rounds_work(m: int, sizes: tuple[float, ...]) -> float:
    """Flops of the global rounds over clusters of ``sizes`` (level 0 first): the streamed first round bounds each
    level-0 cluster against the leaders so far (on average half of level 1); the round over each later level, its
    fresh rows (at most twice the clusters the round before merged away) against the level."""
    if len(sizes) < 2:
        return 0.0
    work = bounded_flops(sizes[0], sizes[1] / 2, m, PAIRS_PER_TOKEN * sizes[0])
    for below, level in zip(sizes[:-1], sizes[1:], strict=False):
        work += bounded_flops(min(level, 2 * (below - level)), level, m, PAIRS_PER_TOKEN * level)
    return work


def segment_estimate(
    frames: int,
    grid: tuple[int, int],
    keys: int,
    batch: int,
    window: int,
    device: torch.device,
    dim: int = 384,
    heads: int = 8,
    pixels: int = 0,
    cache_bytes: int = 0,
    queries: QueryPlan = QueryPlan(),
    counts: ClusterCounts = ClusterCounts(),
    max_objects: int = 0,
    frames_held: FrameSets = FrameSets(),
) -> Estimate:
    """What ``segment_video`` will cost.

    Args:
        frames: processed frames T (decoded frames / stride).
        grid: patch grid (h, w), N = h * w tokens a frame.
        keys: key frames K.
        batch: frames per backbone batch.
        window: frames per clustering window.
        dim, heads: token width and attention heads of what makes the queries and keys (the correlator's 8, or the
            backbone's own 6 in the training-free mode).
        pixels: pixels per decoded frame (for the writing pass).
        cache_bytes: what --attention-cache keeps of the rows (``attention_plan``).
        queries: what --query-cache keeps for the labels pass instead of running the backbone again.
        counts: the clusters, as far as they are known.
        max_objects: --max-objects (the output ids of a frame are at most this many; 0: no cap).
        frames_held: what the decoding and the writing hold at the frames' size.

    The returned ``frame_seconds`` and ``window_seconds`` are one frame's backbone and one full window's hierarchy
    pass (attention and clustering): what the run's measurements are compared with (``Estimate.paced``).
    """
    rates = calibrate(device)
    n_tokens = grid[0] * grid[1]
    m = keys * n_tokens
    windows = -(-frames // window)
    level0 = counts.sizes[0] if counts.sizes else windows * counts.per_window
    distinct = counts.distinct if counts.distinct is not None else DISTINCT_PER_LEVEL0 * level0
    sizes = counts.sizes or (level0, distinct, distinct, distinct)  # about three rounds until they are known
    ids = counts.ids if counts.ids is not None else sizes[-1]
    per_pixel = WRITE_PER_PIXEL + (WRITE_PER_PIXEL_IDS if min(ids, max_objects or ids) > 1 else 0)
    last_frames = frames - (windows - 1) * window
    window_rows, last_rows, rows_total = (attention_bytes(f, n_tokens, keys) for f in (window, last_frames, frames))
    full_kept = min(windows - 1, cache_bytes // window_rows)  # the cache keeps each window that still fits
    rows_kept = full_kept * window_rows + (last_rows if last_rows <= cache_bytes - full_kept * window_rows else 0)
    rows_share = rows_kept / rows_total if rows_total else 0.0  # of the windows: their attention is not recomputed
    levels = len(sizes) - 1
    full, last = (
        window_work(f * n_tokens, m, dim, heads, distinct, counts.per_window, 1 - rows_share, levels)
        for f in (window, last_frames)
    )  # each: (hierarchy pass, labels pass, the labels pass's assignment)

    def time_of(work: tuple[float, float]) -> float:
        return work[0] / rates.flops + work[1] / rates.elementwise

    per_frame = (vit_flops(n_tokens + 1) + 4 * n_tokens * dim * dim) / rates.flops
    per_window = time_of(full[0])
    hierarchy = (windows - 1) * per_window + time_of(last[0]) + rounds_work(m, sizes) / rates.flops
    labelling = (windows - 1) * time_of(full[1]) + time_of(last[1])
    assigning = (windows - 1) * time_of(full[2]) + time_of(last[2])
    video_queries = query_bytes(frames, n_tokens, dim)
    # the windows whose rows are kept need no queries; the others' queries on disk, or in memory while they fit
    in_memory = min(video_queries * (1 - rows_share), queries.memory)
    kept = video_queries * (1 - rows_share) if queries.disk else in_memory
    # key frames run through the backbone once (pass 1 keeps their queries); the others in pass 2, and again in
    # pass 3 for those whose queries (or rows) the caches do not keep
    again = (frames - keys) * max(0.0, 1 - rows_share - kept / video_queries)
    seconds = {
        "backbone": (frames + again) * per_frame,
        "clustering": hierarchy + labelling,
        "writing": frames * pixels * per_pixel / rates.elementwise,
    }
    backbone = {"keys": keys * per_frame, "hierarchy": (frames - keys) * per_frame, "labels": again * per_frame}
    passes = {
        "keys": backbone["keys"],
        "hierarchy": backbone["hierarchy"] + hierarchy,
        "labels": backbone["labels"] + labelling,
        "writing": seconds["writing"],
    }
    rows = min(window, frames) * n_tokens
    # rows and their logs (kept for the window's labels), smoothed rows and theirs; distances, neighbours; one
    # head's logits of a row block
    window_set = 4 * rows * m * 4 + 3 * rows * rows * 4 + min(ATTENTION_BLOCK_BYTES, rows * m * 4)
    backbone_set = batch * (n_tokens + 1) * 12 * dim * 4  # a block's activations (fused attention: no L x L)
    key_set = keys * n_tokens * dim * 4
    said = {
        "queries_kept": int(kept),
        "queries_total": video_queries,
        "queries_on_disk": queries.disk,
        "frame_seconds": per_frame,
        "window_seconds": per_window,
        "label_window_seconds": time_of(full[2]),
        "assigning": assigning,
        "backbone_passes": backbone,
        "rows_kept": rows_kept,
        "rows_total": rows_total,
    }
    # the writing's frames come on top of the model passes': the heap keeps much of their frames' blocks (those
    # under its mmap threshold, a 4K frame among them) however it is trimmed (measured, docs/performance.md)
    at_frame_size = frames_held.model + frames_held.writing + WRITE_FIXED_BYTES
    if device.type == "cuda":  # the kept rows stay on the device, and the queries kept there
        on_device = in_memory if queries.device else 0
        return Estimate(
            seconds,
            resident_bytes() + in_memory - on_device + 2 * key_set + at_frame_size,
            2 * key_set + max(window_set, backbone_set + frames_held.device) + rows_kept + on_device,
            passes,
            **said,
        )
    grow = in_memory + 3 * key_set + rows_kept  # kept queries and rows; the key frames' keys, their layout, queries
    return Estimate(
        seconds, resident_bytes() + grow + max(window_set, backbone_set) + at_frame_size, None, passes, **said
    )


def size_text(n: float) -> str:
    """A size in kB (at least 1) below 1 MB, in MB below 1 GB, else in GB: "4 kB", "44 MB", "1.4 GB"."""
    if n >= 2**30:
        return gigabytes(n)
    return f"{max(1, round(n / 2**20))} MB" if n >= 2**20 else f"{max(1, round(n / 2**10))} kB"


def gigabytes(n: float) -> str:
    return f"{n / 2**30:.1f} GB"


SEGMENT_OPTIONS = "lower --resolution, bound the key set with --max-key-frames, raise --stride or lower --batch-size"
TRAIN_OPTIONS = "lower --batch-size (clips per step) or --resolution"


def over_budget(estimate: Estimate, device: torch.device, options: str = SEGMENT_OPTIONS) -> str | None:
    """Why the run would not fit this machine's memory (one line naming the options that help), or None."""
    free = available_bytes(device)
    if free is None:
        return None
    if device.type == "cuda":
        need, kind = estimate.device_peak_bytes or 0, "GPU memory"
    else:
        need, kind = estimate.peak_bytes - resident_bytes(), "memory"
    if need <= free:
        return None
    has = "this machine has" if device.type == "cuda" else host_room()[1]
    caches = {
        "--attention-cache": estimate.rows_kept,
        "--query-cache": 0 if estimate.queries_on_disk else estimate.queries_kept,
    }
    kept = {option: size for option, size in caches.items() if size > 0}
    if device.type != "cuda" and kept and sum(kept.values()) >= need / 2:  # what the caches hold is most of it
        held = " and ".join(size_text(size) for size in kept.values())
        options = f"lower {' or '.join(kept)} (kept: {held}), or {options.removeprefix('lower ')}"
    return f"needs about {gigabytes(need)} more {kind}, {has} {gigabytes(free)} free; {options}"


def train_estimate(
    clips: int,
    frames: int,
    grid: tuple[int, int],
    steps: int,
    device: torch.device,
    dim: int = 384,
    heads: int = 8,
    with_cls: bool = True,
) -> Estimate:
    """What ``bavos train`` will cost: seconds per step and for ``steps`` steps, and peak memory.

    Args:
        clips: clips per step on this process.
        frames: frames per clip (3).
        grid: patch grid of the training resolution.
        heads: the correlator's.

    The correlator's attention over the clip's L = frames * (N + 1) tokens dominates. Its elementwise work
    (softmax and its gradient, the dropout's random draws, the losses' gathers) costs about 120 elementwise passes
    over (heads, L, L), fitted to measured CPU steps (``benchmarks/bench_train.py`` at 128x256 and 192x384); it
    keeps about 22 bytes per element for the backward pass (the probabilities, the dropout mask, the dropped-out
    map and their gradients).
    """
    rates = calibrate(device)
    n_tokens = grid[0] * grid[1]
    length = frames * (n_tokens + 1 if with_cls else n_tokens)
    backbone = frames * vit_flops(n_tokens + 1, dim)
    correlator = 3 * (24 * length * dim * dim + 4 * length * length * dim)  # forward and backward
    elementwise = 120 * heads * length * length
    step = clips * ((backbone + correlator) / rates.flops + elementwise / rates.elementwise)
    peak = resident_bytes() + clips * (22 * heads * length * length + frames * (n_tokens + 1) * 12 * dim * 4)
    return Estimate({"step": step, "run": step * steps}, peak, peak if device.type == "cuda" else None)
