"""An independent, deliberately plain implementation of METHOD.md 2.5-2.6, written from the text only.

No matrix tricks: every distance is ``sum_c (p_c - q_c)(log p_c - log q_c)`` over explicit pairs, neighbour sets are
built element by element, and merging follows the prose step by step. It is slow and only for small inputs.
"""

from __future__ import annotations

import numpy as np

FLOOR = 1e-30  # the documented clamp of bavos.cluster (decision 7.2)


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
