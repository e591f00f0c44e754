"""Reading videos and frame folders (PyAV, Pillow) as streams of upright RGB frames; writing overlay videos.

Frames are produced one at a time as ``(H, W, 3) uint8`` arrays, so a long video is never held in memory.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
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
        index: position in decode order, from 0.
        image: (H, W, 3) uint8 RGB, upright (rotation metadata applied).
        name: file stem for frame folders ("00000"), else the zero-padded index.
        pts: presentation timestamp in ``time_base`` units, or None (frame folders, missing timestamps).
    """

    index: int
    image: np.ndarray
    name: str
    pts: int | None = None


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

    Raises:
        InputError: the path is missing, empty, not a video, or holds no frames.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
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
        """Yield every frame in order, upright, as (H, W, 3) uint8 RGB."""
        if self._files is not None:
            for i, f in enumerate(self._files):
                image = _read_image(f)
                if image.shape[:2] != (self.info.height, self.info.width):
                    raise InputError(f"{f}: frame is {image.shape[1]}x{image.shape[0]}, the first frame of the "
                                     f"folder is {self.info.width}x{self.info.height}; all frames must match")
                yield Frame(i, image, f.stem)
            return
        container = _open_container(self.path)
        try:
            for i, frame in enumerate(self._decode(container)):
                yield Frame(i, _upright(frame), f"{i:05d}", frame.pts)
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
