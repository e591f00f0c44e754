from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import clip_frames, write_clip
from PIL import Image

from bavos.errors import InputError
from bavos.training import clips as clips_mod
from bavos.training.clips import (
    CachedClip,
    ClipSamples,
    Skipped,
    StepBatches,
    cache_clips,
    find_clips,
    release_gap,
    triplet,
)


def _frame_folder(folder: Path, n: int, ext: str = "jpg") -> Path:
    folder.mkdir(parents=True)
    for i, img in enumerate(clip_frames(n, 40, 56)):
        Image.fromarray(img).save(folder / f"{i * 5:05d}.{ext}")
    return folder


def test_finds_videos_and_frame_folders_recursively(tmp_path: Path) -> None:
    root = tmp_path / "clips"
    (root / "a").mkdir(parents=True)
    write_clip(root / "a" / "one.mp4", n=4)
    write_clip(root / "two.MOV", n=4)
    _frame_folder(root / "JPEGImages" / "seq1", 4)
    _frame_folder(root / "JPEGImages" / "seq2", 4, "png")
    masks = root / "Annotations" / "seq1"
    masks.mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8), np.uint8), mode="L").convert("P").save(masks / "00000.png")
    (root / ".hidden").mkdir()
    write_clip(root / ".hidden" / "x.mp4", n=4)
    (root / "notes.txt").write_text("not a clip")
    found = [p.relative_to(root).as_posix() for p in find_clips(root)]
    assert found == ["JPEGImages/seq1", "JPEGImages/seq2", "a/one.mp4", "two.MOV"]


@pytest.mark.parametrize("make", ["missing", "empty", "file"])
def test_bad_roots_are_one_line_errors(tmp_path: Path, make: str) -> None:
    root = tmp_path / "clips"
    if make == "empty":
        root.mkdir()
        (root / "sub").mkdir()
    elif make == "file":
        root.write_text("x")
    with pytest.raises(InputError, match="clips"):
        find_clips(root)


