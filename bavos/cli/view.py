"""`bavos view`: results in the browser, served on this machine until Ctrl-C (the page: bavos/view/static)."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import sys
import threading
import webbrowser
from pathlib import Path
from typing import Annotated, Any

import typer

from bavos.cli.app import app, import_torch, usage_error
from bavos.cli.help import Command
from bavos.cli.output import echo, error, note, warn
from bavos.config import RUN
from bavos.errors import BavosError

PORT_TRIES = 20  # ports tried from --port on when it is taken, as Jupyter does
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def install_command(extra: str) -> str:
    """The pip command that adds bavos's ``extra`` to this installation: from the folder it was installed from
    (pip records it; editable kept editable), else from the package index."""
    import json
    from importlib import metadata
    from urllib.parse import unquote, urlparse

    try:
        found = json.loads(metadata.distribution("bavos").read_text("direct_url.json") or "null")
    except (metadata.PackageNotFoundError, ValueError):
        found = None
    url = urlparse(found.get("url", "")) if isinstance(found, dict) else None
    if url is None or url.scheme != "file" or "dir_info" not in found:
        return f'pip install "bavos[{extra}]"'
    editable = "-e " if found["dir_info"].get("editable") else ""
    return f'pip install {editable}"{unquote(url.path)}[{extra}]"'


@app.command(cls=Command)
def view(
    results: Annotated[
        list[Path],
        typer.Argument(metavar="RESULT", help="Output folders of bavos segment (OUT/<name>).", show_default=False),
    ],
    port: Annotated[
        int, typer.Option(metavar="N", help="Port to serve on (the next free one when taken).", rich_help_panel=RUN)
    ] = 8765,
    host: Annotated[
        str,
        typer.Option(
            metavar="ADDRESS",
            help="Address to serve on; 0.0.0.0 lets other machines in (with the token).",
            rich_help_panel=RUN,
        ),
    ] = "127.0.0.1",
    browser: Annotated[
        bool, typer.Option("--browser/--no-browser", help="Open the page in the default browser.", rich_help_panel=RUN)
    ] = True,
) -> int:
    """Look at results in the browser: play them with their masks, see every object and when it is present, move
    the cut (level, number of objects) live, and save the cut you like as bavos recut would. Ctrl-C stops it."""
    try:
        import uvicorn  # noqa: F401 - the extra's libraries, checked before anything else
        from starlette.applications import Starlette  # noqa: F401
    except ImportError:
        error(f"bavos view needs the viewer's libraries: {install_command('view')}")
        raise typer.Exit(1) from None
    if not 0 <= port <= 65535:
        usage_error(f"--port {port}: ports are 0..65535 (0: any free one)", "view")
    import_torch()
    from bavos.view.results import ViewedResult

    opened, seen = [], set()
    for folder in results:
        if folder.resolve() in seen:  # named twice: listed once
            continue
        seen.add(folder.resolve())
        try:
            opened.append(ViewedResult(folder))
        except BavosError as e:
            usage_error(str(e), "view")
    if not opened:
        usage_error("name at least one result folder", "view")
    try:
        chosen = _free_port(host, port)
    except OSError as e:  # not a port taken: the address itself (not this machine's, not an address)
        usage_error(f"--host {host}: cannot serve there ({e.strerror or e})", "view")
    if chosen is None:
        after = min(PORT_TRIES, 65536 - port) - 1
        usage_error(f"--port {port}: it and the {after} after it are taken on {host}", "view")
    if port and chosen != port:
        note(f"port {port} is taken on {host}: serving on {chosen}")
    return _serve(opened, host, chosen, browser)


def _free_port(host: str, port: int) -> int | None:
    """``port``, or the first free one of the PORT_TRIES from it (None: all taken).

    Raises:
        OSError: ``host`` cannot be served on (no such address here, or no address at all).
    """
    import errno

    for candidate in range(port, min(port + PORT_TRIES, 65536)):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as s:
            # as uvicorn binds: a port whose last connections wait out TIME_WAIT (a viewer just stopped) is free
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, candidate))
            except OSError as e:
                if e.errno not in (errno.EADDRINUSE, errno.EACCES):  # the address, not the port
                    raise
                if candidate == 0:
                    return None
                continue
            return s.getsockname()[1] if candidate == 0 else candidate
    return None


def _serve(opened: list, host: str, port: int, browser: bool) -> int:
    import uvicorn

    from bavos.view.server import make_app

    token = secrets.token_urlsafe(18)
    shown = host if host not in ("0.0.0.0", "::") else socket.gethostname()
    address = f"http://{shown}:{port}/?token={token}"
    if host not in LOOPBACK:
        warn(f"--host {host}: anyone who gets the address can read these results (and save cuts of them)")
    app = make_app(opened, token, error)
    # uvicorn's own log stays quiet: requests' errors are said by the app, one line each, and a second Ctrl-C
    # cancels the requests in flight, which uvicorn would log as tracebacks
    server = _server_class()(uvicorn.Config(app, host=host, port=port, log_level="critical"), app.state.saving)
    threading.Thread(target=_when_up, args=(server, address, browser and _has_display()), daemon=True).start()
    try:
        server.run()
    except KeyboardInterrupt:  # Ctrl-C is how the viewer is stopped: uvicorn has shut down, and passes it on
        pass
    except SystemExit:  # uvicorn could not start (the port taken between the check and the start)
        error(f"cannot serve on {host}:{port}: it was taken just before the start; run bavos view again")
        return 1
    if len(server.signals) > 1 and server.saving:  # Ctrl-C again: stop at once, not when the save is written
        warn(
            f"stopped with the save into {', '.join(server.saving)} unfinished: the result is as it was (the save's "
            "temporary folder beside it goes with the next bavos run there)"
        )
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)  # the save's thread would be waited for; what it wrote is a temporary folder, never the result
    for result in opened:
        result.close()
    if signal.SIGTERM in server.signals:  # stopped by a scheduler or kill, as any bavos command reports it
        return 143
    return 130 if len(server.signals) > 1 else 0  # a second Ctrl-C stopped it at once


def _server_class() -> type:
    """uvicorn's Server, saying on a stop what it waits for (imported only where the viewer runs)."""
    import uvicorn

    class Server(uvicorn.Server):
        def __init__(self, config: uvicorn.Config, saving: list[str]) -> None:
            super().__init__(config)
            self.saving = saving
            self.signals: list[int] = []  # those that stopped it

        def handle_exit(self, sig: int, frame: Any) -> None:
            self.signals.append(sig)
            if self.saving and not self.should_exit:  # uvicorn lets the requests in flight finish
                note(
                    f"stopping once the save into {', '.join(self.saving)} is written; Ctrl-C again stops at once, "
                    "leaving the result as it was or as saved, never half-written"
                )
            super().handle_exit(sig, frame)

    return Server


def _has_display() -> bool:
    """A browser can be shown: macOS and Windows always; elsewhere an X or Wayland display."""
    return sys.platform in ("darwin", "win32") or bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def _when_up(server: object, address: str, browser: bool) -> None:
    """Once the server answers: the address on stdout (one line), and the page in the browser, as Jupyter does."""
    import time

    while not getattr(server, "started", False):
        if getattr(server, "should_exit", False):
            return
        time.sleep(0.02)
    echo(address)
    sys.stdout.flush()
    if browser:
        webbrowser.open(address)
