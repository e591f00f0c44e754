"""Training clips: find them, decode each once into a frame cache at training size, sample frame triplets.

A clip is a video file or a folder that directly holds frames (YouTube-VIS / DAVIS ``JPEGImages`` layout),
found recursively. Folders of palette PNGs (annotation masks) are not clips. Each clip is decoded once,
resized bilinearly to the training resolution (as at inference, no antialiasing) and stored as raw uint8 frames
(``<key>.u8``, read through a memory map) with a ``<key>.json`` written last; the key hashes the clip's path,
size, modification time and the resolution, so a changed clip is decoded again. A clip that cannot be read, or
is too short, gets a ``<key>.skip.json`` with the reason (looked up again on resume instead of decoding).

Samples are a pure function of (seed, sample index): clip uniformly at random, centre uniformly at random,
frames ``centre - gap, centre, centre + gap`` (the gap shrunk for short clips by the release's rule). So a resumed
run, any number of worker processes and any number of torchrun processes see exactly the same samples.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset, Sampler

from bavos.errors import ClipsFolderError, InputError, plain_os_error
from bavos.io.files import atomic_path, write_json
from bavos.io.owners import sweep
from bavos.io.video import FRAME_EXTENSIONS, VIDEO_EXTENSIONS, VideoSource


@dataclass(frozen=True)
class CachedClip:
    """A decoded clip in the cache: ``frames`` frames of (height, width, 3) uint8 in ``data``."""

    source: str
    data: Path
    frames: int
    height: int
    width: int
    warnings: tuple[str, ...] = ()  # what decoding it found (as bavos segment says it)


@dataclass(frozen=True)
class Skipped:
    """A clip left out, and why."""

    source: str
    reason: str


def _is_mask_folder(first_frame: Path) -> bool:
    """Palette PNGs are annotation masks (DAVIS/YTVIS ``Annotations``), not frames."""
    if first_frame.suffix.lower() != ".png":
        return False
    try:
        with Image.open(first_frame) as im:
            return im.mode == "P"
    except (OSError, Image.DecompressionBombError):  # a frame too large to be a mask: decoding says what it is
        return False


# files a folder of clips often holds beside them, left out without a word (any other is named in a note)
KNOWN_OTHERS = {".txt", ".json", ".jsonl", ".csv", ".md", ".xml", ".yaml", ".yml", ".pkl", ".npy", ".npz", ".pt"}


def find_clips(root: Path, notes: list[str] | None = None) -> list[Path]:
    """Video files and frame folders under ``root``, recursively, in sorted order (hidden entries skipped), each
    once: links are followed, but a folder or file reached again (a link back up, two links to one clip) is not
    taken twice. What is left out is said in ``notes``: folders of palette PNGs (annotation masks), files that are
    neither videos nor frames, what was reached again.

    Raises:
        ClipsFolderError: ``root`` is missing or not a folder (an InputError and a UsageError).
        InputError: ``root`` holds no clips.
    """
    if not root.exists():
        raise ClipsFolderError(f"{root}: no such folder")
    if not root.is_dir():
        raise ClipsFolderError(f"{root}: not a folder; give a folder of videos and/or frame folders")
    said = notes if notes is not None else []
    found: list[Path] = []
    seen: dict[str, Path] = {}  # real path -> where it was found first
    masks: list[str] = []
    others: list[str] = []
    for folder, dirs, files in os.walk(root, followlinks=True):
        here = Path(folder)
        real = os.path.realpath(here)
        if real in seen:  # a link back to a folder searched already: a loop, or the same clips twice
            dirs[:] = []
            said.append(f"{here}: the same folder as {seen[real]} (a link): searched once")
            continue
        seen[real] = here
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        visible = sorted(f for f in files if not f.startswith("."))
        frames = sorted(f for f in visible if Path(f).suffix.lower() in FRAME_EXTENSIONS)
        if frames and _is_mask_folder(here / frames[0]):
            masks.append(str(here))
        elif frames:
            found.append(here)
        for name in visible:
            suffix = Path(name).suffix.lower()
            if suffix in VIDEO_EXTENSIONS:
                path = here / name
                real_file = os.path.realpath(path)
                if real_file in seen:
                    said.append(f"{path}: the same file as {seen[real_file]} (a link): used once")
                    continue
                seen[real_file] = path
                found.append(path)
            elif suffix not in FRAME_EXTENSIONS and suffix not in KNOWN_OTHERS:
                others.append(str(here / name))
    if masks:
        said.append(
            f"{_listed(masks)}: palette PNGs, taken for annotation masks (DAVIS, YouTube-VIS), not frames: left out "
            "(convert them to RGB to train on them)"
        )
    if others:
        said.append(
            f"{_listed(others)}: neither videos nor frames by their names, left out (videos are taken by their "
            f"extension: {', '.join(sorted(VIDEO_EXTENSIONS))})"
        )
    if not found:
        raise InputError(
            f"{root}: holds no videos ({', '.join(sorted(VIDEO_EXTENSIONS))}) and no folders of frames"
            + (f"; {said[-1]}" if said else "")
        )
    return sorted(found)


def _listed(names: list[str]) -> str:
    """A few names of a list, and how many more."""
    more = f" and {len(names) - 3} more" if len(names) > 3 else ""
    return ", ".join(names[:3]) + more


def cache_key(clip: Path, resolution: tuple[int, int]) -> str:
    """Hash of the clip's absolute path, size and modification time (every file's, for a folder) and resolution."""
    h = hashlib.sha1(os.fsencode(f"{clip.resolve()}|{resolution[0]}x{resolution[1]}"))  # any name's bytes
    files = sorted(clip.iterdir()) if clip.is_dir() else [clip]
    for f in files:
        st = f.stat()
        h.update(os.fsencode(f"|{f.name}|{st.st_size}|{st.st_mtime_ns}"))
    return h.hexdigest()


def _resize(image: np.ndarray, resolution: tuple[int, int]) -> np.ndarray:
    x = torch.tensor(image).permute(2, 0, 1)[None].float()  # (1, 3, H, W)
    x = F.interpolate(x, size=resolution, mode="bilinear", align_corners=False, antialias=False)
    return x[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()  # (h, w, 3)


def _decode(clip: Path, base: Path, resolution: tuple[int, int], min_frames: int) -> CachedClip | Skipped:
    """Decode ``clip`` into ``base``.u8 + ``base``.json, or record why it is skipped in ``base``.skip.json."""
    data = base.with_name(base.name + ".u8")
    count = 0
    found: list[str] = []
    try:
        with atomic_path(data) as tmp, open(tmp, "wb") as out:
            source = VideoSource(clip)
            found = source.warnings
            for frame in source.frames():
                out.write(_resize(frame.image, resolution).tobytes())
                count += 1
            if count < min_frames:
                raise InputError(f"too short ({count} frame{'s' if count != 1 else ''}, training needs {min_frames})")
    except InputError as e:
        reason = str(e).removeprefix(f"{clip}: ")
        write_json(base.with_name(base.name + ".skip.json"), {"source": str(clip), "reason": reason})
        return Skipped(str(clip), reason)
    h, w = resolution
    meta = {"source": str(clip), "frames": count, "height": h, "width": w, "warnings": found}
    write_json(base.with_name(base.name + ".json"), meta)
    return CachedClip(str(clip), data, count, h, w, tuple(found))


def _lookup(clip: Path, base: Path) -> CachedClip | Skipped | None:
    meta, skip = base.with_name(base.name + ".json"), base.with_name(base.name + ".skip.json")
    try:
        if meta.is_file():
            m = json.loads(meta.read_text())
            data = base.with_name(base.name + ".u8")
            if data.stat().st_size != m["frames"] * m["height"] * m["width"] * 3:
                return None  # frames missing or cut short (a shared cache, a copy that stopped): decoded again
            return CachedClip(str(clip), data, m["frames"], m["height"], m["width"], tuple(m.get("warnings", ())))
        if skip.is_file():
            return Skipped(str(clip), json.loads(skip.read_text())["reason"])
    except (OSError, ValueError, KeyError, TypeError):
        return None  # an entry cut short (a full disk): the clip is decoded again
    return None


def cache_clips(
    clips: list[Path],
    cache: Path,
    resolution: tuple[int, int],
    min_frames: int,
    workers: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> list[CachedClip | Skipped]:
    """Decode every clip not yet in ``cache`` (in ``workers`` threads); one result per clip, in order.

    Raises:
        ClipsFolderError: ``cache`` is a file.
    """
    if cache.exists() and not cache.is_dir():
        raise ClipsFolderError(f"--cache {cache}: is a file; give a folder for the decoded clips")
    cache.mkdir(parents=True, exist_ok=True)
    sweep(cache)  # what a killed run left half-written (a clip's frames: GBs for long clips)

    def one(clip: Path) -> CachedClip | Skipped:
        try:
            base = cache / cache_key(clip, resolution)
        except OSError as e:
            return Skipped(str(clip), f"cannot read it: {plain_os_error(e, '')}")
        return _lookup(clip, base) or _decode(clip, base, resolution, min_frames)

    results: list[CachedClip | Skipped] = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for i, result in enumerate(pool.map(one, clips)):
            results.append(result)
            if progress is not None:
                progress(i + 1, len(clips))
    return results


def release_gap(length: int, frames: int, gap: int) -> int:
    """The gap the release's data loader uses for a clip of ``length`` frames (method.md §4.1, its ``data.py``).

    It keeps the largest gap ``g <= gap`` with ``g * (frames // 2) < length - g * (frames // 2) - 1``. Where that
    leaves 0 (3 frames of a 3-frame clip), the release would feed one frame three times; bavos takes 1 instead,
    consecutive frames (the only difference, and only for such clips).
    """
    half = frames // 2
    g = min(gap, (length - 2) // (2 * half)) if half else gap
    return max(g, 1)


def triplet(index: int, seed: int, lengths: list[int], frames: int, gap: int) -> tuple[int, list[int]]:
    """(clip, frame indices) of sample ``index``: a function of (seed, index) only.

    As the release samples: a clip uniformly, a centre ``c`` uniformly in ``[g * half, length - g * half - 1]``
    and frames ``c + g * (i - half)``, with ``half = frames // 2`` and ``g = release_gap(...)``.
    """
    rng = np.random.default_rng((seed, index))
    clip = int(rng.integers(len(lengths)))
    n = lengths[clip]
    g, half = release_gap(n, frames, gap), frames // 2
    low, high = g * half, n - 1 - g * max(half, frames - 1 - half)  # the release's range, every frame inside
    centre = int(rng.integers(low, max(low, high) + 1))
    return clip, [centre + g * (i - half) for i in range(frames)]


class ClipSamples(Dataset[Tensor]):
    """Sample ``index`` -> (frames, H, W, 3) uint8 frames of one clip, read from the cache's memory maps."""

    def __init__(self, clips: list[CachedClip], frames: int, gap: int, seed: int) -> None:
        self.clips, self.frames, self.gap, self.seed = clips, frames, gap, seed
        self.lengths = [c.frames for c in clips]
        self._maps: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return 2**62  # samples are drawn by index, without end

    def _map(self, i: int) -> np.ndarray:
        if i not in self._maps:
            c = self.clips[i]
            self._maps[i] = np.memmap(c.data, dtype=np.uint8, mode="r", shape=(c.frames, c.height, c.width, 3))
        return self._maps[i]

    def __getitem__(self, index: int) -> Tensor:
        clip, idx = triplet(index, self.seed, self.lengths, self.frames, self.gap)
        return torch.from_numpy(np.ascontiguousarray(self._map(clip)[idx]))  # (frames, H, W, 3)


class StepBatches(Sampler[list[int]]):
    """Sample indices of steps ``start`` .. ``stop - 1`` for process ``rank`` of ``world``.

    Step s uses samples ``s * batch .. (s + 1) * batch - 1``; process r takes its contiguous share.
    """

    def __init__(self, start: int, stop: int, batch: int, rank: int = 0, world: int = 1) -> None:
        self.start, self.stop, self.per = start, stop, batch // world
        self.batch, self.rank = batch, rank

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start, self.stop):
            first = step * self.batch + self.rank * self.per
            yield list(range(first, first + self.per))
