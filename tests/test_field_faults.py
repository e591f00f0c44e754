"""Faults rebuilt from other tools' bug reports, round two: runs that share or reuse an output folder, state left by a
process that died, damaged files diagnosed as damaged, estimates and checks for every input, pictures that every
image tool opens, and every cut that `bavos recut` promises (random weights, tiny runs)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import TINY, comparable, write_clip

QUIET = [*TINY, "--backbone-weights", "none", "-q"]


def bavos(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "bavos", *(str(a) for a in args)]


def summary(folder: Path) -> dict:
    return json.loads((folder / "summary.json").read_text())


# 1. Two runs into one -o (shell loops with &, xargs -P, Slurm arrays): neither loses the other's result.


def test_a_run_that_finishes_second_keeps_the_first_result(tmp_path: Path) -> None:
    """Both runs planned ``out/clip`` before either finished: the second to finish leaves the first's result and
    takes ``clip-<8 hex>``, the name a later run plans for it."""
    from bavos.api import segment_video
    from bavos.config import ModelConfig, SegmentConfig
    from bavos.models.loading import load_models
    from bavos.pipeline.batch import plan_outputs

    a = write_clip((tmp_path / "a").mkdir() or tmp_path / "a" / "clip.mp4", n=4)
    b = write_clip((tmp_path / "b").mkdir() or tmp_path / "b" / "clip.mp4", n=5)
    out = tmp_path / "out"
    cfg = SegmentConfig(resolution=(64, 96), device="cpu", stride=1)
    models = load_models(ModelConfig(backbone="bavos_test_vit", backbone_weights="none", checkpoint="none"), "cpu")
    first = segment_video(a, out, cfg, models, name="clip")
    second = segment_video(b, out, cfg, models, name="clip")  # planned before the first was there
    (name_b,) = [n for _, n in plan_outputs([b], out)]
    assert first["output"] == str(out / "clip") and second["output"] == str(out / name_b) != first["output"]
    assert summary(out / "clip")["source"] == str(a.resolve()) and summary(out / name_b)["source"] == str(b.resolve())
    assert summary(out / name_b)["frames"] == 5 and summary(out / name_b)["output"] == str(out / name_b)
    assert sorted(p.name for p in out.iterdir()) == sorted(["clip", name_b])  # nothing hidden left


def test_two_runs_at_once_into_one_folder_keep_both_results(tmp_path: Path) -> None:
    videos = []
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        videos.append(write_clip(tmp_path / folder / "clip.mp4", n=24 if folder == "a" else 20))
    out = tmp_path / "out"
    procs = [
        subprocess.Popen(
            bavos("segment", v, "-o", out, *TINY, "--backbone-weights", "none", "--json"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for v in videos
    ]
    lines = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr
        lines.append(json.loads(stdout))
    folders = [Path(line["output"]) for line in lines]
    assert len(set(folders)) == 2 and {f.name for f in folders} <= {"clip", *(p.name for p in out.iterdir())}
    for video, line, folder in zip(videos, lines, folders, strict=True):
        assert line["status"] == "ok" and summary(folder)["source"] == str(video.resolve())
        assert len(list((folder / "masks").iterdir())) == line["frames"]
    assert sorted(p.name for p in out.iterdir()) == sorted(f.name for f in folders)


# 2. Runs killed with SIGKILL (the OOM killer, a scheduler's hard limit): the next run into the folder cleans up.


def test_what_a_killed_run_left_is_removed_by_the_next_run(tmp_path: Path, run_cli: Callable) -> None:
    out = tmp_path / "out"
    video = write_clip(tmp_path / "long.mp4", n=160, height=48, width=64)
    for pattern in (".bavos-work-*/.bavos-level0-*", ".long.bavos-tmp-*/masks/*.png"):  # clustering, then writing
        proc = subprocess.Popen(bavos("segment", video, "-o", out, *QUIET))
        deadline = time.monotonic() + 180
        while not list(out.glob(pattern)) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert list(out.glob(pattern)), "the run ended before it could be killed"
    left = sorted(p.name for p in out.iterdir())
    assert any(n.startswith(".bavos-work-") for n in left) and any(n.startswith(".long.bavos-tmp-") for n in left)
    (out / ".keep-me").write_text("the user's")
    result = run_cli("segment", write_clip(tmp_path / "short.mp4", n=3), "-o", out, *TINY, "--backbone-weights", "none")
    assert result.code == 0, result.err
    (line,) = [x for x in result.err.splitlines() if "killed runs left" in x]
    assert line.startswith(f"bavos: removed what killed runs left in {out} (") and ".long.bavos-tmp-" in line
    assert sorted(p.name for p in out.iterdir()) == [".keep-me", "short"]


def test_a_run_killed_between_its_two_renames_loses_no_result(tmp_path: Path, run_cli: Callable) -> None:
    """The old result set aside and the new one not yet in place (a SIGKILL between publishing's renames, found with
    strace's fault injection): the next run puts the old result back and says so; it removed it."""
    from bavos.io.owners import owner_tag

    out, video = tmp_path / "out", write_clip(tmp_path / "clip.mp4", n=3)
    assert run_cli("segment", video, "-o", out, *QUIET).code == 0

    def files(folder: Path) -> dict[str, bytes]:
        return {str(f.relative_to(folder)): f.read_bytes() for f in sorted(folder.rglob("*")) if f.is_file()}

    before = files(out / "clip")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    host, _, start = owner_tag().split("~")
    (out / "clip").rename(out / f".clip.bavos-old-{host}~{dead.stdout.strip()}~{start}")  # a dead run's
    result = run_cli("segment", write_clip(tmp_path / "other.mp4", n=3), "-o", out, *TINY, "--backbone-weights", "none")
    assert result.code == 0, result.err
    assert f"bavos: put back {out / 'clip'}: a killed run was replacing that result" in result.err
    assert files(out / "clip") == before and sorted(p.name for p in out.iterdir()) == ["clip", "other"]


# Slurm job arrays: N parts into one -o write what one call writes.


def test_the_parts_of_an_array_write_what_one_call_writes(
    tmp_path: Path, run_cli: Callable, monkeypatch: pytest.MonkeyPatch
) -> None:
    from test_field_inputs import frame_folder, tree

    inputs = []
    for folder, n in (("a", 4), ("b", 5), ("c", 3)):
        (tmp_path / folder).mkdir()
        inputs.append(write_clip(tmp_path / folder / "clip.mp4", n=n))  # three inputs of one stem
    inputs.append(frame_folder(tmp_path / "d" / "shots", n=3))
    whole = run_cli("segment", *inputs, "-o", tmp_path / "one", *QUIET)
    assert whole.code == 0, whole.err
    for i, given in ((1, inputs[::-1]), (0, inputs), (2, inputs[1:] + inputs[:1])):  # each its own order
        part = run_cli("segment", *given, "-o", tmp_path / "parts", *QUIET, "--shard", f"{i}/3")
        assert part.code == 0, part.err  # it split the list as given: some inputs twice, some never
    one, parts = tree(tmp_path / "one"), tree(tmp_path / "parts")
    assert sorted(one) == sorted(parts) and len({Path(k).parts[0] for k in one}) == 4
    for key in one:
        if key.endswith("summary.json"):
            a, b = json.loads(one[key]), json.loads(parts[key])
            for s in (a, b):
                del s["timings"], s["output"]
            assert a == b
        elif key.endswith(".bavos-files"):  # the manifest of bavos's files
            assert comparable(tmp_path / "one" / key) == comparable(tmp_path / "parts" / key), key
        elif not key.endswith(".mp4"):  # x264 may encode the same frames differently
            assert one[key] == parts[key], key

    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "5")
    monkeypatch.setenv("SLURM_ARRAY_TASK_MIN", "1")
    monkeypatch.setenv("SLURM_ARRAY_TASK_MAX", "7")
    monkeypatch.setenv("SLURM_ARRAY_TASK_STEP", "2")  # tasks 1, 3, 5, 7: this one is the third
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "4")
    task = run_cli(
        "segment", *inputs, "-o", tmp_path / "slurm", *TINY, "--backbone-weights", "none", "--json", "--shard", "slurm"
    )
    assert task.code == 0, task.err
    assert (
        "bavos: Slurm array task 5 of 1-7:2: part 2/4 of the inputs, 1 of 4; --shard 0/1 takes them all"
        in task.err.splitlines()
    )
    (line,) = [json.loads(x) for x in task.out.splitlines()]
    named = {json.loads(v)["source"]: Path(k).parts[0] for k, v in one.items() if k.endswith("summary.json")}
    assert line["input"] == str(inputs[2]) and Path(line["output"]).name == named[str(inputs[2].resolve())]
    # a field report: a task that chose its own input (bavos segment "${FILES[$SLURM_ARRAY_TASK_ID]}") got an empty
    # part, in silence; without --shard every input given is taken
    mine = run_cli("segment", inputs[3], "-o", tmp_path / "own", *TINY, "--backbone-weights", "none", "--json")
    assert mine.code == 0 and [json.loads(x)["status"] for x in mine.out.splitlines()] == ["ok"], mine.err
    assert "Slurm array" not in mine.err  # one input: nothing to share
    both = run_cli("segment", *inputs[2:], "-o", tmp_path / "own", *TINY, "--backbone-weights", "none", "--json")
    assert both.code == 0 and len(both.out.splitlines()) == 2, both.err
    assert (
        "bavos: Slurm array task 5 of 1-7: every input (2); --shard slurm gives each task of the array a share"
        in both.err.splitlines()
    )
    for key, value in {"ID": "0", "MIN": "0", "MAX": "0", "COUNT": "1"}.items():  # --array=0
        monkeypatch.setenv(f"SLURM_ARRAY_TASK_{key}", value)
    monkeypatch.delenv("SLURM_ARRAY_TASK_STEP")
    only = run_cli(
        "segment",
        *inputs[2:],
        "-o",
        tmp_path / "own",
        *TINY,
        "--backbone-weights",
        "none",
        "--skip-existing",
        "--shard",
        "slurm",
    )  # a trial: it said "--shard slurm gives each task of the array a share", --shard slurm given
    assert only.code == 0 and "bavos: Slurm array task 0 of 0-0: the array's only task, every input (2)" in only.err
    everything = run_cli("segment", *inputs[:1], "-o", tmp_path / "slurm", *QUIET, "--shard", "0/1")
    assert everything.code == 0 and (tmp_path / "slurm" / "clip").is_dir()  # --shard 0/1: the whole list


