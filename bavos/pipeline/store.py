"""Per-frame labels and queries on disk while a video is segmented, and deterministic .npz files written as a stream.

A long video's labels at every level do not fit in memory (one hour at 320 x 480 is 108,000 frames of 2,400 tokens
a level), so the pipeline writes them window by window into a temporary file, each window a zlib-compressed chunk,
and reads them back frame by frame. Memory holds one chunk and the chunks' offsets. On a CPU, the frames' queries
wait for the labels pass in a temporary file too (:class:`QueryStore`): reading them back costs far less than
running the backbone again.
"""

from __future__ import annotations

import bisect
import io
import os
import threading
import zipfile
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from bavos.errors import OutputError, plain_os_error


class FrameLabels(Protocol):
    """Labels read frame by frame: ``frame(index)`` gives one processed frame's (levels, N) labels."""

    def frame(self, index: int) -> np.ndarray:
        """(levels, N) labels of processed frame ``index``."""
        ...

    def close(self) -> None:
        """Let go of what holds the labels (a temporary file)."""
        ...


_EPOCH = (1980, 1, 1, 0, 0, 0)  # fixed zip entry times: the same arrays give the same bytes


class _TemporaryFile:
    """An unbuffered temporary file the store creates and removes (a full disk fails the write that hits it, not a
    later read)."""

    def __init__(self, path: Path, what: str) -> None:
        self.path = Path(path)
        try:
            self._file = open(self.path, "w+b", buffering=0)
        except OSError as e:
            raise OutputError(f"cannot create the temporary {what} file: {plain_os_error(e, self.path)}") from e

    def close(self) -> None:
        """Remove the temporary file (also when the disk is full and the last write cannot be flushed)."""
        try:
            self._file.close()
        except OSError:
            pass  # the file goes anyway; the write that failed has been reported (or given up on)
        finally:
            self.path.unlink(missing_ok=True)


class LabelStore(_TemporaryFile):
    """(frames, rows, tokens) labels written a window at a time, read a frame or a window at a time.

    Args:
        path: the temporary file (created, overwritten).
        rows: label rows per frame (levels).
        tokens: labels per row (patches per frame).
        dtype: stored integer type (uint16 when every level has fewer than 65,536 clusters).
    """

    def __init__(self, path: Path, rows: int, tokens: int, dtype: np.dtype | type = np.int32) -> None:
        super().__init__(path, "labels")
        self.rows, self.tokens, self.dtype = rows, tokens, np.dtype(dtype)
        self._chunks: list[tuple[int, int, int]] = []  # (offset, bytes, frames) of each window
        self._first: list[int] = []  # the first frame of each window
        self.frames = 0
        self._cached: tuple[int, np.ndarray] | None = None
        self._reading = threading.Lock()

    def append(self, labels: np.ndarray) -> None:
        """Store a window's (frames, rows, tokens) labels after the ones already there."""
        labels = np.ascontiguousarray(labels, dtype=self.dtype).reshape(-1, self.rows, self.tokens)
        data = zlib.compress(labels.tobytes(), 1)
        try:
            offset = self._file.seek(0, 2)
            self._file.write(data)
        except OSError as e:
            raise OutputError(f"cannot keep the labels in the temporary file: {plain_os_error(e, self.path)}") from e
        self._first.append(self.frames)
        self._chunks.append((offset, len(data), len(labels)))
        self.frames += len(labels)

    def window(self, index: int) -> np.ndarray:
        """(frames, rows, tokens) of the ``index``-th appended window."""
        cached = self._cached  # one read: threads reading one result share it
        if cached is not None and cached[0] == index:
            return cached[1]
        offset, size, frames = self._chunks[index]
        data = os.pread(self._file.fileno(), size, offset) if hasattr(os, "pread") else self._read_at(offset, size)
        array = np.frombuffer(zlib.decompress(data), dtype=self.dtype)
        array = array.reshape(frames, self.rows, self.tokens)
        self._cached = (index, array)
        return array

    def _read_at(self, offset: int, size: int) -> bytes:
        with self._reading:  # no pread (Windows): a seek and a read, one thread at a time
            self._file.seek(offset)
            return self._file.read(size)

    def frame(self, index: int) -> np.ndarray:
        """(rows, tokens) labels of frame ``index``."""
        if not 0 <= index < self.frames:
            raise IndexError(f"frame {index} of {self.frames}")
        chunk = bisect.bisect_right(self._first, index) - 1
        return self.window(chunk)[index - self._first[chunk]]


