"""``--export objects``: ``objects/<id>/<frame>.png``, one black-and-white PNG per object and frame, for compositing
tools."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from bavos.io.exports.base import Export

if TYPE_CHECKING:
    import numpy as np

    from bavos.io.video import Frame, VideoInfo


class ObjectsWriter:
    """Writes each object's mask of each frame as it comes."""

    def __init__(self, folder: Path, info: VideoInfo, frames: int, ids: int) -> None:
        self.folder, self.ids = folder / "objects", ids
        self.folder.mkdir(exist_ok=True)  # there even with no object: what was asked for is there
        for i in range(1, ids):
            (self.folder / str(i)).mkdir(parents=True, exist_ok=True)

    def add(self, frame: Frame, ids: np.ndarray) -> None:
        import numpy as np
        from PIL import Image

        for i in range(1, self.ids):
            mask = Image.fromarray((ids == i).astype(np.uint8) * 255, mode="L")
            mask.save(self.folder / str(i) / f"{frame.name}.png", format="PNG", compress_level=1)

    def close(self, video_name: str) -> None:
        return None


def foreign_entry(folder: Path, clutter: Callable[[str], bool]) -> str | None:
    """The first entry under an ``objects/`` folder that the export does not write (a folder per id of PNGs;
    names that ``clutter`` accepts, what file browsers leave, are passed over inside the id folders)."""
    for e in os.scandir(folder):
        if not (e.name.isdigit() and e.is_dir(follow_symlinks=False)):
            return f"objects/{e.name}"
    for e in os.scandir(folder):
        for f in os.scandir(e.path):
            if not clutter(f.name) and not (f.name.endswith(".png") and f.is_file(follow_symlinks=False)):
                return f"objects/{e.name}/{f.name}"
    return None


EXPORT = Export(
    "objects", "objects/<id>/*.png (a mask per object and frame)", (), ("objects", foreign_entry), ObjectsWriter
)
