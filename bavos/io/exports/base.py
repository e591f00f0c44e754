"""What an export declares (``Export``) and what its writer does (``ExportWriter``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import numpy as np

    from bavos.io.video import Frame, VideoInfo


class ExportWriter(Protocol):
    """Writes one export of one result while its frames are written."""

    def add(self, frame: Frame, ids: np.ndarray) -> None:
        """One frame's (H, W) ids (0 is the background)."""
        ...

    def close(self, video_name: str) -> None:
        """Finish the export (``video_name``: the input's name, as the summary gives it)."""
        ...


@dataclass(frozen=True)
class Export:
    """One ``--export`` choice.

    Attributes:
        name: the value ``--export`` takes.
        says: what it writes, a few words for the option's help ("coco.json (YouTube-VIS results)").
        files: the file names it writes at the top of a result.
        folder: the folder it writes at the top of a result, if any, and a function naming the first entry of that
            folder the export does not write, ``check(path, clutter)`` (``clutter(name)``: a file browser's litter,
            passed over), or None.
        writer: makes the writer, ``writer(folder, info, frames, ids)``: the result's folder, the video's info, its
            frame count and its number of ids.
    """

    name: str
    says: str
    files: tuple[str, ...]
    folder: tuple[str, Callable[[Path, Callable[[str], bool]], str | None]] | None
    writer: Callable[[Path, VideoInfo, int, int], ExportWriter]
