"""What --precision bf16 / fp16 changes against float32, on the same frames, weights and settings, in one run.

    python benchmarks/bench_precision.py                                     # 12 DAVIS frames, 320x480, CPU
    python benchmarks/bench_precision.py --frames clip.mp4 --count 30 --device cuda
    python benchmarks/bench_precision.py --checkpoint checkpoint_dino-s-8.pth  # real weights, when you have them

For each precision: the time to compute every frame's queries (decode, backbone and correlator), the relative L2
change of the correlator's queries and keys against float32, the number of clusters (``--max-objects 0``: the whole
partition) and the share of tokens in matching clusters against float32 (one Hungarian match on the contingency
table: ``bavos.evaluation.metrics.matched_share``). On a CPU, bf16 and fp16 are CPU autocast (the arithmetic a
GPU's autocast does, not its speed).

Without ``--checkpoint``: random ViT-S/8 weights and a random correlator whose query/key weights are scaled by
``--sharpness`` (3.4: milder attention, 3.5: sharper; the settings of the parity tests). Real weights may move less
or more; run it with them when you have them.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

DAVIS = Path(__file__).resolve().parents[2] / "shared" / "data" / "davis-mini" / "JPEGImages" / "480p" / "blackswan"


def models_for(args: argparse.Namespace):
    import torch

    from bavos.config import ModelConfig
    from bavos.models.correlator import Correlator
    from bavos.models.loading import load_models

    if args.checkpoint:
        return load_models(ModelConfig(checkpoint=args.checkpoint), args.device)
    models = load_models(ModelConfig(backbone_weights="none", checkpoint="none"), args.device)
    torch.manual_seed(0)
    correlator = Correlator(384, 8)
    with torch.no_grad():
        correlator.attn.qkv.weight[:768] *= args.sharpness
    models.correlator = correlator.eval().to(models.device)
    return models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=Path, default=DAVIS, help="a video or a folder of frames")
    parser.add_argument("--count", type=int, default=12, help="use the first COUNT frames")
    parser.add_argument("--resolution", type=int, nargs=2, default=(320, 480))
    parser.add_argument("--checkpoint", help="a release or bavos checkpoint (default: random weights)")
    parser.add_argument("--sharpness", type=float, default=3.5, help="q/k weight scale of the random correlator")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precisions", nargs="+", default=["bf16", "fp16"])
    args = parser.parse_args()
    if not args.frames.exists():
        sys.exit(f"{args.frames} does not exist: give --frames")

    import numpy as np
    from PIL import Image

    from bavos.config import SegmentConfig
    from bavos.evaluation.metrics import matched_share
    from bavos.io.video import VideoSource
    from bavos.pipeline.segment import analyse, video_tokens

    models = models_for(args)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for i, frame in enumerate(VideoSource(args.frames).frames()):
            if i == args.count:
                break
            Image.fromarray(frame.image).save(folder / f"{i:05d}.png")
        source = VideoSource(folder)
        runs = {}
        for precision in ["float32", *args.precisions]:
            cfg = SegmentConfig(
                resolution=tuple(args.resolution), max_objects=0, device=args.device, precision=precision
            )
            video_tokens(source, models, cfg)  # warm-up
            start = time.perf_counter()
            q, k = video_tokens(source, models, cfg)
            seconds = time.perf_counter() - start
            analysis = analyse(source, models, cfg, workdir=folder)
            labels = np.stack([analysis.labels.frame(t)[analysis.hierarchy.cut] for t in range(analysis.processed)])
            runs[precision] = ({"q": q, "k": k}, (labels, analysis.hierarchy.sizes[analysis.hierarchy.cut]), seconds)
            analysis.close()
    ref_tokens, ref, ref_seconds = runs["float32"]
    weights = args.checkpoint or f"random ViT-S/8 and correlator (q/k x{args.sharpness})"
    print(
        f"device {models.device}, {weights}, {args.count} frames of {args.frames.name} at "
        f"{args.resolution[0]}x{args.resolution[1]}, --max-objects 0"
    )
    print("| precision | backbone pass s | vs float32 | q change | k change | clusters | tokens matched |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for precision, (tokens, (labels, clusters), seconds) in runs.items():
        change = [float((tokens[n] - ref_tokens[n]).norm() / ref_tokens[n].norm()) for n in ("q", "k")]
        share = matched_share(ref[0], labels)
        print(
            f"| {precision} | {seconds:.2f} | {seconds / ref_seconds:.2f}x | {change[0]:.2%} | {change[1]:.2%} | "
            f"{clusters} | {share:.2%} |"
        )


if __name__ == "__main__":
    main()