@pytest.mark.parametrize(
    ("given", "said"),
    [
        ("3/3", "I runs from 0 to N-1"),
        ("1", "takes I/N"),
        ("a/b", "takes I/N"),
        ("-1/2", "I runs from 0 to N-1"),
        ("1/0", "N, the number of parts, must be at least 1"),  # it said I runs from 0 to N-1
        ("0/-2", "N, the number of parts, must be at least 1"),
        ("slurm", "--shard slurm: not a task of a Slurm job array"),  # outside an array
    ],
)
def test_a_wrong_shard_is_a_usage_error(tmp_path: Path, run_cli: Callable, given: str, said: str) -> None:
    result = run_cli("segment", write_clip(tmp_path / "v.mp4", n=2), "-o", tmp_path / "out", *QUIET, "--shard", given)
    assert result.code == 2 and said in result.err and not (tmp_path / "out").exists()


# 3. A training run that stopped before its first checkpoint starts again; a cut metrics line is not fatal.

TRAIN = [
    "--backbone",
    "bavos_test_vit",
    "--backbone-weights",
    "none",
    "--resolution",
    "128",
    "160",
    "--device",
    "cpu",
    "--workers",
    "0",
    "--batch-size",
    "1",
]


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("clips")
    for i in range(2):
        write_clip(root / f"clip{i}.mp4", n=8, height=64, width=96)
    return root


