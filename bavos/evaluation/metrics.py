"""Segmentation metrics: DAVIS J and F, both matching protocols, FG-ARI and video mIoU.

Everything works on integer label maps, one frame at a time, so a sequence never has to sit in memory as one
boolean mask per proposal. Conventions (those of the DAVIS-2017 unsupervised benchmark):

- a prediction frame is an (H, W) map of ids; id 0 is background, ids 1..P are the proposals;
- a ground-truth frame is an (H, W) map of ids; 0 is background, 1..G are the objects, 255 is void;
- J is the IoU of a proposal and an object over the non-void pixels (1 when both are empty);
- F is the boundary F-measure: a boundary pixel matches when the other mask has a boundary pixel within
  ``ceil(0.008 * image diagonal)`` pixels (Euclidean; a disk of that radius), void pixels removed from both masks
  before their boundaries are taken.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

VOID = 255
BOUNDARY_TH = 0.008


def boundary_radius(height: int, width: int, bound_th: float = BOUNDARY_TH) -> int:
    """Tolerance of the boundary F-measure in pixels: ``bound_th`` itself when >= 1, else a fraction of the diagonal."""
    if bound_th >= 1:
        return int(bound_th)
    return int(math.ceil(bound_th * math.hypot(height, width)))


def boundary_map(seg: np.ndarray) -> np.ndarray:
    """One-pixel boundaries of a binary mask.

    A pixel is a boundary pixel when it differs from its right, lower or lower-right neighbour; on the last row
    only the right neighbour counts, on the last column only the lower one, and the bottom-right pixel never is.

    Args:
        seg: (H, W) bool.

    Returns:
        (H, W) bool.
    """
    seg = seg.astype(bool, copy=False)
    right = np.zeros_like(seg)
    below = np.zeros_like(seg)
    diag = np.zeros_like(seg)
    right[:, :-1] = seg[:, 1:]
    below[:-1, :] = seg[1:, :]
    diag[:-1, :-1] = seg[1:, 1:]
    bmap = (seg ^ right) | (seg ^ below) | (seg ^ diag)
    bmap[-1, :] = seg[-1, :] ^ right[-1, :]
    bmap[:, -1] = seg[:, -1] ^ below[:, -1]
    bmap[-1, -1] = False
    return bmap


def _boundary_points(seg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ys, xs) of the boundary pixels of a binary mask, computed on its bounding box plus one pixel."""
    rows, cols = np.flatnonzero(seg.any(axis=1)), np.flatnonzero(seg.any(axis=0))
    if len(rows) == 0:
        return np.empty(0, np.intp), np.empty(0, np.intp)
    # The crop reaches one pixel past the box on every side (inside the image): outside it the map is zero,
    # and a crop edge that is not an image edge is an all-zero row or column, where both rules agree.
    y0, x0 = max(rows[0] - 1, 0), max(cols[0] - 1, 0)
    y1, x1 = min(rows[-1] + 2, seg.shape[0]), min(cols[-1] + 2, seg.shape[1])
    ys, xs = np.nonzero(boundary_map(seg[y0:y1, x0:x1]))
    return ys + y0, xs + x0


def _disk_half_widths(radius: int) -> list[int]:
    """Half-width of the disk ``dx**2 + dy**2 <= radius**2`` on each row dy = -radius..radius."""
    return [math.isqrt(radius * radius - dy * dy) for dy in range(-radius, radius + 1)]