def test_cache_decodes_once_and_records_skips(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "clips"
    root.mkdir()
    good = write_clip(root / "good.mp4", n=6, height=48, width=64)
    short = write_clip(root / "short.mp4", n=2)
    bad = root / "bad.mp4"
    bad.write_bytes(b"\x00" * 100)
    folder = _frame_folder(root / "frames", 5)
    cache = tmp_path / "cache"
    results = cache_clips(find_clips(root), cache, (32, 48), min_frames=3, workers=2)
    by_source = {Path(r.source).name: r for r in results}
    assert isinstance(by_source["good.mp4"], CachedClip) and by_source["good.mp4"].frames == 6
    assert isinstance(by_source["frames"], CachedClip) and by_source["frames"].frames == 5
    assert isinstance(by_source["short.mp4"], Skipped) and "too short (2 frames" in by_source["short.mp4"].reason
    assert isinstance(by_source["bad.mp4"], Skipped) and "not a video" in by_source["bad.mp4"].reason
    data = np.fromfile(by_source["good.mp4"].data, dtype=np.uint8).reshape(6, 32, 48, 3)
    assert data[0, 10, 2].tolist()[0] > 150  # the red square's left edge, resized
    assert not list(cache.glob(".*"))  # no temporary files left

    def fail(*args: object) -> None:
        raise AssertionError("decoded again")

    monkeypatch.setattr(clips_mod, "_decode", fail)
    again = cache_clips([good, short, bad, folder], cache, (32, 48), min_frames=3)
    assert [type(r) for r in again] == [CachedClip, Skipped, Skipped, CachedClip]
    monkeypatch.undo()
    write_clip(good, n=7, height=48, width=64)  # changed file: decoded again
    assert cache_clips([good], cache, (32, 48), min_frames=3)[0].frames == 7


def test_triplets_are_a_function_of_seed_and_index() -> None:
    lengths = [3, 9, 100]
    draws = [triplet(i, 7, lengths, 3, 4) for i in range(300)]
    assert draws == [triplet(i, 7, lengths, 3, 4) for i in range(300)]
    assert draws != [triplet(i, 8, lengths, 3, 4) for i in range(300)]
    assert {c for c, _ in draws} == {0, 1, 2}
    for clip, frames in draws:
        n = lengths[clip]
        gap = frames[1] - frames[0]
        assert frames[2] - frames[1] == gap and 0 <= frames[0] and frames[2] < n
        assert gap == {0: 1, 1: 3, 2: 4}[clip]  # 3 frames: consecutive; 9 frames: 3, as the release shrinks it
    starts = {f[0] for c, f in draws if c == 2}
    assert len(starts) > 40  # about 100 draws spread over the 92 possible starts


def _release_loop(length: int, gap: int) -> int:
    """The release's data.py rule for 3 frames, transcribed: shrink while gap >= length - gap - 1."""
    while gap >= length - gap - 1:
        gap -= 1
    return gap


@pytest.mark.parametrize("length", range(3, 31))
def test_gap_and_centres_follow_the_release(length: int) -> None:
    expected = max(1, _release_loop(length, 4))  # the release's 0 (length 3: one frame thrice) becomes 1
    assert release_gap(length, 3, 4) == expected
    draws = [triplet(i, 0, [length], 3, 4)[1] for i in range(400)]
    assert {f[1] - f[0] for f in draws} == {f[2] - f[1] for f in draws} == {expected}
    centres = {f[1] for f in draws}
    assert centres == set(range(expected, length - expected))  # the release's randint(gap, length - gap - 1)


def test_samples_read_the_cached_frames(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "c.mp4", n=5, height=48, width=64)
    cached = cache_clips([clip], tmp_path / "cache", (16, 24), min_frames=3)
    samples = ClipSamples(cached, frames=3, gap=1, seed=0)
    x = samples[12]
    assert x.shape == (3, 16, 24, 3) and x.dtype == torch.uint8
    _, idx = triplet(12, 0, [5], 3, 1)
    full = np.fromfile(cached[0].data, dtype=np.uint8).reshape(5, 16, 24, 3)
    assert np.array_equal(x.numpy(), full[idx])


def test_step_batches_split_each_step_between_processes() -> None:
    whole = list(StepBatches(3, 5, batch=4))
    assert whole == [[12, 13, 14, 15], [16, 17, 18, 19]]
    parts = [list(StepBatches(3, 5, batch=4, rank=r, world=2)) for r in range(2)]
    assert [parts[0][i] + parts[1][i] for i in range(2)] == whole


def test_a_cache_a_killed_run_left_is_mended(tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    from bavos.io.owners import owner_tag

    clip = write_clip(tmp_path / "a.mp4", n=5, height=32, width=48)
    cache = tmp_path / "cache"
    first = cache_clips([clip], cache, (32, 48), min_frames=3)[0]
    meta = first.data.with_name(first.data.name.removesuffix(".u8") + ".json")
    meta.write_text(json.dumps({"source": str(clip), "frames": 5})[:20])  # cut short by a full disk
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    host, _, start = owner_tag().split("~")
    partial = cache / f".{first.data.name}.bavos-tmp-140001-{host}~{proc.pid}~{start}"
    partial.write_bytes(b"x" * 4096)  # a clip's frames half-written when the run was killed
    again = cache_clips([clip], cache, (32, 48), min_frames=3)[0]
    assert again.frames == 5 and not partial.exists() and json.loads(meta.read_text())["frames"] == 5
    for damage in (lambda: again.data.unlink(), lambda: again.data.write_bytes(again.data.read_bytes()[:1000])):
        damage()  # nnUNet#291: "mmap length is greater than file size" from a cache entry cut short
        mended = cache_clips([clip], cache, (32, 48), min_frames=3)[0]
        assert mended.frames == 5 and mended.data.stat().st_size == 5 * 32 * 48 * 3


# Inputs after other trainers' bug reports (a newcomer's trial of bavos train)


def test_links_loops_and_what_is_left_out_are_said(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A link back up made the search repeat a clip 41 times, or never end (two links to "."); palette PNG folders
    and files of other kinds were left out without a word; a PNG too large for Pillow's check was an internal
    DecompressionBombError."""
    root = tmp_path / "clips"
    (root / "x").mkdir(parents=True)
    (root / "a.mp4").write_bytes(b"not decoded by the search")
    (root / "x" / "up").symlink_to("..")
    (root / "l1").symlink_to(".")
    (root / "l2").symlink_to(".")
    (root / "again.mp4").symlink_to("a.mp4")
    (root / "b.mxf").write_bytes(b"")  # a video by its extension (bavos segment reads it)
    (root / "notes.txt").write_text("mine")
    (root / "c.xyz").write_bytes(b"")
    palette = root / "pal"
    palette.mkdir()
    for i in range(3):
        Image.new("RGB", (16, 12), (i * 30, 90, 200)).convert("P").save(palette / f"{i:05d}.png")
    notes: list[str] = []
    assert find_clips(root, notes) == [root / "a.mp4", root / "b.mxf"]
    assert sum("(a link): searched once" in n for n in notes) == 3
    assert f"{root / 'again.mp4'}: the same file as {root / 'a.mp4'} (a link): used once" in notes
    assert any(n.startswith(f"{palette}: palette PNGs, taken for annotation masks") for n in notes)
    assert any(n.startswith(f"{root / 'c.xyz'}: neither videos nor frames by their names, left out") for n in notes)
    assert not any("notes.txt" in n for n in notes)
    huge = tmp_path / "huge"
    _frame_folder(huge, 2, "png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # as a 16000 x 12000 frame meets the default limit
    assert find_clips(huge) == [huge]


def test_a_clip_named_in_other_bytes_and_what_decoding_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A name that is not UTF-8 was an internal UnicodeEncodeError (the cache key); what decoding found (as
    bavos segment warns of it: a size that changes, timestamps that do not advance) was dropped."""
    import os

    from bavos.io.video import VideoSource

    odd = tmp_path / os.fsdecode(b"caf\xe9.mp4")
    write_clip(odd, n=5, height=32, width=48)
    (cached,) = cache_clips([odd], tmp_path / "cache", (32, 48), min_frames=3)
    assert isinstance(cached, CachedClip) and cached.frames == 5 and cached.warnings == ()

    class Warns(VideoSource):
        def frames(self):  # type: ignore[no-untyped-def]
            self.warn("the picture size changes at frame 2")
            yield from super().frames()

    monkeypatch.setattr(clips_mod, "VideoSource", Warns)
    clip = write_clip(tmp_path / "b.mp4", n=5, height=32, width=48)
    (first,) = cache_clips([clip], tmp_path / "cache", (32, 48), min_frames=3)
    (again,) = cache_clips([clip], tmp_path / "cache", (32, 48), min_frames=3)  # read back from the cache
    assert isinstance(first, CachedClip) and first.warnings == ("the picture size changes at frame 2",)
    assert isinstance(again, CachedClip) and again.warnings == first.warnings
    with pytest.raises(InputError, match=r"--cache .*: is a file; give a folder for the decoded clips"):
        cache_clips([clip], clip, (32, 48), min_frames=3)
