"""The `bavos` command line: parse options, build a config, call one function, show the result.

Importing this module does not import torch (``bavos --help`` stays fast); commands import the pipeline.
"""

from __future__ import annotations

import importlib
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from bavos.config import DEFAULT_BACKBONE, ModelConfig, SegmentConfig
from bavos.errors import BavosError

app = typer.Typer(name="bavos", add_completion=False, no_args_is_help=True,
                  help="Segment every object in a video with no labels and no prompts.")


def _error(message: str) -> None:
    sys.stderr.write(f"bavos: error: {message}\n")


def _warn(message: str) -> None:
    sys.stderr.write(f"bavos: warning: {message}\n")


class _Bars:
    """Rich progress bars on stderr, one per pipeline stage, reset for every input."""

    def __init__(self, enabled: bool) -> None:
        self._progress: Any = None
        self._tasks: dict[str, Any] = {}
        if enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(TextColumn("{task.description:<11}"), BarColumn(), MofNCompleteColumn(),
                                      TimeElapsedColumn(), console=Console(stderr=True), transient=True)

    def __enter__(self) -> _Bars:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def reset(self) -> None:
        for task in self._tasks.values():
            self._progress.remove_task(task)
        self._tasks.clear()

    def __call__(self, stage: str, done: int, total: int | None) -> None:
        if self._progress is None:
            return
        if stage not in self._tasks:
            self._tasks[stage] = self._progress.add_task(stage, total=total)
        self._progress.update(self._tasks[stage], completed=done, total=total)


def _debug() -> bool:
    return os.environ.get("BAVOS_DEBUG", "") not in ("", "0")


def _print_version(value: bool) -> None:
    if value:
        from bavos import __version__

        typer.echo(__version__)
        raise typer.Exit(0)


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                                help="Print the version and exit.")] = False) -> None:
    """Segment every object in a video with no labels and no prompts."""


def _usage_errors() -> tuple[type[Exception], ...]:
    """Usage-error classes: Typer >= 0.20 vendors click as typer._click, older ones use click itself."""
    found = []
    for module in ("typer._click.exceptions", "click.exceptions"):
        try:
            found.append(importlib.import_module(module).UsageError)
        except (ImportError, AttributeError):
            continue
    return tuple(found)


