"""Hierarchical clustering of attention distributions (METHOD.md 2.5-2.6), with every level kept (decision 7.7).

Distances are the symmetric KL divergence ``D(p, q) = KL(p||q) + KL(q||p)`` (not halved). Logarithms are taken of
probabilities clamped at ``PROB_FLOOR = 1e-30``: the release's ``eps = 0`` gives NaN when a probability underflows
to exactly zero; any probability above the floor gives the release's value unchanged (decision 7.2).

Levels of the hierarchy:
- level 0: the centroids of every level-1 window (smoothing, then greedy leader merging, window by window);
- level 1, 2, ...: each global greedy merge round, until a round changes nothing (the converged level);
- with ``max_objects``, one more level: the cut level's ``max_objects`` largest clusters, every other merged into
  its nearest of them (``cap_by_area``, once the tokens are labelled).

The first global round is streamed (``StreamingLeaders``): a window's centroids join the first earlier leader within
tau, or lead a new group, which gives the groups of the batch pass while holding only the leaders and running sums;
so memory does not grow with the video's length. Labels: a token's level-0 label is the nearest of its own window's
centroids; at levels 1, 2, ... the nearest of that level's centroids (argmin of the unsmoothed row, as the release
labels tokens); at a capped level, the merged cluster its cut-level cluster went into.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

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
        pair = cross + cross.T  # c_ij + c_ji, the same number both ways
        # (s_i + s_j) - pair in cross's memory: each sum is the same both ways, so D is symmetric bit for bit
        return cross.copy_(self_p[:, None].expand_as(cross)).add_(self_p[None, :]).sub_(pair)
    log_q = safe_log(q) if log_q is None else log_q
    self_q = _row_dot(q, log_q) if self_q is None else self_q  # (m,)
    return self_p[:, None] + self_q[None, :] - p @ log_q.T - log_p @ q.T


LEADER_BLOCK = 64


def greedy_leaders(close_rows: Callable[[np.ndarray, np.ndarray], np.ndarray], n: int,
                   block: int = LEADER_BLOCK) -> np.ndarray:
    """Greedy leader grouping in index order.

    Each still-unassigned row ``i`` (in order) leads a group made of itself and every unassigned ``j`` with
    ``close[i, j]``; the group is then assigned. Only the rows of candidate leaders are asked for, and only their
    columns that are still unassigned (the others cannot join a group any more): usually a few groups take most
    rows, so far fewer than ``n`` rows are computed, each over fewer and fewer columns. The first request is the
    first row alone (it always leads, and its group, often the largest, leaves every later request narrower); then
    ``block`` rows at a time (the next unassigned indices), so a device that computes them is synchronised once per
    block, not once per row. Which rows are computed changes only the work, never the groups.

    Args:
        close_rows: maps (b,) row indices and (c,) column indices, increasing, to the (b, c) bool block of
            ``close`` (``close[i, j]``: D[i, j] <= tau).
        n: number of rows.
        block: candidate rows asked for at once after the first.

    Returns:
        (n,) int64 group ids, numbered in order of their leaders.
    """
    labels = np.full(n, -1, dtype=np.int64)
    unassigned = np.ones(n, dtype=bool)
    group_id = 0
    while True:
        free = np.flatnonzero(unassigned)  # (c,) the columns that can still join a group
        candidates = free[: block if group_id else 1]
        if not len(candidates):
            return labels
        close = close_rows(candidates, free)  # (b, c)
        for row, i in zip(close, candidates, strict=True):
            if not unassigned[i]:  # taken by a leader earlier in this block
                continue
            members = free[row & unassigned[free]]
            labels[members] = labels[i] = group_id
            unassigned[members] = unassigned[i] = False
            group_id += 1


def add_rows(sums: Tensor, index: Tensor, x: Tensor) -> Tensor:
    """``sums[index[i]] += x[i]`` for every row i, in place, the same on every run.

    On CUDA ``index_add_`` adds rows of one group in whatever order its threads finish, so two runs of a video could
    differ in the last bits of a centroid and then in a label; there the sums are one product with the rows' one-hot
    group matrix instead, whose order is fixed. On a CPU ``index_add_`` adds in row order.
    """
    if x.device.type != "cuda":
        return sums.index_add_(0, index, x)
    onehot = x.new_zeros(sums.shape[0], x.shape[0])
    onehot[index, torch.arange(x.shape[0], device=x.device)] = 1
    return sums.add_(onehot @ x)


def group_means(x: Tensor, labels: np.ndarray) -> Tensor:
    """Unweighted mean of the rows of ``x`` (n, M) in each group of ``labels`` (n,) -> (groups, M)."""
    index = torch.as_tensor(labels, device=x.device)
    count = int(labels.max()) + 1
    sums = add_rows(x.new_zeros(count, x.shape[1]), index, x)
    sizes = torch.bincount(index, minlength=count).to(x.dtype)
    return sums / sizes[:, None]


def _leader_merge(x: Tensor, tau: float) -> tuple[Tensor, np.ndarray]:
    """One greedy leader pass over the rows of ``x`` (n, M): (centroids (k, M), labels (n,))."""
    log_x = safe_log(x)
    self_x = _row_dot(x, log_x)  # once, not once per block of candidate rows

    def close_rows(index: np.ndarray, columns: np.ndarray) -> np.ndarray:
        rows = torch.as_tensor(index, device=x.device)
        if len(columns) == x.shape[0]:  # every column: no copy
            return (sym_kl(x[rows], x, log_x[rows], log_x, self_x) <= tau).cpu().numpy()
        cols = torch.as_tensor(columns, device=x.device)
        return (sym_kl(x[rows], x[cols], log_x[rows], log_x[cols], self_x[cols]) <= tau).cpu().numpy()

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


def cap_by_area(centroids: Tensor, areas: np.ndarray, max_clusters: int) -> tuple[Tensor, np.ndarray]:
    """Keep the ``max_clusters`` largest clusters (token counts ``areas``; ties to the lower index; clusters no token
    chose are never kept) and merge every other into the kept one nearest to it by the symmetric KL of their
    centroids (docs/method.md, "The cap").

    Args:
        centroids: (n, M) a level's centroids.
        areas: (n,) the tokens of each cluster over the video.

    Returns:
        (k, M) centroids of the kept groups in order of their kept cluster's index, each the area-weighted mean of
        its members (as a cluster's centroid is the mean of its tokens); and (n,) the group of each input cluster.
    """
    n = centroids.shape[0]
    areas = np.asarray(areas, dtype=np.int64)
    order = np.lexsort((np.arange(n), -areas))  # largest first, ties to the lower index
    chosen = [int(i) for i in order[:max_clusters] if areas[i] > 0] or [int(order[0])]
    kept = np.sort(np.array(chosen, dtype=np.int64))
    parent = np.empty(n, dtype=np.int64)
    parent[kept] = np.arange(len(kept))
    others = np.setdiff1d(np.arange(n), kept)
    if len(others):
        at = torch.as_tensor(kept, device=centroids.device)
        dist = sym_kl(centroids[torch.as_tensor(others, device=centroids.device)], centroids[at])  # (others, k)
        parent[others] = dist.argmin(1).cpu().numpy()  # the first of equals: the lower kept index
    index = torch.as_tensor(parent, device=centroids.device)
    weight = torch.as_tensor(areas, dtype=centroids.dtype, device=centroids.device)
    total = torch.zeros(len(kept), dtype=centroids.dtype, device=centroids.device).index_add_(0, index, weight)
    sums = add_rows(torch.zeros(len(kept), centroids.shape[1], dtype=centroids.dtype, device=centroids.device), index,
                    centroids * weight[:, None])
    return sums / total.clamp_min(1)[:, None], parent


def cap_hierarchy(hierarchy: Hierarchy, areas: np.ndarray, max_objects: int) -> np.ndarray | None:
    """Cap the cut level at ``max_objects`` clusters (``cap_by_area`` with its clusters' token counts ``areas``),
    appended as the hierarchy's last level; returns the group of each cut-level cluster, or None when the level has
    no more clusters than that (or ``max_objects`` is 0).

    Raises:
        ConfigError: the cut level's centroids were not kept (level 0: ``HierarchyBuilder(keep_level0=True)``).
    """
    cut = hierarchy.cut
    if not max_objects or hierarchy.sizes[cut] <= max_objects:
        return None
    if hierarchy.centroids[cut] is None:
        raise ConfigError(f"capping level {cut} needs its centroids: HierarchyBuilder(keep_level0=True)")
    capped, parent = cap_by_area(hierarchy.centroids[cut], areas, max_objects)
    hierarchy.sizes.append(int(capped.shape[0]))
    hierarchy.centroids.append(capped)
    hierarchy.parents.append(parent)
    hierarchy.capped_from, hierarchy.cut = cut, len(hierarchy.sizes) - 1
    return parent


class StreamingLeaders:
    """The greedy leader pass over centroids that arrive in order, holding only the leaders and running sums.

    Centroid j joins the first leader (in arrival order) within ``tau`` of it, else leads a new group. In the
    batch pass (``_leader_merge``) every still-unassigned centroid, in index order, leads and takes every later
    unassigned one within ``tau``: a centroid is taken by the first leader before it that is close enough, so the
    groups are the same. A group's centroid is the unweighted mean of its members.
    """

    def __init__(self, tau: float) -> None:
        self.tau = tau
        self.leaders: Tensor | None = None  # (L, M)
        self._log: Tensor | None = None
        self._self: Tensor | None = None
        self._sums: Tensor | None = None
        self._counts: list[int] = []
        self.groups: list[int] = []  # the group of every centroid added so far

    def add(self, centroids: Tensor) -> None:
        """Add (k, M) centroids, in order."""
        logs = safe_log(centroids)
        own = _row_dot(centroids, logs)
        near_old = None
        if self.leaders is not None:
            near_old = (sym_kl(centroids, self.leaders, logs, self._log, self._self) <= self.tau).cpu().numpy()
        near_new = (sym_kl(centroids, centroids, logs, logs) <= self.tau).cpu().numpy()
        first_new = len(self._counts)
        new_leaders: list[int] = []  # rows of ``centroids`` that lead
        for j in range(len(centroids)):
            hit = np.flatnonzero(near_old[j]) if near_old is not None else np.empty(0, dtype=np.int64)
            if len(hit):
                group = int(hit[0])
            else:
                later = [g for g, row in enumerate(new_leaders) if near_new[row, j]]
                if later:
                    group = first_new + later[0]
                else:
                    new_leaders.append(j)
                    self._counts.append(0)
                    group = first_new + len(new_leaders) - 1
            self.groups.append(group)
            self._counts[group] += 1
        rows = torch.as_tensor(new_leaders, dtype=torch.long, device=centroids.device)
        self._grow(centroids[rows], logs[rows], own[rows])
        index = torch.as_tensor(self.groups[-len(centroids):], device=centroids.device)
        add_rows(self._sums, index, centroids)

    def _grow(self, leaders: Tensor, logs: Tensor, own: Tensor) -> None:
        if self.leaders is None:
            self.leaders, self._log, self._self = leaders, logs, own
            self._sums = torch.zeros_like(leaders)
            return
        self.leaders = torch.cat([self.leaders, leaders])
        self._log = torch.cat([self._log, logs])
        self._self = torch.cat([self._self, own])
        self._sums = torch.cat([self._sums, torch.zeros_like(leaders)])

    def result(self) -> tuple[Tensor, np.ndarray]:
        """(groups, M) group means, and (centroids added,) the group of each."""
        counts = torch.tensor(self._counts, dtype=self._sums.dtype, device=self._sums.device)
        return self._sums / counts[:, None], np.asarray(self.groups, dtype=np.int64)


@dataclass
class Hierarchy:
    """Centroids of the levels above 0 and how each level's clusters map onto the next.

    Attributes:
        sizes: number of clusters at each level (level 0 first; a capped level last).
        centroids: per level, (k_l, M) cluster centroids; None for level 0 unless kept (``keep_level0``).
        parents: per level l >= 1, (k_{l-1},) the level-l cluster of each level-(l-1) cluster (for a capped level:
            of each cluster of the level it was cut from).
        converged: index of the converged level (the last global round).
        capped_from: the level a capped last level was made from, or None when nothing was capped.
        cut: the index in ``sizes`` of what the output is cut at (the capped entry when capped).
        warnings: what the user asked for that this video's hierarchy could not give, and what was done instead.
        distinct: the labels pass's cache of ``distinct_centroids``.

    Users see one numbering, the real levels 0..converged: ``level`` and ``real_sizes``; a cap is not a level but a
    merge of ``level`` down to ``capped_size`` clusters.
    """

    sizes: list[int]
    centroids: list[Tensor | None]
    parents: list[np.ndarray]
    converged: int
    capped_from: int | None = None
    cut: int = 0
    warnings: list[str] = field(default_factory=list)
    distinct: tuple[Tensor, Tensor, list[np.ndarray]] | None = field(default=None, repr=False, compare=False)

    @property
    def capped(self) -> bool:
        return self.capped_from is not None

    @property
    def level(self) -> int:
        """The real level the output is cut at (a cap merges this level further)."""
        return self.capped_from if self.capped_from is not None else self.cut

    @property
    def real_sizes(self) -> list[int]:
        """Clusters at each real level, 0..converged."""
        return list(self.sizes[: self.converged + 1])

    @property
    def capped_size(self) -> int | None:
        """Clusters after the cap, or None when nothing was capped."""
        return self.sizes[-1] if self.capped_from is not None else None


class HierarchyBuilder:
    """Builds the hierarchy from windows of attention rows given in temporal order, in bounded memory.

    ``add_window`` clusters a window (level 0), streams its centroids into the first global round and returns the
    window's level-0 labels; ``finish`` runs the remaining rounds (over the first round's groups), cuts and caps.

    Args:
        tau: merge threshold.
        keep_level0: keep every level-0 centroid (memory grows with the video); needed only to cap level 0.
    """

    def __init__(self, tau: float, keep_level0: bool = False) -> None:
        self.tau, self.keep_level0 = tau, keep_level0
        self._first = StreamingLeaders(tau)
        self._level0: list[Tensor] = []
        self.level0_size = 0

    def add_window(self, rows: Tensor) -> np.ndarray:
        """(n, M) rows of a window, frame-major then raster order -> (n,) level-0 labels (video-wide indices)."""
        centroids = cluster_window(rows, self.tau)
        labels = sym_kl(centroids, rows, safe_log(centroids)).argmin(0).cpu().numpy() + self.level0_size
        self._first.add(centroids)
        if self.keep_level0:
            self._level0.append(centroids)
        self.level0_size += int(centroids.shape[0])
        return labels

    def finish(self, level: int | None = None, max_rounds: int = 10000) -> Hierarchy:
        """The global rounds after the first until nothing changes; then the cut. A cap needs the cut level's token
        counts, known once the tokens are labelled: ``cap_hierarchy``."""
        if not self.level0_size:
            raise ValueError("no attention windows to cluster")
        level0 = torch.cat(self._level0) if self.keep_level0 else None
        first, parents1 = self._first.result()
        if level0 is None and first.shape[0] == self.level0_size:  # nothing merged: the first round's groups are
            level0 = first  # the level-0 clusters themselves, each the mean of itself (a one-window video, say)
        sizes, centroids, parents = [self.level0_size], [level0], [np.zeros(0, dtype=np.int64)]
        if first.shape[0] < self.level0_size:
            sizes.append(int(first.shape[0]))
            centroids.append(first)
            parents.append(parents1)
            for _ in range(max_rounds):
                merged, labels = _leader_merge(centroids[-1], self.tau)
                if merged.shape[0] == centroids[-1].shape[0]:
                    break
                sizes.append(int(merged.shape[0]))
                centroids.append(merged)
                parents.append(labels)
        hierarchy = Hierarchy(sizes, centroids, parents, converged=len(sizes) - 1)
        cut = hierarchy.converged if level is None else level
        if cut > hierarchy.converged:  # known only now: the work is kept, cut at the top
            hierarchy.warnings.append(f"--level {cut} does not exist: this video's hierarchy has levels "
                                      f"0..{hierarchy.converged}; cut at the top level, {hierarchy.converged}")
            cut = hierarchy.converged
        hierarchy.cut = cut
        return hierarchy


def distinct_centroids(hierarchy: Hierarchy) -> tuple[Tensor, Tensor, list[np.ndarray]]:
    """The centroids of levels 1..converged without repeats, and where each level's centroids are among them.

    A global round leaves most clusters alone near convergence: a cluster whose group holds one cluster of the level
    below has that cluster's centroid, bit for bit (the mean of one row), so its distances to the tokens are the
    same numbers and are computed once. Cached on the hierarchy (its levels do not change once built).

    Returns:
        (U, M) distinct centroids, their ``safe_log``, and per level 1..converged a (k_l,) index into them.
    """
    if hierarchy.distinct is not None:
        return hierarchy.distinct
    rows: list[Tensor] = []
    index: list[np.ndarray] = []
    count = 0
    for lv in range(1, hierarchy.converged + 1):
        centroids = hierarchy.centroids[lv]
        at = np.full(len(centroids), -1, dtype=np.int64)
        if lv > 1:  # the level's clusters made of one cluster of the level below keep its centroid
            parents = hierarchy.parents[lv]
            alone = np.bincount(parents, minlength=len(centroids)) == 1
            child = np.flatnonzero(alone[parents])
            at[parents[child]] = index[-1][child]
        new = np.flatnonzero(at < 0)
        at[new] = count + np.arange(len(new))
        rows.append(centroids[torch.as_tensor(new, device=centroids.device)])
        index.append(at)
        count += len(new)
    stacked = torch.cat(rows)
    hierarchy.distinct = (stacked, safe_log(stacked), index)
    return hierarchy.distinct


def label_window(rows: Tensor, level0: np.ndarray, hierarchy: Hierarchy) -> np.ndarray:
    """Labels of a window's tokens at every level.

    Args:
        rows: (n, M) the window's unsmoothed attention rows.
        level0: (n,) their level-0 labels (``HierarchyBuilder.add_window``).

    Returns:
        (real levels, n) int32: level 0 as given, each global level the nearest of its centroids (a cap, made once
        every token is labelled, follows the merge tree: ``cap_hierarchy``). Every level's distances come from one
        product against the distinct centroids of all levels (``distinct_centroids``).
    """
    out = np.empty((hierarchy.converged + 1, rows.shape[0]), dtype=np.int32)
    out[0] = level0
    if hierarchy.converged:
        stacked, log_stacked, index = distinct_centroids(hierarchy)
        dist = sym_kl(stacked, rows, log_stacked)  # (U, n)
        nearest = [dist[torch.as_tensor(at, device=dist.device)].argmin(0) for at in index]
        out[1 : hierarchy.converged + 1] = torch.stack(nearest).cpu().numpy()  # one copy to the host for every level
    return out


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
    t, n, m = attn.shape
    builder = HierarchyBuilder(tau, keep_level0=level == 0 and max_objects > 0)
    windows = [attn[s : s + window].reshape(-1, m) for s in range(0, t, window)]
    level0 = [builder.add_window(rows) for rows in windows]
    hierarchy = builder.finish(level)
    labels = np.concatenate([label_window(rows, l0, hierarchy) for rows, l0 in zip(windows, level0, strict=True)],
                            axis=1).reshape(len(hierarchy.sizes), t, n)
    parent = cap_hierarchy(hierarchy, np.bincount(labels[hierarchy.cut].ravel(), minlength=hierarchy.sizes[
        hierarchy.cut]), max_objects)
    if parent is not None:
        labels = np.concatenate([labels, parent[labels[hierarchy.capped_from]][None]])
    return ClusterResult(labels[hierarchy.cut], labels, hierarchy.sizes, hierarchy.converged, hierarchy.cut,
                         hierarchy)
