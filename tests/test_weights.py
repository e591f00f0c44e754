"""The paper's checkpoint: download from a server on loopback that answers as Google Drive does, the cache, and which
backbone weights go with which checkpoint."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from conftest import write_clip

from bavos.config import ModelConfig
from bavos.errors import ConfigError
from bavos.weights import (
    RELEASE_FILE,
    RELEASE_ID,
    RELEASE_PAGE,
    DownloadError,
    download,
    plan_weights,
    release_checkpoint,
)

CONFIRM_PAGE = """<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></head><body>
<div class="uc-main"><p class="uc-warning-caption">Google Drive can't scan this file for viruses.</p>
<p class="uc-warning-subcaption"><span class="uc-name-size"><a href="/open?id={id}">{name}</a> (95M)</span> is too
large for Google to scan for viruses. Would you still like to download this file?</p>
<form id="download-form" action="{base}/download" method="get">
<input type="submit" id="uc-download-link" class="goog-inline-block jfk-button" value="Download anyway"/>
<input type="hidden" name="id" value="{id}"><input type="hidden" name="export" value="download">
<input type="hidden" name="confirm" value="t"><input type="hidden" name="uuid" value="0f3c-uuid"></form>
</div></body></html>"""

OLD_PAGE = """<html><head><title>Google Drive - Virus scan warning</title></head><body>
<a id="uc-download-link" href="/uc?export=download&amp;confirm=Xy_9&amp;id={id}">Download anyway</a></body></html>"""

QUOTA_PAGE = """<html><head><title>Google Drive - Quota exceeded</title></head><body>
<p>Too many users have viewed or downloaded this file recently.</p></body></html>"""


class FakeDrive:
    """What drive.google.com and drive.usercontent.google.com answer, on 127.0.0.1."""

    def __init__(self, payload: Path, mode: str = "form") -> None:
        self.payload, self.mode = payload, mode
        self.requests: list[str] = []
        drive = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                return None

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                drive.requests.append(self.path)
                url = urllib.parse.urlparse(self.path)
                query = dict(urllib.parse.parse_qsl(url.query))
                cookie = self.headers.get("Cookie", "")
                if query.get("id") != RELEASE_ID:
                    return self._send(404, "text/html", b"<html><title>Not found</title></html>")
                if url.path == "/download" and query.get("confirm") == "t" and query.get("uuid") == "0f3c-uuid":
                    return self._send_file()
                if url.path == "/uc" and drive.mode == "old" and query.get("confirm") == "Xy_9" and "Xy_9" in cookie:
                    return self._send_file()
                if url.path != "/uc":
                    return self._send(404, "text/html", b"<html><title>Not found</title></html>")
                page = {"form": CONFIRM_PAGE, "old": OLD_PAGE, "quota": QUOTA_PAGE}[drive.mode]
                body = page.format(id=RELEASE_ID, name=RELEASE_FILE, base=drive.base).encode()
                extra = {"Set-Cookie": "download_warning_13058876669334088843_1Uh=Xy_9; Path=/"} \
                    if drive.mode == "old" else {}
                self._send(200, "text/html; charset=utf-8", body, extra)

            def _send_file(self) -> None:
                data = drive.payload.read_bytes()
                self._send(200, "application/octet-stream", data,
                           {"Content-Disposition": f'attachment; filename="{RELEASE_FILE}"'})

            def _send(self, code: int, ctype: str, body: bytes, extra: dict[str, str] | None = None) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for key, value in (extra or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.url = f"{self.base}/uc?export=download&id={RELEASE_ID}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("BAVOS_CACHE", str(folder))
    return folder


@pytest.fixture
def drive(release_file: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeDrive]:
    server = FakeDrive(release_file)
    monkeypatch.setenv("BAVOS_RELEASE_URL", server.url)
    yield server
    server.close()


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to open a connection fails the test."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"a network connection was attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_first_use_downloads_through_the_confirmation_page_and_verifies(cache: Path, drive: FakeDrive,
                                                                       release_file: Path) -> None:
    seen: list[tuple[int, int | None]] = []
    path = release_checkpoint(lambda done, total: seen.append((done, total)))
    assert path == cache / RELEASE_FILE and path.read_bytes() == release_file.read_bytes()
    assert [urllib.parse.urlparse(r).path for r in drive.requests] == ["/uc", "/download"]
    assert seen[-1] == (release_file.stat().st_size, release_file.stat().st_size)
    assert sorted(p.name for p in cache.iterdir()) == [RELEASE_FILE]  # no partial file left
    # the second use reads the cache: no request at all
    assert release_checkpoint() == path and len(drive.requests) == 2


def test_the_older_cookie_flow(tmp_path: Path) -> None:
    payload = tmp_path / "payload.bin"
    payload.write_bytes(os.urandom(3 * 2**20 + 17))
    server = FakeDrive(payload, mode="old")
    try:
        download(server.url, tmp_path / "got.bin")
    finally:
        server.close()
    assert (tmp_path / "got.bin").read_bytes() == payload.read_bytes()
    assert len(server.requests) == 2 and "confirm=Xy_9" in server.requests[1]


def test_a_page_instead_of_the_file_is_one_clear_error(cache: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    server = FakeDrive(tmp_path, mode="quota")
    monkeypatch.setenv("BAVOS_RELEASE_URL", server.url)
    try:
        with pytest.raises(DownloadError) as info:
            release_checkpoint()
    finally:
        server.close()
    message = str(info.value)
    assert "Google Drive - Quota exceeded" in message and RELEASE_PAGE in message
    assert str(cache / RELEASE_FILE) in message and "\n" not in message
    assert not any(cache.iterdir())


def test_a_download_that_is_not_the_papers_checkpoint_is_refused(cache: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    wrong = tmp_path / "wrong.pth"
    torch.save({"model_state_dict": {"encoder.cls_token": torch.zeros(1, 1, 32)}}, wrong)
    server = FakeDrive(wrong)
    monkeypatch.setenv("BAVOS_RELEASE_URL", server.url)
    try:
        with pytest.raises(DownloadError, match="weights do not fit the model"):
            release_checkpoint()
    finally:
        server.close()
    assert not any(cache.iterdir())  # nothing that would be taken for the checkpoint next time


def test_offline_and_not_cached_is_one_line_within_seconds(cache: Path, tmp_path: Path, run_cli,  # noqa: ANN001
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:  # a port nobody listens on: connection refused, as offline
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("BAVOS_RELEASE_URL", f"http://127.0.0.1:{port}/uc?id={RELEASE_ID}")
    video = write_clip(tmp_path / "v.mp4", n=2)
    start = time.perf_counter()
    result = run_cli("segment", video, "-o", tmp_path / "out", "--device", "cpu")
    assert time.perf_counter() - start < 5
    assert result.code == 1 and result.out == ""
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bavos: error: the paper's checkpoint is not in the cache")
    assert RELEASE_PAGE in lines[0] and str(cache / RELEASE_FILE) in lines[0] and "--checkpoint none" in lines[0]


def test_cached_checkpoint_is_used_with_no_network_at_all(cache: Path, release_file: Path, tmp_path: Path,
                                                         run_cli, no_network) -> None:  # noqa: ANN001
    cache.mkdir()
    (cache / RELEASE_FILE).symlink_to(release_file)
    video = write_clip(tmp_path / "v.mp4", n=3, height=48, width=64)
    result = run_cli("segment", video, "-o", tmp_path / "out", "--resolution", "64", "96", "--device", "cpu", "-q")
    assert result.code == 0, result.err
    summary = json.loads((tmp_path / "out" / "v" / "summary.json").read_text())
    assert summary["mode"] == "correlator"
    cached = str(cache / RELEASE_FILE)
    assert summary["weights"] == {"backbone": "vit_small_patch8_224.dino", "backbone_weights": cached,
                                  "backbone_weights_from": "checkpoint", "correlator": "release",
                                  "correlator_file": cached}


def test_which_backbone_weights_go_with_which_checkpoint(tmp_path: Path, release_file: Path) -> None:
    from bavos.correlator import Correlator, save_checkpoint

    release = plan_weights(ModelConfig(checkpoint=str(release_file)))
    assert (release.backbone, release.backbone_weights, release.backbone_weights_from) == \
        ("vit_small_patch8_224.dino", str(release_file), "checkpoint")
    assert release.backbone_loaded is release.loaded  # the file is read once for both networks
    given = plan_weights(ModelConfig(checkpoint=str(release_file), backbone_weights="none"))
    assert (given.backbone_weights, given.backbone_weights_from, given.backbone_loaded) == \
        ("none", "--backbone-weights", None)
    trained = tmp_path / "run.pt"
    save_checkpoint(trained, Correlator(32, 4), {"ModelConfig": {"backbone": "bavos_test_vit",
                                                                 "backbone_weights": "none", "correlator_heads": 4}})
    bavos = plan_weights(ModelConfig(checkpoint=str(trained)))
    assert (bavos.backbone, bavos.backbone_weights, bavos.backbone_weights_from) == \
        ("bavos_test_vit", "none", "checkpoint")
    free = plan_weights(ModelConfig(checkpoint="none"))
    assert (free.backbone, free.backbone_weights, free.backbone_weights_from, free.checkpoint_file) == \
        ("vit_small_patch8_224.dino", "hub", "default", None)
    with pytest.raises(ConfigError, match="--checkpoint release is the paper's correlator"):
        ModelConfig(backbone="bavos_test_vit")


def test_segment_with_a_bavos_checkpoint_needs_no_backbone_options(tmp_path: Path, run_cli) -> None:  # noqa: ANN001
    from bavos.correlator import Correlator, save_checkpoint

    trained = tmp_path / "run.pt"
    save_checkpoint(trained, Correlator(32, 4), {"ModelConfig": {"backbone": "bavos_test_vit",
                                                                 "backbone_weights": "none", "correlator_heads": 4}})
    video = write_clip(tmp_path / "v.mp4", n=3, height=48, width=64)
    result = run_cli("segment", video, "-o", tmp_path / "out", "--checkpoint", trained, "--resolution", "64", "96",
                     "--device", "cpu", "--json")
    assert result.code == 0, result.err
    assert "random weights" in result.err  # what the checkpoint recorded is announced like the option
    weights = json.loads((tmp_path / "out" / "v" / "summary.json").read_text())["weights"]
    assert (weights["backbone"], weights["backbone_weights"], weights["backbone_weights_from"]) == \
        ("bavos_test_vit", "none", "checkpoint")
    missing = tmp_path / "moved.pt"
    save_checkpoint(missing, Correlator(32, 4), {"ModelConfig": {"backbone": "bavos_test_vit", "correlator_heads": 4,
                                                                 "backbone_weights": str(tmp_path / "gone.pth")}})
    result = run_cli("segment", video, "-o", tmp_path / "out", "--checkpoint", missing, "--device", "cpu", "-q")
    assert result.code == 1
    assert f"gone.pth: weights file not found (the backbone weights recorded in {missing}" in result.err


# ---- timm's hub weights (--checkpoint none, bavos train) -----------------------------------------------------


@pytest.fixture(scope="module")
def vit_s8_safetensors(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(7)
    path = tmp_path_factory.mktemp("hub") / "model.safetensors"
    save_file(timm.create_model("vit_small_patch8_224.dino", num_classes=0).state_dict(), path)
    return path


def fake_hf_cache(root: Path, weights: Path) -> Path:
    """Hugging Face's hub cache layout: models--timm--<name>/refs/main -> snapshots/<commit>/model.safetensors."""
    repo = root / "models--timm--vit_small_patch8_224.dino"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0123abcd")
    (repo / "snapshots" / "0123abcd").mkdir(parents=True)
    (repo / "snapshots" / "0123abcd" / "model.safetensors").symlink_to(weights)
    return root


