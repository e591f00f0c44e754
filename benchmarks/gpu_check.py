"""One command that measures bavos on a GPU: the CUDA tests, then speed and memory of everything a user runs.

    python benchmarks/gpu_check.py --out DIR             # on a GPU machine, in about 6 minutes
    python benchmarks/gpu_check.py --out DIR --smoke     # the same code at tiny sizes on the CPU (a test runs this)

In order, each measurement in its own process (so that peak memory is its own), float32 at 320x480 unless said
(``--smoke`` runs them in one process per ``--jobs``, the kernels' windows apart, at one key-frame count, the tests
collected beside them: starting a process costs more than a tiny measurement, and its figures are not read):

1. ``pytest -m gpu``: every model test on CUDA, and CUDA against the CPU (partition, training step, checkpoints,
   bavos's Triton kernels against torch's operations);
2. the backbone's first batch against its second (the warm-up a run's first window pays);
3. one window of 3 frames against 7 and against 30 key frames, with bavos's kernels and with torch's operations
   (the code before the kernels): the attention, the clustering and the labels, and whether they agree; the
   attention kernels at a few choices of tiles and warps;
4. a 70-frame clip end to end: frames/s, seconds by stage (decode, backbone, attention, clustering, labels,
   writing), the waits for frames and masks, peak GPU memory; again with the background threads off (everything
   in one thread: the "before" of decoding and writing beside the device); in bf16 (speed, tokens in matching
   clusters against float32);
5. the 70-frame clip, a 150-frame clip (15 key frames) in each ``--products`` mode (float32, fp32-tensor, tf32,
   bf16: speed, tokens in matching clusters against float32), and a ``--long-frames`` clip (300: 30 key frames) in
   float32 and fp32-tensor;
6. 20 short clips in one call, the models loaded once: clips/s and frames/s;
7. a training step at 192x384, batch 8, float32 and bf16: steps/s and peak GPU memory;
8. pass 4's upsampling of a frame's ids to 1080p on the device and on the CPU;
9. the device's matrix-product rates (float32 with TensorFloat-32 off, TF32, bf16) and a window's two clustering
   products in each ``--products`` mode; the attention and clustering's achieved share of the float32 rate (their
   matrix-product flops counted from the shapes, ``bavos.models.costs.window_work``, over their measured seconds);
10. the goals of the GPU work (frames/s at 70 and 300 frames in float32 and fp32-tensor, fp32-tensor's tokens in
   matching clusters), each against this run's figure.

Synthetic clips (shapes moving over a grey background, 320x240, 24 fps, written with PyAV), a random ViT-S/8 and a
random correlator whose query and key weights are scaled by ``--sharpness`` (8): plain random weights give nearly
uniform attention, which converges to one cluster and would measure neither the clustering's cost nor bf16's
effect on the partition (the clusters it gives: docs/performance.md, "Precision"). Writes ``gpu_check.md``
(one table) and ``gpu_check.json`` into ``--out`` and prints the table.

Beyond torch, timm, einops, typer, rich, scipy and numpy it needs bavos's other dependencies (av and pillow to
read and write videos and pictures, safetensors, huggingface_hub, gdown, pycocotools, kornia): a machine with no
network gets them as wheels. It says which are missing before it starts.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

STANDARD = ("torch", "timm", "einops", "typer", "rich", "scipy", "numpy")
NEEDED = {
    "av": "av",
    "PIL": "pillow",
    "safetensors": "safetensors",
    "huggingface_hub": "huggingface_hub",
    "gdown": "gdown",
    "pycocotools": "pycocotools",
    "kornia": "kornia",
    "pytest": "pytest",
}

SIZES = {  # full run, --smoke
    "resolution": ((320, 480), (64, 96)),
    "clip": (70, 12),
    "mid": (150, 21),
    "long": (300, 40),
    "window_keys": ((7, 30), (2,)),  # --smoke: one, the code being the same
    "clips": ((20, 24), (3, 6)),
    "train": (((192, 384), 8, 5), ((128, 160), 2, 1)),
    "matmul": (8192, 256),
    "upsample": (((45, 80), (1080, 1920)), ((8, 12), (120, 160))),  # patch grid, frame
    "backbone": ("vit_small_patch8_224.dino", "bavos_test_vit"),
}


def size(args: argparse.Namespace, name: str) -> Any:
    return SIZES[name][1 if args.smoke else 0]


def missing_packages() -> list[str]:
    return [dist for module, dist in NEEDED.items() if importlib.util.find_spec(module) is None]


# --- measurements, each run in a child process -------------------------------------------------------------------


def _models(args: argparse.Namespace) -> Any:
    import torch

    from bavos.config import ModelConfig
    from bavos.models.correlator import Correlator
    from bavos.models.loading import load_models

    models = load_models(
        ModelConfig(backbone=size(args, "backbone"), backbone_weights="none", checkpoint="none"), args.device
    )
    torch.manual_seed(0)
    correlator = Correlator(models.backbone.embed_dim, 8).eval()
    with torch.no_grad():
        correlator.attn.qkv.weight[: 2 * models.backbone.embed_dim] *= args.sharpness  # queries and keys
    models.correlator = correlator.to(models.device)
    return models


def _peaks(device: Any) -> dict[str, float]:
    import torch

    out = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device.type == "cuda":
        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


def _segment(args: argparse.Namespace, frames: int, tmp: Path, **options: Any) -> dict[str, Any]:
    import numpy as np
    from bench_segment import write_clip

    from bavos.api import segment_video
    from bavos.config import SegmentConfig

    models = _models(args)
    clip = tmp / "clip.mp4"
    write_clip(clip, frames)
    cfg = SegmentConfig(resolution=size(args, "resolution"), device=args.device, **options)
    start = time.perf_counter()
    summary = segment_video(clip, tmp / "out", cfg, models)
    seconds = time.perf_counter() - start
    saved = Path(os.environ.get("BAVOS_GPU_CHECK_KEEP", tmp)) / f"{args.child}-labels.npy"
    with np.load(tmp / "out" / "clip" / "hierarchy.npz") as z:  # for comparing precisions across processes
        np.save(saved, z["labels"][int(z["level"])])
    return {
        "frames": frames,
        "seconds": seconds,
        "frames_per_s": frames / seconds,
        "timings": summary["timings"],
        "key_frames": summary["key_frames"],
        "clusters": summary["level_sizes"][-1],
        "labels": str(saved),
        **_peaks(models.device),
    }


def _clips(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    from bench_segment import write_clip

    from bavos.api import segment_video
    from bavos.config import SegmentConfig

    count, frames = size(args, "clips")
    paths = [tmp / f"c{i:02d}.mp4" for i in range(count)]
    for path in paths:
        write_clip(path, frames)
    start = time.perf_counter()
    models = _models(args)  # loaded once for all the clips, as `bavos segment a.mp4 b.mp4 ...`
    cfg = SegmentConfig(resolution=size(args, "resolution"), device=args.device)
    for path in paths:
        segment_video(path, tmp / "out", cfg, models)
    seconds = time.perf_counter() - start
    return {
        "clips": count,
        "frames": count * frames,
        "seconds": seconds,
        "clips_per_s": count / seconds,
        "frames_per_s": count * frames / seconds,
        **_peaks(models.device),
    }


def _train(args: argparse.Namespace, tmp: Path, precision: str) -> dict[str, Any]:
    import torch
    from bench_segment import write_clip

    from bavos.config import ModelConfig, train_config
    from bavos.models.backbone import build_backbone
    from bavos.models.devices import resolve_device
    from bavos.training.clips import ClipSamples, cache_clips
    from bavos.training.train import apply_gradients, batch_losses, make_optimizer, new_correlator, step_seed

    resolution, batch, steps = size(args, "train")
    device = resolve_device(args.device)
    cfg = train_config(
        resolution=resolution, batch_size=batch, workers=0, steps=1000, device=device.type, precision=precision
    )
    name = size(args, "backbone")
    backbone = build_backbone(name, "none").to(device)
    correlator = new_correlator(backbone.embed_dim, ModelConfig(backbone=name, checkpoint="none"), cfg)
    correlator = correlator.to(device).train()
    optimizer, scheduler = make_optimizer(correlator, cfg)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    paths = [tmp / f"t{i}.mp4" for i in range(2)]
    for path in paths:
        write_clip(path, cfg.frames * 4)
    data = cache_clips(paths, tmp / "cache", cfg.resolution, cfg.frames, 0)
    samples = ClipSamples(data, cfg.frames, cfg.gap, seed=0)
    frames = torch.stack([samples[i] for i in range(batch)]).to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def step(i: int) -> None:
        torch.manual_seed(step_seed(cfg.seed, i, 0))
        losses = batch_losses(backbone, correlator, frames, cfg, torch.Generator().manual_seed(i))
        apply_gradients(losses, optimizer, scheduler, scaler)

    step(0)  # warm-up
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    sync()
    start = time.perf_counter()
    for i in range(steps):
        step(i + 1)
    sync()
    seconds = time.perf_counter() - start
    return {
        "precision": precision,
        "resolution": list(resolution),
        "batch": batch,
        "steps": steps,
        "steps_per_s": steps / seconds,
        **_peaks(device),
    }


def _best(fn: Any, device: Any, repeats: int = 3, warm_up: bool = True) -> float:
    """Best seconds of ``fn()`` over ``repeats`` calls after one warm-up (none where ``warm_up`` is false: Triton's
    interpreter, with ``--smoke``, compiles nothing), the device synchronised around each."""
    import torch

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if warm_up:
        fn()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return min(times)


def _upsample(args: argparse.Namespace) -> dict[str, Any]:
    """Pass 4's upsampling of a frame's ids (20 objects, bilinear) to 1080p, on the device and on the CPU (where it
    ran before): milliseconds a frame, best of 3, and whether the ids are the same."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from bavos.pipeline.masks import upsample_ids

    grid, frame = size(args, "upsample")
    torch.manual_seed(0)
    smooth = F.avg_pool2d(torch.randn(1, 20, *grid), 5, 1, 2, count_include_pad=False)[0]  # objects, not noise
    ids = smooth.argmax(0).numpy().astype(np.uint8)
    device = torch.device(args.device)
    out: dict[str, Any] = {"grid": list(grid), "frame": list(frame)}
    for where, on in (("device", device), ("cpu", None)):
        out[f"{where}_ms"] = 1e3 * _best(lambda on=on: upsample_ids(ids, frame, "bilinear", device=on), device)
    same = upsample_ids(ids, frame, "bilinear", device=device)
    out["same_ids"] = bool(np.array_equal(same, upsample_ids(ids, frame, "bilinear")))
    return out


