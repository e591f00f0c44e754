"""bavos from Python: Segmenter on a path, an array and an iterable; nothing written unless saved; re-cuts."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import clip_frames, write_clip
from PIL import Image
from test_io_owners import dead_pid

import bavos
from bavos.errors import InputError


@pytest.fixture(scope="module")
def segmenter(sharp_weights: Path, device: str) -> bavos.Segmenter:
    return bavos.Segmenter.from_checkpoint(
        "none",
        backbone="bavos_test_vit",
        backbone_weights=str(sharp_weights),
        device=device,
        resolution=(64, 96),
        key_ratio=4,
        stride=1,
        max_key_frames=30,
    )


def test_a_path_an_array_and_an_iterable_give_the_same_masks(tmp_path: Path, segmenter: bavos.Segmenter) -> None:
    frames = clip_frames(7, 48, 64)
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, image in enumerate(frames):
        Image.fromarray(image).save(folder / f"{i:05d}.png")
    before = set(tmp_path.rglob("*"))
    results = [segmenter(folder), segmenter(np.stack(frames)), segmenter(iter(frames))]
    assert set(tmp_path.rglob("*")) == before  # nothing written next to the input
    masks = [r.masks for r in results]
    assert masks[0].shape == (7, 48, 64) and masks[0].dtype == np.uint8
    for other in masks[1:]:
        np.testing.assert_array_equal(other, masks[0])
    np.testing.assert_array_equal(np.stack(list(results[0].iter_masks())), masks[0])
    assert results[0].labels.shape == (7, 8, 12) and results[0].frames == 7
    for r in results:
        r.close()
        r.close()  # a second close does nothing


def test_the_work_folder_lives_with_the_result(tmp_path: Path, segmenter: bavos.Segmenter) -> None:
    with segmenter(np.stack(clip_frames(5, 48, 64)), workdir=tmp_path) as result:
        (work,) = tmp_path.iterdir()
        assert work.name.startswith(".bavos-work-") and any(work.iterdir())
        _ = result.masks
    assert not list(tmp_path.iterdir())
    with pytest.raises(InputError, match="uint8"):
        segmenter(np.zeros((3, 48, 64, 3), dtype=np.float32), workdir=tmp_path)
    with pytest.raises(InputError, match="no frames"):
        segmenter(iter([]), workdir=tmp_path)
    assert not list(tmp_path.iterdir())  # a failed call leaves nothing either


def test_save_writes_what_the_command_writes(
    tmp_path: Path,
    segmenter: bavos.Segmenter,
    run_cli,
    sharp_weights: Path,
    device: str,
) -> None:
    video = write_clip(tmp_path / "v.mp4", n=6, height=48, width=64)
    with segmenter(video) as result:
        summary = result.save(tmp_path / "api" / "v")
    assert summary["frames"] == 6
    cli = run_cli(
        "segment",
        video,
        "-o",
        tmp_path / "cli",
        "--backbone",
        "bavos_test_vit",
        "--checkpoint",
        "none",
        "--backbone-weights",
        sharp_weights,
        "--resolution",
        "64",
        "96",
        "--key-ratio",
        "4",
        "--device",
        device,
        "--stride",
        "1",
        "--max-key-frames",
        "30",
        "-q",
    )
    assert cli.code == 0, cli.err
    got = sorted(p.relative_to(tmp_path / "api") for p in (tmp_path / "api").rglob("*"))
    want = sorted(p.relative_to(tmp_path / "cli") for p in (tmp_path / "cli").rglob("*"))
    assert got == want
    for name in (tmp_path / "cli" / "v" / "masks").iterdir():
        assert (tmp_path / "api" / "v" / "masks" / name.name).read_bytes() == name.read_bytes()


def test_recut_equals_segmenting_with_those_options(segmenter: bavos.Segmenter) -> None:
    frames = np.stack(clip_frames(6, 48, 64))
    with segmenter(frames) as result:
        assert result.hierarchy.level == result.hierarchy.converged and len(result.hierarchy.sizes) >= 2
        for level, cap in ((0, 0), (None, 1)):
            again = result.hierarchy.recut(level=level, max_objects=cap)
            fresh = bavos.Segmenter(segmenter.models, replace(segmenter.config, level=level, max_objects=cap))
            with fresh(frames) as want:
                np.testing.assert_array_equal(again.masks, want.masks)
                assert again.hierarchy.level == want.hierarchy.level
            again.close()  # a re-cut shares its parent's files: closing it removes nothing
        assert result.masks.shape == (6, 48, 64)


def test_a_closed_result_says_so(segmenter: bavos.Segmenter) -> None:
    frames = np.stack(clip_frames(4, 48, 64))
    with segmenter(frames) as result:
        inside = result.masks
    assert inside.shape == (4, 48, 64)
    with pytest.raises(bavos.BavosError, match="this result is closed"):
        result.masks  # noqa: B018 - the property is what a user reads
    with pytest.raises(bavos.BavosError, match="this result is closed"):
        result.hierarchy.recut(max_objects=2)  # it returned a result, which failed only when read
    with segmenter(frames) as result:  # a cut of a cut shares the first result's files, not the cut's
        first = result.hierarchy.recut(max_objects=3)
        second = first.hierarchy.recut(max_objects=2)
        first.close()  # closes the cut alone
        assert second.masks.shape == (4, 48, 64) and result.masks.shape == (4, 48, 64)
        with pytest.raises(bavos.BavosError, match="this result is closed"):
            first.masks  # noqa: B018
    with pytest.raises(bavos.BavosError, match="this result is closed"):
        second.masks  # noqa: B018 - it read the closed files ("I/O operation on closed file")


def test_an_unknown_option_names_the_closest() -> None:
    from bavos.errors import ConfigError

    with pytest.raises(ConfigError, match=r"Segmenter: no option 'taux'; did you mean 'tau'\? \(the options: "):
        bavos.Segmenter.from_checkpoint(checkpoint="none", backbone="bavos_test_vit", backbone_weights="none", taux=0.8)


def test_wrong_values_and_types_are_said_before_the_models_load(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Python caller's mistakes are ConfigErrors naming the option (they were torch's RuntimeError, TypeErrors from
    a comparison or an unpacking, or said at the first video only)."""
    from bavos.errors import ConfigError

    weightless = {"checkpoint": "none", "backbone": "bavos_test_vit", "backbone_weights": "none"}
    for given, said in (
        ({"device": "gpu"}, "--device must be auto, cpu or cuda, got gpu"),
        ({"tau": "0.8"}, "--tau must be a number, got '0.8'"),  # named as the errors of values are (a trial)
        ({"resolution": 96}, "--resolution must be a tuple of 2 whole numbers or None, got 96"),
        ({"max_objects": 2.5}, "--max-objects must be a whole number, got 2.5"),
    ):
        with pytest.raises(ConfigError) as refused:
            with monkeypatch.context() as m:
                m.setattr("bavos.api.load_models", lambda *a, **k: pytest.fail("the models loaded"))
                bavos.Segmenter.from_checkpoint(**weightless, **given)  # type: ignore[arg-type]
        assert str(refused.value) == said
    with pytest.raises(ConfigError, match=r"--resolution 100 130 must be a multiple of the patch size 8"):
        bavos.Segmenter.from_checkpoint(**weightless, device="cpu", resolution=(100, 130))
    listed = bavos.Segmenter.from_checkpoint(**weightless, device="cpu", resolution=[np.int64(64), 96])
    assert listed.config.resolution == (64, 96) and type(listed.config.resolution[0]) is int


