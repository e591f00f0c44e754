"""Many inputs per call (bavos/batch.py and `bavos segment`): naming, --json, --skip-existing, --fail-fast,
torchrun sharding, and what each kind of bad input gives."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from conftest import TINY, clip_frames, write_clip
from PIL import Image
from test_io_owners import dead_pid

from bavos.errors import ConfigError, UsageError
from bavos.models.devices import Shard, shard_from_env
from bavos.pipeline.batch import is_finished, plan_outputs, stale_reason

ROOT = Path(__file__).resolve().parents[1]
FAST = [*TINY, "--no-overlay", "--no-hierarchy"]


def json_lines(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines()]


def short_hash(path: Path) -> str:
    return hashlib.sha1(str(path.absolute().resolve()).encode()).hexdigest()[:8]


# ---- naming and sharding --------------------------------------------------------------------------------------


def test_same_stem_inputs_get_distinct_deterministic_names(tmp_path: Path) -> None:
    a, b = tmp_path / "a" / "x.mp4", tmp_path / "b" / "x.mp4"
    plan = plan_outputs([a, b, a, tmp_path / "y.mov"], tmp_path / "out")
    assert plan == [(a, "x"), (b, f"x-{short_hash(b)}"), (tmp_path / "y.mov", "y")]  # a given twice: once


def test_names_respect_finished_outputs_of_other_sources(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "x").mkdir(parents=True)
    a, b = tmp_path / "a" / "x.mp4", tmp_path / "b" / "x.mp4"
    (out / "x" / "summary.json").write_text(json.dumps({"source": str(a.resolve())}))
    assert plan_outputs([b], out) == [(b, f"x-{short_hash(b)}")]  # a separate call for b does not take a's folder
    assert plan_outputs([a], out) == [(a, "x")]  # a's own folder is a's


def test_shards_split_inputs_without_overlap() -> None:
    items = list(range(7))
    parts = [Shard(r, 3).take(items) for r in range(3)]
    assert sorted(sum(parts, [])) == items
    assert shard_from_env({}) == Shard(0, 1, None)
    assert shard_from_env({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}) == Shard(1, 2, 1)
    with pytest.raises(UsageError, match="does not fit"):  # a launcher's mistake: bad usage, exit 2 (a trial)
        shard_from_env({"RANK": "2", "WORLD_SIZE": "2"})


def test_a_slurm_array_task_takes_its_place_among_the_tasks() -> None:
    from bavos.config import Part, parse_part, slurm_part

    with pytest.raises(ConfigError, match=r"--shard slurm: not a task of a Slurm job array"):
        slurm_part({})
    first = {"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_MAX": "8"}
    assert parse_part("slurm", first | {"SLURM_ARRAY_TASK_COUNT": "8"}) == Part(
        0, 8, "task 1 of 1-8", shard=True
    )  # --array=1-8: numbered from 1, parts from 0
    # a trial: a Slurm that sets no count, --array=0,4,5: each task took a sixth (of 0-5), half the inputs not done
    with pytest.raises(ConfigError, match=r"--shard slurm: SLURM_ARRAY_TASK_COUNT not set, .*--shard I/N"):
        slurm_part(first)
    parts = [
        slurm_part(
            {
                "SLURM_ARRAY_TASK_ID": str(t),
                "SLURM_ARRAY_TASK_MIN": "0",
                "SLURM_ARRAY_TASK_MAX": "4",
                "SLURM_ARRAY_TASK_COUNT": "5",
            }
        )
        for t in range(5)
    ]
    assert sorted(sum((p.take(list(range(13))) for p in parts), [])) == list(range(13))
    assert parse_part("2/5") == Part(2, 5)
    rerun = {
        "SLURM_ARRAY_TASK_ID": "3",
        "SLURM_ARRAY_TASK_MIN": "3",
        "SLURM_ARRAY_TASK_MAX": "7",
        "SLURM_ARRAY_TASK_COUNT": "2",
    }  # --array=3,7: the failed tasks of --array=0-9 again (canu#337)
    with pytest.raises(
        ConfigError, match=r"holds 2 tasks between 3 and 7, .*pass --shard I/N .*SLURM_ARRAY_TASK_ID/10"
    ):
        slurm_part(rerun)
    # a field report: --array=3 and --array=5-6, reruns of some tasks of --array=0-9, look like whole arrays of one
    # and two tasks (Slurm sets a STEP only from ":N"): they were split again, in silence
    for low, high in ((3, 3), (5, 6)):
        task = {
            "SLURM_ARRAY_TASK_ID": str(low),
            "SLURM_ARRAY_TASK_MIN": str(low),
            "SLURM_ARRAY_TASK_MAX": str(high),
            "SLURM_ARRAY_TASK_COUNT": str(high - low + 1),
            "SLURM_ARRAY_TASK_STEP": "1",
        }
        with pytest.raises(ConfigError, match=rf"array {low}-{high} starts at task {low}, not 0 or 1: .*--shard I/N"):
            slurm_part(task)
    with pytest.raises(ConfigError, match="SLURM_ARRAY_TASK_MIN and SLURM_ARRAY_TASK_MAX not set"):
        slurm_part({"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_COUNT": "3"})
    with pytest.raises(ConfigError, match="does not fit the array 0-4:2"):
        slurm_part(
            {
                "SLURM_ARRAY_TASK_ID": "3",
                "SLURM_ARRAY_TASK_MIN": "0",
                "SLURM_ARRAY_TASK_MAX": "4",
                "SLURM_ARRAY_TASK_STEP": "2",
                "SLURM_ARRAY_TASK_COUNT": "3",
            }
        )


# ---- --json, --skip-existing, --fail-fast --------------------------------------------------------------------


def test_json_lines_and_same_stem_outputs(tmp_path: Path, run_cli, sharp_weights: Path) -> None:
    a = write_clip((tmp_path / "a").mkdir() or tmp_path / "a" / "x.mp4", n=3)
    b = write_clip((tmp_path / "b").mkdir() or tmp_path / "b" / "x.mp4", n=5)
    out = tmp_path / "out"
    result = run_cli(
        "segment", a, b, tmp_path / "missing.mp4", a, "-o", out, *FAST, "--backbone-weights", sharp_weights, "--json"
    )
    assert result.code == 1
    # a trial: an input given twice was segmented once, and one of a taken name went to x-<hash>, both unsaid
    assert f"bavos: given more than once, segmented once: {a}\n" in result.err
    assert (
        f"bavos: {b}: its result goes to {out / f'x-{short_hash(b)}'}, as {out / 'x'} is another video's" in result.err
    )
    lines = json_lines(result.out)  # every stdout line is JSON
    assert [line["status"] for line in lines] == ["failed", "ok", "ok"]  # unreadable inputs: before any model loads
    lines = lines[1:] + lines[:1]
    keys = {"input", "status", "output", "frames", "objects", "seconds", "error", "warnings"}
    assert all(set(line) == keys for line in lines)
    assert lines[0]["output"] == str(out / "x") and lines[0]["frames"] == 3 and lines[0]["error"] is None
    assert lines[1]["output"] == str(out / f"x-{short_hash(b)}") and lines[1]["frames"] == 5
    assert "no such file" in lines[2]["error"] and lines[2]["frames"] is None
    assert json.loads((out / "x" / "summary.json").read_text())["source"] == str(a.resolve())
    assert result.err.count("bavos: error: ") == 1  # one stderr line per failure


def test_skip_existing_touches_nothing_and_loads_no_model(
    tmp_path: Path,
    run_cli,
    sharp_weights: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clip = write_clip(tmp_path / "c.mp4", n=3)
    out = tmp_path / "out"
    assert run_cli("segment", clip, "-o", out, *FAST, "--backbone-weights", sharp_weights, "-q").code == 0
    before = {p: p.stat().st_mtime_ns for p in (out / "c").rglob("*")}

    def no_model(*args: object, **kwargs: object) -> None:
        raise AssertionError("models loaded although every output is finished")

    monkeypatch.setattr("bavos.models.loading.load_models", no_model)
    result = run_cli(
        "segment", clip, "-o", out, *FAST, "--backbone-weights", sharp_weights, "--skip-existing", "--json"
    )
    assert result.code == 0
    assert json_lines(result.out) == [
        {
            "input": str(clip),
            "status": "skipped",
            "output": str(out / "c"),
            "frames": 3,
            "objects": json.loads((out / "c/summary.json").read_text())["objects"],
            "seconds": 0.0,
            "error": None,
            "warnings": [],
        }
    ]
    assert {p: p.stat().st_mtime_ns for p in (out / "c").rglob("*")} == before


def test_fail_fast_stops_at_the_first_failure(tmp_path: Path, run_cli) -> None:
    good = write_clip(tmp_path / "good.mp4", n=2)
    out = tmp_path / "out"
    result = run_cli(
        "segment", tmp_path / "bad.mp4", good, "-o", out, *FAST, "--backbone-weights", "none", "--fail-fast", "--json"
    )
    assert result.code == 1
    lines = json_lines(result.out)  # a field report: the inputs not run had no line, and a retry list missed them
    assert [(Path(x["input"]).name, x["status"]) for x in lines] == [("bad.mp4", "failed"), ("good.mp4", "not-run")]
    assert lines[1]["error"] == "--fail-fast: an input before it failed"
    assert not (out / "good").exists() and [x["output"] for x in lines] == [None, None]  # no folder was made


def test_killed_run_leaves_nothing_finished_and_a_rerun_completes(tmp_path: Path, sharp_weights: Path) -> None:
    clips = [write_clip(tmp_path / f"k{i}.mp4", n=24, height=64, width=96) for i in range(3)]
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "bavos",
        "segment",
        *map(str, clips),
        "-o",
        str(out),
        *FAST,
        "--backbone-weights",
        str(sharp_weights),
        "-q",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    deadline = time.monotonic() + 120
    while not is_finished(out / "k0") and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    visible = [p.name for p in out.iterdir() if not p.name.startswith(".")]
    assert all(is_finished(out / name) for name in visible)  # what looks like a result is a whole result
    rerun = subprocess.run(
        [*cmd[:-1], "--skip-existing", "--json"], capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    assert rerun.returncode == 0, rerun.stderr
    statuses = {Path(line["input"]).stem: line["status"] for line in json_lines(rerun.stdout)}
    assert statuses["k0"] == "skipped" and set(statuses) == {"k0", "k1", "k2"}
    assert "ok" in statuses.values()  # the kill did land half-way: the re-run had work left
    assert all(is_finished(out / f"k{i}") for i in range(3))


def torchrun(inputs: list[Path], out: Path, weights: Path) -> subprocess.CompletedProcess:
    """``bavos segment`` over ``inputs`` in two CPU processes started by torchrun."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "bavos"]
    command += ["segment", *map(str, inputs), "-o", str(out), *FAST, "--backbone-weights", str(weights), "--json"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)


