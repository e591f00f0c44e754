import json
import re
import subprocess
import sys
import threading
from pathlib import Path

import av
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import EncoderInputs, comparable, write_clip
from PIL import Image

from bavos.api import segment_video
from bavos.config import ModelConfig, SegmentConfig
from bavos.errors import ConfigError, OutputError
from bavos.models.devices import HeapTrimmer
from bavos.models.loading import load_models
from bavos.pipeline.masks import ids_by_area, nearest_processed, upsample_ids


def read_masks(folder: Path) -> list[np.ndarray]:
    out = []
    for png in sorted((folder / "masks").glob("*.png")):
        with Image.open(png) as im:
            assert im.mode == "P"
            out.append(np.asarray(im))
    return out


def test_bilinear_upsampling_is_argmax_of_interpolated_masks() -> None:
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 4, size=(5, 7)).astype(np.uint8)
    got = upsample_ids(ids, (37, 51), "bilinear", band=8)
    masks = torch.from_numpy((ids[None] == np.arange(4)[:, None, None]).astype(np.float32))
    ref = F.interpolate(masks[None], size=(37, 51), mode="bilinear", align_corners=False)[0]
    expected = ref.argmax(0).numpy()
    # equal wherever the best score is not tied to float precision
    top2 = torch.topk(ref, 2, dim=0).values
    clear = (top2[0] - top2[1]).numpy() > 1e-5
    np.testing.assert_array_equal(got[clear], expected[clear])
    assert clear.mean() > 0.8
    assert upsample_ids(np.full((2, 2), 3, np.uint8), (9, 9), "bilinear").tolist() == [[3] * 9] * 9


def test_bilinear_upsampling_takes_the_best_of_four_corners_as_every_ids_mask_would() -> None:
    """Against the separable form over every id present (each id's mask interpolated by the same weights, in
    float64): the same ids pixel for pixel, at any number of ids; a tie goes to the lowest id."""
    from bavos.pipeline.masks import _interp_matrix

    rng = np.random.default_rng(3)
    for k, grid, size in ((2, (4, 6), (9, 50)), (40, (20, 30), (240, 320)), (300, (30, 40), (123, 457))):
        ids = rng.integers(0, k, size=grid).astype(np.uint16)
        rows, cols = _interp_matrix(size[0], grid[0]).double(), _interp_matrix(size[1], grid[1]).double()
        present = np.unique(ids)
        masks = torch.from_numpy((ids[None] == present[:, None, None]).astype(np.float64))
        scores = torch.einsum("yh,khw,xw->kyx", rows, masks, cols)  # (k, H, W)
        top2 = torch.topk(scores, 2, dim=0).values
        clear = (top2[0] - top2[1]).numpy() > 1e-12
        expected = present[scores.argmax(0).numpy()]
        got = upsample_ids(ids, size, "bilinear", band=32)
        np.testing.assert_array_equal(got[clear], expected[clear])
        assert clear.mean() > 0.95
    # one output pixel half way between two patches: a tie, to the lowest id whichever side it is on
    assert upsample_ids(np.array([[1, 0]], np.uint8), (1, 1), "bilinear").tolist() == [[0]]
    assert upsample_ids(np.array([[0, 1]], np.uint8), (1, 1), "bilinear").tolist() == [[0]]


@pytest.mark.gpu
def test_upsampling_on_cuda_gives_the_cpus_ids() -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    rng = np.random.default_rng(5)
    for k, grid, size in ((2, (4, 6), (9, 50)), (40, (40, 60), (720, 1280)), (300, (30, 40), (123, 457))):
        ids = rng.integers(0, k, size=grid).astype(np.uint16)
        for mode in ("bilinear", "nearest"):
            got = upsample_ids(ids, size, mode, band=100, device=torch.device("cuda"))
            np.testing.assert_array_equal(got, upsample_ids(ids, size, mode, band=100))
            assert got.dtype == np.uint16


def test_nearest_upsampling() -> None:
    ids = np.array([[0, 1], [2, 3]], dtype=np.uint8)
    up = upsample_ids(ids, (4, 6), "nearest")
    assert up.tolist() == [[0, 0, 0, 1, 1, 1]] * 2 + [[2, 2, 2, 3, 3, 3]] * 2


def test_nearest_processed_frame() -> None:
    assert [nearest_processed(i, 1, 5) for i in range(5)] == [0, 1, 2, 3, 4]
    assert [nearest_processed(i, 2, 3) for i in range(6)] == [0, 0, 1, 1, 2, 2]
    assert [nearest_processed(i, 3, 3) for i in range(8)] == [0, 0, 1, 1, 1, 2, 2, 2]


def test_ids_by_area_puts_the_largest_first() -> None:
    counts = np.bincount(np.array([4, 4, 1, 4, 2, 2]))
    assert ids_by_area(counts).tolist() == [-1, 2, 1, -1, 0]
    assert ids_by_area(np.append(counts, [0, 0])).tolist() == [-1, 2, 1, -1, 0, -1, -1]
    assert sorted(ids_by_area(np.ones(300, np.int64)).tolist()) == list(range(300))
    with pytest.raises(ConfigError, match="--max-objects"):
        ids_by_area(np.ones(65537, np.int64))


@pytest.fixture(scope="module")
def tiny_models(sharp_weights: Path, device: str):
    return load_models(
        ModelConfig(backbone="bavos_test_vit", backbone_weights=str(sharp_weights), checkpoint="none"), device
    )


def noop(*args: object) -> None:
    """A progress callback that ignores its reports."""
    return None


def tiny_config(**kw: object) -> SegmentConfig:
    return SegmentConfig(
        **{"resolution": (64, 96), "key_ratio": 4, "device": "cpu", "stride": 1, "max_key_frames": 30, **kw}
    )