@app.command()
def segment(
    inputs: Annotated[list[Path], typer.Argument(help="Video files (any format FFmpeg reads) or folders of frames.",
                                                  show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o",
                                         help="Folder that receives one sub-folder per input.")] = Path("out"),
    backbone: Annotated[str, typer.Option(help="timm ViT name of the frozen backbone.")] = DEFAULT_BACKBONE,
    backbone_weights: Annotated[str, typer.Option(
        help="'hub' (timm download/cache), a local weights file, or 'none' (random weights: tests only).")] = "hub",
    checkpoint: Annotated[Path | None, typer.Option(
        help="Correlator checkpoint (bavos or the paper's release). Without one: training-free mode.")] = None,
    resolution: Annotated[tuple[int, int], typer.Option(help="Model input height and width.")] = (320, 480),
    key_ratio: Annotated[int, typer.Option(help="Every r-th processed frame is a key frame.")] = 10,
    max_key_frames: Annotated[int, typer.Option(
        help="At most this many key frames, spread over the video (0 = no limit); for long videos.")] = 0,
    tau: Annotated[float, typer.Option(help="Symmetric-KL merge threshold.")] = 1.0,
    window: Annotated[int, typer.Option(help="Frames per level-1 clustering window.")] = 3,
    level: Annotated[int | None, typer.Option(
        help="Hierarchy level to cut (0 = per-window clusters). Default: the converged level.")] = None,
    max_objects: Annotated[int, typer.Option(
        help="Merge the closest clusters until at most this many remain, background included (0 = no limit).")] = 20,
    upsample: Annotated[str, typer.Option(help="'bilinear' (smooth) or 'nearest' mask upsampling.")] = "bilinear",
    stride: Annotated[int, typer.Option(
        help="Feed every k-th frame to the model; other frames take the nearest processed frame's labels.")] = 1,
    device: Annotated[str, typer.Option(help="'auto', 'cpu' or 'cuda' (bf16/fp16 autocast on CUDA).")] = "auto",
    normalization: Annotated[str, typer.Option(
        help="'kinetics' (as released for inference) or 'imagenet'.")] = "kinetics",
    batch_size: Annotated[int, typer.Option(help="Frames per backbone batch.")] = 8,
    fps: Annotated[float, typer.Option(help="Overlay frame rate for frame folders.")] = 24.0,
    overlay: Annotated[bool, typer.Option("--overlay/--no-overlay", help="Write overlay.mp4.")] = True,
    hierarchy: Annotated[bool, typer.Option("--hierarchy/--no-hierarchy",
                                            help="Write hierarchy.npz (labels of every level).")] = True,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars and no result lines.")] = False,
    json_out: Annotated[bool, typer.Option(
        "--json", help="One JSON line per input on stdout (input, status, output, frames, objects, seconds, error) "
                       "and nothing else.")] = False,
    skip_existing: Annotated[bool, typer.Option("--skip-existing", help="Skip inputs whose finished output "
                                                                        "(summary.json) is already there.")] = False,
    fail_fast: Annotated[bool, typer.Option("--fail-fast", help="Stop at the first input that fails.")] = False,
) -> int:
    """Segment every object of each input into OUTPUT/<name>/: masks/*.png, overlay.mp4, summary.json."""
    model_cfg = ModelConfig(backbone=backbone, backbone_weights=backbone_weights,
                            checkpoint=str(checkpoint) if checkpoint else None)
    cfg = SegmentConfig(resolution=tuple(resolution), key_ratio=key_ratio, max_key_frames=max_key_frames, tau=tau,
                        window=window, level=level, max_objects=max_objects, upsample=upsample, stride=stride,
                        device=device, normalization=normalization, batch_size=batch_size, fps=fps, overlay=overlay,
                        save_hierarchy=hierarchy)
    if backbone_weights == "none":
        _warn("--backbone-weights none: the backbone has random weights; masks are meaningless (tests, benchmarks)")
    from bavos.batch import plan_outputs, prepare_output, shard_from_env

    shard = shard_from_env()
    jobs = shard.take(plan_outputs(list(inputs), output))
    report = _Results(json_out, quiet)
    try:
        prepare_output(output)
        models = _load_models(model_cfg, cfg, shard.local_rank, jobs, skip_existing, output)
    except BavosError as e:
        if _debug():
            raise
        _error(str(e))
        for path, name in jobs:
            report.failed(path, output / name, str(e), 0.0)
        return 1
    failed = 0
    with _Bars(enabled=not quiet and sys.stderr.isatty()) as bars:
        for path, name in jobs:
            failed += _segment_one(path, name, output, cfg, models, bars, report, skip_existing)
            if failed and fail_fast:
                break
    return 1 if failed else 0


def _load_models(model_cfg: ModelConfig, cfg: SegmentConfig, local_rank: int | None, jobs: list[tuple[Path, str]],
                 skip_existing: bool, output: Path) -> Any:
    """The models, or None when every input of this process is already finished (nothing to load)."""
    from bavos.batch import is_finished
    from bavos.segment import load_models

    if skip_existing and all(is_finished(output / name) for _, name in jobs):
        return None
    return load_models(model_cfg, cfg.device, local_rank)


def _segment_one(path: Path, name: str, output: Path, cfg: SegmentConfig, models: Any, bars: _Bars,
                 report: _Results, skip_existing: bool) -> int:
    """Segment one input (or skip it); 1 when it failed."""
    from bavos.batch import is_finished
    from bavos.segment import segment_video

    folder = output / name
    if skip_existing and is_finished(folder):
        report.skipped(path, folder)
        return 0
    bars.reset()
    start = time.perf_counter()
    try:
        summary = segment_video(path, output, cfg, models=models, progress=bars, name=name)
    except BavosError as e:
        _error(str(e))
        report.failed(path, folder, str(e), time.perf_counter() - start)
        return 1
    report.ok(path, summary, time.perf_counter() - start)
    return 0


