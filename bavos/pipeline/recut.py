"""Cutting a segmented video's hierarchy at another level or cap without the model: ``bavos recut``.

The first run keeps, in hierarchy.npz, every token's label at every level, the parents, the centroids of the
converged level and every cluster's area. A new cut takes the labels of its level; a cap merges that level's
closest centroids (as ``--max-objects`` does; so a cap needs the converged level, or a level with no more clusters
than the cap) and gives each token the merged cluster of its own, so the result equals
``bavos segment --level L --max-objects K`` (byte for byte on the same kind of device).
"""

from __future__ import annotations

import json
import time
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from bavos.config import SegmentConfig
from bavos.errors import InputError, ResultPathError, UsageError
from bavos.io.video import FrameRange, VideoInfo, VideoSource, source_stamp
from bavos.pipeline.cluster import MergeTree
from bavos.pipeline.outputs import segment_command
from bavos.pipeline.products import products
from bavos.pipeline.segment import Analysis, CutLabels, Keys, capped_analysis

if TYPE_CHECKING:  # for annotations: the functions import the writing code when they write
    from bavos.pipeline.outputs import FrameStats


class ArrayLabels:
    """(levels, T, N) labels held in memory, read a frame at a time."""

    def __init__(self, labels: np.ndarray) -> None:
        self.labels = labels

    def frame(self, index: int) -> np.ndarray:
        return self.labels[:, index]

    def close(self) -> None:
        return None


def recut_analysis(analysis: Analysis, level: int | None, max_objects: int, segment: str = "bavos segment") -> Analysis:
    """The same analysis cut at ``level`` (None: converged) and capped at ``max_objects`` (0: no cap).

    Raises:
        UsageError: the level does not exist, or capping it needs centroids the result did not keep (the message
            names the ``segment`` command that gives that cut).
    """
    h = analysis.hierarchy
    real = h.converged + 1
    cut = h.converged if level is None else level
    if cut > h.converged:
        raise UsageError(f"--level {cut} does not exist: this video's hierarchy has levels 0..{h.converged}")
    sizes, centroids, parents = h.sizes[:real], h.centroids[:real], h.parents[:real]
    areas = analysis.areas[:real]
    base = analysis.labels.base if isinstance(analysis.labels, CutLabels) else analysis.labels
    hierarchy = MergeTree(list(sizes), list(centroids), list(parents), h.converged, None, cut)
    if max_objects and sizes[cut] > max_objects and centroids[cut] is None:
        raise UsageError(
            f"capping level {cut} needs its centroids; hierarchy.npz keeps only the converged level's "
            f"({h.converged}): --max-objects 0 gives level {cut} uncapped without the model, or run {segment} "
            f"--level {cut} --max-objects {max_objects}"
        )
    return capped_analysis(
        replace(analysis, hierarchy=hierarchy, labels=CutLabels(base, real), areas=list(areas)), max_objects
    )


def _split(values: np.ndarray, offsets: np.ndarray) -> list[np.ndarray]:
    return [values[a:b] for a, b in zip(offsets[:-1], offsets[1:], strict=True)]


def load_analysis(folder: Path, info: Any, stride: int, decoded: int, segment: str = "bavos segment") -> Analysis:
    """The analysis a finished output folder kept in hierarchy.npz (its real levels; a cap is dropped).

    Args:
        info: the source's VideoInfo.
        decoded: the frames the run decoded (its summary's ``frames``).
        segment: the command that makes the result again, named where hierarchy.npz is missing.
    """
    path = folder / "hierarchy.npz"
    if not path.is_file():
        raise InputError(
            f"{folder}: no hierarchy.npz (the run was made with --no-hierarchy): another cut needs the model: "
            f"{segment} --level L --max-objects N"
        )
    try:
        analysis = _read_hierarchy(path, info, stride, decoded)
    except (OSError, ValueError, KeyError, IndexError, EOFError, zipfile.BadZipFile) as e:
        reason = str(e).splitlines()[0][:120] if str(e) else type(e).__name__
        raise InputError(f"{path}: damaged, recut cannot read it ({reason}): run bavos segment again") from e
    labels = analysis.labels
    assert isinstance(labels, ArrayLabels)  # as _read_hierarchy makes them
    processed, held = len(range(0, decoded, stride)), labels.labels.shape[1]
    if held != processed:
        raise InputError(
            f"{path}: holds the labels of {held} frames, the result's summary.json says {processed}: it "
            "belongs to another result; run bavos segment again"
        )
    return analysis


