"""Work beside the model: Ahead (made in a thread) and Behind (consumed in a thread)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from bavos.io.background import Ahead, Behind


@pytest.mark.parametrize("ahead", [0, 1, 3])
def test_ahead_keeps_order_and_counts_waits(ahead: int) -> None:
    threads: set[str] = set()

    def slow() -> Iterator[int]:
        for i in range(5):
            threads.add(threading.current_thread().name)
            time.sleep(0.02)
            yield i

    with Ahead(slow, ahead) as items:
        assert list(items) == [0, 1, 2, 3, 4]
    assert items.busy >= 0.09 and items.waited > 0  # the consumer did nothing else, so it waited
    assert threads == ({"MainThread"} if ahead == 0 else {"bavos-ahead"})


@pytest.mark.parametrize("ahead", [0, 2])
def test_ahead_raises_the_makers_error_in_order(ahead: int) -> None:
    def failing() -> Iterator[int]:
        yield 1
        yield 2
        raise OSError("disk gone")

    got = []
    with pytest.raises(OSError, match="disk gone"), Ahead(failing, ahead) as items:
        for item in items:
            got.append(item)
    assert got == [1, 2]


def test_ahead_closed_early_stops_its_thread() -> None:
    made = []
    closed = threading.Event()

    def endless() -> Iterator[int]:
        i = 0
        try:
            while True:
                made.append(i)
                yield i
                i += 1
        finally:
            closed.set()  # the decoder's generator is closed in its own thread

    with Ahead(endless, 2) as items:
        for item in items:
            if item == 3:
                break
    assert closed.wait(5) and not any(t.name == "bavos-ahead" for t in threading.enumerate())
    assert len(made) <= 3 + 1 + 2 + 1  # at most the queue and the item in hand beyond what was taken


@pytest.mark.parametrize("behind", [0, 1, 4])
def test_behind_consumes_everything_in_order(behind: int) -> None:
    seen: list[int] = []
    threads: set[str] = set()

    def consume(i: int) -> None:
        threads.add(threading.current_thread().name)
        time.sleep(0.01)
        seen.append(i)

    sink = Behind(consume, behind)
    for i in range(6):
        sink.put(i)
    sink.close()
    assert seen == list(range(6))
    assert threads == ({"MainThread"} if behind == 0 else {"bavos-behind"})
    if behind:
        assert sink.waited > 0


@pytest.mark.parametrize("behind", [0, 2])
def test_behind_raises_the_consumers_error_and_consumes_nothing_after(behind: int) -> None:
    seen: list[int] = []

    def consume(i: int) -> None:
        if i == 2:
            raise OSError("no space left")
        seen.append(i)

    sink = Behind(consume, behind)
    with pytest.raises(OSError, match="no space left"):
        for i in range(50):
            sink.put(i)
            time.sleep(0.002)
        sink.close()
    sink.abandon()
    assert seen == [0, 1]


def test_behind_abandoned_drops_what_waits() -> None:
    started, gate = threading.Event(), threading.Event()
    seen: list[int] = []

    def consume(i: int) -> None:
        started.set()
        gate.wait(5)
        seen.append(i)

    sink = Behind(consume, 4)
    for i in range(4):
        sink.put(i)
    assert started.wait(5)
    threading.Timer(0.05, gate.set).start()
    sink.abandon()
    assert seen == [0] and not any(t.name == "bavos-behind" for t in threading.enumerate())
