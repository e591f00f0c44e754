"""Self-supervised training of the temporal correlator (method.md §4), in one process or under torchrun (DDP).

Only the correlator is trained and sits in the optimizer and in DDP; the backbone is frozen in eval mode. The
randomness of step s on process r (augmentation, query points, dropout) is re-seeded from (seed, s, r) at the
start of the step and samples are a function of (seed, sample index), so the random state needed to resume is
the step count itself: a resumed run repeats an uninterrupted one exactly.

Run folder: ``last.pt`` and ``step-<n>.pt`` checkpoints, ``metrics.jsonl`` (one line per log step),
``config.json``, ``data.json`` (clips used and skipped) and ``cache/`` (decoded frames) unless elsewhere.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader

from bavos.config import DEFAULT_BACKBONE, ModelConfig, TrainConfig, default_workers, to_dict
from bavos.errors import ConfigError, InputError, ResourceError, TrainError, UsageError
from bavos.models.backbone import Backbone, build_backbone
from bavos.models.correlator import Correlator, load_correlator
from bavos.models.costs import TRAIN_OPTIONS, Estimate, over_budget, train_estimate
from bavos.models.devices import Shard, precision_context, resolve_device, shard_from_env
from bavos.models.weights import LEARNS_NOTHING, plan_weights
from bavos.training.augment import augment, normalize, process_sigma, sample_params
from bavos.training.clips import CachedClip, ClipSamples, Skipped, StepBatches, cache_clips, find_clips
from bavos.training.losses import Losses, clip_losses
from bavos.training.runs import RunFolder


class TrainEvents:
    """What a training run reports; the CLI overrides these to show progress. Library code never prints."""

    def warn(self, message: str) -> None:
        """A clip was skipped (or something else worth a warning)."""

    def stage(self, name: str, done: int, total: int | None) -> None:
        """Progress of a preparation stage ("decode")."""

    def start(self, step: int, stop: int, clips: int, skipped: int) -> None:
        """The loop starts at ``step`` and ends at ``stop``."""

    def step(self, step: int, record: dict[str, Any] | None) -> None:
        """``step`` steps are done; ``record`` is the metrics line when one was written."""

    def checkpoint(self, path: Path, step: int) -> None:
        """A checkpoint was written."""

    def estimate(self, estimate: Estimate, start: int, stop: int) -> None:
        """What steps ``start + 1`` .. ``stop`` will cost (said before the first of them)."""


def step_seed(seed: int, step: int, rank: int) -> int:
    """A 63-bit seed for step ``step`` of process ``rank``."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{step}/{rank}".encode()).digest()[:8], "little") >> 1


def new_correlator(dim: int, model_cfg: ModelConfig, cfg: TrainConfig) -> Correlator:
    """A freshly initialised correlator (the same on every process: seeded from ``cfg.seed``)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return Correlator(dim=dim, heads=model_cfg.correlator_heads, attn_drop=cfg.attn_drop, drop=cfg.drop)


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW with weight decay on the weight matrices only, and the cosine schedule (no warm-up) to ``min_lr``."""
    matrices = [p for p in model.parameters() if p.ndim >= 2]
    others = [p for p in model.parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": matrices, "weight_decay": cfg.weight_decay}, {"params": others, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.999),
        eps=1e-8,
    )
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, _Cosine(cfg.lr, cfg.min_lr, cfg.steps))


class _Cosine:
    """lr_i / lr = (min_lr + (lr - min_lr) (1 + cos(pi i / steps)) / 2) / lr (a class, so it pickles)."""

    def __init__(self, lr: float, min_lr: float, steps: int) -> None:
        self.lr, self.min_lr, self.steps = lr, min_lr, steps

    def __call__(self, i: int) -> float:
        return (self.min_lr + 0.5 * (self.lr - self.min_lr) * (1 + math.cos(math.pi * i / self.steps))) / self.lr


