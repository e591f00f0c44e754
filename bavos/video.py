"""Reading videos and frame folders (PyAV, Pillow) as streams of upright RGB frames; writing overlay videos.

Frames are produced one at a time as ``(H, W, 3) uint8`` arrays, so a long video is never held in memory.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageOps

from bavos.errors import InputError, OutputError

FRAME_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
DEFAULT_FOLDER_FPS = 24.0


@dataclass(frozen=True)
class Frame:
    """One decoded frame.

    Attributes:
        index: position among the frames read (within the frame range), from 0.
        image: (H, W, 3) uint8 RGB, upright (rotation metadata applied).
        name: file stem for frame folders ("00000"), else the zero-padded frame number.
        pts: presentation timestamp in ``time_base`` units, or None (frame folders, missing timestamps).
        number: position in the whole video (decode order, from 0): ``index`` plus the range's start.
    """

    index: int
    image: np.ndarray
    name: str
    pts: int | None = None
    number: int = -1


@dataclass(frozen=True)
class FrameRange:
    """Part of a video: frames from ``start`` (included) to ``end`` (excluded), each a frame number or, with
    ``seconds``, a time. ``parse`` reads "120" (frame 120) and "12.5s" (12.5 seconds)."""

    start: float | None = None
    end: float | None = None
    seconds: tuple[bool, bool] = (False, False)

    @staticmethod
    def parse(start: str | None, end: str | None) -> FrameRange:
        """Raises InputError for a value that is neither a frame number nor a time ('12.5s'), or an empty range."""
        values, seconds = [], []
        for option, text in (("--start", start), ("--end", end)):
            if text is None:
                values.append(None)
                seconds.append(False)
                continue
            is_time = text.strip().endswith("s")
            number = text.strip()[:-1] if is_time else text.strip()
            try:
                value = float(number) if is_time else int(number)
            except ValueError:
                raise InputError(f"{option} {text}: give a frame number (120) or a time in seconds (12.5s)") from None
            if value < 0:
                raise InputError(f"{option} {text} must not be negative")
            values.append(value)
            seconds.append(is_time)
        rng = FrameRange(values[0], values[1], (seconds[0], seconds[1]))
        if rng.start is not None and rng.end is not None and seconds[0] == seconds[1] and rng.end <= rng.start:
            raise InputError(f"--end {end} must come after --start {start}")
        return rng

    @property
    def whole(self) -> bool:
        return self.start is None and self.end is None

    def contains(self, number: int, time: float | None) -> tuple[bool, bool]:
        """(in the range, past its end) for frame ``number`` shown at ``time`` seconds."""
        def position(is_time: bool) -> float:
            return time if is_time and time is not None else number

        before = self.start is not None and position(self.seconds[0]) < self.start
        past = self.end is not None and position(self.seconds[1]) >= self.end
        return not before and not past, past

    def text(self) -> str:
        def one(value: float | None, is_time: bool) -> str:
            return "" if value is None else (f"{value:g}s" if is_time else str(int(value)))

        return f"{one(self.start, self.seconds[0])}..{one(self.end, self.seconds[1])}"


@dataclass(frozen=True)
class VideoInfo:
    """What is known about a source before decoding all of it."""

    path: Path
    is_folder: bool
    width: int  # upright width
    height: int  # upright height
    fps: float
    time_base: Fraction | None  # of the pts in Frame (video files only)
    rotation: int  # degrees counter-clockwise applied to decoded frames
    frame_count: int | None  # exact for folders, the container's estimate (or None) for files


def _natural_key(path: Path) -> list[object]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name)]


def _list_frames(folder: Path) -> list[Path]:
    files = sorted((p for p in folder.iterdir() if p.suffix.lower() in FRAME_EXTENSIONS and p.is_file()),
                   key=_natural_key)
    if not files:
        raise InputError(f"{folder}: folder holds no frames (expected {', '.join(sorted(FRAME_EXTENSIONS))} files)")
    stems = [p.stem for p in files]
    if len(set(stems)) != len(stems):
        dup = next(s for s in stems if stems.count(s) > 1)
        raise InputError(f"{folder}: two frames share the name {dup!r}; keep one image format per folder")
    return files


def _read_image(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            return np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise InputError(f"{path}: cannot read frame ({e})") from e


def _upright(frame: av.VideoFrame) -> np.ndarray:
    """(H, W, 3) uint8 of a decoded frame, rotated counter-clockwise by its display-matrix rotation."""
    image = frame.to_ndarray(format="rgb24")
    k = round(getattr(frame, "rotation", 0) / 90) % 4
    return np.ascontiguousarray(np.rot90(image, k)) if k else image


def _open_container(path: Path) -> av.container.InputContainer:
    try:
        container = av.open(str(path), mode="r")
    except av.error.FFmpegError as e:
        raise InputError(f"{path}: not a video FFmpeg can read ({e.strerror or e})") from e
    if not container.streams.video:
        container.close()
        raise InputError(f"{path}: holds no video stream")
    return container


class VideoSource:
    """A video file or a folder of frames. ``frames()`` may be called several times (each call re-decodes).

    Args:
        frame_range: read only these frames (their numbers, names and timestamps stay the whole video's).

    Raises:
        InputError: the path is missing, empty, not a video, or holds no frames.
    """

    def __init__(self, path: str | Path, frame_range: FrameRange | None = None) -> None:
        self.path = Path(path)
        self.range = frame_range or FrameRange()
        if not self.path.exists():
            raise InputError(f"{self.path}: no such file or folder")
        if self.path.is_dir():
            self._files: list[Path] | None = _list_frames(self.path)
            first = _read_image(self._files[0])
            self.info = VideoInfo(self.path, True, first.shape[1], first.shape[0], DEFAULT_FOLDER_FPS, None, 0,
                                  len(self._files))
        else:
            if self.path.stat().st_size == 0:
                raise InputError(f"{self.path}: file is empty (0 bytes)")
            self._files = None
            self.info = self._probe_file()
        if not self.range.whole:
            total = self.info.frame_count
            self.info = replace(self.info, frame_count=self._range_count())
            if self.info.frame_count == 0:
                raise InputError(f"{self.path}: no frame in the range {self.range.text()} (the video has {total} "
                                 f"frames, {total / self.info.fps:.2f} s)")

    def _range_count(self) -> int | None:
        """Frames in the range, from the whole video's count and rate (None when unknown)."""
        total = self.info.frame_count
        if total is None:
            return None

        def frame(value: float | None, is_time: bool, default: int) -> int:
            if value is None:
                return default
            return min(total, math.ceil(value * self.info.fps) if is_time else int(value))

        first = frame(self.range.start, self.range.seconds[0], 0)
        return max(0, frame(self.range.end, self.range.seconds[1], total) - first)

    def _probe_file(self) -> VideoInfo:
        container = _open_container(self.path)
        try:
            stream = container.streams.video[0]
            first = next(self._decode(container), None)
            if first is None:
                raise InputError(f"{self.path}: holds no decodable video frames")
            rotation = round(getattr(first, "rotation", 0) / 90) % 4 * 90
            h, w = first.height, first.width
            if rotation in (90, 270):
                h, w = w, h
            rate = stream.average_rate or stream.guessed_rate
            fps = float(rate) if rate else DEFAULT_FOLDER_FPS
            count = stream.frames or None
            return VideoInfo(self.path, False, w, h, fps, stream.time_base, rotation, count)
        finally:
            container.close()

    def _decode(self, container: av.container.InputContainer) -> Iterator[av.VideoFrame]:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        n = 0
        try:
            for frame in container.decode(stream):
                n += 1
                yield frame
        except av.error.FFmpegError as e:
            raise InputError(f"{self.path}: decoding failed after {n} frames, the file is corrupt or truncated "
                             f"({e.strerror or e})") from e

    def frames(self) -> Iterator[Frame]:
        """Yield every frame of the range in order, upright, as (H, W, 3) uint8 RGB."""
        index = 0
        for frame in self._all_frames():
            inside, past = self.range.contains(frame.number, self._seconds(frame))
            if past:
                break
            if inside:
                yield replace(frame, index=index)
                index += 1
        if index == 0 and not self.range.whole:
            raise InputError(f"{self.path}: no frame in the range {self.range.text()}")

    def _seconds(self, frame: Frame) -> float:
        if frame.pts is not None and self.info.time_base is not None:
            return float(frame.pts * self.info.time_base)
        return frame.number / self.info.fps

    def _all_frames(self) -> Iterator[Frame]:
        if self._files is not None:
            for i, f in enumerate(self._files):
                inside, past = self.range.contains(i, i / self.info.fps)
                if past:
                    return
                if not inside:  # before the range: not even read
                    continue
                image = _read_image(f)
                if image.shape[:2] != (self.info.height, self.info.width):
                    raise InputError(f"{f}: frame is {image.shape[1]}x{image.shape[0]}, the first frame of the "
                                     f"folder is {self.info.width}x{self.info.height}; all frames must match")
                yield Frame(i, image, f.stem, None, i)
            return
        container = _open_container(self.path)
        try:
            for i, frame in enumerate(self._decode(container)):
                yield Frame(i, _upright(frame), f"{i:05d}", frame.pts, i)
        finally:
            container.close()


class OverlayWriter:
    """H.264 writer for overlay videos: same size as the frames, constant rate or the input's own timestamps.

    Odd frame sizes, which 4:2:0 chroma cannot hold, are written as 4:4:4.
    """

    def __init__(self, path: Path, width: int, height: int, fps: float, time_base: Fraction | None = None) -> None:
        try:
            self._container = av.open(str(path), mode="w")
        except (av.error.FFmpegError, OSError) as e:
            raise OutputError(f"{path}: cannot create the overlay video ({e})") from e
        rate = Fraction(fps).limit_denominator(1001)
        self._stream = self._container.add_stream("libx264", rate=rate)
        self._stream.width, self._stream.height = width, height
        self._stream.pix_fmt = "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"
        self._stream.options = {"crf": "20", "preset": "veryfast"}
        self._time_base = time_base if time_base is not None else 1 / rate
        self._stream.time_base = self._time_base
        self._stream.codec_context.time_base = self._time_base
        self._step = max(1, round(1 / (rate * self._time_base)))  # one frame period in time-base units
        self._last_pts = -1
        self._count = 0

    def write(self, image: np.ndarray, pts: int | None = None) -> None:
        """Encode one (H, W, 3) uint8 frame; ``pts`` in the writer's time base (else frame order)."""
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        if pts is None or pts <= self._last_pts:
            pts = self._last_pts + self._step if self._count else 0
        frame.pts, frame.time_base = pts, self._time_base
        self._last_pts = pts
        self._count += 1
        self._mux(self._stream.encode(frame))

    def _mux(self, packets: list[av.Packet]) -> None:
        try:
            for packet in packets:
                self._container.mux(packet)
        except (av.error.FFmpegError, OSError) as e:
            raise OutputError(f"cannot write the overlay video ({e})") from e

    def close(self) -> None:
        """Flush the encoder and close the file."""
        self._mux(self._stream.encode(None))
        self._container.close()
