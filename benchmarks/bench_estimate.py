"""bavos's cost estimate (what ``bavos segment`` says before it starts) against what the run then measures, in one run.

    python benchmarks/bench_estimate.py                                           # 1 to ~2,000 clusters, CPU
    python benchmarks/bench_estimate.py --sizes 96x144 160x240 240x320 --sharpness 1
    python benchmarks/bench_estimate.py --sizes 320x480 --device cuda

Each (size, sharpness) runs in its own process (so its peak memory is its own): random ViT-S/8 weights and a random
correlator whose query/key weights are scaled by the sharpness (sharper attention, more clusters: the clustering's
cost depends on them, which the estimate cannot know before it starts), the estimate of
``bavos.pipeline.segment.estimate_cost`` as the CLI makes it, ``segment_video`` at bavos's defaults (``--max-objects
0``, so the labels pass sees every cluster), then the measured stage times (summary.json) and the process's peak
RSS. Ratios are measured / estimated; the goal is within 1.5 either way. The run refines its estimate after the first
window (its level-0 clusters) and after the hierarchy (every level's size): those are shown too.
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


def child(args: argparse.Namespace, size: str, sharpness: float) -> dict:
    import torch

    from bavos.api import segment_video
    from bavos.config import ModelConfig, SegmentConfig
    from bavos.io.video import VideoSource
    from bavos.models.correlator import Correlator
    from bavos.models.loading import load_models
    from bavos.pipeline.segment import estimate_cost

    h, w = (int(v) for v in size.split("x"))
    cfg = SegmentConfig(resolution=(h, w), device=args.device, key_ratio=args.key_ratio, max_objects=0)
    models = load_models(ModelConfig(backbone_weights="none", checkpoint="none"), cfg.device)
    torch.manual_seed(0)
    models.correlator = Correlator(384, 8).eval().to(models.device)
    with torch.no_grad():
        models.correlator.attn.qkv.weight[:768] *= sharpness
    with tempfile.TemporaryDirectory() as tmp:
        source = VideoSource(args.clip)
        est = estimate_cost(source, models, cfg, Path(tmp))
        refined = []
        summary = segment_video(source, tmp, cfg, models, estimates=lambda what, e: refined.append(e))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    timings = summary["timings"]
    return {
        "size": size,
        "sharpness": sharpness,
        "frames": summary["processed_frames"],
        "clusters": summary["level_sizes"][summary["converged_level"]],
        "level0": summary["level_sizes"][0],
        "estimate": {**est.seconds, "total": est.total, "peak": est.peak_bytes},
        "refined": [{**e.seconds, "total": e.total} for e in refined],
        "measured": {
            "backbone": timings["backbone"] + timings["decode"],
            "clustering": timings["attention"] + timings["clustering"] + timings["labels"],
            "writing": timings["writing"],
            "total": timings["total"],
            "peak": peak,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clip", type=Path, default=ROOT / "assets" / "demo.mp4")
    parser.add_argument("--sizes", nargs="+", default=["160x240"])
    parser.add_argument(
        "--sharpness",
        nargs="+",
        type=float,
        default=[1.0, 4.2, 5.3, 40.0],
        help="scales of the correlator's q/k weights (the defaults give 1, 22, 203 and 2,004 "
        "clusters on the demo at 160x240)",
    )
    parser.add_argument("--key-ratio", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args, args.child[0], float(args.child[1]))))
        return
    print(f"{args.clip.name}, device {args.device}, key ratio {args.key_ratio}, --max-objects 0; seconds, memory in MB")
    print("| size | sharpness | clusters (level 0) | stage | estimated | measured | measured / estimated |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    worst = refined_worst = 1.0
    for size in args.sizes:
        for sharpness in args.sharpness:
            proc = subprocess.run(
                [sys.executable, __file__, "--child", size, str(sharpness), *sys.argv[1:]],
                capture_output=True,
                text=True,
                check=False,
            )
            if proc.returncode:
                sys.exit(f"{size} at sharpness {sharpness} failed:\n{proc.stderr[-3000:]}")
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            for stage in ("backbone", "clustering", "writing", "total", "peak"):
                e, m = r["estimate"][stage], r["measured"][stage]
                scale = 2**20 if stage == "peak" else 1
                print(
                    f"| {size} | {sharpness:g} | {r['clusters']} ({r['level0']}) | {stage} | {e / scale:.1f} | "
                    f"{m / scale:.1f} | {m / e:.2f} |",
                    flush=True,
                )
                if stage in ("total", "peak"):
                    worst = max(worst, m / e, e / m)
            for when, e in zip(("after the first window", "after the hierarchy"), r["refined"], strict=False):
                m = r["measured"]["total"]
                print(
                    f"| {size} | {sharpness:g} | {r['clusters']} ({r['level0']}) | total, {when} | "
                    f"{e['total']:.1f} | {m:.1f} | {m / e['total']:.2f} |",
                    flush=True,
                )
                refined_worst = max(refined_worst, m / e["total"], e["total"] / m)
    print(
        f"worst ratio, either way: first estimate (total, peak memory) {worst:.2f}, refined totals "
        f"{refined_worst:.2f} (goal <= 1.5)"
    )


if __name__ == "__main__":
    main()