def test_what_is_not_a_video_or_a_cut_is_said(segmenter: bavos.Segmenter) -> None:
    from bavos.errors import ConfigError

    with pytest.raises(InputError, match=r"^cannot segment an object of type int: give a path \(a video file"):
        segmenter(5)  # type: ignore[arg-type]
    with segmenter(np.stack(clip_frames(4, 48, 64))) as result:
        with pytest.raises(ConfigError, match="--max-objects must be a whole number, got '5'"):
            result.hierarchy.recut(max_objects="5")  # type: ignore[arg-type]


def test_segment_video_takes_the_options_as_keywords(tmp_path: Path, sharp_weights: Path, segmenter) -> None:
    """From a newcomer's trial: ``segment_video(path, "out", checkpoint="none")`` raised TypeError, and its configs
    are not in ``bavos``'s namespace, so it could not run without the paper's weights. The same video with the same
    settings gives the Segmenter's masks."""
    from bavos.config import ModelConfig
    from bavos.errors import ConfigError

    video = write_clip(tmp_path / "v.mp4", n=5, height=48, width=64)
    keywords = {"backbone": "bavos_test_vit", "backbone_weights": str(sharp_weights), "resolution": (64, 96)}
    keywords |= {"key_ratio": 4, "stride": 1, "max_key_frames": 30}
    summary = bavos.segment_video(
        video, tmp_path / "out", checkpoint="none", device=segmenter.config.device, **keywords
    )
    assert summary["frames"] == 5 and summary["settings"]["key_ratio"] == 4
    saved = [np.asarray(Image.open(p)) for p in sorted((tmp_path / "out" / "v" / "masks").glob("*.png"))]
    with segmenter(video) as result:
        assert np.array_equal(np.stack(saved), result.masks)
    with pytest.raises(ConfigError, match="segment_video: no option 'taux'; did you mean 'tau'"):
        bavos.segment_video(video, tmp_path / "o2", checkpoint="none", taux=0.8)
    with pytest.raises(ConfigError, match="segment_video: checkpoint given beside model_config; give the weights"):
        bavos.segment_video(video, tmp_path / "o2", model_config=ModelConfig(), checkpoint="none")
    assert not (tmp_path / "o2").exists()


