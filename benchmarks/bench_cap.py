"""What `--max-objects` keeps, under four rules, on a real clip in the weightless mode; and the cap's time.

    python benchmarks/bench_cap.py                                      # ../shared's dog clip, frames 0-29
    python benchmarks/bench_cap.py --video ../shared/data/davis-mini/JPEGImages/480p/blackswan --end 30
    python benchmarks/bench_cap.py --timing-only                        # the cap's seconds at 2,000 clusters

The clip is segmented once at this machine's defaults with ``--max-objects 0`` (the sharpened random weights of
``--checkpoint none --backbone-weights none``, which form many clusters as trained weights do); each rule then caps
the converged level's clusters at N (``--caps``) from their centroids and token counts:

- ``largest`` (bavos's, ``cluster.cap_by_area``): keep the N largest, merge every other into its nearest kept one;
- ``closest pair`` (bavos before, as it ran): merge the closest pair of centroids (unweighted mean) until N remain;
- ``ward``: merge the pair with the least ``a_i a_j / (a_i + a_j) * D(i, j)`` (area-weighted means);
- ``absorb``: merge the smallest cluster into its nearest (area-weighted mean), until N remain.

Printed per rule: each resulting object's share of the area and the frames it is present in (of the processed
ones), the objects present in a single frame, and the share the N largest objects hold besides the largest. Then
the seconds of the largest rule and the closest-pair rule on 2,000 random clusters over 18,000 key tokens (30 key
frames at 160x240), alternated, 3 rounds each.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from bavos.pipeline.cluster import cap_by_area, safe_log, sym_kl

ROOT = Path(__file__).resolve().parents[1]
DOG = ROOT.parent / "shared" / "videos" / "01_dog.mp4"
Rule = Callable[[torch.Tensor, np.ndarray, int], np.ndarray]


def _pairwise(c: torch.Tensor) -> torch.Tensor:
    dist = sym_kl(c, c)
    dist = (dist + dist.T) / 2
    return dist.fill_diagonal_(float("inf"))


def ward(c: torch.Tensor, areas: np.ndarray, n: int) -> np.ndarray:
    """Agglomerative merging down to ``n`` by Ward's cost, ``a_i a_j / (a_i + a_j) * D(i, j)``, area-weighted means
    (every merge rescans every pair: slow past a few thousand clusters); the group of each cluster."""
    c, a = c.clone(), torch.as_tensor(areas, dtype=c.dtype).clamp_min(1e-9)
    root = np.arange(len(c))
    alive = torch.ones(len(c), dtype=torch.bool)
    dist = _pairwise(c)
    for _ in range(max(0, len(c) - n)):
        cost = dist * (a[:, None] * a[None] / (a[:, None] + a[None]))
        flat = int(cost.argmin())
        i, j = sorted(divmod(flat, len(c)))
        c[i] = (a[i] * c[i] + a[j] * c[j]) / (a[i] + a[j])
        a[i] += a[j]
        alive[j] = False
        root[root == j] = i
        row = sym_kl(c[i : i + 1], c)[0].masked_fill(~alive, float("inf"))
        row[i] = float("inf")
        dist[i], dist[:, i], dist[j], dist[:, j] = row, row, float("inf"), float("inf")
    return np.unique(root, return_inverse=True)[1]


def absorb(c: torch.Tensor, areas: np.ndarray, n: int) -> np.ndarray:
    """The smallest cluster into its nearest, area-weighted, until ``n`` remain."""
    c, a = c.clone(), areas.astype(np.float64).copy()
    root = np.arange(len(c))
    alive = np.ones(len(c), dtype=bool)
    for _ in range(max(0, len(c) - n)):
        i = int(np.flatnonzero(alive)[np.argmin(a[alive])])
        others = torch.as_tensor(np.flatnonzero(alive & (np.arange(len(c)) != i)))
        j = int(others[int(sym_kl(c[i : i + 1], c[others])[0].argmin())])
        total = max(a[i] + a[j], 1e-9)
        c[j] = (a[i] * c[i] + a[j] * c[j]) / total
        a[j] += a[i]
        alive[i] = False
        root[root == i] = j
    return np.unique(root, return_inverse=True)[1]


RULES: dict[str, Rule] = {
    "largest": lambda c, a, n: cap_by_area(c, a, n)[1],
    "closest pair": lambda c, a, n: _old_merge_closest(c, n),
    "ward": ward,
    "absorb": absorb,
}


def segment(video: Path, end: str | None) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """The converged level's centroids (k, M), token counts (k,) and presence (frames, k) of the clip."""
    from bavos.api import Segmenter

    seg = Segmenter.from_checkpoint("none", backbone_weights="none", device="cpu", max_objects=0)
    with seg(video, end=end) as result:
        analysis = result.analysis
        h = analysis.hierarchy
        cut = h.cut
        present = np.stack(
            [np.bincount(analysis.labels.frame(t)[cut], minlength=h.sizes[cut]) > 0 for t in range(analysis.processed)]
        )
        return h.centroids[cut].cpu().double(), analysis.areas[cut], present