def _matmul(args: argparse.Namespace) -> dict[str, Any]:
    """The device's matrix-product rates: float32 (TF32 off), TF32, bf16 with float32 sums, and the clustering's two
    products in each --products mode at a window's shapes (7,200 tokens against 7 key frames at 320x480)."""
    import torch

    from bavos.models.devices import resolve_device, strict_float32
    from bavos.pipeline import products

    device = resolve_device(args.device)
    n = size(args, "matmul")
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    out: dict[str, Any] = {"n": n}
    with strict_float32(device):
        out["tflops"] = 2 * n**3 / _best(lambda: a @ b, device, 10) / 1e12
        for mode in ("tf32", "bf16"):
            with products.products(mode):
                out[f"tflops_{mode}"] = 2 * n**3 / _best(lambda: products.cross(a, b), device, 10) / 1e12
        rows, m = (96, 240) if args.smoke else (7200, 7 * 2400)
        p = torch.softmax(torch.randn(rows, m, device=device) * 4, 1)
        adjacency = (torch.rand(rows, rows, device=device) < 0.1).float()
        for mode in ("float32", "fp32-tensor", "tf32", "bf16"):
            with products.products(mode):
                cross = _best(lambda: products.cross(p, p), device)
                smooth = _best(lambda: products.smooth(adjacency, p), device)
            out[f"window_products_{mode}"] = {
                "cross_s": cross,
                "smooth_s": smooth,
                "tflops": 4 * rows * rows * m / (cross + smooth) / 1e12,
            }
    return out