def dilate_points(shape: tuple[int, int], ys: np.ndarray, xs: np.ndarray, radius: int) -> np.ndarray:
    """Dilation of a set of pixels by a disk of the given radius (pixels at Euclidean distance <= radius).

    Works on the points' bounding box widened by the radius: a horizontal dilation per distinct row width
    (running sums), then one shifted OR per disk row.

    Args:
        shape: (H, W) of the image.
        ys, xs: (K,) pixel coordinates.
        radius: disk radius in pixels.

    Returns:
        (H, W) bool.
    """
    out = np.zeros(shape, dtype=bool)
    if len(ys) == 0:
        return out
    y0, y1 = max(int(ys.min()) - radius, 0), min(int(ys.max()) + radius + 1, shape[0])
    x0, x1 = max(int(xs.min()) - radius, 0), min(int(xs.max()) + radius + 1, shape[1])
    h, w = y1 - y0, x1 - x0
    pts = np.zeros((h, w), dtype=bool)
    pts[ys - y0, xs - x0] = True
    csum = np.zeros((h, w + 1), dtype=np.int32)
    np.cumsum(pts, axis=1, out=csum[:, 1:])  # (h, w + 1) running count along each row
    cols = np.arange(w)
    rows_by_width: dict[int, np.ndarray] = {}
    crop = out[y0:y1, x0:x1]
    for dy, half in zip(range(-radius, radius + 1), _disk_half_widths(radius), strict=True):
        if abs(dy) >= h:
            continue
        if half not in rows_by_width:
            lo, hi = np.clip(cols - half, 0, w), np.clip(cols + half + 1, 0, w)
            rows_by_width[half] = (csum[:, hi] - csum[:, lo]) > 0  # (h, w) horizontal dilation
        hdil = rows_by_width[half]
        if dy >= 0:
            crop[: h - dy] |= hdil[dy:]
        else:
            crop[-dy:] |= hdil[: h + dy]
    return out


def frame_scores(
    pred: np.ndarray, gt: np.ndarray, n_props: int, n_objs: int, bound_th: float = BOUNDARY_TH
) -> tuple[np.ndarray, np.ndarray]:
    """J and F of every (proposal, object) pair in one frame.

    Args:
        pred: (H, W) integer proposal ids (0 = background); ids above ``n_props`` are ignored.
        gt: (H, W) integer object ids (0 = background, 255 = void); ids above ``n_objs`` count as background.
        n_props: number of proposals P (ids 1..P; absent ids are empty masks).
        n_objs: number of objects G (ids 1..G).
        bound_th: boundary tolerance (fraction of the diagonal, or pixels when >= 1).

    Returns:
        J (P, G) and F (P, G), float64.
    """
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} differ in size")
    valid = gt != VOID
    pred_ids = np.where(valid & (pred <= n_props), pred, 0).astype(np.int64)
    gt_ids = np.where(valid & (gt <= n_objs), gt, 0).astype(np.int64)
    table = pair_counts(pred_ids, gt_ids, n_props + 1, n_objs + 1)  # (P + 1, G + 1) pixel counts
    present = table[1:].sum(1) > 0  # (P,) proposals with at least one pixel in this frame
    return _jaccard(table), _boundary_f(pred_ids, gt_ids, present, n_objs, bound_th)


