"""The Typer app of `bavos` and what every command shares: the root options, usage errors, debug mode.

Importing this module does not import torch (``bavos --help`` stays fast); commands import the pipeline.
"""

from __future__ import annotations

import gc
import importlib
import os
import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from bavos.cli.help import Group
from bavos.cli.output import echo, error
from bavos.config import DEFAULT_BACKBONE, KNOWN_PATCH_SIZES, ModelConfig
from bavos.errors import ConfigError

app = typer.Typer(
    name="bavos",
    cls=Group,
    add_completion=False,
    rich_markup_mode=None,
    help="Segment every object in a video with no labels and no prompts (Betrayed by Attention, "
    "ECCV 2024). Run 'bavos COMMAND --help' for a command's options.",
)


def debug() -> bool:
    return os.environ.get("BAVOS_DEBUG", "") not in ("", "0")


def _print_version(value: bool) -> None:
    if value:
        from bavos.version import __version__

        echo(__version__)
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, show_default=False, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Segment every object in a video with no labels and no prompts."""


def import_torch() -> None:
    """Import torch and timm (with torchvision) with Python's garbage collector paused, then freeze what exists.

    Their import makes a great many Python objects, which the collector would otherwise walk again and again
    while they load and once more when the process exits; none of them is garbage. Paused and frozen
    (``gc.freeze``), both the imports and the exit are shorter (docs/performance.md, "The demo at the CPU's
    defaults"). The collector runs as usual afterwards: only objects that exist now are left out of its walks.
    Commands call this before their first torch import; a caller that had paused the collector finds it still
    paused.
    """
    if "timm" in sys.modules:
        return
    enabled = gc.isenabled()
    gc.disable()
    try:
        import timm  # noqa: F401 - imports torch and torchvision too
    finally:
        if enabled:
            gc.enable()
    gc.freeze()


def usage_errors() -> tuple[type[Exception], ...]:
    """Usage-error classes: Typer >= 0.20 vendors click as typer._click, older ones use click itself."""
    found = []
    for module in ("typer._click.exceptions", "click.exceptions"):
        try:
            found.append(importlib.import_module(module).UsageError)
        except (ImportError, AttributeError):
            continue
    return tuple(found)


def named_patch_size(model_cfg: ModelConfig) -> int | None:
    """The patch size of the backbone the options name (the default one without a checkpoint that decides it), read
    without loading it; None where a checkpoint names the backbone (checked once it is read).

    Raises:
        ConfigError: an unknown backbone name (a usage error).
    """
    from bavos.errors import WeightsError
    from bavos.models.backbone import patch_size_of

    name = model_cfg.backbone or (DEFAULT_BACKBONE if model_cfg.checkpoint in ("release", "none") else None)
    if name is None:
        return None
    try:
        return KNOWN_PATCH_SIZES.get(name) or patch_size_of(name)
    except WeightsError as e:
        raise ConfigError(str(e)) from e


def check_weight_names(values: dict[str, str | None], words: dict[str, tuple[str, ...]]) -> None:
    """Each weights option (``--checkpoint``, ``--backbone-weights``, ``--init-from``) is one of its words or an
    existing file; a typo gets the closest word (``relase``: did you mean 'release'?).

    Raises:
        ConfigError: a value that is neither (a usage error: nothing has loaded yet).
    """
    import difflib

    for option, value in values.items():
        if value is None or value in words[option] or Path(value).exists():
            continue
        close = difflib.get_close_matches(value, words[option], n=1, cutoff=0.6)
        hint = f"did you mean '{close[0]}'?" if close else f"give a file or one of: {', '.join(words[option])}"
        raise ConfigError(f"{option} {value}: no such file; {hint}")


def usage_error(message: str, command: str) -> NoReturn:
    """A usage error: one line, exit code 2."""
    error(f"{message} (see 'bavos {command} --help')")
    raise typer.Exit(2)
