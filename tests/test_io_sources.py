"""open_source: a file, a folder, an array and an iterable give the same frames, each a FrameSource."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import clip_frames

from bavos.errors import InputError
from bavos.io.sources import ArraySource, FrameSource, IterableSource, open_source
from bavos.io.video import FrameRange, VideoSource


def _folder(path: Path, frames: list[np.ndarray]) -> Path:
    from PIL import Image

    path.mkdir()
    for i, image in enumerate(frames):
        Image.fromarray(image).save(path / f"{i:05d}.png")
    return path


def test_every_kind_of_video_is_a_frame_source_with_the_same_frames(tmp_path: Path) -> None:
    frames = clip_frames(5, 24, 32)
    part = FrameRange.parse("1", "4")
    sources = [
        open_source(_folder(tmp_path / "f", frames), part),
        open_source(np.stack(frames), part),
        open_source(iter(frames), part, workdir=tmp_path),
    ]
    assert [type(s) for s in sources] == [VideoSource, ArraySource, IterableSource]
    for source in sources:
        assert isinstance(source, FrameSource)
        assert source.frames_expected() == 3 and source.info.width == 32 and source.info.height == 24
        got = list(source.frames())
        assert [f.number for f in got] == [1, 2, 3] and [f.index for f in got] == [0, 1, 2]
        for frame in got:
            np.testing.assert_array_equal(frame.image, frames[frame.number])
        assert [f.number for f in source.frames()] == [1, 2, 3]  # read again from the range's first frame
    assert open_source(sources[0]) is sources[0]  # an opened source keeps its own range


def test_what_open_source_refuses(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"frames must be a \(T, H, W, 3\) uint8 array"):
        open_source(np.zeros((2, 4, 4), dtype=np.uint8))
    with pytest.raises(InputError, match="the iterable gave no frames"):
        open_source(iter([]), workdir=tmp_path)
    with pytest.raises(InputError, match=r"frame 1 is \(4, 6\), the first was \(4, 4\)"):
        open_source(iter([np.zeros((4, 4, 3), np.uint8), np.zeros((4, 6, 3), np.uint8)]), workdir=tmp_path)
    with pytest.raises(ValueError, match="needs a workdir"):
        open_source(iter([np.zeros((4, 4, 3), np.uint8)]))
