"""Real footage from ../shared (skipped when absent): video files and a DAVIS frame folder."""

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED, TINY
from PIL import Image

pytestmark = [pytest.mark.shared, pytest.mark.skipif(not SHARED.is_dir(), reason="../shared is absent")]


@pytest.mark.parametrize(("name", "stride"), [("trackanything_test-sample2.mp4", 2), ("01_dog.mp4", 6)])
def test_real_videos(tmp_path: Path, run_cli, sharp_weights: Path, name: str, stride: int) -> None:
    video = SHARED / "videos" / name
    result = run_cli(
        "segment",
        video,
        "-o",
        tmp_path,
        *TINY,
        "--backbone-weights",
        sharp_weights,
        "--stride",
        stride,
        "--tau",
        "5",
        "--no-overlay",
        "--upsample",
        "nearest",
        "-q",
    )
    # nearest: bilinear masks at 1280x720 were most of this test's time (tested on small frames elsewhere)
    assert result.code == 0, result.err
    summary = json.loads((tmp_path / video.stem / "summary.json").read_text())
    masks = sorted((tmp_path / video.stem / "masks").glob("*.png"))
    assert len(masks) == summary["frames"] > 100
    with Image.open(masks[-1]) as im:
        assert im.mode == "P" and im.size == (summary["width"], summary["height"])


def test_davis_frame_folder(tmp_path: Path, run_cli, sharp_weights: Path) -> None:
    folder = SHARED / "data/davis-mini/JPEGImages/480p/blackswan"
    gt = SHARED / "data/davis-mini/Annotations_unsupervised/480p/blackswan"
    result = run_cli("segment", folder, "-o", tmp_path, *TINY, "--backbone-weights", sharp_weights, "-q")
    assert result.code == 0, result.err
    masks = sorted(p.name for p in (tmp_path / "blackswan" / "masks").iterdir())
    assert masks == sorted(p.name for p in gt.iterdir())  # named like the ground truth, one per frame
    with Image.open(tmp_path / "blackswan" / "masks" / masks[0]) as im:
        assert im.size == (854, 480) and np.asarray(im).dtype == np.uint8
    result = run_cli("eval", tmp_path, "--davis", SHARED / "data/davis-mini", "--sequences", "blackswan", "--json")
    assert result.code == 0, result.err  # bavos segment's output is what bavos eval reads
    scores = json.loads(result.out.splitlines()[-1])
    assert scores["protocol"] == "official" and 0 <= scores["J&F-Mean"] <= 1


def davis_mini_proposals(out: Path) -> None:
    """Five proposals per davis-mini frame: two background halves (1, 2), the object shifted right (3; id 2 in
    the second half), its eroded core (4, first half only) and a random disc (5)."""
    from scipy import ndimage

    from bavos.io.render import write_mask

    rng = np.random.default_rng(0)
    for seq in sorted((SHARED / "data/davis-mini/Annotations_unsupervised/480p").iterdir()):
        files = sorted(seq.glob("*.png"))
        (out / seq.name).mkdir(parents=True)
        for t, f in enumerate(files):
            fg = np.asarray(Image.open(f)) == 1
            h, w = fg.shape
            pred = np.zeros((h, w), np.uint8)
            pred[:, : w // 2], pred[:, w // 2 :] = 1, 2
            pred[np.roll(fg, 6 + t % 5, axis=1)] = 3 if t <= len(files) // 2 else 2
            if t < len(files) // 2:
                pred[ndimage.binary_erosion(fg, iterations=4)] = 4
            cy, cx = rng.integers(0, h), rng.integers(0, w)
            yy, xx = np.mgrid[:h, :w]
            pred[(yy - cy) ** 2 + (xx - cx) ** 2 < 40**2] = 5
            write_mask(out / seq.name / f.name, pred)


# What the official davis2017-evaluation code (davisvideochallenge/davis2017-evaluation @30b698a, run outside
# this project) gives for these proposals; "per-frame" is that code with a Hungarian match in every frame.
OFFICIAL = {
    "official": {
        "J&F-Mean": 0.4452104,
        "J-Mean": 0.4144446,
        "J-Recall": 0.4974490,
        "J-Decay": 0.8331564,
        "F-Mean": 0.4759763,
        "F-Recall": 0.4974490,
        "F-Decay": 0.9721102,
    },
    "per-frame": {
        "J&F-Mean": 0.6114203,
        "J-Mean": 0.4951358,
        "J-Recall": 0.5513010,
        "J-Decay": 0.7474945,
        "F-Mean": 0.7277047,
        "F-Recall": 0.8631378,
        "F-Decay": 0.5353990,
    },
}


@pytest.mark.parametrize("protocol", ["official", "per-frame"])
def test_davis_mini_agrees_with_official_evaluator(tmp_path: Path, run_cli, protocol: str) -> None:
    davis_mini_proposals(tmp_path / "preds")
    result = run_cli(
        "eval", tmp_path / "preds", "--davis", SHARED / "data/davis-mini", "--protocol", protocol, "--json"
    )
    assert result.code == 0, result.err
    scores = json.loads(result.out)
    assert scores["protocol"] == protocol
    for key, value in OFFICIAL[protocol].items():
        assert scores[key] == pytest.approx(value, abs=1e-6), key


@pytest.mark.parametrize("clip", ["videos/01_dog.mp4", "data/davis-mini/JPEGImages/480p/blackswan"])
def test_the_default_cap_keeps_the_clip_s_main_segments(clip: str) -> None:
    """The weightless mode forms many clusters, as trained weights do (and as they may, far-away specks): the 20
    objects kept are the converged level's 20 largest clusters, every other one smaller than each of them and merged
    into its nearest; none kept lives in one frame while a merged one spans the clip."""
    from bavos.api import Segmenter

    seg = Segmenter.from_checkpoint(
        "none", backbone_weights="none", device="cpu", resolution=(96, 144), stride=1, max_key_frames=30
    )
    with seg(SHARED / clip, end="12") as result:
        analysis = result.analysis
        h = analysis.hierarchy
        real = analysis.areas[h.capped_from]  # tokens of each converged-level cluster over the clip
        assert h.capped and h.capped_from == h.converged and len(real) > 100  # many clusters to cap from
        parent = h.parents[-1]
        present = np.stack(
            [
                np.bincount(analysis.labels.frame(t)[h.capped_from], minlength=len(real)) > 0
                for t in range(analysis.processed)
            ]
        ).sum(0)  # frames each cluster is in
    kept = np.array([np.flatnonzero(parent == g)[np.argmax(real[parent == g])] for g in range(parent.max() + 1)])
    merged = np.setdiff1d(np.arange(len(real)), kept)
    assert len(kept) == 20 and real[kept].min() >= real[merged].max()  # the largest: a factor of 1, by area
    assert real[kept].sum() == np.sort(real)[::-1][:20].sum()  # the most area 20 of its clusters can hold
    assert not ((present[kept] == 1).any() and (present[merged] == analysis.processed).any())
