"""Exports for downstream tools (``--export``), written frame by frame in the writing pass.

- ``coco``: ``coco.json`` in the YouTube-VIS results layout: one entry per object (ids 1 and up) with its per-frame
  masks as COCO run-length encodings (pycocotools' compressed strings; ``null`` where the object is absent);
- ``objects``: ``objects/<id>/<frame>.png``, one black-and-white PNG per object and frame, for compositing tools;
- ``video``: ``masks.mp4``, the colour masks alone as a video.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from bavos.io.render import palette
from bavos.io.video import Frame, OverlayWriter, VideoInfo


def encode_rle(mask: np.ndarray) -> dict[str, Any]:
    """{"size": [H, W], "counts": str}: a (H, W) binary mask as a COCO run-length encoding, by pycocotools (the
    reference implementation), with its compressed counts as text for JSON."""
    from pycocotools import mask as mask_api

    rle = mask_api.encode(np.asfortranarray(mask, dtype=np.uint8))
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": rle["counts"].decode("ascii")}


class Exporter:
    """Writes the asked-for exports of one result while its frames are written."""

    def __init__(self, folder: Path, exports: tuple[str, ...], info: VideoInfo, frames: int, ids: int) -> None:
        self.folder, self.exports, self.frames = folder, exports, frames
        self.ids = ids  # ids 0..ids-1 (0 is the background)
        self._rle: dict[int, list[dict[str, Any] | None]] = {i: [] for i in range(1, ids)}
        self._video = (
            OverlayWriter(
                folder / "masks.mp4", info.width, info.height, info.fps, info.time_base, info.sample_aspect_ratio
            )
            if "video" in exports
            else None
        )
        self._colours = palette(max(ids, 1))
        if "objects" in exports:
            (folder / "objects").mkdir(exist_ok=True)  # there even with no object: what was asked for is there
            for i in range(1, ids):
                (folder / "objects" / str(i)).mkdir(parents=True, exist_ok=True)

    def add(self, frame: Frame, ids: np.ndarray) -> None:
        """One frame's (H, W) ids."""
        for i in range(1, self.ids) if ("coco" in self.exports or "objects" in self.exports) else ():
            mask = ids == i
            if "coco" in self.exports:
                self._rle[i].append(encode_rle(mask) if mask.any() else None)
            if "objects" in self.exports:
                _save(
                    Image.fromarray(mask.astype(np.uint8) * 255, mode="L"),
                    self.folder / "objects" / str(i) / f"{frame.name}.png",
                )
        if self._video is not None:
            self._video.write(self._colours[ids], frame.pts)

    def close(self, video_name: str) -> None:
        """Finish: close the mask video and write coco.json."""
        if self._video is not None:
            self._video.close()
        if "coco" in self.exports:
            entries = [
                {
                    "video_id": 1,
                    "video": video_name,
                    "object_id": i,
                    "category_id": 1,
                    "score": 1.0,
                    "segmentations": self._rle[i],
                }
                for i in range(1, self.ids)
            ]
            (self.folder / "coco.json").write_text(json.dumps(entries) + "\n")


def _save(image: Image.Image, path: Path) -> None:
    """Write a PNG (an OSError goes to the caller, which names the result being written)."""
    image.save(path, format="PNG", compress_level=1)
