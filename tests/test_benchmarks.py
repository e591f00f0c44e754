"""The benchmarks run: gpu_check's --smoke (the same code at tiny sizes on the CPU), so the GPU check never rots."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MEASUREMENTS = (
    "first-batch",
    "window-2",
    "window-tiles",
    "clip",
    "clip-inline",
    "clip-bf16",
    "clip-fp32-tensor",
    "clip-tf32",
    "clip-bf16-products",
    "mid",
    "mid-fp32-tensor",
    "mid-tf32",
    "mid-bf16-products",
    "long",
    "long-fp32-tensor",
    "clips",
    "train-float32",
    "train-bf16",
    "upsample",
    "matmul",
)


def test_gpu_check_smoke_runs_every_measurement(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--out", str(tmp_path), "--smoke", "--jobs", "2"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert proc.stdout.startswith("gpu_check needs, beyond torch, timm, einops, typer, rich, scipy, numpy: av,")
    data = json.loads((tmp_path / "gpu_check.json").read_text())
    assert data["smoke"] and data["device"] == "CPU"
    for name in MEASUREMENTS:
        assert "error" not in data[name], (name, data[name])
    assert data["tests"]["exit_code"] in (0, 5) and "--collect-only" in data["tests"]["command"]
    assert data["clip"]["frames"] == 12 and data["long"]["frames"] == 40 and data["clips"]["clips"] == 3
    for name in ("clip", "clip-inline", "clip-bf16", "long"):
        timings = data[name]["timings"]
        assert all(timings[k] > 0 for k in ("decode", "backbone", "attention", "clustering", "labels", "writing"))
        assert set(timings["waits"]) == {"keys", "hierarchy", "labels", "writing", "masks", "writer"}
    assert 0 <= data["bf16_tokens_matched"] <= 1 and data["matmul"]["tflops"] > 0
    assert 0 < data["clustering_share"] < 10
    assert data["train-float32"]["steps_per_s"] > 0 and data["train-bf16"]["precision"] == "bf16"
    table = (tmp_path / "gpu_check.md").read_text()
    assert table in proc.stdout and table.count("\n| ") == 33
    assert 0.9 <= data["clip-fp32-tensor_tokens_matched"] <= 1
    assert 0.9 <= data["long-fp32-tensor_tokens_matched"] <= 1 and data["mid"]["frames"] == 21
    window = data["window-2"]  # bavos's kernels (in Triton's interpreter here) against torch's operations
    assert window["key_frames"] == 2 and window["same_clusters"] and window["rows_max_difference"] < 1e-6
    tiles = data["window-tiles"]  # the tiles before and the default, the same rows in the interpreter
    default = "x".join(map(str, tiles["default"]))
    assert tiles[default]["max_difference"] == 0 and tiles["64x64x4"]["max_difference"] < 1e-6
    assert data["first-batch"]["first_s"] > 0 and "| goal: " in table
    assert data["upsample"]["same_ids"] and data["upsample"]["frame"] == [120, 160]
    assert ": failed |" not in table and "| failed |" not in table


def test_bench_view_runs(view_result: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_view.py"), str(view_result), "--scrubs", "2"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[0].startswith(f"{view_result}: 9 frames of 64x48")
    assert any(line.startswith("far frame (cold): median") for line in lines)
    assert lines[-2].startswith("cut level 0, max objects 0:") and "objects)" in lines[-2]


def test_bench_segment_runs_at_the_cpus_operating_point() -> None:
    """Without --stride, as a CPU runs (every second frame): the floors sample the frames the run processed."""
    args = ["--frames", "6", "--factor", "2", "--resolution", "64", "96", "--device", "cpu", "--backbone"]
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_segment.py"), *args, "bavos_test_vit"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1].startswith("2x the frames: time ")
