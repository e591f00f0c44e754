"""Writing a segmentation result: masks, overlay video, pictures, hierarchy.npz, exports and summary.json, in a
temporary folder that is renamed into place when complete.

``hierarchy.npz`` holds what a later re-cut needs without the model: the labels of every token at every level
(``labels``: levels x processed frames x patches), the parent of every cluster at the level above (``parents``,
concatenated, with ``parent_offsets``), the centroids of the converged level (``centroids``, what a cap of that
level merges; the other levels' are not kept: each is clusters x key tokens float32, together several times the
converged level's), every cluster's token count (``areas`` with ``area_offsets``), the cut, and the map to the PNG
ids (``output_ids``). Labels are uint16 (int32 above 65,536 clusters).
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from bavos.config import ModelConfig, SegmentConfig, result_settings, segment_options, to_dict
from bavos.errors import DestinationError, LimitError, OutputError, plain_os_error
from bavos.io.background import Behind
from bavos.io.exports import Exporter, export_files, export_folders
from bavos.io.files import cut_name, display_name, hidden_sibling
from bavos.io.owners import Heartbeat, is_working_entry, output_lock
from bavos.io.pictures import Levels, ObjectRow, preview_frames, save_hierarchy_picture, save_preview, thumbnail
from bavos.io.render import overlay, write_mask
from bavos.io.sources import FrameSource
from bavos.io.video import Frame, OverlayWriter, source_stamp
from bavos.models.costs import size_text
from bavos.models.devices import use_kernels
from bavos.pipeline.masks import upsample_ids
from bavos.pipeline.segment import (
    MASKS_BEHIND,
    Analysis,
    Models,
    iter_masks,
    output_name,
    source_id,
    write_threads,
)
from bavos.pipeline.store import write_npz
from bavos.progress import Callback, Progress, as_progress


@dataclass
class FrameStats:
    """What the writing pass learns of a result's ids, frame by frame.

    Attributes:
        area: (ids,) pixels of each output id over every frame.
        first, last: (ids,) the first and last frame number (of the whole video) where each id is present; -1: never.
        thumbs: the preview's (frame number, thumbnail) pairs.
        waits: seconds the writing pass waited, by what it waited for (``write_frames``).
        first_number: the number of the result's first frame in the whole video.
    """

    area: np.ndarray
    first: np.ndarray
    last: np.ndarray
    thumbs: list[tuple[int, Any]]
    waits: dict[str, float]
    first_number: int = 0


RANDOM_NOTE = "RANDOM WEIGHTS: meaningless masks (they show the pipeline at work, not objects)"


def _done(value: np.ndarray | None) -> Future[np.ndarray | None]:
    done: Future[np.ndarray | None] = Future()
    done.set_result(value)
    return done


def write_frames(
    source: FrameSource,
    analysis: Analysis,
    cfg: SegmentConfig,
    folder: Path,
    progress: Progress,
    waits: dict[str, float] | None = None,
) -> FrameStats:
    """Write masks/, overlay.mp4 and the exports into ``folder`` (pass 4); return each id's area, first and last
    frame (numbers of the whole video) and the preview's thumbnails.

    With ``cfg.background`` (a GPU's default), frames are decoded ahead and written behind (video and export
    encoding) in background threads, and each frame's mask PNG and overlay frame are made in a pool of
    ``write_threads()`` threads, up to that many frames at once, the video and the exports taking them in order;
    without it, everything in this thread. ``waits`` gets the seconds the masks waited for frames (``"writing"``),
    the writer for masks (``"masks"``), the masks for the writer (``"writer"``), and adds the decoding's seconds to
    ``"decode"``.
    """
    info = analysis.info
    masks = folder / "masks"
    masks.mkdir()
    n_ids = int(analysis.mapping.max()) + 1
    area = np.zeros(n_ids, dtype=np.int64)
    first = np.full(n_ids, -1, dtype=np.int64)
    last = np.full(n_ids, -1, dtype=np.int64)
    chosen = set(preview_frames(analysis.decoded))
    thumbs: list[tuple[int, Any]] = []
    writer = (
        OverlayWriter(
            folder / "overlay.mp4", info.width, info.height, info.fps, info.time_base, info.sample_aspect_ratio
        )
        if cfg.overlay
        else None
    )
    exporter = Exporter(folder, cfg.exports, info, analysis.decoded, n_ids) if cfg.exports else None

    def picture(frame: Frame, ids: np.ndarray) -> np.ndarray | None:
        """The frame's own work, any frame at any time (in the pool): its mask PNG, and its overlay frame."""
        write_mask(masks / f"{frame.name}.png", ids)
        if writer is not None or frame.index in chosen:
            return overlay(frame.image, ids, cfg.overlay_alpha)
        return None

    def write(item: tuple[Frame, np.ndarray, Future[np.ndarray | None]]) -> None:
        """The frames' shared work, in order: the overlay video, the preview, the exports, the objects' counts."""
        frame, ids, made = item
        blended = made.result()
        if blended is not None:
            if writer is not None:
                writer.write(blended, frame.pts, frame.duration)
            if frame.index in chosen:
                thumbs.append((frame.number, thumbnail(blended)))
        if exporter is not None:
            exporter.add(frame, ids)
        counts = np.bincount(ids.ravel(), minlength=n_ids)[:n_ids]
        area[:] += counts
        seen = counts > 0
        first[seen & (first < 0)] = frame.number
        last[seen] = frame.number

    waits = {} if waits is None else waits
    background = bool(cfg.background)  # decided by the device (SegmentConfig.for_device); None: off
    behind = Behind(write, MASKS_BEHIND if background else 0)
    threads = write_threads() if background else 0
    pool = ThreadPoolExecutor(threads, thread_name_prefix="bavos-write") if threads else None
    made: deque[tuple[Frame, np.ndarray, Future[np.ndarray | None]]] = deque()
    frames = iter_masks(source, analysis, cfg.upsample, background, waits)
    try:
        for frame, ids in frames:
            if pool is None:  # in this thread, frame after frame
                behind.put((frame, ids, _done(picture(frame, ids))))
            else:
                made.append((frame, ids, pool.submit(picture, frame, ids)))
                if len(made) > threads:  # the pool busy with the frames after it
                    behind.put(made.popleft())
            progress("writing", frame.index + 1, analysis.decoded)
        while made:
            behind.put(made.popleft())
        behind.close()
        waits["masks"], waits["writer"] = behind.waited, behind.blocked
    finally:
        frames.close()  # its decoding thread ends now, not when a traceback holding it goes
        behind.abandon()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)  # nothing written into the folder after this returns
        if writer is not None:
            writer.close()
        if exporter is not None:
            exporter.close(display_name(source.path))
    return FrameStats(area, first, last, thumbs, waits)