def correlate(correlator: nn.Module, keys: Tensor, cls: Tensor | None, clean_attention: bool) -> tuple[Tensor, Tensor]:
    """The correlator's training forward pass on the keys of clips (method.md §4.3).

    Args:
        keys: (B, T, N, D) backbone keys of each frame's patches.
        cls: (B, T, D) each frame's last-block CLS token, put before its keys (the release's training input), or
            None for the keys alone.
        clean_attention: return the attention before attention dropout (True), or after it (False, the release's).

    Returns:
        attn: (B, T*N, T*N) head-mean attention, CLS rows and columns removed after the softmax (rows sum to about
            1, not exactly).
        feats: (B, T, N, D) correlator output tokens, CLS removed.

    Half-precision inputs are computed in float32; float64 stays float64.
    """
    b, t, n, d = keys.shape
    tokens = keys if cls is None else torch.cat([cls[:, :, None], keys], dim=2)  # (B, T, [1 +] N, D)
    per = tokens.shape[2]
    dtype = torch.promote_types(tokens.dtype, torch.float32)
    y, attn = correlator(tokens.reshape(b, t * per, d).to(dtype), clean_attention=clean_attention)
    attn = attn.to(dtype).mean(1)  # (B, L, L), heads averaged
    y = y.to(dtype).reshape(b, t, per, d)[:, :, per - n :]  # (B, T, N, D)
    if cls is not None:
        keep = (torch.arange(t * per, device=keys.device) % per) != 0
        attn = attn[:, keep][:, :, keep]  # (B, T*N, T*N)
    return attn, y


def clip_forward(
    backbone: Backbone, correlator: nn.Module, x: Tensor, with_cls: bool, clean_attention: bool
) -> tuple[Tensor, Tensor]:
    """Backbone keys (plus each frame's CLS with ``with_cls``) through the correlator (:func:`correlate`).

    Args:
        x: (B, T, 3, H, W) normalised frames.

    Returns:
        attn (B, T*N, T*N) and feats (B, T, N, D), as :func:`correlate`.
    """
    b, t = x.shape[:2]
    out = backbone(x.flatten(0, 1), with_cls=with_cls)
    n, d = out.keys.shape[1:]
    cls = out.cls.reshape(b, t, d) if with_cls else None
    return correlate(correlator, out.keys.reshape(b, t, n, d), cls, clean_attention)


