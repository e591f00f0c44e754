"""bavos's cost estimate (bavos.models.costs) against what the run then measures, for several sizes, in one run.

    python benchmarks/bench_estimate.py                                   # the demo clip at 3 sizes, CPU
    python benchmarks/bench_estimate.py --sizes 320x480 --device cuda

Each size runs in its own process (so its peak memory is its own): random ViT-S/8 weights and a random correlator
(the paper's method; the cost does not depend on the weights), the estimate printed before ``segment_video``,
then the measured stage times (summary.json) and the process's peak RSS. Ratios are measured / estimated.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def child(args: argparse.Namespace, size: str) -> dict:
    import torch

    from bavos.api import segment_video
    from bavos.config import ModelConfig, SegmentConfig
    from bavos.io.video import VideoSource
    from bavos.models.correlator import Correlator
    from bavos.models.costs import segment_estimate
    from bavos.models.loading import load_models

    h, w = (int(v) for v in size.split("x"))
    cfg = SegmentConfig(resolution=(h, w), device=args.device, key_ratio=args.key_ratio)
    models = load_models(ModelConfig(backbone_weights="none", checkpoint="none"), cfg.device)
    torch.manual_seed(0)
    models.correlator = Correlator(384, 8).eval().to(models.device)
    source = VideoSource(args.clip)
    frames = source.info.frame_count
    keys = max(1, frames // cfg.key_ratio)
    est = segment_estimate(frames, (h // 8, w // 8), keys, cfg.batch_size, cfg.window, models.device,
                           pixels=source.info.width * source.info.height)
    with tempfile.TemporaryDirectory() as tmp:
        summary = segment_video(args.clip, tmp, cfg, models)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    timings = summary["timings"]
    return {"size": size, "frames": frames, "estimate": {**est.seconds, "total": est.total, "peak": est.peak_bytes},
            "measured": {"backbone": timings["backbone"] + timings["decode"],
                         "clustering": timings["attention"] + timings["clustering"] + timings["labels"],
                         "writing": timings["writing"], "total": timings["total"], "peak": peak}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clip", type=Path, default=ROOT / "assets" / "demo.mp4")
    parser.add_argument("--sizes", nargs="+", default=["96x144", "160x240", "240x320"])
    parser.add_argument("--key-ratio", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args, args.child)))
        return
    print(f"{args.clip.name}, device {args.device}, key ratio {args.key_ratio}; seconds, memory in MB")
    print("| size | frames | stage | estimated | measured | measured / estimated |")
    print("| --- | --- | --- | --- | --- | --- |")
    for size in args.sizes:
        proc = subprocess.run([sys.executable, __file__, "--child", size, *sys.argv[1:]], capture_output=True,
                              text=True, check=False)
        if proc.returncode:
            sys.exit(f"{size} failed:\n{proc.stderr[-3000:]}")
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        for stage in ("backbone", "clustering", "writing", "total", "peak"):
            e, m = r["estimate"][stage], r["measured"][stage]
            scale = 2**20 if stage == "peak" else 1
            print(f"| {size} | {r['frames']} | {stage} | {e / scale:.1f} | {m / scale:.1f} | {m / e:.2f} |")


if __name__ == "__main__":
    main()
