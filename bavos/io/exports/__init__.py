"""Exports for downstream tools (``--export``), written frame by frame in the writing pass.

Each export is one module of this package that declares an ``EXPORT``: its name, the files and folders it writes
into a result, and its writer. ``EXPORTS`` lists them; the option's choices, the check of its values, and the
entries a result may hold (``bavos.pipeline.outputs``) follow from it. Adding an export is one module here, one
line in ``EXPORTS``, and its test.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from bavos.errors import ConfigError
from bavos.io.exports import coco, objects, video
from bavos.io.exports.base import Export, ExportWriter

if TYPE_CHECKING:  # the registry is read by `bavos segment --help`: numpy and PyAV load with the writers
    import numpy as np

    from bavos.io.video import Frame, VideoInfo

EXPORTS: dict[str, Export] = {e.name: e for e in (coco.EXPORT, objects.EXPORT, video.EXPORT)}
__all__ = ["EXPORTS", "Export", "ExportWriter", "Exporter", "check_exports", "export_files", "export_folders"]


def export_files() -> set[str]:
    """The file names the exports write at the top of a result."""
    return {name for e in EXPORTS.values() for name in e.files}


def export_folders() -> dict[str, Callable[[Path, Callable[[str], bool]], str | None]]:
    """The folders the exports write at the top of a result, each with the check of what it holds."""
    return dict(e.folder for e in EXPORTS.values() if e.folder is not None)


def check_exports(names: tuple[str, ...]) -> None:
    """Raise ConfigError naming the values of ``--export`` that are not exports."""
    unknown = sorted(set(names) - set(EXPORTS))
    if unknown:
        raise ConfigError(f"--export must be one of {', '.join(EXPORTS)}, got {', '.join(unknown)}")


class Exporter:
    """Writes the asked-for exports of one result while its frames are written."""

    def __init__(self, folder: Path, exports: tuple[str, ...], info: VideoInfo, frames: int, ids: int) -> None:
        check_exports(exports)
        self._writers = [EXPORTS[name].writer(folder, info, frames, ids) for name in EXPORTS if name in exports]

    def add(self, frame: Frame, ids: np.ndarray) -> None:
        """One frame's (H, W) ids."""
        for writer in self._writers:
            writer.add(frame, ids)

    def close(self, video_name: str) -> None:
        """Finish every export."""
        for writer in self._writers:
            writer.close(video_name)
