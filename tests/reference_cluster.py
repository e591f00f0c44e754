"""An independent, deliberately plain implementation of method.md §3.5-§3.6, written from the text only.

No matrix tricks: every distance is ``sum_c (p_c - q_c)(log p_c - log q_c)`` over explicit pairs, neighbour sets are
built element by element, and merging follows the prose step by step. It is slow and only for small inputs.
"""

from __future__ import annotations

import numpy as np

FLOOR = 1e-30  # the documented clamp of bavos.pipeline.cluster (method.md §7.2)


def jeffreys(p: np.ndarray, q: np.ndarray) -> float:
    lp, lq = np.log(np.maximum(p, FLOOR)), np.log(np.maximum(q, FLOOR))
    return float(np.sum((p - q) * (lp - lq)))


def distances(a: list[np.ndarray], b: list[np.ndarray]) -> np.ndarray:
    return np.array([[jeffreys(x, y) for y in b] for x in a])


def leader_groups(rows: list[np.ndarray], tau: float) -> list[list[int]]:
    d = distances(rows, rows)
    assigned = [False] * len(rows)
    groups = []
    for i in range(len(rows)):
        if assigned[i]:
            continue
        members = [j for j in range(len(rows)) if not assigned[j] and (d[i, j] <= tau or j == i)]
        for j in members:
            assigned[j] = True
        groups.append(members)
    return groups


def window_centroids(rows: list[np.ndarray], tau: float) -> list[np.ndarray]:
    d = distances(rows, rows)
    smoothed = []
    for i in range(len(rows)):
        neighbours = [rows[j] for j in range(len(rows)) if d[i, j] <= tau or j == i]
        total = np.sum(neighbours, axis=0)
        smoothed.append(total / total.sum())
    return [np.mean([smoothed[j] for j in g], axis=0) for g in leader_groups(smoothed, tau)]


def reference_partition(attn: np.ndarray, tau: float = 1.0, window: int = 3) -> np.ndarray:
    """attn: (T, N, M) float64 row-stochastic -> (T, N) labels of the converged level."""
    t_count, n, _ = attn.shape
    centroids: list[np.ndarray] = []
    for start in range(0, t_count, window):
        rows = [attn[t, i] for t in range(start, min(start + window, t_count)) for i in range(n)]
        centroids.extend(window_centroids(rows, tau))
    while True:
        groups = leader_groups(centroids, tau)
        if len(groups) == len(centroids):
            break
        centroids = [np.mean([centroids[j] for j in g], axis=0) for g in groups]
    labels = np.zeros((t_count, n), dtype=np.int64)
    for t in range(t_count):
        for i in range(n):
            labels[t, i] = int(np.argmin([jeffreys(c, attn[t, i]) for c in centroids]))
    return labels


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """True when two label arrays describe the same partition (equal up to renaming)."""
    a, b = a.ravel(), b.ravel()
    pairs = set(zip(a.tolist(), b.tolist(), strict=True))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


# The same algorithm on NumPy arrays, for inputs of thousands of rows (the pipeline parity tests at 320 x 480).
# Distances use method.md §3.5's four sums, two of them as matrix products; every other step follows the prose above.


def jeffreys_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n, m) symmetric KL of every row of a (n, M) with every row of b (m, M)."""
    la = np.log(np.maximum(a, FLOOR))
    if b is a:  # sum_c a_ic log a_jc is the transpose of sum_c log a_ic a_jc: one product
        cross = a @ la.T
        own = (a * la).sum(1)
        return own[:, None] + own[None, :] - cross - cross.T
    lb = np.log(np.maximum(b, FLOOR))
    return (a * la).sum(1)[:, None] + (b * lb).sum(1)[None, :] - a @ lb.T - la @ b.T


def vector_leaders(rows: np.ndarray, tau: float) -> list[np.ndarray]:
    close = jeffreys_matrix(rows, rows) <= tau
    assigned = np.zeros(len(rows), dtype=bool)
    groups = []
    for i in range(len(rows)):
        if assigned[i]:
            continue
        members = ~assigned & close[i]
        members[i] = True
        assigned |= members
        groups.append(np.flatnonzero(members))
    return groups


def vector_window_centroids(rows: np.ndarray, tau: float) -> np.ndarray:
    near = jeffreys_matrix(rows, rows) <= tau
    np.fill_diagonal(near, True)
    total = near.astype(rows.dtype) @ rows  # sum of each row's neighbours
    smoothed = total / total.sum(1, keepdims=True)
    return np.stack([smoothed[g].mean(0) for g in vector_leaders(smoothed, tau)])


def vector_partition(attn: np.ndarray, tau: float = 1.0, window: int = 3) -> np.ndarray:
    """As ``reference_partition``, on arrays: (T, N, M) -> (T, N) labels of the converged level."""
    t_count, n, m = attn.shape
    centroids = np.concatenate(
        [vector_window_centroids(attn[s : s + window].reshape(-1, m), tau) for s in range(0, t_count, window)]
    )
    while True:
        groups = vector_leaders(centroids, tau)
        if len(groups) == len(centroids):
            break
        centroids = np.stack([centroids[g].mean(0) for g in groups])
    return np.stack([jeffreys_matrix(centroids, attn[t]).argmin(0) for t in range(t_count)])


def vector_levels(attn: np.ndarray, tau: float = 1.0, window: int = 3) -> list[np.ndarray]:
    """(T, N) labels at every level: level 0 = the nearest centroid of the token's own window, then every global
    round's nearest centroid, the converged level last (method.md §3.6; level 0's labels are bavos's addition)."""
    t_count, n, m = attn.shape
    level0_labels, centroids, offset = [], [], 0
    for s in range(0, t_count, window):
        rows = attn[s : s + window].reshape(-1, m)
        own = vector_window_centroids(rows, tau)
        level0_labels.append(jeffreys_matrix(own, rows).argmin(0) + offset)
        centroids.append(own)
        offset += len(own)
    levels = [np.concatenate(level0_labels).reshape(t_count, n)]
    current = np.concatenate(centroids)
    while True:
        groups = vector_leaders(current, tau)
        if len(groups) == len(current):
            return levels
        current = np.stack([current[g].mean(0) for g in groups])
        levels.append(np.stack([jeffreys_matrix(current, attn[t]).argmin(0) for t in range(t_count)]))