def _window(args: argparse.Namespace, tmp: Path, keys: int) -> dict[str, Any]:
    """One window of 3 frames against ``keys`` key frames of a clip, with bavos's kernels and with torch's
    operations (the code before the kernels): the attention, the clustering and the labels, best of 3 each (1 with
    ``--smoke``, which interprets the kernels); the rows' largest difference and whether the window's clusters are the
    same."""
    import numpy as np
    from bench_segment import write_clip

    from bavos.config import SegmentConfig
    from bavos.io.sources import open_source
    from bavos.models.devices import kernels, strict_float32
    from bavos.pipeline.segment import _Clock, key_pass, query_windows
    from bavos.progress import as_progress

    models = _models(args)
    clip = tmp / "clip.mp4"
    write_clip(clip, 10 * keys)
    cfg = SegmentConfig(resolution=size(args, "resolution"), device=args.device, stride=1).for_device(
        models.device.type
    )
    clock, source = _Clock(models.device), open_source(clip)
    key_set = key_pass(source, models, cfg, clock, as_progress(None))
    _, q = next(query_windows(source, models, cfg, clock, "hierarchy", key_set))
    out: dict[str, Any] = {"key_frames": int(key_set.k.shape[0])}
    rows_by_way, labels_by_way = {}, {}
    repeats = 1 if args.smoke else 3
    with strict_float32(models.device):
        for way, on in (("torch", False), ("kernels", True)):
            with kernels(on):
                out[way], rows_by_way[way], labels_by_way[way] = _time_window(
                    q, key_set.k, models, cfg.tau, repeats, not args.smoke
                )
    out["clusters"] = int(len(np.unique(labels_by_way["torch"])))
    out["rows_max_difference"] = float((rows_by_way["torch"] - rows_by_way["kernels"]).abs().max())
    out["same_clusters"] = bool(np.array_equal(labels_by_way["torch"], labels_by_way["kernels"]))
    return out


