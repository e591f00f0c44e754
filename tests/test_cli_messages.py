"""Messages that say what to do: mistakes a newcomer makes, each answered in one line, before anything loads."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import TINY, write_clip

QUIET = [*TINY, "--backbone-weights", "none", "-q"]


@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [
        ("--checkpoint", "relase", "--checkpoint relase: no such file; did you mean 'release'?"),
        ("--backbone-weights", "nnone", "--backbone-weights nnone: no such file; did you mean 'none'?"),
        ("--checkpoint", "gone.pt", "--checkpoint gone.pt: no such file; give a file or one of: release, none"),
    ],
)
def test_weights_names_get_suggestions(
    tmp_path: Path, run_cli: Callable, option: str, value: str, expected: str
) -> None:
    clip = write_clip(tmp_path / "c.mp4", n=2)
    r = run_cli("segment", clip, "-o", tmp_path / "out", "--device", "cpu", option, value)
    assert r.code == 2 and r.err.strip() == f"bavos: error: {expected} (see 'bavos segment --help')"
    assert not (tmp_path / "out").exists()


def test_range_mistakes_are_said_before_torch_loads(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "c.mp4", n=2)
    code = (
        "import sys; from bavos.cli import main\n"
        f"try: main(['segment', {str(clip)!r}, '--start', '5s', '--end', '2s'])\n"
        "except SystemExit as e: print(e.code, 'torch' in sys.modules)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.stdout.split() == ["2", "False"] and "--end 2s must come after --start 5s" in proc.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        # a trial: --end 0 was "no frame in the range" (exit 1, after the probe) where --start 0 --end 0 was exit 2
        (["--end", "0"], "--end 0 takes no frame: the range ends before the first frame"),
        (["--start", "3", "--end", "0s"], "--end 0s takes no frame: the range ends before the first frame"),
        (["--start", "nans"], "--start nans: give a frame number (120) or a time in seconds (12.5s)"),
        (["--end", "infs"], "--end infs: give a frame number (120) or a time in seconds (12.5s)"),
        # --fps inf and 1e-9 ran the whole video and failed writing the overlay (exit 1, an internal error)
        (["--fps", "inf"], "--fps must be from 0.001 to 1000000 frames per second, got inf"),
        (["--fps", "1e-9"], "--fps must be from 0.001 to 1000000 frames per second, got 1e-09"),
        (["--fps", "1e10"], "--fps must be from 0.001 to 1000000 frames per second, got 1e+10"),
    ],
)
def test_values_that_cannot_work_are_usage_errors(
    tmp_path: Path, run_cli: Callable, args: list[str], expected: str
) -> None:
    clip = write_clip(tmp_path / "c.mp4", n=2)
    r = run_cli("segment", clip, "-o", tmp_path / "out", *QUIET, *args)
    assert r.code == 2 and r.err.strip() == f"bavos: error: {expected} (see 'bavos segment --help')"
    assert not (tmp_path / "out").exists()


def test_a_result_without_objects_says_what_to_try(tmp_path: Path, run_cli: Callable) -> None:
    """A trial: a checkpoint trained for two steps gave "0 objects" (levels of 10 and 1 clusters) and nothing more."""
    from bavos.cli.output import no_object_hint

    clip = write_clip(tmp_path / "c.mp4", n=6)
    r = run_cli("segment", clip, "-o", tmp_path / "out", *TINY, "--backbone-weights", "none", "--tau", "1000")
    out = tmp_path / "out" / "c"
    summary = json.loads((out / "summary.json").read_text())
    assert r.code == 0 and f"{out}: 6 frames, 0 objects" in r.out and summary["level_sizes"][-1] == 1
    assert r.err.strip().endswith(no_object_hint(summary))
    assert "no object" not in run_cli("segment", clip, "-o", tmp_path / "q", *QUIET, "--tau", "1000").err
    summary = {"objects": 0, "level_sizes": [10, 1], "level": 1, "output": "o/c", "capped_to": None}
    assert no_object_hint(summary) == (
        "o/c: no object: one cluster covers every frame at level 1 (the levels hold 10, 1 clusters): "
        "`bavos recut o/c --level 0` cuts finer, a lower --tau merges less"
    )
    assert no_object_hint({**summary, "capped_to": 1}) is None  # --max-objects 1 asked for it
    assert no_object_hint({**summary, "objects": 3}) is None


def test_a_folder_of_videos_names_them(tmp_path: Path, run_cli: Callable) -> None:
    clips = tmp_path / "clips"
    clips.mkdir()
    write_clip(clips / "a.mp4", n=2)
    write_clip(clips / "b.mp4", n=2)
    r = run_cli("segment", clips, "-o", tmp_path / "out", *QUIET)
    assert r.code == 1
    assert (
        r.err.strip() == f"bavos: error: {clips}: a folder of 2 videos, not of frames: pass the videos ({clips}/*.mp4)"
    )


def test_a_folder_of_sequence_folders_names_them(tmp_path: Path, run_cli: Callable) -> None:
    """A trial (after sam2#762): DAVIS's JPEGImages/480p, a folder of sequence folders, was only "folder holds no
    frames"."""
    from PIL import Image

    root = tmp_path / "480p"
    for name in ("bear", "car"):
        (root / name).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(root / name / "00000.jpg")
    r = run_cli("segment", root, "-o", tmp_path / "out", *QUIET)
    assert r.code == 1
    assert (
        r.err.strip() == f"bavos: error: {root}: a folder of 2 folders of frames, not of frames: pass them ({root}/*)"
    )


def test_recut_and_view_answer_a_path_that_is_no_result_alike(tmp_path: Path, run_cli: Callable) -> None:
    """A trial: recut said "not a finished bavos output (no readable summary.json)" for a missing path and for the
    result's summary.json named instead of its folder, and gave exit 1 where view gave 2 for the same mistake."""
    for name in ("a", "b"):
        assert run_cli("segment", write_clip(tmp_path / f"{name}.mp4", n=3), "-o", tmp_path / "out", *QUIET).code == 0
    out = tmp_path / "out"
    for path, said in (
        (out, f"{out}: holds 2 results (a, b), not one: pass {out}/* or one of them"),
        (tmp_path / "nope", f"{tmp_path / 'nope'}: no such folder"),
        (
            out / "a" / "summary.json",
            f"{out / 'a' / 'summary.json'}: a file, not a result folder: pass the folder that holds it ({out / 'a'})",
        ),
        (tmp_path / "a.mp4", f"{tmp_path / 'a.mp4'}: a file, not a result folder"),
    ):
        r = run_cli("recut", path, "-q")
        assert (r.code, r.err.strip()) == (2, f"bavos: error: {said}")
        pytest.importorskip("starlette")
        r = run_cli("view", path, "--no-browser")
        assert (r.code, r.err.strip()) == (2, f"bavos: error: {said} (see 'bavos view --help')")


def test_recut_shows_the_traceback_in_debug_mode(
    tmp_path: Path, run_cli: Callable, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BAVOS_DEBUG", "1")
    (tmp_path / "empty").mkdir()
    r = run_cli("recut", tmp_path / "empty", "-q")
    assert r.code == 1 and "Traceback (most recent call last)" in r.err and "not a finished bavos output" in r.err


def test_exports_of_a_result_without_objects_say_so(tmp_path: Path, run_cli: Callable) -> None:
    clip = write_clip(tmp_path / "c.mp4", n=3)
    r = run_cli(
        "segment",
        clip,
        "-o",
        tmp_path / "out",
        *TINY,
        "--backbone-weights",
        "none",
        "--max-objects",
        "1",
        "--export",
        "objects",
        "--json",
    )
    assert r.code == 0, r.err
    line = json.loads(r.out)
    assert line["objects"] == 0 and (tmp_path / "out" / "c" / "objects").is_dir()
    assert line["warnings"] == [
        "--export objects: this result has no object, so the exports hold none (a lower --tau "
        "or another --level gives more clusters)"
    ]


def test_a_torchvision_mismatch_keeps_the_users_build(monkeypatch: pytest.MonkeyPatch) -> None:
    import types

    from bavos.cli import torchvision_fix

    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(__version__="2.5.1+cpu"))
    assert torchvision_fix().endswith(
        "pip install --force-reinstall torch==2.5.1 torchvision --index-url https://download.pytorch.org/whl/cpu"
    )
    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(__version__="2.5.1"))
    assert torchvision_fix().endswith("pip install --force-reinstall torch==2.5.1 torchvision")


