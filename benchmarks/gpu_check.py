"""One command that measures bavos on a GPU: the CUDA tests, then speed and memory of everything a user runs.

    python benchmarks/gpu_check.py --out DIR             # on a GPU machine, in at most about 8 minutes
    python benchmarks/gpu_check.py --out DIR --smoke     # the same code at tiny sizes on the CPU (a test runs this)

In order, each measurement in its own process (so that peak memory is its own), float32 at 320x480 unless said:

1. ``pytest -m gpu``: every model test on CUDA, and CUDA against the CPU (partition, training step, checkpoints);
2. a 70-frame clip end to end: frames/s, seconds by stage (decode, backbone, attention, clustering, labels,
   writing), the waits for frames and masks, peak GPU memory; again with the background threads off (everything
   in one thread: the "before" of decoding and writing beside the device); in bf16 (speed, tokens in matching
   clusters against float32); and with each ``--products`` mode of the clustering (fp32-tensor, tf32, bf16: speed,
   tokens in matching clusters against float32);
3. a ``--long-frames`` clip (1,000): frames/s, peak GPU and host memory;
4. 20 short clips in one call, the models loaded once: clips/s and frames/s;
5. a training step at 192x384, batch 8, float32 and bf16: steps/s and peak GPU memory;
6. the device's float32 matrix-product rate (TensorFloat-32 off), and the attention and clustering's achieved share
   of it (their matrix-product flops counted from the shapes, ``bavos.models.costs.window_work``, over their
   measured seconds).

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
    "long": (1000, 40),
    "clips": ((20, 24), (3, 6)),
    "train": (((192, 384), 8, 5), ((128, 160), 2, 1)),
    "matmul": (8192, 256),
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


def _matmul(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from bavos.models.devices import resolve_device, strict_float32

    device = resolve_device(args.device)
    n = size(args, "matmul")
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    with strict_float32(device):
        for _ in range(2):
            a @ b
        sync()
        repeats = 10
        start = time.perf_counter()
        for _ in range(repeats):
            a @ b
        sync()
    seconds = (time.perf_counter() - start) / repeats
    return {"n": n, "tflops": 2 * n**3 / seconds / 1e12}


PRODUCT_RUNS = {"clip-fp32-tensor": "fp32-tensor", "clip-tf32": "tf32", "clip-bf16-products": "bf16"}  # --products


def child(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        if args.child == "clip":
            return _segment(args, size(args, "clip"), tmp, background=True)
        if args.child == "clip-inline":
            return _segment(args, size(args, "clip"), tmp, background=False)
        if args.child == "clip-bf16":
            return _segment(args, size(args, "clip"), tmp, precision="bf16")
        if args.child in PRODUCT_RUNS:
            return _segment(args, size(args, "clip"), tmp, products=PRODUCT_RUNS[args.child])
        if args.child == "long":
            return _segment(args, args.long_frames or size(args, "long"), tmp)
        if args.child == "clips":
            return _clips(args, tmp)
        if args.child in ("train-float32", "train-bf16"):
            return _train(args, tmp, args.child.split("-")[1])
        if args.child == "matmul":
            return _matmul(args)
    raise SystemExit(f"unknown measurement {args.child}")


# --- the parent: run each, keep going on failure, write the table -------------------------------------------------


def run_child(name: str, argv: list[str], keep: Path) -> dict[str, Any]:
    env = {**os.environ, "BAVOS_GPU_CHECK_KEEP": str(keep)}
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, __file__, "--child", name, *argv], capture_output=True, text=True, env=env, check=False
    )
    if proc.returncode:
        return {
            "error": (proc.stderr.strip().splitlines() or ["exit code " + str(proc.returncode)])[-1],
            "wall_s": time.perf_counter() - start,
        }
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["wall_s"] = time.perf_counter() - start
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
    passes = window_work(3 * n, m, dim, heads, DISTINCT_PER_LEVEL0 * windows * CLUSTERS_PER_WINDOW)  # on CUDA the
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
    for key, mode in PRODUCT_RUNS.items():
        r = results[key]
        matched = results.get(f"{key}_tokens_matched")
        lines.append(
            f"| {size(args, 'clip')} frames at {h}x{w}, --products {mode} | {cell(r, 'frames_per_s')} frames/s | "
            f"{'-' if matched is None else f'{matched:.2%}'} of tokens in matching clusters against float32; "
            f"{cell(r, 'clusters', '{}')} clusters; stages s: {stages(r)} |"
        )
    if results.get("bf16_tokens_matched") is not None:
        lines.append(
            f"| bf16 against float32 | {results['bf16_tokens_matched']:.2%} of tokens in matching clusters | "
            f"{results['clip'].get('clusters')} clusters in float32, {results['clip-bf16'].get('clusters')} "
            f"in bf16; speed {results['bf16_speedup']:.2f}x float32's |"
        )
    r = results["long"]
    lines.append(
        f"| {r.get('frames', args.long_frames)} frames at {h}x{w}, float32 | {cell(r, 'frames_per_s')} "
        f"frames/s | {r.get('key_frames', '-')} key frames, {r.get('clusters', '-')} clusters; "
        f"peak GPU {cell(r, 'peak_gpu_mb', '{:.0f}')} "
        f"MB, peak host {cell(r, 'peak_rss_mb', '{:.0f}')} MB |"
    )
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
        f"| float32 matrix product {r.get('n', '-')}^3, TF32 off | {cell(r, 'tflops', '{:.2f}')} TFLOP/s | "
        f"attention and clustering achieve {'-' if share is None else f'{share:.1%}'} of it |"
    )
    for key, r in results.items():
        if isinstance(r, dict) and "error" in r:
            lines.append(f"| {key}: failed | {r['error'][:300]} | |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="folder for gpu_check.md and gpu_check.json")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU: checks that the script runs")
    parser.add_argument("--device", default=None, help="default: cuda (cpu with --smoke)")
    parser.add_argument(
        "--long-frames", type=int, default=0, help="frames of the long clip (default 1000; 40 with --smoke)"
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
    if args.child:
        print(json.dumps(child(args)))
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
    results["tests"] = (
        {"command": "pytest -m gpu", "summary": "skipped (--skip-tests)", "failed": [], "seconds": 0.0}
        if args.skip_tests
        else run_tests(args)
    )
    print(f"tests: {results['tests']['summary']}", flush=True)
    names = (
        "clip",
        "clip-inline",
        "clip-bf16",
        *PRODUCT_RUNS,
        "long",
        "clips",
        "train-float32",
        "train-bf16",
        "matmul",
    )
    with tempfile.TemporaryDirectory() as keep, ThreadPoolExecutor(max(1, args.jobs)) as pool:
        runs = {name: pool.submit(run_child, name, argv, Path(keep)) for name in names}
        for name, run in runs.items():
            results[name] = run.result()
            print(
                f"{name}: {'failed: ' + results[name]['error'] if 'error' in results[name] else 'done'} "
                f"({results[name]['wall_s']:.0f} s)",
                flush=True,
            )
        results["bf16_tokens_matched"] = _tokens_matched(results["clip"], results["clip-bf16"])
        for key in PRODUCT_RUNS:
            results[f"{key}_tokens_matched"] = _tokens_matched(results["clip"], results[key])
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
