"""bavos recut: another cut of a finished result, without the model, equal to bavos segment with those options."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY, EncoderInputs, comparable, on, write_clip

FILES = ("hierarchy.npz", "overlay.mp4", "hierarchy.png", "preview.png", "coco.json", "masks.mp4")


def tree(folder: Path) -> dict[str, object]:
    """Each file's content as two runs must give it (``conftest.comparable``: a video's frame count and size, x264's
    bitstream varying for the same frames; ``conftest.EncoderInputs`` compares what the videos were made of)."""
    return {str(p.relative_to(folder)): comparable(p) for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_clip(tmp_path_factory.mktemp("v") / "clip.mp4", n=9, height=48, width=64)


@pytest.fixture(scope="module")
def args(sharp_weights: Path, device: str) -> list[str]:
    """Peaked attention: 58, 34 and 33 clusters at levels 0, 1, 2 (the converged level) on ``video`` (on the CPU)."""
    return [
        *on(device, TINY),
        "--backbone-weights",
        str(sharp_weights),
        "--tau",
        "0.2",
        "--export",
        "coco",
        "--export",
        "objects",
        "--export",
        "video",
        "-q",
    ]


@pytest.mark.parametrize(("level", "cap"), [(None, "5"), (None, "0"), ("1", "0"), ("0", "0")])
def test_recut_is_byte_identical_to_segment_with_those_options(
    tmp_path: Path,
    run_cli,
    video: Path,
    args: list[str],
    level: str | None,
    cap: str,
    encoder_inputs: EncoderInputs,
) -> None:
    first = run_cli("segment", video, "-o", tmp_path / "a", *args)  # the defaults: converged level, 20 objects
    assert first.code == 0, first.err
    encoder_inputs.take()
    options = (["--level", level] if level is not None else []) + ["--max-objects", cap]
    redone = run_cli("recut", tmp_path / "a" / "clip", *options, "-q")
    assert redone.code == 0, redone.err
    made = encoder_inputs.take()
    fresh = run_cli("segment", video, "-o", tmp_path / "b", *args, *options)
    assert fresh.code == 0, fresh.err
    got, want = tree(tmp_path / "a" / "clip"), tree(tmp_path / "b" / "clip")
    assert sorted(got) == sorted(want)
    for name in want:
        if name != "summary.json":
            # masks, objects, overlay, pictures, hierarchy, exports; the videos' frame count and size
            assert got[name] == want[name], name
    assert made == encoder_inputs.take() and sorted(made) == ["masks.mp4", "overlay.mp4"]  # the videos' frames
    a, b = (json.loads((tmp_path / side / "clip" / "summary.json").read_text()) for side in "ab")
    for key in ("objects", "object_stats", "level", "level_sizes", "capped_from", "settings", "config", "frames"):
        assert a[key] == b[key], key
    assert "recut" in a["timings"] and (a["level_sizes"][:3] == [58, 34, 33] or a["device"] != "cpu")
    assert a["capped_from"] == (2 if cap == "5" else None)
    assert not list((tmp_path / "a").glob(".*"))  # no temporary folder left


def test_every_level_a_summary_names_is_one_recut_takes(
    tmp_path: Path,
    run_cli,
    video: Path,
    args: list[str],
) -> None:
    assert run_cli("segment", video, "-o", tmp_path, *args, "--max-objects", "5").code == 0
    summary = json.loads((tmp_path / "clip" / "summary.json").read_text())
    assert (summary["level"], summary["converged_level"], summary["capped_from"], summary["capped_to"]) == (2, 2, 2, 5)
    assert summary["level_sizes"] == [58, 34, 33]  # the real levels; the cap is not one
    named = {summary["level"], summary["converged_level"], summary["capped_from"], len(summary["level_sizes"]) - 1}
    for level in named:
        result = run_cli("recut", tmp_path / "clip", "--level", str(level), "-q")
        assert result.code == 0, result.err
        assert json.loads((tmp_path / "clip" / "summary.json").read_text())["level"] == level


def test_a_recut_keeps_no_stale_warning(tmp_path: Path, run_cli, video: Path, args: list[str]) -> None:
    assert run_cli("segment", video, "-o", tmp_path, *args, "--level", "99", "--max-objects", "0").code == 0
    before = json.loads((tmp_path / "clip" / "summary.json").read_text())["warnings"]
    assert before == ["--level 99 does not exist: this video's hierarchy has levels 0..2; cut at the top level, 2"]
    assert run_cli("recut", tmp_path / "clip", "--level", "0", "--max-objects", "0", "-q").code == 0
    assert json.loads((tmp_path / "clip" / "summary.json").read_text())["warnings"] == []  # level 0 exists


def test_recut_errors(tmp_path: Path, run_cli, video: Path, args: list[str]) -> None:
    assert run_cli("segment", video, "-o", tmp_path, *args).code == 0
    converged = json.loads((tmp_path / "clip" / "summary.json").read_text())["converged_level"]
    result = run_cli("recut", tmp_path / "clip", "--level", str(converged + 1))  # bad usage: exit 2, as in segment
    assert result.code == 2 and f"--level {converged + 1} does not exist" in result.err
    result = run_cli("recut", tmp_path / "nothing")
    assert result.code == 2 and "nothing: no such folder" in result.err  # a usage error, as in view
    (tmp_path / "empty").mkdir()
    result = run_cli("recut", tmp_path / "empty")
    assert result.code == 1 and "not a finished bavos output" in result.err
    for level in ("0", "1"):  # only the converged level's centroids are kept
        result = run_cli("recut", tmp_path / "clip", "--level", level, "--max-objects", "2")
        assert result.code == 2 and f"capping level {level} needs its centroids" in result.err
        assert f"--max-objects 0 gives level {level} uncapped without the model, or run bavos segment " in result.err
        assert result.err.strip().endswith(f"--level {level} --max-objects 2")
    assert run_cli("recut", tmp_path / "clip", "--max-objects", "-1").code == 2


def test_the_segment_command_recut_names_makes_the_result_with_its_settings(
    tmp_path: Path, run_cli, video: Path, args: list[str]
) -> None:
    """Where recut cannot make a cut, it names the `bavos segment` that does: with the weights, resolution, tau,
    exports... the result was made with (a command without them would fail offline, or make another result)."""
    assert run_cli("segment", video, "-o", tmp_path / "a", *args, "--end", "7", "--overlay-alpha", "0.3").code == 0
    result = run_cli("recut", tmp_path / "a" / "clip", "--level", "0", "--max-objects", "2")
    assert result.code == 2
    command = shlex.split(result.err.strip().split(", or run ")[1])
    assert command[:3] == ["bavos", "segment", str(video)] and command[3:5] == ["-o", str(tmp_path / "a")]
    assert "--device" not in command and "--batch-size" not in command  # how it ran, not what it is
    command[4] = str(tmp_path / "b")
    assert run_cli(*command[1:], "-q").code == 0
    first, made = (json.loads((tmp_path / side / "clip" / "summary.json").read_text()) for side in "ab")
    for key in ("settings", "weights"):
        assert made[key] == {**first[key], **({"level": 0, "max_objects": 2} if key == "settings" else {})}, key
    assert made["frames"] == 7 and made["capped_to"] == 2 and made["level"] == 0


def test_hierarchy_npz_holds_what_recut_needs(
    tmp_path: Path,
    run_cli,
    video: Path,
    args: list[str],
) -> None:
    assert run_cli("segment", video, "-o", tmp_path, *args, "--max-objects", "3").code == 0
    with np.load(tmp_path / "clip" / "hierarchy.npz") as z:
        sizes = z["sizes"].tolist()
        assert z["labels"].shape == (len(sizes), 9, 96) and z["labels"].dtype == np.uint16
        assert z["parent_offsets"][-1] == len(z["parents"]) == sum(sizes[:-1])
        assert np.diff(z["area_offsets"]).tolist() == sizes
        for level, (a, b) in enumerate(zip(z["area_offsets"][:-1], z["area_offsets"][1:], strict=True)):
            assert (
                z["areas"][a:b].sum() == 9 * 96
                and z["areas"][a:b].tolist() == np.bincount(z["labels"][level].ravel(), minlength=sizes[level]).tolist()
            )
        converged = int(z["converged"])
        assert converged == 2 and int(z["capped_from"]) == 2 and sizes[-1] == 3
        assert z["centroids"].shape[0] == sizes[converged]  # the converged level's only


def test_a_hierarchy_converged_at_level_0_is_capped_by_recut_as_by_segment(
    tmp_path: Path,
    run_cli,
    sharp_weights: Path,
    encoder_inputs: EncoderInputs,
) -> None:
    """Every cut segment can make, recut can make: one window and a tiny tau merge nothing, so the hierarchy
    converges at level 0, and its cap needs level 0's centroids."""
    video = write_clip(tmp_path / "clip.mp4", n=3, height=48, width=64)
    args = [*TINY, "--backbone-weights", str(sharp_weights), "--tau", "0.0001", "-q"]
    first = run_cli("segment", video, "-o", tmp_path / "a", *args, "--max-objects", "0")
    assert first.code == 0, first.err
    assert json.loads((tmp_path / "a" / "clip" / "summary.json").read_text())["converged_level"] == 0
    encoder_inputs.take()
    redone = run_cli("recut", tmp_path / "a" / "clip", "--max-objects", "3")
    assert redone.code == 0, redone.err
    made = encoder_inputs.take()
    fresh = run_cli("segment", video, "-o", tmp_path / "b", *args, "--max-objects", "3")
    assert fresh.code == 0, fresh.err
    got, want = tree(tmp_path / "a" / "clip"), tree(tmp_path / "b" / "clip")
    assert sorted(got) == sorted(want)
    assert json.loads((tmp_path / "a" / "clip" / "summary.json").read_text())["capped_to"] == 3
    assert all(got[name] == want[name] for name in want if name != "summary.json")
    assert made == encoder_inputs.take() and list(made) == ["overlay.mp4"]