@pytest.mark.parametrize(
    ("command", "given", "got"),
    [
        ("segment", ["96", "-o", "out"], "96 -o"),  # the second number missing: the next option taken for it
        ("segment", ["96x144"], "96x144"),
        ("segment", [], "nothing"),
        ("train", ["96"], "96"),
    ],
)
def test_resolution_mistakes_show_the_form(run_cli: Callable, command: str, given: list[str], got: str) -> None:
    r = run_cli(command, "x.mp4", *(["--resolution", *given] if given or command == "train" else ["--resolution"]))
    assert r.code == 2
    assert r.err.strip() == (
        f"bavos: error: --resolution takes two whole numbers, height and width, separated by a "
        f"space: --resolution 96 144 (got {got}) (see 'bavos {command} --help')"
    )


def test_objects_export_is_counted_and_bounded(tmp_path: Path, run_cli: Callable, sharp_weights: Path) -> None:
    """--export objects writes one PNG per object per frame: said before writing; over --max-export-files the
    segmentation keeps its work (the rest is written, a warning names the recut), and recut refuses before writing."""
    clip = write_clip(tmp_path / "c.mp4", n=6, height=48, width=64)
    args = [*TINY, "--backbone-weights", sharp_weights, "--tau", "0.2", "--export", "objects"]
    r = run_cli("segment", clip, "-o", tmp_path / "out", *args, "--max-export-files", "5")
    assert r.code == 0, r.err
    result = tmp_path / "out" / "c"
    summary = json.loads((result / "summary.json").read_text())
    objects = summary["objects"]
    files = objects * 6
    assert objects > 1 and not (result / "objects").exists()
    warning = next(w for w in summary["warnings"] if w.startswith("--export objects"))
    assert warning.startswith(f"--export objects would write {files} PNGs ({objects} objects x 6 frames, about ")
    assert warning.endswith(
        f"more than --max-export-files 5: they were not written; to write them: bavos recut "
        f"{result} --max-export-files {files}"
    )
    assert warning in r.err
    before = sorted(p.name for p in result.iterdir())
    r = run_cli("recut", result, "--max-export-files", "5", "-q")  # a recut refuses: nothing is lost by waiting
    assert r.code == 2 and "more than --max-export-files 5: pass --max-export-files" in r.err
    assert sorted(p.name for p in result.iterdir()) == before
    r = run_cli("recut", result, "--max-export-files", str(files))
    assert r.code == 0, r.err
    assert len(list((result / "objects").rglob("*.png"))) == files
    r = run_cli("segment", clip, "-o", tmp_path / "out2", *args[:-2], "-q", "--export", "objects")
    assert r.code == 0 and len(list((tmp_path / "out2" / "c" / "objects").rglob("*.png"))) == files
    cuts = [
        (["--max-objects", "0"], "bavos recut"),  # a cut recut gives: named with its cap
        (["--level", "0", "--max-objects", "3"], "bavos segment"),  # a cap of a level without centroids kept
        (["--no-hierarchy"], "bavos segment"),  # nothing for recut to read
    ]
    for cut, command in cuts:
        out = tmp_path / ("out" + "".join(cut))
        r = run_cli("segment", clip, "-o", out, *args, "--max-export-files", "2", *cut)
        made = json.loads((out / "c" / "summary.json").read_text())
        named = r.err.split("to write them: ")[1].splitlines()[0]
        assert named.startswith(command) and named.endswith(f" --max-export-files {6 * made['objects']}"), named
        assert all(option in named for option in cut), named
        r = run_cli(*shlex.split(named)[1:])
        assert r.code == 0, r.err
        again = json.loads((out / "c" / "summary.json").read_text())
        assert (again["objects"], again["level"]) == (made["objects"], made["level"])
        assert len(list((out / "c" / "objects").rglob("*.png"))) == 6 * made["objects"]