def test_a_run_killed_before_its_first_checkpoint_starts_again(tmp_path: Path, clips: Path, run_cli: Callable) -> None:
    for again in ([], ["--resume"]):
        run = tmp_path / f"run{len(again)}"
        proc = subprocess.Popen(
            bavos(
                "train",
                clips,
                "-o",
                run,
                *TRAIN,
                "--steps",
                "400",
                "--log-every",
                "1",
                "--checkpoint-every",
                "1000",
                "-q",
            )
        )
        deadline = time.monotonic() + 180
        while (
            time.monotonic() < deadline
            and proc.poll() is None
            and not ((run / "metrics.jsonl").is_file() and (run / "metrics.jsonl").read_text().count("\n") >= 1)
        ):
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert not (run / "last.pt").exists() and (run / "config.json").is_file()
        assert [p.name for p in run.glob(".bavos-work-*-train")]  # the dead run's mark is left
        result = run_cli("train", clips, "-o", run, *again, *([] if again else TRAIN), "--steps", "2")
        assert result.code == 0, result.err
        assert "the run there stopped before its first checkpoint; starting it again from step 0" in result.err
        assert "removed what killed runs left" in result.err
        assert torch_step(run / "last.pt") == 2
        steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]
        assert steps == ([1, 2] if again else [2])  # the killed run's lines are gone (its --log-every 1 resumed)
        assert not [p.name for p in run.iterdir() if p.name.startswith(".")]


