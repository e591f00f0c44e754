"""Reading videos and frame folders (PyAV, Pillow) as streams of upright RGB frames; writing overlay videos.

Frames are produced one at a time as ``(H, W, 3) uint8`` arrays, so a long video is never held in memory.
"""

from __future__ import annotations

import errno
import math
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import ColorRange, Colorspace
from PIL import Image, ImageOps

from bavos.errors import InputError, OutputError, ResourceError, plain_os_error

FRAME_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
VIDEO_EXTENSIONS = {
    ".mp4",
    ".m4v",
    ".mov",
    ".mkv",
    ".webm",
    ".avi",
    ".mpg",
    ".mpeg",
    ".ts",
    ".mts",
    ".m2ts",
    ".wmv",
    ".flv",
    ".3gp",
    ".ogv",
    ".gif",
    ".mxf",
    ".y4m",
    ".vob",
    ".dv",
    ".asf",
    ".f4v",
    ".nut",
}  # what a folder of clips (bavos train) is searched for
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
        duration: how long the frame is shown, in ``time_base`` units: until the next frame's time, or for the last
            one as the container says it (None: not known).
    """

    index: int
    image: np.ndarray
    name: str
    pts: int | None = None
    number: int = -1
    duration: int | None = None


URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:/")  # http://, rtsp://, file:// (a Path made of one keeps one slash)


def url_problem(text: str) -> str | None:
    """Why ``text``, as the user typed it, cannot be read: a URL that is no file here (bavos reads a video several
    times, from a disk); None for anything else."""
    if not URL.match(text) or os.path.exists(text):
        return None
    return (
        f"{text}: a URL; bavos reads video files and frame folders on disk (it reads a video several times): "
        "download it first"
    )


@dataclass(frozen=True)
class FrameRange:
    """Part of a video: frames from ``start`` (included) to ``end`` (excluded), each a frame number or, with
    ``seconds``, a time. ``parse`` reads "120" (frame 120) and "12.5s" (12.5 seconds)."""

    start: float | None = None
    end: float | None = None
    seconds: tuple[bool, bool] = (False, False)

    @staticmethod
    def parse(start: str | int | None, end: str | int | None) -> FrameRange:
        """Raises InputError for a value that is neither a frame number (an int, or its text) nor a time ('12.5s'),
        or an empty range."""
        values, seconds = [], []
        for option, given in (("--start", start), ("--end", end)):
            if given is None:
                values.append(None)
                seconds.append(False)
                continue
            text = str(given) if isinstance(given, int) and not isinstance(given, bool) else given
            if not isinstance(text, str):
                raise InputError(f"{option} {given!r}: give a frame number (120) or a time in seconds (12.5s)")
            is_time = text.strip().endswith("s")
            number = text.strip()[:-1] if is_time else text.strip()
            try:
                value = float(number) if is_time else int(number)
                if not math.isfinite(value):  # "nans", "infs": float() reads them, no time is one
                    raise ValueError(number)
            except ValueError:
                raise InputError(f"{option} {text}: give a frame number (120) or a time in seconds (12.5s)") from None
            if value < 0:
                raise InputError(f"{option} {text} must not be negative")
            values.append(value)
            seconds.append(is_time)
        rng = FrameRange(values[0], values[1], (seconds[0], seconds[1]))
        if rng.end == 0:  # before every video's first frame, whatever the start
            raise InputError(f"--end {end} takes no frame: the range ends before the first frame")
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
        return f"{self.start_text()}..{self.end_text()}"

    def start_text(self) -> str:
        return "" if self.start is None else (f"{self.start:g}s" if self.seconds[0] else str(int(self.start)))

    def end_text(self) -> str:
        return "" if self.end is None else (f"{self.end:g}s" if self.seconds[1] else str(int(self.end)))


@dataclass(frozen=True)
class VideoInfo:
    """What is known about a source before decoding all of it."""

    path: Path
    is_folder: bool
    width: int  # upright width
    height: int  # upright height
    fps: float  # the stream's average rate (ffprobe's avg_frame_rate), else its guessed rate
    time_base: Fraction | None  # of the pts in Frame (video files only)
    rotation: int  # degrees counter-clockwise applied to decoded frames
    frame_count: int | None  # exact for folders, the container's announced count (or None) for files
    start_pts: int = 0  # the first frame's timestamp in time_base units; Frame.pts counts from it
    coded_size: tuple[int, int] | None = None  # (width, height) of the first frame before rotation (video files)
    duration: float | None = None  # seconds, as the container states it (None: unknown)
    sample_aspect_ratio: Fraction | None = None  # of the upright pixels, when not square (anamorphic video)
    stream_start: float | None = None  # seconds where the stream starts (ffprobe's start_time), when stated

    @property
    def start_time(self) -> float:
        """Seconds where the video starts on the container's clock: ffprobe's start_time, else its first frame's (0
        for frame folders)."""
        if self.stream_start is not None:
            return self.stream_start
        return self.first_time

    @property
    def first_time(self) -> float:
        """Seconds of the first frame that decodes on the container's clock (0 for frame folders)."""
        return float(self.start_pts * self.time_base) if self.time_base is not None else 0.0

    @property
    def lead(self) -> float:
        """Seconds from the stream's start to its first frame that decodes (frames that could not be decoded)."""
        return self.first_time - self.stream_start if self.stream_start is not None else 0.0


