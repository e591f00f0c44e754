"""Hierarchical clustering of attention distributions (method.md §3.5-§3.6), with every level kept (method.md §7.7).

Distances are the symmetric KL divergence ``D(p, q) = KL(p||q) + KL(q||p)`` (not halved). Logarithms are taken of
probabilities clamped at ``PROB_FLOOR = 1e-30``: the release's ``eps = 0`` gives NaN when a probability underflows
to exactly zero; any probability above the floor gives the release's value unchanged (method.md §7.2).

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

A CPU skips work through lower bounds; a GPU computes whole products and, with bavos's kernels, fuses the passes
over them (``gpu_way``, ``use_kernels``: method.md §6.3, §6.6). Every result the host needs is read through
``traffic.to_host``, so that tests can count the reads.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from bavos.errors import ConfigError
from bavos.models.costs import COARSE_BIN, LEADER_BLOCK, SAMPLED_PAIR_COST
from bavos.models.devices import gpu_way, use_kernels
from bavos.pipeline import products
from bavos.pipeline.traffic import to_host

PROB_FLOOR = 1e-30


def safe_log(p: Tensor) -> Tensor:
    """log of probabilities clamped at PROB_FLOOR (no -inf, so no NaN distances)."""
    return p.clamp_min(PROB_FLOOR).log_()


def _row_dot(a: Tensor, b: Tensor) -> Tensor:
    """(n,) dot products of matching rows of two (n, M) tensors, without an (n, M) temporary."""
    return torch.einsum("nm,nm->n", a, b)


def log_and_dots(x: Tensor) -> tuple[Tensor, Tensor]:
    """(n, M) rows that are distributions -> their (n, M) ``safe_log`` and (n,) ``sum_c x_c log x_c``.

    With the GPU's kernels (``bavos.models.devices.use_kernels``) one pass over the rows (``fused.log_rows``), else
    torch's three. Every set of rows gets both from here, so that a set's distances are computed one way throughout
    a run (the leader passes rely on a pair's distance being the same number each time it is computed).
    """
    if use_kernels(x.device) and x.dtype == torch.float32:
        from bavos.pipeline.fused import log_rows  # Triton: imported only where it runs

        return log_rows(x.contiguous(), PROB_FLOOR)
    log = safe_log(x)
    return log, _row_dot(x, log)


def _given_or_made(x: Tensor, log: Tensor | None, dots: Tensor | None) -> tuple[Tensor, Tensor]:
    """``x``'s ``safe_log`` and row dots: as given, the dots made from a given log, or both made (``log_and_dots``)."""
    if log is None:
        return log_and_dots(x)
    return log, _row_dot(x, log) if dots is None else dots


def sym_kl(
    p: Tensor,
    q: Tensor,
    log_p: Tensor | None = None,
    log_q: Tensor | None = None,
    self_q: Tensor | None = None,
    self_p: Tensor | None = None,
) -> Tensor:
    """Pairwise symmetric KL divergences.

    Args:
        p: (n, M) rows that are distributions.
        q: (m, M) rows that are distributions.
        log_p, log_q: their ``safe_log`` if already computed.
        self_q, self_p: (m,) ``sum_c q_jc log q_jc`` and (n,) ``sum_c p_ic log p_ic`` if already computed.

    Returns:
        (n, m) with ``D[i, j] = sum_c (p_ic - q_jc) (log p_ic - log q_jc)``; exactly symmetric when ``q is p``.
    """
    log_p, self_p = _given_or_made(p, log_p, self_p)  # (n, M), (n,)
    if q is p:  # distances within one set: log_p @ p.T is the transpose of p @ log_p.T, one product suffices
        cross = products.cross(p, log_p)  # (n, n)
        pair = cross + cross.T  # c_ij + c_ji, the same number both ways
        # (s_i + s_j) - pair in cross's memory: each sum is the same both ways, so D is symmetric bit for bit
        return cross.copy_(self_p[:, None].expand_as(cross)).add_(self_p[None, :]).sub_(pair)
    log_q, self_q = _given_or_made(q, log_q, self_q)  # (m, M), (m,)
    return self_p[:, None] + self_q[None, :] - products.cross(p, log_q) - products.cross(log_p, q)


BOUND_SLACK = 1e-3
NEAREST_BLOCK_BYTES = 64 * 2**20  # nearest_rows' gather of a group's distances to a block of rows, at most


def coarse_rows(x: Tensor) -> Tensor:
    """(n, M) rows -> (n, ceil(M / COARSE_BIN)) sums of their ``PROB_FLOOR``-clamped entries over consecutive bins.

    The symmetric KL of two rows' bins (``sym_kl`` of the results) is at most the rows' own: docs/method.md §6.3.
    """
    x = x.clamp_min(PROB_FLOOR)
    pad = -x.shape[1] % COARSE_BIN
    if pad:  # entries at the floor in both rows add nothing to either side
        x = torch.nn.functional.pad(x, (0, pad), value=PROB_FLOOR)
    return x.view(x.shape[0], -1, COARSE_BIN).sum(2)


def bins(x: Tensor) -> Tensor:
    """``coarse_rows(x)`` where the bounds are used (a CPU's way), else an empty (n, 0) tensor that indexes and
    concatenates like them at no cost (``bavos.models.devices.gpu_way``)."""
    return x.new_empty(x.shape[0], 0) if gpu_way(x.device) else coarse_rows(x)


def lower_bounds(coarse_p: Tensor, coarse_q: Tensor) -> Tensor:
    """(n, m) lower bounds of ``sym_kl`` from two sets of ``coarse_rows``: their own symmetric KL, its terms summed
    into the products' output (two passes over it, not five: at a few hundred bins the passes cost more than the
    products; rounding differs from ``sym_kl``'s by far less than ``slack``)."""
    log_p, log_q = coarse_p.log(), coarse_q.log()  # bins hold at least the floor: no clamp needed
    out = torch.addmm(_row_dot(coarse_q, log_q)[None, :], coarse_p, log_q.T, alpha=-1)
    out.addmm_(log_p, coarse_q.T, alpha=-1)
    return out.add_(_row_dot(coarse_p, log_p)[:, None])


def slack(bound: Tensor) -> Tensor:
    """How far a computed lower bound may exceed the value it bounds, from rounding alone: many times float32's."""
    return BOUND_SLACK * (1 + bound.abs())


def pair_distances(
    p: Tensor, q: Tensor, log_p: Tensor, log_q: Tensor, self_p: Tensor, self_q: Tensor, pairs: Tensor
) -> Tensor:
    """``sym_kl(p, q)`` at the (K,) True entries of the (n, m) bool ``pairs`` only, in ``pairs.nonzero()`` order.

    The two products are computed at those entries alone (sampled dense-dense products): their cost is K * M, not
    n * m * M.
    """
    at = pairs.nonzero()  # (K, 2), row-major
    if not len(at):
        return p.new_zeros(0)
    crow = torch.zeros(pairs.shape[0] + 1, dtype=torch.int64, device=p.device)
    crow[1:] = torch.cumsum(pairs.sum(1), 0)
    with warnings.catch_warnings():  # "sparse CSR support is in beta": the sampled product is all that is used
        warnings.simplefilter("ignore", UserWarning)
        pattern = torch.sparse_csr_tensor(
            crow, at[:, 1].contiguous(), p.new_zeros(len(at)), pairs.shape, check_invariants=False
        )  # made right above: sorted, in range
        cross = torch.sparse.sampled_addmm(pattern, p, log_q.T, beta=0.0).values()
        cross += torch.sparse.sampled_addmm(pattern, log_p, q.T, beta=0.0).values()
    return self_p[at[:, 0]] + self_q[at[:, 1]] - cross


def within(
    p: Tensor,
    q: Tensor,
    log_p: Tensor,
    log_q: Tensor,
    self_p: Tensor,
    self_q: Tensor,
    tau: float,
    coarse_p: Tensor | None = None,
    coarse_q: Tensor | None = None,
) -> Tensor:
    """(n, m) bool ``sym_kl(p, q) <= tau``.

    On a CPU only the pairs whose lower bound (``coarse_rows``, given or made here) is within ``tau`` are computed
    (docs/method.md §6.3); elsewhere every pair.
    """
    if gpu_way(p.device):
        return sym_kl(p, q, log_p, log_q, self_q, self_p) <= tau
    coarse_p = coarse_rows(p) if coarse_p is None else coarse_p
    coarse_q = coarse_rows(q) if coarse_q is None else coarse_q
    bound = torch.tensor(tau, dtype=p.dtype)
    close = lower_bounds(coarse_p, coarse_q) <= bound + slack(bound)  # (n, m) the pairs that can be within tau
    if int(close.sum()) * SAMPLED_PAIR_COST > close.numel():  # too many: the whole product costs less
        dist = sym_kl(p, q, log_p, log_q, self_q)
        # a pair this near tau is decided by its own two sums, as a pair computed alone is: which way the work went
        # (it follows the bounds' last bits) never moves a decision
        near = (dist - tau).abs_() <= slack(bound)
        close = dist <= tau
        close[near] = pair_distances(p, q, log_p, log_q, self_p, self_q, near) <= tau
        return close
    close[close.clone()] = pair_distances(p, q, log_p, log_q, self_p, self_q, close) <= tau
    return close


def nearest_rows(
    centroids: Tensor,
    rows: Tensor,
    log_centroids: Tensor,
    groups: list[Tensor],
    coarse_centroids: Tensor | None = None,
    self_centroids: Tensor | None = None,
    guesses: Tensor | None = None,
    log_rows: Tensor | None = None,
    self_rows: Tensor | None = None,
    coarse: Tensor | None = None,
) -> Tensor:
    """For each group of centroids, the nearest of them to each row by ``sym_kl`` (the first of equals).

    On a CPU, a centroid whose lower bound (``coarse_rows``) exceeds the exact distance of another centroid of the
    group is never the nearest: each row's distances are computed exactly only to the centroids that can be
    (docs/method.md §6.3). Elsewhere every distance is computed.

    Args:
        centroids: (U, M) with their ``safe_log`` ``log_centroids`` and, if already made, ``coarse_rows`` and
            ``_row_dot(centroids, log_centroids)``.
        rows: (n, M).
        groups: per group, (k_g,) indices into ``centroids`` (on their device).
        guesses: (groups, n) indices into ``centroids`` of a member of each group likely to be near each row (the
            closer, the fewer exact distances); None: each group's least lower bound.
        log_rows, self_rows, coarse: the rows' ``safe_log``, ``_row_dot(rows, log_rows)`` and ``coarse_rows`` if
            already computed.

    Returns:
        (groups, n) int64 positions within each group.
    """
    log_rows, self_r = _given_or_made(rows, log_rows, self_rows)
    if gpu_way(rows.device):
        dist = sym_kl(centroids, rows, log_centroids, log_rows, self_r, self_centroids)  # (U, n)
        return torch.stack([dist[at].argmin(0) for at in groups])
    u, n = centroids.shape[0], rows.shape[0]
    self_c = _row_dot(centroids, log_centroids) if self_centroids is None else self_centroids
    coarse_c = coarse_rows(centroids) if coarse_centroids is None else coarse_centroids
    lower = lower_bounds(coarse_c, coarse_rows(rows) if coarse is None else coarse)  # (U, n)
    if guesses is None:
        guesses = torch.stack([at[lower[at].argmin(0)] for at in groups])
    columns = torch.arange(n, device=rows.device).expand_as(guesses)
    guessed = torch.zeros_like(lower, dtype=torch.bool)
    guessed[guesses, columns] = True
    found = pair_distances(centroids, rows, log_centroids, log_rows, self_c, self_r, guessed)  # row-major order
    known = guessed.nonzero()
    keys = known[:, 0] * n + known[:, 1]  # increasing: the order of ``found``
    upper = found[torch.searchsorted(keys, guesses * n + columns)]  # (groups, n): no group's nearest is farther
    wanted = torch.zeros_like(guessed)
    member = torch.zeros(u, dtype=torch.bool)
    for members, bound in zip(groups, upper, strict=True):  # each group's members within its own bound
        member.zero_()[members] = True
        wanted |= (lower <= bound + slack(bound)).logical_and_(member[:, None])
    wanted &= ~guessed  # their distances are known
    # the distances computed, in the bounds' table (no longer needed), the others infinite: each group's nearest is
    # then its rows' argmin (the first of equals), column block by column block. Where bounds prune little, a
    # bookkeeping of the pairs by group costs more than their distances (docs/performance.md, "The labels pass.")
    table = lower.fill_(float("inf"))
    table[known[:, 0], known[:, 1]] = found
    table[wanted] = pair_distances(centroids, rows, log_centroids, log_rows, self_c, self_r, wanted)
    out = torch.empty(len(groups), n, dtype=torch.int64)
    block = max(1, NEAREST_BLOCK_BYTES // (4 * max(len(members) for members in groups)))
    for start in range(0, n, block):
        part = table[:, start : start + block]
        for g, members in enumerate(groups):
            out[g, start : start + block] = part.index_select(0, members).argmin(0)
    return out


def greedy_leaders(
    close_rows: Callable[[np.ndarray, np.ndarray], np.ndarray], n: int, block: int = LEADER_BLOCK
) -> np.ndarray:
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
    if not gpu_way(x.device):
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


POOL_FILL = 0.75


class _Columns:
    """The columns a leader pass's requests are computed against: rows of ``x`` with their logs and self terms.

    A request asks for a few rows' distances to the columns still free. Gathering those columns' (c, M) rows for
    each request moves about as many bytes as its products do arithmetic, so they are gathered again only when fewer
    than ``POOL_FILL`` of those held are still asked for, and each request's columns are picked from its (b, held)
    result.
    """

    def __init__(self, x: Tensor, log_x: Tensor, self_x: Tensor, coarse_x: Tensor, tau: float) -> None:
        self.x, self.log_x, self.self_x, self.coarse_x, self.tau = x, log_x, self_x, coarse_x, tau
        self.held = np.zeros(0, dtype=np.int64)
        self._x, self._log, self._self, self._coarse = x, log_x, self_x, coarse_x

    def close(self, rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
        """(b, c) bool ``D[rows, columns] <= tau``; ``columns`` increasing, among the columns of every earlier call."""
        if not len(self.held) or len(columns) < POOL_FILL * len(self.held):
            self._hold(columns)
        at = torch.as_tensor(rows, device=self.x.device)
        close = within(
            self.x[at],
            self._x,
            self.log_x[at],
            self._log,
            self.self_x[at],
            self._self,
            self.tau,
            self.coarse_x[at],
            self._coarse,
        )  # (b, held)
        if len(columns) < len(self.held):  # picked on the host: no index to send to the device
            return to_host(close)[:, np.searchsorted(self.held, columns)]
        return to_host(close)

    def _hold(self, columns: np.ndarray) -> None:
        self.held = columns.copy()
        if len(columns) == self.x.shape[0]:  # every column: no copy
            self._x, self._log, self._self, self._coarse = self.x, self.log_x, self.self_x, self.coarse_x
            return
        at = torch.as_tensor(columns, device=self.x.device)
        self._x, self._log, self._self, self._coarse = self.x[at], self.log_x[at], self.self_x[at], self.coarse_x[at]


class _KnownFar:
    """``close_rows`` for a leader pass in which two rows that are not ``fresh`` are known to be farther than tau
    apart (docs/method.md §6.3): only pairs with a fresh row are computed.

    A fresh row is compared with every free column, ``LEADER_BLOCK`` fresh rows at a time (the next free ones, read
    ahead of the request so that each product has rows enough); a row that is not fresh with the fresh free columns
    only.
    """

    def __init__(self, every: _Columns, fresh_columns: _Columns, fresh: np.ndarray) -> None:
        self.every, self.fresh_columns, self.fresh = every, fresh_columns, fresh
        self._ahead: dict[int, np.ndarray] = {}  # fresh row -> (n,) bool, its closeness to the columns then free

    def __call__(self, index: np.ndarray, columns: np.ndarray) -> np.ndarray:
        out = np.zeros((len(index), len(columns)), dtype=bool)
        is_fresh = self.fresh[index]
        for k in np.flatnonzero(is_fresh):
            out[k] = self._row(int(index[k]), columns)[columns]
        stale = np.flatnonzero(~is_fresh)
        wanted = np.flatnonzero(self.fresh[columns])  # positions of the fresh free columns
        if len(stale) and len(wanted):
            out[np.ix_(stale, wanted)] = self.fresh_columns.close(index[stale], columns[wanted])
        return out

    def _row(self, i: int, columns: np.ndarray) -> np.ndarray:
        if i not in self._ahead:  # i and the next free fresh rows, against every free column; rows left from the
            self._ahead.clear()  # last read-ahead were taken before they were asked for (rows are asked in order)
            rows = columns[self.fresh[columns] & (columns >= i)][:LEADER_BLOCK]
            for j, close in zip(rows, self.every.close(rows, columns), strict=True):
                row = np.zeros(len(self.fresh), dtype=bool)
                row[columns] = close
                self._ahead[int(j)] = row
        return self._ahead.pop(i)  # a row is asked for once: it leads, or it was taken before


def _leader_merge(x: Tensor, tau: float, fresh: np.ndarray | None = None) -> tuple[Tensor, np.ndarray]:
    """One greedy leader pass over the rows of ``x`` (n, M): (centroids (k, M), labels (n,)).

    Args:
        fresh: (n,) bool; when given, two rows that are not fresh are farther than ``tau`` apart (known from an
            earlier pass), and their distance is not computed. None: nothing is known.
    """
    log_x, self_x = log_and_dots(x)  # once, not once per request
    coarse_x = bins(x)
    every = _Columns(x, log_x, self_x, coarse_x, tau)
    close_rows = every.close if fresh is None else _KnownFar(every, _Columns(x, log_x, self_x, coarse_x, tau), fresh)
    labels = greedy_leaders(close_rows, x.shape[0])
    return group_means(x, labels), labels


def cluster_window(
    rows: Tensor,
    tau: float,
    log_rows: Tensor | None = None,
    self_rows: Tensor | None = None,
    coarse: Tensor | None = None,
) -> Tensor:
    """Level-1 clustering of one window (method.md §3.6 steps 1-4).

    Args:
        rows: (n, M) attention rows of the window's tokens, frame-major then raster order.
        log_rows, self_rows, coarse: their ``safe_log``, ``_row_dot(rows, log_rows)`` and ``bins`` if already
            computed.

    Returns:
        (k, M) centroids of the window's clusters, in order of their leaders.
    """
    log_rows, self_rows = _given_or_made(rows, log_rows, self_rows)
    coarse = bins(rows) if coarse is None else coarse
    adjacency, counts = neighbours(rows, log_rows, self_rows, coarse, tau)
    del log_rows
    smooth = products.smooth(adjacency, rows).div_(counts)  # (n, M) neighbours' mean
    del adjacency
    centroids, _ = _leader_merge(smooth, tau)
    return centroids


def neighbours(rows: Tensor, log_rows: Tensor, self_rows: Tensor, coarse: Tensor, tau: float) -> tuple[Tensor, Tensor]:
    """The (n, n) 0/1 neighbour matrix of a window's rows (the pairs within ``tau``, and the diagonal) in their
    dtype, and its (n, 1) row counts: with the GPU's kernels their one product and one pass over it
    (``fused.close_pairs``), else ``within``'s distances thresholded in torch's passes; the same pairs either way."""
    if use_kernels(rows.device) and rows.dtype == torch.float32:
        from bavos.pipeline.fused import close_pairs  # Triton: imported only where it runs

        adjacency, counts = close_pairs(products.cross(rows, log_rows).contiguous(), self_rows.contiguous(), tau)
        return adjacency, counts[:, None]
    close = within(rows, rows, log_rows, log_rows, self_rows, self_rows, tau, coarse, coarse)  # (n, n) symmetric
    close.fill_diagonal_(True)
    adjacency = close.to(rows.dtype)
    return adjacency, adjacency.sum(1, keepdim=True)


def cap_by_area(centroids: Tensor, areas: np.ndarray, max_clusters: int) -> tuple[Tensor, np.ndarray]:
    """Keep the ``max_clusters`` largest clusters (token counts ``areas``; ties to the lower index; clusters no token
    chose are never kept) and merge every other into the kept one nearest to it by the symmetric KL of their
    centroids (docs/method.md §6.4).

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
        parent[others] = to_host(dist.argmin(1))  # the first of equals: the lower kept index
    index = torch.as_tensor(parent, device=centroids.device)
    weight = torch.as_tensor(areas, dtype=centroids.dtype, device=centroids.device)
    total = torch.zeros(len(kept), dtype=centroids.dtype, device=centroids.device).index_add_(0, index, weight)
    sums = add_rows(
        torch.zeros(len(kept), centroids.shape[1], dtype=centroids.dtype, device=centroids.device),
        index,
        centroids * weight[:, None],
    )
    return sums / total.clamp_min(1)[:, None], parent


def cap_hierarchy(hierarchy: MergeTree, areas: np.ndarray, max_objects: int) -> np.ndarray | None:
    """Cap the cut level at ``max_objects`` clusters (``cap_by_area`` with its clusters' token counts ``areas``),
    appended as the hierarchy's last level; returns the group of each cut-level cluster, or None when the level has
    no more clusters than that (or ``max_objects`` is 0).

    Raises:
        ConfigError: the cut level's centroids were not kept (level 0: ``MergeTreeBuilder(keep_level0=True)``).
    """
    cut = hierarchy.cut
    if not max_objects or hierarchy.sizes[cut] <= max_objects:
        return None
    if hierarchy.centroids[cut] is None:
        raise ConfigError(f"capping level {cut} needs its centroids: MergeTreeBuilder(keep_level0=True)")
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
        self._coarse: Tensor | None = None
        self._room: list[Tensor] | None = None  # leaders, logs, self terms, bins, sums: the views above are their heads
        self._counts: list[int] = []
        self.groups: list[int] = []  # the group of every centroid added so far

    def add(self, centroids: Tensor) -> None:
        """Add (k, M) centroids, in order."""
        logs, own = log_and_dots(centroids)
        coarse = bins(centroids)
        near = within(centroids, centroids, logs, logs, own, own, self.tau, coarse, coarse)  # (k, k)
        near_old = None
        if self.leaders is not None:  # (k, L) and (k, k) read by the host at once
            old = within(centroids, self.leaders, logs, self._log, own, self._self, self.tau, coarse, self._coarse)
            both = to_host(torch.cat([old, near], 1))
            near_old, near_new = both[:, : old.shape[1]], both[:, old.shape[1] :]
        else:
            near_new = to_host(near)
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
        self._grow(centroids[rows], logs[rows], own[rows], coarse[rows])
        index = torch.as_tensor(self.groups[-len(centroids) :], device=centroids.device)
        add_rows(self._sums, index, centroids)

    def _grow(self, leaders: Tensor, logs: Tensor, own: Tensor, coarse: Tensor) -> None:
        """Append new leaders (their sums start at 0). The buffers grow ahead of need: copying every leader each window
        would cost as much as comparing with them; by half each time, so they hold at most half again what is
        used."""
        held = self.leaders.shape[0] if self.leaders is not None else 0
        need = held + leaders.shape[0]
        if self._room is None or need > self._room[0].shape[0]:
            size = max(need, (3 * self._room[0].shape[0]) // 2 if self._room is not None else 0, 64)
            room = [t.new_zeros((size, *t.shape[1:])) for t in (leaders, logs, own, coarse, leaders)]
            if self._room is not None:
                for new, old in zip(room, self._room, strict=True):
                    new[:held] = old[:held]
            self._room = room
        for buffer, part in zip(self._room[:4], (leaders, logs, own, coarse), strict=True):
            buffer[held:need] = part
        self.leaders, self._log, self._self, self._coarse, self._sums = (t[:need] for t in self._room)

    def result(self) -> tuple[Tensor, np.ndarray]:
        """(groups, M) group means, and (centroids added,) the group of each."""
        counts = torch.tensor(self._counts, dtype=self._sums.dtype, device=self._sums.device)
        return self._sums / counts[:, None], np.asarray(self.groups, dtype=np.int64)


@dataclass
class MergeTree:
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
    distinct: tuple[Tensor, Tensor, list[np.ndarray], Tensor, Tensor] | None = field(
        default=None, repr=False, compare=False
    )

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


class MergeTreeBuilder:
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
        log_rows, self_rows = log_and_dots(rows)  # once for the window's distances and its labels
        coarse = bins(rows)
        centroids = cluster_window(rows, self.tau, log_rows, self_rows, coarse)
        every = torch.arange(centroids.shape[0], device=rows.device)
        log_centroids, self_centroids = log_and_dots(centroids)
        nearest = nearest_rows(
            centroids,
            rows,
            log_centroids,
            [every],
            self_centroids=self_centroids,
            log_rows=log_rows,
            self_rows=self_rows,
            coarse=coarse,
        )
        del log_rows
        labels = to_host(nearest[0]) + self.level0_size
        self._first.add(centroids)
        if self.keep_level0:
            self._level0.append(centroids)
        self.level0_size += int(centroids.shape[0])
        return labels

    def finish(self, level: int | None = None, max_rounds: int = 10000) -> MergeTree:
        """The global rounds after the first until nothing changes; then the cut. A cap needs the cut level's token
        counts, known once the tokens are labelled: ``cap_hierarchy``."""
        if not self.level0_size:
            raise ValueError("no attention windows to cluster")
        level0 = torch.cat(self._level0) if self.keep_level0 else None
        first, parents1 = self._first.result()
        self._first = StreamingLeaders(self.tau)  # its buffers (the leaders, their logs and sums) are not needed again
        if level0 is None and first.shape[0] == self.level0_size:  # nothing merged: the first round's groups are
            level0 = first  # the level-0 clusters themselves, each the mean of itself (a one-window video, say)
        sizes, centroids, parents = [self.level0_size], [level0], [np.zeros(0, dtype=np.int64)]
        if first.shape[0] < self.level0_size:
            sizes.append(int(first.shape[0]))
            centroids.append(first)
            parents.append(parents1)
            # a group of one is its member, bit for bit; two such members were farther than tau apart when the
            # pass that left them alone compared them, so only the groups of several can merge with anything
            fresh = np.bincount(parents1, minlength=first.shape[0]) > 1
            for _ in range(max_rounds):
                merged, labels = _leader_merge(centroids[-1], self.tau, fresh)
                if merged.shape[0] == centroids[-1].shape[0]:
                    break
                sizes.append(int(merged.shape[0]))
                centroids.append(merged)
                parents.append(labels)
                fresh = np.bincount(labels, minlength=merged.shape[0]) > 1
        hierarchy = MergeTree(sizes, centroids, parents, converged=len(sizes) - 1)
        cut = hierarchy.converged if level is None else level
        if cut > hierarchy.converged:  # known only now: the work is kept, cut at the top
            hierarchy.warnings.append(
                f"--level {cut} does not exist: this video's hierarchy has levels "
                f"0..{hierarchy.converged}; cut at the top level, {hierarchy.converged}"
            )
            cut = hierarchy.converged
        hierarchy.cut = cut
        return hierarchy


def distinct_centroids(hierarchy: MergeTree) -> tuple[Tensor, Tensor, list[np.ndarray], Tensor, Tensor]:
    """The centroids of levels 1..converged without repeats, and where each level's centroids are among them.

    A global round leaves most clusters alone near convergence: a cluster whose group holds one cluster of the level
    below has that cluster's centroid, bit for bit (the mean of one row), so its distances to the tokens are the
    same numbers and are computed once. Cached on the hierarchy (its levels do not change once built).

    Returns:
        (U, M) distinct centroids, their ``safe_log``, per level 1..converged a (k_l,) index into them, their
        ``coarse_rows`` and their (U,) ``sum_c p_c log p_c``.
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
    log_stacked, own = log_and_dots(stacked)
    hierarchy.distinct = (stacked, log_stacked, index, bins(stacked), own)
    return hierarchy.distinct


def label_window(rows: Tensor, level0: np.ndarray, hierarchy: MergeTree) -> np.ndarray:
    """Labels of a window's tokens at every level.

    Args:
        rows: (n, M) the window's unsmoothed attention rows.
        level0: (n,) their level-0 labels (``MergeTreeBuilder.add_window``).

    Returns:
        (real levels, n) int32: level 0 as given, each global level the nearest of its centroids (a cap, made once
        every token is labelled, follows the merge tree: ``cap_hierarchy``). Every level's distances come from one
        computation against the distinct centroids of all levels (``distinct_centroids``, ``nearest_rows``).
    """
    out = np.empty((hierarchy.converged + 1, rows.shape[0]), dtype=np.int32)
    out[0] = level0
    if hierarchy.converged:
        stacked, log_stacked, index, coarse, own = distinct_centroids(hierarchy)
        groups = [torch.as_tensor(at, device=rows.device) for at in index]
        ancestor, guesses = level0, []  # each token's level-0 cluster's group at every level: usually the nearest
        for lv, at in enumerate(index, start=1):
            ancestor = hierarchy.parents[lv][ancestor]
            guesses.append(at[ancestor])
        nearest = nearest_rows(
            stacked, rows, log_stacked, groups, coarse, own, torch.as_tensor(np.stack(guesses), device=rows.device)
        )
        out[1 : hierarchy.converged + 1] = to_host(nearest)  # one copy to the host for every level
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
    hierarchy: MergeTree


def cluster_attention(
    attn: Tensor, tau: float = 1.0, window: int = 3, level: int | None = None, max_objects: int = 0
) -> ClusterResult:
    """Cluster precomputed attention exactly as method.md §3.6 (with defaults: the converged level, no cap).

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
    builder = MergeTreeBuilder(tau, keep_level0=level == 0 and max_objects > 0)
    windows = [attn[s : s + window].reshape(-1, m) for s in range(0, t, window)]
    level0 = [builder.add_window(rows) for rows in windows]
    hierarchy = builder.finish(level)
    labels = np.concatenate(
        [label_window(rows, l0, hierarchy) for rows, l0 in zip(windows, level0, strict=True)], axis=1
    ).reshape(len(hierarchy.sizes), t, n)
    parent = cap_hierarchy(
        hierarchy, np.bincount(labels[hierarchy.cut].ravel(), minlength=hierarchy.sizes[hierarchy.cut]), max_objects
    )
    if parent is not None:
        labels = np.concatenate([labels, parent[labels[hierarchy.capped_from]][None]])
    return ClusterResult(labels[hierarchy.cut], labels, hierarchy.sizes, hierarchy.converged, hierarchy.cut, hierarchy)
