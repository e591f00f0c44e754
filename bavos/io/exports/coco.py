"""``--export coco``: ``coco.json`` in the YouTube-VIS results layout, one entry per object (ids 1 and up) with its
per-frame masks as COCO run-length encodings (pycocotools' compressed strings; ``null`` where the object is
absent)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bavos.io.exports.base import Export

if TYPE_CHECKING:
    import numpy as np

    from bavos.io.video import Frame, VideoInfo


def encode_rle(mask: np.ndarray) -> dict[str, Any]:
    """{"size": [H, W], "counts": str}: a (H, W) binary mask as a COCO run-length encoding, by pycocotools (the
    reference implementation), with its compressed counts as text for JSON."""
    import numpy as np
    from pycocotools import mask as mask_api

    rle = mask_api.encode(np.asfortranarray(mask, dtype=np.uint8))
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": rle["counts"].decode("ascii")}


class CocoWriter:
    """Collects each object's run-length encodings frame by frame; writes coco.json at the end."""

    def __init__(self, folder: Path, info: VideoInfo, frames: int, ids: int) -> None:
        self.folder, self.ids = folder, ids
        self._rle: dict[int, list[dict[str, Any] | None]] = {i: [] for i in range(1, ids)}

    def add(self, frame: Frame, ids: np.ndarray) -> None:
        for i in range(1, self.ids):
            mask = ids == i
            self._rle[i].append(encode_rle(mask) if mask.any() else None)

    def close(self, video_name: str) -> None:
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


EXPORT = Export("coco", "coco.json (YouTube-VIS results with RLE masks)", ("coco.json",), None, CocoWriter)