def test_from_python_a_run_too_big_for_memory_is_refused_before_the_work(
    tmp_path: Path, segmenter: bavos.Segmenter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From a newcomer's trial: the memory check was the command line's only; resolution=(2000, 2000) from Python
    started the work (and ran for minutes). Nothing is left in the workdir."""
    from bavos.errors import ResourceError

    video = write_clip(tmp_path / "v.mp4", n=5, height=48, width=64)
    monkeypatch.setattr("bavos.models.costs.available_bytes", lambda device: 1024)
    with pytest.raises(ResourceError, match=rf"^{tmp_path / 'v.mp4'}: needs about .* more memory"):
        segmenter(video, workdir=tmp_path / "work")
    with pytest.raises(ResourceError, match="^the frames: needs about"):
        segmenter(np.stack(clip_frames(5, 48, 64)), workdir=tmp_path / "work")
    assert not (tmp_path / "work").exists()  # made for the run, removed with it
    with pytest.raises(ResourceError):
        bavos.segment_video(video, tmp_path / "out", segmenter.config, segmenter.models)
    assert not (tmp_path / "out").exists()  # no empty output folder left


def test_frame_numbers_as_ints_and_wrong_calls_are_said(
    tmp_path: Path, sharp_weights: Path, segmenter: bavos.Segmenter, run_cli
) -> None:
    """start=1 / end=4 as ints raised AttributeError ('int' object has no attribute 'strip') after the models had
    loaded; a bad start was taken until the first video; an array given to segment_video, and Segmenter('none'),
    were a TypeError and an AttributeError."""
    from bavos.config import SegmentConfig
    from bavos.errors import ConfigError
    from bavos.io.owners import owner_tag

    video = write_clip(tmp_path / "v.mp4", n=6, height=48, width=64)
    keywords = {"backbone": "bavos_test_vit", "backbone_weights": str(sharp_weights), "resolution": (64, 96)}
    keywords |= {"key_ratio": 4, "stride": 1, "max_key_frames": 30, "device": segmenter.config.device}
    summary = bavos.segment_video(video, tmp_path / "out", checkpoint="none", start=1, end=4, **keywords)
    assert summary["frames"] == 3 and summary["first_frame"] == 1 and summary["settings"]["start"] == "1"
    assert SegmentConfig(exports="coco").exports == ("coco",)  # it said "--export must be ..., got c, o"
    with pytest.raises(ConfigError, match=r"--start abc: give a frame number \(120\) or a time in seconds"):
        bavos.Segmenter.from_checkpoint("none", start="abc", **keywords)  # before the models load
    with pytest.raises(ConfigError, match=r"segment_video: frames in memory \(ndarray\) have no name .* give name="):
        bavos.segment_video(np.stack(clip_frames(3, 48, 64)), tmp_path / "out", checkpoint="none", **keywords)
    with pytest.raises(ConfigError, match=r"Segmenter takes models already loaded, not 'none': Segmenter.from_check"):
        bavos.Segmenter("none")  # type: ignore[arg-type]
    made = bavos.segment_video(
        np.stack(clip_frames(3, 48, 64)), tmp_path / "out", name="mem", checkpoint="none", **keywords
    )
    assert made["in_memory"] and (tmp_path / "out" / "mem" / "masks" / "00002.png").is_file()
    said = run_cli("recut", tmp_path / "out" / "mem", "--max-objects", "2")  # it read "<cwd>/array" if there
    assert said.code == 1 and "it was made from frames in memory (an array or an iterable), which recut" in said.err
    host, _, start = owner_tag().split("~")  # a killed process's working folder in the workdir is removed
    left = tmp_path / "work" / f".bavos-work-{host}~{dead_pid()}~{start}-x"
    left.mkdir(parents=True)
    with segmenter(video, workdir=tmp_path / "work"):
        assert not left.exists()


def test_random_weights_are_said_from_python_at_the_user_s_line(device: str) -> None:
    with pytest.warns(bavos.RandomWeightsWarning, match=r"backbone_weights='none': the backbone has random") as said:
        seg = bavos.Segmenter.from_checkpoint("none", backbone="bavos_test_vit", backbone_weights="none", device=device)
    assert [Path(w.filename).name for w in said] == ["test_api.py"]  # this line, not bavos's own
    with pytest.warns(bavos.RandomWeightsWarning) as said:
        bavos.Segmenter(seg.models, seg.config)
    assert [Path(w.filename).name for w in said] == ["test_api.py"]


def test_the_public_objects_say_what_they_are(segmenter: bavos.Segmenter) -> None:
    weights = segmenter.models.weights.backbone_weights
    assert repr(segmenter) == (
        f"Segmenter(checkpoint='none', backbone='bavos_test_vit', backbone_weights={weights!r}, "
        f"device={str(segmenter.models.device)!r}, resolution=(64, 96), tau=1.0, max_objects=20)"
    )
    with segmenter(np.stack(clip_frames(4, 48, 64))) as result:
        h = result.hierarchy
        cut = h.capped_to if h.capped_to is not None else h.sizes[h.level]
        assert repr(result) == f"Result('frames in memory', 4 frames, {cut} clusters at level {h.level})"
        assert repr(h).startswith(f"Hierarchy(sizes={h.sizes}, converged={h.converged}, level={h.level}")
    assert repr(result).endswith(", closed)")


# Inputs after other tools' Python bug reports (a newcomer's trial of the API)


def test_paths_of_every_kind_and_what_is_no_path(tmp_path: Path, segmenter: bavos.Segmenter, run_cli) -> None:
    """os.PathLike and bytes were refused as "an object of type P"; "" segmented the working folder; a URL was
    said as a missing file named "http:/host/…", one slash dropped."""
    video = write_clip(tmp_path / "clip.mp4", n=3)

    class Named:
        def __fspath__(self) -> str:
            return str(video)

    with segmenter(str(video)) as by_str, segmenter(Named()) as by_pathlike, segmenter(bytes(video)) as by_bytes:
        np.testing.assert_array_equal(by_pathlike.masks, by_str.masks)
        np.testing.assert_array_equal(by_bytes.masks, by_str.masks)
    with pytest.raises(InputError, match="^an empty path: give a video file or a folder of frames$"):
        segmenter("")
    for url in ("http://127.0.0.1:9/clip.mp4", "rtsp://127.0.0.1:9/cam", "file:///nowhere/v.mp4"):
        with pytest.raises(InputError, match=f"^{url}: a URL; bavos reads video files and frame folders on disk"):
            segmenter(url)  # as typed: a Path drops a slash ("file://nowhere")
        said = run_cli("segment", url, "-o", tmp_path / "out", "--json")  # as "-" (standard input) is refused
        assert said.code == 2 and said.err.startswith(f"bavos: error: {url}: a URL;") and not said.out
    said = run_cli("segment", "", "-o", tmp_path / "out")  # it read the working folder
    assert said.code == 2 and "bavos: error: an empty input name" in said.err
    with pytest.raises(bavos.BavosError, match=r"name '\.\./x': a plain folder name is needed"):
        bavos.segment_video(np.stack(clip_frames(2, 48, 64)), tmp_path / "out", name="../x")  # it wrote out/../x
    assert not (tmp_path / "x").exists() and not (tmp_path / "out").exists()


def test_tensors_and_a_device_given_as_torch_s(segmenter: bavos.Segmenter, tmp_path: Path) -> None:
    """Tensors NumPy cannot take directly failed deep in torch (TypeError, RuntimeError); torch.device("cpu") was
    "--device must be auto, cpu or cuda, got cpu"."""
    import torch

    frames = np.stack(clip_frames(3, 48, 64))
    with segmenter(frames) as want, segmenter(torch.from_numpy(frames)) as got:
        np.testing.assert_array_equal(got.masks, want.masks)
    with pytest.raises(InputError, match="^frames: a tensor on the meta device holds no values$"):
        segmenter(torch.empty(3, 48, 64, 3, dtype=torch.uint8, device="meta"))
    with pytest.raises(InputError, match=r"uint8 array with T > 0, got \(3, 48, 64, 3\) float32"):
        segmenter(torch.rand(3, 48, 64, 3, requires_grad=True))
    with pytest.raises(InputError, match="^frame 1: a tensor on the meta device"):
        segmenter([torch.from_numpy(frames[0]), torch.empty(48, 64, 3, dtype=torch.uint8, device="meta")])
    cpu = bavos.Segmenter.from_checkpoint(
        "none", backbone="bavos_test_vit", backbone_weights="none", device=torch.device("cpu"), resolution=(64, 96)
    )
    assert cpu.models.device.type == "cpu"
    summary = bavos.segment_video(frames, tmp_path, name="t", models=cpu.models, device=torch.device("cpu"))
    assert summary["frames"] == 3  # segment_video too: it was "--device must be auto, cpu or cuda, got cpu"


def test_what_close_ends_and_what_the_call_made(tmp_path: Path, segmenter: bavos.Segmenter) -> None:
    """An iter_masks() kept past close() went on from a cached window (or a closed file's ValueError); a workdir
    made by the call stayed, empty, after it."""
    with segmenter(np.stack(clip_frames(6, 48, 64)), workdir=tmp_path / "new" / "sub") as result:
        masks = result.iter_masks()
        next(masks)
    with pytest.raises(bavos.BavosError, match="this result is closed"):
        next(masks)
    assert not (tmp_path / "new").exists()  # made for the call, empty again: removed


def test_a_progress_that_cannot_be_called_is_said_before_any_work(tmp_path: Path, segmenter: bavos.Segmenter) -> None:
    """progress=True (as tqdm's switch) was a TypeError ('bool' object is not callable) at the first count, after
    the work folder was made and the frames decoded."""
    from bavos.evaluation.evaluate import evaluate_instances

    frames = np.stack(clip_frames(4, 48, 64))
    said = r"progress must be called as progress\(stage, done, total\), or be None; got bool"
    with pytest.raises(TypeError, match=said):
        segmenter(frames, progress=True, workdir=tmp_path / "work")  # type: ignore[arg-type]
    assert not (tmp_path / "work").exists()
    with pytest.raises(TypeError, match=said):
        bavos.segment_video(frames, tmp_path / "out", name="x", progress=True)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"or be None; got int"):
        evaluate_instances(tmp_path, progress=5)  # type: ignore[arg-type]
    with segmenter(frames) as result:
        with pytest.raises(TypeError, match=said):
            result.save(tmp_path / "saved", progress=True)  # type: ignore[arg-type]
    assert not (tmp_path / "saved").exists() and not (tmp_path / "out").exists()


def test_threads_forks_and_the_callers_state(
    tmp_path: Path, segmenter: bavos.Segmenter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A trial of the API in applications: two threads saving results of one name into one folder mixed them (a
    summary of 16 frames beside 24 masks); threads reading one result broke zlib; a None from a camera ended the
    video in silence; a relative workdir was lost after a chdir; a forked child removed its parent's files at exit
    and never had a heartbeat; the first call moved the caller's torch random stream."""
    import threading

    from bavos.io.owners import Heartbeat
    from bavos.models.costs import calibrate

    clips = {}
    for folder, n in (("d1", 12), ("d2", 8)):
        (tmp_path / folder).mkdir()
        clips[folder] = write_clip(tmp_path / folder / "clip.mp4", n=n, height=48, width=64)
    said: dict[str, object] = {}

    def save(folder: str) -> None:
        try:
            said[folder] = bavos.segment_video(
                clips[folder], tmp_path / "out", segmenter.config, models=segmenter.models
            )
        except Exception as e:  # what the thread met is the test's to see
            said[folder] = e

    threads = [threading.Thread(target=save, args=(folder,)) for folder in clips]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(isinstance(s, dict) for s in said.values()), said
    for summary in said.values():
        assert isinstance(summary, dict)
        result = Path(summary["output"])
        written = json.loads((result / "summary.json").read_text())
        assert written["source"] == summary["source"]
        assert len(list((result / "masks").glob("*.png"))) == written["frames"] == summary["frames"]
    assert {Path(s["output"]).name for s in said.values() if isinstance(s, dict)} >= {"clip"}

    frames = np.stack(clip_frames(20, 48, 64))
    with segmenter(frames) as result:
        alone = result.masks
        seen: list[object] = []
        readers = [threading.Thread(target=lambda: seen.append(result.masks)) for _ in range(3)]
        for reader in readers:
            reader.start()
        for reader in readers:
            reader.join()
        assert len(seen) == 3 and all(np.array_equal(s, alone) for s in seen)  # type: ignore[arg-type]

    with pytest.raises(InputError, match=r"frame 3: expected \(H, W, 3\) uint8, got None"):
        segmenter(iter([*frames[:3], None, *frames[4:]]))

    monkeypatch.chdir(tmp_path)
    (tmp_path / "elsewhere").mkdir()
    with segmenter(iter(frames), workdir="work") as result:
        monkeypatch.chdir(tmp_path / "elsewhere")
        assert np.array_equal(result.masks, alone)
    assert not (tmp_path / "work").exists()

    with segmenter(iter(frames)) as result:
        pid = os.fork()
        if pid == 0:  # the child: its copy closes at exit; its own heartbeat starts afresh
            ok = Heartbeat._thread is None and not Heartbeat._paths
            os._exit(0 if ok else 3)  # what sys.exit would run: the copy's close, as garbage
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        copy = object.__new__(type(result))
        copy.__dict__.update(result.__dict__)
        copy._pid = -1  # as a forked child's copy is: its close leaves the files
        copy.close()
        assert np.array_equal(result.masks, alone)

    calibrate.cache_clear()
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    with segmenter(frames[:4]):
        pass
    assert torch.equal(torch.rand(3), expected)


def test_a_result_lets_go_of_its_files_when_dropped_or_closed(tmp_path: Path, segmenter: bavos.Segmenter) -> None:
    """A trial: a dropped result waited for the cyclic garbage collector (its Hierarchy pointed back at it), an
    iterator kept past close() held the video open until advanced, pickling said "cannot pickle '_io.FileIO'", saving
    into the call's workdir named bavos's own working folder as files bavos did not write, and dir(bavos) lacked
    the names it imports on first use."""
    import copy
    import gc
    import pickle

    gc.collect()
    gc.disable()  # only reference counting: the files go when the last reference does
    try:
        result = segmenter(np.stack(clip_frames(4, 48, 64)), workdir=tmp_path / "w")
        (work,) = (tmp_path / "w").iterdir()
        with pytest.raises(bavos.BavosError, match=r"bavos works there \(\.bavos-work-.*such as .*/w/result$"):
            result.save(tmp_path / "w")
        for make in (pickle.dumps, copy.copy):
            with pytest.raises(TypeError, match="a bavos Result cannot be pickled or copied: .* send result.masks"):
                make(result)
        assert result.hierarchy.sizes and result.hierarchy.recut(level=0).frames == 4
        del result
        assert not work.exists()
    finally:
        gc.enable()

    def open_fds() -> int:
        names = []
        for fd in os.listdir("/proc/self/fd"):
            try:
                names.append(os.readlink(f"/proc/self/fd/{fd}"))
            except OSError:  # the listing's own
                pass
        return sum(name == str(video) for name in names)

    if not Path("/proc/self/fd").is_dir():
        pytest.skip("counts open files in /proc")
    video = write_clip(tmp_path / "c.mp4", n=6, height=48, width=64).resolve()
    result = segmenter(video)
    cut = result.hierarchy.recut(level=0)
    mine, its = result.iter_masks(), cut.iter_masks()
    next(mine), next(its)
    assert open_fds() == 2
    cut.close()  # its own reader alone
    assert open_fds() == 1 and next(mine).shape == (48, 64)
    result.close()
    assert open_fds() == 0
    for reader in (mine, its):
        with pytest.raises(bavos.BavosError, match="this result is closed"):
            next(reader)
    assert {"Segmenter", "Result", "segment_video", "BavosError"} <= set(dir(bavos))
