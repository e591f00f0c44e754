"""The command line: the Typer app (``app``), one module per command, and the one place that prints
(``output``: errors, notes, progress bars and log lines, result lines; ``help``: the help pages).

It may import everything below it (``bavos.api``, the stages, ``bavos.config``, ``bavos.errors``); nothing
imports it. Importing it does not import torch: each command imports the pipeline when it runs.
"""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any

import typer

from bavos.cli import eval as _eval  # noqa: F401 - registers `bavos eval`
from bavos.cli import recut as _recut  # noqa: F401 - registers `bavos recut`
from bavos.cli import segment as _segment  # noqa: F401 - registers `bavos segment`
from bavos.cli import train as _train  # noqa: F401 - registers `bavos train`
from bavos.cli import view as _view  # noqa: F401 - registers `bavos view`
from bavos.cli import weights as _weights  # noqa: F401 - registers `bavos weights`
from bavos.cli.app import app, debug, usage_errors
from bavos.cli.output import error
from bavos.errors import BavosError, Terminated, internal_error, plain_os_error

__all__ = ["app", "main"]


class _Terminated:
    """SIGTERM (``kill``, a job scheduler's time limit) taken as Ctrl-C, so temporary files are removed on the way
    out; the exit code is then 143. After the first SIGINT or SIGTERM both are ignored: the way out (removing the
    temporary files) is short, and a Ctrl-C held down or pressed again broke it off, leaving them and a traceback."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.received = False  # a SIGTERM
        self._signalled = False  # either: ignored until the process ends (atexit's clean-ups too)
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _Terminated:
        if threading.current_thread() is threading.main_thread():
            # a signal ignored from the start stays ignored: a shell starts its background jobs with SIGINT ignored
            self._previous = {
                s: signal.signal(s, self._handle) for s in self.SIGNALS if signal.getsignal(s) is not signal.SIG_IGN
            }
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self._signalled = True
        for s in self.SIGNALS:
            signal.signal(s, signal.SIG_IGN)
        if signum == signal.SIGTERM:
            self.received = True
            raise Terminated
        raise KeyboardInterrupt

    def __exit__(self, *exc: object) -> None:
        for s, previous in self._previous.items():
            if previous is not None and not self._signalled:
                signal.signal(s, previous)


def torchvision_fix() -> str:
    """The install that matches torchvision to the torch already there, keeping its build (CPU or CUDA)."""
    torch = sys.modules.get("torch")
    version = str(getattr(torch, "__version__", ""))
    local = version.partition("+")[2]  # "cpu", "cu121", ... or "" for PyPI's default build
    pin = f"torch=={version.partition('+')[0]} " if version else "torch "
    index = f" --index-url https://download.pytorch.org/whl/{local}" if local else ""
    return (
        f"install both from the same index, keeping your torch's build: pip install --force-reinstall {pin}"
        f"torchvision{index}"
    )


def main(argv: list[str] | None = None) -> None:
    """Console entry point: exit 0 on success, 1 when an input or the run failed, 2 on usage errors, 130 on Ctrl-C,
    143 on SIGTERM."""
    argv = sys.argv[1:] if argv is None else argv
    with _Terminated() as terminated:
        _run(argv, terminated)


def _quiet_ffmpeg(argv: list[str]) -> None:
    """FFmpeg's own log lines off for commands that decode video: bavos names what went wrong in its warnings
    (BAVOS_DEBUG=1 keeps FFmpeg's lines)."""
    if argv and argv[0] in ("segment", "recut", "train", "view") and not debug():
        import av.logging

        av.logging.set_libav_level(av.logging.PANIC)


PAIRS = {"--resolution": ("height and width", "96 144")}  # options that take two numbers: what, an example


def _pair_form(e: Exception, argv: list[str]) -> str | None:
    """For an option that takes two numbers and did not get them (``--resolution 96``, ``--resolution 96x144``):
    the form it takes, with an example."""
    param = getattr(e, "param", None)
    names = list(getattr(param, "opts", [])) + [getattr(e, "option_name", None) or ""]
    for name in names:
        if PAIRS.get(name):
            what, example = PAIRS[name]
            given = argv[argv.index(name) + 1 : argv.index(name) + 3] if name in argv else []
            return (
                f"{name} takes two whole numbers, {what}, separated by a space: {name} {example} (got "
                f"{' '.join(given) or 'nothing'})"
            )
    return None


def _run(argv: list[str], terminated: _Terminated) -> None:
    _quiet_ffmpeg(argv)
    try:
        code = app(args=argv or ["--help"], prog_name="bavos", standalone_mode=False)
    except usage_errors() as e:
        ctx = getattr(e, "ctx", None)
        named = (
            ctx.info_name
            if ctx is not None and ctx.parent is not None
            else next((a for a in argv if a in ("segment", "view", "recut", "eval", "weights", "train")), None)
        )
        command = f"bavos {named} --help" if named else "bavos --help"
        error(f"{_pair_form(e, argv) or e.format_message()} (see '{command}')")
        sys.exit(2)
    except (KeyboardInterrupt, typer.Abort):
        code = 130
    except BavosError as e:
        if debug():
            raise
        error(str(e))
        sys.exit(e.exit_code)
    except OSError as e:  # reading or writing failed where no command turned it into a BavosError
        if debug():
            raise
        error(plain_os_error(e))
        sys.exit(1)
    except Exception as e:
        if debug():
            raise
        if "torchvision::" in str(e):  # torchvision built for another torch: it fails on first use
            error(f"torch and torchvision do not match ({str(e).splitlines()[0]}): {torchvision_fix()}")
        else:
            error(internal_error(e))
        sys.exit(1)
    code = code if isinstance(code, int) else 0
    if code == 130:  # Ctrl-C: caught here, or turned into exit code 130 by Typer inside a command
        error("terminated" if terminated.received else "interrupted")
        code = 143 if terminated.received else code
    sys.exit(code)