# rows, keys, warps: the tiles before, the default and the two others that spill nothing on an H100 with fewer
# registers (docs/performance.md, "The kernels' registers"); each costs a compilation (seconds)
TILE_CHOICES = ((64, 64, 4), (64, 64, 16), (32, 64, 8), (32, 32, 8))


def _tiles(args: argparse.Namespace) -> dict[str, Any]:
    """The attention kernels (``fused.fused_rows``) at each of ``TILE_CHOICES`` on a window's shapes (3 frames against
    7 key frames, ViT-S's 6 heads of 64): best of 3 seconds each, and the rows' largest difference from the default
    tiles' (``fused.ATTENTION_TILES``; the first choice is the tiles before it). ``--smoke`` (interpreted) times once
    the first choice and the default against 2 key frames."""
    import math

    import torch

    from bavos.pipeline import fused
    from bavos.pipeline.attention import underflow_bounds

    device = torch.device(args.device)
    heads, d = (2, 16) if args.smoke else (6, 64)
    tokens = math.prod(s // 8 for s in size(args, "resolution"))
    g = torch.Generator().manual_seed(0)
    q = (torch.randn(heads, 3 * tokens, d, generator=g) * d**-0.5 * math.log2(math.e)).to(device)
    k = torch.randn(heads, (2 if args.smoke else 7) * tokens, d, generator=g).to(device)
    low, floor = underflow_bounds(torch.float32)
    default = fused.fused_rows(q, k, low, floor)
    out: dict[str, Any] = {"rows": q.shape[1], "keys": k.shape[1], "default": list(fused.ATTENTION_TILES)}
    choices = (TILE_CHOICES[0], tuple(fused.ATTENTION_TILES)) if args.smoke else TILE_CHOICES
    for choice in choices:
        tiles = fused.Tiles(*choice)
        rows = fused.fused_rows(q, k, low, floor, tiles)
        out["x".join(map(str, choice))] = {
            "seconds": _best(
                lambda t=tiles: fused.fused_rows(q, k, low, floor, t), device, 1 if args.smoke else 3, not args.smoke
            ),
            "max_difference": float((rows - default).abs().max()),
        }
    return out


def _time_window(
    q: Any, k: Any, models: Any, tau: float, repeats: int, warm: bool
) -> tuple[dict[str, float], Any, Any]:
    """Seconds of a window's attention, clustering and labels (best of ``repeats`` each, after a warm-up if ``warm``);
    its rows and level-0 labels."""
    from bavos.pipeline.attention import window_attention
    from bavos.pipeline.cluster import MergeTreeBuilder, label_window

    rows = window_attention(q, k, models.scale).reshape(-1, k.shape[0] * q.shape[2])  # (n, M)
    attention = _best(lambda: window_attention(q, k, models.scale), models.device, repeats, warm)
    clustering = _best(lambda: MergeTreeBuilder(tau).add_window(rows), models.device, repeats, warm)
    builder = MergeTreeBuilder(tau)
    level0 = builder.add_window(rows)
    hierarchy = builder.finish()
    labels = _best(lambda: label_window(rows, level0, hierarchy), models.device, repeats, warm)
    return {"attention_s": attention, "clustering_s": clustering, "labels_s": labels}, rows, level0


def _first_batch(args: argparse.Namespace) -> dict[str, Any]:
    """The backbone's first batch at the run's size against its second (the warm-up a run's first window pays)."""
    import torch

    from bavos.config import SegmentConfig
    from bavos.models.loading import frame_tokens

    models = _models(args)
    cfg = SegmentConfig(resolution=size(args, "resolution"), device=args.device).for_device(models.device.type)
    h, w = cfg.model_size
    batch = torch.zeros(cfg.batch_size, h, w, 3, dtype=torch.uint8)
    sync = torch.cuda.synchronize if models.device.type == "cuda" else (lambda: None)
    seconds = []
    for _ in range(2):
        sync()
        start = time.perf_counter()
        frame_tokens(models, cfg, batch)
        sync()
        seconds.append(time.perf_counter() - start)
    return {"batch": cfg.batch_size, "first_s": seconds[0], "second_s": seconds[1]}


PRODUCT_RUNS = {"clip-fp32-tensor": "fp32-tensor", "clip-tf32": "tf32", "clip-bf16-products": "bf16"}  # --products
MID_RUNS = {"mid": "float32", "mid-fp32-tensor": "fp32-tensor", "mid-tf32": "tf32", "mid-bf16-products": "bf16"}
LONG_RUNS = {"long": "float32", "long-fp32-tensor": "fp32-tensor"}


def child(args: argparse.Namespace, name: str) -> dict[str, Any]:
    args.child = name
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        if args.child == "clip":
            return _segment(args, size(args, "clip"), tmp, background=True)
        if args.child == "clip-inline":
            return _segment(args, size(args, "clip"), tmp, background=False)
        if args.child == "clip-bf16":
            return _segment(args, size(args, "clip"), tmp, precision="bf16")
        if args.child in PRODUCT_RUNS:
            return _segment(args, size(args, "clip"), tmp, products=PRODUCT_RUNS[args.child])
        if args.child in MID_RUNS:
            return _segment(args, size(args, "mid"), tmp, products=MID_RUNS[args.child])
        if args.child in LONG_RUNS:
            return _segment(args, args.long_frames or size(args, "long"), tmp, products=LONG_RUNS[args.child])
        if args.child == "window-tiles":
            return _tiles(args)
        if args.child.startswith("window-"):
            return _window(args, tmp, int(args.child.split("-")[1]))
        if args.child == "first-batch":
            return _first_batch(args)
        if args.child == "clips":
            return _clips(args, tmp)
        if args.child in ("train-float32", "train-bf16"):
            return _train(args, tmp, args.child.split("-")[1])
        if args.child == "matmul":
            return _matmul(args)
        if args.child == "upsample":
            return _upsample(args)
    raise SystemExit(f"unknown measurement {args.child}")


# --- the parent: run each, keep going on failure, write the table -------------------------------------------------


RESULT = "gpu_check result:"  # a child's line that holds one measurement's JSON


def run_child(names: list[str], argv: list[str], keep: Path) -> dict[str, dict[str, Any]]:
    """``names`` measured in one child process, in turn: each one's result, or its error (the child's last line on
    stderr; the ones after a failure are not run)."""
    env = {**os.environ, "BAVOS_GPU_CHECK_KEEP": str(keep)}
    if "--smoke" in argv and names[0].startswith("window-"):  # the kernels on the CPU: Triton's interpreter
        env["TRITON_INTERPRET"] = "1"
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, __file__, "--child", ",".join(names), *argv],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    wall = (time.perf_counter() - start) / len(names)  # a group's wall time shared (--smoke only groups them)
    done = [json.loads(line[len(RESULT) :]) for line in proc.stdout.splitlines() if line.startswith(RESULT)]
    error = (proc.stderr.strip().splitlines() or ["exit code " + str(proc.returncode)])[-1]
    return {
        name: {**done[i], "wall_s": wall} if i < len(done) else {"error": error, "wall_s": wall}
        for i, name in enumerate(names)
    }