def test_outputs_of_an_odd_sized_clip(tmp_path: Path, tiny_models) -> None:
    video = write_clip(tmp_path / "walk.mp4", n=13, height=53, width=75, fps=12)
    summary = segment_video(video, tmp_path / "out", tiny_config(), tiny_models)
    folder = tmp_path / "out" / "walk"
    assert sorted(p.name for p in folder.iterdir()) == [
        ".bavos-files",
        "hierarchy.npz",
        "hierarchy.png",
        "masks",
        "overlay.mp4",
        "preview.png",
        "summary.json",
    ]
    masks = read_masks(folder)
    assert len(masks) == 13 and all(m.shape == (53, 75) for m in masks)
    assert [p.name for p in sorted((folder / "masks").glob("*.png"))][:2] == ["00000.png", "00001.png"]
    with av.open(str(folder / "overlay.mp4")) as c:
        stream = c.streams.video[0]
        assert sum(1 for _ in c.decode(stream)) == 13
        assert (stream.width, stream.height, float(stream.average_rate)) == (76, 54, 12.0)  # 4:2:0: even sizes
    assert json.loads((folder / "summary.json").read_text()) == summary
    assert summary["frames"] == 13 and summary["objects"] >= 1
    assert (summary["width"], summary["height"], summary["fps"]) == (75, 53, 12.0)
    area = np.bincount(np.concatenate([m.ravel() for m in masks]))
    stats = {o["id"]: o for o in summary["object_stats"]}
    assert set(np.flatnonzero(area)) == {0, *stats}
    assert summary["background"]["area"] == area[0] == area.max()  # id 0 is the largest cluster
    for i, o in stats.items():
        assert o["area"] == area[i]
        present = [t for t, m in enumerate(masks) if (m == i).any()]
        assert (o["first_frame"], o["last_frame"]) == (present[0], present[-1])
    assert set(summary["timings"]) == {
        "decode",
        "backbone",
        "attention",
        "clustering",
        "labels",
        "writing",
        "total",
        "waits",
    }
    assert set(summary["timings"]["waits"]) == {"keys", "hierarchy", "labels", "writing", "masks", "writer"}
    assert summary["config"]["SegmentConfig"]["key_ratio"] == 4 and summary["version"]
    hierarchy = np.load(folder / "hierarchy.npz")
    assert hierarchy["labels"].shape == (len(summary["level_sizes"]), 13, 8 * 12)


def test_a_run_on_cuda_warms_up_beside_the_decoding(tmp_path: Path, tiny_models, device: str) -> None:
    """On CUDA the backbone and the kernels run once on blank frames while the first frames are decoded (timed
    apart as "warm-up"); a CPU has nothing to warm up."""
    video = write_clip(tmp_path / "w.mp4", n=8, height=48, width=64, fps=12)
    summary = segment_video(video, tmp_path / "out", tiny_config(device=device), tiny_models)
    assert ("warm-up" in summary["timings"]) == (device == "cuda")


def test_background_threads_change_nothing_in_the_result(
    tmp_path: Path, tiny_models, encoder_inputs: EncoderInputs
) -> None:
    """Decoding ahead and writing behind in threads, or everything in one thread: the same files, byte for byte
    (the videos: the same frames given to the encoder, in the same order); and each side's waits are counted."""
    video = write_clip(tmp_path / "c.mp4", n=23, height=48, width=64)
    runs, made = {}, {}
    for background in (True, False):
        out = tmp_path / str(background)
        runs[background] = segment_video(
            video, out, tiny_config(background=background, batch_size=3, exports=("objects", "video")), tiny_models
        )
        made[background] = encoder_inputs.take()
    assert made[True] == made[False] and sorted(made[True]) == ["masks.mp4", "overlay.mp4"]
    a, b = tmp_path / "True" / "c", tmp_path / "False" / "c"
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file() and p.name != "summary.json")
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file() and p.name != "summary.json")
    assert len(files) > 23 * 2
    for name in files:
        assert comparable(a / name) == comparable(b / name), name  # the videos: their frame count and size
    assert comparable(a / "overlay.mp4") == (23, 48, 64)
    for summary in runs.values():
        waits = summary["timings"]["waits"]
        assert all(v >= 0 for v in waits.values()) and summary["timings"]["decode"] > 0
    # in one thread, the model waits for the whole decoding (no threads: waits are the decoding itself)
    inline = runs[False]["timings"]
    assert inline["waits"]["keys"] + inline["waits"]["hierarchy"] + inline["waits"]["labels"] + inline["waits"][
        "writing"
    ] == pytest.approx(inline["decode"], rel=0.05, abs=0.01)


