"""Time one training step of `bavos train` by parts, on the same batch, and print each as a ratio to the backbone.

    python benchmarks/bench_train.py                                  # CPU/GPU auto, ViT-S/8, 192x384, batch 1
    python benchmarks/bench_train.py --device cuda --batch-size 8 --steps 20

With a random-weight ViT-S/8 (``--backbone-weights none``: timing does not depend on the weights), on a cache
of synthetic clips decoded at the training resolution:

- data: one batch from the DataLoader (``--workers`` processes, reading the frame cache);
- backbone: the frozen backbone on the batch's frames alone (keys and CLS, no gradient);
- forward: augmentation + backbone + correlator + both losses;
- step: forward, backward and the AdamW update (what `bavos train` does per step);
- steps/s of the step, peak RSS of the process and, on a GPU, peak CUDA memory allocated.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_segment import write_clip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--resolution", type=int, nargs=2, default=(192, 384))
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--steps", type=int, default=5, help="timed repetitions of each part (after one warm-up)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--backbone", default="vit_small_patch8_224.dino")
    parser.add_argument(
        "--precision", default="float32", choices=["float32", "bf16", "fp16"], help="as bavos train --precision"
    )
    args = parser.parse_args()

    import torch

    from bavos.config import ModelConfig, train_config
    from bavos.models.backbone import build_backbone
    from bavos.models.devices import Shard, precision_context, resolve_device
    from bavos.training.clips import cache_clips
    from bavos.training.train import (
        apply_gradients,
        batch_losses,
        make_loader,
        make_optimizer,
        new_correlator,
        step_seed,
    )

    device = resolve_device(args.device)
    cfg = train_config(
        resolution=tuple(args.resolution),
        batch_size=args.batch_size,
        workers=args.workers,
        steps=1000,
        device=device.type,
        precision=args.precision,
    )
    backbone = build_backbone(args.backbone, "none").to(device)
    cfg.check_tokens(backbone.patch_size)
    model_cfg = ModelConfig(backbone=args.backbone, checkpoint="none")  # a new correlator, for any backbone
    correlator = new_correlator(backbone.embed_dim, model_cfg, cfg).to(device).train()
    optimizer, scheduler = make_optimizer(correlator, cfg)
    scaler = torch.amp.GradScaler(device.type, enabled=args.precision == "fp16")
    from bavos.models.costs import train_estimate

    grid = (args.resolution[0] // backbone.patch_size, args.resolution[1] // backbone.patch_size)
    estimate = train_estimate(args.batch_size, cfg.frames, grid, 1, device, backbone.embed_dim)

    with tempfile.TemporaryDirectory() as tmp:
        clips = []
        for i in range(4):
            clips.append(Path(tmp) / f"c{i}.mp4")
            write_clip(clips[-1], 24 + 4 * i)
        data = cache_clips(clips, Path(tmp) / "cache", cfg.resolution, cfg.frames, cfg.workers)
        loader = make_loader(data, cfg, 0, 10 * (args.steps + 1), Shard(), device)
        batch = next(loader).to(device)
        sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

        def timed(fn: object) -> float:
            times = []
            for i in range(args.steps + 1):
                sync()
                start = time.perf_counter()
                fn(i)
                sync()
                times.append(time.perf_counter() - start)
            return statistics.median(times[1:])

        def load(i: int) -> None:
            next(loader).to(device)

        def backbone_only(i: int) -> None:
            x = batch.permute(0, 1, 4, 2, 3).flatten(0, 1).float() / 255
            with precision_context(device, args.precision):
                backbone(x, with_cls=True)

        def forward(i: int) -> None:
            with torch.no_grad():
                batch_losses(backbone, correlator, batch, cfg, torch.Generator().manual_seed(i))

        def step(i: int) -> None:
            torch.manual_seed(step_seed(cfg.seed, i, 0))
            losses = batch_losses(backbone, correlator, batch, cfg, torch.Generator().manual_seed(i))
            apply_gradients(losses, optimizer, scheduler, scaler)

        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        t = {"data": timed(load), "backbone": timed(backbone_only), "forward": timed(forward), "step": timed(step)}

    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"device {device}, {args.precision}, {args.backbone} (random weights), "
        f"{args.resolution[0]}x{args.resolution[1]}, "
        f"batch {args.batch_size} clips x {cfg.frames} frames, median of {args.steps} after one warm-up"
    )
    print(f"backbone alone: {t['backbone']:.3f} s")
    for name in ("data", "forward", "step"):
        print(f"{name:>8}: {t[name]:.3f} s = {t[name] / t['backbone']:.2f}x backbone")
    print(f"steps/s: {1 / t['step']:.3f}; data wait if not overlapped: {t['data'] / t['step']:.1%} of a step")
    print(
        f"bavos.models.costs estimate before the first step: step {estimate.seconds['step']:.3f} s (measured / "
        f"estimated {t['step'] / estimate.seconds['step']:.2f}), peak {estimate.peak_bytes / 2**20:.0f} MB "
        f"(measured / estimated {rss_mb * 2**20 / estimate.peak_bytes:.2f})"
    )
    print(f"peak RSS: {rss_mb:.0f} MB", end="")
    if device.type == "cuda":
        print(f"; peak CUDA memory allocated: {torch.cuda.max_memory_allocated(device) / 2**20:.0f} MB", end="")
    print()


if __name__ == "__main__":
    main()
