"""The `bavos` command line: parse options, build a config, call one function, show the result.

Importing this module does not import torch (``bavos --help`` stays fast); commands import the pipeline.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from bavos.cli_help import Command, Group
from bavos.cli_output import count, error, print_table, progress_for, warn
from bavos.config import DEFAULT_BACKBONE, ModelConfig, SegmentConfig
from bavos.errors import BavosError, ConfigError, plain_os_error

app = typer.Typer(name="bavos", cls=Group, add_completion=False, rich_markup_mode=None,
                  help="Segment every object in a video with no labels and no prompts (Betrayed by Attention, "
                       "ECCV 2024). Run 'bavos COMMAND --help' for a command's options.")


def _debug() -> bool:
    return os.environ.get("BAVOS_DEBUG", "") not in ("", "0")


def _print_version(value: bool) -> None:
    if value:
        from bavos import __version__

        typer.echo(__version__)
        raise typer.Exit(0)


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True, show_default=False,
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


def _usage(message: str, command: str) -> NoReturn:
    """A usage error: one line, exit code 2."""
    error(f"{message} (see 'bavos {command} --help')")
    raise typer.Exit(2)


@app.command(cls=Command)
def segment(
    inputs: Annotated[list[Path], typer.Argument(
        help="Video files (anything FFmpeg reads) or folders of frames.", metavar="INPUT", show_default=False)],
    output: Annotated[Path, typer.Option(
        "--output", "-o", metavar="DIR", help="Folder that receives one sub-folder per input.")] = Path("out"),
    checkpoint: Annotated[str, typer.Option(
        metavar="release|none|PATH",
        help="The correlator: 'release', the paper's trained model (downloaded once, about 95 MB); 'none', the "
             "training-free mode (DINO's own attention, a weaker baseline); or a checkpoint file.")] = "release",
    backbone: Annotated[str | None, typer.Option(
        metavar="NAME", show_default=f"the checkpoint's, else {DEFAULT_BACKBONE}",
        help="timm ViT name of the frozen backbone.")] = None,
    backbone_weights: Annotated[str | None, typer.Option(
        metavar="hub|none|PATH", show_default="the checkpoint's, else hub",
        help="'hub' (timm's DINO weights, downloaded once), a weights file, or 'none' (random weights: masks are "
             "meaningless; for tests).")] = None,
    resolution: Annotated[tuple[int, int] | None, typer.Option(
        metavar="H W", show_default="320 480 on a GPU (the paper's), 160 240 on a CPU",
        help="Model input size, multiples of 8. Larger finds smaller objects and follows edges better; the "
             "clustering's time grows with the cube of the pixel count.")] = None,
    key_ratio: Annotated[int, typer.Option(
        metavar="R", help="Every R-th frame is a key frame that every frame attends to. Lower: more key frames, "
                          "better for objects seen briefly, more time and memory.")] = 10,
    max_key_frames: Annotated[int, typer.Option(
        metavar="N", help="At most N key frames, spread over the video (0: no limit). 30 keeps every key frame of "
                          "clips up to 300 frames and makes longer videos cost linear time; fewer key frames may "
                          "merge an object seen only between them into another.")] = 30,
    tau: Annotated[float, typer.Option(
        metavar="TAU", help="Merge threshold (symmetric KL). Higher merges more: fewer, larger objects; lower "
                            "splits: more, smaller ones.")] = 1.0,
    window: Annotated[int, typer.Option(
        metavar="N", help="Frames clustered together before the global merges (the paper's 3). Larger windows "
                          "cost the square in time and memory.")] = 3,
    level: Annotated[int | None, typer.Option(
        metavar="L", show_default="the converged level",
        help="Hierarchy level to cut: 0 = per-window clusters (most objects), each level above = one more global "
             "merge round (fewer).")] = None,
    max_objects: Annotated[int, typer.Option(
        metavar="N", help="Then merge the closest clusters until at most N remain, background included (0: no "
                          "limit, the paper's partition).")] = 20,
    upsample: Annotated[str, typer.Option(
        metavar="bilinear|nearest",
        help="How masks reach the frame size: smooth edges, or 8-pixel blocks (as released).")] = "bilinear",
    stride: Annotated[int, typer.Option(
        metavar="K", help="Feed every K-th frame to the model; the others take the nearest processed frame's masks. "
                          "K times less work; masks follow fast motion less closely.")] = 1,
    device: Annotated[str, typer.Option(
        metavar="auto|cpu|cuda", help="Where to run: 'auto' takes CUDA when there is one.")] = "auto",
    precision: Annotated[str, typer.Option(
        metavar="float32|bf16|fp16", help="Backbone and correlator precision: float32 as released; bf16 / fp16 are "
                                          "faster on a GPU but move many tokens to other clusters.")] = "float32",
    normalization: Annotated[str, typer.Option(
        metavar="kinetics|imagenet",
        help="Input statistics: the paper's inference (kinetics) or its training (imagenet).")] = "kinetics",
    batch_size: Annotated[int, typer.Option(
        metavar="N", help="Frames per backbone batch (memory, not the result).")] = 8,
    attention_cache: Annotated[int, typer.Option(
        metavar="MB", help="Keep up to MB of attention from the clustering's first pass for its second: faster, "
                           "more memory, the same result (0: compute it again).")] = 0,
    query_cache: Annotated[int, typer.Option(
        metavar="MB", help="Keep up to MB of the frames' queries for the clustering's second pass instead of "
                           "decoding and running the backbone again: faster, more memory, the same result.")] = 0,
    fps: Annotated[float, typer.Option(metavar="FPS", help="Overlay frame rate for frame folders.")] = 24.0,
    start: Annotated[str | None, typer.Option(
        metavar="FRAME|SECONDS", show_default="the first frame",
        help="Segment from this frame number (120) or time (12.5s); names and times stay the video's.")] = None,
    end: Annotated[str | None, typer.Option(
        metavar="FRAME|SECONDS", show_default="the last frame",
        help="Segment up to this frame number or time, excluded.")] = None,
    export: Annotated[list[str] | None, typer.Option(
        metavar="coco|objects|video", show_default="none",
        help="Also write: coco.json (YouTube-VIS results with RLE masks), objects/<id>/*.png (one black-and-white "
             "mask per object and frame) or masks.mp4 (the colour masks as a video); repeat for several.")] = None,
    overlay: Annotated[bool, typer.Option("--overlay/--no-overlay", help="Write overlay.mp4.")] = True,
    hierarchy: Annotated[bool, typer.Option(
        "--hierarchy/--no-hierarchy", help="Write hierarchy.npz (every level, for other cuts later).")] = True,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress, notes or result lines.")] = False,
    json_out: Annotated[bool, typer.Option(
        "--json", help="One JSON line per input on stdout (input, status, output, frames, objects, seconds, "
                       "error) and nothing else there.")] = False,
    skip_existing: Annotated[bool, typer.Option(
        "--skip-existing", help="Skip inputs whose finished output was made with the same settings.")] = False,
    fail_fast: Annotated[bool, typer.Option("--fail-fast", help="Stop at the first input that fails.")] = False,
) -> int:
    """Segment every object of each input into OUTPUT/<name>/: masks/*.png, overlay.mp4, preview.png,
    hierarchy.png, hierarchy.npz and summary.json (and the --export files). Everything is checked before a model
    loads."""
    from bavos.cli_segment import RunOptions, check_before_loading, run

    try:
        model_cfg = ModelConfig(backbone=backbone, backbone_weights=backbone_weights, checkpoint=checkpoint)
        cfg = SegmentConfig(resolution=tuple(resolution) if resolution else None, key_ratio=key_ratio,
                            max_key_frames=max_key_frames, attention_cache_mb=attention_cache,
                            query_cache_mb=query_cache, tau=tau, window=window,
                            level=level, max_objects=max_objects, upsample=upsample, stride=stride, device=device,
                            precision=precision, normalization=normalization, batch_size=batch_size, fps=fps,
                            overlay=overlay, save_hierarchy=hierarchy, start=start, end=end,
                            exports=tuple(dict.fromkeys(export or ())))
        check_before_loading(model_cfg, cfg)
    except ConfigError as e:
        _usage(str(e), "segment")
    return run(list(inputs), output, model_cfg, cfg, RunOptions(quiet, json_out, skip_existing, fail_fast))


@app.command(cls=Command)
def recut(
    folders: Annotated[list[Path], typer.Argument(
        metavar="RESULT", help="Output folders of bavos segment (OUT/<name>).", show_default=False)],
    level: Annotated[int | None, typer.Option(
        metavar="L", show_default="the converged level",
        help="Hierarchy level to cut (0 = per-window clusters).")] = None,
    max_objects: Annotated[int, typer.Option(
        metavar="N", help="Then merge the closest clusters until at most N remain (0: no limit).")] = 20,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress and no result lines.")] = False,
) -> int:
    """Cut a result's hierarchy at another level or cap, without the model: masks, overlay, pictures,
    hierarchy.npz, exports and summary are rewritten as bavos segment would write them with these options (the
    source video is read again for the frames)."""
    from bavos.recut import recut_folder

    if level is not None and level < 0 or max_objects < 0:
        _usage("--level and --max-objects must be 0 or more", "recut")
    code = 0
    with progress_for(quiet) as progress:
        for folder in folders:
            progress.start(folder.name)
            try:
                summary = recut_folder(folder, level, max_objects, progress)
            except (BavosError, OSError) as e:
                message = plain_os_error(e) if isinstance(e, OSError) else str(e)
                error(f"{folder}: {message}" if str(folder) not in message else message)
                code = max(code, getattr(e, "exit_code", 1))
                continue
            if not quiet:
                progress.line(f"{folder}: level {summary['level']}, {count(summary['objects'], 'object')} "
                              f"({summary['timings']['recut']:.1f} s)")
    return code


def _split(names: str | None) -> list[str] | None:
    return [n.strip() for n in names.split(",") if n.strip()] if names else None


@app.command(name="eval", cls=Command)
def eval_(
    preds: Annotated[Path, typer.Argument(
        metavar="PREDS", help="Folder with one sub-folder of mask PNGs per sequence (<seq>/*.png, or bavos's "
                              "<seq>/masks/*.png).", show_default=False)],
    davis: Annotated[Path | None, typer.Option(
        metavar="DIR", show_default="none", help="DAVIS-2017 root (Annotations_unsupervised/480p, "
                                                 "ImageSets/2017/val.txt).")] = None,
    protocol: Annotated[str, typer.Option(
        metavar="official|per-frame|release",
        help="'official': one Hungarian match per sequence, ids 1..20 (id 0 is background); 'per-frame': a match "
             "in every frame, ids 1..300; 'release': the paper's evaluator, a match in every frame with every "
             "cluster (id 0 too) a proposal, at most 300.")] = "official",
    sequences: Annotated[str | None, typer.Option(
        metavar="A,B,...", show_default="ImageSets/2017/val.txt", help="Sequences to score.")] = None,
    max_proposals: Annotated[int | None, typer.Option(
        metavar="N", show_default="the protocol's",
        help="Proposal limit; any other value is reported as non-standard.")] = None,
    fg_ari: Annotated[bool, typer.Option("--fg-ari", help="FG-ARI and video mIoU on instance masks instead of "
                                                          "DAVIS J/F (ground truth: --gt, or --davis).")] = False,
    gt: Annotated[Path | None, typer.Option(
        metavar="DIR", show_default="none",
        help="With --fg-ari: folder of ground-truth instance-mask sequence folders.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON object on stdout (the table goes to "
                                                          "stderr).")] = False,
    csv: Annotated[Path | None, typer.Option(
        metavar="FILE", show_default="none", help="Write the per-sequence table to this CSV file.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No table and no progress (with --json or "
                                                              "--csv).")] = False,
) -> int:
    """Score predictions: DAVIS-2017 unsupervised J and F (the protocol always named), or FG-ARI and mIoU."""
    import json

    from bavos.evaluate import PROTOCOLS

    if quiet and not json_out and csv is None:
        _usage("--quiet alone would show nothing: add --json or --csv", "eval")
    if protocol not in PROTOCOLS:
        _usage(f"--protocol must be one of {', '.join(PROTOCOLS)}, got {protocol}", "eval")
    if not fg_ari and davis is None:
        _usage("give the DAVIS-2017 root with --davis", "eval")
    if fg_ari and gt is None and davis is None:
        _usage("--fg-ari needs the ground truth: --gt (or --davis)", "eval")
    names = _split(sequences)
    with progress_for(quiet) as progress:
        def scored(sequence: str, done: int, total: int) -> None:
            if done == 1:
                progress.start(sequence)
            progress("scoring", done, total)

        report = _instance_report(preds, gt, davis, names, scored) if fg_ari else \
            _davis_report(preds, davis, protocol, names, max_proposals, scored)
    if csv is not None:
        from bavos.evaluate import write_csv

        write_csv(csv, report.header, report.rows)
    if not quiet:
        print_table(report.title, report.shown_header, report.shown, to_stderr=json_out)
    if json_out:
        typer.echo(json.dumps(report.payload))
    return 0


def _instance_report(preds: Path, gt: Path | None, davis: Path | None, names: list[str] | None, progress: Any) -> Any:
    from bavos.evaluate import DavisLayout, evaluate_instances, instance_report

    root = gt if gt is not None else DavisLayout(davis).annotations
    return instance_report(evaluate_instances(preds, root, names, progress=progress))


def _davis_report(preds: Path, davis: Path, protocol: str, names: list[str] | None, max_proposals: int | None,
                  progress: Any) -> Any:
    from bavos.evaluate import davis_report, evaluate_davis

    res = evaluate_davis(preds, davis, protocol, names, max_proposals, progress=progress)
    for note in res.notes:
        warn(note)
    return davis_report(res)


@app.command(cls=Command)
def weights(
    check: Annotated[bool, typer.Option(
        "--check", help="Only say what is cached; no network. Exit 1 when the default weights (the paper's "
                        "checkpoint) are missing; timm's DINO weights, needed only by --checkpoint none and bavos "
                        "train, are a note.")] = False,
) -> int:
    """Fetch the default weights into the cache and print where they are: the paper's checkpoint (the default
    correlator, with its backbone) and DINO ViT-S/8 from timm's hub (--checkpoint none, bavos train). Run it where
    there is a connection; later runs read the cache without any network call."""
    from bavos.weights import cache_dir, hub_weights, release_checkpoint, release_path

    def fetched(what: str, fetch: Any, optional: bool = False) -> bool:
        try:
            path = Path(fetch())
        except BavosError as e:
            if optional:
                warn(f"{what}: {e}; needed only by --checkpoint none and bavos train")
                return True
            error(f"{what}: {e}")
            return False
        typer.echo(f"{what}: {path} ({path.stat().st_size / 2**20:.1f} MB)")
        return True

    def release() -> Path:
        if check and not release_path().is_file():
            raise BavosError(f"not in the cache ({release_path()})")
        return release_checkpoint()

    typer.echo(f"cache: {cache_dir()} (set BAVOS_CACHE to move it)")
    ok = fetched("paper's checkpoint (--checkpoint release)", release)
    ok &= fetched(f"{DEFAULT_BACKBONE} from timm's hub (--backbone-weights hub)",
                  lambda: hub_weights(DEFAULT_BACKBONE, download_missing=not check), optional=check)
    return 0 if ok else 1


@app.command(cls=Command)
def train(
    clips: Annotated[Path, typer.Argument(
        metavar="CLIPS", help="Folder of video files and/or frame folders, searched recursively.",
        show_default=False)],
    output: Annotated[Path, typer.Option(
        "--output", "-o", metavar="DIR", help="Run folder: checkpoints, metrics.jsonl, frame cache.",
        show_default=False)],
    preset: Annotated[str | None, typer.Option(
        metavar="release|paper", show_default="release",
        help="'release': batch 8, lr 1e-5, 60k steps (the released script); 'paper': batch 16, lr 1e-4, 30k steps "
             "(as the paper reports).")] = None,
    steps: Annotated[int | None, typer.Option(
        metavar="N", show_default="the preset's", help="Optimizer steps (the cosine schedule spans them).")] = None,
    batch_size: Annotated[int | None, typer.Option(
        metavar="N", show_default="the preset's", help="Clips per step, over all processes.")] = None,
    lr: Annotated[float | None, typer.Option(
        metavar="LR", show_default="the preset's", help="Peak learning rate (cosine decay to 1e-6).")] = None,
    resolution: Annotated[tuple[int, int] | None, typer.Option(
        metavar="H W", show_default="192 384", help="Training frame size.")] = None,
    gap: Annotated[int | None, typer.Option(
        metavar="N", show_default="4", help="Frames between the 3 sampled frames (shrunk for short clips).")] = None,
    backbone: Annotated[str | None, typer.Option(
        metavar="NAME", show_default=DEFAULT_BACKBONE, help="timm ViT name.")] = None,
    backbone_weights: Annotated[str | None, typer.Option(
        metavar="hub|none|PATH", show_default="hub; with --init-from, that checkpoint's",
        help="'hub', a weights file, or 'none' (random weights: tests only).")] = None,
    init_from: Annotated[str | None, typer.Option(
        metavar="release|PATH", show_default="a new correlator, as released",
        help="Start a new run from a trained correlator (fine-tuning); --resume continues a run.")] = None,
    loss_attention: Annotated[str | None, typer.Option(
        metavar="dropped|clean", show_default="dropped",
        help="Attention the losses read: after attention dropout (as released) or before it.")] = None,
    motion_centre: Annotated[bool | None, typer.Option(
        "--motion-centre/--no-motion-centre", show_default="--no-motion-centre",
        help="Add the weighted centre as a motion positive (the release computes it and leaves it out).")] = None,
    augment: Annotated[bool | None, typer.Option(
        "--augment/--no-augment", show_default="--augment", help="Colour, grayscale and blur augmentation.")] = None,
    normalization: Annotated[str | None, typer.Option(
        metavar="imagenet|kinetics", show_default="imagenet", help="Input statistics (imagenet as released).")] = None,
    precision: Annotated[str | None, typer.Option(
        metavar="float32|bf16|fp16", show_default="float32",
        help="float32 as released; bf16 / fp16 autocast (fp16 with loss scaling).")] = None,
    seed: Annotated[int | None, typer.Option(metavar="N", show_default="0", help="Base seed.")] = None,
    checkpoint_every: Annotated[int | None, typer.Option(
        metavar="N", show_default="1000", help="Steps between checkpoints.")] = None,
    log_every: Annotated[int | None, typer.Option(
        metavar="N", show_default="10", help="Steps between metrics.jsonl lines.")] = None,
    workers: Annotated[int | None, typer.Option(
        metavar="N", show_default="this machine's cores, at most 8", help="Decoding and loading workers.")] = None,
    cache: Annotated[Path | None, typer.Option(
        metavar="DIR", show_default="OUTPUT/cache", help="Frame cache folder (shareable between runs).")] = None,
    device: Annotated[str | None, typer.Option(
        metavar="auto|cpu|cuda", show_default="auto",
        help="Where to run: 'auto' takes CUDA when there is one.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in OUTPUT from last.pt.")] = False,
    until: Annotated[int | None, typer.Option(
        metavar="STEP", show_default="the last step",
        help="Stop after this step (checkpointed); resume later.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress and no result line.")] = False,
) -> int:
    """Train the temporal correlator on your own clips (self-supervised; torchrun for several GPUs)."""
    from bavos.cli_output import TrainView
    from bavos.config import train_config
    from bavos.train import train as run_training

    given = {"steps": steps, "batch_size": batch_size, "lr": lr, "resolution": resolution, "gap": gap,
             "loss_attention": loss_attention, "motion_centre": motion_centre, "augment": augment,
             "normalization": normalization, "seed": seed, "checkpoint_every": checkpoint_every,
             "log_every": log_every, "workers": workers, "cache": str(cache) if cache else None, "device": device,
             "precision": precision}
    models = {"backbone": backbone, "backbone_weights": backbone_weights, "checkpoint": init_from}
    try:
        if resume:
            from bavos.runs import read_run_config

            saved = read_run_config(output)
            cfg = train_config(preset, saved=saved["TrainConfig"], **given)
            model_cfg = _resumed_model_config(saved["ModelConfig"], models)
        else:
            cfg = train_config(preset, **given)
            model_cfg = ModelConfig(**{"checkpoint": "none", **{k: v for k, v in models.items() if v is not None}})
    except ConfigError as e:
        _usage(str(e), "train")
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
            raise ConfigError(f"{option} {value}: the run was trained with {saved.get(key)}; resume with the same "
                              "value")
    return ModelConfig(**saved)


class _Terminated:
    """SIGTERM (``kill``, a job scheduler's time limit) taken as Ctrl-C, so temporary files are removed on the way
    out; the exit code is then 143."""

    def __init__(self) -> None:
        self.received = False
        self._previous: Any = None

    def __enter__(self) -> _Terminated:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.received = True
        raise KeyboardInterrupt

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: exit 0 on success, 1 when an input or the run failed, 2 on usage errors, 130 on Ctrl-C,
    143 on SIGTERM."""
    argv = sys.argv[1:] if argv is None else argv
    with _Terminated() as terminated:
        _run(argv, terminated)


def _quiet_ffmpeg(argv: list[str]) -> None:
    """FFmpeg's own log lines off for commands that decode video: bavos names what went wrong in its warnings
    (BAVOS_DEBUG=1 keeps FFmpeg's lines)."""
    if argv and argv[0] in ("segment", "recut", "train") and not _debug():
        import av.logging

        av.logging.set_libav_level(av.logging.PANIC)


def _run(argv: list[str], terminated: _Terminated) -> None:
    _quiet_ffmpeg(argv)
    try:
        code = app(args=argv or ["--help"], prog_name="bavos", standalone_mode=False)
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
        sys.exit(e.exit_code)
    except OSError as e:  # reading or writing failed where no command turned it into a BavosError
        if _debug():
            raise
        error(plain_os_error(e))
        sys.exit(1)
    except Exception as e:  # noqa: BLE001 - the one place that turns any failure into one line
        if _debug():
            raise
        if "torchvision::" in str(e):  # torchvision built for another torch: it fails on first use
            error(f"torch and torchvision do not match ({e}): install both from the same index, e.g. pip install "
                  "--force-reinstall torch torchvision")
        else:
            error(f"internal error: {type(e).__name__}: {e} (run with BAVOS_DEBUG=1 for the traceback)")
        sys.exit(1)
    code = code if isinstance(code, int) else 0
    if code == 130:  # Ctrl-C: caught here, or turned into exit code 130 by Typer inside a command
        error("terminated" if terminated.received else "interrupted")
        code = 143 if terminated.received else code
    sys.exit(code)
