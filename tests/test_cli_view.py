"""`bavos view`: what it refuses before serving, the line it prints, Ctrl-C, and the missing extra."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("uvicorn", reason='needs the viewer\'s extra: pip install ".[view]"')


def test_what_is_not_a_result_is_one_line_before_serving(tmp_path: Path, run_cli) -> None:
    result = run_cli("view", tmp_path, "--no-browser")
    assert result.code == 2 and result.err.count("\n") == 1
    assert result.err.startswith(f"bavos: error: {tmp_path}: not a finished result of bavos segment")


def test_without_the_extra_it_names_the_install(view_result: Path) -> None:
    code = "import sys; sys.modules['uvicorn'] = None; from bavos.cli import main; main(sys.argv[1:])"
    proc = subprocess.run(
        [sys.executable, "-c", code, "view", str(view_result), "--no-browser"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    from bavos.cli.view import install_command

    assert proc.stderr == f"bavos: error: bavos view needs the viewer's libraries: {install_command('view')}\n"


@pytest.mark.parametrize(
    ("recorded", "command"),
    [
        ('{"url": "file:///src/my%20bavos", "dir_info": {"editable": true}}', 'pip install -e "/src/my bavos[view]"'),
        ('{"url": "file:///src/bavos", "dir_info": {}}', 'pip install "/src/bavos[view]"'),  # pip install .
        ('{"url": "file:///w/bavos-1.0-py3-none-any.whl", "archive_info": {}}', 'pip install "bavos[view]"'),
        (None, 'pip install "bavos[view]"'),  # from the package index
    ],
)
def test_the_install_named_is_this_installation_s(
    recorded: str | None, command: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README installs from a clone (`pip install .`), where `pip install "bavos[view]"` would look for bavos in
    the package index: the extra is named from where pip says bavos came from."""
    from importlib import metadata

    from bavos.cli.view import install_command

    class Installed:
        def read_text(self, name: str) -> str | None:
            return recorded if name == "direct_url.json" else None

    monkeypatch.setattr(metadata, "distribution", lambda name: Installed())
    assert install_command("view") == command


@pytest.mark.parametrize(
    ("host", "stop", "code"),
    [("127.0.0.1", signal.SIGINT, 0), ("0.0.0.0", signal.SIGINT, 0), ("127.0.0.1", signal.SIGTERM, 143)],
)
def test_it_prints_the_address_serves_and_stops_cleanly_on_ctrl_c(
    view_result: Path, host: str, stop: signal.Signals, code: int
) -> None:
    """Ctrl-C is how the viewer is stopped (0); SIGTERM, a scheduler's or kill's, is 143 as for any command (it
    was 0)."""
    before = sorted(p.name for p in view_result.parent.iterdir())
    proc = subprocess.Popen(
        [sys.executable, "-m", "bavos", "view", str(view_result), "--no-browser", "--host", host, "--port", "8811"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        address = proc.stdout.readline().strip()
        assert address.startswith("http://") and "/?token=" in address
        token = address.split("token=")[1]
        port = address.split(":")[2].split("/")[0]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/results?token={token}", timeout=30) as r:
            assert json.loads(r.read())[0]["name"] == "clip"
        with pytest.raises(urllib.error.HTTPError, match="403"):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/results?token=nope", timeout=30)
    finally:
        proc.send_signal(stop)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == code, err
    warned = [line for line in err.splitlines() if "anyone who gets the address" in line]
    assert len(warned) == (1 if host == "0.0.0.0" else 0), err
    assert sorted(p.name for p in view_result.parent.iterdir()) == before  # nothing left behind


def test_a_stop_during_a_save_says_it_finishes_it(capsys: pytest.CaptureFixture[str]) -> None:
    import signal

    import uvicorn

    from bavos.cli.view import _server_class

    server = _server_class()(uvicorn.Config(lambda scope, receive, send: None), ["out/clip"])
    server.handle_exit(signal.SIGINT, None)
    assert capsys.readouterr().err == (
        "bavos: stopping once the save into out/clip is written; Ctrl-C again stops at once, leaving the result as "
        "it was or as saved, never half-written\n"
    )
    server.handle_exit(signal.SIGINT, None)  # the second: said by no one, uvicorn stops at once
    assert capsys.readouterr().err == "" and server.force_exit


def test_the_port_of_a_viewer_just_stopped_is_free_again() -> None:
    """Its connections wait out TIME_WAIT for a minute; uvicorn binds with SO_REUSEADDR, so the check does too."""
    import socket

    from bavos.cli.view import _free_port

    port = _free_port("127.0.0.1", 8830)
    assert port is not None
    listening = socket.create_server(("127.0.0.1", port))
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = listening.accept()
    accepted.close()  # the server's side closes first: it is the one left in TIME_WAIT
    client.close()
    listening.close()
    assert _free_port("127.0.0.1", port) == port


def test_ports_and_hosts_that_cannot_be_served_are_usage_errors(view_result: Path, run_cli) -> None:
    """--port 99999 was an internal OverflowError; a bad --host was reported as 20 ports taken."""
    for port in ("99999", "-1"):
        r = run_cli("view", view_result, "--no-browser", "--port", port)
        assert r.code == 2 and r.err.startswith(f"bavos: error: --port {port}: ports are 0..65535 (0: any free one)")
    for host in ("999.1.1.1", "nosuchhost.invalid"):
        r = run_cli("view", view_result, "--no-browser", "--host", host)
        assert (
            r.code == 2
            and r.err.startswith(f"bavos: error: --host {host}: cannot serve there (")
            and ("taken" not in r.err)
        ), r.err


def test_the_last_ports_are_tried_without_passing_65535() -> None:
    """From --port 65535 taken, the next tried was 65536: an internal OverflowError."""
    import socket

    from bavos.cli.view import _free_port

    try:
        held = socket.create_server(("127.0.0.1", 65535))
    except OSError:
        pytest.skip("port 65535 is in use here")
    with held:
        assert _free_port("127.0.0.1", 65535) is None
