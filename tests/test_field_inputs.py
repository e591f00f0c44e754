"""Inputs rebuilt from other video tools' bug reports, run through `bavos segment` as a user would (random weights).

Each case of "inputs from the field" is a test here: nothing of the user's deleted, streams and timestamps as FFmpeg
sees them, damaged data named and skipped, pixels over their full range, one line for every failure. The expected
counts and times were checked against ffprobe on the same files.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from conftest import TINY, clip_frames, write_clip
from PIL import Image

QUIET = [*TINY, "--backbone-weights", "none", "-q"]


def write_stream(
    path: Path,
    n: int,
    width: int,
    height: int,
    fps: int = 10,
    offset: float = 0.0,
    codec: str = "mpeg2video",
    fmt: str = "mpegts",
    pix_fmt: str = "yuv420p",
) -> Path:
    """``n`` frames of a grey ramp with PyAV, the first at ``offset`` seconds."""
    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(
                np.full((height, width, 3), (40 + 10 * i) % 250, np.uint8), format="rgb24"
            )
            frame.pts, frame.time_base = i + round(offset * fps), Fraction(1, fps)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def encode(
    path: Path,
    images: list[np.ndarray],
    pts: list[int] | None = None,
    fps: int = 10,
    sample_aspect_ratio: Fraction | None = None,
) -> Path:
    """H.264 in ``path``'s container, with these presentation times (in 1/fps units) and pixel aspect ratio."""
    height, width = images[0].shape[:2]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.time_base = Fraction(1, fps)
        if sample_aspect_ratio is not None:
            stream.codec_context.sample_aspect_ratio = sample_aspect_ratio
        for i, img in enumerate(images):
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            if pts is not None:
                frame.pts, frame.time_base = pts[i], Fraction(1, fps)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def frame_folder(folder: Path, n: int = 6, height: int = 48, width: int = 64) -> Path:
    folder.mkdir(parents=True)
    for i, img in enumerate(clip_frames(n, height, width)):
        Image.fromarray(img).save(folder / f"{i:05d}.jpg")
    return folder


def tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` and its bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def summary(folder: Path) -> dict:
    return json.loads((folder / "summary.json").read_text())


def segment_json(run_cli: Callable, path: Path, out: Path) -> tuple[dict, str]:
    """`bavos segment PATH -o OUT --json` with random weights: its JSON line and its stderr (the run succeeds)."""
    r = run_cli("segment", path, "-o", out, *TINY, "--backbone-weights", "none", "--json")
    assert r.code == 0, r.err
    return json.loads(r.out), r.err


# 1. Nothing of the user's is deleted or replaced.


def test_dot_input_never_replaces_the_output_folder(
    tmp_path: Path, run_cli: Callable, monkeypatch: pytest.MonkeyPatch
) -> None:
    clip = frame_folder(tmp_path / "data" / "clipB")
    frame_folder(tmp_path / "data" / "clipA")
    results = tmp_path / "results"
    (results / "clipB").mkdir(parents=True)
    (results / "notes.txt").write_text("mine")
    (results / "clipB" / "mine.txt").write_text("mine too")
    before = tree(tmp_path)
    monkeypatch.chdir(clip)
    r = run_cli("segment", ".", "-o", "../../results", *QUIET)
    assert r.code == 2 and "results/clipB: holds files bavos did not write (mine.txt)" in r.err
    assert len(r.err.strip().splitlines()) == 1
    r = run_cli("segment", ".", "-o", "..", *QUIET)  # the clip's own parent: the result would be the input itself
    assert r.code == 2 and "would replace the input" in r.err and str(clip) in r.err
    r = run_cli("segment", ".", "-o", "sub", *QUIET)
    assert r.code == 2 and "would lie inside the input folder" in r.err
    assert tree(tmp_path) == before  # every file of the user's survives, nothing was added
    r = run_cli("segment", ".", "-o", "../../fresh", *TINY, "--backbone-weights", "none")
    assert r.code == 0 and summary(tmp_path / "fresh" / "clipB")["frames"] == 6
    assert "bavos: : " not in r.err and "bavos: clipB: " in r.err  # "." is named by its folder
    assert summary(tmp_path / "fresh" / "clipB")["input"] == "."
    r = run_cli("segment", ".", "-o", "../../fresh", *QUIET)  # a finished result of bavos's is replaced
    assert r.code == 0
    assert tree(tmp_path) == {**before, **{f"fresh/clipB/{k}": v for k, v in tree(tmp_path / "fresh/clipB").items()}}


@pytest.mark.parametrize("given", ["clipB/", "clipB/.", "./clipB", "clipB/../clipB"])
def test_output_names_come_from_the_resolved_path(tmp_path: Path, given: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from bavos.pipeline.segment import output_name

    frame_folder(tmp_path / "clipB", n=1)
    monkeypatch.chdir(tmp_path)
    assert output_name(Path(given)) == "clipB"
    monkeypatch.chdir(tmp_path / "clipB")
    assert output_name(Path(".")) == "clipB"
    assert output_name(Path("..")) == tmp_path.name


def test_recut_refuses_a_result_holding_files_of_the_users(tmp_path: Path, run_cli: Callable) -> None:
    clip = write_clip(tmp_path / "c.mp4", n=6)
    assert run_cli("segment", clip, "-o", tmp_path / "out", *QUIET).code == 0
    (tmp_path / "out" / "c" / ".DS_Store").write_bytes(bytes(8))  # a file browser's clutter is not the user's work
    (tmp_path / "out" / "c" / "masks" / "Thumbs.db").write_bytes(bytes(8))
    assert run_cli("recut", tmp_path / "out" / "c", "-q").code == 0  # the same cut as segment's
    (tmp_path / "out" / "c" / "my-notes.txt").write_text("mine")
    before = tree(tmp_path / "out")
    r = run_cli("recut", tmp_path / "out" / "c", "--max-objects", "3", "-q")
    assert r.code == 2 and r.err.strip().endswith(
        "holds files bavos did not write (my-notes.txt); bavos replaces only "
        "its own finished results: move them out of it first"
    )
    r = run_cli("segment", clip, "-o", tmp_path / "out", *QUIET, "--skip-existing")  # skipped: nothing to write
    assert r.code == 0, r.err
    r = run_cli("segment", clip, "-o", tmp_path / "out", *QUIET, "--skip-existing", "--tau", "0.5", "--json")
    assert r.code == 2 and "holds files bavos did not write (my-notes.txt)" in r.err
    line = json.loads(r.out)  # a script reading --json hears of it too
    assert line["status"] == "failed" and "holds files bavos did not write" in line["error"]
    assert tree(tmp_path / "out") == before


@pytest.mark.parametrize(
    ("place", "what"),
    [
        ("masks/myedit.png", "masks/myedit.png"),  # named like bavos's masks, not one of them
        ("masks/00000_fixed.png", "masks/00000_fixed.png"),
        ("coco.json", "coco.json"),  # an export's name, in a result made without it
        ("masks.mp4", "masks.mp4"),
        ("objects/1/00000.png", "objects/1/00000.png"),
        ("masks/00002.png", "masks/00002.png (changed since bavos wrote it)"),  # a mask edited in place
    ],
)
def test_a_result_holding_the_users_files_named_like_bavos_s_is_not_replaced(
    tmp_path: Path, run_cli: Callable, place: str, what: str
) -> None:
    """bavos knows the files it wrote (their names and sizes, kept in the result): a file of the user's is refused
    whatever its name, and so is a mask changed since."""
    clip = write_clip(tmp_path / "c.mp4", n=6)
    assert run_cli("segment", clip, "-o", tmp_path / "out", *QUIET).code == 0
    result = tmp_path / "out" / "c"
    mine = result / place
    mine.parent.mkdir(parents=True, exist_ok=True)
    mine.write_bytes((result / "preview.png").read_bytes())  # a picture of the user's
    before = tree(tmp_path / "out")
    for args in (("recut", result, "--max-objects", "3", "-q"), ("segment", clip, "-o", tmp_path / "out", *QUIET)):
        r = run_cli(*args)
        assert r.code == 2 and f"holds files bavos did not write ({what})" in r.err, r.err
        assert len(r.err.strip().splitlines()) == 1
    assert tree(tmp_path / "out") == before
    mine.unlink()  # the user's file moved out (a changed mask deleted): the result is bavos's again
    assert run_cli("recut", result, "--max-objects", "3", "-q").code == 0


def test_a_mask_edited_in_place_to_the_same_size_is_not_replaced(tmp_path: Path, run_cli: Callable) -> None:
    """A field report: a mask recoloured by hand (its palette changed, the same bytes long) was overwritten in
    silence, since only sizes were recorded. A copy that does not keep the files' times (``cp -r``) is still
    bavos's."""
    import shutil

    clip = write_clip(tmp_path / "c.mp4", n=6)
    assert run_cli("segment", clip, "-o", tmp_path / "out", *QUIET).code == 0
    copy = tmp_path / "copy"
    shutil.copytree(tmp_path / "out", copy, copy_function=shutil.copyfile)  # new times, the same bytes
    mask = tmp_path / "out" / "c" / "masks" / "00003.png"
    data = bytearray(mask.read_bytes())
    at = data.index(b"PLTE") + 4 + 3  # the second colour of the palette (id 1)
    data[at] ^= 0xFF
    mask.write_bytes(bytes(data))
    before = tree(tmp_path / "out")
    r = run_cli("segment", clip, "-o", tmp_path / "out", *QUIET, "--tau", "1.3")
    assert r.code == 2 and "holds files bavos did not write (masks/00003.png (changed since bavos wrote it))" in r.err
    assert tree(tmp_path / "out") == before
    r = run_cli("segment", clip, "-o", copy, *QUIET, "--tau", "1.3")  # the copy is replaced as bavos's own
    assert r.code == 0, r.err


def test_segment_refuses_a_file_or_a_link_where_a_result_would_go(tmp_path: Path, run_cli: Callable) -> None:
    clip = write_clip(tmp_path / "c.mp4", n=4)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "c").write_text("a file of mine")
    r = run_cli("segment", clip, "-o", tmp_path / "out", *QUIET)
    assert r.code == 2 and "a file is there" in r.err
    (tmp_path / "out" / "c").unlink()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "keep.txt").write_text("mine")
    (tmp_path / "out" / "c").symlink_to(tmp_path / "elsewhere")
    r = run_cli("segment", clip, "-o", tmp_path / "out", *QUIET)
    assert r.code == 2 and "is a link" in r.err
    assert (tmp_path / "elsewhere" / "keep.txt").read_text() == "mine"
    r = run_cli("segment", clip, "-o", clip, *QUIET)
    assert r.code == 2 and "is a file, not a folder" in r.err
    other = write_clip(tmp_path / "d.mp4", n=4)  # with --json every input gets its line (the others had none)
    r = run_cli("segment", clip, other, "-o", tmp_path / "out", *TINY, "--backbone-weights", "none", "--json")
    lines = [json.loads(line) for line in r.out.splitlines()]
    said = [(Path(x["input"]).name, x["status"]) for x in lines]
    assert r.code == 2 and said == [("c.mp4", "failed"), ("d.mp4", "not-run")]
    assert "is a link" in lines[0]["error"] and lines[1]["error"] == "the run stopped before any work (see the refusal)"
    assert not (tmp_path / "out" / "d").exists()


def test_train_and_eval_outputs_never_replace_the_users_files(tmp_path: Path, run_cli: Callable) -> None:
    clips = tmp_path / "clips"
    clips.mkdir()
    write_clip(clips / "a.mp4", n=4)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "config.json").write_text('{"mine": true}')
    before = tree(tmp_path)
    args = ["--steps", "1", "--backbone", "bavos_test_vit", "--backbone-weights", "none", "--device", "cpu"]
    r = run_cli("train", clips, "-o", tmp_path / "mine", *args)
    assert r.code == 2 and "holds files bavos did not write (config.json)" in r.err
    r = run_cli("train", clips, "-o", clips / "run", *args)
    assert r.code == 2 and "inside the clips folder" in r.err
    assert tree(tmp_path) == before

    from bavos.errors import DestinationError
    from bavos.evaluation.evaluate import write_csv

    table = tmp_path / "scores.csv"
    table.write_text("my,own,table\n1,2,3\n")
    with pytest.raises(DestinationError, match="not a bavos table"):
        write_csv(table, ["sequence", "J"], [["a", 0.5]])
    assert table.read_text() == "my,own,table\n1,2,3\n"
    table.unlink()
    write_csv(table, ["sequence", "J"], [["a", 0.5]])
    write_csv(table, ["sequence", "J"], [["b", 0.25]])  # its own table is replaced
    assert table.read_text().splitlines() == ["sequence,J", "b,0.25"]


# 4. Streams and time as FFmpeg sees them.


def test_cover_art_is_not_video(tmp_path: Path, run_cli: Callable) -> None:
    path = tmp_path / "song.mp3"
    with av.open(str(path), "w") as container:
        audio = container.add_stream("libmp3lame", rate=44100)
        cover = container.add_stream("mjpeg", rate=1)
        cover.width, cover.height, cover.pix_fmt = 64, 48, "yuvj420p"
        cover.disposition = av.stream.Disposition.attached_pic
        for packet in cover.encode(av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), format="rgb24")):
            container.mux(packet)
        for packet in cover.encode():
            container.mux(packet)
        sound = av.AudioFrame.from_ndarray(np.zeros((1, 44100), np.float32), format="fltp", layout="mono")
        sound.sample_rate = 44100
        for packet in [*audio.encode(sound), *audio.encode()]:
            container.mux(packet)
    r = run_cli("segment", path, "-o", tmp_path / "out", *QUIET)
    assert r.code == 1
    assert r.err.strip() == f"bavos: error: {path}: no video stream (it holds audio, cover picture)"
    assert not (tmp_path / "out").exists()


def test_text_is_not_video(tmp_path: Path) -> None:
    from bavos.errors import InputError
    from bavos.io.video import VideoSource

    path = tmp_path / "notes.txt"
    path.write_text("".join(f"line {i} of some notes, long enough for FFmpeg to take it for text\n" for i in range(99)))
    with pytest.raises(InputError, match="no video stream"):
        VideoSource(path)


def test_a_change_of_picture_size_is_scaled_with_one_warning(tmp_path: Path, run_cli: Callable) -> None:
    joined = tmp_path / "joined.ts"
    first = write_stream(tmp_path / "a.ts", 10, 96, 64)
    second = write_stream(tmp_path / "b.ts", 10, 160, 120)
    joined.write_bytes(first.read_bytes() + second.read_bytes())
    line, err = segment_json(run_cli, joined, tmp_path / "out")
    # ffprobe -count_frames reads 19 frames: the first packet after the join is lost at the seam, as in FFmpeg
    assert line["frames"] == 19
    assert line["warnings"] == [
        "the picture size changes to 160x120 at frame 9: scaled to the first frame's 96x64, "
        "as FFmpeg does when it encodes such a stream",
        "the timestamps of frame 9 and 8 more are no later than an earlier frame's: the overlay shows each one "
        "frame period (10 fps) after the frame before",  # the second file's clock starts again at the seam
    ]
    assert summary(tmp_path / "out" / "joined")["warnings"] == line["warnings"]
    with av.open(str(tmp_path / "out" / "joined" / "overlay.mp4")) as c:
        assert (c.streams.video[0].width, c.streams.video[0].height) == (96, 64)
    assert err.count("picture size changes") == 1


def test_times_count_from_the_first_frame(tmp_path: Path, run_cli: Callable) -> None:
    camera = write_stream(tmp_path / "cam.mts", 30, 96, 64, offset=600)  # a camcorder's clock: starts at 600 s
    r = run_cli("segment", camera, "-o", tmp_path / "out", *QUIET, "--start", "1s", "--end", "2s")
    assert r.code == 0, r.err
    result = summary(tmp_path / "out" / "cam")
    assert (result["frames"], result["first_frame"]) == (10, 10)  # 1.0 s .. 1.9 s at 10 fps
    assert result["start_time"] == pytest.approx(600.0) and result["duration"] == pytest.approx(3.0)  # as ffprobe
    with av.open(str(tmp_path / "out" / "cam" / "overlay.mp4")) as c:
        stream = c.streams.video[0]
        times = [float(f.pts * f.time_base) for f in c.decode(stream)]
    assert times == pytest.approx([i / 10 for i in range(10)])  # starts at 0, the input's spacing


# 5. Damaged or short data is named, not fatal.


def damaged_mjpeg(path: Path, n: int = 20, bad: int = 10) -> Path:
    """An MJPEG .avi whose ``bad``-th frame (from 1) lost its JPEG headers: zeros from its start marker on."""
    write_stream(path, n, 96, 64, fps=20, codec="mjpeg", fmt="avi", pix_fmt="yuvj420p")
    data = bytearray(path.read_bytes())
    start = -1
    for _ in range(bad):
        start = data.find(b"\xff\xd8\xff", start + 1)
    scan = data.find(b"\xff\xda", start)
    data[start + 3 : scan + 2] = bytes(scan + 2 - start - 3)
    path.write_bytes(data)
    return path


def test_a_damaged_frame_is_skipped_and_named(tmp_path: Path, run_cli: Callable) -> None:
    path = damaged_mjpeg(tmp_path / "cam.avi")
    line, err = segment_json(run_cli, path, tmp_path / "out")
    assert line["frames"] == 19  # ffprobe -count_frames: 19
    assert line["warnings"] == [
        "packet 10 at 0.450 s could not be decoded (Invalid data found when processing input): its frame was "
        "skipped, as FFmpeg does",
    ]  # the frame skipped is said; the count the container announces is not said alone (see the edit list test)
    assert summary(tmp_path / "out" / "cam")["warnings"] == line["warnings"]
    assert len(list((tmp_path / "out" / "cam" / "masks").glob("*.png"))) == 19
    assert "[mjpeg" not in err  # FFmpeg's own log lines are not shown


def test_a_truncated_video_gives_the_frames_before_the_cut(tmp_path: Path) -> None:
    from bavos.io.video import VideoSource

    full = tmp_path / "full.mp4"
    with av.open(str(full), "w", options={"movflags": "faststart"}) as container:  # the index first, as on the web
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for img in np.random.default_rng(0).integers(0, 256, (30, 48, 64, 3), np.uint8):  # noise: large packets
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    cut = tmp_path / "cut.mp4"
    data = full.read_bytes()
    cut.write_bytes(data[: len(data) * 2 // 3])
    source = VideoSource(cut)
    frames = list(source.frames())
    # a trial: FFmpeg's frame threads dropped the frames in flight at the damaged last packet, and its error; FFmpeg
    # (ffmpeg -i cut.mp4 -f null -) decodes them, as one thread does
    with av.open(str(cut)) as container:
        stream = container.streams.video[0]
        time_base = stream.time_base
        stream.thread_type = "SLICE"
        decoded, damaged = 0, []
        for packet in container.demux(stream):
            try:
                decoded += len(stream.decode(packet))
            except av.error.InvalidDataError:
                damaged.append(float(packet.pts * packet.time_base))
    assert 0 < len(frames) == decoded < 30 and len(damaged) == 1
    assert source.warnings[0] == (
        f"packet {decoded + 1} at {damaged[0]:.3f} s could not be decoded (Invalid data found when processing input): "
        "its frame was skipped, as FFmpeg does"
    )
    said = source.warnings[-1]
    assert said.startswith("the container announces 3.00 s (30 frames); its frames end at ")
    assert said.endswith(f" s ({len(frames)} decoded)")
    assert [f.pts for f in frames] == [round(i / 10 / time_base) for i in range(decoded)]


def h264_bframes(path: Path, n: int, fmt: str | None = None) -> Path:
    """``n`` frames of noise at 25 fps, H.264 with B-frames (x264's defaults), in ``fmt``'s container."""
    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for img in np.random.default_rng(1).integers(0, 256, (n, 48, 64, 3), np.uint8):
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def test_h264_with_b_frames_in_avi_is_timed_as_ffmpeg_times_it(tmp_path: Path, run_cli: Callable) -> None:
    """A trial: in AVI the frames of H.264 with B-frames carry their packets' order (PyAV makes times up from it),
    so the overlay skipped a slot and two warnings came for a plain file; --start 0.2s --end 0.4s took 4 frames.
    FFmpeg times each frame by its decoding time there (its best-effort timestamp): 40 ms apart, 5 in that range."""
    from bavos.io.video import FrameRange, VideoSource

    clip = h264_bframes(tmp_path / "cam.avi", 30, "avi")
    with av.open(str(clip)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.has_b_frames  # what makes the fault
        own = [f.pts for f in container.decode(stream)]
    assert own != sorted(own)  # the frames' own times go back
    source = VideoSource(clip)
    frames = list(source.frames())
    assert len(frames) == 30 and source.warnings == []
    timed = [f.pts for f in frames if f.pts is not None]  # the last ones have no decoding time: the rate places them
    assert timed == list(range(len(timed))) and len(timed) >= 27 and frames[len(timed) - 1].pts is not None
    ranged = VideoSource(clip, FrameRange.parse("0.2s", "0.4s"))
    assert [f.number for f in ranged.frames()] == [5, 6, 7, 8, 9]
    r = run_cli("segment", clip, "-o", tmp_path / "out", *QUIET, "--json")
    assert r.code == 0 and json.loads(r.out)["warnings"] == [], r.err
    with av.open(str(tmp_path / "out" / "cam" / "overlay.mp4")) as c:
        times = [float(f.pts * f.time_base) for f in c.decode(video=0)]
    assert times == pytest.approx([i / 25 for i in range(30)])


def damaged_first_keyframe(path: Path) -> Path:
    """50 frames of noise at 25 fps, a keyframe every 12, the first packet's bytes replaced by noise."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25, options={"g": "12"})
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for img in np.random.default_rng(2).integers(0, 256, (50, 48, 64, 3), np.uint8):
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    with av.open(str(path)) as container:
        first = next(p for p in container.demux(video=0) if p.size)
        at, size = first.pos, first.size
    data = bytearray(path.read_bytes())
    data[at : at + size] = np.random.default_rng(3).integers(0, 256, size, np.uint8).tobytes()
    path.write_bytes(bytes(data))
    return path


def test_a_damaged_first_keyframe_is_said_once_and_where(tmp_path: Path) -> None:
    """A trial: the first keyframe's packet garbled, its warning came twice (once at a negative time), the frames
    lost at the start were said to end early ("its frames end at 1.52 s" of 2.00 s), and start_time was the first
    decoded frame's, not ffprobe's."""
    from bavos.io.video import VideoSource

    clip = damaged_first_keyframe(tmp_path / "cam.mp4")
    decoded = []
    with av.open(str(clip)) as container:  # one thread, as ffmpeg -i cam.mp4 -f null - counts (39 from 0.44 s here)
        stream = container.streams.video[0]
        stream.thread_type = "SLICE"
        for packet in container.demux(stream):
            try:
                decoded += [float(f.pts * f.time_base) for f in stream.decode(packet)]
            except av.error.InvalidDataError:
                continue
    source = VideoSource(clip)
    frames = list(source.frames())
    assert len(frames) == len(decoded) < 50 and decoded[0] > 0.08
    assert source.info.start_time == 0.0 and source.info.first_time == pytest.approx(decoded[0])
    damaged = [w for w in source.warnings if w.startswith("packet ")]
    assert len(damaged) == 1 and " at -" not in damaged[0]
    assert source.warnings[-1] == (
        f"the first {decoded[0]:.3f} s could not be decoded (a damaged keyframe, or a cut between keyframes): frame 0 "
        f"is the first that decodes, at {decoded[0]:.3f} s"
    )
    assert not any("announces" in w for w in source.warnings)  # they end at 2.00 s, as stated


# 2. Frame folders: every entry accounted for.


def test_appledouble_and_hidden_files_are_not_frames(tmp_path: Path, run_cli: Callable) -> None:
    folder = frame_folder(tmp_path / "mac", n=4)
    for frame in list(folder.iterdir()):
        (folder / f"._{frame.name}").write_bytes(b"\x00\x05\x16\x07" + bytes(4092))  # AppleDouble header
    (folder / ".DS_Store").write_bytes(bytes(64))
    (folder / "notes.txt").write_text("mine")
    line, _ = segment_json(run_cli, folder, tmp_path / "out")
    assert line["frames"] == 4
    assert line["warnings"] == [
        "not frames, left out: notes.txt (frames are .bmp, .jpeg, .jpg, .png, .tif, .tiff, "
        ".webp files; hidden files are not frames)"
    ]


def test_a_bad_frame_is_named_before_the_model_loads(
    tmp_path: Path, run_cli: Callable, monkeypatch: pytest.MonkeyPatch
) -> None:
    import bavos.models.loading

    folder = frame_folder(tmp_path / "seq", n=5)
    (folder / "00003.jpg").write_bytes(b"not a jpeg")
    monkeypatch.setattr(bavos.models.loading, "load_models", lambda *a, **k: pytest.fail("the model loaded"))
    r = run_cli("segment", folder, "-o", tmp_path / "out", *QUIET)
    assert r.code == 1 and r.err.strip().startswith(f"bavos: error: {folder / '00003.jpg'}: cannot read frame")
    (folder / "00003.jpg").unlink()
    Image.fromarray(np.zeros((40, 64, 3), np.uint8)).save(folder / "00003.png")
    r = run_cli("segment", folder, "-o", tmp_path / "out", *QUIET)
    assert r.code == 1 and f"{folder / '00003.png'}: frame is 64x40" in r.err
    (folder / "00003.png").unlink()
    (folder / "00003.jpg").symlink_to(tmp_path / "gone.jpg")
    r = run_cli("segment", folder, "-o", tmp_path / "out", *QUIET)
    assert r.code == 1 and "00003.jpg: a broken link where a frame is expected" in r.err


# 3. Pixels as FFmpeg would give them.


def test_sixteen_bit_grey_is_scaled_not_clipped(tmp_path: Path, run_cli: Callable) -> None:
    folder = tmp_path / "depth"
    folder.mkdir()
    values = np.linspace(900, 4500, 48 * 64).reshape(48, 64).astype(np.uint16)
    for i in range(3):
        Image.fromarray(values).save(folder / f"{i:05d}.png")
    assert Image.open(folder / "00000.png").mode == "I;16"
    from bavos.io.video import VideoSource

    image = next(VideoSource(folder).frames()).image
    assert image.shape == (48, 64, 3) and np.array_equal(image[..., 0], image[..., 2])
    assert image[0, 0, 0] == 4 and image[-1, -1, 0] == 18  # round(900 / 257), round(4500 / 257): not white
    np.testing.assert_array_equal(image[..., 1], np.rint(values / 257).astype(np.uint8))
    r = run_cli("segment", folder, "-o", tmp_path / "out", *QUIET)
    assert r.code == 0, r.err


# 6. Every failure is one line naming what and where.


def test_a_full_disk_is_one_line_and_leaves_nothing(tmp_path: Path) -> None:
    """RLIMIT_FSIZE makes every write past 4 KB fail (EFBIG), as a full disk fails with ENOSPC."""
    clip = write_clip(tmp_path / "c.mp4", n=6)
    out = tmp_path / "out"

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    env = {**os.environ, "BAVOS_DEBUG": ""}
    proc = subprocess.run(
        [sys.executable, "-m", "bavos", "segment", str(clip), "-o", str(out), *QUIET],
        capture_output=True,
        text=True,
        preexec_fn=limit,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bavos: error: ") and "internal error" not in lines[0]
    assert "the file is too large for this file system" in lines[0]
    assert not out.exists()  # the folder this run created, and every temporary file, removed


def test_a_tiny_tmpfs_is_one_line(tmp_path: Path) -> None:
    """The issue's case itself: a 4 KB tmpfs (needs mount rights; skipped without them)."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    if (
        os.geteuid() != 0
        or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=4k", "tmpfs", str(mount)], capture_output=True
        ).returncode
    ):
        pytest.skip("cannot mount a tmpfs here")
    try:
        clip = write_clip(tmp_path / "c.mp4", n=6)
        proc = subprocess.run(
            [sys.executable, "-m", "bavos", "segment", str(clip), "-o", str(mount / "out"), *QUIET],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 1
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "no space left on the device" in lines[0] and str(mount) in lines[0]
        assert list(mount.iterdir()) == []
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_the_longest_names_still_work(tmp_path: Path, run_cli: Callable) -> None:
    """A 240-character name: bavos's temporary names beside it stay under the file system's 255 bytes."""
    clip = write_clip(tmp_path / ("v" * 236 + ".mp4"), n=3)
    r = run_cli("segment", clip, "-o", tmp_path / "out", *QUIET)
    assert r.code == 0, r.err
    assert summary(tmp_path / "out" / clip.stem)["frames"] == 3
    assert run_cli("segment", clip, "-o", tmp_path / "out", *QUIET).code == 0  # replacing it too


def test_a_file_where_a_folder_is_expected_is_said_plainly(tmp_path: Path, run_cli: Callable) -> None:
    clip = write_clip(tmp_path / "c.mp4", n=3)
    (tmp_path / "file").write_text("mine")
    r = run_cli("segment", clip, "-o", tmp_path / "file" / "out", *QUIET)
    assert r.code == 1
    assert r.err.strip() == (
        f"bavos: error: the output folder is not writable: {tmp_path / 'file' / 'out'}: a file "
        "stands where a folder is expected"
    )


def test_an_unreadable_video_is_said_plainly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a video without read permission gives a user who is not root (tests run as root in CI)."""
    import errno

    from bavos.errors import InputError
    from bavos.io.video import VideoSource

    clip = write_clip(tmp_path / "c.mp4", n=2)

    def denied(*args: object, **kwargs: object) -> None:
        raise PermissionError(errno.EACCES, "Permission denied", str(clip))

    monkeypatch.setattr(av, "open", denied)
    with pytest.raises(InputError, match=f"^cannot read the video: {clip}: permission denied$"):
        VideoSource(clip)


# Inputs a second trial found (each from another tool's bug report).


def test_a_raw_h264_stream_plays_at_its_own_rate(tmp_path: Path, run_cli: Callable) -> None:
    """A bare H.264 stream has no timestamps: the demuxer's average rate is its default 25; the stream's own
    timing says 10 fps, as ffprobe and FFmpeg take it (ExoPlayer #10748)."""
    raw = write_stream(tmp_path / "raw.h264", 12, 96, 64, codec="libx264", fmt="h264")
    r = run_cli("segment", raw, "-o", tmp_path / "out", *QUIET)
    assert r.code == 0, r.err
    assert summary(tmp_path / "out" / "raw")["fps"] == 10.0
    with av.open(str(tmp_path / "out" / "raw" / "overlay.mp4")) as c:
        times = [float(f.pts * f.time_base) for f in c.decode(c.streams.video[0])]
    assert times == pytest.approx([i / 10 for i in range(12)])


def test_the_default_stream_is_chosen_as_ffmpeg_does(tmp_path: Path) -> None:
    """Two video streams: FFmpeg prefers the one marked default unless another has 5,000,000 more pixels
    (LAVFilters #421)."""
    from bavos.io.video import VideoSource

    path = tmp_path / "two.mkv"
    with av.open(str(path), "w") as container:
        small = container.add_stream("libx264", rate=10)
        small.width, small.height, small.pix_fmt = 64, 48, "yuv420p"
        small.disposition = av.stream.Disposition.default
        large = container.add_stream("libx264", rate=10)
        large.width, large.height, large.pix_fmt = 96, 64, "yuv420p"
        large.disposition = av.stream.Disposition(0)
        for stream, n in ((small, 8), (large, 1)):
            for i in range(n):
                frame = av.VideoFrame.from_ndarray(
                    np.full((stream.height, stream.width, 3), 9 * i, np.uint8), format="rgb24"
                )
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
    source = VideoSource(path)
    assert (source.info.width, source.info.height) == (64, 48) and len(list(source.frames())) == 8


def test_superscript_digits_in_frame_names_are_text(tmp_path: Path, run_cli: Callable) -> None:
    """Frames named 1²0.png: '²' is a digit to str.isdigit but not to the pattern that splits the name (SAM 2 #170)."""
    folder = tmp_path / "sup"
    folder.mkdir()
    for name, img in zip(["1²0.png", "1²1.png", "2.png"], clip_frames(3, 48, 64), strict=True):
        Image.fromarray(img).save(folder / name)
    r = run_cli("segment", folder, "-o", tmp_path / "out", *QUIET)
    assert r.code == 0, r.err
    assert sorted(p.name for p in (tmp_path / "out" / "sup" / "masks").iterdir()) == ["1²0.png", "1²1.png", "2.png"]


def test_a_pipe_is_said_to_be_a_pipe(tmp_path: Path, run_cli: Callable) -> None:
    pipe = tmp_path / "pipe.mp4"
    os.mkfifo(pipe)
    r = run_cli("segment", pipe, "-o", tmp_path / "out", *QUIET)
    assert r.code == 1
    assert r.err.strip() == (
        f"bavos: error: {pipe}: not a regular file (a pipe or a device); bavos reads its input "
        "several times: save it to a file first"
    )


def test_an_animated_webp_is_said_to_be_one(tmp_path: Path, run_cli: Callable) -> None:
    """FFmpeg decodes still WebP only: an animated one was "damaged or truncated" (it is neither)."""
    images = [Image.fromarray(img) for img in clip_frames(4, 48, 64)]
    images[0].save(tmp_path / "anim.webp", save_all=True, append_images=images[1:], duration=100)
    r = run_cli("segment", tmp_path / "anim.webp", "-o", tmp_path / "out", *QUIET)
    assert r.code == 1 and r.err.strip() == (
        f"bavos: error: {tmp_path / 'anim.webp'}: an animated WebP, which FFmpeg cannot decode: convert it to a "
        "video or to a folder of frames first"
    )
    images[0].save(tmp_path / "still.webp")
    assert run_cli("segment", tmp_path / "still.webp", "-o", tmp_path / "out", *QUIET).code == 0


def test_standard_input_is_said_to_be_unread(
    tmp_path: Path, run_cli: Callable, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`bavos segment - < clip.mp4` said "-: no such file or folder", exit 1; a file named "-" is still read."""
    monkeypatch.chdir(tmp_path)
    r = run_cli("segment", "-", "-o", tmp_path / "out", *QUIET)
    assert r.code == 2 and r.err.startswith("bavos: error: -: bavos does not read standard input (it reads a video")
    assert "save it to a file first" in r.err and not (tmp_path / "out").exists()
    write_clip(tmp_path / "x.mp4", n=3, height=48, width=64).rename(tmp_path / "-")
    assert run_cli("segment", "-", "-o", tmp_path / "out", *QUIET).code == 0


def test_anamorphic_video_keeps_its_pixel_aspect_ratio(tmp_path: Path, run_cli: Callable) -> None:
    """64x64 stored, 3:2 pixels: shown 96x64; the overlay keeps the ratio (jellyfin #2273)."""
    path = encode(tmp_path / "sar.mp4", clip_frames(4, 64, 64), sample_aspect_ratio=Fraction(3, 2))
    r = run_cli("segment", path, "-o", tmp_path / "out", *QUIET)
    assert r.code == 0, r.err
    with av.open(str(tmp_path / "out" / "sar" / "overlay.mp4")) as c:
        assert c.streams.video[0].sample_aspect_ratio == Fraction(3, 2)


def test_a_frame_held_to_the_end_is_in_a_late_range(tmp_path: Path, run_cli: Callable) -> None:
    """Six frames 0.1 s apart, then one shown at 2.5 s: `--start 2s` holds that frame (Kinovea #154)."""
    path = encode(tmp_path / "held.mp4", clip_frames(7, 48, 64), pts=[0, 1, 2, 3, 4, 5, 25])
    r = run_cli("segment", path, "-o", tmp_path / "out", *QUIET, "--start", "2s")
    assert r.code == 0, r.err
    result = summary(tmp_path / "out" / "held")
    assert (result["frames"], result["first_frame"]) == (1, 6)
    r = run_cli("segment", path, "-o", tmp_path / "late", *QUIET, "--start", "3s")
    assert r.code == 1 and "no frame in the range 3s.." in r.err


@pytest.mark.parametrize(
    ("end", "said"),
    [("20s", "--end 20s"), ("90", "--end 90"), ("8", "--end 8"), ("2.5s", None), ("2.55s", None), ("7", None)],
)
def test_an_end_past_the_video_is_a_warning(tmp_path: Path, run_cli: Callable, end: str, said: str | None) -> None:
    """A range cut short by the video's end is said (once, however many passes read it), not run silently."""
    path = encode(tmp_path / "held.mp4", clip_frames(7, 48, 64), pts=[0, 1, 2, 3, 4, 5, 25])
    r = run_cli("segment", path, "-o", tmp_path / "out", *TINY, "--backbone-weights", "none", "--end", end)
    assert r.code == 0, r.err
    warnings = summary(tmp_path / "out" / "held")["warnings"]
    if said is None:  # the range ends with the last frame (frame 6, shown from 2.5 s): nothing to say
        assert not any("--end" in w for w in warnings)
    else:
        line = f"{said} lies past the video's end: the range stops at its last frame, 6 (2.50 s)"
        assert warnings == [line] and r.err.count(line) == 1


@pytest.mark.parametrize(("end", "warned"), [("3", False), ("0.25s", False), ("6", False), ("7", True), ("1s", True)])
def test_an_end_past_a_frame_folder_is_a_warning(tmp_path: Path, run_cli: Callable, end: str, warned: bool) -> None:
    """Six frames at 24 fps (the last shown from 0.208 s to 0.25 s); a folder stops reading at the range's end."""
    folder = frame_folder(tmp_path / "shots", n=6)
    r = run_cli("segment", folder, "-o", tmp_path / "out", *TINY, "--backbone-weights", "none", "--end", end)
    assert r.code == 0, r.err
    said = [w for w in summary(tmp_path / "out" / "shots")["warnings"] if "--end" in w]
    assert said == ([f"--end {end} lies past the video's end: the range stops at its last frame, 5 (0.21 s)"] * warned)


def overlay_times(video: Path) -> tuple[list[float], float]:
    """The overlay's frame times and its duration (the container's, as ffprobe and players read it), in seconds."""
    with av.open(str(video)) as c:
        times = sorted(float(f.pts * f.time_base) for f in c.decode(c.streams.video[0]))
        return times, c.duration / av.time_base


def test_an_overlay_lasts_until_its_last_frame_ends(tmp_path: Path, run_cli: Callable) -> None:
    """A variable rate cut with --start/--end ended its overlay 0.24 s in with its last frame at 0.71 s: with
    B-frames a video's end is its decode times' plus the muxer's guess of the last duration. The last frame now
    lasts until the next frame of the source, or as the container says at the video's end (a GIF's own delays)."""
    path = encode(tmp_path / "vfr.mp4", clip_frames(8, 48, 64), pts=[0, 1, 2, 3, 4, 5, 25, 26])
    assert run_cli("segment", path, "-o", tmp_path / "cut", *QUIET, "--start", "1", "--end", "7").code == 0
    times, duration = overlay_times(tmp_path / "cut" / "vfr" / "overlay.mp4")
    assert times == pytest.approx([0, 0.1, 0.2, 0.3, 0.4, 2.4]) and duration == pytest.approx(2.5)
    assert run_cli("segment", path, "-o", tmp_path / "whole", *QUIET).code == 0
    times, duration = overlay_times(tmp_path / "whole" / "vfr" / "overlay.mp4")
    assert times[-1] == pytest.approx(2.6) and duration == pytest.approx(2.7)
    gif = tmp_path / "delays.gif"
    images = [Image.fromarray(img) for img in clip_frames(5, 48, 64)]
    images[0].save(gif, save_all=True, append_images=images[1:], duration=[100, 100, 100, 500, 200], loop=0)
    assert run_cli("segment", gif, "-o", tmp_path / "gif", *QUIET).code == 0
    times, duration = overlay_times(tmp_path / "gif" / "delays" / "overlay.mp4")
    assert times == pytest.approx([0, 0.1, 0.2, 0.3, 0.8]) and duration == pytest.approx(1.0)


def test_frames_sharing_a_timestamp_are_spaced_with_a_warning(tmp_path: Path, run_cli: Callable) -> None:
    """Every packet at time 0 (a broken muxer's file): the overlay spaces the frames by the rate, and says so."""
    path = tmp_path / "same.mkv"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mjpeg", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuvj420p"
        for img in clip_frames(6, 48, 64):
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                packet.pts = packet.dts = 0
                container.mux(packet)
    line, err = segment_json(run_cli, path, tmp_path / "out")
    assert line["frames"] == 6
    said = "the timestamps of frame 1 and 4 more are no later than an earlier frame's: the overlay shows each one"
    assert any(w.startswith(said) for w in line["warnings"]) and said in err
    times, _ = overlay_times(tmp_path / "out" / "same" / "overlay.mp4")
    assert len(times) == 6 and all(b > a for a, b in zip(times, times[1:], strict=False))


def test_a_cut_short_container_without_a_frame_count_is_said(tmp_path: Path, run_cli: Callable) -> None:
    """Matroska announces a duration, not a frame count: 48 frames cut to about a third decoded in silence."""
    full = write_stream(tmp_path / "full.mkv", 48, 64, 48, fps=24, codec="libx264", fmt="matroska")
    data = full.read_bytes()
    (tmp_path / "cut.mkv").write_bytes(data[: len(data) // 2])
    line, _ = segment_json(run_cli, tmp_path / "cut.mkv", tmp_path / "out")
    assert 0 < line["frames"] < 48
    assert any(w.startswith("the container announces 2.00 s; its frames end at ") for w in line["warnings"])
    line, _ = segment_json(run_cli, full, tmp_path / "out")
    assert line["frames"] == 48 and not line["warnings"]


def test_a_name_with_a_newline_is_drawn_and_a_bug_on_one_input_spares_the_others(
    tmp_path: Path, run_cli: Callable, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A field report: ``new\\nline.mp4`` stopped the whole batch with "internal error: ValueError: can't measure
    length of multiline text" (the preview's title), and the inputs after it never ran, with no --json line."""
    odd = write_clip(tmp_path / "new\nline.mp4", n=3)
    after = write_clip(tmp_path / "z.mp4", n=3)
    r = run_cli("segment", odd, after, "-o", tmp_path / "out", *QUIET, "--json")
    assert r.code == 0 and [json.loads(x)["status"] for x in r.out.splitlines()] == ["ok", "ok"], r.err
    assert Image.open(tmp_path / "out" / "new\nline" / "preview.png").size[0] > 0

    import bavos.pipeline.outputs as outputs

    real = outputs.save_pictures

    def flaky(folder: Path, title: str, *rest: object) -> None:
        if title.startswith("first"):
            raise ValueError("a bug\nover two lines")
        real(folder, title, *rest)

    monkeypatch.setattr(outputs, "save_pictures", flaky)
    first = write_clip(tmp_path / "first.mp4", n=3)
    r = run_cli("segment", first, after, "-o", tmp_path / "again", *QUIET, "--json")
    lines = [json.loads(x) for x in r.out.splitlines()]
    assert r.code == 1 and [x["status"] for x in lines] == ["failed", "ok"]
    said = "internal error: ValueError: a bug (run with BAVOS_DEBUG=1 for the traceback)"
    assert lines[0]["error"] == said and r.err.strip().splitlines() == [f"bavos: error: {first}: {said}"]
    assert sorted(p.name for p in (tmp_path / "again").iterdir()) == ["z"]  # nothing half-written left


def test_a_result_refused_is_not_first_said_to_be_redone(tmp_path: Path, run_cli: Callable) -> None:
    """A field report: with --skip-existing, a mask of the user's in masks/ made bavos say "redoing it, its masks/
    holds 9 of its 8 masks" and then refuse the folder as holding the user's file."""
    clip = write_clip(tmp_path / "c.mp4", n=6)
    assert run_cli("segment", clip, "-o", tmp_path / "out", *QUIET).code == 0
    (tmp_path / "out" / "c" / "masks" / "00001_fixed.png").write_bytes(b"mine")
    r = run_cli("segment", clip, "-o", tmp_path / "out", *TINY, "--backbone-weights", "none", "--skip-existing")
    assert r.code == 2 and "holds files bavos did not write (masks/00001_fixed.png)" in r.err
    assert "redoing it" not in r.err


def test_one_frame_stamped_ahead_is_put_back_and_the_frames_after_it_keep_their_times(
    tmp_path: Path, run_cli: Callable
) -> None:
    """A field report after torchvision#1884 (timestamps out of order): frame 5 of 30 at 10 fps stamped far ahead
    pushed every later frame one period after it: a 3 s video gave a 4.5 s overlay, 24 frames at the wrong time,
    and the warning named 15."""
    from fractions import Fraction

    path = tmp_path / "jump.mkv"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mjpeg", rate=10)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuvj420p"
        stream.time_base = Fraction(1, 1000)
        for i, image in enumerate(np.random.default_rng(0).integers(0, 256, (30, 64, 96, 3), np.uint8)):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = i * 100, Fraction(1, 1000)
            for packet in stream.encode(frame):
                if i == 5:  # intra-only: packet i is frame i
                    packet.pts = 2000
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    line, _ = segment_json(run_cli, path, tmp_path / "out")
    assert line["frames"] == 30
    assert line["warnings"][0] == (
        "the timestamp of frame 5 lies past the next frame's: the overlay shows it between the frames around it"
    )
    assert not any("no later than an earlier frame" in w for w in line["warnings"])
    times, _ = overlay_times(tmp_path / "out" / "jump" / "overlay.mp4")
    assert times == pytest.approx([i / 10 for i in range(30)])


def test_an_edit_list_s_hidden_frames_are_no_damage_and_recut_takes_the_result(
    tmp_path: Path, run_cli: Callable
) -> None:
    """A field report after cvat#6929: an encoder's pre-roll (frames stamped before 0) makes the muxer write an edit
    list; the container counts 12 frames, FFmpeg shows 9. bavos warned "the container announces 12 frames; 9 were
    decoded", and recut and the viewer refused the result as made from another video."""
    from fractions import Fraction

    path = tmp_path / "preroll.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 10)
        for i, image in enumerate(np.random.default_rng(1).integers(0, 256, (12, 64, 96, 3), np.uint8)):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = i - 3, Fraction(1, 10)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    with av.open(str(path)) as container:
        assert container.streams.video[0].frames == 12  # what the container announces
    line, _ = segment_json(run_cli, path, tmp_path / "out")
    assert line["frames"] == 9 and line["warnings"] == []
    r = run_cli("recut", tmp_path / "out" / "preroll", "--max-objects", "3", "-q")
    assert r.code == 0, r.err
