import json
import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import TINY, write_clip


def test_help_does_not_import_torch() -> None:
    code = "import sys; from bavos.cli import app; print('torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "False"


def test_import_torch_pauses_the_collector_only_while_importing() -> None:
    code = (
        "import gc, sys; from bavos.cli.app import import_torch; before = gc.get_freeze_count(); import_torch(); "
        "print('torch' in sys.modules, gc.isenabled(), gc.get_freeze_count() - before > 100_000); "
        "gc.disable(); import_torch(); print(gc.isenabled())"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.stdout.split() == ["True", "True", "True", "False"], proc.stderr
    code = "import gc; gc.disable(); from bavos.cli.app import import_torch; import_torch(); print(gc.isenabled())"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip() == "False", proc.stderr  # a caller's choice is left as it was


def test_python_dash_m_and_version() -> None:
    proc = subprocess.run([sys.executable, "-m", "bavos", "--version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == __import__("bavos").__version__
    proc = subprocess.run(
        [sys.executable, "-m", "bavos", "segment", "--help"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0
    for flag in (
        "--resolution",
        "--key-ratio",
        "--tau",
        "--level",
        "--max-objects",
        "--upsample",
        "--stride",
        "--device",
        "--backbone-weights",
        "--checkpoint",
        "--quiet",
    ):
        assert flag in proc.stdout


def test_every_option_is_named_in_lower_case() -> None:
    """typer 0.27 named an option after an upper-case metavar equal to its parameter's name ("--TAU" for tau with
    metavar TAU: `--tau` was "No such option"), so bavos names each such option itself."""
    import typer.main

    import bavos.cli  # noqa: F401 - registers the commands
    from bavos.cli.app import app

    group = typer.main.get_command(app)
    for name, command in group.commands.items():
        for param in command.params:
            longs = [o for o in param.opts + param.secondary_opts if o.startswith("--")]
            assert all(o == o.lower() for o in longs), (name, param.name, longs)
            if param.name in ("tau", "fps", "lr"):
                assert longs == ["--" + param.name], (name, longs)


def test_segment_via_cli(tmp_path: Path, run_cli, sharp_weights: Path) -> None:
    video = write_clip(tmp_path / "v.mp4", n=6)
    result = run_cli("segment", video, "-o", tmp_path / "out", *TINY, "--backbone-weights", sharp_weights)
    assert result.code == 0, result.err
    assert result.out.startswith(f"{tmp_path / 'out' / 'v'}: 6 frames")
    assert json.loads((tmp_path / "out" / "v" / "summary.json").read_text())["frames"] == 6
    assert "warning" not in result.err


def test_random_weights_are_announced(tmp_path: Path, run_cli) -> None:
    video = write_clip(tmp_path / "v.mp4", n=2)
    result = run_cli("segment", video, "-o", tmp_path / "out", *TINY, "--backbone-weights", "none", "--json")
    assert result.code == 0
    assert [e for e in result.err.strip().splitlines() if "warning" in e] == [
        "bavos: warning: --backbone-weights none: the backbone has random weights; masks are meaningless "
        "(tests, benchmarks)"
    ]
    result = run_cli("segment", video, "-o", tmp_path / "out", *TINY, "--backbone-weights", "none", "-q")
    assert result.code == 0 and result.out == "" and result.err == ""  # -q: errors only


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p / "missing.mp4", "no such file or folder"),
        (lambda p: (p / "empty.mp4").write_bytes(b"") and p / "empty.mp4" or p / "empty.mp4", "file is empty"),
        (lambda p: (p / "t.mp4").write_text("not a video") and p / "t.mp4", "not a video FFmpeg can read"),
        (lambda p: ((p / "d").mkdir(), p / "d")[1], "folder holds no frames"),
    ],
    ids=["missing", "zero-bytes", "text", "no-frames"],
)
def test_input_errors_are_one_line_and_exit_1(tmp_path: Path, run_cli, make, message: str) -> None:
    path = make(tmp_path)
    result = run_cli("segment", path, "-o", tmp_path / "out", *TINY, "--backbone-weights", "none", "-q")
    assert result.code == 1
    lines = [line for line in result.err.splitlines() if "warning" not in line]
    assert len(lines) == 1 and lines[0].startswith("bavos: error: ") and message in lines[0]
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_one_failing_input_does_not_stop_the_others(tmp_path: Path, run_cli) -> None:
    good = write_clip(tmp_path / "good.mp4", n=2)
    result = run_cli("segment", tmp_path / "bad.mp4", good, "-o", tmp_path / "out", *TINY, "--backbone-weights", "none")
    assert result.code == 1
    assert (tmp_path / "out" / "good" / "summary.json").is_file()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["segment", "x.mp4", "--no-such-flag"], "No such option: --no-such-flag"),
        (["segment", "x.mp4", "--tau", "abc"], "Invalid value for '--tau'"),
        (["segment", "x.mp4", "--tau", "-1", *TINY], "--tau must be positive"),
        (["segment", "x.mp4", "--max-objects", "70000", *TINY], "--max-objects must be in 0..65536"),
        (["segment", "x.mp4", "--upsample", "cubic", *TINY], "--upsample must be bilinear or nearest"),
        (["segment", "x.mp4", "--precision", "fp8", *TINY], "--precision must be one of float32, bf16, fp16"),
        (["segment", "x.mp4", "--attention-cache", "-1", *TINY], "--attention-cache must be auto, 0 (none) or more MB"),
        (["segment", "x.mp4", "--overlay-alpha", "2", *TINY], "--overlay-alpha must be in [0, 1], got 2.0"),
        (["recut", "out/x", "--max-objects", "-3"], "--max-objects must be in 0..65536 (0 = no limit), got -3 (see"),
        (["recut", "out/x", "--level", "-1"], "--level must be 0 or more, got -1 (see 'bavos recut --help')"),
    ],
)
def test_usage_errors_are_one_line(run_cli, args: list[str], message: str) -> None:
    result = run_cli(*args)
    assert result.code == 2
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bavos: error: ") and message in lines[0]
    assert "Traceback" not in result.err