def _read_hierarchy(path: Path, info: Any, stride: int, decoded: int) -> Analysis:
    with np.load(path) as z:
        if "centroids" not in z.files or "centroid_offsets" in z.files:
            raise InputError(f"{path}: made by an older bavos without the centroids recut needs: run bavos segment")
        sizes = z["sizes"].tolist()
        converged = int(z["converged"])
        real = converged + 1
        parents = _split(z["parents"], z["parent_offsets"])[:real]
        areas = _split(z["areas"], z["area_offsets"])[:real]
        centroids: list[torch.Tensor | None] = [None] * real
        if z["centroids"].size:  # the converged level's, whichever it is (level 0 included)
            centroids[converged] = torch.from_numpy(z["centroids"])
        labels = z["labels"][:real]
        keys = Keys(torch.empty(0), z["key_frames"].tolist(), decoded, (int(z["grid"][0]), int(z["grid"][1])))
    if labels.ndim != 3 or labels.shape[0] != real or len(parents) != real or len(areas) != real:
        raise ValueError(f"labels of shape {labels.shape} for {real} levels")
    hierarchy = MergeTree(sizes[:real], centroids, parents, converged, None, converged)
    return Analysis(info, keys, hierarchy, ArrayLabels(labels), np.zeros(1, np.int64), stride, areas)


@dataclass
class Opened:
    """A finished result as recut reads it.

    Attributes:
        folder: the result's folder.
        summary: its summary.json.
        config: the settings it was made with.
        source: the video it was made from, opened (None when gone or changed: ``problem`` says which).
        problem: why the source cannot give the result's frames, as one line naming the command that makes it again.
        info: the source's VideoInfo, or one made from the summary when the source is gone.
        segment: the `bavos segment` command that makes the result again, but for its cut (named, with the cut asked
            for, where recut cannot make it).
    """

    folder: Path
    summary: dict[str, Any]
    config: SegmentConfig
    source: VideoSource | None
    problem: str | None
    info: VideoInfo
    segment: str

    def analysis(self) -> Analysis:
        """The hierarchy the result kept (hierarchy.npz), at its converged level uncapped.

        Raises:
            InputError: no hierarchy.npz, or one that is damaged or another result's.
        """
        return load_analysis(
            self.folder, self.info, self.config.frame_stride, int(self.summary["frames"]), self.segment
        )


def open_result(folder: Path) -> Opened:
    """Read a finished result's summary, settings and source (checked as recut checks it).

    Raises:
        ResultPathError: ``folder`` is missing, a file or a folder of results (``check_result_path``).
        InputError: no readable summary.json.
    """
    folder = Path(folder)
    check_result_path(folder)
    try:
        old = json.loads((folder / "summary.json").read_text())
        values: dict[str, Any] = {
            k: tuple(v) if isinstance(v, list) else v for k, v in old["config"]["SegmentConfig"].items()
        }
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InputError(f"{folder}: not a finished bavos output (no readable summary.json)") from e
    cfg = SegmentConfig(**values)
    segment = segment_command(old, folder, cut=False)
    kept = VideoInfo(Path(old["source"]), False, old["width"], old["height"], float(old["fps"]), None, 0, old["frames"])
    if old.get("in_memory"):  # its "source" names no file: never read whatever has that name now
        problem = (
            f"{folder}: it was made from frames in memory (an array or an iterable), which recut cannot read again; "
            "recut needs them for the frames of the masks and the overlay (in Python, cut with "
            "result.hierarchy.recut before the result is closed)"
        )
        return Opened(folder, old, cfg, None, problem, kept, segment)
    if not Path(old["source"]).exists():
        problem = (
            f"{old['source']}: the source video is gone; recut needs it for the frames of the masks and the overlay"
        )
        return Opened(folder, old, cfg, None, problem, kept, segment)
    try:
        source = VideoSource(old["source"], FrameRange.parse(cfg.start, cfg.end), cfg.fps)
        _check_source(source, old, segment_command(old, folder))
    except InputError as e:
        return Opened(folder, old, cfg, None, str(e), kept, segment)
    return Opened(folder, old, cfg, source, None, source.info, segment)


def results_inside(folder: Path) -> str | None:
    """What to say of a folder that holds results rather than being one (None: it holds none)."""
    results = sorted(p.parent.name for p in Path(folder).glob("*/summary.json")) if Path(folder).is_dir() else []
    if not results:
        return None
    return (
        f"{folder}: holds {len(results)} result{'s' * (len(results) != 1)} "
        f"({', '.join(results[:3])}{', ...' if len(results) > 3 else ''}), not one: pass {folder}/* or one of them"
    )


