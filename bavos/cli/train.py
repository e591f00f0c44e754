"""`bavos train`: train the correlator on your clips (one process or torchrun)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from bavos.cli.app import app, check_weight_names, import_torch, named_patch_size, usage_error
from bavos.cli.help import Command
from bavos.cli.options import config_values, option
from bavos.config import DEFAULT_BACKBONE, RUN, WEIGHTS, ModelConfig, TrainConfig
from bavos.errors import ConfigError
from bavos.io.files import display_name

T = TrainConfig  # the config whose fields the options set
CONVERT = {"cache": lambda v: str(v) if v else None}  # from a parsed option to its field's value


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
            help="Run folder, required: checkpoints, metrics.jsonl, frame cache.",
            show_default=False,
            rich_help_panel=RUN,
        ),
    ],
    preset: Annotated[str | None, option(T, "preset", given=True)] = None,
    steps: Annotated[int | None, option(T, "steps", given=True)] = None,
    batch_size: Annotated[int | None, option(T, "batch_size", given=True)] = None,
    lr: Annotated[float | None, option(T, "lr", given=True)] = None,
    resolution: Annotated[tuple[int, int] | None, option(T, "resolution", given=True)] = None,
    gap: Annotated[int | None, option(T, "gap", given=True)] = None,
    backbone: Annotated[str | None, option(ModelConfig, "backbone", shown=DEFAULT_BACKBONE)] = None,
    backbone_weights: Annotated[
        str | None, option(ModelConfig, "backbone_weights", shown="hub; with --init-from, that checkpoint's")
    ] = None,
    init_from: Annotated[
        str | None,
        typer.Option(
            metavar="release|none|PATH",
            show_default="none: a new correlator, initialised as released",
            help="Start a new run from a trained correlator (fine-tuning); --resume continues a run.",
            rich_help_panel=WEIGHTS,
        ),
    ] = None,
    loss_attention: Annotated[str | None, option(T, "loss_attention", given=True)] = None,
    motion_centre: Annotated[bool | None, option(T, "motion_centre", given=True)] = None,
    augment: Annotated[bool | None, option(T, "augment", given=True)] = None,
    blur_sigma: Annotated[str | None, option(T, "blur_sigma", given=True)] = None,
    normalization: Annotated[str | None, option(T, "normalization", given=True)] = None,
    precision: Annotated[str | None, option(T, "precision", given=True)] = None,
    seed: Annotated[int | None, option(T, "seed", given=True)] = None,
    checkpoint_every: Annotated[int | None, option(T, "checkpoint_every", given=True)] = None,
    log_every: Annotated[int | None, option(T, "log_every", given=True)] = None,
    workers: Annotated[int | None, option(T, "workers", given=True)] = None,
    cache: Annotated[Path | None, option(T, "cache", given=True)] = None,
    device: Annotated[str | None, option(T, "device", given=True)] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the run in OUTPUT from last.pt.", rich_help_panel=RUN)
    ] = False,
    until: Annotated[
        int | None,
        typer.Option(
            metavar="STEP",
            show_default="the last step",
            help="Stop after this step (checkpointed); resume later.",
            rich_help_panel=RUN,
        ),
    ] = None,
    quiet: Annotated[
        bool,
        typer.Option("--quiet", "-q", help="Errors only: no progress, warnings or result line.", rich_help_panel=RUN),
    ] = False,
) -> int:
    """Train the temporal correlator on your own clips (self-supervised; torchrun for several GPUs)."""
    from bavos.cli.output import TrainView, echo
    from bavos.config import train_config

    import_torch()
    from bavos.models.devices import resolve_device
    from bavos.training.train import train as run_training

    params = dict(locals())
    given = config_values(TrainConfig, {k: v for k, v in params.items() if k != "preset"}, CONVERT)
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
        patch = named_patch_size(model_cfg)
        if patch is not None:  # else a checkpoint names the backbone: training checks it once that is read
            cfg.check_tokens(patch)
        resolve_device(cfg.device)  # --device cuda without a GPU: said before anything is read
    except ConfigError as e:
        usage_error(str(e), "train")
    with TrainView(enabled=not quiet, label=display_name(Path(clips)), steps=cfg.steps) as view:
        if model_cfg.backbone_weights == "none" and not quiet:  # once, from process 0 (torchrun)
            from bavos.models.weights import LEARNS_NOTHING, random_weights_note

            view.warn(random_weights_note(LEARNS_NOTHING))
        if until is not None and until > cfg.steps:
            view.warn(f"--until {until} is past the run's last step, {cfg.steps}: it stops there")
        result = run_training(clips, output, model_cfg, cfg, resume=resume, until=until, events=view)
    if not quiet and view.rank == 0:
        last = result.last or {}
        loss = f", loss {last['loss']:.4f}" if "loss" in last else ""
        if result.done_before and result.step < cfg.steps:
            echo(f"{result.checkpoint}: step {result.step} of {cfg.steps}, already past --until {until}; nothing to do")
        elif result.done_before:
            echo(
                f"{result.checkpoint}: step {result.step} of {cfg.steps}: the run had already finished; "
                f"nothing to do (to train further, start a new run from it with --init-from {result.checkpoint})"
            )
        else:
            echo(f"{result.checkpoint}: step {result.step} of {cfg.steps}{loss} ({result.seconds:.1f} s)")
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
