"""`bavos segment` for many inputs: everything is checked before a model loads, then each input is segmented with
progress, one result line each, and failures that do not stop the others.

Order: output folder writable; finished outputs with the same settings skipped (--skip-existing); every input
probed (it exists and its first frame decodes); only then the weights are fetched (the paper's checkpoint on
first use) and the models loaded, unless nothing is left to do.
"""

from __future__ import annotations

import contextlib
import os
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bavos.cli_output import Progress, Results, duration, error, note, progress_for, warn
from bavos.config import DEFAULT_BACKBONE, KNOWN_PATCH_SIZES, ModelConfig, SegmentConfig, result_settings
from bavos.errors import BavosError, ConfigError, ResourceError, plain_os_error


@dataclass(frozen=True)
class RunOptions:
    """How the run reports and what it skips."""

    quiet: bool = False
    json: bool = False
    skip_existing: bool = False
    fail_fast: bool = False


def run(inputs: list[Path], output: Path, model_cfg: ModelConfig, cfg: SegmentConfig, opts: RunOptions) -> int:
    """Segment every input; 0 when all succeeded or were skipped, 2 when an output folder would replace what is not
    bavos's (nothing done), else 1. An output folder this run created is removed again when it stays empty."""
    from bavos.batch import check_destinations, plan_outputs, shard_from_env

    shard = shard_from_env()
    jobs = shard.take(plan_outputs(list(inputs), output))
    problems = check_destinations(jobs, output, list(inputs), contents=False)  # before anything is created
    for problem in problems:
        error(problem)
    if problems:
        return 2
    created = not output.exists()
    try:
        return _run(jobs, list(inputs), shard, output, model_cfg, cfg, opts)
    finally:
        if created:
            with contextlib.suppress(OSError):
                output.rmdir()  # only when empty: a run that failed leaves no empty folder behind


def _run(jobs: list[tuple[Path, str]], inputs: list[Path], shard: Any, output: Path, model_cfg: ModelConfig,
         cfg: SegmentConfig, opts: RunOptions) -> int:
    from bavos.batch import check_destinations, prepare_output

    with progress_for(opts.quiet) as progress:
        report = Results(opts.json, opts.quiet, progress)
        try:
            prepare_output(output)
        except BavosError as e:
            return _fail_all(jobs, output, report, e)
        todo, failed = _prepare(jobs, output, model_cfg, cfg, opts, report)
        problems = check_destinations(todo, output, inputs)  # what is there, where a result will be written
        for problem in problems:
            error(problem)
        if problems:
            return 2
        if not todo:
            return 1 if failed else 0
        try:
            models = _load(model_cfg, cfg, shard.local_rank, progress)
        except BavosError as e:
            return _fail_all(todo, output, report, e)
        if models.config.backbone_weights == "none" and not opts.quiet:
            warn("--backbone-weights none: the backbone has random weights; masks are meaningless (tests, benchmarks)")
        resolved = cfg.for_device(models.device.type)
        if cfg.resolution is None and models.device.type == "cpu" and not opts.quiet:
            h, w = resolved.resolution
            note(f"on a CPU the default resolution is {h}x{w} (the paper's 320x480 costs about 6x the backbone time "
                 "and 45x the clustering time); --resolution 320 480 restores it")
        for path, name in todo:
            failed += _segment_one(path, name, output, resolved, models, progress, report)
            if failed and opts.fail_fast:
                break
    return 1 if failed else 0


def _debug_traceback() -> None:
    """With BAVOS_DEBUG=1, the traceback of the exception being handled (an input's failure does not stop the run)."""
    if os.environ.get("BAVOS_DEBUG", "") not in ("", "0"):
        traceback.print_exc()


def _fail_all(jobs: list[tuple[Path, str]], output: Path, report: Results, e: BavosError) -> int:
    _debug_traceback()
    error(str(e))
    for path, name in jobs:
        report.failed(path, output / name, str(e), 0.0)
    return 1


