"""`bavos segment` for many inputs: everything is checked before a model loads, then each input is segmented with
progress, one result line each, and failures that do not stop the others.

Order: output folder writable; finished outputs with the same settings skipped (--skip-existing); every input
probed (it exists and its first frame decodes); only then the weights are fetched (the paper's checkpoint on
first use) and the models loaded, unless nothing is left to do.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import traceback
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any

import typer

from bavos.cli.app import app, debug, import_torch, usage_error
from bavos.cli.help import Command
from bavos.cli.options import config_values, field_default, option
from bavos.cli.output import (
    Progress,
    Results,
    duration,
    error,
    note,
    progress_for,
    say_swept,
    warn,
)
from bavos.config import (
    GPU_MAX_KEY_FRAMES,
    OUTPUTS,
    PAPER_RESOLUTION,
    RUN,
    ModelConfig,
    Part,
    SegmentConfig,
    listed,
    parse_part,
    result_settings,
    slurm_task,
)
from bavos.errors import (
    BavosError,
    ConfigError,
    RandomWeightsWarning,
    ResourceError,
    Terminated,
    internal_error,
    plain_os_error,
)
from bavos.io.exports import EXPORTS, check_exports


@dataclass(frozen=True)
class RunOptions:
    """How the run reports and what it skips."""

    quiet: bool = False
    json: bool = False
    skip_existing: bool = False
    fail_fast: bool = False
    part: Any = None  # config.Part: this call's share of the inputs (--shard, a Slurm array)
    name: str | None = None  # --name: the one input's result folder name


def run(inputs: list[Path], output: Path, model_cfg: ModelConfig, cfg: SegmentConfig, opts: RunOptions) -> int:
    """Segment every input; 0 when all succeeded or were skipped, 2 when an output folder would replace what is not
    bavos's (nothing done), else 1. An output folder this run created is removed again when it stays empty."""
    from bavos.models.devices import shard_from_env
    from bavos.pipeline.batch import check_destinations, plan_outputs
    from bavos.pipeline.segment import source_id

    shard = shard_from_env()
    planned = plan_outputs(list(inputs), output)  # from the whole list: every part and process names alike
    if shard.rank == 0 and not opts.quiet:
        _say_plan(inputs, planned, output, renamed=opts.name is None)
    if opts.name is not None:
        planned = [(planned[0][0], opts.name)]  # one input (checked with the options)
    if opts.part is not None and (opts.part.count > 1 or opts.part.slurm):
        _say_part(opts.part, len(planned), shard.rank == 0 and not opts.quiet)
    if opts.part is not None and opts.part.count > 1:
        planned = opts.part.take(sorted(planned, key=lambda job: source_id(job[0])))  # whatever order each task got
    jobs = shard.take(planned)
    problems = check_destinations(jobs, output, list(inputs))  # before anything is created
    if problems:
        return _refuse(problems, jobs, Results(opts.json, opts.quiet))
    created = not output.exists()
    try:
        code = _run(jobs, shard, output, model_cfg, cfg, opts)
    finally:
        if created:
            with contextlib.suppress(OSError):
                output.rmdir()  # only when empty: a run that failed leaves no empty folder behind
    if shard.world > 1:
        wait_for_the_others()
    return code


def wait_for_the_others() -> None:
    """Under torchrun, return when every process of the call is done with its inputs: torchrun stops them all as soon
    as one ends with an error, which cut the others' good inputs short (one process given only a bad input)."""
    import datetime

    import torch.distributed as dist

    if not dist.is_available() or "MASTER_ADDR" not in os.environ or dist.is_initialized():
        return
    failed: list[BaseException] = []

    def join() -> None:
        try:  # joining is the waiting: every process joins when done, however long the others take
            dist.init_process_group("gloo", timeout=datetime.timedelta(days=7))
            try:
                dist.barrier()
            finally:
                dist.destroy_process_group()
        except BaseException as e:
            failed.append(e)

    # in a thread: gloo's wait does not come back to Python for a signal, and a Ctrl-C or a scheduler's SIGTERM to a
    # process that was done left it hanging until torchrun killed it, 30 s later
    waiting = threading.Thread(target=join, name="bavos-wait-for-the-others", daemon=True)
    waiting.start()
    while waiting.is_alive():
        waiting.join(0.2)
    if failed:
        raise failed[0]


