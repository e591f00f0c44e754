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


def _check(path: Path, order: list[int], counted: bool = False) -> None:
    source = VideoSource(path)
    frames = [f.image for f in source.frames()]
    reader = FrameReader(path, (source.info.height, source.info.width), len(frames) if counted else None)
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


@pytest.mark.parametrize("counted", [False, True])
def test_videos_whose_packets_do_not_number_their_frames(tmp_path: Path, counted: bool) -> None:
    """A trial: the viewer showed the wrong frame, or none ("frame 0 could not be decoded"), where the packets'
    times do not number the frames that decode: frames lost before a damaged first keyframe, H.264 with B-frames in
    AVI (its frames carry their packets' order), a damaged packet midway; and where a seek finds nothing (MPEG-TS
    that starts at 1.2 s) or cannot be made (a raw H.264 stream)."""
    from test_field_inputs import damaged_first_keyframe, damaged_mjpeg, h264_bframes, write_stream

    _check(damaged_first_keyframe(tmp_path / "first.mp4"), [0, 5, 37, 1, 20, 2], counted)
    _check(h264_bframes(tmp_path / "b.avi", 30, "avi"), [3, 0, 29, 1, 17, 2], counted)
    if counted:  # every MJPEG packet a keyframe: only the count tells that one did not decode (a whole result's)
        _check(damaged_mjpeg(tmp_path / "mid.avi"), [15, 0, 18, 9, 10, 3], counted)
    _check(write_stream(tmp_path / "ts.ts", 30, 64, 48, offset=1.2, codec="libx264"), [29, 0, 14, 15, 3], counted)
    raw = tmp_path / "raw.h264"
    with av.open(str(raw), "w", format="h264") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for img in clip_frames(12, 48, 64):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        container.mux(stream.encode())
    _check(raw, [11, 0, 5, 1], counted)