def test_usage_error_exit_code_is_2(run_cli) -> None:
    assert run_cli("segment", "x.mp4", "--nope").code == 2
    assert run_cli("segment").code == 2


def test_bad_weights_and_checkpoint_are_one_line(tmp_path: Path, run_cli) -> None:
    video = write_clip(tmp_path / "v.mp4", n=2)
    (tmp_path / "w.pth").write_text("junk")
    result = run_cli("segment", video, *TINY, "--backbone-weights", tmp_path / "w.pth")
    assert result.code == 1 and result.err.count("\n") == 1 and "not a weights file" in result.err
    result = run_cli("segment", video, *TINY, "--backbone-weights", "none", "--checkpoint", tmp_path / "nope.pt")
    assert result.code == 2 and "no such file; give a file or one of: release, none" in result.err  # before loading


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    env = {**os.environ, "BAVOS_DEBUG": "1"}
    (tmp_path / "c.pt").write_text("not a checkpoint")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bavos",
            "segment",
            str(write_clip(tmp_path / "v.mp4", n=2)),
            *TINY,
            "--backbone-weights",
            "none",
            "--checkpoint",
            str(tmp_path / "c.pt"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 1 and "Traceback" in proc.stderr and "not a checkpoint bavos can load" in proc.stderr


def test_ctrl_c_exits_130_with_one_line(tmp_path: Path, run_cli, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("bavos.api.segment_video", interrupted)
    result = run_cli("segment", write_clip(tmp_path / "v.mp4", n=2), *TINY, "--backbone-weights", "none", "-q")
    assert result.code == 130
    assert result.err.strip().splitlines()[-1] == "bavos: error: interrupted"


def test_bavos_alone_shows_the_help_and_exits_0(run_cli) -> None:
    result = run_cli()
    assert result.code == 0 and result.err == ""
    assert result.out.startswith("Usage: bavos [OPTIONS] COMMAND") and "segment" in result.out


@pytest.mark.parametrize("command", ["segment", "view", "eval", "train", "weights"])
def test_help_at_80_columns_has_no_type_tags_and_every_default(command: str) -> None:
    env = {**os.environ, "COLUMNS": "80"}
    proc = subprocess.run(
        [sys.executable, "-m", "bavos", command, "--help"], capture_output=True, text=True, timeout=60, env=env
    )
    assert proc.returncode == 0
    text = proc.stdout
    assert max(len(line) for line in text.splitlines()) <= 80
    for artefact in ("<bool>", "<int", "<str>", "<float>", "<path>", "<list", "{", "}"):
        assert artefact not in text, artefact
    rows = text[text.index("\n  -") :]  # every option row, over the panels
    options = [line.split()[0].rstrip(",") for line in rows.splitlines() if line.startswith("  -")]
    assert len(options) >= 2
    # every option but --help and the required ones says its default
    blocks = rows.split("\n  -")[1:]
    for block in blocks:
        if block.startswith("-help") or "-o, --output DIR" in "  -" + block and command == "train":
            continue
        assert "[default:" in block, block


def test_bad_values_stop_before_any_model_loads(
    tmp_path: Path,
    run_cli,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_model(*args: object, **kwargs: object) -> None:
        raise AssertionError("a model was loaded")

    monkeypatch.setattr("bavos.models.loading.load_models", no_model)
    video = write_clip(tmp_path / "v.mp4", n=2)
    for args, message in (
        (["--resolution", "100", "150"], "--resolution 100 150 must be a multiple of the patch"),
        (["--upsample", "cubic"], "--upsample must be bilinear or nearest"),
        (["--checkpoint", "release", "--backbone", "bavos_test_vit"], "--checkpoint release is"),
    ):
        result = run_cli("segment", video, "-o", tmp_path / "out", "--device", "cpu", *args)
        assert result.code == 2, result.err
        assert result.err.startswith("bavos: error: ") and message in result.err
        assert result.err.count("\n") == 1 and "(see 'bavos segment --help')" in result.err
    result = run_cli("segment", tmp_path / "missing.mp4", "-o", tmp_path / "out", *TINY, "--backbone-weights", "none")
    assert result.code == 1 and "no such file or folder" in result.err  # inputs too are checked first
    monkeypatch.setattr("bavos.training.train.build_backbone", no_model)
    for args, message in (  # train's were said with exit code 1 once the backbone had loaded
        (["--resolution", "64", "128"], "a frame; the losses sample 200 a frame: give at least --resolution 80 160"),
        (["--resolution", "90", "190"], "--resolution 90 190 must be a multiple of the patch size 8"),
    ):
        result = run_cli("train", tmp_path, "-o", tmp_path / "run", "--backbone-weights", "none", *args)
        assert result.code == 2 and message in result.err and result.err.count("\n") == 1, result.err
        assert not (tmp_path / "run").exists()


def test_progress_lines_in_a_log_and_nothing_when_quiet(tmp_path: Path, run_cli) -> None:
    video = write_clip(tmp_path / "v.mp4", n=6)
    result = run_cli("segment", video, "-o", tmp_path / "out", *TINY, "--backbone-weights", "none")
    assert result.code == 0
    lines = [line for line in result.err.splitlines() if line.startswith("bavos: v.mp4: ") and "estimate" not in line]
    # stderr is not a terminal here: a fast run gives one line per stage, at its end
    assert [line.split()[2] for line in lines] == ["keys", "hierarchy", "labels", "writing"]
    assert lines[0].startswith("bavos: v.mp4: keys 6/6 frames (100 %), ") and ", done in " in lines[0]
    assert re.search(r" \(decoding every frame, the backbone on the (1 key frame|\d+ key frames)\)$", lines[0])
    assert "(decoding, the backbone, attention and clusters of each window)" in lines[1]
    assert result.out.startswith(f"{tmp_path / 'out' / 'v'}: 6 frames")  # the result line, on stdout
    quiet = run_cli("segment", video, "-o", tmp_path / "out2", *TINY, "--backbone-weights", "none", "-q")
    assert quiet.out == "" and all(line.startswith("bavos: warning") for line in quiet.err.splitlines())


def test_an_interrupted_input_gets_its_own_json_line(
    tmp_path: Path,
    run_cli,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("bavos.api.segment_video", interrupted)
    video = write_clip(tmp_path / "v.mp4", n=2)
    result = run_cli(
        "segment",
        video,
        write_clip(tmp_path / "w.mp4", n=2),
        "-o",
        tmp_path / "out",
        *TINY,
        "--backbone-weights",
        "none",
        "--json",
    )
    assert result.code == 130
    line, rest = (json.loads(x) for x in result.out.splitlines())
    assert line["input"] == str(video) and line["status"] == "interrupted" and line["error"] == "interrupted"
    assert line["output"] is None and rest["output"] is None  # neither has a result
    assert (Path(rest["input"]).name, rest["status"]) == ("w.mp4", "not-run")  # the input after it: its line too


def test_the_cpu_operating_point_is_said_and_recorded(tmp_path: Path, run_cli) -> None:
    video = write_clip(tmp_path / "v.mp4", n=4, height=64, width=96)
    result = run_cli(
        "segment",
        video,
        "-o",
        tmp_path / "out",
        "--backbone",
        "bavos_test_vit",
        "--checkpoint",
        "none",
        "--backbone-weights",
        "none",
        "--device",
        "cpu",
        "--no-overlay",
    )
    assert result.code == 0, result.err
    assert (
        "bavos: on a CPU the defaults are 160x240, at most 10 key frames and every 2nd frame (the paper's key "
        "frames and every frame took 2.6x as long"
    ) in result.err
    assert "; --resolution 320 480 --max-key-frames 30 --stride 1 restores them" in result.err
    summary = json.loads((tmp_path / "out" / "v" / "summary.json").read_text())
    config = summary["config"]["SegmentConfig"]
    assert (config["resolution"], config["max_key_frames"], config["stride"]) == ([160, 240], 10, 2)
    assert summary["patch_grid"] == [20, 30] and summary["processed_frames"] == 2
    given = run_cli(
        "segment",
        video,
        "-o",
        tmp_path / "out2",
        "--backbone",
        "bavos_test_vit",
        "--checkpoint",
        "none",
        "--backbone-weights",
        "none",
        "--device",
        "cpu",
        "--no-overlay",
        "--stride",
        "1",
        "--resolution",
        "64",
        "96",
    )
    assert "on a CPU the defaults are at most 10 key frames (the paper's key frames" in given.err
    assert "; --max-key-frames 30 restores them" in given.err
    everything = run_cli(
        "segment",
        video,
        "-o",
        tmp_path / "out3",
        "--backbone",
        "bavos_test_vit",
        "--checkpoint",
        "none",
        "--backbone-weights",
        "none",
        "--device",
        "cpu",
        "--no-overlay",
        "--stride",
        "1",
        "--resolution",
        "64",
        "96",
        "--max-key-frames",
        "30",
    )
    assert everything.code == 0 and "on a CPU the defaults" not in everything.err
    size = run_cli(
        "segment",
        video,
        "-o",
        tmp_path / "out4",
        "--backbone",
        "bavos_test_vit",
        "--checkpoint",
        "none",
        "--backbone-weights",
        "none",
        "--device",
        "cpu",
        "--no-overlay",
        "--stride",
        "1",
        "--max-key-frames",
        "30",
    )
    assert (
        "on a CPU the defaults are 160x240 (the paper's 320x480 costs about 6x the backbone time and 45x the "
        "clustering time); --resolution 320 480 restores them"
    ) in size.err


def test_the_cost_is_said_first_and_what_cannot_fit_stops_before_the_work(
    tmp_path: Path,
    run_cli,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    video = write_clip(tmp_path / "v.mp4", n=6)
    result = run_cli("segment", video, "-o", tmp_path / "out", *TINY, "--backbone-weights", "none", "--no-overlay")
    assert result.code == 0
    (line,) = [x for x in result.err.splitlines() if "estimated" in x]
    assert line.startswith("bavos: v.mp4: estimated ") and "at 64x96 on cpu (backbone" in line and "peak memory" in line
    assert result.err.index("estimated") < result.err.index(": keys ")  # said before it is paid

    def no_work(*args: object, **kwargs: object) -> None:
        raise AssertionError("the work started")

    monkeypatch.setattr("bavos.models.costs.available_bytes", lambda device: 1024)
    monkeypatch.setattr("bavos.api.segment_video", no_work)
    result = run_cli("segment", video, "-o", tmp_path / "out2", *TINY, "--backbone-weights", "none", "--json")
    assert result.code == 1
    (failed,) = [json.loads(x) for x in result.out.splitlines()]
    assert failed["status"] == "failed" and "more memory, this machine has 0.0 GB free" in failed["error"]
    for option in ("--resolution", "--max-key-frames", "--stride", "--batch-size"):
        assert option in failed["error"]


def test_a_long_estimate_names_the_options_that_bring_it_down(
    tmp_path: Path,
    run_cli,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    video = write_clip(tmp_path / "v.mp4", n=6)
    monkeypatch.setattr("bavos.cli.segment.SAY_FASTER_SECONDS", 0)  # as if it would take long
    result = run_cli("segment", video, "-o", tmp_path / "out", *TINY, "--backbone-weights", "none", "--no-overlay")
    assert result.code == 0, result.err
    (line,) = [x for x in result.err.splitlines() if "faster" in x]
    assert line.startswith("bavos: v.mp4: faster, with less detail: --stride 2 (about ")
    assert "--max-key-frames 15 (about " in line and "--resolution 48 72 (about " in line
    assert result.err.index("estimated") < result.err.index("faster") < result.err.index(": keys ")
    monkeypatch.setattr("bavos.cli.segment.SAY_FASTER_SECONDS", 10**9)
    quiet = run_cli("segment", video, "-o", tmp_path / "out2", *TINY, "--backbone-weights", "none", "--no-overlay")
    assert "faster" not in quiet.err


@pytest.mark.parametrize("burst", [None, "SIGINT"])
def test_sigterm_removes_the_temporary_files(tmp_path: Path, burst: str | None) -> None:
    """A SIGTERM; and (a field report) Ctrl-C held down, 30 SIGINTs, which broke off the way out: the temporary
    folder stayed and a traceback was printed."""
    import signal
    import time

    video = write_clip(tmp_path / "long.mp4", n=240, height=48, width=64)
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bavos",
            "segment",
            str(video),
            str(write_clip(tmp_path / "next.mp4", n=2)),
            "-o",
            str(out),
            *TINY,
            "--backbone-weights",
            "none",
            "-q",
            "--json",
        ],
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # not ignored as in a background job
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not list(out.glob(".bavos-work-*/.bavos-level0-*")) and time.monotonic() < deadline:
        time.sleep(0.05)  # until the hierarchy pass has begun
    if burst is None:
        proc.send_signal(signal.SIGTERM)
    else:
        for _ in range(30):
            proc.send_signal(signal.SIGINT)
            time.sleep(0.01)
    stdout, err = proc.communicate(timeout=120)
    code, why = (143, "terminated") if burst is None else (130, "interrupted")
    assert proc.returncode == code, err
    assert err.strip().splitlines() == [f"bavos: error: {why}"]  # no traceback
    line, rest = (json.loads(x) for x in stdout.splitlines())  # a scheduler's time limit, told from a Ctrl-C
    assert (line["status"], line["error"]) == ("interrupted", why)
    assert (Path(rest["input"]).name, rest["status"], rest["error"]) == (
        "next.mp4",
        "not-run",
        f"{why} before it started",
    )
    assert not out.exists()  # no work folder, no half-written result, not even the folder the run created


def test_a_run_started_with_sigint_ignored_keeps_ignoring_it(tmp_path: Path) -> None:
    """A shell starts its background jobs (``bavos segment … &`` in a script) with SIGINT ignored, so that a Ctrl-C
    meant for the script's foreground does not stop them: bavos leaves it so."""
    import signal
    import time

    out = tmp_path / "out"
    command = [sys.executable, "-m", "bavos", "segment", str(write_clip(tmp_path / "v.mp4", n=24, height=48, width=64))]
    proc = subprocess.Popen(
        [*command, "-o", str(out), *TINY, "--backbone-weights", "none", "-q"],
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not list(out.glob(".bavos-work-*")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0 and (out / "v" / "summary.json").is_file(), err


def test_a_torchvision_built_for_another_torch_is_named(
    tmp_path: Path,
    run_cli,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def mismatched(*args: object, **kwargs: object) -> None:
        raise RuntimeError("operator torchvision::nms does not exist")

    monkeypatch.setattr("bavos.api.segment_video", mismatched)
    result = run_cli(
        "segment",
        write_clip(tmp_path / "v.mp4", n=2),
        "-o",
        tmp_path / "out",
        *TINY,
        "--backbone-weights",
        "none",
        "-q",
    )
    assert result.code == 1
    (line,) = [x for x in result.err.splitlines() if x.startswith("bavos: error:")]  # (the random-weights warning)
    assert line.startswith("bavos: error: torch and torchvision do not match") and "same index" in line


def test_an_estimate_the_run_revises_much_is_said_again(
    tmp_path: Path,
    run_cli,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The run refines its estimate with its clusters (after the first window, after the hierarchy, after the labels
    pass's first window of two); one that moved the total by more than 1.25x either way is said, once per move."""
    import bavos.pipeline.segment as seg

    real = seg.estimate_cost
    calls = []

    def slower(*args, **kwargs):
        estimate = real(*args, **kwargs)
        calls.append(estimate)
        if len(calls) == 1:  # the first estimate, said before the run
            return estimate
        return replace(estimate, seconds={k: 3 * v for k, v in estimate.seconds.items()})

    monkeypatch.setattr(seg, "estimate_cost", slower)
    monkeypatch.setattr(seg, "run_pace", lambda *args: seg.Pace())  # the tiny run's own pace aside
    video = write_clip(tmp_path / "v.mp4", n=6)
    result = run_cli("segment", video, "-o", tmp_path / "out", *TINY, "--backbone-weights", "none", "--no-overlay")
    assert result.code == 0 and len(calls) == 4
    revised = [x for x in result.err.splitlines() if "revised estimate" in x]
    assert len(revised) == 1, result.err  # the second refinement is as far from the first as the first said
    assert re.match(
        r"bavos: v\.mp4: the first window's \d+ clusters?: revised estimate .+ in all \(backbone ", revised[0]
    )