def test_torchrun_shards_inputs_across_two_cpu_processes(tmp_path: Path, sharp_weights: Path) -> None:
    clips = [write_clip(tmp_path / f"t{i}.mp4", n=2 + i) for i in range(3)]
    out = tmp_path / "out"
    proc = torchrun(clips, out, Path("none"))  # random weights: a run-wide warning
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = json_lines(proc.stdout)
    assert sorted(Path(line["input"]).stem for line in lines) == ["t0", "t1", "t2"]  # each input exactly once
    assert all(line["status"] == "ok" for line in lines)
    assert sorted(p.name for p in out.iterdir()) == ["t0", "t1", "t2"]
    assert proc.stderr.count("warning: --backbone-weights none") == 1  # the run's notes once, not once per process
    bad = tmp_path / "bad.mp4"
    bad.write_text("not a video")
    long = write_clip(tmp_path / "long.mp4", n=120)
    proc = torchrun([long, bad], tmp_path / "out2", sharp_weights)  # the second process: the bad input alone
    assert proc.returncode == 1
    lines = {Path(line["input"]).stem: line["status"] for line in json_lines(proc.stdout)}
    assert lines == {"long": "ok", "bad": "failed"}, proc.stderr[-2000:]  # torchrun stopped the first: no line
    assert sorted(p.name for p in (tmp_path / "out2").iterdir()) == ["long"]


