"""Help pages in click's plain layout, written by bavos: `INPUT...` in the usage line, a metavar that says what a
value is (`H W`, `MB`, `PATH`), no type tags, and every option's default.

Typer's own renderer shows required arguments as `{inputs}...`, flags as `<bool>` and lists as `<list[Path]>`;
these classes replace the usage line and the parameter rows and leave everything else to click.
"""

from __future__ import annotations

from typing import Any

from typer.core import TyperCommand, TyperGroup

from bavos.config import PANELS

_TYPE_METAVARS = {"integer": "N", "float": "X", "text": "TEXT", "path": "PATH", "boolean": "BOOL"}


def _argument_name(param: Any) -> str:
    name = param.metavar or param.name.upper()
    return name if param.nargs == 1 or name.endswith("...") else f"{name}..."


def _option_name(param: Any) -> str:
    names = ", ".join(sorted(param.opts, key=lambda o: (not o.startswith("-") or o.startswith("--"), o)))
    if param.secondary_opts:
        return f"{names} / {', '.join(param.secondary_opts)}"
    if param.is_flag or param.count:
        return names
    metavar = param.metavar or _TYPE_METAVARS.get(getattr(param.type, "name", ""), "VALUE")
    return f"{names} {metavar}"


def _default(param: Any) -> str | None:
    """The default as the help shows it; None for required parameters and hidden defaults."""
    if isinstance(param.show_default, str):
        return param.show_default
    if param.show_default is False or param.required:
        return None
    if param.secondary_opts:  # --overlay / --no-overlay
        return param.opts[0] if param.default else param.secondary_opts[0]
    if param.is_flag:
        return "on" if param.default else "off"
    default = param.default
    if default is None:
        return None
    if isinstance(default, tuple | list):
        return " ".join(str(v) for v in default)
    return str(default)


def _row(param: Any) -> tuple[str, str]:
    name = _argument_name(param) if param.param_type_name == "argument" else _option_name(param)
    text = param.help or ""
    default = _default(param)
    if default is not None:
        text = f"{text}  [default: {default}]"
    return name, text


class Command(TyperCommand):
    """A command whose usage line and parameter rows are written as described in the module docstring."""

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        return pieces + [_argument_name(p) for p in self.get_params(ctx) if p.param_type_name == "argument"]

    def format_options(self, ctx: Any, formatter: Any) -> None:
        params = [p for p in self.get_params(ctx) if not getattr(p, "hidden", False)]
        sections: dict[str, list[tuple[str, str]]] = {"Arguments": []}
        for p in params:
            if p.param_type_name == "argument":
                sections["Arguments"].append(_row(p))
            else:
                sections.setdefault(getattr(p, "rich_help_panel", None) or "Options", []).append(_row(p))
        for title in sorted(sections, key=_panel_order):
            if sections[title]:
                with formatter.section(title):
                    formatter.write_dl(sections[title], col_max=26)


def _panel_order(title: str) -> int:
    """Arguments first, then the panels in PANELS's order, then the options of no panel (--help)."""
    order = ("Arguments", *PANELS)
    return order.index(title) if title in order else len(order)


COMMAND_ORDER = ("segment", "view", "recut", "eval", "weights", "train")  # the order of a user's day, not the alphabet


class Group(TyperGroup):
    """The top-level group: its own options in the same layout, then the commands in COMMAND_ORDER."""

    def list_commands(self, ctx: Any) -> list[str]:
        names = super().list_commands(ctx)
        return sorted(names, key=lambda n: COMMAND_ORDER.index(n) if n in COMMAND_ORDER else len(COMMAND_ORDER))

    def format_options(self, ctx: Any, formatter: Any) -> None:
        Command.format_options(self, ctx, formatter)  # type: ignore[arg-type]
        self.format_commands(ctx, formatter)
