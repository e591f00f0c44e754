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


def test_an_endless_iterable_is_read_to_the_range_s_end_and_keeps_only_the_range(tmp_path: Path) -> None:
    """A trial: ``seg(frames(), end=30)`` pulled all 1,500 frames of a generator and kept them raw on disk (a camera
    would never return)."""
    import itertools

    from bavos.errors import OutputError

    pulled = []

    def camera():  # never ends
        for i in itertools.count():
            pulled.append(i)
            yield np.full((4, 6, 3), i % 256, np.uint8)

    source = open_source(camera(), FrameRange.parse("5", "9"), workdir=tmp_path)
    assert pulled == list(range(9))  # frames 0..8: the 9th is not asked for
    assert (tmp_path / "frames.u8").stat().st_size == 4 * 4 * 6 * 3  # frames 5..8 alone
    got = list(source.frames())
    assert [f.number for f in got] == [5, 6, 7, 8] and [int(f.image[0, 0, 0]) for f in got] == [5, 6, 7, 8]
    assert source.frames_expected() == 4
    timed = open_source(camera(), FrameRange.parse("0", "0.5s"), fps=10, workdir=tmp_path)
    assert [f.number for f in timed.frames()] == [0, 1, 2, 3, 4]
    with pytest.raises(OutputError, match=r"cannot keep the frames there"):
        open_source(iter(clip_frames(2, 4, 6)), workdir=tmp_path / "gone")