def test_hub_weights_in_huggingfaces_cache_need_no_network(tmp_path: Path, vit_s8_safetensors: Path,  # noqa: ANN001
                                                            monkeypatch: pytest.MonkeyPatch, no_network) -> None:
    from safetensors.torch import load_file

    from bavos.backbone import build_backbone

    monkeypatch.setenv("HF_HUB_CACHE", str(fake_hf_cache(tmp_path / "hf", vit_s8_safetensors)))
    monkeypatch.setenv("BAVOS_CACHE", str(tmp_path / "bavos"))
    backbone = build_backbone("vit_small_patch8_224.dino", "hub")
    expected = load_file(vit_s8_safetensors)
    torch.testing.assert_close(backbone.vit.pos_embed, expected["pos_embed"])
    torch.testing.assert_close(backbone.vit.blocks[11].attn.qkv.weight, expected["blocks.11.attn.qkv.weight"])


def test_hub_weights_are_downloaded_once_into_the_cache(tmp_path: Path, vit_s8_safetensors: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from bavos.weights import hub_weights

    served = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            return None

        def do_GET(self) -> None:  # noqa: N802
            served.append(self.path)
            if self.path != "/timm/vit_small_patch8_224.dino/resolve/main/model.safetensors":
                self.send_response(404)
                self.end_headers()
                return
            data = vit_s8_safetensors.read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hf"))
    monkeypatch.setenv("BAVOS_CACHE", str(tmp_path / "bavos"))
    try:
        path = hub_weights("vit_small_patch8_224.dino")
        assert path == tmp_path / "bavos" / "hub" / "timm" / "vit_small_patch8_224.dino" / "model.safetensors"
        assert path.read_bytes() == vit_s8_safetensors.read_bytes()
        assert hub_weights("vit_small_patch8_224.dino") == path and len(served) == 1  # cached: no second request
    finally:
        server.shutdown()
        server.server_close()


def test_hub_offline_and_not_cached_is_one_line_within_seconds(tmp_path: Path, run_cli,  # noqa: ANN001
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hf"))
    monkeypatch.setenv("BAVOS_CACHE", str(tmp_path / "bavos"))

    def unreachable(*args: object, **kwargs: object) -> None:
        raise OSError(-2, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", unreachable)  # what a machine without network answers
    video = write_clip(tmp_path / "v.mp4", n=2)
    start = time.perf_counter()
    result = run_cli("segment", video, "-o", tmp_path / "out", "--checkpoint", "none", "--device", "cpu")
    assert time.perf_counter() - start < 5
    assert result.code == 1 and result.out == ""
    (line,) = result.err.strip().splitlines()  # nothing else on stderr: no retries, no tracebacks
    assert line.startswith("bavos: error: the weights of vit_small_patch8_224.dino are not in the cache and could "
                           "not be downloaded (no connection")
    assert "bavos weights" in line and "--backbone-weights PATH" in line


def test_weights_command_fetches_both_and_check_reports(cache: Path, drive: FakeDrive, tmp_path: Path,  # noqa: ANN001
                                                        vit_s8_safetensors: Path, run_cli,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hf"))
    result = run_cli("weights", "--check")
    assert result.code == 1 and "not in the cache" in result.err and not drive.requests  # --check: no network
    monkeypatch.setenv("HF_HUB_CACHE", str(fake_hf_cache(tmp_path / "hf", vit_s8_safetensors)))
    result = run_cli("weights")
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[0] == f"cache: {cache} (set BAVOS_CACHE to move it)"
    assert lines[1].startswith(f"paper's checkpoint (--checkpoint release): {cache / RELEASE_FILE} (")
    assert "vit_small_patch8_224.dino from timm's hub" in lines[2] and "model.safetensors" in lines[2]
    assert run_cli("weights", "--check").code == 0
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hf"))  # the default's checkpoint is enough
    result = run_cli("weights", "--check")
    assert result.code == 0 and "bavos: warning: vit_small_patch8_224.dino" in result.err
    assert "needed only by --checkpoint none and bavos train" in result.err
