"""``--export video``: ``masks.mp4``, the colour masks alone as a video, with the input's timing."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from bavos.io.exports.base import Export

if TYPE_CHECKING:
    import numpy as np

    from bavos.io.video import Frame, VideoInfo


class MaskVideoWriter:
    """Encodes each frame's ids in their palette colours."""

    def __init__(self, folder: Path, info: VideoInfo, frames: int, ids: int) -> None:
        from bavos.io.render import palette
        from bavos.io.video import OverlayWriter

        self._video = OverlayWriter(
            folder / "masks.mp4", info.width, info.height, info.fps, info.time_base, info.sample_aspect_ratio
        )
        self._colours = palette(max(ids, 1))

    def add(self, frame: Frame, ids: np.ndarray) -> None:
        self._video.write(self._colours[ids], frame.pts, frame.duration)

    def close(self, video_name: str) -> None:
        self._video.close()


EXPORT = Export("video", "masks.mp4 (the colour masks as a video)", ("masks.mp4",), None, MaskVideoWriter)
