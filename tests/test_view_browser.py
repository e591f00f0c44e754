"""The viewer's page in a real browser (headless Chromium): the canvas shows bavos's overlay of frame k, the list
follows the cut as recut writes it, a click selects the object under the pointer, and a saved cut is recut's.

Needs Chromium and its driver (Debian: ``apt-get install chromium chromium-driver``) and selenium (in the ``dev``
extra); skipped with that line where they are missing. A failing test leaves a screenshot and says where.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

HOW = "browser tests need Chromium: apt-get install chromium chromium-driver; pip install selenium (the dev extra)"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytest.importorskip("starlette", reason=HOW)
webdriver = pytest.importorskip("selenium.webdriver", reason=HOW)
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER), reason=HOW)


@contextmanager
def serving(folders: list[Path], port: int) -> Iterator[tuple[str, Any]]:
    """The viewer's app over ``folders`` in a thread, from the first free port from ``port`` on: its address (token
    "tok") and the uvicorn server (stopped on the way out, if not already)."""
    import uvicorn

    from bavos.cli.view import _free_port
    from bavos.view.results import ViewedResult
    from bavos.view.server import make_app

    chosen = _free_port("127.0.0.1", port)
    assert chosen is not None
    app = make_app([ViewedResult(f) for f in folders], "tok")
    server = uvicorn.Server(uvicorn.Config(app, port=chosen, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{chosen}/?token=tok", server
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture
def served(view_result: Path, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    folder = tmp_path / "out" / "clip"
    shutil.copytree(view_result, folder)
    with serving([folder], 8790) as (address, _):
        yield address, folder


@pytest.fixture
def browser(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Any]:
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    yield driver
    failed = getattr(request.node, "failed_call", False)
    shot = os.environ.get("BAVOS_VIEW_SCREENSHOT")
    if failed or shot:
        path = Path(shot) if shot and not failed else tmp_path / "page.png"
        driver.save_screenshot(str(path))
        print(f"screenshot of the page: {path}")
    driver.quit()


def wait(driver: Any, script: str, timeout: float = 20.0) -> Any:
    """The script's value once it is truthy."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = driver.execute_script(script)
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"the page never gave: {script}")


def drawn(driver: Any, frame: int, cut: str) -> None:
    wait(
        driver,
        f"const c = document.getElementById('frame'); return c.dataset.frame == '{frame}' && c.dataset.cut == '{cut}'",
    )


def canvas_pixels(driver: Any) -> np.ndarray:
    data = driver.execute_script(
        "const c = document.getElementById('frame');"
        "return Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data);"
    )
    return np.array(data, dtype=np.uint8).reshape(48, 64, 4)[..., :3]


def set_cut(driver: Any, level: int, cap: int) -> None:
    driver.execute_script(
        "const l = document.getElementById('level'), n = document.getElementById('cap');"
        f"l.value = {level}; n.value = {cap}; n.dispatchEvent(new Event('input'));"
    )


def rows(driver: Any) -> list[int]:
    return [
        int(x)
        for x in driver.execute_script(
            "return Array.from(document.querySelectorAll('#objects tbody tr')).map(r => r.dataset.id)"
        )
    ]


