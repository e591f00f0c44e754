"""A short clip and one --factor times longer, each segmented in its own process: time and peak memory, and their
ratios (the goal for 10x the frames: time at most 11x, peak memory at most 1.1x), and each stage against its floor,
in one run.

    python benchmarks/bench_segment.py                                   # 300 and 3,000 frames at 64x96, CPU
    python benchmarks/bench_segment.py --frames 70 --factor 1 --resolution 320 480 --device cuda
    python benchmarks/bench_segment.py --frames 54000 --factor 1 --resolution 320 480 --device cuda  # 30 min

Synthetic clips (shapes moving over a grey background, 320x240, 24 fps, written with PyAV), random ViT-S/8 weights
and a random correlator (``--mode correlator``, the paper's method; cost does not depend on the weights), every
option at bavos's default unless given. Per clip: the stages' seconds from summary.json (backbone over all passes,
clustering with the attention, decoding, writing), end-to-end frames/s, the process's peak RSS and, on a GPU, its
peak GPU memory.

Floors, measured in the same process after the run: the backbone once per processed frame (the frames decoded
beforehand, batches of --batch-size), and the clustering's matrix products at this device's float32 matrix rate
(``bavos.models.costs.calibrate``): the attention once per window (2 n D m flops for a window of n tokens over m key
tokens of width D), the window's self-distances and smoothing (2 n^2 m each) and the labels (4 L n m, L the
first global level's centroids, which every level's distinct centroids include). Each stage's ratio to its floor says
how much is left to gain there.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def write_clip(path: Path, frames: int, height: int = 240, width: int = 320) -> None:
    import av
    import numpy as np

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast"}
        yy, xx = np.mgrid[:height, :width]
        for i in range(frames):
            img = np.full((height, width, 3), 70, np.uint8)
            img[(yy - 80) ** 2 + (xx - 40 - 2 * i % 240) ** 2 < 900] = (220, 40, 40)
            img[150:220, 180 + i % 60 : 250 + i % 60] = (30, 190, 60)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def measure(args: argparse.Namespace, frames: int) -> dict:
    """One clip, segmented in this process."""
    import torch

    from bavos.api import segment_video
    from bavos.config import ModelConfig, SegmentConfig
    from bavos.models.correlator import Correlator
    from bavos.models.loading import load_models

    def megabytes(value: str) -> int | None:
        return None if value == "auto" else int(value)

    cfg = SegmentConfig(
        resolution=tuple(args.resolution),
        key_ratio=args.key_ratio,
        max_key_frames=args.max_key_frames,
        attention_cache_mb=megabytes(args.attention_cache),
        query_cache_mb=megabytes(args.query_cache),
        device=args.device,
        precision=args.precision,
        background={"auto": None, "on": True, "off": False}[args.background],
    )
    models = load_models(ModelConfig(backbone=args.backbone, backbone_weights="none", checkpoint="none"), cfg.device)
    if args.mode == "correlator":
        torch.manual_seed(0)
        models.correlator = Correlator(models.backbone.embed_dim, 8).eval().to(models.device)
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "clip.mp4"
        write_clip(clip, frames)
        start = time.perf_counter()
        summary = segment_video(clip, Path(tmp) / "out", cfg, models)
        seconds = time.perf_counter() - start
        peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        peak_cuda = torch.cuda.max_memory_allocated(models.device) / 2**20 if models.device.type == "cuda" else None
        floors = measure_floors(clip, models, cfg, summary)
    out = {
        "frames": frames,
        "seconds": seconds,
        "timings": summary["timings"],
        "key_frames": summary["key_frames"],
        "clusters": summary["level_sizes"][summary["converged_level"]],
        "peak_rss_mb": peak_rss,
        "device": str(models.device),
        "floors": floors,
    }
    if peak_cuda is not None:
        out["peak_cuda_mb"] = peak_cuda
    return out


def measure_floors(clip: Path, models, cfg, summary: dict) -> dict:
    """Seconds of the backbone once per processed frame, and of the clustering's products at the matrix rate."""
    import torch

    from bavos.io.video import VideoSource
    from bavos.models.costs import calibrate
    from bavos.models.loading import frame_tokens

    def sync() -> None:
        if models.device.type == "cuda":
            torch.cuda.synchronize(models.device)

    cfg = cfg.for_device(models.device.type)  # the stride and size the run had (a CPU's and a GPU's differ)
    warm = []

    def timed(batch: list) -> float:  # seconds of one batch's frame_tokens (its decoding not counted)
        if not warm:  # warm-up on the first batch, then timed like the others
            frame_tokens(models, cfg, batch)
            warm.append(True)
        sync()
        start = time.perf_counter()
        frame_tokens(models, cfg, batch)
        sync()
        return time.perf_counter() - start

    backbone, batch = 0.0, []
    for i, frame in enumerate(VideoSource(clip).frames()):  # streamed: a long clip's frames are not all held
        if i % cfg.frame_stride == 0:
            batch.append(frame.image)
        if len(batch) == cfg.batch_size:
            backbone += timed(batch)
            batch = []
    if batch:
        backbone += timed(batch)
    h, w = summary["patch_grid"]
    tokens, frames = h * w, summary["processed_frames"]
    m = summary["key_frames"] * tokens
    level1 = summary["level_sizes"][1] if summary["converged_level"] else 0  # distinct centroids: at least these
    rate = calibrate(models.device).flops
    attention = products = labels = 0.0
    for first in range(0, frames, cfg.window):
        n = min(cfg.window, frames - first) * tokens
        attention += 2 * n * models.backbone.embed_dim * m
        products += 2 * (2 * n * n * m)
        labels += 4 * level1 * n * m
    return {
        "backbone": backbone,
        "attention": attention / rate,
        "clustering": products / rate,
        "labels": labels / rate,
        "rate": rate,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=300, help="frames of the short clip")
    parser.add_argument("--factor", type=int, default=10, help="the long clip has factor x frames (1: one clip)")
    parser.add_argument("--resolution", type=int, nargs=2, default=(64, 96))
    parser.add_argument("--key-ratio", type=int, default=10)
    parser.add_argument("--max-key-frames", type=int, default=30, help="as bavos segment (0: no limit)")
    parser.add_argument("--attention-cache", default="auto", metavar="auto|MB", help="as bavos segment")
    parser.add_argument("--query-cache", default="auto", metavar="auto|MB", help="as bavos segment")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="float32", choices=["float32", "bf16", "fp16"])
    parser.add_argument("--backbone", default="vit_small_patch8_224.dino")
    parser.add_argument("--mode", default="correlator", choices=["correlator", "training-free"])
    parser.add_argument(
        "--background",
        default="auto",
        choices=["auto", "on", "off"],
        help="decode and write in background threads (auto: on a GPU only, bavos's default)",
    )
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args, args.child)))
        return
    rows = []
    for frames in dict.fromkeys((args.frames, args.frames * args.factor)):
        cmd = [sys.executable, __file__, "--child", str(frames), *sys.argv[1:]]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode:
            sys.exit(f"benchmark failed for {frames} frames:\n{proc.stderr[-3000:]}")
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    print(
        f"device {rows[0]['device']}, {args.backbone} (random weights), {args.mode}, {args.resolution[0]}x"
        f"{args.resolution[1]}, key ratio {args.key_ratio}, max key frames {args.max_key_frames or 'no limit'}, "
        f"attention cache {args.attention_cache}, query cache {args.query_cache}, {args.precision}, "
        f"background threads {args.background}"
    )
    cuda = "peak_cuda_mb" in rows[0]
    print(
        "| frames | key frames | backbone s | attention + clustering + labels s | decode s | writing s | total s | "
        "frames/s | model waits for frames | writer waits for masks | peak RSS MB |"
        + (" peak GPU MB |" if cuda else "")
    )
    print("| --- " * 11 + "|" + (" --- |" if cuda else ""))
    for r in rows:
        t = r["timings"]
        waited = sum(t["waits"][k] for k in ("keys", "hierarchy", "labels")) / t["total"]
        line = (
            f"| {r['frames']} | {r['key_frames']} | {t['backbone']:.1f} | "
            f"{t['attention'] + t['clustering'] + t['labels']:.1f} | {t['decode']:.1f} | {t['writing']:.1f} | "
            f"{r['seconds']:.1f} | {r['frames'] / r['seconds']:.1f} | {waited:.0%} | "
            f"{t['waits']['masks'] / t['total']:.0%} | {r['peak_rss_mb']:.0f} |"
        )
        print(line + (f" {r['peak_cuda_mb']:.0f} |" if cuda else ""))
    print("\nEach stage against its floor (seconds; the floors measured in the same process):")
    print("| frames | clusters | stage | measured | floor | measured / floor |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        t, f = r["timings"], r["floors"]
        for stage in ("backbone", "attention", "clustering", "labels"):
            print(
                f"| {r['frames']} | {r['clusters']} | {stage} | {t[stage]:.2f} | {f[stage]:.2f} | "
                f"{t[stage] / max(f[stage], 1e-9):.2f} |"
            )
        print(
            f"| {r['frames']} | {r['clusters']} | end to end / backbone once per frame | {r['seconds']:.2f} | "
            f"{f['backbone']:.2f} | {r['seconds'] / f['backbone']:.2f} |"
        )
    print(f"(matrix rate {rows[0]['floors']['rate'] / 1e9:.0f} GFLOP/s)")
    if len(rows) == 2:
        short, long = rows
        print(
            f"{args.factor}x the frames: time {long['seconds'] / short['seconds']:.2f}x (goal <= "
            f"{args.factor + 1}x), peak RSS {long['peak_rss_mb'] / short['peak_rss_mb']:.3f}x (goal <= 1.1x)"
            + (f", peak GPU memory {long['peak_cuda_mb'] / short['peak_cuda_mb']:.3f}x" if cuda else "")
        )


if __name__ == "__main__":
    main()