# ---- bad inputs ------------------------------------------------------------------------------------------------


def truncated(path: Path, faststart: bool) -> Path:
    full = write_clip(path.with_name("full.mp4"), n=40, height=64, width=96)
    if faststart:  # remux with the index (moov) at the front, so the first half holds readable packets
        fast = path.with_name("fast.mp4")
        with av.open(str(full)) as src, av.open(str(fast), "w", options={"movflags": "faststart"}) as dst:
            stream = dst.add_stream_from_template(src.streams.video[0])
            for packet in src.demux(src.streams.video[0]):
                if packet.dts is not None:
                    packet.stream = stream
                    dst.mux(packet)
        full = fast
    data = full.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


BAD = {
    "missing": (lambda p: p / "missing.mp4", "no such file or folder"),
    "folder-without-frames": (lambda p: (p / "d").mkdir() or p / "d", "folder holds no frames"),
    "zero-bytes": (lambda p: (p / "z.mp4").write_bytes(b"") and p / "z.mp4" or p / "z.mp4", "file is empty"),
    "text-named-mp4": (
        lambda p: (p / "t.mp4").write_text("hello\n" * 50) and p / "t.mp4",
        "not a video FFmpeg can read",
    ),
    "random-bytes": (
        lambda p: (p / "r.mp4").write_bytes(np.random.default_rng(0).bytes(8192)) and p / "r.mp4",
        "not a video FFmpeg can read",
    ),
    "truncated-index-at-end": (lambda p: truncated(p / "cut.mp4", faststart=False), "not a video FFmpeg can read"),
    "truncated-index-at-front": (lambda p: truncated(p / "cut.mp4", faststart=True), "damaged or truncated"),
}