def test_the_page_shows_the_overlay_follows_the_cut_and_saves_it(
    served: tuple[str, Path], browser: Any, run_cli, tmp_path: Path
) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    from bavos.io.render import overlay
    from bavos.io.video import VideoSource
    from bavos.view.results import ViewedResult

    address, folder = served
    browser.get(address)
    drawn(browser, 0, "2/20")
    body = browser.find_element(By.TAG_NAME, "body")
    for _ in range(5):  # frame by frame with the arrow key
        body.send_keys(Keys.ARROW_RIGHT)
    drawn(browser, 5, "2/20")
    frame = [f.image for f in VideoSource(json.loads((folder / "summary.json").read_text())["source"]).frames()][5]
    mask = np.asarray(Image.open(folder / "masks" / "00005.png"))
    np.testing.assert_array_equal(canvas_pixels(browser), overlay(frame, mask, 0.5))

    recut = tmp_path / "recut" / "clip"
    shutil.copytree(folder, recut)
    assert run_cli("recut", recut, "--level", "0", "--max-objects", "0", "-q").code == 0
    set_cut(browser, 0, 0)
    drawn(browser, 5, "0/0")
    stats = json.loads((recut / "summary.json").read_text())["object_stats"]
    assert rows(browser) == [o["id"] for o in stats]
    level0 = np.asarray(Image.open(recut / "masks" / "00005.png"))
    np.testing.assert_array_equal(canvas_pixels(browser), overlay(frame, level0, 0.5))

    # another level with the default cap of 20: shown whole, as --level 1 --max-objects 0 cuts it, and said
    browser.execute_script(
        "document.getElementById('cap').value = 20; const l = document.getElementById('level');"
        "l.value = 1; l.dispatchEvent(new Event('input'));"
    )
    drawn(browser, 5, "1/0")
    assert browser.execute_script("return document.getElementById('cap').value") == "0"
    assert "objects set to 0" in browser.find_element(By.ID, "cuterr").text
    set_cut(browser, 1, 5)  # a cap of a level without centroids: recut's line, and the controls show what is shown
    wait(browser, "return document.getElementById('cuterr').textContent.startsWith('capping level 1 needs')")
    assert browser.execute_script(
        "return [document.getElementById('level').value, document.getElementById('cap').value]"
    ) == ["1", "0"]
    set_cut(browser, 0, 0)
    drawn(browser, 5, "0/0")

    ids = ViewedResult(folder).ids(5, 0, 0)
    y, x = (int(v[len(v) // 2]) for v in np.nonzero(ids == ids.max()))
    canvas = browser.find_element(By.ID, "frame")
    box = browser.execute_script("const r = arguments[0].getBoundingClientRect(); return [r.width, r.height];", canvas)
    dx, dy = (x + 0.5) * box[0] / 64 - box[0] / 2, (y + 0.5) * box[1] / 48 - box[1] / 2
    ActionChains(browser).move_to_element_with_offset(canvas, int(dx), int(dy)).click().perform()
    selected = wait(browser, "const r = document.querySelector('#objects tr.selected'); return r && r.dataset.id")
    assert int(selected) == ids[y, x]
    assert browser.find_element(By.ID, "hover").text == f"object {ids[y, x]}"

    set_cut(browser, 2, 4)
    drawn(browser, 5, "2/4")
    browser.find_element(By.ID, "savename").send_keys("clip-4")
    browser.find_element(By.ID, "save").click()
    wait(browser, "return document.getElementById('saved').textContent.startsWith('saved')")
    want = tmp_path / "want" / "clip"
    shutil.copytree(folder, want)
    assert run_cli("recut", want, "--level", "2", "--max-objects", "4", "-q").code == 0
    saved = folder.parent / "clip-4"
    assert sorted(p.name for p in saved.rglob("*")) == sorted(p.name for p in want.rglob("*"))
    for name in ("masks/00000.png", "masks/00008.png", "hierarchy.npz", "hierarchy.png", "preview.png"):
        assert (saved / name).read_bytes() == (want / name).read_bytes(), name


NO_SIDEWAYS = "const e = document.documentElement; return e.scrollWidth <= e.clientWidth"


def test_several_results_are_listed_and_one_opens(view_result: Path, tmp_path: Path, browser: Any) -> None:
    """Results of one name were all listed by it; a 204-character name stretched the page sideways; a save in place
    left the menu's object count as it was."""
    folders = [tmp_path / name / "clip" for name in ("a", "b")] + [tmp_path / "c" / ("long-" * 40 + "name")]
    for folder in folders:
        shutil.copytree(view_result, folder)
    with serving(folders, 8795) as (address, _):
        browser.get(address)
        assert wait(browser, "return document.querySelectorAll('.card').length") == 3
        names = browser.execute_script("return [...document.querySelectorAll('.card b')].map((b) => b.textContent)")
        assert names[:2] == ["a/clip", "b/clip"] and browser.execute_script(NO_SIDEWAYS)
        browser.execute_script("document.querySelectorAll('.card')[2].click()")
        drawn(browser, 0, "2/20")
        assert browser.execute_script(NO_SIDEWAYS)
        set_cut(browser, 2, 3)
        drawn(browser, 0, "2/3")
        browser.execute_script("document.getElementById('save').click()")
        wait(browser, "return document.getElementById('saved').className === 'done'")
        objects = len(json.loads((folders[2] / "summary.json").read_text())["object_stats"])
        wait(
            browser, f"return document.getElementById('results').selectedOptions[0].text.includes('{objects} objects')"
        )
        browser.execute_script(
            "const s = document.getElementById('results'); s.value = '-1'; s.dispatchEvent(new Event('change'));"
        )
        assert browser.execute_script("return document.getElementById('viewer').offsetParent === null")  # not shown
        browser.execute_script("document.querySelectorAll('.card')[1].click()")
        drawn(browser, 0, "2/20")
        assert browser.execute_script("return document.getElementById('list').offsetParent === null")
        assert browser.execute_script("return document.getElementById('results').value") == "1"
        browser.execute_script(  # "all results" in the menu: back to the list
            "const s = document.getElementById('results'); s.value = '-1'; s.dispatchEvent(new Event('change'));"
        )
        assert wait(browser, "return document.getElementById('viewer').offsetParent === null")
        assert browser.execute_script("return document.getElementById('list').offsetParent !== null")


def test_keys_lanes_playing_in_time_and_a_stopped_server(
    view_result: Path, tmp_path: Path, browser: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A focused slider keeps its arrows; a lane's click selects its object; playing skips frames that take
    longer to fetch than the video shows them; and a stopped server is said, with playing stopped."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    from bavos.view.results import ViewedResult

    folder = tmp_path / "out" / "clip"
    shutil.copytree(view_result, folder)
    fetched = []
    frame = ViewedResult.frame

    def slow(self: ViewedResult, k: int) -> Any:  # a large frame on a busy machine: slower than 12 fps
        fetched.append(k)
        if len(fetched) > 1:
            time.sleep(0.5)
        return frame(self, k)

    monkeypatch.setattr(ViewedResult, "frame", slow)
    with serving([folder], 8797) as (address, _):
        browser.get(address)
        drawn(browser, 0, "2/20")
        alpha = browser.find_element(By.ID, "alpha")
        alpha.send_keys(Keys.ARROW_RIGHT)
        assert browser.execute_script("return [document.getElementById('alpha').value, state.k]") == ["0.55", 0]

        first = browser.execute_script("return listed()[0].id")
        browser.execute_script(
            "const c = document.getElementById('lanes'), r = c.getBoundingClientRect();"
            "c.dispatchEvent(new MouseEvent('click', {clientX: r.left + r.width * 0.5, clientY: r.top + 2}));"
        )
        drawn(browser, 4, "2/20")  # the middle of the lane's 9 frames
        assert wait(browser, "const r = document.querySelector('#objects tr.selected'); return r && r.dataset.id")
        assert (
            browser.execute_script("return Number(document.querySelector('#objects tr.selected').dataset.id)") == first
        )

        browser.execute_script("show(0)")
        drawn(browser, 0, "2/20")
        fetched.clear()
        browser.find_element(By.ID, "play").click()
        wait(browser, "return Number(document.getElementById('frame').dataset.frame) >= 6")
        assert len(fetched) < 6, fetched  # frames skipped to keep time, and said
        assert "frames skipped to keep time" in browser.find_element(By.ID, "pos").text
    browser.execute_script("show(1)")  # the server stopped
    wait(browser, "return document.getElementById('banner').textContent.startsWith('bavos view has stopped')")
    assert browser.execute_script("return state.playing") is False
