"""Where frames come from: the ``FrameSource`` protocol the pipeline reads, sources for frames held in memory or
given by an iterable, and ``open_source``, which opens any of them (a file, a folder, an array, an iterable).

Every source may be read several times (the pipeline makes several passes), each time from the first frame of its
range.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from bavos.errors import InputError, OutputError, plain_os_error
from bavos.io.video import DEFAULT_FOLDER_FPS, Frame, FrameRange, RangedSource, VideoInfo, VideoSource, url_problem


@runtime_checkable
class FrameSource(Protocol):
    """Frames of one video, read as often as asked.

    Attributes:
        path: where the frames come from (a name for sources that are not on disk).
        range: the part of the video read; frame numbers and names stay the whole video's.
        info: size, rate and count (of the range) as far as known before decoding.
        warnings: what differed from what the input announced, one line each.
        from_path: the frames are read from ``path`` on disk (a result then must not replace it).
        skipped_packets: packets of the file gave no frame (damaged, or before the first frame that decodes), so its
            frames are numbered by decoding it from the start, not by its packets (a reader seeking by packets is
            off after them); known once ``frames()`` has read them.
    """

    path: Path
    range: FrameRange
    info: VideoInfo
    warnings: list[str]
    from_path: bool
    skipped_packets: bool

    def frames(self) -> Iterator[Frame]:
        """Every frame of the range in order, (H, W, 3) uint8 RGB, upright."""
        ...

    def frames_expected(self) -> int | None:
        """The frames ``frames()`` is expected to give, or None when that is not known before reading."""
        ...

    def warn(self, message: str) -> None:
        """Record a warning about the input (once)."""
        ...


class ArraySource(RangedSource):
    """Frames held in a (T, H, W, 3) uint8 array, read like a frame folder (names 00000, 00001, ...).

    Raises:
        InputError: not a (T, H, W, 3) uint8 array with T > 0.
    """

    from_path = False

    def __init__(
        self, frames: np.ndarray, fps: float = DEFAULT_FOLDER_FPS, frame_range: FrameRange | None = None
    ) -> None:
        frames = as_array(frames, "frames")
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or not len(frames):
            raise InputError(f"frames must be a (T, H, W, 3) uint8 array with T > 0, got {frames.shape} {frames.dtype}")
        super().__init__(Path("array"), frame_range)
        self._frames = frames
        self.info = _info(self.path, frames.shape[1:], len(frames), fps)
        self._narrow()

    def _all_frames(self) -> Iterator[Frame]:
        for i, image in enumerate(self._frames):
            yield Frame(i, np.ascontiguousarray(image), f"{i:05d}", None, i)


class IterableSource(RangedSource):
    """Frames from an iterable (a generator, a camera), read once into a raw file in ``folder``: later passes read
    it back, so memory does not hold the video. Only the range's frames are kept, and the iterable is not read past
    the range's end (a camera's stream need not end).

    Raises:
        InputError: a frame that is not (H, W, 3) uint8, a frame of another size than the first, or no frame.
        OutputError: ``folder`` cannot hold the frames (a full disk).
    """

    from_path = False

    def __init__(
        self,
        frames: Iterable[np.ndarray],
        folder: Path,
        fps: float = DEFAULT_FOLDER_FPS,
        frame_range: FrameRange | None = None,
    ) -> None:
        super().__init__(Path("frames"), frame_range)
        self._raw = Path(folder) / "frames.u8"
        self._shape, self._first, self._count = _write_raw(frames, self._raw, self.range, fps)
        self.info = _info(self.path, self._shape, self._first + self._count, fps)
        self._narrow()

    def _all_frames(self) -> Iterator[Frame]:
        size = int(np.prod(self._shape))
        with open(self._raw, "rb") as f:
            for j in range(self._count):
                i = self._first + j
                image = np.frombuffer(f.read(size), dtype=np.uint8).reshape(self._shape)
                yield Frame(i, image, f"{i:05d}", None, i)


_END = object()  # what an iterable gives past its last frame


def _write_raw(
    frames: Iterable[np.ndarray], raw: Path, frame_range: FrameRange, fps: float
) -> tuple[tuple[int, ...], int, int]:
    """The bytes of the frames in ``frame_range`` into ``raw``, the iterable read no further than its end; returns
    the frames' (H, W, 3) shape, the number of the first kept and how many were kept."""
    shape: tuple[int, ...] | None = None
    count = kept = 0
    first: int | None = None
    try:
        with open(raw, "wb") as out:
            iterator = iter(frames)
            while not frame_range.contains(count, count / fps)[1]:  # past the end: the next frame is not pulled
                image = next(iterator, _END)
                if image is _END:
                    break
                if image is None:  # a camera's failed read: not the end of the frames
                    raise InputError(f"frame {count}: expected (H, W, 3) uint8, got None")
                image = as_array(image, f"frame {count}")
                if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
                    raise InputError(f"frame {count}: expected (H, W, 3) uint8, got {image.shape} {image.dtype}")
                if shape is not None and image.shape != shape:
                    raise InputError(f"frame {count} is {image.shape[:2]}, the first was {shape[:2]}")
                shape = image.shape
                if frame_range.contains(count, count / fps)[0]:
                    first = count if first is None else first
                    out.write(np.ascontiguousarray(image).tobytes())
                    kept += 1
                count += 1
    except OSError as e:
        raise OutputError(f"{raw.parent}: cannot keep the frames there: {plain_os_error(e, '')}") from e
    if shape is None:
        raise InputError("the iterable gave no frames")
    return shape, count if first is None else first, kept