@pytest.mark.parametrize("kind", list(BAD))
def test_bad_inputs_fail_with_one_line(tmp_path: Path, run_cli, kind: str) -> None:
    make, message = BAD[kind]
    path = make(tmp_path)
    result = run_cli("segment", path, "-o", tmp_path / "out", *FAST, "--backbone-weights", "none", "--json")
    assert result.code == 1
    (line,) = json_lines(result.out)
    assert line["status"] == "failed" and message in line["error"], line["error"]
    errors = [e for e in result.err.splitlines() if not e.startswith("bavos: warning")]
    assert len(errors) == 1 and errors[0] == f"bavos: error: {line['error']}"
    assert not (tmp_path / "out").exists()  # nothing half-written, not even the empty folder the run created


def segment_ok(run_cli, path: Path, out: Path, *extra: str) -> dict:
    result = run_cli("segment", path, "-o", out, *TINY, "--backbone-weights", "none", "--json", *extra)
    assert result.code == 0, result.err
    (line,) = json_lines(result.out)
    return json.loads((Path(line["output"]) / "summary.json").read_text())


def test_one_frame_video(tmp_path: Path, run_cli) -> None:
    summary = segment_ok(run_cli, write_clip(tmp_path / "one.mp4", n=1), tmp_path / "out", "--no-overlay")
    assert summary["frames"] == 1 and summary["key_frames"] == 1


def test_huge_frame_is_resized_and_masks_keep_its_size(tmp_path: Path, run_cli) -> None:
    folder = tmp_path / "huge"
    folder.mkdir()
    img = np.full((3000, 4000, 3), 90, np.uint8)
    img[500:2000, 800:2500] = (200, 30, 30)
    Image.fromarray(img).save(folder / "00000.jpg", quality=80)
    summary = segment_ok(run_cli, folder, tmp_path / "out", "--no-overlay")
    with Image.open(tmp_path / "out" / "huge" / "masks" / "00000.png") as mask:
        assert mask.size == (4000, 3000) and mask.mode == "P"
    assert summary["patch_grid"] == [8, 12]


@pytest.mark.parametrize("pix_fmt", ["yuv420p10le", "yuv444p"])
def test_ten_bit_and_444_video(tmp_path: Path, run_cli, pix_fmt: str) -> None:
    clip = write_clip(tmp_path / "deep.mp4", n=4, height=48, width=64, pix_fmt=pix_fmt)
    with av.open(str(clip)) as c:
        assert c.streams.video[0].codec_context.pix_fmt == pix_fmt
    summary = segment_ok(run_cli, clip, tmp_path / "out", "--no-overlay")
    assert summary["frames"] == 4


