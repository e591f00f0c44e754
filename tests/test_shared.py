"""Real footage from ../shared (skipped when absent): video files and a DAVIS frame folder."""

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED, TINY
from PIL import Image

pytestmark = [pytest.mark.shared, pytest.mark.skipif(not SHARED.is_dir(), reason="../shared is absent")]


@pytest.mark.parametrize(("name", "stride"), [("trackanything_test-sample2.mp4", 2), ("01_dog.mp4", 6)])
def test_real_videos(tmp_path: Path, run_cli, sharp_weights: Path, name: str, stride: int) -> None:  # noqa: ANN001
    video = SHARED / "videos" / name
    result = run_cli("segment", video, "-o", tmp_path, *TINY, "--backbone-weights", sharp_weights,
                     "--stride", stride, "--tau", "5", "--no-overlay", "-q")
    assert result.code == 0, result.err
    summary = json.loads((tmp_path / video.stem / "summary.json").read_text())
    masks = sorted((tmp_path / video.stem / "masks").glob("*.png"))
    assert len(masks) == summary["frames"] > 100
    with Image.open(masks[-1]) as im:
        assert im.mode == "P" and im.size == (summary["width"], summary["height"])


def test_davis_frame_folder(tmp_path: Path, run_cli, sharp_weights: Path) -> None:  # noqa: ANN001
    folder = SHARED / "data/davis-mini/JPEGImages/480p/blackswan"
    gt = SHARED / "data/davis-mini/Annotations_unsupervised/480p/blackswan"
    result = run_cli("segment", folder, "-o", tmp_path, *TINY, "--backbone-weights", sharp_weights, "-q")
    assert result.code == 0, result.err
    masks = sorted(p.name for p in (tmp_path / "blackswan" / "masks").iterdir())
    assert masks == sorted(p.name for p in gt.iterdir())  # named like the ground truth, one per frame
    with Image.open(tmp_path / "blackswan" / "masks" / masks[0]) as im:
        assert im.size == (854, 480) and np.asarray(im).dtype == np.uint8
