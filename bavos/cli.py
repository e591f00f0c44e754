"""The `bavos` command line: parse options, build a config, call one function, show the result.

Importing this module does not import torch (``bavos --help`` stays fast); commands import the pipeline.
"""

from __future__ import annotations

import importlib
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from bavos.cli_output import Bars, Results, TrainView, error, print_table, warn
from bavos.config import DEFAULT_BACKBONE, ModelConfig, SegmentConfig
from bavos.errors import BavosError

app = typer.Typer(name="bavos", add_completion=False, no_args_is_help=True,
                  help="Segment every object in a video with no labels and no prompts.")


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
    backbone: Annotated[str | None, typer.Option(
        help=f"timm ViT name of the frozen backbone [default: a bavos checkpoint's own, else {DEFAULT_BACKBONE}]",
        show_default=False)] = None,
    backbone_weights: Annotated[str | None, typer.Option(
        help="'hub' (timm download/cache), a local weights file, or 'none' (random weights: tests only) [default: "
             "the checkpoint's own backbone, else hub]", show_default=False)] = None,
    checkpoint: Annotated[str, typer.Option(
        help="The correlator: 'release' (the paper's trained checkpoint, downloaded once into the cache), 'none' "
             "(training-free mode: DINO's own attention), or a checkpoint file (bavos or the paper's).")] = "release",
    resolution: Annotated[tuple[int, int], typer.Option(help="Model input height and width.")] = (320, 480),
    key_ratio: Annotated[int, typer.Option(help="Every r-th processed frame is a key frame.")] = 10,
    max_key_frames: Annotated[int, typer.Option(
        help="At most this many key frames, spread over the video (0 = no limit); for long videos.")] = 0,
    attention_cache: Annotated[int, typer.Option(
        help="MB of attention rows kept from the clustering's first pass for its second (0 = compute again).",
        metavar="MB")] = 0,
    tau: Annotated[float, typer.Option(help="Symmetric-KL merge threshold.")] = 1.0,
    window: Annotated[int, typer.Option(help="Frames per level-1 clustering window.")] = 3,
    level: Annotated[int | None, typer.Option(
        help="Hierarchy level to cut (0 = per-window clusters). Default: the converged level.")] = None,
    max_objects: Annotated[int, typer.Option(
        help="Merge the closest clusters until at most this many remain, background included (0 = no limit).")] = 20,
    upsample: Annotated[str, typer.Option(help="'bilinear' (smooth) or 'nearest' mask upsampling.")] = "bilinear",
    stride: Annotated[int, typer.Option(
        help="Feed every k-th frame to the model; other frames take the nearest processed frame's labels.")] = 1,
    device: Annotated[str, typer.Option(help="'auto' (CUDA when available), 'cpu' or 'cuda'.")] = "auto",
    precision: Annotated[str, typer.Option(
        help="Backbone and correlator precision: 'float32' (as released), or 'bf16' / 'fp16' autocast (faster on a "
             "GPU, slightly different masks).")] = "float32",
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
    model_cfg = ModelConfig(backbone=backbone, backbone_weights=backbone_weights, checkpoint=checkpoint)
    cfg = SegmentConfig(resolution=tuple(resolution), key_ratio=key_ratio, max_key_frames=max_key_frames,
                        attention_cache_mb=attention_cache, tau=tau, window=window, level=level,
                        max_objects=max_objects, upsample=upsample, stride=stride, device=device,
                        precision=precision, normalization=normalization, batch_size=batch_size, fps=fps,
                        overlay=overlay, save_hierarchy=hierarchy)
    from bavos.batch import plan_outputs, prepare_output, shard_from_env

    shard = shard_from_env()
    jobs = shard.take(plan_outputs(list(inputs), output))
    report = Results(json_out, quiet)
    failed = 0
    with Bars(enabled=not quiet and sys.stderr.isatty()) as bars:
        try:
            prepare_output(output)
            models = _load_models(model_cfg, cfg, shard.local_rank, jobs, skip_existing, output, bars)
        except BavosError as e:
            if _debug():
                raise
            error(str(e))
            for path, name in jobs:
                report.failed(path, output / name, str(e), 0.0)
            return 1
        if models is not None and models.config.backbone_weights == "none":
            warn("--backbone-weights none: the backbone has random weights; masks are meaningless (tests, benchmarks)")
        for path, name in jobs:
            failed += _segment_one(path, name, output, cfg, models, bars, report, skip_existing)
            if failed and fail_fast:
                break
    return 1 if failed else 0