def report(name: str, groups: np.ndarray, areas: np.ndarray, present: np.ndarray) -> None:
    k = int(groups.max()) + 1
    area = np.bincount(groups, weights=areas, minlength=k) / areas.sum()
    frames = np.stack([present[:, groups == g].any(1) for g in range(k)], 1).sum(0)  # (k,)
    order = np.argsort(-area)
    shown = ", ".join(f"{100 * area[g]:.2f} % ({frames[g]})" for g in order)
    print(
        f"  {name}: {k} objects; largest {100 * area[order[0]]:.1f} %, the others together "
        f"{100 * (1 - area[order[0]]):.1f} %; in one frame only: {int((frames[order[1:]] == 1).sum())}"
    )
    print(f"    share (frames present): {shown}")


def timing(rounds: int = 3) -> None:
    gen = torch.Generator().manual_seed(0)
    c = torch.rand(2000, 18000, generator=gen, dtype=torch.float32) ** 8
    c /= c.sum(1, keepdim=True)
    areas = np.random.default_rng(0).integers(1, 5000, 2000)
    times: dict[str, list[float]] = {"largest": [], "closest pair": []}
    for _ in range(rounds):
        for name in times:
            start = time.perf_counter()
            if name == "largest":
                cap_by_area(c, areas, 20)
            else:
                _old_merge_closest(c, 20)
            times[name].append(time.perf_counter() - start)
    for name, seconds in times.items():
        print(f"  {name}: {', '.join(f'{s:.2f}' for s in seconds)} s")
    print(f"  closest pair / largest (medians): {np.median(times['closest pair']) / np.median(times['largest']):.1f}")


def _old_merge_closest(centroids: torch.Tensor, n: int) -> np.ndarray:
    """The closest-pair cap as bavos ran it (cached nearest neighbours, two matrix-vector products a merge); the
    group of each cluster."""
    c = centroids.clone()
    log_c = safe_log(c)
    self_c = (c * log_c).sum(-1)
    dist = sym_kl(c, c, log_c, log_c)
    dist = ((dist + dist.T) / 2).fill_diagonal_(float("inf"))
    alive = torch.ones(len(c), dtype=torch.bool)
    root = np.arange(len(c))
    best, nearest = dist.min(1)
    for _ in range(max(0, len(c) - n)):
        i = int(best.argmin())
        i, j = sorted((i, int(nearest[i])))
        root[root == j] = i
        c[i] = (c[i] + c[j]) / 2
        log_c[i] = safe_log(c[i])
        self_c[i] = (c[i] * log_c[i]).sum()
        alive[j] = False
        dist[j, :], dist[:, j], best[j] = float("inf"), float("inf"), float("inf")
        row = (self_c[i] + self_c - log_c @ c[i] - c @ log_c[i]).masked_fill(~alive, float("inf"))
        row[i] = float("inf")
        dist[i, :], dist[:, i] = row, row
        stale = ((nearest == i) | (nearest == j)) & alive
        stale[i] = True
        best[stale], nearest[stale] = dist[stale].min(1)
        closer = row < best
        best[closer], nearest[closer] = row[closer], i
    return np.unique(root, return_inverse=True)[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", type=Path, default=DOG)
    parser.add_argument("--end", default="30")
    parser.add_argument("--caps", type=int, nargs="+", default=[20, 5])
    parser.add_argument(
        "--rules",
        nargs="+",
        default=list(RULES),
        choices=list(RULES),
        help="the rules to compare (ward's cost is n^2 a merge: slow past a few thousand clusters)",
    )
    parser.add_argument("--timing-only", action="store_true")
    parser.add_argument("--no-timing", action="store_true")
    opts = parser.parse_args()
    if not opts.timing_only:
        c, areas, present = segment(opts.video, opts.end)
        order = np.sort(areas)[::-1] / areas.sum()
        print(
            f"{opts.video.name}: {len(areas)} clusters at the converged level over {len(present)} frames; the "
            f"largest {', '.join(f'{100 * s:.1f} %' for s in order[:6])}"
        )
        for n in opts.caps:
            print(f"--max-objects {n}:")
            for name in opts.rules:
                report(name, RULES[name](c, areas, n), areas, present)
    if not opts.no_timing:
        print("the cap at 2,000 clusters over 18,000 key tokens, seconds per round:")
        timing()


if __name__ == "__main__":
    main()
