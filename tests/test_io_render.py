from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bavos.io.render import PALETTE, overlay, write_mask


def test_davis_palette() -> None:
    assert PALETTE.shape == (256, 3)
    assert PALETTE[:5].tolist() == [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0], [0, 0, 128]]
    assert PALETTE[255].tolist() == [224, 224, 192]  # DAVIS's void colour
    assert len({tuple(c) for c in PALETTE.tolist()}) == 256


def test_write_mask_is_indexed_png_with_palette(tmp_path: Path) -> None:
    labels = np.array([[0, 1, 2], [3, 0, 1]], dtype=np.uint8)
    write_mask(tmp_path / "m.png", labels)
    with Image.open(tmp_path / "m.png") as im:
        assert im.mode == "P"
        np.testing.assert_array_equal(np.asarray(im), labels)
        assert im.getpalette()[:9] == [0, 0, 0, 128, 0, 0, 0, 128, 0]


def test_overlay_leaves_background_and_blends_objects() -> None:
    image = np.full((2, 2, 3), 100, dtype=np.uint8)
    labels = np.array([[0, 1], [2, 0]])
    out = overlay(image, labels, alpha=0.5)
    assert out[0, 0].tolist() == [100, 100, 100]
    assert out[0, 1].tolist() == [114, 50, 50]  # (100 + 128) / 2 in red, 100 / 2 elsewhere


def test_legend_shares_tell_small_objects_apart(tmp_path: Path) -> None:
    from bavos.io.pictures import ObjectRow, save_preview, share_text

    assert [share_text(s) for s in (0.432, 0.0027, 0.000041, 0.0)] == ["43.2 %", "0.27 %", "0.0041 %", "0 %"]
    rows = [ObjectRow(i, 0.5 / 2**i if i < 10 else 1e-6, 0, 3) for i in range(1, 2001)]  # 2,000 objects
    thumbs = [(0, Image.new("RGB", (320, 240), "grey"))]
    save_preview(tmp_path / "p.png", "2000 objects", thumbs, rows)
    with Image.open(tmp_path / "p.png") as im:
        assert im.width <= 1400 and im.height <= 700  # the legend stays a legend, however many objects


def _levels(n: int, seed: int = 0):
    """Levels of n level-0 clusters with areas spread like real ones (a few large, many small), merged in threes
    to a converged level, cut there and capped at 20."""
    from bavos.io.pictures import Levels

    rng = np.random.default_rng(seed)
    areas = [np.maximum(1, (4000 / np.arange(1, n + 1) ** 1.3 * rng.uniform(0.5, 1.5, n)).astype(np.int64))]
    parents = [np.zeros(0, np.int64)]
    while len(areas[-1]) > 3:
        k = -(-len(areas[-1]) // 3)
        parent = np.arange(len(areas[-1])) // 3
        parents.append(parent)
        areas.append(np.bincount(parent, weights=areas[-1], minlength=k).astype(np.int64))
    converged = len(areas) - 1
    top = areas[-1]
    order = np.argsort(-top)
    output_ids = np.empty(len(top), np.int64)
    output_ids[order] = np.arange(len(top))
    return Levels(areas, parents, converged, converged, None, output_ids)


@pytest.mark.parametrize(("clusters", "bundled"), [(1, False), (20, False), (2000, True)])
def test_hierarchy_picture_stays_readable(tmp_path: Path, clusters: int, bundled: bool) -> None:
    """At 1, 20 and 2,000 clusters: every level drawn, at most one box per 3 pixels, the rest bundled and counted."""
    from bavos.io.pictures import save_hierarchy_picture

    levels = _levels(clusters)
    drawn = save_hierarchy_picture(tmp_path / "h.png", levels)
    assert len(drawn) == len(levels.areas)
    for (boxes, small), areas in zip(drawn, levels.areas, strict=True):
        assert boxes + small == len(areas) and boxes <= (1200 - 200) / 3
    assert (drawn[0][1] > 0) == bundled
    with Image.open(tmp_path / "h.png") as im:
        assert im.width == 1200 and im.height == 10 + len(levels.areas) * 76
