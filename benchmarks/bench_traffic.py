"""Bytes moved and host reads of one window's attention, clustering and labelling, counted operation by operation
(``bavos.pipeline.traffic``), in a CPU's way and in a GPU's way (``bavos.models.devices.gpu_ways``), on real frames.

    python benchmarks/bench_traffic.py                                  # 21 DAVIS frames at 160x240
    python benchmarks/bench_traffic.py --resolution 320 480 --count 50  # a GPU run's frame size, 5 key frames

Counts, not times: they are the same on any machine, so a CPU can say what a GPU will move (the kernels run in
Triton's interpreter here, slowly; a kernel counts as one operation: what it reads and writes in memory). Bytes
are given per element of the window's (n, M) rows (n tokens of the window's frames, M key tokens): the attention's
floor is 4 (its result written once), the clustering's is set by the n x n x M products it cannot avoid.
Weights: the weightless mode, whose sharpened random attention gives hundreds of clusters a window.
"""

from __future__ import annotations

import argparse
import os
import sys
from contextlib import ExitStack
from pathlib import Path

DAVIS = Path(__file__).resolve().parents[2] / "shared" / "data" / "davis-mini" / "JPEGImages" / "480p" / "blackswan"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=Path, default=DAVIS, help="a video file or a folder of frames")
    parser.add_argument("--count", type=int, default=21, help="frames from the start (every 10th a key frame)")
    parser.add_argument("--resolution", type=int, nargs=2, default=(160, 240))
    parser.add_argument("--tau", type=float, nargs="+", default=[1.0], help="one count per tau: other cluster counts")
    parser.add_argument(
        "--ways",
        nargs="+",
        choices=("cpu", "gpu", "kernels"),
        default=["cpu", "gpu", "kernels"],
        help="gpu: a GPU's way in torch's operations; kernels: with bavos's Triton kernels (Triton's interpreter)",
    )
    args = parser.parse_args(argv)
    if "kernels" in args.ways:  # the kernels on this CPU: the interpreter must be on before Triton is imported
        os.environ["TRITON_INTERPRET"] = "1"

    import torch

    import bavos
    from bavos.io.sources import open_source
    from bavos.io.video import FrameRange
    from bavos.models.devices import gpu_ways, kernels
    from bavos.pipeline.attention import window_attention
    from bavos.pipeline.cluster import MergeTreeBuilder, label_window
    from bavos.pipeline.segment import video_tokens
    from bavos.pipeline.traffic import counting

    torch.manual_seed(0)
    seg = bavos.Segmenter.from_checkpoint("none", backbone_weights="none", device="cpu")
    config = bavos.api.SegmentConfig(device="cpu", resolution=tuple(args.resolution), stride=1, max_key_frames=30)
    source = open_source(args.frames, FrameRange.parse(None, str(args.count)))
    q, k = video_tokens(source, seg.models, config)
    w = config.window
    if q.shape[0] < 2 * w:
        parser.error(f"--count: the second window is counted, so at least {2 * w} frames are needed")
    n, m = w * q.shape[2], k.shape[0] * k.shape[2]
    print(f"{args.frames}: the second window of {w} frames at {args.resolution[0]}x{args.resolution[1]}")
    print(f"(n = {n} tokens), {k.shape[0]} key frames (M = {m}); bytes per element of the (n, M) rows")
    print("| way | tau | level-0 clusters | attention | clustering | labels | host reads: clustering, labels |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for way in args.ways:
        with ExitStack() as stack:
            if way != "cpu":
                stack.enter_context(gpu_ways())
                stack.enter_context(kernels(way == "kernels"))
            first = window_attention(q[:w], k, seg.models.scale).reshape(n, m)
            with counting() as attention:
                rows = window_attention(q[w : 2 * w], k, seg.models.scale).reshape(n, m)  # (n, M)
            for tau in args.tau:
                builder = MergeTreeBuilder(tau)
                builder.add_window(first)  # the second window meets the first's leaders, as every later one does
                before = builder.level0_size
                with counting() as clustering:
                    level0 = builder.add_window(rows)
                hierarchy = builder.finish()
                label_window(rows, level0, hierarchy)  # the distinct centroids are made once a video, not a window
                with counting() as labelling:
                    label_window(rows, level0, hierarchy)
                per = [f"{c.bytes / rows.numel():.1f}" for c in (attention, clustering, labelling)]
                reads = f"{clustering.host_reads}, {labelling.host_reads}"
                print(f"| {way} | {tau} | {builder.level0_size - before} | {' | '.join(per)} | {reads} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