class _Results:
    """Per-input results: a line of text, or with --json exactly one JSON line per input on stdout."""

    def __init__(self, as_json: bool, quiet: bool) -> None:
        self.as_json, self.quiet = as_json, quiet

    def _emit(self, path: Path, status: str, output: Path | str, frames: int | None, objects: int | None,
              seconds: float, error: str | None) -> None:
        if self.as_json:
            import json

            line = json.dumps({"input": str(path), "status": status, "output": str(output), "frames": frames,
                               "objects": objects, "seconds": round(seconds, 3), "error": error})
            typer.echo(line)
            sys.stdout.flush()  # one write per line: lines of torchrun processes sharing stdout stay whole
        elif not self.quiet and status != "failed":
            what = "skipped, finished output exists" if status == "skipped" else f"{frames} frames, {objects} objects"
            typer.echo(f"{output}: {what} ({seconds:.1f} s)")

    def ok(self, path: Path, summary: dict[str, Any], seconds: float) -> None:
        self._emit(path, "ok", summary["output"], summary["frames"], summary["objects"], seconds, None)

    def failed(self, path: Path, folder: Path, error: str, seconds: float) -> None:
        self._emit(path, "failed", folder, None, None, seconds, error)

    def skipped(self, path: Path, folder: Path) -> None:
        from bavos.batch import read_summary

        summary = read_summary(folder) or {}
        self._emit(path, "skipped", folder, summary.get("frames"), summary.get("objects"), 0.0, None)


def _print_table(title: str, columns: list[str], rows: list[list[str]], to_stderr: bool) -> None:
    """A rich table on stdout (or stderr, when stdout carries JSON); the last row is the overall one."""
    from rich.console import Console
    from rich.table import Table

    stream = sys.stderr if to_stderr else sys.stdout
    console = Console(file=stream, width=None if stream.isatty() else 160)
    table = Table(title=title, title_justify="left")
    for i, col in enumerate(columns):
        table.add_column(col, justify="left" if i == 0 else "right")
    for i, row in enumerate(rows):
        table.add_row(*row, end_section=i == len(rows) - 2)
    console.print(table)


def _split(names: str | None) -> list[str] | None:
    return [n.strip() for n in names.split(",") if n.strip()] if names else None


@app.command(name="eval")
def eval_(
    preds: Annotated[Path, typer.Argument(help="Folder with one sub-folder of indexed PNGs per sequence "
                                               "(<seq>/*.png or bavos's <seq>/masks/*.png).", show_default=False)],
    davis: Annotated[Path | None, typer.Option(help="DAVIS-2017 root (Annotations_unsupervised/480p, "
                                                    "ImageSets/2017/val.txt).")] = None,
    protocol: Annotated[str, typer.Option(
        help="'official': one Hungarian match per sequence, <= 20 proposals; 'per-frame': the release's lenient "
             "match in every frame, <= 300 proposals.")] = "official",
    sequences: Annotated[str | None, typer.Option(help="Comma-separated sequence names (default: val.txt).")] = None,
    max_proposals: Annotated[int | None, typer.Option(
        help="Proposal limit; any value other than the protocol's is reported as non-standard.")] = None,
    fg_ari: Annotated[bool, typer.Option("--fg-ari", help="FG-ARI and video mIoU on instance masks instead of "
                                                          "DAVIS J/F (ground truth: --gt, or --davis).")] = False,
    gt: Annotated[Path | None, typer.Option(help="With --fg-ari: folder of ground-truth instance-mask "
                                                 "sequence folders.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON object on stdout (the table goes to "
                                                          "stderr).")] = False,
    csv: Annotated[Path | None, typer.Option(help="Write the per-sequence table to this CSV file.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No table, no progress.")] = False,
) -> int:
    """Score predictions: DAVIS-2017 unsupervised J and F (protocol named), or FG-ARI and mIoU."""
    import json

    names = _split(sequences)
    with _Bars(enabled=not quiet and sys.stderr.isatty()) as bars:
        progress = _eval_progress(bars)
        if fg_ari:
            report = _instance_report(preds, gt, davis, names, progress)
        else:
            if davis is None:
                raise typer.BadParameter("give the DAVIS-2017 root with --davis", param_hint="--davis")
            report = _davis_report(preds, davis, protocol, names, max_proposals, progress)
    if csv is not None:
        from bavos.evaluate import write_csv

        write_csv(csv, report.header, report.rows)
    if not quiet:
        _print_table(report.title, report.shown_header, report.shown, to_stderr=json_out)
    if json_out:
        typer.echo(json.dumps(report.payload))
    return 0