def _run(
    jobs: list[tuple[Path, str]], shard: Any, output: Path, model_cfg: ModelConfig, cfg: SegmentConfig, opts: RunOptions
) -> int:
    with progress_for(opts.quiet) as progress:
        report = Results(opts.json, opts.quiet, progress)
        try:
            return _run_reported(jobs, shard, output, model_cfg, cfg, opts, report)
        except KeyboardInterrupt as e:  # also while the models load: every input gets its line (usage.md)
            why = "terminated" if isinstance(e, Terminated) else "interrupted"
            report.not_run_rest([path for path, _ in jobs], f"{why} before it started")
            raise


def _run_reported(
    jobs: list[tuple[Path, str]],
    shard: Any,
    output: Path,
    model_cfg: ModelConfig,
    cfg: SegmentConfig,
    opts: RunOptions,
    report: Results,
) -> int:
    from bavos.io.files import prepare_output
    from bavos.io.owners import sweep
    from bavos.pipeline.batch import check_destinations

    progress = report.progress
    try:
        prepare_output(output)
    except BavosError as e:
        return _fail_all(jobs, report, e)
    removed = sweep(output)  # what runs killed before (OOM, a scheduler's limit) left beside the results
    if not opts.quiet:
        say_swept(removed, output)
    todo, failed, redoing = _prepare(jobs, output, model_cfg, cfg, opts, report)
    problems = check_destinations(todo, output)  # what is there, where a result will be written
    if problems:
        return _refuse(problems, todo, report)
    for message in redoing:  # said once the folders pass: not "redoing it" and then a refusal of it
        note(message)
    if not todo:
        return 1 if failed else 0
    try:
        models = _load(model_cfg, cfg, shard.local_rank, progress)
    except BavosError as e:
        return _fail_all(todo, report, e)
    said = not opts.quiet and shard.rank == 0  # the run's notes once, not once per torchrun process
    if models.config.backbone_weights == "none" and said:
        warn(models.weights.random_note())
    resolved = cfg.for_device(models.device.type)
    taken = cfg.cpu_defaults() if models.device.type == "cpu" else {}
    if taken and said:
        note(cpu_point_note(taken))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)  # said above, once, as the command line says it
        for path, name in todo:
            if failed and opts.fail_fast:
                break
            failed += _segment_one(path, name, output, resolved, models, progress, report)
    report.not_run_rest([path for path, _ in todo], FAIL_FAST)
    return 1 if failed else 0


FAIL_FAST = "--fail-fast: an input before it failed"  # the error of an input --fail-fast did not run

PAPER_SETTINGS = {
    "--resolution": " ".join(map(str, PAPER_RESOLUTION)),
    "--max-key-frames": str(GPU_MAX_KEY_FRAMES),
    "--stride": "1",
}
CPU_POINT_WORDS = {"--resolution": "{}", "--max-key-frames": "at most {} key frames", "--stride": "every {} frame"}
# what the paper's settings cost instead (docs/performance.md, "A CPU at many clusters")
PAPER_COST = {
    "frames": "the paper's key frames and every frame took 2.6x as long on a 10-second 720p clip",
    "size": "the paper's 320x480 costs about 6x the backbone time and 45x the clustering time",
}


def ordinal(k: int) -> str:
    return f"{k}{'th' if 10 <= k % 100 < 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(k % 10, 'th')}"


def cpu_point_note(taken: dict[str, str]) -> str:
    """The first line on a CPU: the operating point's settings the user left to the device, what the paper's cost
    instead, and the options that restore them."""
    said = [
        CPU_POINT_WORDS[option].format(ordinal(int(value)) if option == "--stride" else value)
        for option, value in taken.items()
    ]
    restore = " ".join(f"{option} {PAPER_SETTINGS[option]}" for option in taken)
    cost = PAPER_COST["size" if list(taken) == ["--resolution"] else "frames"]
    return f"on a CPU the defaults are {listed(said)} ({cost}); {restore} restores them"