def groups(names: tuple[str, ...], args: argparse.Namespace) -> list[list[str]]:
    """The child processes' measurements: one each, or with ``--smoke`` the kernels' windows in one (it interprets
    them) and the others dealt among ``--jobs`` processes."""
    if not args.smoke:
        return [[name] for name in names]
    windows = [name for name in names if name.startswith("window-")]
    others = [name for name in names if name not in windows]
    jobs = max(1, args.jobs)
    return [group for group in (windows, *(others[i::jobs] for i in range(jobs))) if group]


def _all_matched(results: dict[str, Any]) -> dict[str, Any]:
    """Tokens in matching clusters of each run against its float32 run: bf16, each --products mode."""
    out = {"bf16_tokens_matched": _tokens_matched(results["clip"], results["clip-bf16"])}
    for key in PRODUCT_RUNS:
        out[f"{key}_tokens_matched"] = _tokens_matched(results["clip"], results[key])
    for runs, base in ((MID_RUNS, "mid"), (LONG_RUNS, "long")):
        for key in runs:
            if key != base:
                out[f"{key}_tokens_matched"] = _tokens_matched(results[base], results[key])
    return out


def run_tests(args: argparse.Namespace) -> dict[str, Any]:
    """pytest -m gpu (with --smoke: collected only, there being no GPU)."""
    root = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", str(root / "tests")]
    if args.smoke:
        cmd.append("--collect-only")
    elif importlib.util.find_spec("xdist") is not None:
        cmd += ["-n", "8"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=root)
    lines = proc.stdout.strip().splitlines()
    failed = [line for line in lines if line.startswith(("FAILED", "ERROR"))]
    return {
        "command": " ".join(cmd[1:]),
        "exit_code": proc.returncode,
        "summary": lines[-1] if lines else "",
        "failed": failed,
        "seconds": time.perf_counter() - start,
    }