def run_timings(analysis: Analysis, waits: dict[str, float], writing: float, total: float) -> dict[str, Any]:
    """summary.json's ``timings``: seconds per kind of work (decode, backbone, attention, clustering, labels,
    writing; the device synchronised to time it), ``total``, and ``waits``: per pass (keys, hierarchy, labels,
    writing) the seconds the work waited for decoded frames; ``masks``, the seconds the writer waited for masks;
    ``writer``, the seconds the masks waited for the writer. Decoding and writing run beside the rest, so the kinds
    of work add up to more than the total when they overlap."""
    waits = dict(waits)
    timings: dict[str, Any] = {**analysis.timings, "writing": writing, "total": total}
    timings["decode"] = timings.get("decode", 0.0) + waits.pop("decode", 0.0)
    timings["waits"] = {**analysis.waits, **waits}
    return timings


def objects_export_size(analysis: Analysis, upsample: str) -> tuple[int, int, int]:
    """Objects, the PNGs ``--export objects`` writes (one per object and frame, absent objects included) and their
    bytes, estimated from the first frame's masks encoded as the export encodes them."""
    import io

    from PIL import Image

    objects = int(analysis.mapping.max())  # ids 1..max
    files = objects * analysis.decoded
    if not files:
        return objects, 0, 0
    ids = upsample_ids(analysis.ids(0), (analysis.info.height, analysis.info.width), upsample)
    sample = []
    for i in range(1, min(objects, 4) + 1):
        buffer = io.BytesIO()
        Image.fromarray((ids == i).astype(np.uint8) * 255, mode="L").save(buffer, format="PNG", compress_level=1)
        sample.append(buffer.tell())
    return objects, files, int(files * np.mean(sample))