def _say_part(part: Any, inputs: int, say: bool) -> None:
    if not say:
        return
    if part.count == 1 and part.shard:  # --shard slurm in an array of one task
        note(f"Slurm array {part.slurm}: the array's only task, every input ({inputs})")
        return
    if part.count == 1:  # a Slurm array task given no --shard: every input, as each other task (maybe its own)
        if inputs > 1:
            note(
                f"Slurm array {part.slurm}: every input ({inputs}); --shard slurm gives each task of the array a share"
            )
        return
    share = len(range(part.index, inputs, part.count))
    where = f"Slurm array {part.slurm}: " if part.slurm else ""
    off = "; --shard 0/1 takes them all" if part.slurm else ""
    note(f"{where}part {part.index}/{part.count} of the inputs, {share} of {inputs}{off}")


def _say_plan(inputs: list[Path], planned: list[tuple[Path, str]], output: Path, renamed: bool) -> None:
    """Say the inputs given more than once (each is segmented once) and, where ``renamed``, why a result's folder is
    not its input's name (another video's result has it): the result lines name the folders, not why."""
    from bavos.pipeline.segment import output_name, source_id

    if len(planned) < len(inputs):
        given = Counter(source_id(path) for path in inputs)
        twice = [path for path, _ in planned if given[source_id(path)] > 1]
        shown = ", ".join(map(str, twice[:3])) + (f" and {len(twice) - 3} more" if len(twice) > 3 else "")
        note(f"given more than once, segmented once: {shown}")
    if not renamed:  # --name chose the folder
        return
    for path, name in planned:
        stem = output_name(path)
        if name != stem:
            note(f"{path}: its result goes to {output / name}, as {output / stem} is another video's")


def _refuse(problems: list[tuple[Path, str, str]], jobs: list[tuple[Path, str]], report: Results) -> int:
    """Destinations that would replace what is not bavos's: one line each, nothing done; with --json a line for
    every input of ``jobs``, those not refused saying why they did not run."""
    for path, _, why in problems:
        error(why)
        report.failed(path, why, 0.0)
    refused = {path for path, _, _ in problems}
    for path, _ in jobs:
        if path not in refused:
            report.not_run(path, "the run stopped before any work (see the refusal)")
    return 2


def _debug_traceback() -> None:
    """With BAVOS_DEBUG=1, the traceback of the exception being handled (an input's failure does not stop the run)."""
    if debug():
        traceback.print_exc()


def _fail_all(jobs: list[tuple[Path, str]], report: Results, e: BavosError) -> int:
    _debug_traceback()
    error(str(e))
    for path, _ in jobs:
        report.failed(path, str(e), 0.0)
    return e.exit_code


def _prepare(
    jobs: list[tuple[Path, str]],
    output: Path,
    model_cfg: ModelConfig,
    cfg: SegmentConfig,
    opts: RunOptions,
    report: Results,
) -> tuple[list[tuple[Path, str]], int, list[str]]:
    """The inputs left to do (skipped and unreadable ones reported), how many failed, and the notes on results
    redone (why each is)."""
    from bavos.models.devices import resolve_device
    from bavos.pipeline.batch import changed_reason, check_input, damage_reason, stale_reason, weights_reason
    from bavos.pipeline.outputs import read_summary

    settings = None
    if opts.skip_existing:
        settings = result_settings(model_cfg, cfg.for_device(resolve_device(cfg.device).type))
    todo, failed, redoing = [], 0, []
    for k, (path, name) in enumerate(jobs):
        summary = read_summary(output / name) if settings is not None else None
        if summary is not None:
            reason = (
                stale_reason(summary, settings)
                or changed_reason(summary, path)
                or weights_reason(summary, model_cfg)
                or damage_reason(output / name, summary)
            )
            if reason is None:
                report.skipped(path, output / name, summary)
                continue
            if not opts.quiet:
                redoing.append(f"{output / name}: redoing it, {reason}")
        problem = check_input(path, cfg.start, cfg.end, cfg.fps)
        if problem is not None:
            error(problem)
            report.failed(path, problem, 0.0)
            failed += 1
            if opts.fail_fast:
                for rest, _ in todo + jobs[k + 1 :]:
                    report.not_run(rest, FAIL_FAST)
                return [], failed, []
            continue
        todo.append((path, name))
    return todo, failed, redoing


