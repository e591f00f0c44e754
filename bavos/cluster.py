"""Hierarchical clustering of attention distributions (METHOD.md 2.5-2.6), with every level kept (decision 7.7).

Distances are the symmetric KL divergence ``D(p, q) = KL(p||q) + KL(q||p)`` (not halved). Logarithms are taken of
probabilities clamped at ``PROB_FLOOR = 1e-30``: the release's ``eps = 0`` gives NaN when a probability underflows
to exactly zero; any probability above the floor gives the release's value unchanged (decision 7.2).

Levels of the hierarchy:
- level 0: the centroids of every level-1 window (smoothing, then greedy leader merging, window by window);
- level 1, 2, ...: each global greedy merge round, until a round changes nothing (the converged level);
- with ``max_objects``, one more level: the cut level with its closest clusters merged until ``max_objects`` remain.
Every token gets a label at every level in one assignment pass (argmin distance to that level's centroids).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from bavos.errors import ConfigError

PROB_FLOOR = 1e-30


def safe_log(p: Tensor) -> Tensor:
    """log of probabilities clamped at PROB_FLOOR (no -inf, so no NaN distances)."""
    return p.clamp_min(PROB_FLOOR).log_()


def _row_dot(a: Tensor, b: Tensor) -> Tensor:
    """(n,) dot products of matching rows of two (n, M) tensors, without an (n, M) temporary."""
    return torch.einsum("nm,nm->n", a, b)


def sym_kl(p: Tensor, q: Tensor, log_p: Tensor | None = None, log_q: Tensor | None = None,
           self_q: Tensor | None = None) -> Tensor:
    """Pairwise symmetric KL divergences.

    Args:
        p: (n, M) rows that are distributions.
        q: (m, M) rows that are distributions.
        log_p, log_q: their ``safe_log`` if already computed.
        self_q: (m,) ``sum_c q_jc log q_jc`` if already computed (when the same ``q`` meets many ``p``).

    Returns:
        (n, m) with ``D[i, j] = sum_c (p_ic - q_jc) (log p_ic - log q_jc)``; exactly symmetric when ``q is p``.
    """
    log_p = safe_log(p) if log_p is None else log_p
    self_p = _row_dot(p, log_p)  # (n,)
    if q is p:  # distances within one set: log_p @ p.T is the transpose of p @ log_p.T, one product suffices
        cross = p @ log_p.T  # (n, n)
        return self_p[:, None] + self_p[None, :] - cross - cross.T
    log_q = safe_log(q) if log_q is None else log_q
    self_q = _row_dot(q, log_q) if self_q is None else self_q  # (m,)
    return self_p[:, None] + self_q[None, :] - p @ log_q.T - log_p @ q.T


LEADER_BLOCK = 64


def greedy_leaders(close_rows: Callable[[np.ndarray], np.ndarray], n: int, block: int = LEADER_BLOCK) -> np.ndarray:
    """Greedy leader grouping in index order.

    Each still-unassigned row ``i`` (in order) leads a group made of itself and every unassigned ``j`` with
    ``close[i, j]``; the group is then assigned. Only the rows of candidate leaders are asked for, ``block`` at a
    time (the next unassigned indices): usually a few groups take most rows, so far fewer than ``n`` rows are
    computed, and a device that computes them is synchronised once per block, not once per row.

    Args:
        close_rows: maps (b,) row indices to their (b, n) bool rows of ``close`` (``close[i, j]``: D[i, j] <= tau).
        n: number of rows.
        block: candidate rows asked for at once.

    Returns:
        (n,) int64 group ids, numbered in order of their leaders.
    """
    labels = np.full(n, -1, dtype=np.int64)
    unassigned = np.ones(n, dtype=bool)
    group_id = 0
    while True:
        candidates = np.flatnonzero(unassigned)[:block]
        if not len(candidates):
            return labels
        close = close_rows(candidates)
        for row, i in zip(close, candidates, strict=True):
            if not unassigned[i]:  # taken by a leader earlier in this block
                continue
            group = row & unassigned
            group[i] = True
            labels[group] = group_id
            unassigned &= ~group
            group_id += 1


def group_means(x: Tensor, labels: np.ndarray) -> Tensor:
    """Unweighted mean of the rows of ``x`` (n, M) in each group of ``labels`` (n,) -> (groups, M)."""
    index = torch.as_tensor(labels, device=x.device)
    count = int(labels.max()) + 1
    sums = x.new_zeros(count, x.shape[1]).index_add_(0, index, x)
    sizes = torch.bincount(index, minlength=count).to(x.dtype)
    return sums / sizes[:, None]


def _leader_merge(x: Tensor, tau: float) -> tuple[Tensor, np.ndarray]:
    """One greedy leader pass over the rows of ``x`` (n, M): (centroids (k, M), labels (n,))."""
    log_x = safe_log(x)
    self_x = _row_dot(x, log_x)  # once, not once per block of candidate rows

    def close_rows(index: np.ndarray) -> np.ndarray:
        rows = torch.as_tensor(index, device=x.device)
        return (sym_kl(x[rows], x, log_x[rows], log_x, self_x) <= tau).cpu().numpy()

    labels = greedy_leaders(close_rows, x.shape[0])
    return group_means(x, labels), labels


def cluster_window(rows: Tensor, tau: float) -> Tensor:
    """Level-1 clustering of one window (METHOD.md 2.6 steps 1-4).

    Args:
        rows: (n, M) attention rows of the window's tokens, frame-major then raster order.

    Returns:
        (k, M) centroids of the window's clusters, in order of their leaders.
    """
    log_rows = safe_log(rows)
    close = sym_kl(rows, rows, log_rows, log_rows) <= tau  # (n, n)
    close.fill_diagonal_(True)
    adjacency = close.to(rows.dtype)
    del close, log_rows
    smooth = (adjacency @ rows).div_(adjacency.sum(1, keepdim=True))  # (n, M) mean of each row's neighbours
    del adjacency
    centroids, _ = _leader_merge(smooth, tau)
    return centroids


def merge_closest(centroids: Tensor, max_clusters: int) -> tuple[Tensor, np.ndarray]:
    """Merge the closest pair (unweighted mean) until at most ``max_clusters`` remain.

    The pair distance is the symmetric KL (made exactly symmetric); logs and each row's nearest neighbour are
    cached, so a merge costs two (n, M) matrix-vector products rather than a scan of all pairs.

    Returns:
        (k, M) centroids in order of their lowest original index, and (n,) the new cluster of each input centroid.
    """
    n = centroids.shape[0]
    c = centroids.clone()
    log_c = safe_log(c)
    self_c = (c * log_c).sum(-1)  # (n,)
    inf = float("inf")
    dist = sym_kl(c, c, log_c, log_c)
    dist = (dist + dist.T) / 2  # (n, n)
    dist.fill_diagonal_(inf)
    alive = torch.ones(n, dtype=torch.bool, device=c.device)
    best, nearest = dist.min(1)  # (n,) each row's closest alive centroid
    root = np.arange(n)
    for _ in range(max(0, n - max_clusters)):
        i = int(best.argmin())
        j = int(nearest[i])
        i, j = min(i, j), max(i, j)  # the merged cluster keeps the lower index
        c[i] = (c[i] + c[j]) / 2
        log_c[i] = safe_log(c[i])
        self_c[i] = (c[i] * log_c[i]).sum()
        root[root == j] = i
        alive[j] = False
        dist[j, :] = inf
        dist[:, j] = inf
        best[j] = inf
        row = self_c[i] + self_c - log_c @ c[i] - c @ log_c[i]  # (n,) D(c_i, every centroid)
        row = row.masked_fill(~alive, inf)
        row[i] = inf
        dist[i, :] = row
        dist[:, i] = row
        stale = ((nearest == i) | (nearest == j)) & alive
        stale[i] = True
        if bool(stale.any()):
            best[stale], nearest[stale] = dist[stale].min(1)
        closer = row < best
        best[closer], nearest[closer] = row[closer], i
    kept = np.unique(root)
    return c[torch.as_tensor(kept, device=c.device)], np.searchsorted(kept, root)


@dataclass
class Hierarchy:
    """Centroids of every level and how each level's clusters map onto the next.

    Attributes:
        centroids: per level, (k_l, M) cluster centroids (distributions over key tokens).
        parents: per level l >= 1, (k_{l-1},) the level-l cluster of each level-(l-1) cluster (for a capped level:
            of each cluster of the level it was cut from).
        converged: index of the converged level (the last global round).
        capped_from: the level a capped last level was made from, or None when nothing was capped.
    """

    centroids: list[Tensor]
    parents: list[np.ndarray]
    converged: int
    capped_from: int | None = None

    @property
    def sizes(self) -> list[int]:
        """Number of clusters at each level."""
        return [int(c.shape[0]) for c in self.centroids]


def build_hierarchy(windows: Iterable[Tensor], tau: float = 1.0, max_rounds: int = 10000) -> Hierarchy:
    """Level 1 window by window, then global greedy rounds until the number of clusters stops changing.

    Args:
        windows: the attention rows of each window in temporal order, each (w, N, M).
        tau: merge threshold on the symmetric KL.
    """
    per_window = [cluster_window(w.reshape(-1, w.shape[-1]), tau) for w in windows]
    if not per_window:
        raise ValueError("no attention windows to cluster")
    levels, parents = [torch.cat(per_window)], [np.zeros(0, dtype=np.int64)]
    for _ in range(max_rounds):
        merged, labels = _leader_merge(levels[-1], tau)
        if merged.shape[0] == levels[-1].shape[0]:
            break
        levels.append(merged)
        parents.append(labels)
    return Hierarchy(levels, parents, converged=len(levels) - 1)


def assign(windows: Iterable[Tensor], centroids: list[Tensor]) -> np.ndarray:
    """Label every token at every level: argmin over that level's centroids of D(centroid, token row).

    Args:
        windows: the attention rows of each window in temporal order, each (w, N, M) (unsmoothed).
        centroids: per level, (k_l, M).

    Returns:
        (levels, T, N) int32 labels.
    """
    stacked = torch.cat(centroids)  # (sum k_l, M)
    log_stacked = safe_log(stacked)
    bounds = np.cumsum([0] + [int(c.shape[0]) for c in centroids])
    out = []
    for w in windows:
        rows = w.reshape(-1, w.shape[-1])  # (w*N, M)
        dist = sym_kl(stacked, rows, log_stacked)  # (sum k_l, w*N)
        labels = torch.stack([dist[a:b].argmin(0) for a, b in zip(bounds[:-1], bounds[1:], strict=True)])
        out.append(labels.reshape(len(centroids), w.shape[0], w.shape[1]).to(torch.int32).cpu().numpy())
    return np.concatenate(out, axis=1)


@dataclass
class ClusterResult:
    """Labels of a clustered video.

    Attributes:
        labels: (T, N) int32 labels of the chosen level (cut and capped), numbered from 0.
        level_labels: (L, T, N) int32 labels at every level; the last one is the capped level if capping happened.
        sizes: number of clusters at each of the L levels.
        converged: index of the converged level.
        level: index into ``level_labels`` of ``labels``.
        hierarchy: the centroids and parent maps.
    """

    labels: np.ndarray
    level_labels: np.ndarray
    sizes: list[int]
    converged: int
    level: int
    hierarchy: Hierarchy


def cluster_video(windows: Callable[[], Iterable[Tensor]], tau: float = 1.0, level: int | None = None,
                  max_objects: int = 0) -> ClusterResult:
    """Cluster a video whose attention rows are produced window by window (twice: build, then assign).

    Args:
        windows: called twice; each call yields the (w, N, M) rows of consecutive windows in temporal order.
        tau: merge threshold.
        level: hierarchy level to cut (None = converged).
        max_objects: if > 0, merge the closest clusters of the cut level until at most this many remain.
    """
    hierarchy = build_hierarchy(windows(), tau)
    cut = hierarchy.converged if level is None else level
    if cut > hierarchy.converged:
        raise ConfigError(f"--level {cut} does not exist: this video's hierarchy has levels 0..{hierarchy.converged}")
    if max_objects and hierarchy.sizes[cut] > max_objects:
        capped, parent = merge_closest(hierarchy.centroids[cut], max_objects)
        hierarchy.centroids.append(capped)
        hierarchy.parents.append(parent)
        hierarchy.capped_from = cut
        cut = len(hierarchy.centroids) - 1
    level_labels = assign(windows(), hierarchy.centroids)
    return ClusterResult(level_labels[cut], level_labels, hierarchy.sizes, hierarchy.converged, cut, hierarchy)


def cluster_attention(attn: Tensor, tau: float = 1.0, window: int = 3, level: int | None = None,
                      max_objects: int = 0) -> ClusterResult:
    """Cluster precomputed attention exactly as METHOD.md 2.6 (with defaults: the converged level, no cap).

    Args:
        attn: (T, N, M) row-stochastic attention of every token over the key tokens. Computations keep its dtype
            (use float64 for the reference partition).
        tau: merge threshold on the symmetric KL.
        window: frames per level-1 window.

    Returns:
        ClusterResult; ``.labels`` is (T, N).
    """
    if attn.ndim != 3:
        raise ValueError(f"attn must be (T, N, M), got shape {tuple(attn.shape)}")

    def windows() -> Iterable[Tensor]:
        return (attn[t : t + window] for t in range(0, attn.shape[0], window))

    return cluster_video(windows, tau, level, max_objects)