def save_pictures(folder: Path, title: str, stats: FrameStats, levels: Levels) -> None:
    """preview.png (the thumbnails and a legend of the objects) and hierarchy.png."""
    total = max(1, int(stats.area.sum()))
    objects = [
        ObjectRow(i, float(stats.area[i]) / total, int(stats.first[i]), int(stats.last[i]))
        for i in range(1, len(stats.area))
        if stats.area[i] > 0
    ]
    save_preview(folder / "preview.png", title, stats.thumbs, objects)
    save_hierarchy_picture(folder / "hierarchy.png", levels)


def level_text(h: Any) -> str:
    """The cut in the one numbering that summary.json and recut use, e.g. "level 10 of 0-10, capped to 20 clusters"."""
    capped = f", capped to {h.capped_size} clusters" if h.capped else ""
    return f"level {h.level} of 0-{h.converged}{capped}"


def levels_of(analysis: Analysis) -> Levels:
    h = analysis.hierarchy
    return Levels(analysis.areas, h.parents, h.converged, h.cut, h.capped_from, analysis.mapping)


def _concat(arrays: list[np.ndarray], dtype: type) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.cumsum([0] + [len(a) for a in arrays])
    return (np.concatenate(arrays).astype(dtype) if arrays else np.zeros(0, dtype)), offsets


def save_hierarchy(path: Path, analysis: Analysis) -> None:
    """Write hierarchy.npz (see the module docstring), streaming the labels from the analysis's store."""
    h = analysis.hierarchy
    levels, frames = len(h.sizes), analysis.processed
    n = analysis.grid[0] * analysis.grid[1]
    parents, parent_offsets = _concat(h.parents, np.int64)
    areas, area_offsets = _concat(analysis.areas, np.int64)
    kept = h.centroids[h.converged]
    centroids = kept.float().cpu().numpy() if kept is not None else np.zeros((0, 0), np.float32)  # level 0 too
    dtype = np.dtype(np.uint16 if max(h.sizes) <= 65536 else np.int32)

    def labels() -> Any:
        for level in range(levels):
            for t in range(frames):
                yield analysis.labels.frame(t)[level]

    write_npz(
        path,
        {
            "labels": ((levels, frames, n), dtype, labels),
            "areas": areas,
            "area_offsets": area_offsets,
            "sizes": np.array(h.sizes),
            "level": np.array(h.cut),
            "converged": np.array(h.converged),
            "capped_from": np.array(-1 if h.capped_from is None else h.capped_from),
            "grid": np.array(analysis.grid),
            "processed": np.arange(0, analysis.decoded, analysis.stride),
            "key_frames": np.array(analysis.keys.positions),
            "output_ids": analysis.mapping,
            "parents": parents,
            "parent_offsets": parent_offsets,
            "centroids": centroids,
        },
    )


def result_warnings(source: FrameSource, analysis: Analysis) -> list[str]:
    """What differed from what the input announced (the source's, once its frames were read) and from what the
    options asked (the hierarchy's): summary.json's ``warnings``."""
    return [*source.warnings, *analysis.hierarchy.warnings]


def object_entries(stats: FrameStats) -> dict[str, Any]:
    """summary.json's ``objects`` (count), ``background`` (id 0) and ``object_stats``: each present id's area and
    first and last frame."""
    objects = [
        {
            "id": i,
            "area": int(stats.area[i]),
            "first_frame": int(stats.first[i]),
            "last_frame": int(stats.last[i]),
        }
        for i in range(len(stats.area))
        if stats.area[i] > 0
    ]
    return {
        "objects": sum(1 for o in objects if o["id"] > 0),
        "background": objects[0] if objects else None,
        "object_stats": [o for o in objects if o["id"] > 0],
    }