def natural_key(path: Path) -> list[object]:
    """Natural order: frame_2 before frame_10. Only decimal digits are numbers (what the pattern's digits match):
    the superscript in "1²0.png" is text."""
    return [int(t) if t.isdecimal() else t for t in re.split(r"(\d+)", path.name)]


def source_stamp(path: Path) -> dict[str, int] | None:
    """A video file's, or a frame folder's frames', size in bytes and latest modification time in ns: how
    ``--skip-existing`` tells a source changed since its result was made, as make does (a copy that keeps neither
    redoes it), and a resumed training run a clip replaced by another (by its bytes, which a copy keeps). None for
    what is not a file or folder (arrays, iterables)."""
    path = Path(path)
    try:
        if path.is_file():
            stat = path.stat()
            return {"bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}
        if path.is_dir():
            frames = [
                e.stat()
                for e in os.scandir(path)
                if not e.name.startswith(".") and Path(e.name).suffix.lower() in FRAME_EXTENSIONS and e.is_file()
            ]
            latest = max((f.st_mtime_ns for f in frames), default=0)
            return {"bytes": sum(f.st_size for f in frames), "mtime_ns": latest}
    except OSError:
        return None
    return None


def list_frames(folder: Path) -> tuple[list[Path], list[str]]:
    """The frames of a folder in natural order, and the names of the entries that are not frames.

    Frames are the regular files (symlinks followed) with an image extension of FRAME_EXTENSIONS whose name does not
    start with a dot: hidden files, such as macOS's AppleDouble ``._00001.jpg`` and ``.DS_Store``, are not frames.

    Raises:
        InputError: the folder cannot be listed, holds no frames, two frames share a name, or an entry named like a
            frame is a broken link or not a regular file.
    """
    frames, left_out = [], []
    try:
        entries = sorted(folder.iterdir(), key=natural_key)
    except OSError as e:
        raise InputError(f"cannot list the frames: {plain_os_error(e, folder)}") from e
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if entry.suffix.lower() not in FRAME_EXTENSIONS or entry.is_dir():
            left_out.append(entry.name + ("/" if entry.is_dir() else ""))
        elif entry.is_file():
            frames.append(entry)
        elif entry.is_symlink() and not entry.exists():
            raise InputError(f"{entry}: a broken link where a frame is expected (it points to {os.readlink(entry)})")
        else:
            raise InputError(f"{entry}: named like a frame but not a regular file")
    if not frames:
        videos = [e for e in entries if e.suffix.lower() in VIDEO_EXTENSIONS and e.is_file()]
        if videos:
            pattern = f"{folder}/*{videos[0].suffix}" if len({v.suffix for v in videos}) == 1 else f"{folder}/*"
            raise InputError(
                f"{folder}: a folder of {len(videos)} video{'s' * (len(videos) != 1)}, not of frames: "
                f"pass the videos ({pattern})"
            )
        sequences = [e for e in entries if not e.name.startswith(".") and e.is_dir() and _holds_frames(e)]
        if sequences:  # DAVIS's JPEGImages/480p: one folder per sequence
            raise InputError(
                f"{folder}: a folder of {len(sequences)} folder{'s' * (len(sequences) != 1)} of frames, not of "
                f"frames: pass them ({folder}/*)"
            )
        raise InputError(f"{folder}: folder holds no frames (expected {', '.join(sorted(FRAME_EXTENSIONS))} files)")
    stems = [p.stem for p in frames]
    if len(set(stems)) != len(stems):
        dup = next(s for s in stems if stems.count(s) > 1)
        raise InputError(f"{folder}: two frames share the name {dup!r}; keep one image format per folder")
    return frames, left_out


def _holds_frames(folder: Path) -> bool:
    """Whether ``folder`` holds a file named like a frame (read up to the first one)."""
    try:
        return any(
            e.suffix.lower() in FRAME_EXTENSIONS and not e.name.startswith(".") and e.is_file()
            for e in folder.iterdir()
        )
    except OSError:
        return False


_TRANSPOSED = {5, 6, 7, 8}  # EXIF orientations that swap width and height


def _header(path: Path) -> tuple[int, int]:
    """(width, height) of an image file, upright (its EXIF orientation applied), from its header alone.

    Raises:
        InputError: the file is not an image Pillow can read.
    """
    try:
        with Image.open(path) as im:
            width, height = im.size
            if im.getexif().get(0x0112) in _TRANSPOSED:
                width, height = height, width
            cut = im.format == "JPEG" and _jpeg_cut_short(path)
    except Image.DecompressionBombError as e:
        raise InputError(
            f"{path}: cannot read frame: {_reason(e).split(',')[0]}, over Pillow's guard against "
            "decompression bombs; scale the frames down (at most 178 million pixels)"
        ) from e
    except (OSError, ValueError, SyntaxError) as e:
        if "truncated" in _reason(e).lower():
            raise InputError(f"{path}: the image file is cut short ({_reason(e)}): {CUT_FRAME_FIX}") from e
        raise InputError(f"{path}: cannot read frame ({_reason(e)})") from e
    if cut:
        raise InputError(
            f"{path}: the JPEG file is cut short (it lacks the end marker a whole one has): {CUT_FRAME_FIX}"
        )
    return width, height


CUT_FRAME_FIX = "replace the frame, or move it out of the folder"


def _jpeg_cut_short(path: Path, tail: int = 65536) -> bool:
    """A JPEG file ends with its end-of-image marker (FF D9), or holds it near the end (data some cameras append);
    one with neither was cut short (a copy or a download that stopped). Reads its last 2 bytes, and at most ``tail``
    bytes only when they are not the marker."""
    with open(path, "rb") as f:
        size = f.seek(0, os.SEEK_END)
        f.seek(max(0, size - 2))
        if f.read() == b"\xff\xd9":  # almost every JPEG: one frame's check costs two bytes
            return False
        f.seek(max(0, size - tail))
        return b"\xff\xd9" not in f.read()


def _reason(e: Exception) -> str:
    return plain_os_error(e, "") if isinstance(e, OSError) and e.errno else str(e)


def to_rgb(im: Image.Image) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a Pillow image of any mode, over the full 8-bit range.

    16-bit and 32-bit integer grey (``I;16*``, ``I``) is scaled by 255/65535 and rounded (not clipped at 255);
    float grey (``F``) is taken as 0..1, as FFmpeg's float formats are. Every other mode is Pillow's conversion:
    palettes are looked up, alpha is dropped (not blended, as FFmpeg's rgba to rgb24), 1-bit becomes 0/255, CMYK is
    converted. Pillow reads 16-bit RGB as its high bytes.
    """
    if im.mode == "I" or im.mode.startswith("I;16"):
        grey = np.clip(np.rint(np.asarray(im, dtype=np.float64) / 257.0), 0, 255).astype(np.uint8)
    elif im.mode == "F":
        grey = np.clip(np.rint(np.asarray(im, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)
    else:
        return np.asarray(im.convert("RGB"))
    return np.repeat(grey[..., None], 3, axis=2)


def read_image(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 of an image file, upright: its EXIF orientation is applied, as photo viewers and bavos's
    handling of video rotation metadata do (the width and height bavos reports are the upright ones)."""
    try:
        with Image.open(path) as im:
            return to_rgb(ImageOps.exif_transpose(im))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise InputError(f"{path}: cannot read frame ({_reason(e)})") from e


def upright(image: np.ndarray, rotation: int) -> np.ndarray:
    """(H, W, 3) uint8 rotated counter-clockwise by ``rotation`` degrees (the display matrix's)."""
    k = round(rotation / 90) % 4
    return np.ascontiguousarray(np.rot90(image, k)) if k else image


NOT_VIDEO = {"ansi", "bintext", "xbin", "idf"}  # FFmpeg's text-mode decoders: they draw text files, not video


def _is_attached_picture(stream: av.stream.Stream) -> bool:
    return bool(stream.disposition & av.stream.Disposition.attached_pic)


def video_stream(container: av.container.InputContainer, path: Path) -> av.video.stream.VideoStream:
    """The stream FFmpeg would choose: the highest score of width x height, plus 5,000,000 for the stream marked
    default (the first of equals), never an attached picture (cover art) nor a text file drawn as video.

    Raises:
        InputError: the file holds no such stream.
    """
    streams = [
        s for s in container.streams.video if not _is_attached_picture(s) and s.codec_context.name not in NOT_VIDEO
    ]
    if not streams:
        kinds = [s.type for s in container.streams if s.type != "video"]
        kinds += [
            "cover picture" if _is_attached_picture(s) else f"{s.codec_context.name} text"
            for s in container.streams.video
        ]
        held = f" (it holds {', '.join(sorted(set(kinds)))})" if kinds else ""
        raise InputError(f"{path}: no video stream{held}")
    default = av.stream.Disposition.default
    return max(
        streams,
        key=lambda s: (
            s.codec_context.width * s.codec_context.height  # FFmpeg's own score
            + 5_000_000 * bool(s.disposition & default)
        ),
    )


def frame_image(frame: av.VideoFrame, coded: tuple[int, int]) -> np.ndarray:
    """A decoded frame as (H, W, 3) uint8 RGB, upright: scaled to the ``coded`` (width, height) the video's first
    frame had when its picture size changes (as FFmpeg scales when it encodes such a stream), then turned by its
    rotation metadata."""
    if (frame.width, frame.height) != coded:
        image = frame.reformat(width=coded[0], height=coded[1], format="rgb24", interpolation="BICUBIC").to_ndarray()
    else:
        image = frame.to_ndarray(format="rgb24")
    return upright(image, getattr(frame, "rotation", 0))


def open_container(path: Path) -> tuple[av.container.InputContainer, av.video.stream.VideoStream]:
    try:
        container = av.open(str(path), mode="r")
    except (av.error.FFmpegError, OSError) as e:
        if isinstance(e, OSError) and e.errno not in (None, 0, errno.EINVAL):
            raise InputError(f"cannot read the video: {plain_os_error(e, path)}") from e  # permission, I/O, ...
        raise InputError(f"{path}: not a video FFmpeg can read ({e.strerror or e})") from e
    try:
        return container, video_stream(container, path)
    except BaseException:
        container.close()
        raise


class RangedSource:
    """What every frame source shares: the part of the frames it reads (``range``), what it holds (``info``), the
    warnings about it, and ``frames()``, which yields the range's frames of ``_all_frames()``. Subclasses set
    ``info`` in their ``__init__`` and then call ``_narrow()``.

    ``bavos.io.sources.FrameSource`` is the protocol the pipeline reads; this class is one way to meet it.
    """

    from_path = True  # frames read from ``path`` (a file or folder on disk)
    skipped_packets = False  # packets gave no frame (FrameSource); a video file's decoding finds out
    info: VideoInfo

    def __init__(self, path: Path, frame_range: FrameRange | None) -> None:
        self.path = path
        self.range = frame_range or FrameRange()
        self.warnings: list[str] = []
        self._range_ended = False

    def _narrow(self) -> None:
        """The frame count of ``info`` narrowed to the range."""
        if not self.range.whole:
            count = self._range_count()
            self.info = replace(self.info, frame_count=None if count is None else max(count, 1))

    def warn(self, message: str) -> None:
        """Record a warning about the input (once)."""
        if message not in self.warnings:
            self.warnings.append(message)

    def frames_expected(self) -> int | None:
        """The frames this source is expected to give (in its range); None when it cannot tell before reading."""
        return self.info.frame_count

    def _range_count(self, total: int | None = None) -> int | None:
        """Frames in the range, from the whole video's count (``total``, default the announced one) and rate (None
        when unknown)."""
        total = self.info.frame_count if total is None else total
        if total is None:
            return None

        def frame(value: float | None, is_time: bool, default: int) -> int:
            if value is None:
                return default
            return min(total, math.ceil(value * self.info.fps) if is_time else int(value))

        first = frame(self.range.start, self.range.seconds[0], 0)
        return max(0, frame(self.range.end, self.range.seconds[1], total) - first)

    def frames(self) -> Iterator[Frame]:
        """Yield every frame of the range in order, upright, as (H, W, 3) uint8 RGB.

        Raises:
            InputError: the range holds no frame.
        """
        index, last = 0, None
        self._range_ended = False  # set by _all_frames where it stops at the range's end itself
        for frame in self._all_frames():
            inside, past = self.range.contains(frame.number, self._seconds(frame))
            if past:
                break
            if inside:
                yield replace(frame, index=index)
                index += 1
            last = frame
        else:  # the video ended inside the range
            if last is not None and not self._range_ended and self._ends_before_range(last):
                self.warn(
                    f"--end {self.range.end_text()} lies past the video's end: the range stops at its last frame, "
                    f"{last.number} ({self._seconds(last):.2f} s)"
                )
        if index == 0 and not self.range.whole:
            raise InputError(f"{self.path}: no frame in the range {self.range.text()}")

    def _ends_before_range(self, last: Frame) -> bool:
        """The video's ``last`` frame ends before the range's end (a frame number past it, or a time a frame period
        or more after its start)."""
        if self.range.end is None:
            return False
        if self.range.seconds[1]:
            return self._seconds(last) + 1 / self.info.fps < self.range.end - 1e-6  # a microsecond: rounding
        return last.number + 1 < self.range.end

    def _seconds(self, frame: Frame) -> float:
        """Seconds from the first frame (FFmpeg's -ss takes times so)."""
        if frame.pts is not None and self.info.time_base is not None:
            return float(frame.pts * self.info.time_base)
        return frame.number / self.info.fps

    def _all_frames(self) -> Iterator[Frame]:
        """Every frame of the source, the range's first and last included (those before it may be skipped)."""
        raise NotImplementedError


class VideoSource(RangedSource):
    """A video file or a folder of frames. ``frames()`` may be called several times (each call re-decodes).

    Frames come as FFmpeg would give them: the stream FFmpeg chooses; a packet that fails to decode is skipped; a
    change of picture size is scaled to the first frame's size; timestamps count from the first frame. Each such
    event adds one line to ``warnings`` (once, however many passes read the frames).

    Args:
        frame_range: read only these frames (their numbers and names stay the whole video's; times count from the
            first frame, as FFmpeg's ``-ss`` takes them).
        folder_fps: a folder's frame rate (frames per second), which its time ranges count in (``--fps``); a video
            file's own rate holds.

    Raises:
        InputError: the path is missing, empty, not a video, or holds no frames; a frame of a folder cannot be read or
            has another size than the first.
    """

    def __init__(
        self, path: str | Path, frame_range: FrameRange | None = None, folder_fps: float = DEFAULT_FOLDER_FPS
    ) -> None:
        super().__init__(Path(path), frame_range)
        self._decode_error: str | None = None  # the last decoding error, for the message when no frame decodes
        self._counted: int | None = None  # the video packets, counted when the container announces no count
        if not self.path.exists():
            raise InputError(url_problem(str(path)) or f"{self.path}: no such file or folder")
        if self.path.is_dir():
            self._files: list[Path] | None = self._check_folder()
            width, height = _header(self._files[0])
            self.info = VideoInfo(self.path, True, width, height, folder_fps, None, 0, len(self._files))
        else:
            if not self.path.is_file():
                raise InputError(
                    f"{self.path}: not a regular file (a pipe or a device); bavos reads its input several "
                    "times: save it to a file first"
                )
            if self.path.stat().st_size == 0:
                raise InputError(f"{self.path}: file is empty (0 bytes)")
            self._files = None
            self.info = self._probe_file()
        if not self.range.whole:
            total, count = self.info.frame_count, self._range_count()
            if count == 0 and not self._starts_before_the_end():
                length = self.info.duration if self.info.duration is not None else (total or 0) / self.info.fps
                raise InputError(
                    f"{self.path}: no frame in the range {self.range.text()} (the video has {total} "
                    f"frames, {length:.2f} s)"
                )
        self._narrow()

    def _check_folder(self) -> list[Path]:
        """Every frame's header read (size, readable) before any work; entries that are not frames named."""
        files, left_out = list_frames(self.path)
        first = _header(files[0])
        for f in files[1:]:
            size = _header(f)
            if size != first:
                raise InputError(
                    f"{f}: frame is {size[0]}x{size[1]}, the first frame of the folder "
                    f"({files[0].name}) is {first[0]}x{first[1]}; all frames must match"
                )
        if left_out:
            shown = ", ".join(left_out[:5]) + (f" and {len(left_out) - 5} more" if len(left_out) > 5 else "")
            self.warn(
                f"not frames, left out: {shown} (frames are {', '.join(sorted(FRAME_EXTENSIONS))} files; hidden "
                "files are not frames)"
            )
        return files

    def _starts_before_the_end(self) -> bool:
        """Whether a range starting at a time holds a frame that the count and the average rate miss (a frame held
        longer, a variable rate, a stated duration that is wrong): the packets' timestamps tell, read without
        decoding (only when the estimate says the range is empty)."""
        if not self.range.seconds[0] or self._files is not None:
            return False
        container, stream = open_container(self.path)
        try:
            last = max((p.pts for p in container.demux(stream) if p.pts is not None), default=None)
        except av.error.FFmpegError:
            return True  # damaged: decoding will tell
        finally:
            container.close()
        time_base = self.info.time_base or 0
        return last is not None and float((last - self.info.start_pts) * time_base) >= (self.range.start or 0)

    def frames_expected(self) -> int | None:
        """The frames this source is expected to give (in its range): the count its container announces (exact for
        frame folders), else its video packets counted without decoding (Matroska, WebM, MPEG-TS, camcorder .MTS
        and still images announce none); None when neither tells. Counted once per source; decoding may still
        find another number (a damaged packet, a miscounting container)."""
        if self.info.frame_count:
            return self.info.frame_count
        if self._files is not None:
            return None
        if self._counted is None:
            self._counted = self._count_packets()
        return self._range_count(self._counted) if self._counted else None

    def _count_packets(self) -> int:
        """The video stream's packets that hold data, read without decoding (0 when the file cannot be read)."""
        try:
            container, stream = open_container(self.path)
        except InputError:
            return 0
        try:
            return sum(1 for p in container.demux(stream) if p.size > 0)
        except av.error.FFmpegError:
            return 0
        finally:
            container.close()

    def _probe_file(self) -> VideoInfo:
        container, stream = open_container(self.path)
        try:
            first = next(self._decode(container, stream), None)
            if first is None:
                if stream.codec_context.name == "webp" and _animated(self.path):
                    raise InputError(
                        f"{self.path}: an animated WebP, which FFmpeg cannot decode: convert it to a video or to a "
                        "folder of frames first"
                    )
                why = f"; the file is damaged or truncated ({self._decode_error})" if self._decode_error else ""
                raise InputError(f"{self.path}: holds no decodable video frames{why}")
            rotation = round(getattr(first, "rotation", 0) / 90) % 4 * 90
            h, w = first.height, first.width
            if rotation in (90, 270):
                h, w = w, h
            # without timestamps (raw H.264/HEVC streams) the average rate is the demuxer's default of 25: the
            # stream's own rate (its VUI timing, FFmpeg's guess) is what FFmpeg plays it at
            rate = (
                (stream.guessed_rate or stream.average_rate)
                if first.pts is None
                else (stream.average_rate or stream.guessed_rate)
            )
            fps = float(rate) if rate else DEFAULT_FOLDER_FPS
            count = stream.frames or None
            if stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            else:
                duration = container.duration / av.time_base if container.duration is not None else None
            sar = stream.sample_aspect_ratio or stream.codec_context.sample_aspect_ratio
            sar = None if not sar or sar == 1 else (1 / Fraction(sar) if rotation in (90, 270) else Fraction(sar))
            info = VideoInfo(
                self.path,
                False,
                w,
                h,
                fps,
                stream.time_base,
                rotation,
                count,
                first.pts or 0,
                (first.width, first.height),
                duration,
                sar,
                float(stream.start_time * stream.time_base)
                if stream.start_time is not None and stream.time_base
                else None,
            )
            self.skipped_packets = info.lead > 0.5 / fps  # frames lost before the first that decodes
            if info.lead > 2 / fps:  # a damaged first keyframe, or a cut that starts between keyframes
                self.warn(
                    f"the first {info.lead:.3f} s could not be decoded (a damaged keyframe, or a cut between "
                    f"keyframes): frame 0 is the first that decodes, at {info.first_time:.3f} s"
                )
            return info
        finally:
            container.close()

    def _decode(
        self, container: av.container.InputContainer, stream: av.video.stream.VideoStream
    ) -> Iterator[av.VideoFrame]:
        """Decoded frames in order, each timed as FFmpeg times it (``BestEffort``). A packet that fails to decode is
        skipped and named in a warning; a read error ends the stream with a warning (FFmpeg does both)."""
        stream.thread_type = "AUTO"
        self._decode_error = None
        state = _Decoding(stream)
        try:
            for packet in container.demux(stream):
                state.packets += packet.size > 0
                if packet.pts is not None:
                    state.numbers[packet.pts] = state.packets
                try:
                    frames = stream.decode(packet)
                except av.error.FFmpegError as e:
                    if packet.size == 0:  # the decoder's flush: with frame threads, errors of the last packets
                        self._failed(e, None, state)
                        self.warn(
                            f"the last packets could not be decoded ({e.strerror or e}): {state.decoded} frames decoded"
                        )
                        break
                    self._failed(e, packet, state)
                    continue
                for frame in frames:
                    yield from state.given(frame)
        except av.error.FFmpegError as e:
            self._decode_error = str(e.strerror or e)
            self.warn(
                f"reading stopped after {state.decoded} frames: the file is damaged or truncated ({e.strerror or e})"
            )
            yield from state.release()
            return
        yield from state.release()
        if state.decoded < state.packets and state.last is not None and not state.best.reordered:
            yield from self._tail(state)

    def _tail(self, state: _Decoding) -> Iterator[av.VideoFrame]:
        """The frames after the last one given, decoded again on one thread from the keyframe before it: where a
        packet near the end is damaged (a file cut short), FFmpeg's frame threads drop the frames still in flight
        and the error with them, which FFmpeg itself decodes and reports."""
        try:
            container, stream = open_container(self.path)
        except InputError:
            return
        try:
            stream.thread_type = "SLICE"
            container.seek(state.last, stream=stream, backward=True, any_frame=False)
            for frame in decode_skipping(container, stream, lambda e, packet: self._failed(e, packet, state)):
                if frame.pts is not None and state.last is not None and frame.pts > state.last:
                    yield from state.given(frame)
        except av.error.FFmpegError:
            return  # what the first pass read is all there is
        finally:
            container.close()

    def _failed(self, e: av.error.FFmpegError, packet: av.Packet | None, state: _Decoding) -> None:
        """A packet that failed to decode: a warning naming it (once, whichever pass met it), or ResourceError where
        the decoder lacked threads or memory."""
        if e.errno in (errno.EAGAIN, errno.ENOMEM):  # the decoder's threads or buffers: not the file
            raise ResourceError(
                f"{self.path}: FFmpeg could not decode it for want of resources ({e.strerror or e}), "
                "not for damage: a memory or process limit (ulimit -v, ulimit -u, a cgroup) is too low"
            ) from e
        self._decode_error = str(e.strerror or e)
        self.skipped_packets = True
        if packet is None:
            return
        number = state.numbers.get(packet.pts, state.packets) if packet.pts is not None else state.packets
        # the time on the stream's clock, as ffprobe's: the same in the probe and in the run, whatever decodes first
        when = (
            ""
            if packet.pts is None or packet.time_base is None
            else f" at {float((packet.pts - state.origin) * packet.time_base):.3f} s"
        )
        self.warn(
            f"packet {number}{when} could not be decoded ({e.strerror or e}): its frame was skipped, as FFmpeg does"
        )

    def _all_frames(self) -> Iterator[Frame]:
        if self._files is not None:
            for i, f in enumerate(self._files):
                inside, past = self.range.contains(i, i / self.info.fps)
                if past:
                    self._range_ended = True
                    return
                if not inside:  # before the range: not even read
                    continue
                image = read_image(f)
                if image.shape[:2] != (self.info.height, self.info.width):
                    raise InputError(
                        f"{f}: frame is {image.shape[1]}x{image.shape[0]}, the first frame of the "
                        f"folder is {self.info.width}x{self.info.height}; all frames must match"
                    )
                yield Frame(i, image, f.stem, None, i)
            return
        yield from self._file_frames()

    def _file_frames(self) -> Iterator[Frame]:
        container, stream = open_container(self.path)
        width, height = self.info.coded_size or (0, 0)
        i, sizes = -1, {(width, height)}
        held: Frame | None = None  # a frame waits for the next one, whose time ends it
        before: int | None = None  # the time of the frame given out before ``held``
        untimed: list[int] = []  # frames whose time is not after every one before (OverlayWriter re-times them)
        moved: list[int] = []  # frames stamped past the next one, put back between their neighbours
        latest: int | None = None
        tb = self.info.time_base
        period = max(1, round(1 / (self.info.fps * tb))) if tb else 1

        def given(frame: Frame) -> Frame:
            nonlocal latest, before
            if frame.pts is not None and latest is not None and frame.pts <= latest:
                untimed.append(frame.number)
            if frame.pts is not None and (latest is None or frame.pts > latest):
                latest = frame.pts
            before = frame.pts
            return frame

        try:
            for i, frame in enumerate(self._decode(container, stream)):
                if (frame.width, frame.height) not in sizes:
                    sizes.add((frame.width, frame.height))
                    self.warn(
                        f"the picture size changes to {frame.width}x{frame.height} at frame {i}: scaled to "
                        f"the first frame's {width}x{height}, as FFmpeg does when it encodes such a stream"
                    )
                pts = None if frame.pts is None else frame.pts - self.info.start_pts
                # the container's duration of the last frame; the others last until the next one (a packet's
                # duration belongs to its place in decode order, which B-frames make another frame's)
                shown = getattr(frame, "duration", None)  # not in every PyAV release
                shown = shown if shown and shown > 0 else None
                current = Frame(i, frame_image(frame, (width, height)), f"{i:05d}", pts, i, shown)
                if held is not None:
                    back = _between(held, before, pts, period)
                    if back is not held:
                        moved.append(held.number)
                    yield given(_lasting_until(back, current))
                held = current
            if held is not None:
                yield given(held)
        finally:
            container.close()
        if moved:  # one frame stamped ahead (a muxer's slip, a damaged packet) would push every later one back
            which = f"frame {moved[0]}" + (f" and {len(moved) - 1} more" if len(moved) > 1 else "")
            self.warn(
                f"the timestamp of {which} lies past the next frame's: the overlay shows it between the frames "
                "around it"
            )
        if untimed:  # the overlay cannot show two frames at one time: OverlayWriter spaces them by the rate
            which = f"frame {untimed[0]}" + (f" and {len(untimed) - 1} more" if len(untimed) > 1 else "")
            self.warn(
                f"the timestamps of {which} are no later than an earlier frame's: the overlay shows each one "
                f"frame period ({self.info.fps:g} fps) after the frame before"
            )
        if held is not None and self.range.whole:
            self._check_duration(held, i + 1)

    def _check_duration(self, last: Frame, decoded: int) -> None:
        """Warn where the frames end well before the duration the container states (a file cut short). Well: more
        than two frame periods and a tenth of it, since a container's duration may take in a longer audio stream.
        The frame count a container announces is said beside it, not alone: an edit list (an encoder's pre-roll)
        hides frames the count includes, in a sound file."""
        stated, period = self.info.duration, 1 / self.info.fps
        if not stated or last.pts is None or self.info.time_base is None:
            return
        shown = float(last.duration * self.info.time_base) if last.duration else period
        ended = self.info.lead + float(last.pts * self.info.time_base) + shown  # from the stream's start, as stated
        if stated - ended > max(2 * period, 0.1 * stated):
            announced = self.info.frame_count
            counts = f" ({announced} frames)" if announced and announced != decoded else ""
            self.warn(
                f"the container announces {stated:.2f} s{counts}; its frames end at {ended:.2f} s ({decoded} decoded)"
            )


def decode_skipping(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    failed: Callable[[av.error.FFmpegError, av.Packet], None],
) -> Iterator[av.VideoFrame]:
    """The frames from the container's place on; a packet with data that fails to decode is given to ``failed``
    (which may raise) and skipped, and a flush that fails ends the frames."""
    for packet in container.demux(stream):
        try:
            frames = stream.decode(packet)
        except av.error.FFmpegError as e:
            if packet.size == 0:
                return
            failed(e, packet)
            continue
        yield from frames


class _Decoding:
    """Where a decoding pass is: packets read (with data), frames given, each packet's number by its time, and the
    time the last frame given carried (in the decoder's terms, before ``BestEffort``)."""

    def __init__(self, stream: av.video.stream.VideoStream) -> None:
        self.packets = self.decoded = 0
        self.numbers: dict[int, int] = {}
        self.last: int | None = None
        self.best = BestEffort()
        self._held: list[tuple[av.VideoFrame, int | None]] | None = []  # None once the first frames are given
        self.origin = stream.start_time or 0  # the stream's clock starts there (ffprobe's start_time)

    def given(self, frame: av.VideoFrame) -> list[av.VideoFrame]:
        """The frames ready to give after ``frame``: the first ``LOOKAHEAD`` wait, so that they are timed as the
        frames after them show the stream's times to be (FFmpeg's rule decides only once a time has gone back)."""
        self.decoded += 1
        self.last = frame.pts
        dts = getattr(frame, "dts", None)
        timed = self.best(frame.pts, dts)
        if self._held is None:
            return [_timed(frame, timed)]
        self._held.append((frame, dts))
        return self.release() if len(self._held) >= LOOKAHEAD else []

    def release(self) -> list[av.VideoFrame]:
        """The frames waiting, timed by what the stream's times turned out to be."""
        held, self._held = self._held or [], None
        by_dts = self.best.by_dts
        return [_timed(frame, dts if (by_dts or frame.pts is None) else frame.pts) for frame, dts in held]


LOOKAHEAD = 4  # frames: B-frames show a time that goes back within the first three


def _timed(frame: av.VideoFrame, pts: int | None) -> av.VideoFrame:
    if pts != frame.pts:
        frame.pts = pts
    return frame


class BestEffort:
    """FFmpeg's best-effort timestamp of each decoded frame (libavcodec's ``guess_correct_pts``, which PyAV does not
    give): the frame's own time while the times frames carry go back no more often than their decoding times, else
    its decoding time. Without it, H.264 with B-frames in AVI, whose frames carry their packets' order, came out
    re-timed and warned about."""

    def __init__(self) -> None:
        self._faulty_pts = self._faulty_dts = 0
        self._last_pts: int | None = None
        self._last_dts: int | None = None

    def __call__(self, pts: int | None, dts: int | None) -> int | None:
        if dts is not None:
            self._faulty_dts += self._last_dts is not None and dts <= self._last_dts
            self._last_dts = dts
        elif pts is not None:
            self._last_dts = pts
        if pts is not None:
            self._faulty_pts += self._last_pts is not None and pts <= self._last_pts
            self._last_pts = pts
        elif dts is not None:
            self._last_pts = dts
        if pts is not None and not self.by_dts:
            return pts
        # FFmpeg takes the frame's own time where there is no decoding time, but its own is none there: PyAV's is
        # made up from the packets' order (AVFMT_FLAG_GENPTS), so no time, which the overlay fills by the rate
        return dts

    @property
    def reordered(self) -> bool:
        """Whether the frames' own times went back at least once (their packets' order, not the frames')."""
        return self._faulty_pts > 0

    @property
    def by_dts(self) -> bool:
        """Whether frames are timed by their decoding times: their own went back more often."""
        return self._faulty_pts > self._faulty_dts


def _animated(path: Path) -> bool:
    """Whether Pillow reads several frames in ``path`` (FFmpeg's WebP decoder reads stills only)."""
    try:
        with Image.open(path) as image:
            return bool(getattr(image, "is_animated", False))
    except (OSError, ValueError, Image.DecompressionBombError):
        return False


def _between(frame: Frame, before: int | None, after: int | None, period: int) -> Frame:
    """``frame`` put back between the frames around it (times ``before`` and ``after``) where its time lies past the
    next one's although that one follows the one before: one frame period after the one before, or halfway where
    that is not before the next. As it is where no time fits between them."""
    if frame.pts is None or before is None or after is None or not before < after < frame.pts or after - before < 2:
        return frame
    return replace(frame, pts=before + min(period, (after - before) // 2), duration=None)


def _lasting_until(frame: Frame, following: Frame) -> Frame:
    """``frame`` shown until ``following`` starts (its own duration where either has no time)."""
    if frame.pts is None or following.pts is None or following.pts <= frame.pts:
        return frame
    return replace(frame, duration=following.pts - frame.pts)


BT709 = 1  # the H.264 VUI's (and FFmpeg's) number for BT.709: matrix, primaries and transfer
LIMITED_RANGE = 1  # FFmpeg's AVCOL_RANGE_MPEG: 16-235


class OverlayWriter:
    """H.264 writer for overlay videos: same size as the frames, constant rate or the input's own timestamps, and
    the input's pixel aspect ratio (an anamorphic video plays at its display shape).

    Always 4:2:0 (yuv420p, H.264 High), the one layout every player plays (browsers and QuickTime refuse 4:4:4). It
    holds only even sizes, so an odd width or height gets one more column or row, a copy of the last one. The colours
    are converted with BT.709's matrix at limited range and tagged so (an untagged HD video is shown as BT.709, an
    SD one as BT.601: a player guessed), and the index comes first in the file (``faststart``), so that a browser
    plays it before it has the whole file.
    """

    def __init__(
        self,
        path: Path,
        width: int,
        height: int,
        fps: float,
        time_base: Fraction | None = None,
        sample_aspect_ratio: Fraction | None = None,
    ) -> None:
        self._path = Path(path)
        try:
            self._container = av.open(str(path), mode="w", options={"movflags": "+faststart"})
        except (av.error.FFmpegError, OSError) as e:
            raise OutputError(
                f"cannot create the video {path.name}: {plain_os_error(e, '') if isinstance(e, OSError) else e}"
            ) from e
        rate = Fraction(fps).limit_denominator(1001)
        self._stream = self._container.add_stream("libx264", rate=rate)
        self._pad = (height % 2, width % 2)  # rows, columns added to reach an even size
        self._stream.width, self._stream.height = width + self._pad[1], height + self._pad[0]
        self._stream.pix_fmt = "yuv420p"
        if sample_aspect_ratio is not None:
            self._stream.codec_context.sample_aspect_ratio = sample_aspect_ratio
        context = self._stream.codec_context
        context.colorspace = context.color_primaries = context.color_trc = BT709
        context.color_range = LIMITED_RANGE
        self._stream.options = {"crf": "20", "preset": "veryfast"}
        self._time_base = time_base if time_base is not None else 1 / rate
        self._stream.time_base = self._time_base
        self._stream.codec_context.time_base = self._time_base
        self._step = max(1, round(1 / (rate * self._time_base)))  # one frame period in time-base units
        self._last_pts = -1
        self._count = 0
        self._offset: int | None = None  # the first frame's pts: the video starts at 0
        self._end = 0  # where the last frame shown ends, in the time base
        self._first_dts: int | None = None
        self._held: av.Packet | None = None  # the last packet, muxed at close with the duration that ends the video

    def write(self, image: np.ndarray, pts: int | None = None, duration: int | None = None) -> None:
        """Encode one (H, W, 3) uint8 frame; ``pts`` in the writer's time base (else frame order), shown for
        ``duration`` (else one frame period). Timestamps count from the first frame's, so the video starts at 0 and
        keeps the input's spacing, and it ends when its last frame does."""
        if any(self._pad):
            image = np.pad(image, ((0, self._pad[0]), (0, self._pad[1]), (0, 0)), mode="edge")
        frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(
            format="yuv420p", dst_colorspace=Colorspace.ITU709, dst_color_range=ColorRange.MPEG
        )
        if pts is not None:
            self._offset = pts if self._offset is None else self._offset
            pts -= self._offset
        if pts is None or pts <= self._last_pts:
            pts, duration = (self._last_pts + self._step if self._count else 0), None
        frame.pts, frame.time_base = pts, self._time_base
        self._end = max(self._end, pts + (duration if duration and duration > 0 else self._step))
        self._last_pts = pts
        self._count += 1
        self._mux(self._stream.encode(frame))

    def _mux(self, packets: list[av.Packet], last: bool = False) -> None:
        try:
            for packet in packets:
                if self._first_dts is None:
                    self._first_dts = packet.dts
                if self._held is not None:
                    self._container.mux(self._held)
                self._held = packet
            if last and self._held is not None:
                self._container.mux(self._ending(self._held))
                self._held = None
        except (av.error.FFmpegError, OSError) as e:
            raise OutputError(
                f"cannot write the video {self._path.name}: {plain_os_error(e, '') if isinstance(e, OSError) else e}"
            ) from e

    def _ending(self, packet: av.Packet) -> av.Packet:
        """The last packet, lasting until the last frame shown ends. A video's duration is its packets' decode
        times' span plus the last one's duration; with B-frames the decode times trail the frames' times, so at a
        variable rate the muxer's guess of the last duration (one period) ended the video before its last frame."""
        if packet.dts is not None and self._first_dts is not None and packet.time_base is not None:
            end = round(self._end * self._time_base / packet.time_base)
            lasting = end - (packet.dts - self._first_dts)
            if lasting > 0:
                packet.duration = lasting
        return packet

    def close(self) -> None:
        """Flush the encoder and close the file."""
        self._mux(self._stream.encode(None), last=True)
        self._container.close()