class QueryStore(_TemporaryFile):
    """Windows of float32 queries in a temporary file, each stored as it is and read back by its index.

    A write that fails (a full disk) is not an error: the store gives up, frees its file, and the windows it does not
    hold are computed again (:attr:`kept` says which it holds).

    Args:
        path: the temporary file (created, overwritten).
    """

    def __init__(self, path: Path) -> None:
        super().__init__(path, "queries")
        self._windows: dict[int, tuple[int, tuple[int, ...]]] = {}  # index -> (offset, shape)
        self._end = 0
        self.failed = False

    @property
    def kept(self) -> set[int]:
        return set(self._windows)

    def offer(self, index: int, q: torch.Tensor) -> bool:
        """Keep window ``index``'s queries (any shape, float32); False when the file could not take them."""
        if self.failed:
            return False
        array = np.ascontiguousarray(q.detach().cpu().numpy(), dtype=np.float32)
        try:
            self._file.seek(self._end)
            self._file.write(array.data.cast("B"))
        except OSError:
            self.failed = True
            self._windows.clear()
            self._file.truncate(0)
            return False
        self._windows[index] = (self._end, array.shape)
        self._end += array.nbytes
        return True

    def take(self, index: int) -> torch.Tensor | None:
        """Window ``index``'s queries (on the CPU), or None when the store does not hold them."""
        if index not in self._windows:
            return None
        offset, shape = self._windows.pop(index)
        array = np.empty(shape, dtype=np.float32)
        self._file.seek(offset)
        view = array.data.cast("B")
        done = 0
        while done < len(view):  # an unbuffered read may return less than asked
            got = self._file.readinto(view[done:])
            if not got:
                raise OutputError(f"the temporary queries file {self.path} ended early")
            done += got
        return torch.from_numpy(array)

    def drop(self, index: int) -> None:
        """Let window ``index`` go unread."""
        self._windows.pop(index, None)


def _npy_header(shape: tuple[int, ...], dtype: np.dtype) -> bytes:
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": shape}
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    return buf.getvalue()


Entry = np.ndarray | tuple[tuple[int, ...], np.dtype, Callable[[], Iterable[np.ndarray]]]
"""An array, or (shape, dtype, chunks) where chunks() yields C-ordered pieces that make up the array."""


def write_npz(path: Path, entries: dict[str, Entry]) -> None:
    """Write an .npz that ``np.load`` reads, streaming large entries, with fixed entry times (the same arrays always
    give the same bytes). Integer entries are compressed; float ones are stored (deflate gains a few percent on
    them at a fraction of the disk's rate: many clusters' centroids are hundreds of MB)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, entry in entries.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_EPOCH)
            dtype = entry.dtype if isinstance(entry, np.ndarray) else np.dtype(entry[1])
            info.compress_type = zipfile.ZIP_STORED if dtype.kind == "f" else zipfile.ZIP_DEFLATED
            with zf.open(info, "w", force_zip64=True) as out:
                if isinstance(entry, np.ndarray):
                    array = entry if entry.flags.c_contiguous else entry.copy(order="C")  # 0-d arrays stay 0-d
                    out.write(_npy_header(array.shape, array.dtype))
                    out.write(array.tobytes())
                else:
                    shape, dtype, chunks = entry
                    out.write(_npy_header(tuple(shape), dtype))
                    for chunk in chunks():
                        out.write(np.ascontiguousarray(chunk, dtype=dtype).tobytes())
