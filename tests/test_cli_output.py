import pytest

from bavos.cli import output as cli_output
from bavos.cli.output import LogLines, duration, rate_text


@pytest.fixture
def now(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The progress lines' clock: ``now[0]`` is what ``time.monotonic`` returns."""
    clock = [0.0]
    monkeypatch.setattr(cli_output.time, "monotonic", lambda: clock[0])
    return clock


def test_log_lines_are_bounded_in_number(now: list[float], capsys: pytest.CaptureFixture[str]) -> None:
    log = LogLines()
    log.start("v.mp4")
    for done in range(1, 1001):  # 1000 frames at 10 frames/s: 100 s
        now[0] = done / 10
        log("keys", done, 1000)
    lines = capsys.readouterr().err.splitlines()
    # a line at each new 10 % step that is 5 s after the last line, and the final one: 10 in all, not 1000
    assert len(lines) == 10
    assert lines[0] == (
        "bavos: v.mp4: keys 100/1000 frames (10 %), 10.0 frames/s, about 1 min 30 s left "
        "(decoding every frame, the backbone on the key frames)"
    )
    assert lines[-1] == "bavos: v.mp4: keys 1000/1000 frames (100 %), 10.0 frames/s, done in 1 min 40 s"


def test_the_time_left_goes_at_the_pace_after_the_first_item(
    now: list[float], capsys: pytest.CaptureFixture[str]
) -> None:
    """The first window waits for a whole backbone batch: the time left is measured from the first report on."""
    log = LogLines(every=6.0)
    log.start("demo.mp4")
    for done in range(1, 17):  # the first window at 5 s, then one a second: 20 s in all
        now[0] = 4.0 + done
        log("hierarchy", done, 16)
    lines = capsys.readouterr().err.splitlines()
    # 14 windows left at one a second (the pace since the start of the stage would say 42 s)
    assert lines[0].startswith("bavos: demo.mp4: hierarchy 2/16 windows (12 %), 0.33 windows/s, about 14 s left")
    assert lines[-1].startswith("bavos: demo.mp4: hierarchy 16/16 windows (100 %), 0.80 windows/s, done in 20 s")


def test_slow_stages_report_every_30_s_and_unknown_totals_too(
    now: list[float], capsys: pytest.CaptureFixture[str]
) -> None:
    log = LogLines()
    log.start("long.mkv")
    for done in range(1, 121):  # 120 windows, 1 per 2 s: 4 minutes, every 10 % step 24 s apart
        now[0] = 2.0 * done
        log("hierarchy", done, 1200)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 8  # every 30 s (no new 10 % step in these 4 minutes: 120 of 1200 is 10 % only at the end)
    assert "(decoding, the backbone, attention" in lines[0] and "(decoding" not in lines[1]
    log.start("weights")  # a download comes first, before any input
    now[0] += 1
    log("download", 5, None)
    now[0] += 30
    log("download", 50, None)
    assert capsys.readouterr().err.splitlines() == ["bavos: weights: download 50 MB, 1.61 MB/s"]


def test_readable_numbers() -> None:
    assert [rate_text(x) for x in (2530.4, 56.71, 8.913)] == ["2530", "56.7", "8.91"]
    assert [duration(x) for x in (4.4, 65, 7322)] == ["4 s", "1 min 05 s", "2 h 02 min"]


def test_the_eta_covers_the_passes_still_to_come(now: list[float], capsys: pytest.CaptureFixture[str]) -> None:
    log = LogLines(every=10)
    log.start("v.mp4")
    log.plan({"keys": 2.0, "hierarchy": 100.0, "labels": 50.0, "writing": 20.0})
    for done in range(1, 11):  # keys: estimated 2 s, takes 20 s, too short a pass to scale the others by
        now[0] = 2.0 * done
        log("keys", done, 10)
    first = capsys.readouterr().err.splitlines()
    assert "about 18 s left (all passes: about 3 min 08 s)" in first[0]  # + 170 s estimated
    for done in range(1, 101):  # hierarchy: estimated 100 s, takes 200 s: the later passes are scaled by 2
        now[0] = 20.0 + 2 * done
        log("hierarchy", done, 100)
    for done in range(1, 51):
        now[0] = 220.0 + 2 * done
        log("labels", done, 50)
    lines = capsys.readouterr().err.splitlines()
    # 25/50 windows of labels: 50 s of it left, then writing at (20 + 200) / (2 + 100) of its estimate
    assert any("labels 25/50" in line and "about 50 s left (all passes: about 1 min 33 s)" in line for line in lines)
    for done in range(1, 11):
        now[0] = 320.0 + done
        log("writing", done, 10)  # the last pass: nothing after it, no second figure
    assert all("all passes" not in line for line in capsys.readouterr().err.splitlines())
