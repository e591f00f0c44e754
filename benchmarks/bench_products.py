"""What --products changes against float32: the partition (tokens in matching clusters) and the time, on the same
frames and weights, each mode in turn in one run.

    python benchmarks/bench_products.py                              # 12 DAVIS frames, the CPU's 160x240
    python benchmarks/bench_products.py --device cuda --resolution 320 480 --count 70

Weights: the weightless mode (``--checkpoint none --backbone-weights none``), whose sharpened random attention
gives hundreds of clusters a window, as trained weights are expected to; ``--tau`` moves the count (a larger tau
merges more). The partition compared is the whole converged level (``--max-objects 0``), token for token on the
patch grid (``bavos.evaluation.metrics.matched_share``). On a CPU the tensor-core modes are emulated (operands
rounded as the tensor cores round them): their partitions are what a GPU gives up to the order of its sums, their
times are not a GPU's.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

DAVIS = Path(__file__).resolve().parents[2] / "shared" / "data" / "davis-mini" / "JPEGImages" / "480p" / "blackswan"
MODES = ("float32", "fp32-tensor", "tf32", "bf16")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=Path, default=DAVIS, help="a video file or a folder of frames")
    parser.add_argument("--count", type=int, default=12, help="frames from the start")
    parser.add_argument("--resolution", type=int, nargs=2, default=(160, 240))
    parser.add_argument("--tau", type=float, nargs="+", default=[1.0], help="one run per tau: other cluster counts")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)

    import bavos
    from bavos.evaluation.metrics import matched_share

    seg = bavos.Segmenter.from_checkpoint("none", backbone_weights="none", device=args.device)
    print(f"{args.frames} (first {args.count} frames) at {args.resolution[0]}x{args.resolution[1]} on {args.device}")
    print("| tau | clusters (level 0, converged) | mode | seconds | tokens in matching clusters |")
    print("| --- | --- | --- | --- | --- |")
    for tau in args.tau:
        labels: dict[str, np.ndarray] = {}
        for mode in MODES:
            config = bavos.api.SegmentConfig(
                device=args.device,
                resolution=tuple(args.resolution),
                stride=1,
                max_key_frames=30,
                tau=tau,
                max_objects=0,
                end=str(args.count),
                products=mode,
            )
            segmenter = bavos.Segmenter(seg.models, config)
            began = time.perf_counter()
            with segmenter(args.frames) as result:
                labels[mode] = result.labels
                sizes = result.hierarchy.sizes
            seconds = time.perf_counter() - began
            share = matched_share(labels["float32"], labels[mode])
            print(f"| {tau} | {sizes[0]}, {sizes[-1]} | {mode} | {seconds:.1f} | {100 * share:.2f} % |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
