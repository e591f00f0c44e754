"""How long jobs report: the ``Progress`` protocol that the pipeline, training and evaluation call, and ``as_progress``
for a plain callback. The command line's bars and log lines implement it (``bavos.cli.output``); the library never
prints."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

Callback = Callable[[str, int, "int | None"], None]  # (stage, done, total or None when unknown)


@runtime_checkable
class Progress(Protocol):
    """Receives a job's progress: each stage's count, and a line of text about a stage."""

    def __call__(self, stage: str, done: int, total: int | None) -> None:
        """``done`` of ``total`` (None: unknown) units of ``stage`` are finished."""
        ...

    def describe(self, stage: str, text: str) -> None:
        """Text about ``stage`` (what it counts, what it will write)."""
        ...


class _Plain:
    """A callback (or nothing) as a Progress: counts go to the callback, text is dropped."""

    def __init__(self, callback: Callback | None) -> None:
        self._callback = callback

    def __call__(self, stage: str, done: int, total: int | None) -> None:
        if self._callback is not None:
            self._callback(stage, done, total)

    def describe(self, stage: str, text: str) -> None:
        return None


def as_progress(progress: Progress | Callback | None) -> Progress:
    """``progress`` itself when it is a Progress, else a Progress around the callback (None: shows nothing).

    Raises:
        TypeError: ``progress`` cannot be called (``progress=True``): said before any work, not at the first count.
    """
    if progress is not None and isinstance(progress, Progress):
        return progress
    if progress is not None and not callable(progress):
        raise TypeError(
            f"progress must be called as progress(stage, done, total), or be None; got {type(progress).__name__}"
        )
    return _Plain(progress)
