"""The paper's checkpoint: download from a server on loopback that answers as Google Drive does, the cache, and which
backbone weights go with which checkpoint."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from conftest import write_clip

from bavos.config import ModelConfig
from bavos.errors import ConfigError
from bavos.models.weights import (
    LEARNS_NOTHING,
    MEANINGLESS,
    RELEASE_FILE,
    RELEASE_ID,
    RELEASE_PAGE,
    RELEASE_URL,
    DownloadError,
    plan_weights,
    random_weights_note,
    release_checkpoint,
)


class Mirror:
    """A mirror of the paper's checkpoint on 127.0.0.1 (what ``$BAVOS_RELEASE_URL`` points at): the file at
    ``/uc?id=<the release's id>``, 404 elsewhere."""

    def __init__(self, payload: Path) -> None:
        self.payload = payload
        self.requests: list[str] = []
        mirror = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                return None

            def do_GET(self) -> None:
                mirror.requests.append(self.path)
                query = dict(urllib.parse.parse_qsl(urllib.parse.urlparse(self.path).query))
                found = query.get("id") == RELEASE_ID
                body = mirror.payload.read_bytes() if found else b"<html><title>Not found</title></html>"
                self.send_response(200 if found else 404)
                self.send_header("Content-Type", "application/octet-stream" if found else "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/uc?export=download&id={RELEASE_ID}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("BAVOS_CACHE", str(folder))
    return folder


@pytest.fixture
def drive(release_file: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Mirror]:
    server = Mirror(release_file)
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


def test_first_use_downloads_and_verifies(cache: Path, drive: Mirror, release_file: Path) -> None:
    seen: list[tuple[int, int | None]] = []
    path = release_checkpoint(lambda done, total: seen.append((done, total)))
    assert path == cache / RELEASE_FILE and path.read_bytes() == release_file.read_bytes()
    assert len(drive.requests) == 1
    assert seen[-1] == (release_file.stat().st_size, release_file.stat().st_size)
    assert sorted(p.name for p in cache.iterdir()) == [RELEASE_FILE]  # no partial file left
    # the second use reads the cache: no request at all
    assert release_checkpoint() == path and len(drive.requests) == 1


def test_the_drive_link_goes_to_gdown(cache: Path, release_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """gdown follows Drive's confirmation pages; bavos hands it the authors' link and a name beside the cache's."""
    import shutil

    import gdown

    asked: list[dict] = []

    def fake(**kwargs: object) -> str:
        asked.append(kwargs)
        shutil.copy(release_file, str(kwargs["output"]))
        return str(kwargs["output"])

    monkeypatch.delenv("BAVOS_RELEASE_URL", raising=False)
    monkeypatch.setattr(gdown, "download", fake)
    assert release_checkpoint() == cache / RELEASE_FILE
    assert asked[0]["url"] == RELEASE_URL and Path(str(asked[0]["output"])).parent == cache


def test_drives_refusal_is_one_clear_error(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import gdown

    def quota(**kwargs: object) -> None:
        Path(str(kwargs["output"]) + "x8f2.part").write_bytes(b"partial")  # what gdown leaves while it works
        raise gdown.exceptions.FileURLRetrievalError(
            "Failed to retrieve file url:\n\n\tToo many users have viewed or downloaded this file recently.\n\n..."
        )

    monkeypatch.delenv("BAVOS_RELEASE_URL", raising=False)
    monkeypatch.setattr(gdown, "download", quota)
    with pytest.raises(DownloadError) as info:
        release_checkpoint()
    message = str(info.value)
    reason = "Too many users have viewed or downloaded this file recently."
    assert f"Google Drive did not give the file ({reason})" in message
    assert RELEASE_PAGE in message and str(cache / RELEASE_FILE) in message and "\n" not in message
    assert not cache.exists()  # no partial file, no cache folder made for nothing


def test_a_download_that_is_not_the_papers_checkpoint_is_refused(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong = tmp_path / "wrong.pth"
    torch.save({"model_state_dict": {"encoder.cls_token": torch.zeros(1, 1, 32)}}, wrong)
    server = Mirror(wrong)
    monkeypatch.setenv("BAVOS_RELEASE_URL", server.url)
    try:
        with pytest.raises(DownloadError, match="weights do not fit the model"):
            release_checkpoint()
    finally:
        server.close()
    assert not cache.exists()  # nothing taken for the checkpoint next time, no cache folder made for nothing


def test_offline_and_not_cached_is_one_line_within_seconds(
    cache: Path,
    tmp_path: Path,
    run_cli,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
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
    assert "could not be downloaded: no connection to 127.0.0.1. Download" in lines[0]  # no urllib3 text
    # each alternative with what it needs, so that the next try is not another failure
    assert lines[0].endswith(
        "Without it: --checkpoint none (the training-free mode) needs DINO's weights from timm's "
        "hub (downloaded once, or --backbone-weights FILE); offline with neither, --checkpoint "
        "none --backbone-weights none runs on random weights (meaningless masks)"
    )
    assert not cache.exists()
    clips = tmp_path / "clips"
    clips.mkdir()
    (tmp_path / "v.mp4").rename(clips / "v.mp4")
    trained = run_cli("train", clips, "-o", tmp_path / "run", "--init-from", "release", "--device", "cpu")
    said = trained.err.strip().splitlines()  # train's own options (it named segment's --checkpoint)
    assert trained.code == 1 and len(said) == 1 and "or pass --init-from PATH. Without it: --init-from none " in said[0]
    assert said[0].endswith("--backbone-weights none trains on random weights (it learns nothing useful)")
    assert "--checkpoint" not in said[0] and not (tmp_path / "run").exists()


def test_cached_checkpoint_is_used_with_no_network_at_all(
    cache: Path, release_file: Path, tmp_path: Path, run_cli, no_network
) -> None:
    cache.mkdir()
    (cache / RELEASE_FILE).symlink_to(release_file)
    video = write_clip(tmp_path / "v.mp4", n=3, height=48, width=64)
    result = run_cli("segment", video, "-o", tmp_path / "out", "--resolution", "64", "96", "--device", "cpu", "-q")
    assert result.code == 0, result.err
    summary = json.loads((tmp_path / "out" / "v" / "summary.json").read_text())
    assert summary["mode"] == "correlator"
    cached = str(cache / RELEASE_FILE)
    assert summary["weights"] == {
        "backbone": "vit_small_patch8_224.dino",
        "backbone_weights": cached,
        "backbone_weights_from": "checkpoint",
        "correlator": "release",
        "correlator_file": cached,
    }


def test_which_backbone_weights_go_with_which_checkpoint(tmp_path: Path, release_file: Path) -> None:
    from bavos.models.correlator import Correlator, save_checkpoint

    release = plan_weights(ModelConfig(checkpoint=str(release_file)))
    assert (release.backbone, release.backbone_weights, release.backbone_weights_from) == (
        "vit_small_patch8_224.dino",
        str(release_file),
        "checkpoint",
    )
    assert release.backbone_loaded is release.loaded  # the file is read once for both networks
    given = plan_weights(ModelConfig(checkpoint=str(release_file), backbone_weights="none"))
    assert (given.backbone_weights, given.backbone_weights_from, given.backbone_loaded) == (
        "none",
        "--backbone-weights",
        None,
    )
    trained = tmp_path / "run.pt"
    save_checkpoint(
        trained,
        Correlator(32, 4),
        {"ModelConfig": {"backbone": "bavos_test_vit", "backbone_weights": "none", "correlator_heads": 4}},
    )
    bavos = plan_weights(ModelConfig(checkpoint=str(trained)))
    assert (bavos.backbone, bavos.backbone_weights, bavos.backbone_weights_from) == (
        "bavos_test_vit",
        "none",
        "checkpoint",
    )
    free = plan_weights(ModelConfig(checkpoint="none"))
    assert (free.backbone, free.backbone_weights, free.backbone_weights_from, free.checkpoint_file) == (
        "vit_small_patch8_224.dino",
        "hub",
        "default",
        None,
    )
    with pytest.raises(ConfigError, match="--checkpoint release is the paper's correlator"):
        ModelConfig(backbone="bavos_test_vit")


def test_segment_with_a_bavos_checkpoint_needs_no_backbone_options(tmp_path: Path, run_cli) -> None:
    from bavos.models.correlator import Correlator, save_checkpoint

    trained = tmp_path / "run.pt"
    save_checkpoint(
        trained,
        Correlator(32, 4),
        {"ModelConfig": {"backbone": "bavos_test_vit", "backbone_weights": "none", "correlator_heads": 4}},
    )
    video = write_clip(tmp_path / "v.mp4", n=3, height=48, width=64)
    result = run_cli(
        "segment",
        video,
        "-o",
        tmp_path / "out",
        "--checkpoint",
        trained,
        "--resolution",
        "64",
        "96",
        "--device",
        "cpu",
        "--json",
    )
    assert result.code == 0, result.err
    assert "random weights" in result.err  # what the checkpoint recorded is announced like the option
    weights = json.loads((tmp_path / "out" / "v" / "summary.json").read_text())["weights"]
    assert (weights["backbone"], weights["backbone_weights"], weights["backbone_weights_from"]) == (
        "bavos_test_vit",
        "none",
        "checkpoint",
    )
    missing = tmp_path / "moved.pt"
    save_checkpoint(
        missing,
        Correlator(32, 4),
        {
            "ModelConfig": {
                "backbone": "bavos_test_vit",
                "correlator_heads": 4,
                "backbone_weights": str(tmp_path / "gone.pth"),
            }
        },
    )
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


@pytest.fixture
def hf_cache(monkeypatch: pytest.MonkeyPatch) -> Callable[[Path], Path]:
    """Point huggingface_hub at a cache folder (it reads HF_HUB_CACHE once, at import)."""
    from huggingface_hub import constants

    def use(folder: Path) -> Path:
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(folder))
        return folder

    return use


def test_hub_weights_in_huggingfaces_cache_need_no_network(
    tmp_path: Path,
    vit_s8_safetensors: Path,
    monkeypatch: pytest.MonkeyPatch,
    no_network,
    hf_cache: Callable[[Path], Path],
) -> None:
    from safetensors.torch import load_file

    from bavos.models.backbone import build_backbone

    hf_cache(fake_hf_cache(tmp_path / "hf", vit_s8_safetensors))
    monkeypatch.setenv("BAVOS_CACHE", str(tmp_path / "bavos"))
    backbone = build_backbone("vit_small_patch8_224.dino", "hub")
    expected = load_file(vit_s8_safetensors)
    torch.testing.assert_close(backbone.vit.pos_embed, expected["pos_embed"])
    torch.testing.assert_close(backbone.vit.blocks[11].attn.qkv.weight, expected["blocks.11.attn.qkv.weight"])


def test_hub_weights_are_downloaded_once_by_huggingface_hub(
    tmp_path: Path, vit_s8_safetensors: Path, monkeypatch: pytest.MonkeyPatch, hf_cache: Callable[[Path], Path]
) -> None:
    """At the boundary bavos owns: it asks huggingface_hub for timm's repo and file once, then finds it cached."""
    import huggingface_hub

    from bavos.models import hub
    from bavos.models.hub import hub_weights

    cache = hf_cache(tmp_path / "hf")
    asked: list[tuple[str, str]] = []

    def fake(repo: str, filename: str, **kwargs: object) -> str:
        asked.append((repo, filename))
        kwargs["tqdm_class"](total=10).update(10)  # the bytes reach bavos's progress
        return str(
            fake_hf_cache(cache, vit_s8_safetensors)
            / "models--timm--vit_small_patch8_224.dino"
            / "snapshots"
            / "0123abcd"
            / filename
        )

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake)
    monkeypatch.setattr(hub, "_reachable", lambda endpoint: None)
    seen: list[tuple[int, int | None]] = []
    path = hub_weights("vit_small_patch8_224.dino", lambda done, total: seen.append((done, total)))
    assert asked == [("timm/vit_small_patch8_224.dino", "model.safetensors")] and seen == [(10, 10)]
    assert path.read_bytes() == vit_s8_safetensors.read_bytes()
    assert hub_weights("vit_small_patch8_224.dino") == path and len(asked) == 1  # cached: not asked again


def test_hub_offline_and_not_cached_is_one_line_within_seconds(
    tmp_path: Path,
    run_cli,
    monkeypatch: pytest.MonkeyPatch,
    hf_cache: Callable[[Path], Path],
) -> None:
    hf_cache(tmp_path / "empty-hf")
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
    assert line.startswith(
        "bavos: error: the weights of vit_small_patch8_224.dino are not in the cache and could "
        "not be downloaded (no connection"
    )
    assert "bavos weights" in line and "--backbone-weights PATH" in line
    # a trial: the first error's hint, --checkpoint none, led here, and the way out without weights went unsaid
    assert line.endswith("with neither, --backbone-weights none runs on random weights (meaningless masks)")


def test_weights_command_fetches_both_and_check_reports(
    cache: Path,
    drive: Mirror,
    tmp_path: Path,
    vit_s8_safetensors: Path,
    run_cli,
    hf_cache: Callable[[Path], Path],
) -> None:
    hf_cache(tmp_path / "empty-hf")
    result = run_cli("weights", "--check")
    assert result.code == 1 and "not in the cache" in result.err and not drive.requests  # --check: no network
    hf_cache(fake_hf_cache(tmp_path / "hf", vit_s8_safetensors))
    result = run_cli("weights")
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[0] == f"cache: {cache} (set BAVOS_CACHE to move it)"
    assert lines[1].startswith(f"paper's checkpoint (--checkpoint release): {cache / RELEASE_FILE} (")
    assert "vit_small_patch8_224.dino from timm's hub" in lines[2] and "model.safetensors" in lines[2]
    assert run_cli("weights", "--check").code == 0
    hf_cache(tmp_path / "empty-hf")  # the default's checkpoint is enough
    result = run_cli("weights", "--check")
    assert result.code == 0 and "bavos: warning: vit_small_patch8_224.dino" in result.err
    assert "needed only by --checkpoint none and bavos train" in result.err


def test_a_truncated_checkpoint_is_said_to_be_incomplete(
    cache: Path, drive: Mirror, release_file: Path, tmp_path: Path, run_cli
) -> None:
    """An incomplete .pth (a download cut short, Track-Anything#103) is named as such, never as a file to re-save."""
    cut = tmp_path / "cut.pth"
    cut.write_bytes(release_file.read_bytes()[: 2**20])
    from conftest import write_clip

    result = run_cli(
        "segment",
        write_clip(tmp_path / "v.mp4", n=2),
        "-o",
        tmp_path / "out",
        "--checkpoint",
        cut,
        "--backbone-weights",
        "none",
        "--device",
        "cpu",
    )
    assert result.code != 0
    assert (
        f"{cut}: not a checkpoint bavos can load: an incomplete file (1.0 MB: it ends before the zip directory"
        in result.err
        and "state_dict" not in result.err
    )
    legacy = tmp_path / "legacy.pth"
    torch.save({"model": {"w": torch.zeros(1000)}}, legacy, _use_new_zipfile_serialization=False)
    legacy.write_bytes(legacy.read_bytes()[:2000])
    from bavos.errors import CheckpointError
    from bavos.models.correlator import read_checkpoint

    with pytest.raises(CheckpointError, match="an incomplete file .*its data ends early"):
        read_checkpoint(legacy)

    cache.mkdir()
    cut.replace(cache / RELEASE_FILE)  # an incomplete copy in the cache, as the paper's file
    check = run_cli("weights", "--check")
    assert check.code == 1 and "an incomplete file (1.0 MB" in check.err and not drive.requests
    assert release_checkpoint() == cache / RELEASE_FILE and len(drive.requests) == 1  # downloaded again
    assert (cache / RELEASE_FILE).read_bytes() == release_file.read_bytes()


def test_what_a_killed_download_left_in_the_cache_goes_with_the_next(
    cache: Path, drive: Mirror, release_file: Path
) -> None:
    import subprocess
    import sys

    from bavos.io.owners import owner_tag

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    host, _, start = owner_tag().split("~")
    cache.mkdir()
    part = cache / f".{RELEASE_FILE}.bavos-tmp-{host}~{proc.pid}~{start}-download"
    for left in (part, part.with_name(part.name + "k2x_9ab1.part")):  # bavos's partial file, and gdown's
        left.write_bytes(b"x" * 1000)
    (cache / "notes.txt").write_text("the user's")
    release_checkpoint()
    assert sorted(p.name for p in cache.iterdir()) == [RELEASE_FILE, "notes.txt"]


def test_safetensors_weights_are_read_by_content_and_a_cut_one_is_incomplete(tmp_path: Path, run_cli) -> None:
    """airllm#137, marker#970: "incomplete metadata, file not fully covered" is a partial download."""
    import timm
    from conftest import TINY, write_clip
    from safetensors.torch import save_file

    import bavos.models.backbone  # noqa: F401 - registers bavos_test_vit

    whole = tmp_path / "vit.safetensors"
    save_file(timm.create_model("bavos_test_vit", num_classes=0).state_dict(), str(whole))
    video = write_clip(tmp_path / "v.mp4", n=2)
    named_pth = tmp_path / "vit.pth"
    named_pth.write_bytes(whole.read_bytes())  # safetensors under a .pth name: read as what it is
    ok = run_cli("segment", video, "-o", tmp_path / "out", *TINY, "--backbone-weights", named_pth, "-q")
    assert ok.code == 0, ok.err
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    result = run_cli("segment", video, "-o", tmp_path / "out2", *TINY, "--backbone-weights", cut)
    assert result.code == 1
    assert (
        f"{cut}: an incomplete file (" in result.err
        and "its header announces: a download or copy cut short" in result.err
    )


def test_one_random_weights_warning_for_every_command() -> None:
    assert random_weights_note(MEANINGLESS) == (
        "--backbone-weights none: the backbone has random weights; masks are meaningless (tests, benchmarks)"
    )
    said = random_weights_note(LEARNS_NOTHING, "a/last.pt", "--init-from")
    assert said.startswith("--init-from a/last.pt: that checkpoint was trained on a backbone with random weights")
    assert said.endswith(": the correlator learns nothing useful; pass --backbone-weights hub or a file for real ones")
    said = random_weights_note(MEANINGLESS, "a/last.pt", python=True)  # the Python API names its keywords
    assert said.startswith("checkpoint='a/last.pt': that checkpoint") and "pass backbone_weights='hub'" in said
