"""A plain, slow implementation of the DAVIS J/F protocol, written from its definition for the parity tests.

Pixel loops for boundaries, scipy's binary dilation with an explicit disk, one boolean mask per proposal and
object, brute-force matching over every assignment. Only for small images.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
from scipy import ndimage


def boundary(seg: np.ndarray) -> np.ndarray:
    h, w = seg.shape
    out = np.zeros_like(seg, dtype=bool)
    for y in range(h):
        for x in range(w):
            v = seg[y, x]
            right = seg[y, x + 1] if x + 1 < w else False
            below = seg[y + 1, x] if y + 1 < h else False
            diag = seg[y + 1, x + 1] if (x + 1 < w and y + 1 < h) else False
            if y == h - 1 and x == w - 1:
                out[y, x] = False
            elif y == h - 1:
                out[y, x] = v != right
            elif x == w - 1:
                out[y, x] = v != below
            else:
                out[y, x] = (v != right) or (v != below) or (v != diag)
    return out


def disk(radius: int) -> np.ndarray:
    y, x = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    return x * x + y * y <= radius * radius


def jf(pred_mask: np.ndarray, gt_mask: np.ndarray, void: np.ndarray, bound_th: float = 0.008) -> tuple[float, float]:
    valid = ~void
    inter = np.sum(pred_mask & gt_mask & valid)
    union = np.sum((pred_mask | gt_mask) & valid)
    j = 1.0 if union == 0 else inter / union
    radius = int(bound_th) if bound_th >= 1 else math.ceil(bound_th * math.hypot(*pred_mask.shape))
    bp, bg = boundary(pred_mask & valid), boundary(gt_mask & valid)
    n_p, n_g = bp.sum(), bg.sum()
    if n_p == 0 or n_g == 0:
        return j, 1.0 if n_p == n_g else 0.0
    dp = ndimage.binary_dilation(bp, disk(radius))
    dg = ndimage.binary_dilation(bg, disk(radius))
    prec, rec = (bp & dg).sum() / n_p, (bg & dp).sum() / n_g
    return j, 0.0 if prec + rec == 0 else 2 * prec * rec / (prec + rec)


def sequence_jf(
    pred: np.ndarray, gt: np.ndarray, n_props: int, n_objs: int, bound_th: float = 0.008
) -> tuple[np.ndarray, np.ndarray]:
    """(P, G, T) J and F from (T, H, W) id maps (gt 255 = void)."""
    j = np.zeros((n_props, n_objs, len(gt)))
    f = np.zeros_like(j)
    for t in range(len(gt)):
        void = gt[t] == 255
        for p in range(n_props):
            for g in range(n_objs):
                j[p, g, t], f[p, g, t] = jf(pred[t] == p + 1, gt[t] == g + 1, void, bound_th)
    return j, f


def best_assignment(score: np.ndarray) -> tuple[float, tuple[int, ...]]:
    """Brute force over every injective map objects -> proposals; score (P, G)."""
    n_props, n_objs = score.shape
    best = (-np.inf, ())
    for perm in itertools.permutations(range(n_props), n_objs):
        total = sum(score[p, g] for g, p in enumerate(perm))
        if total > best[0] + 1e-12:
            best = (total, perm)
    return best


def ari(a: np.ndarray, b: np.ndarray) -> float:
    """Adjusted Rand index by explicit pair counting (Hubert and Arabie)."""
    n = len(a)
    same_a = a[:, None] == a[None, :]
    same_b = b[:, None] == b[None, :]
    iu = np.triu_indices(n, 1)
    sa, sb = same_a[iu], same_b[iu]
    pairs, both, in_a, in_b = len(sa), np.sum(sa & sb), np.sum(sa), np.sum(sb)
    expected = in_a * in_b / pairs
    best = (in_a + in_b) / 2
    return 1.0 if best == expected else (both - expected) / (best - expected)