def as_array(value: object, what: str) -> np.ndarray:
    """``value`` as a NumPy array: a torch tensor is taken from its device (a copy where it is not the CPU's), and
    one that holds no data (the meta device) is refused.

    Raises:
        InputError: ``value`` cannot give its values.
    """
    if _is_tensor(value):
        tensor: Any = value
        if tensor.device.type == "meta":
            raise InputError(f"{what}: a tensor on the meta device holds no values")
        return np.asarray(tensor.detach().cpu())
    return np.asarray(value)


def _is_tensor(value: object) -> bool:
    """A torch tensor, told without importing torch."""
    return type(value).__module__.startswith("torch") and hasattr(value, "detach")


def as_path(video: str | bytes | os.PathLike[str] | os.PathLike[bytes]) -> Path:
    """A path given as ``str``, ``bytes`` or any ``os.PathLike``.

    Raises:
        InputError: it is empty (``Path("")`` would be the working folder), or a URL.
    """
    text = os.fsdecode(os.fspath(video))
    if not text:
        raise InputError("an empty path: give a video file or a folder of frames")
    url = url_problem(text)  # said as typed, before a Path drops a slash of it
    if url is not None:
        raise InputError(url)
    return Path(text)


def _info(path: Path, shape: tuple[int, ...], count: int, fps: float) -> VideoInfo:
    """What a source of ``count`` frames of ``shape`` (H, W, 3) at ``fps`` holds, as a frame folder's info."""
    return VideoInfo(path, True, shape[1], shape[0], fps, None, 0, count)


Video = str | bytes | os.PathLike[str] | FrameSource | np.ndarray | Iterable[np.ndarray]


def open_source(
    video: Video, frame_range: FrameRange | None = None, fps: float = DEFAULT_FOLDER_FPS, workdir: Path | None = None
) -> FrameSource:
    """A source for ``video``: a path (a video file or a folder of frames), a source opened already (its own range
    then holds), a (T, H, W, 3) uint8 array, or an iterable of (H, W, 3) uint8 frames.

    Args:
        frame_range: the part to read (frame numbers or times).
        fps: the frame rate given to frames that carry none (folders, arrays, iterables), in frames per second.
        workdir: where an iterable's frames are kept while the source lives (required for iterables).

    Raises:
        InputError: the video cannot be read (see each source).
    """
    if isinstance(video, FrameSource):  # opened already (its own range)
        return video
    if isinstance(video, str | bytes | os.PathLike):
        return VideoSource(as_path(video), frame_range, fps)
    if isinstance(video, np.ndarray) or _is_tensor(video):
        return ArraySource(as_array(video, "frames"), fps, frame_range)
    if not isinstance(video, Iterable) or isinstance(video, bytearray):
        raise InputError(
            f"cannot segment an object of type {type(video).__name__}: give a path (a video file or a folder of "
            "frames), a (T, H, W, 3) uint8 array or an iterable of (H, W, 3) uint8 frames"
        )
    if workdir is None:
        raise ValueError("open_source: an iterable of frames needs a workdir")
    return IterableSource(video, workdir, fps, frame_range)
