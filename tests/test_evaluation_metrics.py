"""bavos.evaluation.metrics against hand-computed answers and the plain implementation in reference_metrics.py."""

from __future__ import annotations

import numpy as np
import pytest
import reference_metrics as ref
from scipy import ndimage

from bavos.evaluation import metrics


def blobs(rng: np.random.Generator, shape: tuple[int, int], n: int) -> np.ndarray:
    """(H, W) uint8 ids: n random rectangles and discs painted over a 0 background (some may be covered)."""
    h, w = shape
    out = np.zeros(shape, dtype=np.uint8)
    yy, xx = np.mgrid[:h, :w]
    for i in range(1, n + 1):
        cy, cx = rng.integers(0, h), rng.integers(0, w)
        if rng.random() < 0.5:
            out[(yy - cy) ** 2 + (xx - cx) ** 2 <= rng.integers(2, max(3, h // 3)) ** 2] = i
        else:
            out[cy : cy + rng.integers(1, h // 2 + 2), cx : cx + rng.integers(1, w // 2 + 2)] = i
    return out


def square(shape: tuple[int, int], top: int, left: int, side: int, value: int = 1) -> np.ndarray:
    out = np.zeros(shape, dtype=np.uint8)
    out[top : top + side, left : left + side] = value
    return out


def test_boundary_map_matches_pixel_loop() -> None:
    rng = np.random.default_rng(0)
    for _ in range(5):
        seg = blobs(rng, (17, 23), 3) > 0
        np.testing.assert_array_equal(metrics.boundary_map(seg), ref.boundary(seg))
    seg = np.ones((5, 6), bool)  # a full frame: only the last-row/column rules can fire, and they do not
    assert not metrics.boundary_map(seg).any()


@pytest.mark.parametrize("radius", [0, 1, 3, 8])
def test_dilate_points_is_disk_dilation(radius: int) -> None:
    rng = np.random.default_rng(radius)
    shape = (31, 45)
    pts = rng.random(shape) < 0.01
    pts[0, 0] = pts[-1, -1] = True  # reach the corners: the crop must be clipped to the image
    ys, xs = np.nonzero(pts)
    expected = ndimage.binary_dilation(pts, ref.disk(radius)) if radius else pts
    np.testing.assert_array_equal(metrics.dilate_points(shape, ys, xs, radius), expected)


def test_boundary_radius_is_ceil_of_diagonal_fraction() -> None:
    assert metrics.boundary_radius(480, 854) == 8  # ceil(0.008 * 979.6)
    assert metrics.boundary_radius(480, 854, bound_th=3) == 3


def test_identical_masks_score_one() -> None:
    gt = blobs(np.random.default_rng(1), (40, 60), 4)
    j, f = metrics.frame_scores(gt, gt, int(gt.max()), int(gt.max()))
    present = [i for i in range(1, gt.max() + 1) if (gt == i).any()]
    for i in present:
        assert j[i - 1, i - 1] == 1.0 and f[i - 1, i - 1] == 1.0


@pytest.mark.parametrize("k", [1, 3, 6])
def test_shifted_square_iou_by_hand(k: int) -> None:
    # A 20x20 square and the same square k pixels to the right: intersection 20*(20-k), union 20*(20+k).
    shape = (60, 80)  # diagonal 100: tolerance ceil(0.8) = 1 pixel
    gt, pred = square(shape, 10, 10, 20), square(shape, 10, 10 + k, 20)
    j, f = metrics.frame_scores(pred, gt, 1, 1)
    assert j[0, 0] == pytest.approx((20 - k) / (20 + k))
    if k == 1:
        assert f[0, 0] == 1.0  # every boundary pixel has one of the other mask's within 1 pixel
    else:
        assert f[0, 0] < 1.0


def test_shifted_square_boundary_f_by_hand() -> None:
    # 10x10 squares at columns 10..19 (gt) and 13..22 (pred), rows 10..19; tolerance 1 pixel (a plus shape).
    # A square's boundary map: rows 9 and 19 over columns c-1..c+9 (11 each), columns c-1 and c+9 over rows
    # 10..18 (9 each): 40 pixels.
    shape = (40, 40)
    gt, pred = square(shape, 10, 10, 10), square(shape, 10, 13, 10)
    assert metrics.boundary_map(gt > 0).sum() == 40
    j, f = metrics.frame_scores(pred, gt, 1, 1, bound_th=1)
    # pred's boundary within 1 pixel of gt's: rows 9 and 19 at columns 12..20 (9 each), and its left edge
    # (column 12) only at rows 10 and 18, next to gt's rows 9 and 19: 20 of 40. The shift is symmetric, so
    # recall is 20 / 40 as well: F = 0.5.
    assert f[0, 0] == pytest.approx(0.5)
    assert j[0, 0] == pytest.approx(70 / 130)


def test_void_pixels_are_left_out() -> None:
    shape = (30, 30)
    gt = square(shape, 5, 5, 10)
    pred = square(shape, 5, 5, 10)
    pred[20:25, 20:25] = 1  # a false positive ...
    gt_void = gt.copy()
    gt_void[20:25, 20:25] = metrics.VOID  # ... that falls on void pixels
    assert metrics.frame_scores(pred, gt, 1, 1)[0][0, 0] == pytest.approx(100 / 125)
    j, f = metrics.frame_scores(pred, gt_void, 1, 1)
    assert j[0, 0] == 1.0 and f[0, 0] == 1.0


def test_empty_masks() -> None:
    gt = square((20, 20), 2, 2, 5)
    j, f = metrics.frame_scores(np.zeros_like(gt), gt, 2, 1)  # proposals 1 and 2 absent
    np.testing.assert_array_equal(j, 0.0)
    np.testing.assert_array_equal(f, 0.0)
    empty = np.zeros_like(gt)
    j, f = metrics.frame_scores(empty, empty, 1, 1)  # object absent from this frame and not predicted
    assert j[0, 0] == 1.0 and f[0, 0] == 1.0


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("bound_th", [0.008, 0.05, 2])
def test_frame_scores_match_reference(seed: int, bound_th: float) -> None:
    rng = np.random.default_rng(seed)
    shape = (24, 37)
    gt = blobs(rng, shape, 3)
    if seed % 2:
        gt[rng.random(shape) < 0.05] = metrics.VOID
    pred = blobs(rng, shape, 5)
    j, f = metrics.frame_scores(pred, gt, 5, 3, bound_th=bound_th)
    rj, rf = ref.sequence_jf(pred[None], gt[None], 5, 3, bound_th=bound_th)
    np.testing.assert_allclose(j, rj[:, :, 0], atol=1e-12)
    np.testing.assert_allclose(f, rf[:, :, 0], atol=1e-12)


def test_official_matching_is_the_best_assignment() -> None:
    rng = np.random.default_rng(3)
    j, f = rng.random((5, 3, 7)), rng.random((5, 3, 7))
    jm, fm, match = metrics.match_per_sequence(j, f)
    best, perm = ref.best_assignment((j.mean(2) + f.mean(2)) / 2)
    assert tuple(match) == perm
    assert (jm.mean(1) + fm.mean(1)).sum() / 2 == pytest.approx(best)


def test_per_frame_is_at_least_official_and_differs_on_a_swap() -> None:
    # Proposal 1 covers the object in the first half of the video, proposal 2 in the second half.
    shape, n = (30, 40), 8
    gt = np.stack([square(shape, 5, 5 + t, 12) for t in range(n)])
    pred = np.stack([square(shape, 5, 5 + t, 12, value=1 if t < n // 2 else 2) for t in range(n)])
    j = np.zeros((2, 1, n))
    f = np.zeros((2, 1, n))
    for t in range(n):
        j[:, :, t], f[:, :, t] = metrics.frame_scores(pred[t], gt[t], 2, 1)
    jo, fo, _ = metrics.match_per_sequence(j, f)
    jp, fp, match = metrics.match_per_frame(j, f)
    assert jo.mean() == pytest.approx(0.5) and fo.mean() == pytest.approx(0.5)
    assert jp.mean() == 1.0 and fp.mean() == 1.0
    assert match[0].tolist() == [0] * (n // 2) + [1] * (n // 2)
    rng = np.random.default_rng(4)
    for _ in range(5):
        j, f = rng.random((4, 3, 6)), rng.random((4, 3, 6))
        jo, fo, _ = metrics.match_per_sequence(j, f)
        jp, fp, _ = metrics.match_per_frame(j, f)
        assert (jp + fp).mean() >= (jo + fo).mean() - 1e-12


def test_statistics_by_hand() -> None:
    # T = 4: quarter edges round(linspace(1, 4, 5)) - 1 = [0, 1, 2, 2, 3]; first bin [1, 1], last bin [0, 0].
    mean, recall, decay = metrics.statistics(np.array([1.0, 1.0, 0.0, 0.0]))
    assert (mean, recall, decay) == (0.5, 0.5, 1.0)
    assert metrics.statistics(np.array([0.7])) == (0.7, 1.0, 0.0)
    # T = 300 must not wrap around (the official code casts the bin edges to uint8).
    values = np.linspace(1, 0, 300)
    assert metrics.statistics(values)[2] == pytest.approx(values[:76].mean() - values[224:].mean())


@pytest.mark.parametrize("seed", range(5))
def test_ari_matches_pair_counting(seed: int) -> None:
    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, 4, 60), rng.integers(0, 3, 60)
    table = metrics.pair_counts(a, b, 4, 3)
    assert metrics.adjusted_rand_index(table) == pytest.approx(ref.ari(a, b))


def test_ari_special_cases() -> None:
    a = np.array([0, 0, 1, 1, 2])
    assert metrics.adjusted_rand_index(metrics.pair_counts(a, (a + 1) % 3, 3, 3)) == 1.0  # renamed labels
    one = np.zeros(5, np.int64)
    assert metrics.adjusted_rand_index(metrics.pair_counts(one, one, 1, 1)) == 1.0


def test_fg_ari_ignores_background_and_void() -> None:
    gt = np.array([[0, 1, 1, 2, 2, 255]])
    pred = np.array([[5, 3, 3, 4, 4, 3]])
    assert metrics.fg_ari(pred, gt) == 1.0
    pred_bad = np.array([[3, 3, 4, 3, 4, 3]])
    assert metrics.fg_ari(pred_bad, gt) == pytest.approx(ref.ari(np.array([3, 4, 3, 4]), np.array([1, 1, 2, 2])))
    assert np.isnan(metrics.fg_ari(pred, np.zeros_like(gt)))


def test_video_miou_by_hand() -> None:
    # Object 1: 4 pixels, predicted id 2 covers 3 of them plus 1 more -> IoU 3/5. Object 2: nothing -> 0.
    gt = np.array([[1, 1, 1, 1, 2, 0, 0]])
    pred = np.array([[2, 2, 2, 0, 0, 2, 0]])
    res = metrics.video_miou(metrics.pair_counts(pred, gt, 3, 3))
    assert res.per_object == {1: pytest.approx(3 / 5), 2: 0.0}
    assert res.match[1] == 2
    assert res.miou == pytest.approx(0.3)
