"""Typer options built from the configs' fields: the help, metavar, panel and default of an option that sets a
config field are declared once, next to the field (``bavos.config.Flag``), and read from there.

A command's parameter is named after the field it sets, so ``config_values`` can turn the parsed parameters into
the config's keyword arguments; ``tests/test_cli_options.py`` holds every command's options equal to the fields.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import MISSING
from typing import Any

import typer

from bavos.config import Flag, fields_of, flag_of


def option(
    config: type, name: str, *, shown: str | None = None, given: bool = False, choices: dict[str, str] | None = None
) -> Any:
    """The ``typer.Option`` of ``config``'s field ``name``.

    Args:
        choices: the values the option takes, each with what it gives, for a flag whose help and metavar say
            ``{choices}`` (the exports: their registry declares them).
        shown: the default as the help says it, where this command's differs from the field's own.
        given: the command's default is None, "not given" (a preset or a resumed run decides); the help then says
            the field's default.
    """
    spec = _flag(config, name)
    said = shown or spec.shown
    if said is None and given:
        said = default_text(spec, field_default(config, name))
    help, metavar = spec.help, spec.metavar
    if choices is not None:
        help = help.format(choices=", ".join(choices.values()))
        metavar = (metavar or "").format(choices="|".join(choices))
    return typer.Option(
        *(spec.names or (f"--{name.replace('_', '-')}",)),
        help=help,
        metavar=metavar,
        rich_help_panel=spec.panel,
        show_default=said if said is not None else True,
    )


def _flag(config: type, name: str) -> Flag:
    spec = flag_of(config, name)
    if spec is None:
        raise KeyError(f"{config.__name__}.{name} has no command-line flag")
    return spec


def field_default(config: type, name: str) -> Any:
    """The default of ``config``'s field ``name`` (its factory called, where it has one)."""
    f = fields_of(config)[name]
    return f.default if f.default_factory is MISSING else f.default_factory()


def default_text(spec: Flag, value: Any) -> str:
    """A default as the help writes it: ``H W`` pairs with a space, on/off flags by the name that gives them."""
    if isinstance(value, bool) and spec.names and "/" in spec.names[0]:
        on, off = spec.names[0].split("/")
        return on if value else off
    if isinstance(value, tuple | list):
        return " ".join(str(v) for v in value)
    return str(value)


def config_values(
    config: type, params: dict[str, Any], convert: dict[str, Callable[[Any], Any]] | None = None
) -> dict[str, Any]:
    """The keyword arguments of ``config`` among a command's parsed ``params`` (named after the fields), each
    passed through its converter in ``convert`` where it has one (``auto|MB`` to None or a number, ...)."""
    names = fields_of(config)
    convert = convert or {}
    return {k: convert.get(k, _same)(v) for k, v in params.items() if k in names}


def _same(value: Any) -> Any:
    return value