def _jaccard(table: np.ndarray) -> np.ndarray:
    """(P, G) IoU from the (P + 1, G + 1) contingency table of two id maps (void pixels already 0 in both)."""
    inter = table[1:, 1:].astype(np.float64)
    union = table[1:, :].sum(1)[:, None] + table[:, 1:].sum(0)[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        j = inter / union
    j[union == 0] = 1.0
    return j


def _boundary_f(pred: np.ndarray, gt: np.ndarray, present: np.ndarray, n_objs: int, bound_th: float) -> np.ndarray:
    """(P, G) boundary F-measure of two id maps whose void pixels are already 0 in both.

    Args:
        pred, gt: (H, W) ids; proposals 1..P, objects 1..G.
        present: (P,) bool, proposals with pixels in this frame (the others are empty masks).
        n_objs: G.
        bound_th: boundary tolerance.
    """
    n_props = len(present)
    shape = (pred.shape[0], pred.shape[1])
    radius = boundary_radius(*shape, bound_th)
    p_pts = [_boundary_points(pred == i + 1) if present[i] else None for i in range(n_props)]
    g_pts = [_boundary_points(gt == i) for i in range(1, n_objs + 1)]
    g_dil = [dilate_points(shape, *pts, radius) if len(pts[0]) else None for pts in g_pts]
    f = np.zeros((n_props, n_objs))
    for p, pts in enumerate(p_pts):
        n_fg = 0 if pts is None else len(pts[0])
        p_dil = dilate_points(shape, *pts, radius) if n_fg else None
        for g, (gys, gxs) in enumerate(g_pts):
            n_gt = len(gys)
            if n_fg == 0 or n_gt == 0:
                f[p, g] = 1.0 if n_fg == n_gt else 0.0  # both empty: perfect; one empty: P or R is 0
                continue
            precision = np.count_nonzero(g_dil[g][pts]) / n_fg
            recall = np.count_nonzero(p_dil[gys, gxs]) / n_gt
            f[p, g] = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    return f


def match_per_sequence(j: np.ndarray, f: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The official DAVIS-2017 unsupervised matching: one Hungarian assignment per sequence.

    The assignment maximises the mean over frames of (J + F) / 2. Pass at least G proposals (pad with empty
    ones: their per-frame scores come from ``frame_scores`` with a larger ``n_props``).

    Args:
        j, f: (P, G, T) per-frame scores, P >= G.

    Returns:
        J (G, T), F (G, T) of the proposal matched to each object, and (G,) the matched proposal index.
    """
    score = (j.mean(axis=2) + f.mean(axis=2)) / 2  # (P, G)
    rows, cols = linear_sum_assignment(-score)
    match = np.empty(j.shape[1], dtype=np.int64)
    match[cols] = rows
    objs = np.arange(j.shape[1])
    return j[match, objs], f[match, objs], match


def match_per_frame(j: np.ndarray, f: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The release's lenient matching: a new Hungarian assignment (on J + F) in every frame.

    Args:
        j, f: (P, G, T) per-frame scores, P >= G.

    Returns:
        J (G, T), F (G, T), and (G, T) the proposal matched to each object in each frame.
    """
    n_objs, n_frames = j.shape[1], j.shape[2]
    match = np.empty((n_objs, n_frames), dtype=np.int64)
    for t in range(n_frames):
        rows, cols = linear_sum_assignment(-(j[:, :, t] + f[:, :, t]))
        match[cols, t] = rows
    objs, frames = np.arange(n_objs)[:, None], np.arange(n_frames)[None, :]
    return j[match, objs, frames], f[match, objs, frames], match


def statistics(values: np.ndarray) -> tuple[float, float, float]:
    """Mean, recall (fraction of frames above 0.5) and decay of one object's per-frame scores.

    Decay is the mean of the first quarter minus the mean of the last quarter, the quarters cut at
    ``round(linspace(1, T, 5)) - 1`` with both ends included (the DAVIS definition; neighbouring bins share
    their edge frame).

    Args:
        values: (T,) per-frame scores.
    """
    values = np.asarray(values, dtype=np.float64)
    mean = float(np.nanmean(values))
    recall = float(np.nanmean(values > 0.5))
    edges = (np.round(np.linspace(1, len(values), 5) + 1e-10) - 1).astype(np.int64)
    bins = [values[edges[i] : edges[i + 1] + 1] for i in range(4)]
    decay = float(np.nanmean(bins[0]) - np.nanmean(bins[3]))
    return mean, recall, decay


def pair_counts(pred: np.ndarray, gt: np.ndarray, n_pred: int, n_gt: int) -> np.ndarray:
    """Contingency table of two id maps.

    Args:
        pred: (...) integer ids in 0..n_pred-1.
        gt: (...) integer ids in 0..n_gt-1, same shape.

    Returns:
        (n_pred, n_gt) int64 pixel counts.
    """
    flat = pred.astype(np.int64).ravel() * n_gt + gt.astype(np.int64).ravel()
    return np.bincount(flat, minlength=n_pred * n_gt).reshape(n_pred, n_gt)


def adjusted_rand_index(table: np.ndarray) -> float:
    """Adjusted Rand index of two partitions given by their contingency table (1.0 for identical trivial ones).

    Args:
        table: (A, B) counts of items in cluster a of one partition and b of the other.
    """
    table = table.astype(np.float64)
    n = table.sum()
    pairs = (table * (table - 1)).sum() / 2
    rows = table.sum(1)
    cols = table.sum(0)
    pairs_a = (rows * (rows - 1)).sum() / 2
    pairs_b = (cols * (cols - 1)).sum() / 2
    total = n * (n - 1) / 2
    if total == 0:
        return 1.0
    expected = pairs_a * pairs_b / total
    best = (pairs_a + pairs_b) / 2
    if best == expected:  # both partitions are one cluster, or both are all singletons: they are identical
        return 1.0
    return float((pairs - expected) / (best - expected))


def fg_ari(pred: np.ndarray, gt: np.ndarray) -> float:
    """FG-ARI of one frame: the adjusted Rand index of predicted ids on ground-truth foreground pixels.

    Args:
        pred: (H, W) integer predicted ids (every id counts, 0 included).
        gt: (H, W) integer object ids; 0 (background) and 255 (void) are left out.

    Returns:
        The index, or NaN when the frame has no foreground pixel.
    """
    fg = (gt != 0) & (gt != VOID)
    if not fg.any():
        return float("nan")
    _, p = np.unique(pred[fg], return_inverse=True)
    _, g = np.unique(gt[fg], return_inverse=True)
    return adjusted_rand_index(pair_counts(p, g, int(p.max()) + 1, int(g.max()) + 1))


@dataclass(frozen=True)
class VideoIoU:
    """Video-level IoU after one Hungarian matching of predicted ids to objects."""

    miou: float  # mean over objects; an object left without a prediction scores 0
    per_object: dict[int, float]  # object id -> IoU of its matched prediction over the whole video
    match: dict[int, int]  # object id -> matched predicted id


def video_miou(table: np.ndarray) -> VideoIoU:
    """mIoU of a video from its accumulated contingency table.

    Predicted id 0 (bavos's background) and ground-truth 0 (background) and 255 (void) take no part in the
    matching; pixels void in the ground truth should be left out of ``table`` by the caller.

    Args:
        table: (n_pred, n_gt) pixel counts over the whole video (``pair_counts`` summed over frames).
    """
    objs = [g for g in range(1, table.shape[1]) if g != VOID and table[:, g].sum() > 0]
    preds = list(range(1, table.shape[0]))
    if not objs:
        return VideoIoU(float("nan"), {}, {})
    iou = _jaccard(table)[:, [g - 1 for g in objs]]  # (P, G): objects with pixels, so no union is empty
    per_object = dict.fromkeys(objs, 0.0)
    match: dict[int, int] = {}
    if preds:
        rows, cols = linear_sum_assignment(-iou)
        for r, c in zip(rows, cols, strict=True):
            per_object[objs[c]] = float(iou[r, c])
            match[objs[c]] = preds[r]
    return VideoIoU(float(np.mean(list(per_object.values()))), per_object, match)


def matched_share(a: np.ndarray, b: np.ndarray) -> float:
    """Share of items that fall in matching clusters of two partitions.

    The clusters of ``a`` and ``b`` are matched one to one by a Hungarian assignment on their contingency table
    (maximising the items they share); the result is the matched items over all items: 1.0 for the same partition
    up to renaming, lower as the partitions differ.

    Args:
        a, b: integer labels of the same items, any shape (flattened).
    """
    _, ia = np.unique(np.asarray(a).ravel(), return_inverse=True)
    _, ib = np.unique(np.asarray(b).ravel(), return_inverse=True)
    if ia.size != ib.size:
        raise ValueError(f"the partitions label {ia.size} and {ib.size} items")
    table = pair_counts(ia, ib, int(ia.max()) + 1, int(ib.max()) + 1)
    rows, cols = linear_sum_assignment(-table)
    return float(table[rows, cols].sum() / table.sum())
