"""Work beside the model: items made ahead in a thread (decoding) and items consumed in a thread (writing), each
through a bounded queue, with the seconds each side waited for the other.

On a GPU the networks are fast and the CPU work repeated in each pass over a video (decoding, resizing, PNG and
video encoding) would otherwise leave the device idle. FFmpeg (PyAV), Pillow's encoders, zlib and PyTorch release
the GIL while they work, so these threads run beside the calling one. ``ahead=0`` does everything in the calling
thread (the measured "before"); the results are the same either way.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")

_DONE = object()  # end of the items


def _take(items: queue.Queue) -> tuple[object, float]:
    """The next item, waiting as long as needed, and the seconds waited."""
    start = time.perf_counter()
    item = items.get()
    return item, time.perf_counter() - start


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


class Ahead(Generic[T]):
    """Iterate ``make()`` in a background thread, up to ``ahead`` items ahead of the consumer.

    The items, and any exception ``make()`` raises, reach the consumer in order. Closing (or leaving a ``with`` block)
    early stops the thread after the item it is making. ``waited`` is the seconds the consumer spent waiting for
    items; ``busy`` the seconds spent making them.

    Args:
        make: called once, in the thread, to start the iteration (so that a decoder lives in one thread).
        ahead: items made ahead (0: made in the consumer's thread, when asked for).
    """

    def __init__(self, make: Callable[[], Iterable[T]], ahead: int = 2) -> None:
        if ahead < 0:
            raise ValueError(f"ahead must be 0 or more, got {ahead}")
        self.waited = 0.0
        self.busy = 0.0
        self._make, self._ahead = make, ahead
        self._stop = threading.Event()
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, ahead))
        self._thread: threading.Thread | None = None
        self._inline: Iterator[T] | None = None

    def __enter__(self) -> Ahead[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self) -> None:
        try:
            items = iter(self._make())
            while not self._stop.is_set():
                start = time.perf_counter()
                try:
                    item = next(items)
                except StopIteration:
                    self._put(_DONE)
                    return
                finally:
                    self.busy += time.perf_counter() - start
                self._put(item)
        except BaseException as e:
            self._put(_Failed(e))

    def _put(self, item: object) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return
            except queue.Full:
                continue

    def __iter__(self) -> Iterator[T]:
        if self._ahead == 0:
            yield from self._inline_items()
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="bavos-ahead", daemon=True)
            self._thread.start()
        while True:
            item, waited = _take(self._queue)
            self.waited += waited
            if item is _DONE:
                return
            if isinstance(item, _Failed):
                raise item.error
            yield item

    def _inline_items(self) -> Iterator[T]:
        self._inline = iter(self._make())
        while True:
            start = time.perf_counter()
            try:
                item = next(self._inline)
            except StopIteration:
                return
            finally:
                spent = time.perf_counter() - start
                self.busy += spent
                self.waited += spent
            yield item

    def close(self) -> None:
        """Stop making items and wait for the thread to end (it ends after the item it is making)."""
        self._stop.set()
        if self._thread is not None:
            while self._thread.is_alive():
                try:  # free a producer blocked on a full queue
                    self._queue.get_nowait()
                except queue.Empty:
                    pass
                self._thread.join(timeout=0.05)
        if self._inline is not None and hasattr(self._inline, "close"):
            self._inline.close()


class Behind(Generic[T]):
    """Hand items to ``consume`` in a background thread, at most ``behind`` items waiting.

    An exception ``consume`` raises is raised in the caller's thread by the next ``put`` or by ``close``; nothing is
    consumed after it. ``waited`` is the seconds the thread spent waiting for items; ``blocked`` the seconds the
    caller spent waiting for room in the queue.

    Args:
        behind: items waiting at most (0: consumed in the caller's thread, in ``put``).
    """

    def __init__(self, consume: Callable[[T], None], behind: int = 4) -> None:
        if behind < 0:
            raise ValueError(f"behind must be 0 or more, got {behind}")
        self.waited = 0.0
        self.blocked = 0.0
        self._consume = consume
        self._error: BaseException | None = None
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, behind))
        self._thread: threading.Thread | None = None
        if behind:
            self._thread = threading.Thread(target=self._run, name="bavos-behind", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            item, waited = _take(self._queue)
            self.waited += waited
            if item is _DONE:
                return
            if self._error is not None:
                continue  # drain: nothing more is consumed after a failure
            try:
                self._consume(item)
            except BaseException as e:
                self._error = e

    def _raise(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def put(self, item: T) -> None:
        """Queue ``item`` (waiting while the queue is full); raises what ``consume`` raised on an earlier item."""
        if self._thread is None:
            self._consume(item)
            return
        self._raise()
        start = time.perf_counter()
        while True:
            try:
                self._queue.put(item, timeout=0.05)
                break
            except queue.Full:
                self._raise()
        self.blocked += time.perf_counter() - start

    def close(self) -> None:
        """Wait until every queued item is consumed; raises what ``consume`` raised."""
        if self._thread is not None:
            self._queue.put(_DONE)
            self._thread.join()
            self._thread = None
        self._raise()

    def abandon(self) -> None:
        """Stop after the item being consumed; what is still queued is dropped, an error is not raised."""
        if self._thread is not None:
            self._error = self._error or RuntimeError("abandoned")
            self._queue.put(_DONE)
            self._thread.join()
            self._thread = None