def _load_models(model_cfg: ModelConfig, cfg: SegmentConfig, local_rank: int | None, jobs: list[tuple[Path, str]],
                 skip_existing: bool, output: Path, bars: Bars) -> Any:
    """The models, or None when every input of this process is already finished (nothing to load)."""
    from bavos.batch import is_finished
    from bavos.segment import load_models

    if skip_existing and all(is_finished(output / name) for _, name in jobs):
        return None

    def download(done: int, total: int | None) -> None:
        bars("download", done, total)

    models = load_models(model_cfg, cfg.device, local_rank, download)
    bars.reset()
    return models


def _segment_one(path: Path, name: str, output: Path, cfg: SegmentConfig, models: Any, bars: Bars,
                 report: Results, skip_existing: bool) -> int:
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
        error(str(e))
        report.failed(path, folder, str(e), time.perf_counter() - start)
        return 1
    report.ok(path, summary, time.perf_counter() - start)
    return 0


def _split(names: str | None) -> list[str] | None:
    return [n.strip() for n in names.split(",") if n.strip()] if names else None


@app.command(name="eval")
def eval_(
    preds: Annotated[Path, typer.Argument(help="Folder with one sub-folder of indexed PNGs per sequence "
                                               "(<seq>/*.png or bavos's <seq>/masks/*.png).", show_default=False)],
    davis: Annotated[Path | None, typer.Option(help="DAVIS-2017 root (Annotations_unsupervised/480p, "
                                                    "ImageSets/2017/val.txt).")] = None,
    protocol: Annotated[str, typer.Option(
        help="'official': one Hungarian match per sequence, ids 1..20 (id 0 is background); 'per-frame': a match in "
             "every frame, ids 1..300; 'release': the paper's evaluator, a match in every frame with every cluster "
             "(id 0 too) a proposal, at most 300.")] = "official",
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
    with Bars(enabled=not quiet and sys.stderr.isatty()) as bars:
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
        print_table(report.title, report.shown_header, report.shown, to_stderr=json_out)
    if json_out:
        typer.echo(json.dumps(report.payload))
    return 0


def _instance_report(preds: Path, gt: Path | None, davis: Path | None, names: list[str] | None,
                     progress: Callable[[str, int, int], None]) -> Any:
    from bavos.evaluate import DavisLayout, evaluate_instances, instance_report

    root = gt if gt is not None else (DavisLayout(davis).annotations if davis is not None else None)
    if root is None:
        raise typer.BadParameter("--fg-ari needs the ground truth: --gt (or --davis)", param_hint="--gt")
    return instance_report(evaluate_instances(preds, root, names, progress=progress))


def _davis_report(preds: Path, davis: Path, protocol: str, names: list[str] | None, max_proposals: int | None,
                  progress: Callable[[str, int, int], None]) -> Any:
    from bavos.evaluate import davis_report, evaluate_davis

    res = evaluate_davis(preds, davis, protocol, names, max_proposals, progress=progress)
    for note in res.notes:
        warn(note)
    return davis_report(res)


def _eval_progress(bars: Bars) -> Callable[[str, int, int], None]:
    def progress(sequence: str, done: int, total: int) -> None:
        if done == 1:
            bars.reset()
        bars(sequence, done, total)

    return progress


@app.command()
def train(
    clips: Annotated[Path, typer.Argument(help="Folder of video files and/or frame folders, searched recursively.",
                                          show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="Run folder: checkpoints, metrics.jsonl, cache.",
                                         show_default=False)],
    preset: Annotated[str | None, typer.Option(help="'release' (batch 8, lr 1e-5, 60k steps; default) or 'paper' "
                                                    "(batch 16, lr 1e-4, 30k steps).")] = None,
    steps: Annotated[int | None, typer.Option(help="Optimizer steps (the cosine schedule spans them).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Clips per step, over all processes.")] = None,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate (cosine decay to 1e-6).")] = None,
    resolution: Annotated[tuple[int, int] | None, typer.Option(help="Training height and width [192 384].")] = None,
    gap: Annotated[int | None, typer.Option(help="Frames between the 3 sampled frames [4].")] = None,
    backbone: Annotated[str | None, typer.Option(help=f"timm ViT name [{DEFAULT_BACKBONE}].")] = None,
    backbone_weights: Annotated[str | None, typer.Option(
        help="'hub', a local weights file, or 'none' (random weights: tests only) [hub; with --init-from: that "
             "checkpoint's backbone].")] = None,
    init_from: Annotated[str | None, typer.Option(
        help="Start a new run from a trained correlator (fine-tuning): 'release' (the paper's) or a checkpoint "
             "file [a new correlator, as released].")] = None,
    loss_attention: Annotated[str | None, typer.Option(
        help="Attention the losses read: 'dropped' (after attention dropout, as released) or 'clean'.")] = None,
    motion_centre: Annotated[bool | None, typer.Option(
        "--motion-centre/--no-motion-centre", help="Add the weighted centre as a motion positive (the release "
                                                    "leaves it out).")] = None,
    augment: Annotated[bool | None, typer.Option("--augment/--no-augment", help="Colour/blur augmentation.")] = None,
    normalization: Annotated[str | None, typer.Option(help="'imagenet' (as released) or 'kinetics'.")] = None,
    seed: Annotated[int | None, typer.Option(help="Base seed [0].")] = None,
    checkpoint_every: Annotated[int | None, typer.Option(help="Steps between checkpoints [1000].")] = None,
    log_every: Annotated[int | None, typer.Option(help="Steps between metrics.jsonl lines [10].")] = None,
    workers: Annotated[int | None, typer.Option(help="Decoding and loading workers [4].")] = None,
    cache: Annotated[Path | None, typer.Option(help="Frame cache folder (shareable between runs) "
                                                     "[OUTPUT/cache].")] = None,
    device: Annotated[str | None, typer.Option(help="'auto' (CUDA when available), 'cpu' or 'cuda' [auto].")] = None,
    precision: Annotated[str | None, typer.Option(
        help="'float32' (as released), or 'bf16' / 'fp16' autocast (fp16 with loss scaling) [float32].")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in OUTPUT from last.pt.")] = False,
    until: Annotated[int | None, typer.Option(help="Stop after this step (checkpointed); resume later.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress and no result line.")] = False,
) -> int:
    """Train the temporal correlator on your own clips (self-supervised; torchrun for several GPUs)."""
    from bavos.config import train_config
    from bavos.train import train as run_training

    given = {"steps": steps, "batch_size": batch_size, "lr": lr, "resolution": resolution, "gap": gap,
             "loss_attention": loss_attention, "motion_centre": motion_centre, "augment": augment,
             "normalization": normalization, "seed": seed, "checkpoint_every": checkpoint_every,
             "log_every": log_every, "workers": workers, "cache": str(cache) if cache else None, "device": device,
             "precision": precision}
    models = {"backbone": backbone, "backbone_weights": backbone_weights, "checkpoint": init_from}
    if resume:
        from bavos.runs import read_run_config

        saved = read_run_config(output)
        cfg = train_config(preset, saved=saved["TrainConfig"], **given)
        model_cfg = _resumed_model_config(saved["ModelConfig"], models)
    else:
        cfg = train_config(preset, **given)
        model_cfg = ModelConfig(**{"checkpoint": "none", **{k: v for k, v in models.items() if v is not None}})
    if model_cfg.backbone_weights == "none":
        warn("--backbone-weights none: the backbone has random weights; the correlator learns nothing useful")
    with TrainView(enabled=not quiet) as view:
        result = run_training(clips, output, model_cfg, cfg, resume=resume, until=until, events=view)
    if not quiet and view.rank == 0:
        last = result["last"] or {}
        loss = f", loss {last['loss']:.4f}" if "loss" in last else ""
        typer.echo(f"{result['checkpoint']}: step {result['step']} of {cfg.steps}{loss} ({result['seconds']:.1f} s)")
    return 0


def _resumed_model_config(saved: dict[str, Any], given: dict[str, str | None]) -> ModelConfig:
    saved = {**saved, "checkpoint": saved.get("checkpoint") or "none"}  # runs before --init-from saved null
    for key, value in given.items():
        if value is not None and value != saved.get(key):
            option = "--init-from" if key == "checkpoint" else f"--{key.replace('_', '-')}"
            raise typer.BadParameter(f"the run was trained with {saved.get(key)}; resume with the same value",
                                     param_hint=option)
    return ModelConfig(**saved)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: exit 0 on success, 1 when an input or the run failed, 2 on usage errors, 130 on Ctrl-C."""
    try:
        code = app(args=argv, prog_name="bavos", standalone_mode=False)
    except _usage_errors() as e:
        ctx = getattr(e, "ctx", None)
        command = f"bavos {ctx.info_name} --help" if ctx is not None and ctx.parent is not None else "bavos --help"
        error(f"{e.format_message()} (see '{command}')")
        sys.exit(2)
    except (KeyboardInterrupt, typer.Abort):
        code = 130
    except BavosError as e:
        if _debug():
            raise
        error(str(e))
        sys.exit(1)
    except Exception as e:  # noqa: BLE001 - the one place that turns any failure into one line
        if _debug():
            raise
        error(f"internal error: {type(e).__name__}: {e} (run with BAVOS_DEBUG=1 for the traceback)")
        sys.exit(1)
    code = code if isinstance(code, int) else 0
    if code == 130:  # Ctrl-C: caught here, or turned into exit code 130 by Typer inside a command
        error("interrupted")
    sys.exit(code)