def test_a_run_refused_for_memory_leaves_nothing_to_trip_over(
    tmp_path: Path, clips: Path, run_cli: Callable, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "run"
    with monkeypatch.context() as m:
        m.setattr("bavos.models.costs.available_bytes", lambda device: 1024)
        refused = run_cli("train", clips, "-o", run, *TRAIN, "--steps", "1")
    assert refused.code == 1 and "training needs about" in refused.err
    assert not run.exists()  # refused before decoding (frames too large to train on may be too large to decode)
    follows = run_cli("train", clips, "-o", run, *TRAIN, "--steps", "1")  # the advice followed: it runs
    assert follows.code == 0, follows.err


def test_a_metrics_line_cut_short_is_dropped_on_resume(tmp_path: Path, clips: Path, run_cli: Callable) -> None:
    run = tmp_path / "run"
    assert run_cli("train", clips, "-o", run, *TRAIN, "--steps", "3", "--until", "2", "--log-every", "1").code == 0
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 5, "loss": 1.9')  # a full disk cut it
    resumed = run_cli("train", clips, "-o", run, "--resume")
    assert resumed.code == 0, resumed.err
    assert [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]


def torch_step(path: Path) -> int:
    import torch

    return int(torch.load(path, map_location="cpu", weights_only=False)["step"])


def test_a_run_folder_a_live_run_is_writing_is_refused(tmp_path: Path, clips: Path, run_cli: Callable) -> None:
    from bavos.io import owners

    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        run = tmp_path / "run"
        run.mkdir()
        host = owners.owner_tag().split("~")[0]
        (run / f".bavos-work-{host}~{other.pid}~{owners._start_ticks(other.pid)}-train").touch()
        result = run_cli("train", clips, "-o", run, *TRAIN, "--steps", "1")
        assert result.code == 2
        machine = host.partition(".")[0]  # the tag's host also names the PID namespace: said when it differs
        assert f"another training run is writing this folder (process {other.pid} on {machine})" in result.err
    finally:
        other.kill()
        other.wait()


# 5. Pictures that every image tool opens, whatever the frame's shape.


@pytest.mark.parametrize(("height", "width"), [(4096, 16), (16, 4096)])
def test_a_frame_of_extreme_aspect_gives_pictures_pillow_opens(
    tmp_path: Path, run_cli: Callable, height: int, width: int
) -> None:
    import warnings

    from PIL import Image

    video = write_clip(tmp_path / "strip.mp4", n=3, height=height, width=width)
    result = run_cli("segment", video, "-o", tmp_path / "out", *QUIET)
    assert result.code == 0, result.err
    for name in ("preview.png", "hierarchy.png"):
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # what Pillow warns of, then refuses
            with Image.open(tmp_path / "out" / "strip" / name) as picture:
                picture.load()
                assert picture.width <= 2000 and picture.height <= 2000, (name, picture.size)


# 4. Estimates for every input: frames at their own size counted, containers that announce no frame count.


def encode_fast(path: Path, n: int, height: int, width: int, container: str | None = None) -> Path:
    """``n`` frames of 8x8 blocks of noise, x264 ultrafast (quick to make even at 4K): the benchmark's clips."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from bench_memory import write_clip as write_noise

    return write_noise(path, n, height, width, container)


def said_and_used(args: list[str | Path]) -> tuple[float, float, str]:
    """The peak memory a `bavos segment` run says (GB) and the peak resident memory it used (GB), and its stderr."""
    import re

    proc = subprocess.Popen(bavos("segment", *args), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.returncode == 0, err
    said = re.search(r"peak memory (\d+\.\d) GB", err)
    assert said, err
    return float(said.group(1)), usage.ru_maxrss / 2**20, err


def test_a_4k_clip_s_memory_is_said_before_it_is_used(tmp_path: Path) -> None:
    """XMem#30: a 4K clip ran out of memory; bavos once said far less than it took (docs/performance.md, "Peak
    memory"). Frames at their own size count."""
    video = encode_fast(tmp_path / "uhd.mp4", n=6, height=2160, width=3840)
    said, used, _ = said_and_used([video, "-o", tmp_path / "out", *TINY, "--backbone-weights", "none"])
    # said to 0.1 GB, and the heap's fragmentation varies from run to run (more on a busy machine): within 10 %
    assert used <= 1.1 * said and said <= 1.6 * used, (said, used)


def test_a_container_without_a_frame_count_gets_an_estimate_and_a_check(
    tmp_path: Path, run_cli: Callable, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bavos.io.video import FrameRange, VideoSource

    for name, container in (("clip.mkv", None), ("clip.ts", "mpegts")):  # Matroska (and WebM), MPEG-TS (and .MTS)
        path = encode_fast(tmp_path / name, n=7, height=48, width=64, container=container)
        source = VideoSource(path)
        assert not source.info.frame_count and source.frames_expected() == 7, name
        assert VideoSource(path, FrameRange.parse("2", "5")).frames_expected() == 3
        result = run_cli("segment", path, "-o", tmp_path / "out", *TINY, "--backbone-weights", "none")
        assert result.code == 0, result.err
        assert f"bavos: {name}: estimated " in result.err
    monkeypatch.setattr("bavos.models.costs.available_bytes", lambda device: 10 * 2**20)  # 10 MB free
    refused = run_cli("segment", tmp_path / "clip.mkv", "-o", tmp_path / "out2", *TINY, "--backbone-weights", "none")
    assert refused.code == 1 and "more memory, this machine has 0.0 GB free" in refused.err


# 7. Every promise of recut kept, and what it cannot keep said plainly.


def test_recut_names_a_damaged_or_foreign_hierarchy_and_a_changed_source(tmp_path: Path, run_cli: Callable) -> None:
    """MedSAM#112 (BadZipFile from a bad .npz), MaskTrackRCNN#16 (masks at another size than the video's)."""
    video = write_clip(tmp_path / "v.mp4", n=12, height=48, width=64)
    other = write_clip(tmp_path / "w.mp4", n=6, height=48, width=64)
    for clip in (video, other):
        assert run_cli("segment", clip, "-o", tmp_path / "out", *QUIET).code == 0
    result = tmp_path / "out" / "v"
    npz = result / "hierarchy.npz"
    whole = npz.read_bytes()
    npz.write_bytes(whole[: len(whole) // 2])
    damaged = run_cli("recut", result, "--max-objects", "2")
    assert damaged.code == 1 and "internal error" not in damaged.err
    assert f"bavos: error: {npz}: damaged, recut cannot read it (" in damaged.err and "run bavos segment" in damaged.err
    npz.write_bytes((tmp_path / "out" / "w" / "hierarchy.npz").read_bytes())
    foreign = run_cli("recut", result, "--max-objects", "2")
    assert foreign.code == 1 and "holds the labels of 6 frames, the result's summary.json says 12" in foreign.err
    npz.write_bytes(whole)
    before = {p.name: p.read_bytes() for p in result.rglob("*") if p.is_file()}
    for replaced in (write_clip(tmp_path / "big.mp4", n=12, height=64, width=96), other):
        video.write_bytes(replaced.read_bytes())  # another video under the same name
        changed = run_cli("recut", result, "--max-objects", "2")
        assert changed.code == 1 and f"{video}: not the video this result was made from (now " in changed.err
        assert "the result's 64x48, 12 frames" in changed.err and "bavos segment" in changed.err
    assert {p.name: p.read_bytes() for p in result.rglob("*") if p.is_file()} == before  # untouched
    video.write_bytes(write_clip(tmp_path / "same.mp4", n=12, height=48, width=64, pix_fmt="yuv444p").read_bytes())
    reencoded = run_cli("recut", result, "--max-objects", "2")  # its size and frame count, other bytes
    assert reencoded.code == 0, reencoded.err
    said = "its source changed since it was made (its size or modification time): "
    assert f"bavos: warning: {result}: {said}" in reencoded.err
    assert "the overlay and pictures show its frames now" in reencoded.err
    assert said in json.loads((result / "summary.json").read_text())["warnings"][-1]


# Runs that reuse an output place: a damaged result is redone, or named, never skipped as finished.


def test_skip_existing_redoes_a_damaged_result(tmp_path: Path, run_cli: Callable) -> None:
    """driftscan#38, trusty-tools#6141: a product half there must not count as finished."""
    video = write_clip(tmp_path / "c.mp4", n=6)
    out, result = tmp_path / "out", tmp_path / "out" / "c"
    args = ["segment", video, "-o", out, *TINY, "--backbone-weights", "none", "--skip-existing", "--json"]
    assert run_cli(*args).code == 0
    damages = [
        (lambda: (result / "masks" / "00004.png").unlink(), "its masks/00004.png is missing"),
        (
            lambda: (result / "hierarchy.npz").write_bytes((result / "hierarchy.npz").read_bytes()[:300]),
            "its hierarchy.npz is cut short",
        ),
        (lambda: (result / "overlay.mp4").write_bytes(b""), "its overlay.mp4 is empty"),
    ]
    for damage, said in damages:
        damage()
        again = run_cli(*args)
        assert again.code == 0 and json.loads(again.out)["status"] == "ok", again.err
        assert f"bavos: {result}: redoing it, {said}" in again.err
    skipped = run_cli(*args)
    assert json.loads(skipped.out)["status"] == "skipped"
    (result / "masks" / "00002.png").rename(result / "masks" / "00002_fixed.png")  # it counted 6 masks: "skipped"
    renamed = run_cli(*args)  # damaged, and a file of the user's in it: refused, not redone, not skipped
    assert renamed.code == 2 and json.loads(renamed.out)["status"] == "failed", renamed.err
    assert "redoing it" not in renamed.err  # a field report: "redoing it", then a refusal of that very folder
    assert "masks/00002_fixed.png" in renamed.err and (result / "masks" / "00002_fixed.png").is_file()
    (result / "masks" / "00002_fixed.png").rename(result / "masks" / "00002.png")
    (result / "summary.json").write_text('{"input": "c.mp4", "sour')  # damaged
    refused = run_cli("segment", video, "-o", out, *QUIET)
    assert refused.code == 2 and "(None)" not in refused.err
    assert f"{result}: holds a damaged result (its summary.json cannot be read)" in refused.err


def test_a_damaged_last_checkpoint_says_how_to_go_on(tmp_path: Path, clips: Path, run_cli: Callable) -> None:
    """dddd_trainer#36, stable-audio-tools#151: a checkpoint cut short; "fetch it again" is no advice for a file the
    run wrote itself."""
    run = tmp_path / "run"
    assert run_cli("train", clips, "-o", run, *TRAIN, "--steps", "3", "--until", "2").code == 0
    last = run / "last.pt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    result = run_cli("train", clips, "-o", run, "--resume")
    assert result.code != 0 and "fetch it again" not in result.err
    assert f"{last}: the run's last checkpoint is damaged (an incomplete file (" in result.err
    assert "remove it to start the run again from step 0" in result.err
    last.unlink()
    again = run_cli("train", clips, "-o", run, "--resume")  # as it said: the run starts again
    assert again.code == 0 and "starting it again from step 0" in again.err


def test_a_cut_jpeg_frame_is_named_before_the_model_loads(tmp_path: Path, run_cli: Callable) -> None:
    """vision#138, Pillow#7039: "image file is truncated", and which file."""
    from test_field_inputs import frame_folder

    folder = frame_folder(tmp_path / "shots", n=6)
    extra = folder / "00002.jpg"
    extra.write_bytes(extra.read_bytes() + b"camera data after the end marker")  # whole, with trailing data
    for keep, said in (
        (0.9, "the JPEG file is cut short (it lacks the end marker"),
        (0.3, "the image file is cut short ("),
    ):  # its data cut, or its header too
        cut = folder / "00004.jpg"
        whole = cut.read_bytes()
        cut.write_bytes(whole[: int(len(whole) * keep)])
        result = run_cli("segment", folder, "-o", tmp_path / "out", *TINY, "--backbone-weights", "none")
        assert result.code == 1 and "estimated" not in result.err  # before the model
        assert f"bavos: error: {cut}: {said}" in result.err and "move it out of the folder" in result.err
        cut.write_bytes(whole)
    cut.unlink()
    assert run_cli("segment", folder, "-o", tmp_path / "out", *QUIET).code == 0