def test_rotation_metadata_gives_upright_masks(tmp_path: Path, run_cli) -> None:
    clip = write_clip(tmp_path / "rot.mp4", n=3, height=48, width=64, rotation=90)
    summary = segment_ok(run_cli, clip, tmp_path / "out")
    assert (summary["width"], summary["height"]) == (48, 64)
    with Image.open(tmp_path / "out" / "rot" / "masks" / "00000.png") as mask:
        assert mask.size == (48, 64)
    with av.open(str(tmp_path / "out" / "rot" / "overlay.mp4")) as c:
        assert (c.streams.video[0].width, c.streams.video[0].height) == (48, 64)


def test_variable_frame_rate_overlay_keeps_the_timing(tmp_path: Path, run_cli) -> None:
    path = tmp_path / "vfr.mp4"
    times_ms = [0, 40, 200, 240, 900, 1000]
    with av.open(str(path), "w") as c:
        stream = c.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        for i, t in enumerate(times_ms):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 20 * i, np.uint8), format="rgb24")
            frame.pts, frame.time_base = t, Fraction(1, 1000)
            for packet in stream.encode(frame):
                c.mux(packet)
        for packet in stream.encode():
            c.mux(packet)

    def frame_times(video: Path) -> list[int]:
        with av.open(str(video)) as c:
            return sorted(round(float(f.pts * f.time_base) * 1000) for f in c.decode(c.streams.video[0]))

    assert frame_times(path) == times_ms
    segment_ok(run_cli, path, tmp_path / "out")
    assert frame_times(tmp_path / "out" / "vfr" / "overlay.mp4") == times_ms


def test_output_folder_not_writable(tmp_path: Path, run_cli, monkeypatch: pytest.MonkeyPatch) -> None:
    clip = write_clip(tmp_path / "c.mp4", n=2)
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = run_cli("segment", clip, "-o", blocker / "out", *FAST, "--backbone-weights", "none", "--json")
    assert result.code == 1 and "the output folder is not writable" in result.err
    assert json_lines(result.out)[0]["status"] == "failed"
    real_mkdir = Path.mkdir

    def denied(self: Path, *args: object, **kwargs: object) -> None:
        if self.name.startswith(".bavos-work-") and self.name.endswith("-probe"):
            raise PermissionError(errno.EACCES, "Permission denied")
        real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", denied)  # what a read-only folder gives a non-root user
    result = run_cli("segment", clip, "-o", tmp_path / "ro", *FAST, "--backbone-weights", "none", "-q")
    assert result.code == 1
    assert (
        result.err.splitlines()[-1] == f"bavos: error: the output folder is not writable: {tmp_path / 'ro'}: "
        "permission denied"
    )


def test_disk_full_while_writing(tmp_path: Path, run_cli, monkeypatch: pytest.MonkeyPatch) -> None:
    clip = write_clip(tmp_path / "c.mp4", n=3)
    real_write_text = Path.write_text

    def full(self: Path, *args: object, **kwargs: object) -> int:
        if self.name == "summary.json":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full)
    result = run_cli("segment", clip, "-o", tmp_path / "out", *FAST, "--backbone-weights", "none", "--json")
    assert result.code == 1
    error = json_lines(result.out)[0]["error"]
    assert error == f"cannot write the result {tmp_path / 'out' / 'c'}: no space left on the device"
    assert not (tmp_path / "out").exists()