def summary(
    source: FrameSource,
    analysis: Analysis,
    stats: FrameStats,
    cfg: SegmentConfig,
    models: Models,
    output: Path,
    timings: dict[str, float],
) -> dict[str, Any]:
    """What summary.json holds."""
    from bavos.version import __version__

    info, h = analysis.info, analysis.hierarchy
    return {
        "input": str(source.path),
        **({} if source.from_path else {"in_memory": True}),  # an array's or an iterable's frames: no file to read
        "source": source_id(source.path),
        "source_stamp": source_stamp(source.path),
        "weights_stamp": weights_stamp(models.requested),
        "output": str(output),
        "frames": analysis.decoded,
        "processed_frames": analysis.processed,
        "first_frame": stats.first_number,
        "fps": info.fps,
        "width": info.width,
        "height": info.height,
        "rotation": info.rotation,
        "start_time": info.start_time,
        "duration": info.duration,
        "warnings": result_warnings(source, analysis),
        "skipped_packets": source.skipped_packets,  # the viewer then numbers the frames by decoding (io.seek)
        **object_entries(stats),
        "key_frames": len(analysis.keys.positions),
        "patch_grid": list(analysis.grid),
        "level": h.level,
        "converged_level": h.converged,
        "level_sizes": h.real_sizes,
        "capped_from": h.capped_from,
        "capped_to": h.capped_size,
        "mode": "correlator" if models.correlator is not None else "training-free",
        "weights": {
            **models.weights.describe(),
            **({"note": RANDOM_NOTE} if models.config.backbone_weights == "none" else {}),
        },
        "settings": result_settings(models.requested, cfg),
        "device": str(models.device),
        "kernels": use_kernels(models.device),  # bavos's Triton kernels made the attention and clustering
        "peak_gpu_mb": None if analysis.peak_gpu_mb is None else round(analysis.peak_gpu_mb, 1),
        "config": to_dict(models.config, cfg),
        "timings": _rounded(timings),
        "version": __version__,
    }


WEIGHT_FILES = ("checkpoint", "backbone_weights")  # the options that may name a weights file


def weights_stamp(model: ModelConfig) -> dict[str, dict[str, int]]:
    """The size and modification time (``source_stamp``) of each weights file named by the options, by option
    (``checkpoint``, ``backbone_weights``): how ``--skip-existing`` tells a checkpoint that has changed under the
    same name since a result was made, as a run's ``last.pt`` does while it trains."""
    return {
        option: stamp
        for option in WEIGHT_FILES
        if (value := getattr(model, option)) not in (None, "release", "none", "hub")
        and Path(value).is_file()
        and (stamp := source_stamp(Path(value))) is not None
    }


def _rounded(values: dict[str, Any]) -> dict[str, Any]:
    return {k: _rounded(v) if isinstance(v, dict) else round(v, 4) for k, v in values.items()}