def _share(clip: dict[str, Any], heads: int, dim: int, grid: tuple[int, int], rate: float) -> float | None:
    """Matrix-product flops of the attention and clustering (counted from the shapes) over their seconds, as a share
    of the device's float32 rate."""
    from bavos.models.costs import CLUSTERS_PER_WINDOW, DISTINCT_PER_LEVEL0, window_work

    t = clip.get("timings") or {}
    seconds = sum(t.get(k, 0.0) for k in ("attention", "clustering", "labels"))
    if not seconds or not rate:
        return None
    n = grid[0] * grid[1]
    m = clip["key_frames"] * n
    windows = -(-clip["frames"] // 3)
    passes = window_work(3 * n, m, dim, heads, DISTINCT_PER_LEVEL0 * windows * CLUSTERS_PER_WINDOW)[:2]  # on CUDA the
    flops = windows * sum(flops for flops, _ in passes)  # labels pass computes the attention again (attention_plan)
    return flops / seconds / (rate * 1e12)


def _tokens_matched(a: dict[str, Any], b: dict[str, Any]) -> float | None:
    import numpy as np

    from bavos.evaluation.metrics import matched_share

    if "labels" not in a or "labels" not in b:
        return None
    return matched_share(np.load(a["labels"]), np.load(b["labels"]))


def table(results: dict[str, Any], args: argparse.Namespace) -> str:
    def cell(r: dict[str, Any], key: str, fmt: str = "{:.1f}") -> str:
        return "failed" if "error" in r else (fmt.format(r[key]) if r.get(key) is not None else "-")

    def stages(r: dict[str, Any]) -> str:
        if "error" in r:
            return ""
        t = r["timings"]
        return " / ".join(
            f"{t.get(k, 0):.2f}" for k in ("decode", "backbone", "attention", "clustering", "labels", "writing")
        )

    def waits(r: dict[str, Any]) -> str:
        if "error" in r:
            return ""
        w, total = r["timings"]["waits"], r["timings"]["total"]
        model = sum(w.get(k, 0.0) for k in ("keys", "hierarchy", "labels"))
        return f"model waits for frames {model / total:.0%}, writer for masks {w.get('masks', 0) / total:.0%}"

    h, w = size(args, "resolution")
    lines = ["| measurement | result | notes |", "| --- | --- | --- |"]
    tests = results["tests"]
    lines.append(
        f"| `{tests['command']}` | {tests['summary']} | {len(tests['failed'])} failed, {tests['seconds']:.0f} s |"
    )
    for key, label in (("clip", "float32"), ("clip-inline", "float32, background threads off"), ("clip-bf16", "bf16")):
        r = results[key]
        lines.append(
            f"| {size(args, 'clip')} frames at {h}x{w}, {label} | {cell(r, 'frames_per_s')} frames/s | "
            f"stages s (decode / backbone / attention / clustering / labels / writing): {stages(r)}; "
            f"{waits(r)}; {cell(r, 'clusters', '{}')} clusters; "
            f"peak GPU {cell(r, 'peak_gpu_mb', '{:.0f}')} MB |"
        )
    runs = [(key, mode, size(args, "clip")) for key, mode in PRODUCT_RUNS.items()]
    runs += [(key, mode, size(args, "mid")) for key, mode in MID_RUNS.items()]
    runs += [(key, mode, args.long_frames or size(args, "long")) for key, mode in LONG_RUNS.items()]
    for key, mode, frames in runs:
        r = results[key]
        matched = results.get(f"{key}_tokens_matched")
        lines.append(
            f"| {frames} frames at {h}x{w}, --products {mode} | {cell(r, 'frames_per_s')} frames/s | "
            f"{'-' if matched is None else f'{matched:.2%}'} of tokens in matching clusters against float32; "
            f"{cell(r, 'key_frames', '{}')} key frames, {cell(r, 'clusters', '{}')} clusters; stages s: {stages(r)}; "
            f"peak GPU {cell(r, 'peak_gpu_mb', '{:.0f}')} MB |"
        )
    if results.get("bf16_tokens_matched") is not None:
        lines.append(
            f"| bf16 against float32 | {results['bf16_tokens_matched']:.2%} of tokens in matching clusters | "
            f"{results['clip'].get('clusters')} clusters in float32, {results['clip-bf16'].get('clusters')} "
            f"in bf16; speed {results['bf16_speedup']:.2f}x float32's |"
        )
    lines += window_rows(results, args)
    r = results["clips"]
    lines.append(
        f"| {r.get('clips', '-')} short clips in one call (models loaded once) | "
        f"{cell(r, 'clips_per_s', '{:.2f}')} clips/s | {cell(r, 'frames_per_s')} frames/s |"
    )
    for key in ("train-float32", "train-bf16"):
        r = results[key]
        lines.append(
            f"| training step {r.get('resolution', ['-', '-'])[0]}x{r.get('resolution', ['-', '-'])[1]}, "
            f"batch {r.get('batch', '-')}, {key.split('-')[1]} | {cell(r, 'steps_per_s', '{:.2f}')} steps/s "
            f"| peak GPU {cell(r, 'peak_gpu_mb', '{:.0f}')} MB |"
        )
    r = results["matmul"]
    share = results.get("clustering_share")
    lines.append(
        f"| matrix product {r.get('n', '-')}^3: float32 (TF32 off), TF32, bf16 | {cell(r, 'tflops', '{:.1f}')}, "
        f"{cell(r, 'tflops_tf32', '{:.1f}')}, {cell(r, 'tflops_bf16', '{:.1f}')} TFLOP/s | attention and clustering "
        f"achieve {'-' if share is None else f'{share:.1%}'} of float32's |"
    )
    for mode in ("float32", "fp32-tensor", "tf32", "bf16"):
        w = r.get(f"window_products_{mode}")
        if w:
            lines.append(
                f"| a window's two products, --products {mode} | {w['tflops']:.1f} TFLOP/s | "
                f"distances {1e3 * w['cross_s']:.1f} ms, smoothing {1e3 * w['smooth_s']:.1f} ms |"
            )
    r = results["upsample"]
    lines.append(
        f"| pass 4: a frame's ids (20 objects) upsampled to {'x'.join(map(str, r.get('frame', [])))}, bilinear | "
        f"{cell(r, 'device_ms')} ms on the device, {cell(r, 'cpu_ms')} ms on the CPU | same ids: "
        f"{cell(r, 'same_ids', '{}')} |"
    )
    lines += goals(results, args)
    for key, r in results.items():
        if isinstance(r, dict) and "error" in r:
            lines.append(f"| {key}: failed | {r['error'][:300]} | |")
    return "\n".join(lines)


def window_rows(results: dict[str, Any], args: argparse.Namespace) -> list[str]:
    """The windows timed with torch's operations and with bavos's kernels, and the backbone's first batch."""
    lines = []
    for keys in size(args, "window_keys"):
        r = results[f"window-{keys}"]
        if "error" in r:
            continue
        old, new = r["torch"], r["kernels"]
        lines.append(
            f"| a window of 3 frames, {keys} key frames, {r['clusters']} clusters: torch's operations -> bavos's "
            f"kernels | attention {1e3 * old['attention_s']:.1f} -> {1e3 * new['attention_s']:.1f} ms, clustering "
            f"{1e3 * old['clustering_s']:.1f} -> {1e3 * new['clustering_s']:.1f} ms, labels "
            f"{1e3 * old['labels_s']:.1f} -> {1e3 * new['labels_s']:.1f} ms | rows differ by at most "
            f"{r['rows_max_difference']:.1e}; the same clusters: {r['same_clusters']} |"
        )
    r = results["window-tiles"]
    if "error" not in r:
        timed = [c for c in TILE_CHOICES if "x".join(map(str, c)) in r]
        cells = ", ".join(
            f"{'x'.join(map(str, c[:2]))}/{c[2]}: {1e3 * r['x'.join(map(str, c))]['seconds']:.1f} ms" for c in timed
        )
        spread = max(r["x".join(map(str, c))]["max_difference"] for c in timed)
        lines.append(
            f"| the attention kernels' tiles (rows x keys/warps), {r['rows']} rows against {r['keys']} key tokens | "
            f"{cells} | default {'x'.join(map(str, r['default'][:2]))}/{r['default'][2]}, the first the tiles before "
            f"it; rows differ by at most {spread:.1e} |"
        )
    r = results["first-batch"]
    if "error" not in r:
        lines.append(
            f"| the backbone's first batch of {r['batch']} frames, then its second | {r['first_s']:.2f} s, then "
            f"{r['second_s']:.3f} s | the warm-up a run's first window pays |"
        )
    return lines


def goals(results: dict[str, Any], args: argparse.Namespace) -> list[str]:
    """The issue's goals against this run's figures, one row each."""
    rows = []
    for key, label, floor in (
        ("clip", "float32", 30),
        ("clip-fp32-tensor", "fp32-tensor", 55),
        ("long", "float32", 8.5),
        ("long-fp32-tensor", "fp32-tensor", 20),
    ):
        r = results[key]
        got = r.get("frames_per_s")
        frames = r.get("frames", "-")
        verdict = "-" if got is None else ("met" if got >= floor else "not met")
        rows.append(
            f"| goal: {frames} frames, {label}, >= {floor} frames/s | {'-' if got is None else f'{got:.1f}'} | "
            f"{verdict} |"
        )
    shares = [results.get(f"{k}_tokens_matched") for k in ("clip-fp32-tensor", "mid-fp32-tensor", "long-fp32-tensor")]
    known = [x for x in shares if x is not None]
    lowest = min(known) if known else None
    rows.append(
        f"| goal: fp32-tensor against float32 >= 99.9 % of tokens at every count | "
        f"{'-' if lowest is None else f'{lowest:.2%} at the lowest'} | "
        f"{'-' if lowest is None else ('met' if lowest >= 0.999 else 'not met')} |"
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="folder for gpu_check.md and gpu_check.json")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU: checks that the script runs")
    parser.add_argument("--device", default=None, help="default: cuda (cpu with --smoke)")
    parser.add_argument(
        "--long-frames", type=int, default=0, help="frames of the long clip (default 300; 40 with --smoke)"
    )
    parser.add_argument("--skip-tests", action="store_true", help="do not run pytest -m gpu")
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="measurements run at once (more than 1 only to check that the script runs: they would share the machine)",
    )
    parser.add_argument(
        "--sharpness",
        type=float,
        default=8.0,
        help="scale of the random correlator's query and key weights (peaked attention, many clusters)",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.device = args.device or ("cpu" if args.smoke else "cuda")
    if args.child:  # one measurement, or several in turn (--smoke): one JSON line each
        for name in args.child.split(","):
            print(RESULT, json.dumps(child(args, name)), flush=True)
        return
    if args.out is None:
        parser.error("--out DIR is required")
    missing = missing_packages()
    print(f"gpu_check needs, beyond {', '.join(STANDARD)}: {', '.join(NEEDED.values())}", flush=True)
    if missing:
        sys.exit(f"gpu_check: missing here: {', '.join(missing)} (bring them as wheels: pip download)")
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("gpu_check: no CUDA device here; --smoke runs the same code at tiny sizes on the CPU")
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    argv = (
        ["--device", args.device]
        + (["--smoke"] if args.smoke else [])
        + (["--long-frames", str(args.long_frames)] if args.long_frames else [])
        + ["--sharpness", str(args.sharpness)]
    )
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    results: dict[str, Any] = {
        "device": device_name,
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "smoke": args.smoke,
        "sharpness": args.sharpness,
    }
    skipped = {"command": "pytest -m gpu", "summary": "skipped (--skip-tests)", "failed": [], "seconds": 0.0}
    # the tests run alone before anything is timed; --smoke times nothing that counts: collected beside the rest
    beside = ThreadPoolExecutor(1)
    tests = beside.submit(lambda: skipped if args.skip_tests else run_tests(args))
    if not args.smoke:
        results["tests"] = tests.result()
        print(f"tests: {results['tests']['summary']}", flush=True)
    names = (
        "first-batch",
        *(f"window-{keys}" for keys in size(args, "window_keys")),
        "window-tiles",
        "clip",
        "clip-inline",
        "clip-bf16",
        *PRODUCT_RUNS,
        *MID_RUNS,
        *LONG_RUNS,
        "clips",
        "train-float32",
        "train-bf16",
        "upsample",
        "matmul",
    )
    with tempfile.TemporaryDirectory() as keep, ThreadPoolExecutor(max(1, args.jobs)) as pool:
        runs = [pool.submit(run_child, group, argv, Path(keep)) for group in groups(names, args)]
        done = {name: result for run in runs for name, result in run.result().items()}
        for name in names:
            results[name] = done[name]
            print(
                f"{name}: {'failed: ' + results[name]['error'] if 'error' in results[name] else 'done'} "
                f"({results[name]['wall_s']:.0f} s)",
                flush=True,
            )
        if args.smoke:
            results["tests"] = tests.result()
            print(f"tests: {results['tests']['summary']}", flush=True)
        beside.shutdown()
        results |= _all_matched(results)
    if "error" not in results["clip"] and "error" not in results["clip-bf16"]:
        results["bf16_speedup"] = results["clip-bf16"]["frames_per_s"] / results["clip"]["frames_per_s"]
    if "error" not in results["clip"] and "error" not in results["matmul"]:
        grid = tuple(s // 8 for s in size(args, "resolution"))
        dim = 32 if args.smoke else 384
        results["clustering_share"] = _share(results["clip"], 8, dim, grid, results["matmul"]["tflops"])
    results["seconds"] = time.perf_counter() - started
    text = (
        f"bavos gpu_check on {device_name}, torch {torch.__version__}, {results['date']}"
        f"{' (--smoke: tiny sizes, CPU)' if args.smoke else ''}, {results['seconds']:.0f} s\n\n"
        + table(results, args)
        + "\n"
    )
    (args.out / "gpu_check.md").write_text(text)
    (args.out / "gpu_check.json").write_text(json.dumps(results, indent=2) + "\n")
    print(text)
    failed = [k for k, v in results.items() if isinstance(v, dict) and "error" in v]
    if failed or results["tests"].get("exit_code", 0) not in (0, 5):
        sys.exit(
            f"gpu_check: {len(failed)} measurement(s) failed ({', '.join(failed) or 'none'}); tests exit code "
            f"{results['tests'].get('exit_code')}"
        )


if __name__ == "__main__":
    main()