def test_skip_existing_redoes_outputs_made_with_other_settings(tmp_path: Path, run_cli) -> None:
    clip = write_clip(tmp_path / "c.mp4", n=3)
    out = tmp_path / "out"
    base = ["segment", clip, "-o", out, *FAST, "--backbone-weights", "none"]
    assert run_cli(*base, "-q").code == 0
    same = run_cli(*base, "--skip-existing", "--batch-size", "2")  # --batch-size does not change the result
    assert same.code == 0 and same.out.startswith(f"{out / 'c'}: skipped, finished output with the same settings")
    other = run_cli(*base, "--skip-existing", "--tau", "0.5", "--json")
    assert other.code == 0 and json_lines(other.out)[0]["status"] == "ok"
    assert f"bavos: {out / 'c'}: redoing it, it was made with other settings: --tau 1.0 (now 0.5)" in other.err
    summary = json.loads((out / "c" / "summary.json").read_text())
    assert summary["settings"]["tau"] == 0.5 and "batch_size" not in summary["settings"]
    (out / "c" / "summary.json").write_text(json.dumps({**summary, "settings": None}))
    old = run_cli(*base, "--skip-existing", "--tau", "0.5")
    assert "made by an older bavos that did not record its settings" in old.err


def test_skip_existing_redoes_outputs_of_a_checkpoint_replaced_under_its_name(tmp_path: Path, run_cli) -> None:
    """A training run's last.pt is replaced by each checkpoint: a result made from it earlier is redone, as for a
    changed source; the same file again is skipped."""
    from bavos.models.correlator import Correlator, save_checkpoint

    def checkpoint(seed: int) -> None:
        torch.manual_seed(seed)
        model = {"backbone": "bavos_test_vit", "backbone_weights": "none", "correlator_heads": 4}
        save_checkpoint(tmp_path / "last.pt", Correlator(32, 4), {"ModelConfig": model}, step=seed)

    checkpoint(1)
    clip, out = write_clip(tmp_path / "c.mp4", n=3), tmp_path / "out"
    base = ["segment", clip, "-o", out, "--checkpoint", tmp_path / "last.pt", *FAST[4:], "--skip-existing", "--json"]
    assert run_cli(*base).code == 0
    assert [x["status"] for x in json_lines(run_cli(*base).out)] == ["skipped"]
    stamp = os.stat(tmp_path / "last.pt")
    checkpoint(2)  # the next checkpoint of the run, in its place
    os.utime(tmp_path / "last.pt", ns=(stamp.st_atime_ns, stamp.st_mtime_ns + 10**9))  # written later
    again = run_cli(*base)
    assert [x["status"] for x in json_lines(again.out)] == ["ok"], again.err
    assert f"bavos: {out / 'c'}: redoing it, its --checkpoint {tmp_path / 'last.pt'} changed since it was made" in (
        again.err
    )
    assert [x["status"] for x in json_lines(run_cli(*base).out)] == ["skipped"]


def test_skip_existing_redoes_outputs_of_a_changed_source(tmp_path: Path, run_cli) -> None:
    """Another video of the same size, frame count and rate in the input's place was 'skipped': a finished output
    records its source's size and modification time, and a change of either redoes it (as make would)."""
    clip, folder = write_clip(tmp_path / "c.mp4", n=3), tmp_path / "frames"
    folder.mkdir()
    for i, image in enumerate(clip_frames(3, 48, 64)):
        Image.fromarray(image).save(folder / f"{i:05d}.png")
    out = tmp_path / "out"
    base = ["segment", clip, folder, "-o", out, *FAST, "--backbone-weights", "none", "--skip-existing", "--json"]
    assert run_cli(*base).code == 0
    assert {x["status"] for x in json_lines(run_cli(*base).out)} == {"skipped"}
    write_clip(tmp_path / "other.mp4", n=3).replace(clip)  # another file in its place, written later
    stamp = os.stat(folder / "00001.png")
    os.utime(folder / "00001.png", ns=(stamp.st_atime_ns, stamp.st_mtime_ns + 10**9))  # a frame touched
    again = run_cli(*base)
    assert [x["status"] for x in json_lines(again.out)] == ["ok", "ok"], again.err
    for name in ("c", "frames"):
        assert f"bavos: {out / name}: redoing it, its source changed since it was made" in again.err
    assert {x["status"] for x in json_lines(run_cli(*base).out)} == {"skipped"}