def check_result_path(folder: Path) -> None:
    """Raises ResultPathError where ``folder`` cannot be a result folder: it is missing, a file (a result's
    summary.json named instead of its folder), or a folder of results; the same answer in recut and in view."""
    folder = Path(folder)
    if folder.is_file():
        holder = folder.parent
        hint = f": pass the folder that holds it ({holder})" if (holder / "summary.json").is_file() else ""
        raise ResultPathError(f"{folder}: a file, not a result folder{hint}")
    if not folder.is_dir():
        raise ResultPathError(f"{folder}: no such folder")
    if (folder / "summary.json").is_file():  # a result (or its damaged summary, said by the caller)
        return
    said = results_inside(folder)
    if said is not None:
        raise ResultPathError(said)


def recut_folder(
    folder: Path, level: int | None, max_objects: int, progress: Any, max_export_files: int | None = None
) -> dict[str, Any]:
    """Rewrite a finished output folder for another cut: masks, overlay, pictures, hierarchy.npz, exports, summary
    (in a temporary folder renamed into place). Returns the new summary.

    Args:
        max_export_files: most PNGs of ``--export objects`` (None: the result's own setting); over it, the recut is
            refused before anything is written (LimitError).

    Raises:
        InputError: not a result, its source gone or changed, its hierarchy.npz missing or damaged.
        UsageError: a level or cap the hierarchy cannot give.
    """
    from bavos.pipeline.batch import changed_reason
    from bavos.pipeline.outputs import result_warnings, write_folder

    started = time.perf_counter()
    opened = open_result(folder)
    if opened.source is None:
        raise InputError(opened.problem or f"{folder}: the source cannot be read")
    old, source = opened.summary, opened.source
    cfg = replace(opened.config, level=level, max_objects=max_objects)
    if max_export_files is not None:
        cfg = replace(cfg, max_export_files=max_export_files)
    with products(cfg.products):  # a cap's distances as the segmentation computed them
        analysis = recut_analysis(opened.analysis(), level, max_objects, opened.segment)
    if cfg.fps and source.info.is_folder:
        analysis = replace(analysis, info=replace(analysis.info, fps=cfg.fps))
    # the same size and frame count (``_check_source``) but other bytes: a re-encode, an edit, or only a copy that
    # kept neither size nor time; the cut is the old frames', the pictures show the new ones
    changed = [
        f"{reason}: the masks are cut from its analysis then, the overlay and pictures show its frames now"
        for reason in [changed_reason(old, source.path)]
        if reason
    ]
    return write_folder(
        opened.folder,
        source,
        analysis,
        replace(cfg, save_hierarchy=True),
        progress,
        old.get("first_frame", 0),
        lambda stats, _: _recut_summary(
            old, stats, analysis, cfg, time.perf_counter() - started, [*result_warnings(source, analysis), *changed]
        ),
        fix="move them out of it first",
        keep_going=False,
        random_weights=old.get("weights", {}).get("backbone_weights") == "none",
    )


def _check_source(source: Any, old: dict[str, Any], segment: str) -> None:
    """Raises InputError when the source is not what the result was made from: its frame size, or the frames its
    container announces (a video replaced under the same name since). A file of the same size and time as the
    result recorded is the same: a container's announced count is not always what decodes (an edit list hides
    frames, a file cut short), and such a result was refused for good."""
    if old.get("source_stamp") is not None and old["source_stamp"] == source_stamp(source.path):
        return
    now = (source.info.width, source.info.height, source.frames_expected())
    was = (old.get("width"), old.get("height"), old.get("frames"))
    if now[:2] == was[:2] and (now[2] is None or now[2] == was[2]):
        return
    shown = [f"{w}x{h}" + (f", {n} frames" if n else "") for w, h, n in (now, was)]
    raise InputError(
        f"{source.path}: not the video this result was made from (now {shown[0]}; the result's "
        f"{shown[1]}): recut needs the frames it was made from; run {segment} again"
    )


def _recut_summary(
    old: dict[str, Any],
    stats: FrameStats,
    analysis: Analysis,
    cfg: SegmentConfig,
    seconds: float,
    warnings: list[str],
) -> dict[str, Any]:
    from bavos.config import to_dict
    from bavos.pipeline.outputs import object_entries
    from bavos.version import __version__

    h = analysis.hierarchy
    config = {**old["config"], "SegmentConfig": to_dict(cfg)["SegmentConfig"]}
    return {
        **old,
        **object_entries(stats),
        "level": h.level,
        "converged_level": h.converged,
        "level_sizes": h.real_sizes,
        "capped_from": h.capped_from,
        "capped_to": h.capped_size,
        "warnings": warnings,
        "settings": {**old["settings"], "level": cfg.level, "max_objects": cfg.max_objects},
        "config": config,
        "timings": {**old["timings"], "recut": round(seconds, 4)},
        "version": __version__,
    }
