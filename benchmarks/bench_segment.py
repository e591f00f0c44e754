"""Time bavos's stages on the same frames and print each as a ratio to the backbone alone.

    python benchmarks/bench_segment.py                                  # CPU/GPU auto, 24 and 96 frames
    python benchmarks/bench_segment.py --resolution 320 480 --key-ratio 10 --frames 70 --device cuda
    python benchmarks/bench_segment.py --frames 250 --factor 4 --max-key-frames 8
    python benchmarks/bench_segment.py --attention-cache 2048                # attention kept between passes

For a short clip of ``--frames`` frames and one ``--factor`` times longer (synthetic moving shapes, written
with PyAV), each in its own process so peak memory is its own, with a random-weight backbone
(``--backbone-weights none``) and a random correlator (``--mode correlator``, the default; timing does not depend
on the weights):

- backbone: pass 1 alone (decode, resize, backbone over every frame);
- attention: every window's attention rows computed once, nothing else;
- clustering: pass 2 as `bavos segment` runs it (attention included, computed twice unless cached);
- end to end: ``segment_video`` (all passes, masks and overlay written);
- peak memory: the process's peak RSS (and peak CUDA memory allocated on a GPU); frames/s end to end.
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
        yy, xx = np.mgrid[:height, :width]
        for i in range(frames):
            img = np.full((height, width, 3), 70, np.uint8)
            img[(yy - 80) ** 2 + (xx - 40 - 2 * i % 240) ** 2 < 900] = (220, 40, 40)
            img[150:220, 180 + i % 60 : 250 + i % 60] = (30, 190, 60)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def measure(args: argparse.Namespace, frames: int) -> dict[str, float]:
    """One clip length, in this process."""
    import torch

    from bavos.attention import AttentionWindows
    from bavos.config import ModelConfig, SegmentConfig
    from bavos.segment import cluster_tokens, extract_tokens, load_models, segment_video
    from bavos.video import VideoSource

    def noop(*a: object) -> None:
        return None

    def sync() -> None:
        if models.device.type == "cuda":
            torch.cuda.synchronize(models.device)

    cfg = SegmentConfig(resolution=tuple(args.resolution), key_ratio=args.key_ratio,
                        max_key_frames=args.max_key_frames, attention_cache_mb=args.attention_cache,
                        device=args.device, precision=args.precision)
    models = load_models(ModelConfig(backbone=args.backbone, backbone_weights="none", checkpoint="none"), cfg.device)
    if args.mode == "correlator":  # the paper's method; a random correlator costs what a trained one does
        from bavos.correlator import Correlator

        torch.manual_seed(0)
        models.correlator = Correlator(models.backbone.embed_dim, 8).eval().to(models.device)
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "clip.mp4"
        write_clip(clip, frames)
        source = VideoSource(clip)
        extract_tokens(VideoSource(clip), models, cfg, noop)  # warm-up (kernels, allocator)
        sync()
        start = time.perf_counter()
        tokens = extract_tokens(source, models, cfg, noop)
        sync()
        backbone = time.perf_counter() - start
        start = time.perf_counter()
        for rows in AttentionWindows(tokens.q, tokens.k, models.scale, cfg.window):
            del rows
        sync()
        attention = time.perf_counter() - start
        start = time.perf_counter()
        cluster_tokens(tokens, models, cfg, noop)
        sync()
        clustering = time.perf_counter() - start
        del tokens
        start = time.perf_counter()
        segment_video(clip, Path(tmp) / "out", cfg, models)
        sync()
        end_to_end = time.perf_counter() - start
    out = {"frames": frames, "backbone": backbone, "attention": attention, "clustering": clustering,
           "end_to_end": end_to_end, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           "device": str(models.device)}
    if models.device.type == "cuda":
        out["peak_cuda_mb"] = torch.cuda.max_memory_allocated(models.device) / 2**20
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=24, help="frames of the short clip")
    parser.add_argument("--factor", type=int, default=4, help="the long clip has factor x frames")
    parser.add_argument("--resolution", type=int, nargs=2, default=(160, 224))
    parser.add_argument("--key-ratio", type=int, default=8)
    parser.add_argument("--max-key-frames", type=int, default=0)
    parser.add_argument("--attention-cache", type=int, default=0, metavar="MB",
                        help="as bavos segment --attention-cache (clustering and end to end)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="float32", choices=["float32", "bf16", "fp16"],
                        help="as bavos segment --precision")
    parser.add_argument("--backbone", default="vit_small_patch8_224.dino")
    parser.add_argument("--mode", default="correlator", choices=["correlator", "training-free"],
                        help="correlator (the paper's method, random weights) or the training-free mode")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args, args.child)))
        return
    rows = []
    for frames in (args.frames, args.frames * args.factor):
        cmd = [sys.executable, __file__, "--child", str(frames), *sys.argv[1:]]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode:
            sys.exit(f"benchmark failed for {frames} frames:\n{proc.stderr[-3000:]}")
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    print(f"device {rows[0]['device']}, {args.backbone} (random weights), {args.mode}, resolution {args.resolution[0]}x"
          f"{args.resolution[1]}, key ratio {args.key_ratio}, max key frames {args.max_key_frames or 'no limit'}, "
          f"attention cache {args.attention_cache} MB, precision {args.precision}")
    cuda = "peak_cuda_mb" in rows[0]
    print("| frames | backbone s | attention | clustering | end to end | frames/s | peak RSS MB |"
          + (" peak CUDA MB |" if cuda else ""))
    print("| --- | --- | --- | --- | --- | --- | --- |" + (" --- |" if cuda else ""))
    for r in rows:
        b = r["backbone"]
        line = (f"| {r['frames']} | {b:.2f} | {r['attention'] / b:.2f}x | {r['clustering'] / b:.2f}x | "
                f"{r['end_to_end'] / b:.2f}x | {r['frames'] / r['end_to_end']:.2f} | {r['peak_rss_mb']:.0f} |")
        print(line + (f" {r['peak_cuda_mb']:.0f} |" if cuda else ""))
    short, long = rows
    print(f"long/short: end to end {long['end_to_end'] / short['end_to_end']:.2f}x for {args.factor}x frames, "
          f"peak RSS {long['peak_rss_mb'] / short['peak_rss_mb']:.2f}x"
          + (f", peak CUDA {long['peak_cuda_mb'] / short['peak_cuda_mb']:.2f}x" if cuda else ""))


if __name__ == "__main__":
    main()
