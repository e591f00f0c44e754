"""Any frame of a video by its number, without decoding the video from its start: what a viewer scrubbing a long
video needs. The frames are those ``VideoSource.frames()`` gives (the same numbering, size and rotation).

A video file's packets are indexed once, without decoding (their timestamps, and which start a keyframe); a frame is
then decoded from the keyframe before it, and frames that follow are decoded on from there. A file whose packets carry
no timestamps (a raw H.264 stream), or whose frames turn out not to be numbered by them (a damaged packet, frames lost
before the first keyframe, H.264 with B-frames in AVI), is decoded from its start, forward only. A folder's frames
are its files.
"""

from __future__ import annotations

import bisect
from pathlib import Path

import av
import numpy as np

from bavos.errors import InputError
from bavos.io.video import decode_skipping, frame_image, list_frames, open_container, read_image

FORWARD = 48  # frames decoded on from the decoder's place rather than seeking again


class FrameReader:
    """Frames of a video file or a folder of frames by their number in the whole video.

    Args:
        path: the video file or the folder.
        size: (H, W) of the frames as ``VideoSource`` reports them (a picture size that changes is scaled to it).
        frames: how many frames the whole video decodes to, where known: another count than its packets' (a damaged
            packet, frames lost before the first keyframe) numbers the frames by decoding from the start.
        skipped_packets: packets gave no frame (``FrameSource.skipped_packets``, summary.json's): the frames are
            numbered by decoding from the start (where ``frames`` cannot tell: a part of the video).

    Raises:
        InputError: the path cannot be read, or a frame number it does not hold is asked for.
    """

    def __init__(
        self, path: Path, size: tuple[int, int], frames: int | None = None, skipped_packets: bool = False
    ) -> None:
        self.path, self.size = Path(path), size
        self._frames, self._skipped = frames, skipped_packets
        self._files: list[Path] | None = list_frames(self.path)[0] if self.path.is_dir() else None
        self._container: av.container.InputContainer | None = None
        self._pts: list[int] | None = None  # presentation timestamps in order: frame number -> pts
        self._keys: list[int] = []  # the keyframes' timestamps, in order
        self._decoded: object = None  # the decoder's frames from its place on
        self._next = -1  # the number of the frame the decoder gives next (-1: no decoder)
        self._number: dict[int, int] = {}
        self._sought = False  # the decoder was placed by a seek (not opened at the start)

    def read(self, number: int) -> np.ndarray:
        """Frame ``number`` as (H, W, 3) uint8 RGB, upright.

        Raises:
            InputError: the video has no such frame (or cannot be decoded there).
        """
        if number < 0:
            raise InputError(f"{self.path}: no frame {number}")
        if self._files is not None:
            if number >= len(self._files):
                raise InputError(f"{self.path}: no frame {number}, the folder holds {len(self._files)}")
            return read_image(self._files[number])
        return self._decode(number)

    def close(self) -> None:
        """Close the video file (a later ``read`` opens it again)."""
        if self._container is not None:
            self._container.close()
        self._container, self._decoded, self._next = None, None, -1

    def _open(self) -> None:
        if self._pts is None:
            self._index()
        self._container, stream = open_container(self.path)
        stream.thread_type = "SLICE"  # one thread: FFmpeg's frame threads drop the frames in flight at a damaged end

    def _index(self) -> None:
        """The packets' timestamps, read once without decoding, in a container of their own (a raw stream cannot
        seek back)."""
        container, stream = open_container(self.path)
        pts, keys = [], []
        try:
            for packet in container.demux(stream):
                if packet.pts is not None and packet.size > 0:
                    pts.append(packet.pts)
                    if packet.is_keyframe:
                        keys.append(packet.pts)
        finally:
            container.close()
        self._pts, self._keys = sorted(pts), sorted(keys)
        self._number = {t: i for i, t in enumerate(self._pts)}
        if self._skipped or (self._frames is not None and self._frames != len(pts)):
            self._forward_only()

    def _forward_only(self) -> None:
        """Number the frames by decoding from the start: the packets' times do not tell the frames' numbers."""
        self._pts, self._keys, self._number, self._next = [], [], {}, -1

    def _decode(self, number: int) -> np.ndarray:
        if self._container is None:
            self._open()
        assert self._pts is not None and self._container is not None
        timed = len(self._pts) > 0
        if timed and number >= len(self._pts):
            raise InputError(f"{self.path}: no frame {number}, the video holds {len(self._pts)}")
        if not (self._next >= 0 and self._next <= number < self._next + FORWARD):
            self._restart(self._pts[number] if timed else None)
        for frame in self._decoded:  # type: ignore[attr-defined]
            at = self._number.get(frame.pts, -1) if timed else self._next
            if timed and (at > self._next or at < 0):  # a frame that did not decode, or times in the packets' order
                self._forward_only()
                return self._decode(number)
            self._next = at + 1
            if at == number:
                return self._image(frame)
            if at > number:
                break
        else:
            if timed and self._sought:  # a seek that found nothing (seen in MPEG-TS): the frames read from the start
                self._forward_only()
                return self._decode(number)
            if not timed:  # read to the end from the start: the count is known
                count, self._next = self._next, -1
                raise InputError(f"{self.path}: no frame {number}, the video holds {count}")
        self._next = -1
        raise InputError(f"{self.path}: frame {number} could not be decoded")

    def _restart(self, target: int | None) -> None:
        """The decoder placed at the keyframe at or before ``target`` (None: at the start)."""
        assert self._container is not None
        key = None
        if target is not None and self._keys:
            key = self._keys[max(0, bisect.bisect_right(self._keys, target) - 1)]
        if key is None or key == self._keys[0]:  # from the start: opened again, as a seek to a time may miss it
            self.close()
            self._open()
            assert self._container is not None
            stream = self._container.streams.video[0]
            self._next, self._sought = 0, False  # the first frame that decodes is frame 0, as VideoSource numbers them
        else:
            stream = self._container.streams.video[0]
            self._container.seek(key, stream=stream, backward=True, any_frame=False)
            stream.codec_context.flush_buffers()
            self._next, self._sought = self._number.get(key, 0), True
        self._decoded = decode_skipping(self._container, stream, lambda e, packet: None)  # as VideoSource skips

    def _image(self, frame: av.VideoFrame) -> np.ndarray:
        h, w = self.size
        rotation = round(getattr(frame, "rotation", 0) / 90) % 4 * 90
        coded = (w, h) if rotation in (0, 180) else (h, w)  # the decoder's (width, height), before turning upright
        return frame_image(frame, coded)