def _megabytes(value: str, option: str) -> int | None:
    """An ``auto|MB`` option: None for auto, else the whole number of MB."""
    if value == "auto":
        return None
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"{option} must be auto or a whole number of MB, got {value or 'nothing'}") from None


def _load(model_cfg: ModelConfig, cfg: SegmentConfig, local_rank: int | None, progress: Progress) -> Any:
    import bavos.models.loading as loading

    progress.start("weights")

    def download(done: int, total: int | None) -> None:
        progress("download", done // 2**20, None if total is None else total // 2**20)

    return loading.load_models(model_cfg, cfg.device, local_rank, download)


def _say_cost(label: str, estimate: Any, cfg: SegmentConfig, models: Any, progress: Progress) -> str | None:
    """Say what an input will cost (unless --quiet); return why it cannot fit this machine's memory, if it cannot."""
    from bavos.models.costs import gigabytes, over_budget, size_text

    if estimate is None:
        return None
    if not progress.silent:
        h, w = cfg.resolution
        s = estimate.seconds
        memory = gigabytes(estimate.peak_bytes) + (
            f" (GPU {gigabytes(estimate.device_peak_bytes)})" if estimate.device_peak_bytes is not None else ""
        )
        caches = []
        rows, all_rows = estimate.rows_kept, estimate.rows_total
        if rows:
            caches.append(
                f"attention kept: {size_text(rows)}" + (f" of {size_text(all_rows)}" if rows < all_rows else "")
            )
        elif cfg.attention_cache_mb is None and models.device.type == "cpu" and all_rows:
            caches.append(f"attention recomputed: the video's takes {size_text(all_rows)}")
        if rows < all_rows and cfg.query_cache_mb is None:  # kept rows need no queries
            where = " on disk" if estimate.queries_on_disk else ""
            caches.append(
                f"queries kept{where}: {size_text(estimate.queries_kept)}"
                if estimate.queries_kept
                else f"queries recomputed: the video's take {size_text(estimate.queries_total)}"
            )
        note(
            f"{label}: estimated {duration(estimate.total)} at {h}x{w} on {models.device.type} (backbone "
            f"{duration(s['backbone'])}, clustering {duration(s['clustering'])}, writing {duration(s['writing'])}),"
            f" peak memory {memory}" + "".join(f", {c}" for c in caches)
        )
    return over_budget(estimate, models.device)


SAY_FASTER_SECONDS = 300  # an estimate over this names the options that bring it down


def faster_options(cfg: SegmentConfig) -> list[tuple[str, SegmentConfig]]:
    """(options, config) of the ways to a run cheaper than ``cfg`` (resolved: ``for_device``): every other processed
    frame, half the key frames (half of GPU_MAX_KEY_FRAMES where there is no bound), three quarters of the size per
    side."""
    h, w = cfg.resolution
    smaller = (max(8, round(h * 0.75 / 8) * 8), max(8, round(w * 0.75 / 8) * 8))
    ways = [(f"--stride {2 * cfg.stride}", replace(cfg, stride=2 * cfg.stride))]
    if cfg.max_key_frames > 2 or cfg.max_key_frames == 0:
        fewer = max(2, (cfg.max_key_frames or GPU_MAX_KEY_FRAMES) // 2)
        ways.append((f"--max-key-frames {fewer}", replace(cfg, max_key_frames=fewer)))
    if smaller != (h, w):
        ways.append((f"--resolution {smaller[0]} {smaller[1]}", replace(cfg, resolution=smaller)))
    return ways


def _say_faster(label: str, source: Any, cfg: SegmentConfig, models: Any, output: Path) -> None:
    import bavos.pipeline.segment as seg

    said = []
    for options, other in faster_options(cfg):
        estimate = seg.estimate_cost(source, models, other, output)
        if estimate is not None:
            said.append(f"{options} (about {duration(estimate.total)})")
    if said:
        note(f"{label}: faster, with less detail: " + ", ".join(said))


class _Revisions:
    """Takes the estimates the run refines (``bavos.pipeline.segment.analyse``): the ETA follows each, and one that
    moved the total by more than ``SAY_REVISED`` either way from the one said is said too."""

    SAY_REVISED = 1.25

    def __init__(self, label: str, said: Any, progress: Progress) -> None:
        self.label, self.said, self.progress = label, said.total if said is not None else None, progress

    def __call__(self, what: str, estimate: Any) -> None:
        self.progress.revise(estimate.passes)
        if self.said is None or self.progress.silent:
            return
        if not 1 / self.SAY_REVISED <= estimate.total / self.said <= self.SAY_REVISED:
            s = estimate.seconds
            note(
                f"{self.label}: {what}: revised estimate {duration(estimate.total)} in all (backbone "
                f"{duration(s['backbone'])}, clustering {duration(s['clustering'])}, writing "
                f"{duration(s['writing'])})"
            )
            self.said = estimate.total


def _segment_one(
    path: Path, name: str, output: Path, cfg: SegmentConfig, models: Any, progress: Progress, report: Results
) -> int:
    """Segment one input; 1 when it failed. Ctrl-C reports the input as interrupted and stops the run."""
    import bavos.api as api
    import bavos.pipeline.segment as seg
    from bavos.io.files import display_name
    from bavos.io.video import FrameRange, VideoSource

    label = display_name(path)  # "." is named by its folder
    progress.start(label)
    start = time.perf_counter()
    try:
        # probed once, for the estimate and the run
        source = VideoSource(path, FrameRange.parse(cfg.start, cfg.end), cfg.fps)
        estimate = seg.estimate_cost(source, models, cfg, output)  # the temporary files go beside the result
        too_big = _say_cost(label, estimate, cfg, models, progress)
        if estimate is not None and estimate.total > SAY_FASTER_SECONDS and not progress.silent and not too_big:
            _say_faster(label, source, cfg, models, output)
        if estimate is not None:
            progress.plan(estimate.passes)  # the ETA covers the passes still to come
        if too_big:
            raise ResourceError(f"{path}: {too_big}")
        summary = api.segment_video(
            source,
            output,
            cfg,
            models=models,
            progress=progress,
            name=name,
            estimates=_Revisions(label, estimate, progress),
        )
    except (BavosError, OSError) as e:
        _debug_traceback()
        message = plain_os_error(e) if isinstance(e, OSError) else str(e)
        error(message)
        report.failed(path, message, time.perf_counter() - start)
        return 1
    except KeyboardInterrupt as e:
        why = "terminated" if isinstance(e, Terminated) else "interrupted"
        report.interrupted(path, time.perf_counter() - start, why)
        raise
    except Exception as e:  # a bug met on one input: that input fails, the others still run
        if "torchvision::" in str(e):  # torchvision built for another torch: every input would fail alike
            raise
        _debug_traceback()
        message = internal_error(e)
        error(f"{path}: {message}")
        report.failed(path, message, time.perf_counter() - start)
        return 1
    report.ok(path, summary, time.perf_counter() - start)
    return 0


def check_before_loading(model_cfg: ModelConfig, cfg: SegmentConfig) -> None:
    """Option values that only the device or the backbone can judge (ConfigError, a usage error)."""
    from bavos.cli.app import check_weight_names, named_patch_size
    from bavos.io.video import FrameRange

    check_exports(cfg.exports)
    try:  # before torch is imported: a mistake here is said at once
        FrameRange.parse(cfg.start, cfg.end)
    except BavosError as e:
        raise ConfigError(str(e)) from e
    check_weight_names(
        {"--checkpoint": model_cfg.checkpoint, "--backbone-weights": model_cfg.backbone_weights},
        {"--checkpoint": ("release", "none"), "--backbone-weights": ("hub", "none")},
    )
    import_torch()
    from bavos.models.devices import check_precision, resolve_device

    device = resolve_device(cfg.device)
    check_precision(device, cfg.precision)
    patch = named_patch_size(model_cfg)
    if patch is not None:  # else the checkpoint names the backbone: checked once it is read
        cfg.for_device(device.type).check_patch(patch)


AUTO = "auto"  # the default of an ``auto|MB`` option
# From a parsed option to its field's value.
CONVERT: dict[str, Callable[[Any], Any]] = {
    "resolution": lambda v: tuple(v) if v else None,
    "attention_cache_mb": lambda v: _megabytes(v, "--attention-cache"),
    "query_cache_mb": lambda v: _megabytes(v, "--query-cache"),
    "exports": lambda v: tuple(dict.fromkeys(v or ())),
}
S, M = SegmentConfig, ModelConfig  # the configs whose fields the options set
EXPORT_CHOICES = {e.name: e.says for e in EXPORTS.values()}


@app.command(cls=Command)
def segment(
    inputs: Annotated[
        list[str],  # as typed: a Path would drop a slash of a URL
        typer.Argument(
            help="Video files (anything FFmpeg reads) or folders of frames.", metavar="INPUT", show_default=False
        ),
    ],
    output: Annotated[
        Path,
        typer.Option(
            "--output",
            "-o",
            metavar="DIR",
            help="Folder that receives one sub-folder per input.",
            rich_help_panel=OUTPUTS,
        ),
    ] = Path("out"),
    name: Annotated[
        str | None,
        typer.Option(
            metavar="NAME",
            show_default="the input's name",
            help="The result's folder name, OUTPUT/NAME (one input only).",
            rich_help_panel=OUTPUTS,
        ),
    ] = None,
    checkpoint: Annotated[str, option(M, "checkpoint")] = field_default(M, "checkpoint"),
    backbone: Annotated[str | None, option(M, "backbone")] = field_default(M, "backbone"),
    backbone_weights: Annotated[str | None, option(M, "backbone_weights")] = field_default(M, "backbone_weights"),
    resolution: Annotated[tuple[int, int] | None, option(S, "resolution")] = field_default(S, "resolution"),
    key_ratio: Annotated[int, option(S, "key_ratio")] = field_default(S, "key_ratio"),
    max_key_frames: Annotated[int | None, option(S, "max_key_frames")] = field_default(S, "max_key_frames"),
    tau: Annotated[float, option(S, "tau")] = field_default(S, "tau"),
    window: Annotated[int, option(S, "window")] = field_default(S, "window"),
    level: Annotated[int | None, option(S, "level")] = field_default(S, "level"),
    max_objects: Annotated[int, option(S, "max_objects")] = field_default(S, "max_objects"),
    upsample: Annotated[str, option(S, "upsample")] = field_default(S, "upsample"),
    stride: Annotated[int | None, option(S, "stride")] = field_default(S, "stride"),
    device: Annotated[str, option(S, "device")] = field_default(S, "device"),
    precision: Annotated[str, option(S, "precision")] = field_default(S, "precision"),
    normalization: Annotated[str, option(S, "normalization")] = field_default(S, "normalization"),
    batch_size: Annotated[int, option(S, "batch_size")] = field_default(S, "batch_size"),
    attention_cache_mb: Annotated[str, option(S, "attention_cache_mb")] = AUTO,
    query_cache_mb: Annotated[str, option(S, "query_cache_mb")] = AUTO,
    background: Annotated[bool | None, option(S, "background")] = field_default(S, "background"),
    fps: Annotated[float, option(S, "fps")] = field_default(S, "fps"),
    start: Annotated[str | None, option(S, "start")] = field_default(S, "start"),
    end: Annotated[str | None, option(S, "end")] = field_default(S, "end"),
    exports: Annotated[list[str] | None, option(S, "exports", choices=EXPORT_CHOICES)] = None,
    max_export_files: Annotated[int, option(S, "max_export_files")] = field_default(S, "max_export_files"),
    products: Annotated[str, option(S, "products")] = field_default(S, "products"),
    overlay: Annotated[bool, option(S, "overlay")] = field_default(S, "overlay"),
    overlay_alpha: Annotated[float, option(S, "overlay_alpha")] = field_default(S, "overlay_alpha"),
    save_hierarchy: Annotated[bool, option(S, "save_hierarchy")] = field_default(S, "save_hierarchy"),
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress, notes or result lines.", rich_help_panel=RUN)
    ] = False,
    json_out: Annotated[
        bool,
        typer.Option(
            "--json",
            help="One JSON line per input on stdout (input, status, output, frames, objects, seconds, error, warnings)"
            " and nothing else there.",
            rich_help_panel=RUN,
        ),
    ] = False,
    skip_existing: Annotated[
        bool,
        typer.Option(
            "--skip-existing",
            help="Skip inputs whose finished output was made with the same settings.",
            rich_help_panel=RUN,
        ),
    ] = False,
    fail_fast: Annotated[
        bool, typer.Option("--fail-fast", help="Stop at the first input that fails.", rich_help_panel=RUN)
    ] = False,
    shard: Annotated[
        str | None,
        typer.Option(
            metavar="I/N|slurm",
            show_default="all",
            help="Take part I (0 to N-1) of N of the inputs, so that N calls into one -o write what one call writes; "
            "slurm: this Slurm array task's part (from SLURM_ARRAY_TASK_ID and the array's bounds).",
            rich_help_panel=RUN,
        ),
    ] = None,
) -> int:
    """Segment every object of each input into OUTPUT/<name>/: masks/*.png, overlay.mp4, preview.png,
    hierarchy.png, hierarchy.npz and summary.json (and the --export files). Everything is checked before a model
    loads."""
    params = dict(locals())
    for typed in inputs:
        said = _not_a_path(typed)
        if said is not None:
            error(said)
            raise typer.Exit(2)
    paths = [Path(typed) for typed in inputs]
    _check_names(paths, name, exports)
    try:
        model_cfg = ModelConfig(**config_values(ModelConfig, params))
        cfg = SegmentConfig(**config_values(SegmentConfig, params, CONVERT))
        part = parse_part(shard, dict(os.environ)) if shard is not None else Part(slurm=slurm_task(dict(os.environ)))
        check_before_loading(model_cfg, cfg)
    except ConfigError as e:
        usage_error(str(e), "segment")
    from bavos.models.devices import keep_freed_memory

    keep_freed_memory()  # the windows' buffers reused, not faulted in again each window (this process only)
    opts = RunOptions(quiet, json_out, skip_existing, fail_fast, part, name)
    return run(paths, output, model_cfg, cfg, opts)


def _not_a_path(typed: str) -> str | None:
    """What an input that names no file or folder is, as typed: standard input (ffmpeg's "-i -"), nothing, a URL."""
    from bavos.io.video import url_problem

    if typed == "-" and not Path(typed).exists():
        return "-: bavos does not read standard input (it reads a video several times): save it to a file first"
    if not typed:
        return "an empty input name: give a video file or a folder of frames"
    return url_problem(typed)


def _check_names(inputs: list[Path], name: str | None, exports: list[str] | None) -> None:
    """--name with one input only, a plain folder name; an input not there that is an export's name was meant for
    --export, which takes one kind each time (``--export coco objects`` read ``objects`` as an input)."""
    from bavos.io.files import plain_name

    if name is not None:
        if len(dict.fromkeys(inputs)) != 1:
            usage_error(f"--name names one result; {len(inputs)} inputs were given", "segment")
        try:
            plain_name(name, "--name")
        except ConfigError as e:
            usage_error(str(e), "segment")
    if exports:
        meant = [str(p) for p in inputs if str(p) in EXPORTS and not p.exists()]
        if meant:
            kinds = " ".join(f"--export {kind}" for kind in [*exports, *meant])
            usage_error(f"{meant[0]}: no such file or folder; --export takes one kind each time: {kinds}", "segment")