def test_a_process_waiting_for_the_others_hears_ctrl_c(tmp_path: Path) -> None:
    """A field report: under torchrun, a process done with its inputs waited in gloo's barrier, which does not come
    back to Python for a signal: Ctrl-C or SIGTERM left it hanging until torchrun killed it 30 s later. The wait is
    mimicked by a call that holds SIGINT off in the thread that makes it, as a C call does."""
    import signal
    import time

    script = tmp_path / "wait.py"
    script.write_text(
        "import os, signal, sys, time\n"
        "signal.signal(signal.SIGINT, signal.default_int_handler)\n"  # a shell's background job starts with it ignored
        "os.environ['MASTER_ADDR'] = '127.0.0.1'\n"
        "import torch.distributed as dist\n"
        "def stuck(*args, **kwargs):\n"
        "    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})\n"
        "    time.sleep(60)\n"
        "dist.init_process_group = stuck\n"
        "from bavos.cli.segment import wait_for_the_others\n"
        "print('waiting', flush=True)\n"
        "try:\n"
        "    wait_for_the_others()\n"
        "except KeyboardInterrupt:\n"
        "    print('interrupted', flush=True)\n"
    )
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "waiting"
    time.sleep(0.5)  # inside the wait
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    try:
        out, _ = proc.communicate(timeout=10)
    finally:
        proc.kill()
    assert out.strip() == "interrupted" and time.monotonic() - started < 5


def test_two_inputs_with_one_long_stem_both_get_a_name_that_fits(tmp_path: Path, run_cli) -> None:
    """A trial: two inputs whose 250-character stems are the same refused the whole batch (exit 2): the second's
    name with its 9-character suffix was too long for the file system."""
    stem = "w" * 245 + "é"  # 247 bytes: the suffix must not split a character
    clips = [write_clip((tmp_path / d).mkdir() or tmp_path / d / f"{stem}.mp4", n=2) for d in ("d1", "d2")]
    r = run_cli("segment", *clips, "-o", tmp_path / "out", *FAST, "--backbone-weights", "none", "--json")
    assert r.code == 0, r.err
    (other,) = {p.name for p in (tmp_path / "out").iterdir()} - {stem}
    assert len(os.fsencode(other)) == 254 and other.startswith("w" * 245 + "-")  # "é" is 2 bytes: it went whole


@pytest.mark.parametrize("lines", ["--json", "text"])
def test_a_reader_that_goes_away_stops_the_run_quietly(tmp_path: Path, lines: str) -> None:
    """A field report: ``bavos segment … --json | head -1`` exited 1 with nothing said (and, a trial, so did the
    result lines without --json: exit 1 means an input failed). The reader gone, the run stops as a tool killed by
    SIGPIPE does: exit code 141, nothing on stderr, the results written so far kept."""
    clips = [write_clip(tmp_path / f"p{i}.mp4", n=2) for i in range(3)]
    command = [sys.executable, "-m", "bavos", "segment", *map(str, clips), "-o", str(tmp_path / "out"), *FAST]
    proc = subprocess.Popen(
        [*command, "--backbone-weights", "none", *(["-q", "--json"] if lines == "--json" else [])],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE if lines == "--json" else subprocess.DEVNULL,  # text: notes and warnings there
        text=True,
    )
    assert proc.stdout is not None
    first = proc.stdout.readline()
    if lines == "--json":
        assert json.loads(first)["status"] == "ok"
    else:
        assert first.startswith(f"{tmp_path / 'out' / 'p0'}: 2 frames, "), first
    proc.stdout.close()  # as head -1 does
    err = proc.stderr.read() if proc.stderr is not None else ""
    assert proc.wait(timeout=120) == 141 and err == ""
    done = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert done in (["p0"], ["p0", "p1"])  # the second is written before its line finds the pipe gone


def test_a_level_recorded_at_the_converged_level_is_the_default_s_cut() -> None:
    """A cut saved from `bavos view` records its level; `--skip-existing` then redid it for the default --level,
    whose cut it is ("--level 3 (now default)"), while it skipped `bavos recut`'s, which recorded none."""
    summary = {"settings": {"level": 3, "max_objects": 4}, "converged_level": 3}
    assert stale_reason(summary, {"level": None, "max_objects": 4}) is None
    assert stale_reason({**summary, "converged_level": 4}, {"level": None, "max_objects": 4}) == (
        "it was made with other settings: --level 3 (now default)"
    )


