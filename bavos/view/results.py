"""A result as the viewer shows it: its frames read on demand, its ids at any cut of its hierarchy, the objects of
a cut with their presence over the frames, and the cut saved as ``bavos recut`` writes it.

Memory stays bounded whatever the video's length: frames and ids are made when asked and kept in small caches,
and a cut holds the hierarchy's labels at the patch grid (2 bytes per token and level, as hierarchy.npz).
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bavos.errors import DestinationError, InputError, UsageError
from bavos.io.files import plain_name
from bavos.io.render import palette
from bavos.io.seek import FrameReader
from bavos.pipeline.batch import changed_reason
from bavos.pipeline.masks import nearest_processed, upsample_ids
from bavos.pipeline.outputs import check_contents, first_link, is_bavos_summary, levels_of, read_summary
from bavos.pipeline.products import products
from bavos.pipeline.recut import Opened, check_result_path, open_result, recut_analysis, recut_folder
from bavos.pipeline.segment import Analysis
from bavos.progress import as_progress

CACHED_FRAMES = 16  # decoded frames kept (RGB at the video's size)
CACHED_IDS = 16  # frames' ids at the frame's size kept
CACHED_CUTS = 4  # cuts kept (their per-frame presence)


@dataclass(frozen=True)
class ObjectRow:
    """One object of a cut: its id in the masks, colour, share of the tokens, first and last frame (indices of the
    result's frames) and where it is present: (first, last) frame index ranges, both included."""

    id: int
    colour: str
    share: float
    first: int
    last: int
    lanes: list[tuple[int, int]]


@dataclass(frozen=True)
class Cut:
    """A cut of the hierarchy: ``level`` capped at ``max_objects`` (0: no cap), its objects, the clusters of its
    level, the cap's count, what it could not give, and its analysis (None: the result's own cut of a result kept
    without hierarchy.npz, read from its files)."""

    level: int
    max_objects: int
    analysis: Analysis | None
    objects: list[ObjectRow]
    clusters: int
    capped_to: int | None
    warnings: list[str]


class _Cache(OrderedDict[Any, Any]):
    """The ``size`` most recently used entries."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def get_or(self, key: Any, make: Callable[[], Any]) -> Any:
        if key in self:
            self.move_to_end(key)
            return self[key]
        value = self[key] = make()
        while len(self) > self.size:
            self.popitem(last=False)
        return value


class ViewedResult:
    """A finished result of ``bavos segment``, opened for the viewer (files of the user's in it are shown around:
    saving a cut into it is refused, as ``bavos recut`` refuses).

    Raises:
        ResultPathError: ``folder`` is missing, a file or a folder of results (as recut says it).
        InputError: ``folder`` is not a finished bavos result, or holds a link,
            which bavos never writes and the viewer would not follow out of the result.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        check_result_path(self.folder)
        if not is_bavos_summary(read_summary(self.folder)):
            raise InputError(f"{self.folder}: not a finished result of bavos segment (no summary.json of bavos's)")
        link = first_link(self.folder)
        if link is not None:
            raise InputError(
                f"{self.folder}: holds a link ({link}), which bavos does not write: not a result as bavos wrote it"
            )
        self._lock = threading.Lock()  # the server's threads share the decoder and the caches
        self.name = self.folder.name  # the page's name for it (the server tells results of one name apart)
        self._load()

    def _load(self) -> None:
        self.stamp = self._stamp_now()  # read before the files: a write meanwhile is seen by the next refresh
        self.opened: Opened = open_result(self.folder)
        s = self.opened.summary
        self.summary = s
        self.frames, self.first_frame = int(s["frames"]), int(s.get("first_frame", 0))
        self.size = (int(s["height"]), int(s["width"]))
        self.random_weights = s.get("weights", {}).get("backbone_weights") == "none"
        settings = s.get("settings", {})
        whole = self.first_frame == 0 and not settings.get("start") and not settings.get("end")
        self._reader = (
            FrameReader(
                self.opened.source.path, self.size, self.frames if whole else None, bool(s.get("skipped_packets"))
            )
            if self.opened.source is not None
            else None
        )
        self.hierarchy_problem: str | None = None
        self._base: Analysis | None = None
        try:
            self._base = self.opened.analysis()
        except InputError as e:
            self.hierarchy_problem = str(e)
        self.files_problem: str | None = None  # files edited by hand: a save in place is refused, as recut refuses
        try:
            check_contents(self.folder, fix="move them out of it first")
        except DestinationError as e:
            shown = "the page shows the cut of hierarchy.npz" if self._base is not None else "saving is refused"
            self.files_problem = f"{e} ({shown})"
        self._frames = _Cache(CACHED_FRAMES)
        self._ids = _Cache(CACHED_IDS)
        self._cuts = _Cache(CACHED_CUTS)
        self._masks: list[Path] | None = None  # the mask files, for a result without hierarchy.npz

    def _stamp_now(self) -> str:
        """summary.json's modification time and size: a result rewritten (by bavos recut, another viewer) differs."""
        try:
            st = (self.folder / "summary.json").stat()
        except OSError:
            return ""
        return f"{st.st_mtime_ns}-{st.st_size}"

    def refresh(self) -> None:
        """Read the result again when it was rewritten since it was read (a bavos recut run beside the viewer)."""
        if self._stamp_now() == self.stamp:
            return
        with self._lock:
            if self._stamp_now() != self.stamp and is_bavos_summary(read_summary(self.folder)):
                self._reader_close()
                self._load()

    @property
    def level(self) -> int:
        """The level the result was cut at."""
        return int(self.summary["level"])

    @property
    def max_objects(self) -> int:
        """The cap the result was made with (0: none)."""
        return int(self.opened.config.max_objects)

    @property
    def converged(self) -> int:
        return int(self.summary["converged_level"])

    def info(self) -> dict[str, Any]:
        """What the page shows of the result before any frame (JSON-ready); ``stamp`` names this state of it, for
        ``save``."""
        self.refresh()
        s = self.summary
        # a source changed in place (recut warns alike), touched while the viewer runs too: said on each read
        source = self.opened.source
        source_note = changed_reason(s, source.path) if source is not None else None
        return {
            "name": self.name,
            "frames": self.frames,
            "first_frame": self.first_frame,
            "fps": s["fps"],
            "start_time": s.get("start_time", 0.0),
            "width": self.size[1],
            "height": self.size[0],
            "objects": s["objects"],
            "level": self.level,
            "max_objects": self.max_objects,
            "converged": self.converged,
            "level_sizes": s["level_sizes"],
            "overlay_alpha": self.opened.config.overlay_alpha,
            "random_weights": self.random_weights,
            "note": s.get("weights", {}).get("note"),
            "source_problem": self.opened.problem,
            "hierarchy_problem": self.hierarchy_problem,
            "source_note": source_note,
            "files_problem": self.files_problem,
            "source": str(s["source"]),
            "stamp": self.stamp,
        }

    def frame(self, index: int) -> np.ndarray:
        """(H, W, 3) uint8 frame ``index`` of the result (0 = its first frame).

        Raises:
            InputError: no such frame, or the source is gone or changed (``opened.problem``).
        """
        self._check_index(index)
        if self._reader is None:
            raise InputError(self.opened.problem or f"{self.folder}: the source cannot be read")
        with self._lock:
            reader = self._reader
            return self._frames.get_or(index, lambda: reader.read(self.first_frame + index))

    def ids(self, index: int, level: int | None = None, max_objects: int | None = None) -> np.ndarray:
        """(H, W) uint16 ids of frame ``index`` at a cut (default: the result's own), as masks/*.png holds them.

        Raises:
            InputError, UsageError: as ``cut``; no such frame.
        """
        self._check_index(index)
        cut = self.cut(level, max_objects)
        key = (cut.level, cut.max_objects, index)
        with self._lock:
            analysis = cut.analysis
            if analysis is None:
                return self._ids.get_or(key, lambda: self._mask_file(index))
            return self._ids.get_or(key, lambda: self._make_ids(analysis, index))

    def _mask_file(self, index: int) -> np.ndarray:
        """masks/ of the result, its ``index``-th file in the frames' order."""
        from PIL import Image

        from bavos.io.video import natural_key

        if self._masks is None:
            self._masks = sorted((self.folder / "masks").glob("*.png"), key=natural_key)
        with Image.open(self._masks[index]) as image:
            return np.asarray(image).astype(np.uint16)

    def _make_ids(self, analysis: Analysis, index: int) -> np.ndarray:
        position = nearest_processed(index, analysis.stride, analysis.processed)
        ids = upsample_ids(analysis.ids(position), self.size, self.opened.config.upsample)
        return ids.astype(np.uint16)

    def _check_index(self, index: int) -> None:
        if not 0 <= index < self.frames:
            raise InputError(f"{self.name}: no frame {index} (the result has frames 0 to {self.frames - 1})")

    def cut(self, level: int | None = None, max_objects: int | None = None) -> Cut:
        """The hierarchy cut at ``level`` (None: the result's) and capped at ``max_objects`` (None: the result's).

        Raises:
            InputError: the result has no usable hierarchy.npz.
            UsageError: a level the hierarchy does not have, or a cap of a level without centroids (as recut says).
        """
        self.refresh()
        level = self.level if level is None else int(level)
        cap = self.max_objects if max_objects is None else int(max_objects)
        if self._base is None:
            if (level, cap) == (self.level, self.max_objects):
                return self._own_cut()
            raise InputError(self.hierarchy_problem or f"{self.folder}: no hierarchy.npz")
        base = self._base
        with self._lock:
            return self._cuts.get_or((level, cap), lambda: self._make_cut(base, level, cap))

    def _make_cut(self, base: Analysis, level: int, cap: int) -> Cut:
        if level < 0:
            raise UsageError(f"--level {level}: levels are 0 or more")
        with products(self.opened.config.products):
            analysis = recut_analysis(base, level, cap, self.opened.segment)
        count = int(analysis.mapping.max()) + 1
        present = np.zeros((analysis.processed, count), dtype=bool)
        tokens = np.zeros(count, dtype=np.int64)
        for p in range(analysis.processed):
            counts = np.bincount(analysis.ids(p).ravel(), minlength=count)[:count]
            tokens += counts
            present[p] = counts > 0
        # the frames each processed frame stands for (contiguous): a lane over processed frames maps onto frames
        nearest = np.array([nearest_processed(k, analysis.stride, analysis.processed) for k in range(self.frames)])
        starts = np.searchsorted(nearest, np.arange(analysis.processed), side="left")
        ends = np.searchsorted(nearest, np.arange(analysis.processed), side="right") - 1
        colours = palette(count)
        total = max(1, int(tokens.sum()))
        rows = []
        for i in range(1, count):
            lanes = [(int(starts[a]), int(ends[b])) for a, b in _runs(present[:, i])]
            if lanes:
                rows.append(ObjectRow(i, _hex(colours[i]), tokens[i] / total, lanes[0][0], lanes[-1][1], lanes))
        h = analysis.hierarchy
        capped = h.capped_size if h.capped_from is not None else None
        return Cut(level, cap, analysis, rows, h.real_sizes[level], capped, list(h.warnings))

    def _own_cut(self) -> Cut:
        """The result's own cut from its summary and masks, for a result kept without hierarchy.npz: each object's
        share of the pixels and its first and last frame (its lane spans them)."""
        s = self.summary
        stats = s["object_stats"]
        total = max(1, sum(o["area"] for o in stats) + (s["background"] or {}).get("area", 0))
        colours = palette(max([o["id"] for o in stats], default=0) + 1)
        rows = []
        for o in stats:
            first, last = o["first_frame"] - self.first_frame, o["last_frame"] - self.first_frame
            rows.append(ObjectRow(o["id"], _hex(colours[o["id"]]), o["area"] / total, first, last, [(first, last)]))
        size = s["level_sizes"][self.level]
        return Cut(self.level, self.max_objects, None, rows, size, s.get("capped_to"), [])

    def hierarchy_picture(self, level: int | None = None, max_objects: int | None = None) -> bytes:
        """hierarchy.png of a cut, as bavos recut would draw it (PNG bytes)."""
        from bavos.io.pictures import save_hierarchy_picture

        cut = self.cut(level, max_objects)
        if cut.analysis is None:
            return (self.folder / "hierarchy.png").read_bytes()
        with tempfile.TemporaryDirectory(prefix=".bavos-view-") as tmp:
            path = Path(tmp) / "hierarchy.png"
            save_hierarchy_picture(path, levels_of(cut.analysis))
            return path.read_bytes()

    def save(self, level: int, max_objects: int, name: str | None = None, stamp: str | None = None) -> dict[str, Any]:
        """Write the cut as ``bavos recut RESULT --level L --max-objects N`` writes it: into the result itself, or
        (``name``) into a new folder of that name beside it, holding a copy of the result re-cut. Returns the summary.
        ``stamp``: the state of the result the cut was chosen on (``info``); a result rewritten since is not
        overwritten.

        Raises:
            InputError, UsageError, LimitError, DestinationError, OutputError: as bavos recut; a name that is not a
                plain folder name, or that exists already; the result rewritten since ``stamp``.
        """
        if stamp is not None and stamp != self._stamp_now():
            raise InputError(
                f"{self.folder}: rewritten since the page read it (a bavos recut, or a save from another page): "
                "reload the page to see it as it is now, then save"
            )
        if name is None:
            with self._lock:
                summary = recut_folder(self.folder, level, max_objects, as_progress(None))
                self._reader_close()
                self._load()
            return summary
        target = self.folder.parent / plain_name(name, "a new folder beside the result:")
        if target.exists() or target.is_symlink():
            raise InputError(f"{target}: exists already; name a new folder")
        if self._base is None:  # no hierarchy.npz to copy: what recut says of it
            raise InputError(self.hierarchy_problem or f"{self.folder}: no hierarchy.npz")
        _copy_for_recut(self.folder, target)
        try:
            return recut_folder(target, level, max_objects, as_progress(None))
        except BaseException:
            shutil.rmtree(target, ignore_errors=True)  # a folder this call made, holding only copies
            raise

    def _reader_close(self) -> None:
        if self._reader is not None:
            self._reader.close()

    def close(self) -> None:
        """Close the source video."""
        with self._lock:
            self._reader_close()


def _hex(colour: np.ndarray) -> str:
    """(3,) uint8 RGB as the page writes colours ("#800000")."""
    return "#{:02x}{:02x}{:02x}".format(*(int(c) for c in colour))


def _runs(present: np.ndarray) -> list[tuple[int, int]]:
    """(first, last) index ranges, both included, where ``present`` (T,) holds."""
    edges = np.diff(np.concatenate([[0], present.astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1
    return [(int(a), int(b)) for a, b in zip(starts, ends, strict=True)]


def _copy_for_recut(folder: Path, target: Path) -> None:
    """What recut reads (summary.json, naming ``target`` as its output, and hierarchy.npz) copied into a new folder
    ``target``, made whole in a hidden sibling (``outputs.temporary_folder``) and renamed into place."""
    import json

    from bavos.io.owners import Heartbeat
    from bavos.pipeline.outputs import temporary_folder

    tmp = temporary_folder(target)
    try:
        summary = json.loads((folder / "summary.json").read_text())
        (tmp / "summary.json").write_text(json.dumps({**summary, "output": str(target)}, indent=2) + "\n")
        shutil.copy2(folder / "hierarchy.npz", tmp / "hierarchy.npz")
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        Heartbeat.remove(tmp)
