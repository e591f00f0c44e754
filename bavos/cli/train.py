"""`bavos train`: train the correlator on your clips (one process or torchrun)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from bavos.cli.app import app, check_weight_names, import_torch, usage_error
from bavos.cli.help import Command
from bavos.cli.output import warn
from bavos.config import DEFAULT_BACKBONE, ModelConfig
from bavos.errors import ConfigError
from bavos.io.files import display_name


@app.command(cls=Command)
def train(
    clips: Annotated[
        Path,
        typer.Argument(
            metavar="CLIPS",
            help="Folder of video files and/or frame folders, searched recursively.",
            show_default=False,
        ),
    ],
    output: Annotated[
        Path,
        typer.Option(
            "--output",
            "-o",
            metavar="DIR",
            help="Run folder: checkpoints, metrics.jsonl, frame cache.",
            show_default=False,
        ),
    ],
    preset: Annotated[
        str | None,
        typer.Option(
            metavar="release|paper",
            show_default="release",
            help="'release': batch 8, lr 1e-5, 60k steps (the released script); 'paper': batch 16, lr 1e-4, 30k steps "
            "(as the paper reports).",
        ),
    ] = None,
    steps: Annotated[
        int | None,
        typer.Option(
            metavar="N", show_default="the preset's", help="Optimizer steps (the cosine schedule spans them)."
        ),
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option(metavar="N", show_default="the preset's", help="Clips per step, over all processes.")
    ] = None,
    lr: Annotated[
        float | None,
        typer.Option(
            "--lr", metavar="LR", show_default="the preset's", help="Peak learning rate (cosine decay to 1e-6)."
        ),
    ] = None,
    resolution: Annotated[
        tuple[int, int] | None, typer.Option(metavar="H W", show_default="192 384", help="Training frame size.")
    ] = None,
    gap: Annotated[
        int | None,
        typer.Option(
            metavar="N", show_default="4", help="Frames between the 3 sampled frames (shrunk for short clips)."
        ),
    ] = None,
    backbone: Annotated[
        str | None, typer.Option(metavar="NAME", show_default=DEFAULT_BACKBONE, help="timm ViT name.")
    ] = None,
    backbone_weights: Annotated[
        str | None,
        typer.Option(
            metavar="hub|none|PATH",
            show_default="hub; with --init-from, that checkpoint's",
            help="'hub', a weights file, or 'none' (random weights: tests only).",
        ),
    ] = None,
    init_from: Annotated[
        str | None,
        typer.Option(
            metavar="release|PATH",
            show_default="a new correlator, as released",
            help="Start a new run from a trained correlator (fine-tuning); --resume continues a run.",
        ),
    ] = None,
    loss_attention: Annotated[
        str | None,
        typer.Option(
            metavar="dropped|clean",
            show_default="dropped",
            help="Attention the losses read: after attention dropout (as released) or before it.",
        ),
    ] = None,
    motion_centre: Annotated[
        bool | None,
        typer.Option(
            "--motion-centre/--no-motion-centre",
            show_default="--no-motion-centre",
            help="Add the weighted centre as a motion positive (the release computes it and leaves it out).",
        ),
    ] = None,
    augment: Annotated[
        bool | None,
        typer.Option(
            "--augment/--no-augment", show_default="--augment", help="Colour, grayscale and blur augmentation."
        ),
    ] = None,
    blur_sigma: Annotated[
        str | None,
        typer.Option(
            metavar="process|clip",
            show_default="process",
            help="Blur sigma drawn once per process for the whole run (as released), or for each clip.",
        ),
    ] = None,
    normalization: Annotated[
        str | None,
        typer.Option(
            metavar="imagenet|kinetics", show_default="imagenet", help="Input statistics (imagenet as released)."
        ),
    ] = None,
    precision: Annotated[
        str | None,
        typer.Option(
            metavar="float32|bf16|fp16",
            show_default="float32",
            help="float32 as released; bf16 / fp16 autocast (fp16 with loss scaling).",
        ),
    ] = None,
    seed: Annotated[int | None, typer.Option(metavar="N", show_default="0", help="Base seed.")] = None,
    checkpoint_every: Annotated[
        int | None, typer.Option(metavar="N", show_default="1000", help="Steps between checkpoints.")
    ] = None,
    log_every: Annotated[
        int | None, typer.Option(metavar="N", show_default="10", help="Steps between metrics.jsonl lines.")
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(metavar="N", show_default="this machine's cores, at most 8", help="Decoding and loading workers."),
    ] = None,
    cache: Annotated[
        Path | None,
        typer.Option(metavar="DIR", show_default="OUTPUT/cache", help="Frame cache folder (shareable between runs)."),
    ] = None,
    device: Annotated[
        str | None,
        typer.Option(
            metavar="auto|cpu|cuda", show_default="auto", help="Where to run: 'auto' takes CUDA when there is one."
        ),
    ] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in OUTPUT from last.pt.")] = False,
    until: Annotated[
        int | None,
        typer.Option(
            metavar="STEP", show_default="the last step", help="Stop after this step (checkpointed); resume later."
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress and no result line.")] = False,
) -> int:
    """Train the temporal correlator on your own clips (self-supervised; torchrun for several GPUs)."""
    from bavos.cli.output import TrainView
    from bavos.config import train_config

    import_torch()
    from bavos.training.train import train as run_training

    given = {
        "steps": steps,
        "batch_size": batch_size,
        "lr": lr,
        "resolution": resolution,
        "gap": gap,
        "loss_attention": loss_attention,
        "motion_centre": motion_centre,
        "augment": augment,
        "blur_sigma": blur_sigma,
        "normalization": normalization,
        "seed": seed,
        "checkpoint_every": checkpoint_every,
        "log_every": log_every,
        "workers": workers,
        "cache": str(cache) if cache else None,
        "device": device,
        "precision": precision,
    }
    models = {"backbone": backbone, "backbone_weights": backbone_weights, "checkpoint": init_from}
    try:
        check_weight_names(
            {"--init-from": init_from, "--backbone-weights": backbone_weights},
            {"--init-from": ("release", "none"), "--backbone-weights": ("hub", "none")},
        )
        if resume:
            from bavos.training.runs import LAST, read_run_config

            saved = read_run_config(output)
            learned = (Path(output) / LAST).is_file()  # else it stopped before its first checkpoint: may change
            cfg = train_config(preset, saved=saved["TrainConfig"], learned=learned, **given)
            model_cfg = _resumed_model_config(saved["ModelConfig"], models, learned)
        else:
            cfg = train_config(preset, **given)
            model_cfg = ModelConfig(**{"checkpoint": "none", **{k: v for k, v in models.items() if v is not None}})
    except ConfigError as e:
        usage_error(str(e), "train")
    if model_cfg.backbone_weights == "none" and not quiet:
        warn("--backbone-weights none: the backbone has random weights; the correlator learns nothing useful")
    with TrainView(enabled=not quiet, label=display_name(Path(clips))) as view:
        result = run_training(clips, output, model_cfg, cfg, resume=resume, until=until, events=view)
    if not quiet and view.rank == 0:
        last = result["last"] or {}
        loss = f", loss {last['loss']:.4f}" if "loss" in last else ""
        if result.get("done_before"):
            typer.echo(
                f"{result['checkpoint']}: step {result['step']} of {cfg.steps}: the run had already finished; "
                "nothing to do (raise --steps to train further)"
            )
        else:
            typer.echo(
                f"{result['checkpoint']}: step {result['step']} of {cfg.steps}{loss} ({result['seconds']:.1f} s)"
            )
    return 0


def _resumed_model_config(saved: dict[str, Any], given: dict[str, str | None], learned: bool = True) -> ModelConfig:
    saved = {**saved, "checkpoint": saved.get("checkpoint") or "none"}  # runs before --init-from saved null
    if not learned:  # nothing learned yet: the options given replace the run's
        return ModelConfig(**{**saved, **{k: v for k, v in given.items() if v is not None}})
    for key, value in given.items():
        if value is not None and value != saved.get(key):
            option = "--init-from" if key == "checkpoint" else f"--{key.replace('_', '-')}"
            raise ConfigError(
                f"{option} {value}: the run was trained with {saved.get(key)}; resume with the same value"
            )
    return ModelConfig(**saved)
