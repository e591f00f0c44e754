"""FrameReader: any frame by its number, equal to the frame VideoSource decodes in order."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
from conftest import SHARED, clip_frames, write_clip

from bavos.errors import InputError
from bavos.io.seek import FrameReader
from bavos.io.video import VideoSource


def _gop_clip(path: Path, n: int) -> Path:
    """H.264 with B-frames and a keyframe every 8 frames: seeking lands between keyframes."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25, options={"g": "8", "bf": "2", "keyint_min": "8"})
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for img in clip_frames(n, 48, 64):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        container.mux(stream.encode())
    return path


def _check(path: Path, order: list[int]) -> None:
    source = VideoSource(path)
    frames = [f.image for f in source.frames()]
    reader = FrameReader(path, (source.info.height, source.info.width))
    try:
        for number in order:
            np.testing.assert_array_equal(reader.read(number), frames[number], err_msg=f"frame {number}")
        with pytest.raises(InputError, match=f"no frame {len(frames)}"):
            reader.read(len(frames))
    finally:
        reader.close()


def test_any_order_gives_the_frames_decoded_in_order(tmp_path: Path) -> None:
    video = _gop_clip(tmp_path / "gop.mp4", 40)
    _check(video, [13, 0, 39, 14, 15, 16, 9, 8, 31, 24, 25, 2, 39])


def test_rotation_odd_sizes_and_folders(tmp_path: Path) -> None:
    _check(write_clip(tmp_path / "r.mp4", n=10, rotation=90), [7, 0, 9, 3, 4])
    _check(write_clip(tmp_path / "odd.mp4", n=6, height=53, width=75), [5, 1, 2])
    folder = tmp_path / "frames"
    folder.mkdir()
    from PIL import Image

    for i, image in enumerate(clip_frames(5, 24, 32)):
        Image.fromarray(image).save(folder / f"{i:05d}.png")
    _check(folder, [4, 0, 2])


@pytest.mark.shared
@pytest.mark.skipif(not (SHARED / "videos").is_dir(), reason="needs ../shared")
def test_a_real_clip(tmp_path: Path) -> None:
    _check(SHARED / "videos" / "trackanything_test-sample2.mp4", [100, 0, 148, 57, 58, 12])
