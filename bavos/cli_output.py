"""What the command line shows: one-line errors and warnings, progress bars, result lines and tables.

CLI side only (library code never prints); rich is imported when a bar or a table is first needed.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import typer


def error(message: str) -> None:
    """One error line on stderr."""
    sys.stderr.write(f"bavos: error: {message}\n")


def warn(message: str) -> None:
    """One warning line on stderr."""
    sys.stderr.write(f"bavos: warning: {message}\n")


class Bars:
    """Rich progress bars on stderr, one per pipeline stage, reset for every input."""

    def __init__(self, enabled: bool) -> None:
        self._progress: Any = None
        self._tasks: dict[str, Any] = {}
        if enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(TextColumn("{task.description:<11}"), BarColumn(), MofNCompleteColumn(),
                                      TimeElapsedColumn(), TextColumn("{task.fields[info]}"),
                                      console=Console(stderr=True), transient=True)

    def __enter__(self) -> Bars:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def reset(self) -> None:
        for task in self._tasks.values():
            self._progress.remove_task(task)
        self._tasks.clear()

    def __call__(self, stage: str, done: int, total: int | None) -> None:
        if self._progress is None:
            return
        if stage not in self._tasks:
            self._tasks[stage] = self._progress.add_task(stage, total=total, info="")
        self._progress.update(self._tasks[stage], completed=done, total=total)

    def describe(self, stage: str, text: str) -> None:
        """Show ``text`` under a stage's bar."""
        if self._progress is not None and stage in self._tasks:
            self._progress.update(self._tasks[stage], info=text)


class TrainView:
    """Training progress on stderr: a rich bar with the loss terms and steps/s on a terminal, else a line per log."""

    def __init__(self, enabled: bool) -> None:
        self.rank = int(os.environ.get("RANK", "0"))
        self.enabled = enabled and self.rank == 0
        self.tty = sys.stderr.isatty()
        self._bars = Bars(self.enabled and self.tty)
        self._stop = 0

    def __enter__(self) -> TrainView:
        self._bars.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._bars.__exit__(*exc)

    def warn(self, message: str) -> None:
        warn(message)

    def stage(self, name: str, done: int, total: int | None) -> None:
        self._bars(name, done, total)

    def start(self, step: int, stop: int, clips: int, skipped: int) -> None:
        self._stop = stop
        if self.enabled:
            sys.stderr.write(f"bavos: training on {clips} clips ({skipped} skipped), steps {step + 1}..{stop}\n")
        self._bars.reset()
        self._bars("train", step, stop)

    def step(self, step: int, record: dict[str, Any] | None) -> None:
        self._bars("train", step, self._stop)
        if record is None or not self.enabled:
            return
        line = (f"step {step}/{self._stop} loss {record['loss']:.4f} (semantic {record['semantic_pos']:.4f} + "
                f"{record['semantic_neg']:.4f}, motion {record['motion']:.4f}) {record['steps_per_s']:.2f} steps/s")
        if self.tty:
            self._bars.describe("train", line)
        else:
            sys.stderr.write(line + "\n")

    def checkpoint(self, path: Path, step: int) -> None:
        return None



class Results:
    """Per-input results: a line of text, or with --json exactly one JSON line per input on stdout."""

    def __init__(self, as_json: bool, quiet: bool) -> None:
        self.as_json, self.quiet = as_json, quiet

    def _emit(self, path: Path, status: str, output: Path | str, frames: int | None, objects: int | None,
              seconds: float, error: str | None) -> None:
        if self.as_json:
            import json

            line = json.dumps({"input": str(path), "status": status, "output": str(output), "frames": frames,
                               "objects": objects, "seconds": round(seconds, 3), "error": error})
            typer.echo(line)
            sys.stdout.flush()  # one write per line: lines of torchrun processes sharing stdout stay whole
        elif not self.quiet and status != "failed":
            what = "skipped, finished output exists" if status == "skipped" else f"{frames} frames, {objects} objects"
            typer.echo(f"{output}: {what} ({seconds:.1f} s)")

    def ok(self, path: Path, summary: dict[str, Any], seconds: float) -> None:
        self._emit(path, "ok", summary["output"], summary["frames"], summary["objects"], seconds, None)

    def failed(self, path: Path, folder: Path, error: str, seconds: float) -> None:
        self._emit(path, "failed", folder, None, None, seconds, error)

    def skipped(self, path: Path, folder: Path) -> None:
        from bavos.batch import read_summary

        summary = read_summary(folder) or {}
        self._emit(path, "skipped", folder, summary.get("frames"), summary.get("objects"), 0.0, None)



def print_table(title: str, columns: list[str], rows: list[list[str]], to_stderr: bool) -> None:
    """A rich table on stdout (or stderr, when stdout carries JSON); the last row is the overall one."""
    from rich.console import Console
    from rich.table import Table

    stream = sys.stderr if to_stderr else sys.stdout
    console = Console(file=stream, width=None if stream.isatty() else 160)
    table = Table(title=title, title_justify="left")
    for i, col in enumerate(columns):
        table.add_column(col, justify="left" if i == 0 else "right")
    for i, row in enumerate(rows):
        table.add_row(*row, end_section=i == len(rows) - 2)
    console.print(table)