def test_the_segment_command_named_for_a_renamed_result_writes_it_again(tmp_path: Path, run_cli) -> None:
    """For a result renamed or saved under a name, recut named `bavos segment SRC -o out`, which writes out/<stem>,
    another result (replacing it); --name writes the named one."""
    from bavos.pipeline.outputs import segment_command

    summary = {"source": str(tmp_path / "clip.mp4"), "config": {}}
    assert (
        segment_command(summary, tmp_path / "out" / "clip")
        == f"bavos segment {tmp_path / 'clip.mp4'} -o {tmp_path / 'out'}"
    )
    assert segment_command(summary, tmp_path / "out" / "cap4").endswith(f"-o {tmp_path / 'out'} --name cap4")
    video = write_clip(tmp_path / "clip.mp4", n=3)
    made = run_cli(
        "segment", video, "-o", tmp_path / "out", "--name", "cap4", *TINY, "--backbone-weights", "none", "-q"
    )
    assert made.code == 0, made.err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["cap4"]
    for args, said in (
        ([video, video.with_name("b.mp4"), "--name", "x"], "--name names one result; 2 inputs were given"),
        ([video, "--name", "../x"], "--name '../x': a plain folder name is needed"),
        (
            [video, "--export", "coco", "objects"],
            "objects: no such file or folder; --export takes one kind each time: --export coco --export objects",
        ),
    ):
        r = run_cli("segment", *args, "-o", tmp_path / "out", *TINY, "--backbone-weights", "none")
        assert r.code == 2 and said in r.err, r.err
    r = run_cli("recut", tmp_path / "out" / "cap4", "--max-export-files", "-3")  # exit code 1
    assert r.code == 2 and "--max-export-files must be 0 (no limit) or more, got -3" in r.err