def batch_losses(
    backbone: Backbone,
    correlator: nn.Module,
    frames: Tensor,
    cfg: TrainConfig,
    generator: torch.Generator | None = None,
    sigma: float | None = None,
) -> Losses:
    """The losses of a batch of clips.

    Args:
        frames: (B, T, H, W, 3) uint8 frames, on the models' device.
        generator: CPU generator for the augmentation and the query points (None: no augmentation, the first
            points of a fixed permutation; for evaluating a fixed batch).
        sigma: the blur's sigma for every clip (``--blur-sigma process``), or None to draw one per clip.
    """
    device = frames.device
    x = frames.permute(0, 1, 4, 2, 3).float() / 255  # (B, T, 3, H, W)
    if generator is not None and cfg.augment:
        x = augment(x, sample_params(x.shape[0], generator, sigma))
    x = normalize(x, cfg.normalization)
    n = (x.shape[-2] // backbone.patch_size) * (x.shape[-1] // backbone.patch_size)
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    # the query points of each clip (the release trains one clip per GPU, each drawing its own)
    points = torch.stack([torch.randperm(n, generator=g)[: cfg.points] for _ in range(x.shape[0])]).to(device)
    with precision_context(device, cfg.precision):
        attn, feats = clip_forward(backbone, correlator, x, cfg.with_cls, cfg.loss_attention == "clean")
    return clip_losses(attn, feats, points, cfg)


def apply_gradients(
    losses: Losses, optimizer: torch.optim.Optimizer, scheduler: Any, scaler: torch.amp.GradScaler
) -> None:
    """One step's update: backward through the loss scaler, the AdamW step and the schedule's step (what
    ``bavos train`` does after each batch's losses; the benchmarks time the same)."""
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(losses.total).backward()
    scaler.step(optimizer)
    scaler.update()
    with warnings.catch_warnings():  # fp16: a step the scaler skipped (inf gradients) is not a misuse
        warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)`")
        scheduler.step()


class _Meter:
    """Sums of the loss terms since the last log line (reduced over processes when written)."""

    names = ("loss", "semantic_pos", "semantic_neg", "motion")

    def __init__(self) -> None:
        self.reset(time.perf_counter())

    def reset(self, now: float) -> None:
        self.sums: Tensor | None = None
        self.steps, self.data_s, self.since = 0, 0.0, now

    def add(self, losses: Losses, data_s: float) -> None:
        terms = torch.stack([losses.total, losses.semantic_pos, losses.semantic_neg, losses.motion]).detach()
        self.sums = terms if self.sums is None else self.sums + terms
        self.steps += 1
        self.data_s += data_s

    def record(self, step: int, lr: float, batch: int, shard: Shard, device: torch.device) -> dict[str, Any]:
        sums = self.sums.float()
        if shard.world > 1:
            dist.all_reduce(sums)
            sums /= shard.world
        now = time.perf_counter()
        seconds = max(now - self.since, 1e-9)
        rec: dict[str, Any] = {
            "step": step,
            **{k: round(float(v) / self.steps, 6) for k, v in zip(self.names, sums, strict=True)},
        }
        rec.update(
            lr=lr,
            steps_per_s=round(self.steps / seconds, 4),
            clips_per_s=round(self.steps * batch / seconds, 3),
            data_wait=round(self.data_s / seconds, 4),
        )
        if device.type == "cuda":
            rec["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
        self.reset(now)
        return rec


def _prepare_data(
    clips_root: Path, clips: list[Path], cache: Path, cfg: TrainConfig, shard: Shard, events: TrainEvents
) -> tuple[list[CachedClip], list[Skipped]]:
    """Decode every clip once into the cache (each process its share first), then list the usable ones."""

    def progress(done: int, total: int) -> None:
        events.stage("decode", done, total)

    if shard.world > 1:
        cache_clips(shard.take(clips), cache, cfg.resolution, cfg.frames, cfg.workers)
        dist.barrier()
    results = cache_clips(clips, cache, cfg.resolution, cfg.frames, cfg.workers, progress)
    usable = [r for r in results if isinstance(r, CachedClip)]
    skipped = [r for r in results if isinstance(r, Skipped)]
    if shard.rank == 0:
        for s in skipped:
            events.warn(f"{s.source}: skipped: {s.reason}")
        for c in usable:  # what decoding found, as bavos segment says it (the clip is used as decoded)
            for message in c.warnings:
                events.warn(f"{c.source}: {message}")
    if not usable:
        raise InputError(f"{clips_root}: no usable clips: all {len(clips)} were skipped")
    return usable, skipped


def make_loader(
    data: list[CachedClip], cfg: TrainConfig, start: int, stop: int, shard: Shard, device: torch.device
) -> Iterator[Tensor]:
    """Batches of (clips per process, T, H, W, 3) uint8 frames for steps ``start`` .. ``stop - 1``."""
    samples = ClipSamples(data, cfg.frames, cfg.gap, cfg.seed)
    batches = StepBatches(start, stop, cfg.batch_size, shard.rank, shard.world)
    with warnings.catch_warnings():  # torch's multi-line advice on --workers: said in one line by the caller
        warnings.filterwarnings("ignore", message="This DataLoader will create")
        loader = DataLoader(
            samples,
            batch_sampler=batches,
            num_workers=cfg.workers,
            pin_memory=device.type == "cuda",
            prefetch_factor=4 if cfg.workers else None,
        )
        return iter(loader)


@dataclass(frozen=True)
class TrainResult:
    """What a call of ``train`` did.

    Attributes:
        step: the last step done.
        checkpoint: ``last.pt`` of the run.
        seconds: wall time of the call.
        last: the last step's metrics (as in metrics.jsonl); None when no step was done.
        done_before: the resumed run had already reached its last step (nothing was done).
    """

    step: int
    checkpoint: str
    seconds: float
    last: dict[str, Any] | None
    done_before: bool = False


def train(
    clips_root: str | Path,
    output: str | Path,
    model_cfg: ModelConfig,
    cfg: TrainConfig,
    resume: bool = False,
    until: int | None = None,
    events: TrainEvents | None = None,
) -> TrainResult:
    """Train the correlator on the clips under ``clips_root``; checkpoints and logs go to ``output``.

    Args:
        resume: continue from ``output/last.pt`` (``cfg`` must be the run's; see ``config.train_config``).
        until: stop after this step (with a checkpoint), e.g. to fit a job's time limit; None = ``cfg.steps``.

    Returns:
        The last step done, ``last.pt``, the wall time and the last metrics (``TrainResult``).

    Raises:
        TrainError: the loss became NaN or infinite (the last good checkpoint is kept).
        BavosError: unreadable clips folder, weights, run folder conflicts, bad options.
    """
    shard = shard_from_env()
    if until is not None and until < 1:
        raise UsageError(f"--until must be at least 1, got {until}")
    if cfg.batch_size % shard.world:
        raise ConfigError(f"--batch-size {cfg.batch_size} must be divisible by the {shard.world} processes")
    device = resolve_device(cfg.device, shard.local_rank if shard.world > 1 else None)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    run = RunFolder(Path(output), writer=shard.rank == 0)
    created = not run.path.exists()
    run.check(resume, Path(clips_root))
    try:
        return _train(run, clips_root, model_cfg, cfg, shard, device, resume, until, events or TrainEvents())
    except BaseException:
        run.release()
        if created and run.writer:  # a run that could not start leaves no empty folder behind
            with contextlib.suppress(OSError):
                run.path.rmdir()  # only when empty
        raise
    finally:
        run.release()


def _train(
    run: RunFolder,
    clips_root: str | Path,
    model_cfg: ModelConfig,
    cfg: TrainConfig,
    shard: Shard,
    device: torch.device,
    resume: bool,
    until: int | None,
    events: TrainEvents,
) -> TrainResult:
    if run.swept:
        events.warn(f"removed what killed runs left in {run.path}: {', '.join(r.path.name for r in run.swept)}")
    if run.unsaved():  # stopped before its first checkpoint: nothing learned to keep, it starts again
        events.warn(f"{run.path}: the run there stopped before its first checkpoint; starting it again from step 0")
        resume = False
    found: list[str] = []
    clips = find_clips(Path(clips_root), found)
    if shard.rank == 0:
        for message in found:
            events.warn(message)
    session = _Session(model_cfg, cfg, run, shard, device, events, resume)
    start = (
        run.restore(session.correlator, session.optimizer, session.scheduler, session.configs, session.scaler)
        if resume
        else 0
    )
    stop = min(cfg.steps, until) if until is not None else cfg.steps
    if start >= stop:  # a finished run resumed: nothing to decode or train
        return TrainResult(start, str(run.last), 0.0, None, done_before=True)
    owns_group = shard.world > 1 and not dist.is_initialized()
    if owns_group:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        if start:  # a run going on: its clips, before they are decoded
            run.check_clips(Path(clips_root), clips)
        # before decoding (frames too large to decode are too large to train on) and before the run's files (a
        # refused run leaves none to trip over)
        session.check_cost(start, stop)
        cache = Path(cfg.cache) if cfg.cache else run.path / "cache"
        data, skipped = _prepare_data(Path(clips_root), clips, cache, cfg, shard, session.events)
        if start:  # and their lengths
            run.check_clips(Path(clips_root), clips, data)
        run.begin(session.configs, data, skipped, start)
        session.events.start(start, stop, len(data), len(skipped))
        began = time.perf_counter()
        step, record = session.loop(data, start, stop)
        if shard.world > 1:
            dist.barrier()
    finally:
        if owns_group:
            dist.destroy_process_group()
    return TrainResult(step, str(run.last), time.perf_counter() - began, record)


class _Session:
    """The models, optimizer and run folder of one training process."""

    def __init__(
        self,
        model_cfg: ModelConfig,
        cfg: TrainConfig,
        run: RunFolder,
        shard: Shard,
        device: torch.device,
        events: TrainEvents,
        resume: bool,
    ) -> None:
        self.cfg, self.run, self.shard, self.device, self.events = cfg, run, shard, device, events
        plan = None
        if model_cfg.checkpoint != "none" and not resume:  # fine-tuning: start from that correlator and its backbone
            plan = plan_weights(model_cfg, option="--init-from")
            model_cfg = plan.model_config(model_cfg)
            if plan.backbone_weights == "none" and plan.backbone_weights_from == "checkpoint":
                events.warn(plan.random_note(option="--init-from", outcome=LEARNS_NOTHING))
        else:  # a new correlator, or a resumed run (its state comes from last.pt)
            model_cfg = replace(
                model_cfg,
                backbone=model_cfg.backbone or DEFAULT_BACKBONE,
                backbone_weights=model_cfg.backbone_weights or "hub",
            )
        self.configs = to_dict(model_cfg, cfg)
        loaded = plan.backbone_loaded if plan is not None else None
        self.backbone = build_backbone(model_cfg.backbone, model_cfg.backbone_weights, loaded).to(device)
        cfg.check_tokens(self.backbone.patch_size)
        self.correlator = new_correlator(self.backbone.embed_dim, model_cfg, cfg).to(device)
        if plan is not None and plan.checkpoint_file is not None:
            start = load_correlator(
                plan.checkpoint_file, self.backbone.embed_dim, model_cfg.correlator_heads, plan.loaded
            )
            self.correlator.load_state_dict(start.state_dict())
        self.optimizer, self.scheduler = make_optimizer(self.correlator, cfg)
        # fp16 gradients need loss scaling; with float32 or bf16 the scaler does nothing
        self.scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16")

    def check_cost(self, start: int, stop: int) -> None:
        """Say what the steps will cost; stop before them when they cannot fit this machine's memory."""
        patch = self.backbone.patch_size
        grid = (self.cfg.resolution[0] // patch, self.cfg.resolution[1] // patch)
        estimate = train_estimate(
            self.cfg.batch_size // self.shard.world,
            self.cfg.frames,
            grid,
            stop - start,
            self.device,
            self.backbone.embed_dim,
            self.correlator.heads,
            self.cfg.with_cls,
        )
        self.events.estimate(estimate, start, stop)
        too_big = over_budget(estimate, self.device, TRAIN_OPTIONS)
        if too_big:
            raise ResourceError(f"training {too_big}")

    def save(self, step: int, numbered: bool) -> None:
        path = self.run.save(self.correlator, self.optimizer, self.scheduler, self.configs, step, numbered, self.scaler)
        if path is not None:
            self.events.checkpoint(path, step)

    def loop(self, data: list[CachedClip], start: int, stop: int) -> tuple[int, dict[str, Any] | None]:
        """Steps ``start`` .. ``stop - 1``; returns (steps done, the last metrics record)."""
        cfg, shard, device = self.cfg, self.shard, self.device
        model: nn.Module = self.correlator
        if shard.world > 1:  # only the correlator is synchronised
            model = nn.parallel.DistributedDataParallel(
                self.correlator, device_ids=[device.index] if device.type == "cuda" else None
            )
        model.train()
        if cfg.workers > default_workers() and shard.rank == 0:
            self.events.warn(
                f"--workers {cfg.workers} on a machine with {default_workers()} cores: loading "
                "competes with training for the cores"
            )
        batches = make_loader(data, cfg, start, stop, shard, device)
        # the process's one blur sigma, from its own seed (no step draws from step -1)
        sigma = (
            process_sigma(torch.Generator().manual_seed(step_seed(cfg.seed, -1, shard.rank)))
            if cfg.blur_sigma == "process"
            else None
        )
        meter, record, done = _Meter(), None, start
        try:
            for step in range(start, stop):
                waited = time.perf_counter()
                frames = next(batches).to(device, non_blocking=True)
                waited = time.perf_counter() - waited
                seed = step_seed(cfg.seed, step, shard.rank)
                torch.manual_seed(seed)  # dropout
                losses = batch_losses(self.backbone, model, frames, cfg, torch.Generator().manual_seed(seed + 1), sigma)
                _check_finite(losses, step, shard, self.run)
                lr = self.optimizer.param_groups[0]["lr"]  # this step's (the schedule moves it after the update)
                apply_gradients(losses, self.optimizer, self.scheduler, self.scaler)
                done = step + 1
                meter.add(losses, waited)
                record = None
                if done % cfg.log_every == 0 or done == stop:
                    record = meter.record(done, lr, cfg.batch_size, shard, device)
                    self.run.log(record)
                if done % cfg.checkpoint_every == 0 or done == stop:
                    self.save(done, numbered=done % cfg.checkpoint_every == 0 or done == cfg.steps)
                self.events.step(done, record)
        except KeyboardInterrupt:
            if done > self.run.saved_step:
                self.save(done, numbered=False)
            if self.run.saved_step and shard.rank == 0:
                self.events.warn(
                    f"stopped after step {self.run.saved_step}, saved in {self.run.last}: go on with the same "
                    "command and --resume"
                )
            raise
        return done, record


def _check_finite(losses: Losses, step: int, shard: Shard, run: RunFolder) -> None:
    bad = (~torch.isfinite(losses.total)).float()
    if shard.world > 1:
        dist.all_reduce(bad, op=dist.ReduceOp.MAX)
    if bad.item():
        total, sem, mot = (float(v.detach()) for v in (losses.total, losses.semantic, losses.motion))
        terms = f"semantic {sem:.4g}, motion {mot:.4g}"
        kept = (
            f"the last good checkpoint is {run.last} (step {run.saved_step})"
            if run.saved_step
            else "no checkpoint had been written yet"
        )
        raise TrainError(
            f"the loss became {total} at step {step + 1} ({terms}); training stopped and {kept}; "
            "lower --lr or check the clips"
        )
