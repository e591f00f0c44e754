"""The viewer's server: every endpoint with the token, nothing without it, nothing outside the results named."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("starlette", reason='needs the viewer\'s extra: pip install "bavos[view]"')
from starlette.testclient import TestClient

from bavos.view.results import ViewedResult
from bavos.view.server import make_app

TOKEN = "t0ken"


@pytest.fixture
def client(view_result: Path, tmp_path: Path) -> TestClient:
    folder = tmp_path / "out" / "clip"
    shutil.copytree(view_result, folder)
    return TestClient(make_app([ViewedResult(folder)], TOKEN))


def get(client: TestClient, path: str, **params: object) -> object:
    return client.get(path, params={"token": TOKEN, **params})


def test_every_endpoint(client: TestClient, view_result: Path) -> None:
    page = get(client, "/")
    assert page.status_code == 200 and f"static/app.js?token={TOKEN}" in page.text
    assert get(client, "/static/app.js").status_code == get(client, "/static/style.css").status_code == 200
    listing = get(client, "/api/results").json()
    assert [(r["index"], r["name"], r["frames"], r["random"]) for r in listing] == [(0, "clip", 9, False)]
    info = get(client, "/api/results/0").json()
    assert (info["frames"], info["level"], info["converged"], info["width"], info["height"]) == (9, 2, 2, 64, 48)
    assert listing[0]["objects"] == info["objects"] > 0
    mask = np.asarray(Image.open(view_result / "masks" / "00005.png"))
    ids = np.frombuffer(get(client, "/api/results/0/ids/5").content, "<u2").reshape(48, 64)
    np.testing.assert_array_equal(ids, mask)
    assert len(get(client, "/api/results/0/frame/5").content) == 48 * 64 * 3
    cut = get(client, "/api/results/0/cut", level=0, max_objects=0).json()
    assert cut["level"] == 0 and cut["clusters"] == 58 and cut["objects"][0]["id"] == 1
    assert get(client, "/api/results/0/preview.png").content[:8] == b"\x89PNG\r\n\x1a\n"
    assert get(client, "/api/results/0/hierarchy.png", level=1, max_objects=0).content[:4] == b"\x89PNG"
    said = get(client, "/api/results/0/cut", level=0, max_objects=5)
    assert said.status_code == 400 and said.json()["error"].startswith("capping level 0 needs its centroids")
    saved = client.post("/api/results/0/save", params={"token": TOKEN}, json={"level": 2, "max_objects": 3})
    assert saved.status_code == 200 and saved.json()["objects"] <= 2 and saved.json()["level"] == 2


def test_nobody_else_gets_in(client: TestClient) -> None:
    for token in (None, "", "wrong", TOKEN + "x"):
        params = {} if token is None else {"token": token}
        for path in ("/", "/api/results", "/api/results/0/frame/0", "/static/app.js"):
            r = client.get(path, params=params)
            assert r.status_code == 403 and "token" in r.text, (path, token)
    assert client.post("/api/results/0/save", json={"level": 2}).status_code == 403


@pytest.mark.parametrize(
    "path",
    [
        "/static/../results.py",
        "/static/..%2Fresults.py",
        "/static/%2e%2e/server.py",
        "/static/index.html",
        "/static//etc/passwd",
        "/etc/passwd",
        "/api/results/1",
        "/api/results/-1",
        "/api/results/0/frame/9",
        "/api/results/0/frame/-1",
        "/api/results/0/../../summary.json",
        "/api/results/0/masks/00000.png",
        "/api/results/0/summary.json",
    ],
)
def test_only_the_results_named(client: TestClient, path: str) -> None:
    r = client.get(path, params={"token": TOKEN})
    assert r.status_code == 404, (path, r.status_code, r.text[:80])


def test_a_save_writes_only_beside_the_result(client: TestClient, tmp_path: Path) -> None:
    for name in ("../escape", "/tmp/escape", "a/b", "..", ".hidden"):
        r = client.post(
            "/api/results/0/save", params={"token": TOKEN}, json={"level": 2, "max_objects": 0, "name": name}
        )
        assert r.status_code == 400, name
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["clip"]
    assert not (tmp_path / "escape").exists()


def test_the_listing_follows_saves_and_tells_results_of_one_name_apart(view_result: Path, tmp_path: Path) -> None:
    """After a save in place the menu and cards kept the old object count; out/clip and exp/clip were both "clip"."""
    for parent in ("out", "exp"):
        shutil.copytree(view_result, tmp_path / parent / "clip")
    client = TestClient(make_app([ViewedResult(tmp_path / p / "clip") for p in ("out", "exp")], TOKEN))
    listing = get(client, "/api/results").json()
    assert [r["name"] for r in listing] == ["out/clip", "exp/clip"]
    stamp = get(client, "/api/results/0").json()["stamp"]
    saved = client.post(
        "/api/results/0/save", params={"token": TOKEN}, json={"level": 2, "max_objects": 3, "stamp": stamp}
    )
    assert saved.status_code == 200, saved.text
    after = get(client, "/api/results").json()
    assert after[0]["objects"] == saved.json()["objects"] != listing[0]["objects"] and after[1] == listing[1]
    again = client.post(  # the page's cut was chosen on what the save has replaced
        "/api/results/0/save", params={"token": TOKEN}, json={"level": 2, "max_objects": 4, "stamp": stamp}
    )
    assert again.status_code == 409 and "rewritten since the page read it" in again.json()["error"]
    assert get(client, "/api/results/0/preview.png").headers["cache-control"] == "no-store"


def test_a_cut_past_what_the_options_take_and_a_bug_are_one_line(
    view_result: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copytree(view_result, tmp_path / "clip")
    told: list[str] = []
    client = TestClient(make_app([ViewedResult(tmp_path / "clip")], TOKEN, told.append))
    said = get(client, "/api/results/0/cut", level=2, max_objects=99999999)  # recut takes 0..65536
    assert said.status_code == 400 and said.json()["error"].startswith("--max-objects must be in 0..65536")

    def broken(*args: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(ViewedResult, "cut", broken)  # a request's bug: one line, not "Internal Server Error"
    r = get(client, "/api/results/0/cut", level=1, max_objects=0)
    assert r.status_code == 500 and r.json()["error"].startswith("internal error: RuntimeError: boom (run with")
    assert told == [f"/api/results/0/cut: {r.json()['error']}"]  # the command line prints it as an error


def test_results_of_one_name_are_told_apart_by_as_many_folders_as_it_takes() -> None:
    from bavos.view.server import _told_apart

    folders = [Path("/r/mv/mv"), Path("/r/a/out/clip"), Path("/r/b/out/clip"), Path("/r/c/clip")]
    assert _told_apart(folders) == ["mv", "a/out/clip", "b/out/clip", "c/clip"]  # "out/clip" twice before
