"""--export coco | objects | video, and the frame range."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest
from conftest import TINY, write_clip
from PIL import Image

from bavos.errors import ConfigError
from bavos.io.exports import EXPORTS, Exporter, check_exports
from bavos.io.exports.coco import encode_rle


def masks(folder: Path) -> dict[str, np.ndarray]:
    return {p.stem: np.asarray(Image.open(p)) for p in sorted((folder / "masks").glob("*.png"))}


def test_rle_text_decodes_to_the_mask() -> None:
    from pycocotools import mask as mask_api

    rng = np.random.default_rng(0)
    for shape in [(1, 1), (5, 7), (48, 64), (53, 75)]:
        for fill in (0.0, 0.3, 0.9, 1.0):
            m = rng.random(shape) < fill
            rle = json.loads(json.dumps(encode_rle(m)))  # through JSON, as coco.json holds it
            assert rle["size"] == list(shape)
            decoded = mask_api.decode({"size": rle["size"], "counts": rle["counts"].encode()})
            np.testing.assert_array_equal(decoded, m)


def test_exports_decode_to_the_masks(tmp_path: Path, run_cli) -> None:
    mask_api = pytest.importorskip("pycocotools.mask")
    video = write_clip(tmp_path / "e.mp4", n=6, height=48, width=64)
    result = run_cli(
        "segment",
        video,
        "-o",
        tmp_path,
        *TINY,
        "--backbone-weights",
        "none",
        "--level",
        "0",
        "--export",
        "coco",
        "--export",
        "objects",
        "--export",
        "video",
        "-q",
    )
    assert result.code == 0, result.err
    folder = tmp_path / "e"
    ids = masks(folder)
    objects = sorted({int(i) for m in ids.values() for i in np.unique(m)} - {0})
    assert objects, "the test needs objects"
    entries = json.loads((folder / "coco.json").read_text())
    assert [e["object_id"] for e in entries] == objects
    for entry in entries:
        assert entry["video_id"] == 1 and entry["category_id"] == 1 and len(entry["segmentations"]) == 6
        for frame, rle in zip(sorted(ids), entry["segmentations"], strict=True):
            expected = ids[frame] == entry["object_id"]
            if rle is None:
                assert not expected.any()
            else:
                decoded = mask_api.decode({"size": rle["size"], "counts": rle["counts"].encode()})
                np.testing.assert_array_equal(decoded.astype(bool), expected)
        for frame in ids:
            binary = np.asarray(Image.open(folder / "objects" / str(entry["object_id"]) / f"{frame}.png"))
            np.testing.assert_array_equal(binary == 255, ids[frame] == entry["object_id"])
            assert set(np.unique(binary)) <= {0, 255}
    with av.open(str(folder / "masks.mp4")) as c:
        assert sum(1 for _ in c.decode(c.streams.video[0])) == 6


def test_a_frame_range_keeps_the_videos_numbers_and_times(tmp_path: Path, run_cli) -> None:
    video = write_clip(tmp_path / "r.mp4", n=20, height=48, width=64, fps=10)
    by_number = run_cli(
        "segment", video, "-o", tmp_path / "n", *TINY, "--backbone-weights", "none", "-q", "--start", "5", "--end", "12"
    )
    by_time = run_cli(
        "segment",
        video,
        "-o",
        tmp_path / "t",
        *TINY,
        "--backbone-weights",
        "none",
        "-q",
        "--start",
        "0.5s",
        "--end",
        "1.2s",
    )
    assert by_number.code == by_time.code == 0
    a, b = masks(tmp_path / "n" / "r"), masks(tmp_path / "t" / "r")
    assert list(a) == [f"{i:05d}" for i in range(5, 12)] and list(a) == list(b)
    summary = json.loads((tmp_path / "n" / "r" / "summary.json").read_text())
    assert summary["frames"] == 7 and summary["first_frame"] == 5
    assert all(5 <= o["first_frame"] <= o["last_frame"] <= 11 for o in summary["object_stats"])
    with av.open(str(tmp_path / "n" / "r" / "overlay.mp4")) as c:
        times = [round(float(f.pts * f.time_base), 2) for f in c.decode(c.streams.video[0])]
    assert times == [round(0.1 * i, 2) for i in range(7)]  # from 0, with the video's own spacing
    for args, message in (
        (["--start", "abc"], "give a frame number"),
        (["--start", "9", "--end", "3"], "must come after"),
        (["--export", "gif"], "--export"),
    ):
        bad = run_cli("segment", video, "-o", tmp_path / "x", *TINY, "--backbone-weights", "none", *args)
        assert bad.code == 2 and message in bad.err
    empty = run_cli("segment", video, "-o", tmp_path / "x", *TINY, "--backbone-weights", "none", "--start", "50", "-q")
    assert empty.code == 1 and "no frame in the range 50.. (the video has 20 frames, 2.00 s)" in empty.err


def test_a_folders_times_count_at_its_fps(tmp_path: Path, run_cli) -> None:
    """A trial: a folder's time range was read at 24 fps whatever --fps said (the overlay then used --fps)."""
    from conftest import clip_frames

    folder = tmp_path / "frames"
    folder.mkdir()
    for i, img in enumerate(clip_frames(10, 48, 64)):
        Image.fromarray(img).save(folder / f"{i:05d}.png")
    args = ("segment", folder, *TINY, "--backbone-weights", "none", "-q", "--fps", "10", "--start", "0.5s")
    result = run_cli(*args, "--end", "0.8s", "-o", tmp_path / "a")  # each input is checked, then run: both at 10
    assert result.code == 0, result.err
    assert list(masks(tmp_path / "a" / "frames")) == ["00005", "00006", "00007"]  # 24 fps: 00012.. (none)
    with av.open(str(tmp_path / "a" / "frames" / "overlay.mp4")) as c:
        times = [round(float(f.pts * f.time_base), 2) for f in c.decode(c.streams.video[0])]
    assert times == [0.0, 0.1, 0.2]