def test_pass_4_upsamples_on_the_models_gpu(tmp_path: Path, tiny_models, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run on a GPU upsamples its masks there (the same ids: test_upsampling_on_cuda_gives_the_cpus_ids); a run on
    a CPU on the CPU."""
    from bavos.io.sources import open_source
    from bavos.pipeline import segment

    source = open_source(write_clip(tmp_path / "u.mp4", n=4, height=48, width=64))
    analysis = segment.analyse(source, tiny_models, tiny_config())
    assert analysis.device == tiny_models.device
    devices = []

    def upsample(ids: np.ndarray, size: tuple[int, int], mode: str, device: torch.device | None = None) -> np.ndarray:
        devices.append(device)
        return upsample_ids(ids, size, mode)

    monkeypatch.setattr(segment, "upsample_ids", upsample)
    try:
        for model, upsampled in ((torch.device("cpu"), None), (torch.device("cuda", 0), torch.device("cuda", 0))):
            analysis.device, devices[:] = model, []
            assert len(list(segment.iter_masks(source, analysis, "bilinear"))) == 4 and devices == [upsampled] * 4
    finally:
        analysis.close()  # its labels' temporary file


def test_ids_are_consistent_over_time(tmp_path: Path, tiny_models) -> None:
    video = write_clip(tmp_path / "c.mp4", n=12, height=64, width=96)
    segment_video(video, tmp_path / "out", tiny_config(upsample="nearest"), tiny_models)
    masks = read_masks(tmp_path / "out" / "c")
    hierarchy = np.load(tmp_path / "out" / "c" / "hierarchy.npz")
    labels = hierarchy["labels"][int(hierarchy["level"])]  # (T, N) cluster index of every patch
    ids = hierarchy["output_ids"][labels]
    # at the model's own size, nearest upsampling is one id per 8x8 patch: the PNGs are the clustering itself
    for t, mask in enumerate(masks):
        np.testing.assert_array_equal(mask[::8, ::8], ids[t].reshape(8, 12))
    # the static green block keeps one id in every frame
    assert len({int(m[60, 92]) for m in masks}) == 1


@pytest.mark.parametrize("frames", [1, 3])
def test_clips_shorter_than_the_key_ratio(tmp_path: Path, tiny_models, frames: int) -> None:
    video = write_clip(tmp_path / "s.mp4", n=frames, height=40, width=56)
    summary = segment_video(video, tmp_path / "out", tiny_config(key_ratio=10), tiny_models)
    assert summary["frames"] == frames and summary["key_frames"] == 1
    assert len(read_masks(tmp_path / "out" / "s")) == frames


def test_stride_still_writes_every_frame(tmp_path: Path, tiny_models) -> None:
    video = write_clip(tmp_path / "s.mp4", n=10, height=48, width=64)
    summary = segment_video(video, tmp_path / "out", tiny_config(stride=3), tiny_models)
    assert summary["frames"] == 10 and summary["processed_frames"] == 4
    masks = read_masks(tmp_path / "out" / "s")
    assert len(masks) == 10
    np.testing.assert_array_equal(masks[1], masks[0])  # frame 1 takes processed frame 0's labels


def test_max_objects_and_levels(tmp_path: Path, tiny_models) -> None:
    video = write_clip(tmp_path / "m.mp4", n=8, height=64, width=96)
    one = segment_video(video, tmp_path / "a", tiny_config(max_objects=1), tiny_models)
    assert one["objects"] == 0 and one["capped_from"] == one["converged_level"]
    assert all((m == 0).all() for m in read_masks(tmp_path / "a" / "m"))
    zero = segment_video(video, tmp_path / "b", tiny_config(level=0, max_objects=0), tiny_models)
    assert zero["level"] == 0 and zero["capped_from"] is None
    high = segment_video(video, tmp_path / "c", tiny_config(level=99, max_objects=0), tiny_models)  # nothing lost
    assert high["level"] == high["converged_level"] == len(high["level_sizes"]) - 1 and high["capped_to"] is None
    assert high["warnings"] == [
        f"--level 99 does not exist: this video's hierarchy has levels "
        f"0..{high['converged_level']}; cut at the top level, {high['converged_level']}"
    ]
    assert (tmp_path / "c" / "m" / "hierarchy.npz").is_file()
    capped = segment_video(video, tmp_path / "d", tiny_config(max_objects=1), tiny_models)  # one numbering
    assert capped["level"] == capped["converged_level"] == capped["capped_from"] and capped["capped_to"] == 1


def test_frame_folder_masks_take_the_frame_names(tmp_path: Path, tiny_models) -> None:
    folder = tmp_path / "bear"
    folder.mkdir()
    for i in range(5):
        Image.fromarray(np.full((45, 70, 3), 40 * i, np.uint8)).save(folder / f"{i * 5:05d}.jpg")
    summary = segment_video(folder, tmp_path / "out", tiny_config(fps=10), tiny_models)
    names = sorted(p.name for p in (tmp_path / "out" / "bear" / "masks").iterdir())
    assert names == ["00000.png", "00005.png", "00010.png", "00015.png", "00020.png"]
    assert summary["fps"] == 10.0
    with av.open(str(tmp_path / "out" / "bear" / "overlay.mp4")) as c:
        assert float(c.streams.video[0].average_rate) == 10.0


def test_failure_while_writing_leaves_nothing_finished(
    tmp_path: Path,
    tiny_models,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    video = write_clip(tmp_path / "f.mp4", n=30, height=48, width=64)  # more frames than are decoded ahead
    segment_video(video, tmp_path / "out", tiny_config(), tiny_models)
    before = (tmp_path / "out" / "f" / "summary.json").read_text()
    calls = {"n": 0}

    def failing(path: Path, labels: np.ndarray) -> None:
        calls["n"] += 1
        if calls["n"] == 3:
            raise OutputError(f"{path}: cannot write mask (No space left on device)")
        Image.fromarray(labels).save(path)

    monkeypatch.setattr("bavos.pipeline.outputs.write_mask", failing)
    for background in (False, True):  # the writer in this thread, or in its own (the error comes back here)
        calls["n"] = 0
        with pytest.raises(OutputError, match="No space left"):
            segment_video(video, tmp_path / "out", tiny_config(background=background), tiny_models)
        assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["f"]  # no temporary folder left
        assert (tmp_path / "out" / "f" / "summary.json").read_text() == before  # the old result is untouched
        assert not [t.name for t in threading.enumerate() if t.name.startswith("bavos-")]  # no thread left


def test_a_new_run_replaces_an_older_result(tmp_path: Path, tiny_models) -> None:
    """Every file of the older result goes, masks of frames the new one does not have too."""
    video = write_clip(tmp_path / "r.mp4", n=6, height=48, width=64)
    segment_video(video, tmp_path / "out", tiny_config(), tiny_models)
    write_clip(video, n=4, height=48, width=64)  # the video shortened
    segment_video(video, tmp_path / "out", tiny_config(), tiny_models)
    assert len(list((tmp_path / "out" / "r" / "masks").iterdir())) == 4
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["r"]


def test_resolution_must_fit_the_patch(tmp_path: Path, tiny_models) -> None:
    video = write_clip(tmp_path / "p.mp4", n=2, height=48, width=64)
    with pytest.raises(ConfigError, match="multiple of the patch size 8"):
        segment_video(video, tmp_path / "out", tiny_config(resolution=(60, 96)), tiny_models)


def test_correlator_checkpoint_mode(tmp_path: Path, sharp_weights: Path) -> None:
    from bavos.models.correlator import Correlator, save_checkpoint

    torch.manual_seed(0)
    save_checkpoint(tmp_path / "c.pt", Correlator(32, 8), {"correlator_heads": 8})
    models = load_models(
        ModelConfig(backbone="bavos_test_vit", backbone_weights=str(sharp_weights), checkpoint=str(tmp_path / "c.pt")),
        "cpu",
    )
    video = write_clip(tmp_path / "k.mp4", n=5, height=48, width=64)
    summary = segment_video(video, tmp_path / "out", tiny_config(), models)
    assert summary["mode"] == "correlator" and summary["frames"] == 5


def test_max_key_frames_bounds_the_key_set(tmp_path: Path, tiny_models) -> None:
    video = write_clip(tmp_path / "long.mp4", n=20, height=48, width=64)
    full = segment_video(video, tmp_path / "a", tiny_config(key_ratio=2, overlay=False), tiny_models)
    bounded = segment_video(
        video, tmp_path / "b", tiny_config(key_ratio=2, max_key_frames=3, overlay=False), tiny_models
    )
    assert full["key_frames"] == 10 and bounded["key_frames"] == 3
    assert bounded["config"]["SegmentConfig"]["max_key_frames"] == 3 and bounded["frames"] == 20


def test_attention_cache_gives_the_same_masks(tmp_path: Path, tiny_models) -> None:
    video = write_clip(tmp_path / "clip.mp4", n=8, height=48, width=64)
    plain = segment_video(video, tmp_path / "a", tiny_config(overlay=False), tiny_models)
    cached = segment_video(video, tmp_path / "b", tiny_config(overlay=False, attention_cache_mb=64), tiny_models)
    assert cached["config"]["SegmentConfig"]["attention_cache_mb"] == 64
    for a, b in zip(read_masks(tmp_path / "a" / "clip"), read_masks(tmp_path / "b" / "clip"), strict=True):
        np.testing.assert_array_equal(a, b)
    assert plain["level_sizes"] == cached["level_sizes"]


def analysis_levels(video: Path, models, cfg: SegmentConfig, tmp_path: Path):
    """(levels, T, N) labels of the streaming pipeline, and the analysis."""
    from bavos.io.video import VideoSource
    from bavos.pipeline.segment import analyse

    analysis = analyse(VideoSource(video), models, cfg, noop, workdir=tmp_path)
    labels = np.stack([analysis.labels.frame(t) for t in range(analysis.processed)], axis=1)
    analysis.close()
    return labels, analysis


@pytest.mark.parametrize(
    ("frames", "caches"),
    [(10, (0, 0)), (10, (64, 0)), (10, (0, 64)), (7, (0, 0)), (11, (1, 0)), (1, (0, 0)), (10, (0, None))],
)
def test_streaming_pipeline_matches_the_float64_reference(
    tmp_path: Path,
    tiny_models,
    frames: int,
    caches: tuple[int, int | None],
) -> None:
    """The pipeline (float32, window by window, first round streamed, labels on disk, queries computed again or
    kept, rows kept or not) against ``cluster_attention`` on the whole float64 attention: every level."""
    from reference_cluster import same_partition

    from bavos.io.video import VideoSource
    from bavos.pipeline.attention import window_attention
    from bavos.pipeline.cluster import cluster_attention
    from bavos.pipeline.segment import video_tokens

    video = write_clip(tmp_path / "clip.mp4", n=frames, height=48, width=64)
    cfg = tiny_config(key_ratio=3, attention_cache_mb=caches[0], query_cache_mb=caches[1], max_objects=0)
    got, analysis = analysis_levels(video, tiny_models, cfg, tmp_path)
    q, k = video_tokens(VideoSource(video), tiny_models, cfg)
    expected = cluster_attention(window_attention(q.double(), k.double(), tiny_models.scale), cfg.tau, cfg.window)
    assert analysis.hierarchy.sizes == expected.sizes
    assert analysis.keys.positions == list(range(0, max(1, frames // 3) * 3, 3))
    for level in range(len(expected.sizes)):
        assert same_partition(got[level], expected.level_labels[level]), level
    assert not list(tmp_path.glob(".bavos-*"))  # the temporary label files are gone


def test_bf16_backbone_and_correlator_stay_close(tmp_path: Path, tiny_models) -> None:
    """--precision bf16 (CPU autocast here, as on CUDA): q and k within 2% of float32 (relative L2), the converged
    partitions share at least 99% of their tokens."""
    from bavos.evaluation.metrics import matched_share
    from bavos.io.video import VideoSource
    from bavos.pipeline.segment import video_tokens

    video = write_clip(tmp_path / "clip.mp4", n=9, height=48, width=64)
    runs = []
    for precision in ("float32", "bf16"):
        cfg = tiny_config(key_ratio=3, max_objects=0, precision=precision)
        q, k = video_tokens(VideoSource(video), tiny_models, cfg)
        assert q.dtype == torch.float32 and k.dtype == torch.float32
        labels, analysis = analysis_levels(video, tiny_models, cfg, tmp_path)
        runs.append((q, k, labels[analysis.hierarchy.cut]))
    (q32, k32, l32), (q16, k16, l16) = runs
    for a, b in ((q16, q32), (k16, k32)):
        assert 0 < float((a - b).norm() / b.norm()) < 0.02  # bf16 did run, and stayed close
    assert matched_share(l32, l16) >= 0.99


@pytest.mark.parametrize("frame_count", [None, 1, 5, 400])
def test_a_wrong_announced_frame_count_gives_the_same_result(
    tmp_path: Path,
    tiny_models,
    frame_count: int | None,
) -> None:
    """The key frames are chosen from the container's frame count and computed again when the decode finds
    another count (or none was announced)."""
    from dataclasses import replace

    from bavos.io.video import VideoSource
    from bavos.pipeline.segment import analyse

    video = write_clip(tmp_path / "clip.mp4", n=11, height=48, width=64)
    cfg = tiny_config(batch_size=2)
    expected = analyse(VideoSource(video), tiny_models, cfg, noop, workdir=tmp_path)
    source = VideoSource(video)
    source.info = replace(source.info, frame_count=frame_count)
    got = analyse(source, tiny_models, cfg, noop, workdir=tmp_path)
    assert got.keys.positions == expected.keys.positions and torch.equal(got.keys.k, expected.keys.k)
    for t in range(11):
        np.testing.assert_array_equal(got.labels.frame(t), expected.labels.frame(t))
    got.close()
    expected.close()


def test_the_heap_trimmer_is_asked_after_the_key_pass_and_every_window(
    tmp_path: Path,
    tiny_models,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import bavos.pipeline.segment as seg
    from bavos.io.video import VideoSource

    made: list[HeapTrimmer] = []
    calls: list[str] = []

    class Recorded(HeapTrimmer):
        def __init__(self) -> None:
            super().__init__(resident=lambda: 0, trim=lambda: calls.append("trim"))  # flat: no window piles up
            made.append(self)

        def release(self) -> None:
            calls.append("release")
            super().release()

        def __call__(self) -> bool:
            calls.append("window")
            return super().__call__()

    monkeypatch.setattr(seg, "HeapTrimmer", Recorded)
    video = write_clip(tmp_path / "clip.mp4", n=7, height=48, width=64)
    seg.analyse(VideoSource(video), tiny_models, tiny_config(), noop, workdir=tmp_path).close()
    assert len(made) == 1  # one trimmer for the run: what the first window leaves free is known to the others
    assert calls == [
        "release",
        "trim",  # after the key pass
        "window",
        "release",
        "trim",  # the first window always trims: it measures a window
        "window",
        "window",
        "window",
        "window",
        "window",  # 3 windows in the hierarchy, 3 in the labels
        "release",
        "trim",
    ]  # after the labels pass: writing starts from a trimmed heap


def test_the_heap_is_trimmed_only_when_it_piles_up_beyond_a_windows_buffers() -> None:
    resident = iter(
        [
            500,
            900,
            700,  # release after the key pass left 500; window 1: 900 before, 700 after the trim
            940,
            975,
            976,
            955,
            700,
        ]
    )  # then under 700 + 200 + 75 twice; over; under again (no trim after)
    resident_now = [0]

    def reading() -> int:
        resident_now[0] = next(resident)
        return resident_now[0]

    trims: list[int] = []
    trimmer = HeapTrimmer(slack=75, resident=reading, trim=lambda: trims.append(resident_now[0]))
    trimmer.release()
    assert (trimmer.left, trimmer.working) == (500, None)
    assert trimmer() is True and (trimmer.left, trimmer.working) == (700, 200)
    assert [trimmer(), trimmer(), trimmer()] == [False, False, True]  # 940, 975 <= 700 + 200 + 75; 976 over
    assert (trimmer.left, trimmer.working, trimmer.trims) == (955, 200, 3)  # working is the first window's
    assert trimmer() is False  # 700: far under
    assert trims == [0, 900, 976]  # what was last read when each trim came (nothing before the first)


def test_freed_memory_is_kept_for_reuse_in_a_bavos_process_only(tmp_path: Path) -> None:
    """keep_freed_memory: a freed 24 MB block stays resident for the next window (no page faults to get it back);
    without it (a user's own program: the library never calls it) glibc unmaps it at once. A block over 32 MB keeps
    a mapping of its own either way, so a window's peak memory does not grow by freed blocks it cannot reuse."""
    script = tmp_path / "heap.py"
    script.write_text(
        "import ctypes, sys\n"
        "from bavos.models.costs import resident_bytes\n"
        "from bavos.models.devices import keep_freed_memory\n"
        "kept = keep_freed_memory() if sys.argv[1] == 'keep' else False\n"
        "libc = ctypes.CDLL('libc.so.6')\n"
        "libc.malloc.restype = ctypes.c_void_p\n"
        "def handed_back(size):\n"
        "    block = libc.malloc(ctypes.c_size_t(size))\n"
        "    ctypes.memset(block, 1, size)\n"
        "    touched = resident_bytes()\n"
        "    libc.free(ctypes.c_void_p(block))\n"
        "    return (touched - resident_bytes()) >> 20\n"
        "print(kept, handed_back(24 << 20), handed_back(64 << 20))\n"
    )
    said = {}
    for mode in ("keep", "default"):
        out = subprocess.run([sys.executable, str(script), mode], capture_output=True, text=True, check=True)
        said[mode] = out.stdout.split()
    if said["keep"][0] != "True":
        pytest.skip("not glibc: nothing to keep")
    assert int(said["keep"][1]) < 4 and int(said["keep"][2]) > 60  # 24 MB still resident; 64 MB handed back
    assert said["default"][0] == "False" and int(said["default"][1]) > 20  # handed back at the free


def test_more_than_255_clusters_are_written_as_16_bit_masks(tmp_path: Path, tiny_models) -> None:
    """A near-zero tau leaves most tokens alone: hundreds of clusters are a result, with masks, overlay and eval."""
    from bavos.evaluation.evaluate import evaluate_instances

    video = write_clip(tmp_path / "c.mp4", n=4, height=64, width=96)
    summary = segment_video(
        video, tmp_path / "out", tiny_config(tau=1e-9, max_objects=0, upsample="nearest"), tiny_models
    )
    folder = tmp_path / "out" / "c"
    assert summary["objects"] + 1 > 255
    hierarchy = np.load(folder / "hierarchy.npz")
    ids = hierarchy["output_ids"][hierarchy["labels"][int(hierarchy["level"])]]  # (T, N)
    for t, png in enumerate(sorted((folder / "masks").glob("*.png"))):
        with Image.open(png) as im:
            assert im.mode == "I;16"
            mask = np.asarray(im)
        np.testing.assert_array_equal(mask[::8, ::8], ids[t].reshape(8, 12))
    with av.open(str(folder / "overlay.mp4")) as c:
        assert sum(1 for _ in c.decode(c.streams.video[0])) == 4
    gt = tmp_path / "gt" / "c"
    gt.mkdir(parents=True)
    last = int(ids.max())
    assert last > 255
    for t in range(4):  # the ground-truth object is exactly the cluster of the highest id (a 16-bit value)
        obj = (ids[t].reshape(8, 12) == last).repeat(8, 0).repeat(8, 1)
        Image.fromarray(obj.astype(np.uint8), mode="L").save(gt / f"{t:05d}.png")
    res = evaluate_instances(tmp_path / "out", tmp_path / "gt")
    assert res.miou["c"] == 1.0  # found only if eval reads the id above 255 as it was written


@pytest.mark.parametrize(("disk", "room", "passes"), [(None, None, 1), (0, None, 1), (0, 0, 2)])
def test_query_cache_auto_runs_the_backbone_once_per_frame_when_the_clip_fits(
    tmp_path: Path, tiny_models, monkeypatch: pytest.MonkeyPatch, disk: int | None, room: int | None, passes: int
) -> None:
    """--query-cache auto (the default) on a CPU: the queries wait in a temporary file, so every frame goes through
    the backbone once (the key frames' queries come from pass 1); without the disk space, in memory; with neither,
    the other frames' queries are computed again. The same masks either way, and the same as --query-cache 0."""
    import shutil
    from collections import namedtuple

    import bavos.models.loading as loading
    import bavos.pipeline.segment as seg
    import bavos.pipeline.store as store

    real = loading.frame_tokens
    seen = []

    def counted(models, cfg, images):
        seen.append(len(images))
        return real(models, cfg, images)

    files = []
    real_store = store.QueryStore

    def recorded(path):
        files.append(Path(path))
        return real_store(path)

    monkeypatch.setattr(seg, "frame_tokens", counted)
    monkeypatch.setattr(seg, "QueryStore", recorded)
    if disk is not None:
        usage = namedtuple("usage", "total used free")
        monkeypatch.setattr(shutil, "disk_usage", lambda folder: usage(disk, disk, disk))
    if room is not None:  # the plan at little memory, the check that refuses such a run aside
        monkeypatch.setattr("bavos.models.costs.available_bytes", lambda device: room)
        monkeypatch.setattr("bavos.api.over_budget", lambda estimate, device: None)
    video = write_clip(tmp_path / "q.mp4", n=14, height=48, width=64)
    auto = segment_video(video, tmp_path / "auto", tiny_config(overlay=False, attention_cache_mb=0), tiny_models)
    warm_up = tiny_config().batch_size if tiny_models.device.type == "cuda" else 0  # blank frames (warm_up)
    assert sum(seen) == warm_up + 14 + (passes - 1) * (14 - auto["key_frames"])
    on_disk = disk is None and tiny_models.device.type == "cpu"  # a GPU keeps them in memory
    assert len(files) == on_disk and not any(f.exists() for f in files)  # the temporary file is gone
    segment_video(video, tmp_path / "none", tiny_config(overlay=False, query_cache_mb=0), tiny_models)
    masks = sorted((tmp_path / "auto" / "q" / "masks").iterdir())
    assert [m.read_bytes() for m in masks] == [(tmp_path / "none" / "q" / "masks" / m.name).read_bytes() for m in masks]


@pytest.mark.parametrize(("cache", "room", "kept"), [(None, None, True), (None, 2**20, False), (0, None, False)])
def test_attention_cache_auto_computes_the_attention_once_when_the_clip_fits(
    tmp_path: Path, tiny_models, monkeypatch: pytest.MonkeyPatch, cache: int | None, room: int | None, kept: bool
) -> None:
    """--attention-cache auto (the default) keeps every window's rows when the video's fit its budget (a CPU's or a
    GPU's): the labels pass then computes no attention and needs no queries (no temporary query file); where they
    do not fit, or with 0, every window's attention is computed twice. The same masks either way."""
    import bavos.pipeline.segment as seg

    real_attention, real_store = seg.window_attention, seg.QueryStore
    calls, stores = [], []

    def counted(*args, **kwargs):
        calls.append(1)
        return real_attention(*args, **kwargs)

    def recorded(path):
        stores.append(path)
        return real_store(path)

    monkeypatch.setattr(seg, "window_attention", counted)
    monkeypatch.setattr(seg, "QueryStore", recorded)
    if room is not None:  # 1 MB available: the tiny clip's 2 MB of rows fit neither a tenth nor a half of it
        monkeypatch.setattr("bavos.models.costs.available_bytes", lambda device: room)
        monkeypatch.setattr("bavos.api.over_budget", lambda estimate, device: None)  # the plan, not the refusal
    video = write_clip(tmp_path / "a.mp4", n=14, height=48, width=64)
    segment_video(video, tmp_path / "run", tiny_config(overlay=False, attention_cache_mb=cache), tiny_models)
    cpu = tiny_models.device.type == "cpu"
    windows = -(-14 // 3)
    assert len(calls) == (windows if kept else 2 * windows)
    assert len(stores) == (0 if kept or not cpu else 1)  # queries on disk on a CPU only, where rows are not kept
    segment_video(
        video, tmp_path / "none", tiny_config(overlay=False, attention_cache_mb=0, query_cache_mb=0), tiny_models
    )
    masks = sorted((tmp_path / "run" / "a" / "masks").iterdir())
    assert [m.read_bytes() for m in masks] == [(tmp_path / "none" / "a" / "masks" / m.name).read_bytes() for m in masks]


def test_the_attention_plan() -> None:
    """--attention-cache: MB as asked; auto keeps every row on a CPU when they fit min(512 MB, a tenth of the
    available memory), on a GPU when they fit half of its free memory; else none."""
    from unittest import mock

    from bavos.models import costs

    cpu, mb = torch.device("cpu"), 2**20
    assert costs.attention_plan(64, 10**12, cpu) == 64 * mb
    with mock.patch.object(costs, "available_bytes", lambda device: 10 * 2**30):  # room: the 512 MB cap
        assert costs.attention_plan(None, 276 * mb, cpu) == 276 * mb
        assert costs.attention_plan(None, 513 * mb, cpu) == 0  # not a part of them: all or none
        assert costs.attention_plan(None, 5 * 2**30, torch.device("cuda")) == 5 * 2**30
        assert costs.attention_plan(None, 5 * 2**30 + 1, torch.device("cuda")) == 0
    with mock.patch.object(costs, "available_bytes", lambda device: 2**30):  # room: a tenth of 1 GB
        assert costs.attention_plan(None, 102 * mb, cpu) == 102 * mb
        assert costs.attention_plan(None, 103 * mb, cpu) == 0


def test_every_query_kept_in_pass_1_decodes_the_video_once_for_the_model(
    tmp_path: Path, tiny_models, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a GPU with room (``every_query_plan``, forced here), pass 1 runs the backbone on every frame and keeps the
    queries: the model's passes decode the video once, the backbone runs once a frame, the masks are the same."""
    import bavos.pipeline.segment as seg

    video = write_clip(tmp_path / "e.mp4", n=14, height=48, width=64)
    plain = segment_video(video, tmp_path / "plain", tiny_config(overlay=False, attention_cache_mb=0), tiny_models)
    real_ahead, real_tokens = seg._frames_ahead, seg.frame_tokens
    streams, frames = [], []

    def counted_ahead(*args, **kwargs):
        streams.append(1)
        return real_ahead(*args, **kwargs)

    def counted_tokens(models, cfg, images):
        frames.append(len(images))
        return real_tokens(models, cfg, images)

    monkeypatch.setattr(seg, "every_query_plan", lambda video_bytes, device: True)
    monkeypatch.setattr(seg, "_frames_ahead", counted_ahead)
    monkeypatch.setattr(seg, "frame_tokens", counted_tokens)
    every = segment_video(video, tmp_path / "every", tiny_config(overlay=False, attention_cache_mb=0), tiny_models)
    warm_up = tiny_config().batch_size if tiny_models.device.type == "cuda" else 0
    assert len(streams) == 1 and sum(frames) == warm_up + 14  # one decoding for the model; the backbone once a frame
    assert every["level_sizes"] == plain["level_sizes"]
    masks = sorted((tmp_path / "plain" / "e" / "masks").iterdir())
    again = tmp_path / "every" / "e" / "masks"
    assert [m.read_bytes() for m in masks] == [(again / m.name).read_bytes() for m in masks]


def test_the_query_plan(tmp_path: Path) -> None:
    """--query-cache: MB as asked; auto keeps them on a GPU in its memory when they take at most a quarter of what
    is free there, else in host memory within min(512 MB, a tenth of the available memory); on a CPU in a file."""
    from unittest import mock

    from bavos.models import costs
    from bavos.models.costs import QueryPlan

    cuda, cpu, mb = torch.device("cuda"), torch.device("cpu"), 2**20
    assert costs.query_plan(64, 10**12, cuda, tmp_path) == QueryPlan(memory=64 * mb)
    with mock.patch.object(costs, "available_bytes", lambda device: 8 * 2**30):  # free, on the device and the host
        assert costs.query_plan(None, 2 * 2**30, cuda, tmp_path) == QueryPlan(memory=2 * 2**30, device=True)
        assert costs.query_plan(None, 2 * 2**30 + 1, cuda, tmp_path) == QueryPlan()  # nor 512 MB of the host's
        # the file needs a quarter of the folder's free space: set it, as CI's disk may have less than 8 GB free
        with mock.patch.object(costs.shutil, "disk_usage", lambda folder: mock.Mock(free=8 * 2**30)):
            assert costs.query_plan(None, 2 * 2**30, cpu, tmp_path) == QueryPlan(disk=True)
        with mock.patch.object(costs.shutil, "disk_usage", lambda folder: mock.Mock(free=8 * 2**30 - 4)):
            assert costs.query_plan(None, 2 * 2**30, cpu, tmp_path) == QueryPlan()  # nor 512 MB of the host's
    with mock.patch.object(costs, "available_bytes", lambda device: 2**30 if device.type == "cuda" else 8 * 2**30):
        assert costs.query_plan(None, 300 * mb, cuda, tmp_path) == QueryPlan(memory=300 * mb)  # in the host's


def test_the_estimate_counts_the_kept_attention_rows() -> None:
    """Kept rows: the labels pass computes no attention (the hierarchy pass is unchanged), needs neither queries nor
    the backbone, and the rows are in the peak memory; without them the labels pass carries one attention."""
    from bavos.models.costs import ClusterCounts, QueryPlan, calibrate, segment_estimate

    counts = ClusterCounts(per_window=1, sizes=(16, 1), distinct=1, ids=1)
    rows = 48 * 600 * 3000 * 4  # 48 frames of 600 tokens over 5 key frames' 3,000, float32

    def estimate(cache: int):
        return segment_estimate(
            48, (20, 30), 5, 8, 3, torch.device("cpu"), cache_bytes=cache, queries=QueryPlan(), counts=counts
        )

    plain, kept, part = estimate(0), estimate(rows), estimate(rows // 2)
    assert (kept.rows_kept, kept.rows_total, plain.rows_kept) == (rows, rows, 0)
    assert part.rows_kept == 8 * 3 * 600 * 3000 * 4  # the 8 first windows of 16
    assert kept.passes["hierarchy"] == pytest.approx(plain.passes["hierarchy"])
    attention = 16 * (
        2 * 1800 * 384 * 3000 / calibrate(torch.device("cpu")).flops
        + 8 * 8 * 1800 * 3000 / calibrate(torch.device("cpu")).elementwise
    )
    assert plain.seconds["clustering"] - kept.seconds["clustering"] == pytest.approx(attention)
    assert kept.seconds["backbone"] == pytest.approx(48 * kept.frame_seconds)  # once per frame, without queries
    assert plain.seconds["backbone"] == pytest.approx((5 + 2 * 43) * plain.frame_seconds)
    assert part.seconds["backbone"] == pytest.approx((48 + 43 / 2) * part.frame_seconds)
    assert kept.peak_bytes - plain.peak_bytes == pytest.approx(rows, rel=0.01)  # resident memory moves a little


def test_the_run_refines_its_estimate_with_its_clusters(tmp_path: Path, tiny_models) -> None:
    seen = []
    video = write_clip(tmp_path / "e.mp4", n=9, height=48, width=64)
    summary = segment_video(
        video,
        tmp_path / "out",
        tiny_config(overlay=False, max_objects=0),
        tiny_models,
        estimates=lambda what, estimate: seen.append((what, estimate)),
    )
    (first, one), (second, two), (third, three), (fourth, four) = seen  # 3 windows: labels after 1 and 2
    assert re.fullmatch(r"the first window's (1 cluster|\d+ clusters)", first)
    top = summary["level_sizes"][summary["converged_level"]]
    assert second == f"the hierarchy's {top} cluster{'s' if top != 1 else ''}"
    # a trial: the labels pass took 2.5 times the whole estimate (its lower bounds pruned half the pairs, not all
    # but a few a token), and nothing said so; its own pace now revises the estimate as it goes
    assert (third, fourth) == ("the labels pass's first window", "the labels pass's first 2 windows")
    assert all(e.total > 0 and e.passes.keys() == one.passes.keys() for e in (one, two, three, four))


def test_a_refined_estimate_goes_at_the_runs_own_pace() -> None:
    """The clustering's seconds scale with its measured pace, the backbone's and the writing's with the backbone's
    (a field report: the clustering's pace on small windows, 20 to 200 times its count, made a 6 s run's writing
    "5 min 11 s"); every pass keeps its share of each, so the passes still add up to the total."""
    from bavos.models.costs import Pace, segment_estimate

    estimate = segment_estimate(48, (20, 30), 5, 8, 3, torch.device("cpu"), pixels=320 * 240)
    assert sum(estimate.passes.values()) == pytest.approx(estimate.total)
    paced = estimate.paced(Pace(backbone=2.0, clustering=0.5))
    assert paced.seconds["backbone"] == pytest.approx(2 * estimate.seconds["backbone"])
    assert paced.seconds["clustering"] == pytest.approx(0.5 * estimate.seconds["clustering"])
    assert paced.seconds["writing"] == pytest.approx(2 * estimate.seconds["writing"])
    assert paced.passes["writing"] == pytest.approx(2 * estimate.passes["writing"])
    assert paced.passes["keys"] == pytest.approx(2 * estimate.passes["keys"])  # the backbone only
    assert sum(paced.passes.values()) == pytest.approx(paced.total)
    assert estimate.paced(Pace()) == estimate
    # the labels pass's assignment at its own pace, once measured: the rest of the clustering at the hierarchy's
    assert 0 < estimate.assigning < estimate.passes["labels"]
    labelled = estimate.paced(Pace(backbone=2.0, clustering=0.5, labels=3.0))
    assert labelled.seconds["clustering"] == pytest.approx(
        0.5 * (estimate.seconds["clustering"] - estimate.assigning) + 3.0 * estimate.assigning
    )
    assert labelled.passes["labels"] - paced.passes["labels"] == pytest.approx(2.5 * estimate.assigning)
    assert labelled.passes["hierarchy"] == pytest.approx(paced.passes["hierarchy"])
    assert sum(labelled.passes.values()) == pytest.approx(labelled.total)
    # no query cache: the 5 key frames run once, the 43 others twice
    assert estimate.frame_seconds * (5 + 2 * 43) == pytest.approx(estimate.seconds["backbone"])


def test_the_runs_pace_leaves_out_the_backbones_first_batch() -> None:
    """The first batch pays the warm-up (seconds on a GPU): the pace is measured from the batches after it, and is 1
    where nothing was measured yet."""
    from dataclasses import replace

    from bavos.models.costs import Pace, segment_estimate
    from bavos.pipeline.segment import _Clock, run_pace

    clock = _Clock(torch.device("cpu"))
    estimate = replace(
        segment_estimate(48, (20, 30), 5, 8, 3, torch.device("cpu")), frame_seconds=0.25, window_seconds=2.0
    )
    with clock.backbone(5):
        pass
    assert (clock.batches, clock.paced_frames) == (1, 0)
    assert run_pace(clock, estimate, 0, 0.0) == Pace()  # nothing measured after the warm-up
    with clock.backbone(8):
        pass
    assert (clock.batches, clock.paced_frames) == (2, 8) and clock.seconds["backbone"] >= clock.paced_seconds
    clock._paced = 4.0  # 8 frames in 4 s against 0.25 s a frame: twice as slow as estimated
    assert run_pace(clock, estimate, 2, 2.0) == Pace(backbone=2.0, clustering=0.5)
    estimate = replace(estimate, label_window_seconds=0.5)
    clock._seconds["labels"] = 3.0  # the labels pass's first 2 windows in 3 s against 0.5 s a window
    assert run_pace(clock, estimate, 2, 2.0, labelled=2) == Pace(backbone=2.0, clustering=0.5, labels=3.0)


def test_the_estimate_grows_with_the_clusters() -> None:
    from bavos.models.costs import ClusterCounts, segment_estimate

    def cost(counts: ClusterCounts, max_objects: int = 0) -> dict[str, float]:
        return segment_estimate(
            48, (20, 30), 5, 8, 3, torch.device("cpu"), pixels=320 * 240, counts=counts, max_objects=max_objects
        ).seconds

    few, many = cost(ClusterCounts(per_window=2, distinct=10, ids=1)), cost(ClusterCounts(per_window=100))
    assert many["clustering"] > few["clustering"] and many["writing"] > 2 * few["writing"]  # ids to upsample
    assert many["backbone"] == few["backbone"]
    assert cost(ClusterCounts(per_window=100), max_objects=1)["writing"] == few["writing"]  # one id: nothing to pick