def test_weightless_mode_shows_clusters_labelled_meaningless(
    tmp_path: Path, run_cli: Callable, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--checkpoint none --backbone-weights none: sharpened random attention forms clusters (unsharpened: one, so 0
    objects), and stderr, summary.json and preview.png's title say that the masks mean nothing."""
    import bavos.pipeline.outputs as outputs

    titles = []
    real = outputs.save_preview
    monkeypatch.setattr(outputs, "save_preview", lambda path, title, *a: (titles.append(title), real(path, title, *a)))
    clip = write_clip(tmp_path / "c.mp4", n=8, height=64, width=96)
    r = run_cli("segment", clip, "-o", tmp_path / "out", *TINY, "--backbone-weights", "none")
    assert r.code == 0, r.err
    assert "bavos: warning: --backbone-weights none: the backbone has random weights; masks are meaningless" in r.err
    summary = json.loads((tmp_path / "out" / "c" / "summary.json").read_text())
    assert summary["objects"] >= 2 and summary["level_sizes"][-1] >= 3
    note = "RANDOM WEIGHTS: meaningless masks (they show the pipeline at work, not objects)"
    assert summary["weights"]["note"] == note and titles[-1].endswith(f" - {note}")
    r = run_cli("recut", tmp_path / "out" / "c", "--max-objects", "2", "-q")  # a re-cut keeps the label
    assert r.code == 0 and titles[-1].endswith(f" - {note}")


def test_the_caches_auto_plans_are_said_in_the_estimate(
    tmp_path: Path, run_cli: Callable, monkeypatch: pytest.MonkeyPatch
) -> None:
    clip = write_clip(tmp_path / "c.mp4", n=4)

    def estimate(out: str, *extra: str) -> str:
        r = run_cli("segment", clip, "-o", tmp_path / out, *TINY, "--backbone-weights", "none", "--no-overlay", *extra)
        assert r.code == 0, r.err
        return next(line for line in r.err.splitlines() if "estimated" in line)

    said = estimate("a")  # a short clip's rows are kept: no attention computed again, no queries needed
    assert re.search(r", peak memory [\d.]+ GB, attention kept: \d+ [kM]B$", said), said
    said = estimate("b", "--attention-cache", "0")  # asked for none: said of the queries only (the backbone runs once)
    assert re.search(r", peak memory [\d.]+ GB, queries kept on disk: \d+ [kM]B$", said), said
    monkeypatch.setattr("bavos.models.costs.AUTO_ATTENTION_CAP", 1)  # no room for the rows: their size is said
    said = estimate("c")
    assert re.search(r", attention recomputed: the video's takes \d+ [kM]B, queries kept on disk: \d+ [kM]B$", said), (
        said
    )
    for option in ("--query-cache", "--attention-cache"):
        for value, said in (("lots", "lots"), ("", "nothing")):
            r = run_cli("segment", clip, "-o", tmp_path / "out", *TINY, option, value)
            assert r.code == 2 and r.err.strip() == (
                f"bavos: error: {option} must be auto or a whole number of MB, got {said} (see 'bavos segment --help')"
            )