@pytest.mark.parametrize("name", list(EXPORTS))
def test_each_export_writes_what_it_declares_and_a_result_may_hold_it(tmp_path: Path, name: str) -> None:
    """The registry is the one place an export is declared: what it writes is what it says, and a result folder
    holding it is still bavos's (RESULT_FILES and the folder checks follow from the registry)."""
    from bavos.io.video import Frame, VideoInfo
    from bavos.pipeline.outputs import RESULT_FILES, _foreign_entry

    export = EXPORTS[name]
    info = VideoInfo(tmp_path, True, 8, 6, 24.0, None, 0, 2)
    exporter = Exporter(tmp_path, (name,), info, 2, 3)
    for i in range(2):
        ids = np.zeros((6, 8), dtype=np.uint8)
        ids[:3, : 2 + 2 * i] = 1
        ids[4:, 5:] = 2
        exporter.add(Frame(i, np.zeros((6, 8, 3), np.uint8), f"{i:05d}", None, i), ids)
    exporter.close("clip")
    written = {p.name for p in tmp_path.iterdir()}
    assert written == set(export.files) | ({export.folder[0]} if export.folder else set())
    assert set(export.files) <= RESULT_FILES
    assert _foreign_entry(tmp_path) is None
    (tmp_path / "notes.txt").write_text("mine")
    assert _foreign_entry(tmp_path) == "notes.txt"


def test_an_unknown_export_is_named() -> None:
    with pytest.raises(ConfigError, match="--export must be one of coco, objects, video, got gif, png"):
        check_exports(("coco", "png", "gif"))


def test_exports_listed_with_commas_are_several(tmp_path: Path, run_cli) -> None:
    """A trial: --export coco,video was "--export must be one of coco, objects, video, got coco,video"."""
    from bavos.config import SegmentConfig

    assert SegmentConfig(exports=("coco,video", "objects")).exports == ("coco", "video", "objects")
    assert SegmentConfig(exports="coco, video").exports == ("coco", "video")
    video = write_clip(tmp_path / "e.mp4", n=3, height=48, width=64)
    result = run_cli(
        "segment", video, "-o", tmp_path / "o", *TINY, "--backbone-weights", "none", "-q", "--export", "coco,video"
    )
    assert result.code == 0, result.err
    assert (tmp_path / "o" / "e" / "coco.json").is_file() and (tmp_path / "o" / "e" / "masks.mp4").is_file()
    bad = run_cli("segment", video, "-o", tmp_path / "x", *TINY, "--backbone-weights", "none", "--export", "coco,gif")
    assert bad.code == 2 and "--export must be one of coco, objects, video, got gif" in bad.err