@pytest.mark.parametrize("signal_name", ["INT", "TERM"])
def test_a_signal_while_the_models_load_gives_every_input_its_line(
    tmp_path: Path, run_cli, monkeypatch: pytest.MonkeyPatch, signal_name: str
) -> None:
    """A trial: Ctrl-C or a scheduler's SIGTERM while the models loaded (a download, a slow disk) gave no --json line
    at all, and a script's "what is left to do" found nothing left."""
    import bavos.cli.segment as segment_cli

    def stopped(*args: object) -> None:
        if signal_name == "TERM":
            os.kill(os.getpid(), signal.SIGTERM)  # bavos's handler raises; SIGINT may start ignored (a CI job)
            time.sleep(5)
        raise KeyboardInterrupt

    monkeypatch.setattr(segment_cli, "_load", stopped)
    clips = [write_clip(tmp_path / f"s{i}.mp4", n=2) for i in range(2)]
    result = run_cli("segment", *clips, "-o", tmp_path / "out", *FAST, "--backbone-weights", "none", "--json")
    why = "terminated" if signal_name == "TERM" else "interrupted"
    assert result.code == (143 if signal_name == "TERM" else 130)
    lines = json_lines(result.out)
    assert [(line["input"], line["status"], line["error"]) for line in lines] == [
        (str(clip), "not-run", f"{why} before it started") for clip in clips
    ]
    assert not (tmp_path / "out").exists()


def test_a_long_name_in_many_bytes_is_written(tmp_path: Path, run_cli) -> None:
    """A trial: a stem of 80 CJK characters (240 bytes, a legal name) failed after all the work, "the name is too
    long": the hidden folder beside it cut the name to 120 characters, 360 bytes."""
    stem = "漢" * 80
    clip = write_clip(tmp_path / f"{stem}.mp4", n=2)
    result = run_cli("segment", clip, "-o", tmp_path / "out", *FAST, "--backbone-weights", "none", "-q")
    assert result.code == 0, result.err
    assert (tmp_path / "out" / stem / "summary.json").is_file()


def test_what_is_no_place_to_write_is_said_as_such(tmp_path: Path, run_cli, monkeypatch: pytest.MonkeyPatch) -> None:
    """A trial: an -o that is a link to nothing was "not writable: something is already there" (exit 1); a folder
    named .bavos-write-test-<pid> left by a killed run blocked every later run given that process number (each
    container's bavos can be process 1), and no run removed it."""
    from bavos.io import owners
    from bavos.io.files import prepare_output

    clip = write_clip(tmp_path / "c.mp4", n=2)
    (tmp_path / "gone").symlink_to(tmp_path / "nowhere")
    result = run_cli("segment", clip, "-o", tmp_path / "gone", *FAST, "--backbone-weights", "none", "--json")
    assert result.code == 2 and json_lines(result.out)[0]["status"] == "failed"
    assert result.err.splitlines()[-1] == (
        f"bavos: error: {tmp_path / 'gone'}: a link to {tmp_path / 'nowhere'}, which is not there; make that folder "
        "or give another -o"
    )
    out = tmp_path / "out"
    (out / f".bavos-write-test-{os.getpid()}").mkdir(parents=True)  # what an older bavos left
    made: list[Path] = []
    real_rmdir = Path.rmdir

    def killed_here(self: Path) -> None:
        made.append(self)  # a run killed between making its probe and removing it

    monkeypatch.setattr(Path, "rmdir", killed_here)
    prepare_output(out)
    monkeypatch.setattr(Path, "rmdir", real_rmdir)
    (probe,) = made
    assert probe.parent == out and owners._ENTRY.match(probe.name)  # swept once its process is gone
    assert not owners.is_left_over(probe)  # this process lives
    older = out / f".bavos-write-test-{dead_pid()}"  # an older bavos's, a day old: swept as its other entries
    older.mkdir()
    os.utime(older, (time.time() - 25 * 3600,) * 2)
    assert [left.path for left in owners.sweep(out)] == [older]
