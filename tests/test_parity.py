"""Same weights, same partition: `bavos segment` at its defaults against an independent reference of the release's
pipeline (tests/reference_pipeline.py, written from method.md §2-§3), with a checkpoint in the release's layout.

The checkpoint has random weights; its correlator's query/key weights are scaled to make the attention sharper
(3.4: milder, 3.5: sharper; about 60 and 130 clusters on 6 DAVIS frames at 320 x 480). The share of tokens in
matching clusters (``bavos.evaluation.metrics.matched_share``) must reach 99.9%.
"""

from __future__ import annotations

import json
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SHARED, make_release_checkpoint
from PIL import Image
from reference_cluster import reference_partition, same_partition, vector_partition
from reference_pipeline import reference_segment

from bavos.evaluation.metrics import matched_share
from bavos.models.devices import gpu_ways


def textured_frames(n: int, height: int, width: int, seed: int = 0) -> list[np.ndarray]:
    """Smooth random colour fields drifting right by 2 pixels a frame: every patch looks different."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(height // 8 + 2, (width + 2 * n) // 8 + 2, 3)).astype(np.uint8)
    field = np.asarray(Image.fromarray(coarse).resize(((width + 2 * n), height), Image.BICUBIC))
    return [np.ascontiguousarray(field[:, 2 * t : 2 * t + width]) for t in range(n)]


def bavos_labels(run_cli, frames: list[np.ndarray], checkpoint: Path, tmp: Path, *options: str) -> np.ndarray:
    """(T, N) labels of `bavos segment` (the paper's settings, which a CPU's defaults are not, and --max-objects 0) on
    frames given as a lossless PNG folder."""
    folder = tmp / "frames"
    folder.mkdir()
    for t, image in enumerate(frames):
        Image.fromarray(image).save(folder / f"{t:05d}.png")
    result = run_cli(
        "segment",
        folder,
        "-o",
        tmp / "out",
        "--checkpoint",
        checkpoint,
        "--max-objects",
        "0",
        "--device",
        "cpu",
        "--stride",
        "1",
        "--max-key-frames",
        "30",
        "-q",
        "--no-overlay",
        *options,
    )
    assert result.code == 0, result.err
    summary = json.loads((tmp / "out" / "frames" / "summary.json").read_text())
    assert summary["weights"]["backbone_weights_from"] == "checkpoint"  # the release file's own encoder
    hierarchy = np.load(tmp / "out" / "frames" / "hierarchy.npz")
    return hierarchy["labels"][int(hierarchy["level"])]


def test_vector_reference_is_the_plain_reference() -> None:
    g = torch.Generator().manual_seed(4)
    for scale in (2.0, 4.0, 6.0):
        attn = (torch.randn(7, 10, 24, generator=g, dtype=torch.float64) * scale).softmax(-1).numpy()
        for tau in (0.5, 1.0):
            assert same_partition(vector_partition(attn, tau), reference_partition(attn, tau))


@pytest.mark.parametrize(("sharpness", "way"), [(3.4, "cpu"), (3.5, "cpu"), (3.5, "gpu")])
def test_synthetic_frames_give_the_reference_partition(sharpness: float, way: str, tmp_path: Path, run_cli) -> None:
    """At both sharpnesses in a CPU's way; the sharper in a GPU's way too (on this CPU: ``gpu_ways``)."""
    checkpoint = make_release_checkpoint(tmp_path / "release.pth", sharpness=sharpness)
    frames = textured_frames(13, 64, 96)  # 13 frames: 2 key frames at ratio 10, windows of 3, 3, 3, 3, 1
    with gpu_ways() if way == "gpu" else nullcontext():
        got = bavos_labels(run_cli, frames, checkpoint, tmp_path, "--resolution", "64", "96")
    expected = reference_segment(frames, torch.load(checkpoint, weights_only=True)["model_state_dict"])
    assert len(np.unique(expected)) >= 5  # enough clusters for the comparison to mean something
    assert matched_share(got, expected) >= 0.999


@pytest.mark.shared
@pytest.mark.skipif(not (SHARED / "data" / "davis-mini").is_dir(), reason="needs ../shared/data/davis-mini")
def test_davis_frames_at_320x480_give_the_reference_partition(tmp_path: Path, run_cli) -> None:
    """Real frames resized once to 320 x 480 (so neither side resizes), the sharper checkpoint, 4 frames (two
    windows), every other option at its default (320 x 480 is the default on a GPU; a CPU's is smaller)."""
    files = sorted((SHARED / "data" / "davis-mini" / "JPEGImages" / "480p" / "blackswan").glob("*.jpg"))[:4]
    frames = [np.asarray(Image.open(f).convert("RGB").resize((480, 320), Image.BILINEAR)) for f in files]
    checkpoint = make_release_checkpoint(tmp_path / "release.pth", sharpness=3.5)
    got = bavos_labels(run_cli, frames, checkpoint, tmp_path, "--resolution", "320", "480")  # the GPU default
    assert got.shape == (4, 40 * 60)
    expected = reference_segment(frames, torch.load(checkpoint, weights_only=True)["model_state_dict"])
    assert len(np.unique(expected)) >= 50
    assert matched_share(got, expected) >= 0.999