@dataclass
class _Report:
    title: str
    header: list[str]  # CSV
    rows: list[list[object]]  # CSV
    shown_header: list[str]  # table
    shown: list[list[str]]  # table
    payload: dict[str, object]  # JSON


def _instance_report(preds: Path, gt: Path | None, davis: Path | None, names: list[str] | None,
                     progress: Callable[[str, int, int], None]) -> _Report:
    from bavos.evaluate import DavisLayout, evaluate_instances

    root = gt if gt is not None else (DavisLayout(davis).annotations if davis is not None else None)
    if root is None:
        raise typer.BadParameter("--fg-ari needs the ground truth: --gt (or --davis)", param_hint="--gt")
    res = evaluate_instances(preds, root, names, progress=progress)
    overall = res.overall()
    header = ["Sequence", "FG-ARI", "mIoU"]
    rows: list[list[object]] = [[s, f"{res.fg_ari[s]:.6f}", f"{res.miou[s]:.6f}"] for s in res.fg_ari]
    shown = [[s, f"{res.fg_ari[s]:.3f}", f"{res.miou[s]:.3f}"] for s in res.fg_ari]
    shown.append(["overall", *(f"{v:.3f}" for v in overall.values())])
    payload: dict[str, object] = {**{k: round(v, 6) for k, v in overall.items()}, "sequences": list(res.fg_ari)}
    return _Report("FG-ARI / video mIoU", header, rows, header, shown, payload)


def _davis_report(preds: Path, davis: Path, protocol: str, names: list[str] | None, max_proposals: int | None,
                  progress: Callable[[str, int, int], None]) -> _Report:
    from bavos.evaluate import MEASURES, davis_rows, evaluate_davis

    res = evaluate_davis(preds, davis, protocol, names, max_proposals, progress=progress)
    for note in res.notes:
        _warn(note)
    header, rows = davis_rows(res)
    shown = [[str(r[0]), str(r[1]), *(f"{m[k]:.3f}" for k in MEASURES)]
             for r, m in zip(rows, res.per_sequence().values(), strict=True)]
    overall = res.overall()
    shown.append(["overall", str(len(res.objects)), *(f"{overall[m]:.3f}" for m in MEASURES)])
    return _Report(f"DAVIS-2017 unsupervised, protocol: {res.protocol}", header, rows,
                   ["Sequence", "Objects", *MEASURES], shown, res.to_json())


def _eval_progress(bars: _Bars) -> Callable[[str, int, int], None]:
    def progress(sequence: str, done: int, total: int) -> None:
        if done == 1:
            bars.reset()
        bars(sequence, done, total)

    return progress


def main(argv: list[str] | None = None) -> None:
    """Console entry point: exit 0 on success, 1 when an input or the run failed, 2 on usage errors, 130 on Ctrl-C."""
    try:
        code = app(args=argv, prog_name="bavos", standalone_mode=False)
    except _usage_errors() as e:
        ctx = getattr(e, "ctx", None)
        command = f"bavos {ctx.info_name} --help" if ctx is not None and ctx.parent is not None else "bavos --help"
        _error(f"{e.format_message()} (see '{command}')")
        sys.exit(2)
    except (KeyboardInterrupt, typer.Abort):
        code = 130
    except BavosError as e:
        if _debug():
            raise
        _error(str(e))
        sys.exit(1)
    except Exception as e:  # noqa: BLE001 - the one place that turns any failure into one line
        if _debug():
            raise
        _error(f"internal error: {type(e).__name__}: {e} (run with BAVOS_DEBUG=1 for the traceback)")
        sys.exit(1)
    code = code if isinstance(code, int) else 0
    if code == 130:  # Ctrl-C: caught here, or turned into exit code 130 by Typer inside a command
        _error("interrupted")
    sys.exit(code)