def read_summary(folder: Path) -> dict | None:
    """The summary.json of a finished output folder, or None (not finished, or unreadable)."""
    try:
        summary = json.loads((Path(folder) / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    return summary if isinstance(summary, dict) else None


# The files of a result: its own and the exports' (and the folders masks/, of PNGs, and the exports' own).
RESULT_FILES = {"summary.json", "overlay.mp4", "preview.png", "hierarchy.png", "hierarchy.npz"} | export_files()
EXPORT_FOLDERS = export_folders()
OS_CLUTTER = {".DS_Store", "Thumbs.db", "desktop.ini"}  # what file browsers leave in any folder they show


# In a result: every file bavos wrote there, its size, its modification time and a digest of its bytes (JSON;
# results written before the digests have sizes alone). A file of the user's is told from bavos's whatever its name,
# and so is a file changed since bavos wrote it (a mask edited by hand, of the same size too): a file whose time moved
# is read again, so that a copy that did not keep the times (``cp -r``) is still bavos's. A product cut short or
# emptied (a disk that filled) is damage bavos repairs (``batch.damage_reason``), not the user's work. Results of
# bavos 0.2.0 have none: their files are told by their names.
MANIFEST = ".bavos-files"


def _clutter(name: str) -> bool:
    return name in OS_CLUTTER or name.startswith("._")  # macOS's AppleDouble files too


def _walk(folder: Path, prefix: str = "") -> Iterator[tuple[str, os.DirEntry[str]]]:
    """Every entry under ``folder`` but folders (links included, not followed), with its path relative to it."""
    for entry in os.scandir(folder):
        if entry.is_dir(follow_symlinks=False):
            yield from _walk(Path(entry.path), f"{prefix}{entry.name}/")
        else:
            yield prefix + entry.name, entry


def _digest(path: str | Path) -> str:
    """A digest of the file's bytes (what tells an edit from a copy)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, lambda: hashlib.blake2b(digest_size=16)).hexdigest()


def write_manifest(folder: Path) -> None:
    """Record in the finished result ``folder`` each file in it, its size, its modification time (ns) and its
    digest: all bavos's, about to be published."""
    files, stamps = {}, {}
    for name, entry in _walk(folder):
        if name != MANIFEST:
            st = entry.stat(follow_symlinks=False)
            files[name] = st.st_size
            stamps[name] = [st.st_mtime_ns, _digest(entry.path)]
    (folder / MANIFEST).write_text(json.dumps({"files": files, "stamps": stamps}, separators=(",", ":")) + "\n")


def _manifest(folder: Path) -> dict[str, Any] | None:
    try:
        held = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return held if isinstance(held, dict) and isinstance(held.get("files"), dict) else None


def recorded_files(folder: Path) -> dict[str, int] | None:
    """The files and sizes bavos recorded in ``folder`` (None: none recorded, or unreadable)."""
    held = _manifest(folder)
    return None if held is None else held["files"]


def _changed(entry: os.DirEntry[str], name: str, size: int, stamp: Any) -> bool:
    """The recorded file ``entry`` holds other bytes than bavos wrote: a picture of another size, or any file of
    the same size whose time moved and whose digest differs (an empty file is damage, not an edit)."""
    now = entry.stat(follow_symlinks=False)
    if now.st_size == 0:
        return False
    if name.endswith(".png") and now.st_size != size:
        return True
    if now.st_size != size or not (isinstance(stamp, list) and len(stamp) == 2):
        return False  # another size of a product is damage (``batch.damage_reason``); no stamp: sizes alone
    return now.st_mtime_ns != stamp[0] and _digest(entry.path) != stamp[1]


def _foreign_entry(folder: Path) -> str | None:
    """The first entry under ``folder`` that bavos did not write into a result, or changed since (None: every entry
    is bavos's)."""
    held = _manifest(Path(folder))
    if held is not None:
        known, stamps = held["files"], held.get("stamps") or {}
        for name, entry in _walk(Path(folder)):
            if (_clutter(entry.name) and entry.is_file(follow_symlinks=False)) or name == MANIFEST:
                continue
            if entry.is_symlink() or name not in known:
                return name
            if _changed(entry, name, known[name], stamps.get(name)):
                return f"{name} (changed since bavos wrote it)"
        return None

    def pngs(path: str, prefix: str) -> str | None:
        return next(
            (
                prefix + e.name
                for e in os.scandir(path)
                if not _clutter(e.name) and not (e.name.endswith(".png") and e.is_file(follow_symlinks=False))
            ),
            None,
        )

    for entry in os.scandir(folder):
        if _clutter(entry.name) and entry.is_file(follow_symlinks=False):
            continue
        if entry.is_symlink():
            return entry.name
        if entry.name in RESULT_FILES and entry.is_file():
            continue
        if entry.name == "masks" and entry.is_dir():
            found = pngs(entry.path, "masks/")
        elif entry.name in EXPORT_FOLDERS and entry.is_dir():
            found = EXPORT_FOLDERS[entry.name](Path(entry.path), _clutter)
        else:
            found = entry.name
        if found:
            return found
    return None


def first_link(folder: Path) -> str | None:
    """The first link under ``folder`` (bavos writes none), as its path in it; None when there is none."""
    return next((name for name, entry in _walk(Path(folder)) if entry.is_symlink()), None)


def is_bavos_summary(summary: dict | None) -> bool:
    """``summary`` (``read_summary``'s) is a summary.json bavos wrote."""
    return summary is not None and {"version", "source", "settings"} <= summary.keys()


def is_bavos_result(folder: Path) -> bool:
    """A finished bavos result: a summary.json written by bavos, and nothing in the folder bavos did not write."""
    return is_bavos_summary(read_summary(folder)) and _foreign_entry(folder) is None


class InputPlaces:
    """Where the inputs are, resolved once (``.``, ``..``, links) and indexed, so that checking a destination
    against all of them costs the destination's depth, not the number of inputs."""

    def __init__(self, inputs: list[Path] | tuple[Path, ...]) -> None:
        self._covers: dict[Path, object] = {}  # every input and each folder above it -> the input as given
        self._folders: dict[Path, object] = {}  # frame-folder inputs -> the input as given
        for path in inputs:
            src = Path(path).resolve()
            shown = path if Path(path).name not in ("", ".", "..") else src  # "." is named by its path
            for place in (src, *src.parents):
                self._covers.setdefault(place, shown)
            if src.is_dir():
                self._folders.setdefault(src, shown)

    def check(self, final: Path) -> None:
        """Raises DestinationError when ``final`` is an input, holds one, or lies inside a frame folder given as
        input."""
        where = Path(final).resolve()
        if where in self._covers:
            raise DestinationError(
                f"{final}: the output folder would replace the input {self._covers[where]}; choose another -o"
            )
        inside = next((self._folders[p] for p in where.parents if p in self._folders), None)
        if inside is not None:
            raise DestinationError(
                f"{final}: the output folder would lie inside the input folder {inside}; choose an -o outside it"
            )


def check_contents(final: Path, fix: str = "choose another -o or move them") -> None:
    """Refuse an output folder that holds what is not bavos's: ``final`` may be absent, an empty folder, or a
    finished bavos result holding only what bavos writes (it is then replaced when the new result is complete).

    Raises:
        DestinationError: what is there, and ``fix``, what to do.
    """
    final = Path(final)
    try:
        if final.is_symlink():
            raise DestinationError(
                f"{final}: is a link; bavos replaces only result folders it wrote: choose another -o or remove the link"
            )
        if not final.exists():
            return
        if not final.is_dir():
            raise DestinationError(
                f"{final}: a file is there, not a result folder; bavos replaces only results it "
                "wrote: choose another -o or move the file"
            )
        if next(final.iterdir(), None) is None or is_bavos_result(final):
            return
        found = _foreign_entry(final) if (final / "summary.json").is_file() else next(e.name for e in final.iterdir())
    except OSError as e:
        raise DestinationError(f"cannot check the output folder: {plain_os_error(e, final)}") from e
    if found is None:  # only bavos's kinds of files, but a summary.json that cannot be read
        raise DestinationError(
            f"{final}: holds a damaged result (its summary.json cannot be read), which bavos "
            f"cannot tell for its own: remove it to make it again, or {fix}"
        )
    if is_working_entry(found):  # a workdir given to the Python call, or an -o, named as the result's folder
        raise DestinationError(
            f"{final}: bavos works there ({found}), so it cannot be a result's folder: save into one of its own, "
            f"such as {final / 'result'}"
        )
    raise DestinationError(
        f"{final}: holds files bavos did not write ({found}); bavos replaces only its own finished results: {fix}"
    )


NAME_MAX = 255  # bytes in a file name on every common file system


def other_place(name: str, source: str) -> str:
    """The folder name an input takes when ``name`` is held by another input's result: ``<name>-<first 8 hex digits
    of the SHA-1 of its source>``, the same on every run; ``name`` shortened where the two would pass ``NAME_MAX``
    bytes (a stem of 250 characters, whose own name fits)."""
    suffix = f"-{hashlib.sha1(source.encode()).hexdigest()[:8]}"
    return cut_name(name, NAME_MAX - len(suffix)) + suffix


def _place(final: Path, source: str | None) -> Path:
    """Where a result of ``source`` goes: ``final``, unless a finished result of another source is there (a run
    beside this one wrote it since the names were planned); None keeps ``final`` whatever it holds."""
    held = read_summary(final) if source is not None else None
    if held is not None and source is not None and str(held.get("source", "")) != source:
        return final.with_name(other_place(final.name, source))
    return final


def publish(
    tmp: Path,
    final: Path,
    result: dict[str, Any],
    keep_others: bool = False,
    fix: str = "choose another -o or move them",
) -> Path:
    """Write ``result`` as summary.json into the finished temporary folder ``tmp`` and move it into place, replacing
    an older result; return where it went.

    The choice and the renames are made under the output folder's lock (``owners.output_lock``), so that runs
    writing into one folder at once never replace each other's results: with ``keep_others``, a finished result of
    another source at ``final`` is kept and this one goes to ``other_place``.

    Raises:
        DestinationError: what is there now is not bavos's (``check_contents``).
        OSError: writing or renaming failed.
    """
    with output_lock(final.parent):
        place = _place(final, result.get("source") if keep_others else None)
        check_contents(place, fix)
        result["output"] = str(place)
        (tmp / "summary.json").write_text(json.dumps(result, indent=2) + "\n")
        write_manifest(tmp)
        old = hidden_sibling(place, f"old-{threading.get_ident()}")  # removed after the lock: one per thread
        if place.exists():
            place.rename(old)
        tmp.rename(place)
    Heartbeat.remove(tmp)
    shutil.rmtree(old, ignore_errors=True)
    return place


def temporary_folder(final: Path) -> Path:
    """A fresh hidden folder beside ``final`` (``.<name>.bavos-tmp-<owner>``, ``owners.owner_tag``) for a result being
    written."""
    tmp = hidden_sibling(final, f"tmp-{threading.get_ident()}")  # two saves of one process at once: two folders
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    except OSError as e:
        raise OutputError(f"cannot create the output folder: {plain_os_error(e, final.parent)}") from e
    Heartbeat.add(tmp)  # alive for runs on other machines sharing the folder
    return tmp


def write_result(
    final: Path,
    source: FrameSource,
    analysis: Analysis,
    cfg: SegmentConfig,
    models: Models,
    progress: Progress | Callback | None,
    started: float,
    keep_others: bool = False,
) -> dict[str, Any]:
    """Write every output of an analysis into the folder ``final`` (a temporary folder renamed into place; with
    ``keep_others``, elsewhere when another source's result took ``final`` meanwhile, see ``write_folder``)."""

    def make_summary(stats: FrameStats, seconds: float) -> dict[str, Any]:
        return summary(
            source,
            analysis,
            stats,
            cfg,
            models,
            final,
            run_timings(analysis, stats.waits, seconds, time.perf_counter() - started),
        )

    return write_folder(
        final,
        source,
        analysis,
        cfg,
        as_progress(progress),
        next(source.frames()).number,
        make_summary,
        random_weights=models.config.backbone_weights == "none",
        keep_others=keep_others,
    )


def segment_command(summary: dict[str, Any], folder: Path, cut: bool = True) -> str:
    """The ``bavos segment`` command that makes the result in ``folder`` again: its source, ``-o`` the folder's
    parent, ``--name`` the folder's name where it is not the source's, and each setting it was made with that is not
    the default (``config.segment_options``; its --level and --max-objects only with ``cut``)."""
    options = segment_options(summary.get("config") or {}, () if cut else ("level", "max_objects"))
    folder = Path(folder)
    if folder.name != output_name(Path(summary["source"])):  # renamed, or saved under a name: written there again
        options = ["--name", folder.name, *options]
    return shlex.join(["bavos", "segment", str(summary["source"]), "-o", str(folder.parent), *options])


def rewrite_command(folder: Path, summary: dict[str, Any], analysis: Analysis, cfg: SegmentConfig, *more: str) -> str:
    """The command that writes the result in ``folder`` again with its cut, and ``more`` options: a ``bavos recut``
    where its hierarchy.npz can give the cut (the level and cap said where they are not recut's defaults), else the
    ``bavos segment`` that made it (no hierarchy.npz, or a cap of a level whose centroids it does not keep)."""
    h = analysis.hierarchy
    if not cfg.save_hierarchy or h.capped_from not in (None, h.converged):
        return " ".join([segment_command(summary, folder), *map(shlex.quote, more)])
    cut = [] if h.level == h.converged else ["--level", str(h.level)]
    if cfg.max_objects != SegmentConfig.max_objects:
        cut += ["--max-objects", str(cfg.max_objects)]
    return shlex.join(["bavos", "recut", str(folder), *cut, *more])


def write_folder(
    final: Path,
    source: FrameSource,
    analysis: Analysis,
    cfg: SegmentConfig,
    progress: Progress | Callback | None,
    first_number: int,
    make_summary: Callable[[FrameStats, float], dict[str, Any]],
    fix: str = "choose another -o or move them",
    keep_going: bool = True,
    random_weights: bool = False,
    keep_others: bool = False,
) -> dict[str, Any]:
    """Write masks, videos, pictures, hierarchy.npz and the summary ``make_summary(stats, seconds writing)`` gives
    into a temporary folder, then rename it to ``final``; returns the summary.

    ``random_weights``: the backbone had random weights; preview.png's title says the masks are meaningless.
    ``keep_others``: a finished result of another source found at ``final`` when this one is complete (a run beside
    this one wrote it) is kept, and this one goes to ``other_place`` (the summary's ``output`` says where).
    ``--export objects`` over ``cfg.max_export_files`` PNGs is left out with a warning naming the recut that writes
    it (``keep_going``: the work of a segmentation is kept), or refused before writing.

    Raises:
        DestinationError: ``final`` holds what bavos did not write, or is the source (checked before writing).
        LimitError: the objects export is over its limit and not ``keep_going``.
        OutputError: writing failed (the temporary folder is removed; ``final`` is untouched).
    """
    progress = as_progress(progress)
    InputPlaces([source.path] if source.from_path else []).check(final)
    check_contents(final, fix)
    skipped = None
    if "objects" in cfg.exports:
        objects, files, size = objects_export_size(analysis, cfg.upsample)
        what = (
            f"--export objects would write {files:,} PNGs ({objects:,} objects x {analysis.decoded:,} frames, "
            f"about {size_text(size)})"
        )
        if cfg.max_export_files and files > cfg.max_export_files:
            if not keep_going:
                raise LimitError(
                    f"{what}, more than --max-export-files {cfg.max_export_files:,}: pass "
                    f"--max-export-files {files} to write them, or cut fewer objects (--max-objects)"
                )
            skipped = f"{what}, more than --max-export-files {cfg.max_export_files:,}: they were not written"
            cfg = replace(cfg, exports=tuple(e for e in cfg.exports if e != "objects"))
        else:  # said before writing
            progress.describe("writing", what.replace("would write", "writes"))
    tmp = temporary_folder(final)
    try:
        start = time.perf_counter()
        stats = write_frames(source, analysis, cfg, tmp, progress)
        stats.first_number = first_number
        frames, objects = analysis.decoded, int((stats.area[1:] > 0).sum())
        title = (
            f"{display_name(source.path)}: {frames} frame{'s' * (frames != 1)}, "
            f"{objects} object{'s' * (objects != 1)}, {level_text(analysis.hierarchy)}"
            + (f" - {RANDOM_NOTE}" if random_weights else "")
        )
        save_pictures(tmp, title, stats, levels_of(analysis))
        if cfg.save_hierarchy:
            save_hierarchy(tmp / "hierarchy.npz", analysis)
        result = make_summary(stats, time.perf_counter() - start)
        if skipped:
            command = rewrite_command(final, result, analysis, cfg, "--max-export-files", str(files))
            result["warnings"] = [*result["warnings"], f"{skipped}; to write them: {command}"]
        if cfg.exports and not objects:
            empty = (
                f"--export {' '.join(cfg.exports)}: this result has no object, so the exports hold none (a lower "
                "--tau or another --level gives more clusters)"
            )
            result["warnings"] = [*result["warnings"], empty]
        publish(tmp, final, result, keep_others, fix)
    except BaseException as e:
        Heartbeat.remove(tmp)
        shutil.rmtree(tmp, ignore_errors=True)
        # something of the user's came to be there meanwhile (said as it is), or not a failure to write
        if isinstance(e, DestinationError) or not isinstance(e, OSError | OutputError):
            raise
        cause = e if isinstance(e, OSError) else e.__cause__
        reason = plain_os_error(cause, "") if isinstance(cause, OSError) else str(e)
        raise OutputError(f"cannot write the result {final}: {reason}") from e
    return result