def _prepare(jobs: list[tuple[Path, str]], output: Path, model_cfg: ModelConfig, cfg: SegmentConfig,
             opts: RunOptions, report: Results) -> tuple[list[tuple[Path, str]], int]:
    """The inputs left to do (skipped and unreadable ones reported), and how many failed."""
    from bavos.batch import check_input, read_summary, stale_reason
    from bavos.devices import resolve_device

    settings = None
    if opts.skip_existing:
        settings = result_settings(model_cfg, cfg.for_device(resolve_device(cfg.device).type))
    todo, failed = [], 0
    for path, name in jobs:
        summary = read_summary(output / name) if settings is not None else None
        if summary is not None:
            reason = stale_reason(summary, settings)
            if reason is None:
                report.skipped(path, output / name, summary)
                continue
            if not opts.quiet:
                note(f"{output / name}: redoing it, {reason}")
        problem = check_input(path, cfg.start, cfg.end)
        if problem is not None:
            error(problem)
            report.failed(path, output / name, problem, 0.0)
            failed += 1
            if opts.fail_fast:
                return [], failed
            continue
        todo.append((path, name))
    return todo, failed


def _load(model_cfg: ModelConfig, cfg: SegmentConfig, local_rank: int | None, progress: Progress) -> Any:
    import bavos.segment as seg

    progress.start("weights")

    def download(done: int, total: int | None) -> None:
        progress("download", done // 2**20, None if total is None else total // 2**20)

    return seg.load_models(model_cfg, cfg.device, local_rank, download)


def _say_cost(label: str, estimate: Any, cfg: SegmentConfig, models: Any, progress: Progress) -> str | None:
    """Say what an input will cost (unless --quiet); return why it cannot fit this machine's memory, if it cannot."""
    from bavos.costs import gigabytes, over_budget

    if estimate is None:
        return None
    if not progress.silent:
        h, w = cfg.resolution
        s = estimate.seconds
        memory = gigabytes(estimate.peak_bytes) + (f" (GPU {gigabytes(estimate.device_peak_bytes)})"
                                                   if estimate.device_peak_bytes is not None else "")
        note(f"{label}: estimated {duration(estimate.total)} at {h}x{w} on {models.device.type} (backbone "
             f"{duration(s['backbone'])}, clustering {duration(s['clustering'])}, writing {duration(s['writing'])}),"
             f" peak memory {memory}")
    return over_budget(estimate, models.device)


def _segment_one(path: Path, name: str, output: Path, cfg: SegmentConfig, models: Any, progress: Progress,
                 report: Results) -> int:
    """Segment one input; 1 when it failed. Ctrl-C reports the input as interrupted and stops the run."""
    import bavos.segment as seg
    from bavos.video import FrameRange, VideoSource

    progress.start(path.name)
    start = time.perf_counter()
    try:
        estimate = seg.estimate_cost(VideoSource(path, FrameRange.parse(cfg.start, cfg.end)), models, cfg)
        too_big = _say_cost(path.name, estimate, cfg, models, progress)
        if estimate is not None:
            progress.plan(estimate.passes)  # the ETA covers the passes still to come
        if too_big:
            raise ResourceError(f"{path}: {too_big}")
        summary = seg.segment_video(path, output, cfg, models=models, progress=progress, name=name)
    except (BavosError, OSError) as e:
        _debug_traceback()
        message = plain_os_error(e) if isinstance(e, OSError) else str(e)
        error(message)
        report.failed(path, output / name, message, time.perf_counter() - start)
        return 1
    except KeyboardInterrupt:
        report.interrupted(path, output / name, time.perf_counter() - start)
        raise
    report.ok(path, summary, time.perf_counter() - start)
    return 0


def check_before_loading(model_cfg: ModelConfig, cfg: SegmentConfig) -> None:
    """Option values that only the device or the backbone can judge (ConfigError, a usage error)."""
    from bavos.backbone import patch_size_of
    from bavos.devices import check_precision, resolve_device
    from bavos.errors import WeightsError
    from bavos.video import FrameRange

    try:
        FrameRange.parse(cfg.start, cfg.end)
    except BavosError as e:
        raise ConfigError(str(e)) from e
    device = resolve_device(cfg.device)
    check_precision(device, cfg.precision)
    name = model_cfg.backbone or (DEFAULT_BACKBONE if model_cfg.checkpoint in ("release", "none") else None)
    if name is not None:  # else the checkpoint names it: checked once it is read
        try:
            cfg.for_device(device.type).check_patch(KNOWN_PATCH_SIZES.get(name) or patch_size_of(name))
        except WeightsError as e:
            raise ConfigError(str(e)) from e
