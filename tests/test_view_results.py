"""The viewer's results: frames and ids on demand equal to the result's files, cuts equal to recut's, saving a cut
equal to `bavos recut`, and what a result without its source or hierarchy still shows."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import EncoderInputs, comparable
from PIL import Image

from bavos.errors import DestinationError, InputError, UsageError
from bavos.io.video import VideoSource
from bavos.view.results import ViewedResult


def _masks(folder: Path) -> list[np.ndarray]:
    return [np.asarray(Image.open(p)) for p in sorted((folder / "masks").glob("*.png"))]


def _files(folder: Path) -> dict[str, object]:
    return {str(p.relative_to(folder)): comparable(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def _same_result(got: Path, want: Path) -> None:
    a, b = _files(got), _files(want)
    assert sorted(a) == sorted(b)
    for name in b:
        if name == "summary.json":
            sa, sb = json.loads((got / name).read_text()), json.loads((want / name).read_text())
            for key in ("objects", "object_stats", "level", "level_sizes", "capped_from", "capped_to", "settings"):
                assert sa[key] == sb[key], key
        else:  # the videos: their frame count and size (conftest.comparable)
            assert a[name] == b[name], name


def test_frames_and_ids_are_the_results(view_result: Path) -> None:
    r = ViewedResult(view_result)
    masks = _masks(view_result)
    frames = [f.image for f in VideoSource(r.summary["source"]).frames()]
    assert r.frames == len(masks) == 9 and r.info()["level"] == 2 and r.info()["level_sizes"] == [58, 34, 33]
    for k in (4, 0, 8, 5):
        np.testing.assert_array_equal(r.ids(k), masks[k])
        np.testing.assert_array_equal(r.frame(k), frames[k])
    with pytest.raises(InputError, match="no frame 9"):
        r.frame(9)


def test_a_part_of_a_damaged_video_shows_its_own_frames(tmp_path: Path, run_cli) -> None:
    """A trial's leftover: in a result of part of a video, after a packet that did not decode the viewer showed the
    next frame (it numbers frames by their packets, and only the whole video's count told it otherwise)."""
    from conftest import TINY
    from test_field_inputs import damaged_mjpeg

    video = damaged_mjpeg(tmp_path / "cam.avi")  # packet 10 of 20 has no frame
    args = ("segment", video, *TINY, "--backbone-weights", "none", "-q")
    assert run_cli(*args, "-o", tmp_path / "out", "--start", "4", "--end", "14").code == 0
    r = ViewedResult(tmp_path / "out" / "cam")
    assert r.summary["skipped_packets"] is True and r.first_frame == 4 and r.frames == 10
    frames = [f.image for f in VideoSource(video).frames()]
    for k in (9, 0, 6, 5, 4, 3):  # frames 13, 4, 10, 9, 8 and 7 of the video, the first three after the damage
        np.testing.assert_array_equal(r.frame(k), frames[4 + k], err_msg=f"frame {k}")
    assert run_cli(*args, "-o", tmp_path / "clean", "--end", "5").code == 0  # before the damage: nothing skipped
    assert json.loads((tmp_path / "clean" / "cam" / "summary.json").read_text())["skipped_packets"] is False


def test_a_cut_lists_what_recut_writes(view_result: Path, tmp_path: Path, run_cli) -> None:
    r = ViewedResult(view_result)
    for level, cap in ((0, 0), (1, 0), (2, 5)):
        copy = tmp_path / f"c{level}-{cap}"
        shutil.copytree(view_result, copy)
        assert run_cli("recut", copy, "--level", level, "--max-objects", cap, "-q").code == 0
        summary = json.loads((copy / "summary.json").read_text())
        cut = r.cut(level, cap)
        assert [o.id for o in cut.objects] == [o["id"] for o in summary["object_stats"]]
        assert [(o.first, o.last) for o in cut.objects] == [
            (o["first_frame"], o["last_frame"]) for o in summary["object_stats"]
        ]
        masks = _masks(copy)
        for k in (0, 7):
            np.testing.assert_array_equal(r.ids(k, level, cap), masks[k])
    with pytest.raises(UsageError, match="--level 7 does not exist: this video's hierarchy has levels 0..2"):
        r.cut(7, 0)
    with pytest.raises(UsageError, match="capping level 0 needs its centroids"):
        r.cut(0, 5)


def test_saving_a_cut_is_bavos_recut(view_result: Path, tmp_path: Path, run_cli, encoder_inputs: EncoderInputs) -> None:
    here, there = tmp_path / "a" / "clip", tmp_path / "b" / "clip"
    shutil.copytree(view_result, here)
    shutil.copytree(view_result, there)
    assert run_cli("recut", there, "--level", "2", "--max-objects", "4", "-q").code == 0
    recut = encoder_inputs.take()
    r = ViewedResult(here)
    summary = r.save(2, 4)
    assert summary["level"] == 2 and r.level == 2 and r.max_objects == 4  # the viewer follows the saved cut
    _same_result(here, there)
    assert encoder_inputs.take() == recut and list(recut) == ["overlay.mp4"]  # the video's frames
    named = r.save(2, 4, "clip-coarse")
    assert named["output"] == str(here.parent / "clip-coarse")
    _same_result(here.parent / "clip-coarse", there)
    assert encoder_inputs.take() == recut
    for bad in ("../x", "a/b", ".hidden", "", "clip-coarse"):
        with pytest.raises((UsageError, InputError)):
            r.save(2, 4, bad)
    assert sorted(p.name for p in here.parent.iterdir()) == ["clip", "clip-coarse"]  # nothing else made


def test_a_result_whose_source_is_gone_shows_its_masks(view_result: Path, tmp_path: Path) -> None:
    folder = tmp_path / "clip"
    shutil.copytree(view_result, folder)
    summary = json.loads((folder / "summary.json").read_text())
    (folder / "summary.json").write_text(json.dumps({**summary, "source": str(tmp_path / "moved.mp4")}))
    r = ViewedResult(folder)
    assert "the source video is gone" in r.info()["source_problem"]
    np.testing.assert_array_equal(r.ids(3), _masks(view_result)[3])
    with pytest.raises(InputError, match="the source video is gone"):
        r.frame(3)
    with pytest.raises(InputError, match="the source video is gone"):
        r.save(1, 0)


def test_what_is_not_a_result(tmp_path: Path, view_result: Path) -> None:
    with pytest.raises(InputError, match="not a finished result of bavos segment"):
        ViewedResult(tmp_path)
    with pytest.raises(InputError, match=r"nothere: no such folder$"):
        ViewedResult(tmp_path / "nothere")
    folder = tmp_path / "clip"
    shutil.copytree(view_result, folder)
    with pytest.raises(InputError, match=rf"^{tmp_path}: holds 1 result \(clip\), not one: pass {tmp_path}/\* or one"):
        ViewedResult(tmp_path)
    (folder / "notes.txt").write_text("mine")  # shown: a file of the user's harms no view
    ViewedResult(folder)
    (folder / "masks" / "escape").symlink_to("/etc")  # a link out of the result: not followed
    with pytest.raises(InputError, match=r"clip: holds a link \(masks/escape\), which bavos does not write"):
        ViewedResult(folder)


def test_saving_a_cut_into_a_result_holding_the_users_files_is_refused(view_result: Path, tmp_path: Path) -> None:
    folder = tmp_path / "clip"
    shutil.copytree(view_result, folder)
    (folder / "masks" / "00000_fixed.png").write_bytes(b"mine")
    r = ViewedResult(folder)
    with pytest.raises(DestinationError, match=r"holds files bavos did not write \(masks/00000_fixed.png\)"):
        r.save(1, 0)
    assert (folder / "masks" / "00000_fixed.png").read_bytes() == b"mine"


def test_a_result_without_its_hierarchy_shows_its_own_cut(tmp_path: Path, sharp_weights: Path) -> None:
    from conftest import TINY, segment_in_process, write_clip

    video = write_clip(tmp_path / "clip.mp4", n=5, height=48, width=64)
    segment_in_process(
        video, "-o", tmp_path / "out", *TINY, "--backbone-weights", sharp_weights, "--no-hierarchy", "-q"
    )
    folder = tmp_path / "out" / "clip"
    r = ViewedResult(folder)
    assert "no hierarchy.npz" in r.info()["hierarchy_problem"]
    summary = json.loads((folder / "summary.json").read_text())
    cut = r.cut()
    assert [(o.id, o.first, o.last) for o in cut.objects] == [
        (o["id"], o["first_frame"], o["last_frame"]) for o in summary["object_stats"]
    ]
    for k in (0, 4, 2):
        np.testing.assert_array_equal(r.ids(k), _masks(folder)[k])
    assert r.hierarchy_picture() == (folder / "hierarchy.png").read_bytes()
    with pytest.raises(InputError, match="no hierarchy.npz"):
        r.cut(0, 0)


def test_a_recut_beside_the_viewer_is_seen_and_never_undone(view_result: Path, tmp_path: Path, run_cli) -> None:
    """A page open on a result that `bavos recut` then rewrote showed the old cut, and its Save wrote it back."""
    folder = tmp_path / "clip"
    shutil.copytree(view_result, folder)
    r = ViewedResult(folder)
    read = r.info()
    assert run_cli("recut", folder, "--level", "1", "--max-objects", "0", "-q").code == 0
    with pytest.raises(InputError, match="rewritten since the page read it .* reload the page"):
        r.save(read["level"], 3, stamp=read["stamp"])
    now = r.info()  # read again, as it is on disk
    assert now["level"] == 1 and now["stamp"] != read["stamp"] and r.cut().level == 1
    assert json.loads((folder / "summary.json").read_text())["level"] == 1  # the recut stands
    assert r.save(2, 3, stamp=now["stamp"])["level"] == 2


def test_the_page_says_a_changed_source_and_edited_masks(tmp_path: Path, sharp_weights: Path) -> None:
    """A touched source and a mask painted over were shown with no word (recut warns of the one, refuses the
    other); and a save under a new name without hierarchy.npz was an internal FileNotFoundError."""
    import os

    from conftest import TINY, segment_in_process, write_clip

    video = write_clip(tmp_path / "clip.mp4", n=4, height=48, width=64)
    segment_in_process(video, "-o", tmp_path / "out", *TINY, "--backbone-weights", sharp_weights, "-q")
    folder = tmp_path / "out" / "clip"
    viewed = ViewedResult(folder)
    assert viewed.info()["source_note"] is None
    os.utime(video, ns=(video.stat().st_atime_ns, video.stat().st_mtime_ns + 10**9))  # while the viewer runs
    assert "its source changed since it was made" in viewed.info()["source_note"]
    mask = folder / "masks" / "00000.png"
    painted = np.asarray(Image.open(mask)).copy()
    painted[:8, :8] = 0
    Image.fromarray(painted).save(mask)
    problem = ViewedResult(folder).info()["files_problem"]
    assert "masks/00000.png (changed since bavos wrote it)" in problem and "cut of hierarchy.npz" in problem
    (folder / "hierarchy.npz").unlink()
    with pytest.raises(InputError, match=r"no hierarchy.npz .*: bavos segment .* --level L --max-objects N"):
        ViewedResult(folder).save(0, 0, "other")
    assert not (tmp_path / "out" / "other").exists()
