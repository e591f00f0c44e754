"""What the command line shows: one-line errors and notes, progress, result lines and tables.

CLI side only (library code never prints); rich is imported when a bar or a table is first needed. Progress
reports come as ``progress(stage, done, total)``; on a terminal they are rich bars on stderr with rate and ETA,
and result lines are printed above the bars, where they stay. When stderr is not a terminal (a job's log, nohup),
each stage gets a plain line every 30 s (or at a new 10 % step, 5 s after its last line) and one at its end.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer

UNITS = {
    "download": "MB",
    "keys": "frames",
    "hierarchy": "windows",
    "labels": "windows",
    "writing": "frames",
    "train": "steps",
    "scoring": "frames",
    "decode": "clips",
}
NOTES = {
    "keys": "decoding every frame, the backbone on the key frames",
    "hierarchy": "decoding, the backbone, attention and clusters of each window",
    "labels": "each token's label at every level",
    "decode": "each clip decoded into the frame cache, or found there",
}


_live: list[Any] = []  # the rich console of the bars on screen, if any: lines are printed above them


def _stderr_line(text: str) -> None:
    if _live:
        _live[-1].print(text, markup=False, highlight=False, soft_wrap=True)
    else:
        sys.stderr.write(text + "\n")


def error(message: str) -> None:
    """One error line on stderr."""
    _stderr_line(f"bavos: error: {message}")


def warn(message: str) -> None:
    """One warning line on stderr."""
    _stderr_line(f"bavos: warning: {message}")


def no_object_hint(summary: dict[str, Any]) -> str | None:
    """What to try where a result holds no object (one cluster covers every frame at its level), else None."""
    if summary.get("objects") != 0 or summary.get("capped_to") is not None:  # a cap to 1 was asked for
        return None
    sizes, level, output = summary.get("level_sizes") or [], summary.get("level"), summary.get("output")
    finer = max((lv for lv, size in enumerate(sizes) if size > 1), default=None)
    said = f"{output}: no object: one cluster covers every frame at level {level}"
    if finer is None or level is None or finer >= level:
        return f"{said}; a lower --tau merges less"
    return (
        f"{said} (the levels hold {', '.join(map(str, sizes))} clusters): `bavos recut {output} --level {finer}` "
        "cuts finer, a lower --tau merges less"
    )


def note(message: str) -> None:
    """One information line on stderr (costs, defaults chosen for this machine)."""
    _stderr_line(f"bavos: {message}")


STDOUT_CLOSED = 141  # the exit code of a process killed by SIGPIPE, as shells report it


@contextlib.contextmanager
def _to_stdout() -> Iterator[None]:
    """Writes to stdout, flushed; the reader gone (``| head -1``), the command stops quietly with exit code 141, as a
    tool killed by SIGPIPE (Click made it 1, which scripts take for a failed input)."""
    try:
        yield
        sys.stdout.flush()  # one write per line: lines of torchrun processes sharing stdout stay whole
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing more to flush at exit
        raise SystemExit(STDOUT_CLOSED) from None


def echo(text: str) -> None:
    """A line on stdout (a result, a path, JSON)."""
    with _to_stdout():
        typer.echo(text)


def say_swept(removed: list, folder: object) -> None:
    """One line for what dead runs left in ``folder`` and this run removed (``owners.sweep``'s ``Leftover``s)."""
    from bavos.models.costs import size_text

    for r in removed:
        if r.restored:
            note(f"put back {r.path}: a killed run was replacing that result and had not put its own in its place")
    removed = [r for r in removed if not r.restored]
    if not removed:
        return
    names = ", ".join(r.path.name for r in removed[:3]) + (f" and {len(removed) - 3} more" if len(removed) > 3 else "")
    total = size_text(sum(r.bytes for r in removed))
    note(f"removed what killed runs left in {folder} ({total}): {names}")


def duration(seconds: float) -> str:
    """'42 s', '3 min 05 s', '2 h 10 min'."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def count(n: int, noun: str) -> str:
    """'1 object', '3 objects'."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def rate_text(rate: float) -> str:
    """'1234', '56.7', '8.91': three significant figures without an exponent."""
    return f"{rate:.0f}" if rate >= 100 else f"{rate:.1f}" if rate >= 10 else f"{rate:.2f}"


class PassPlan:
    """The time left over all the passes of an input: the running pass's own ETA, plus the estimated seconds of
    the passes after it, scaled by how the finished passes compared with their estimates once those make at least
    a fifth of the estimate."""

    def __init__(self, passes: dict[str, float]) -> None:
        self.passes = dict(passes)
        self._measured = self._planned = 0.0
        self._finished: set[str] = set()

    def finished(self, stage: str, seconds: float) -> None:
        if stage in self.passes and stage not in self._finished:
            self._finished.add(stage)
            self._measured += seconds
            self._planned += self.passes[stage]

    def revise(self, passes: dict[str, float]) -> None:
        """New estimates for the passes not finished yet (a refined estimate)."""
        self.passes.update({k: v for k, v in passes.items() if k in self.passes and k not in self._finished})

    def left(self, stage: str, stage_left: float) -> float | None:
        """Seconds left over every pass while ``stage`` has ``stage_left`` to go (None: not a planned pass)."""
        if stage not in self.passes:
            return None
        order = list(self.passes)
        later = sum(self.passes[s] for s in order[order.index(stage) + 1 :])
        # scaled once finished passes make a fair sample (the keys pass alone is too short to judge by)
        sample = self._planned >= 0.2 * sum(self.passes.values()) > 0
        factor = self._measured / self._planned if sample else 1.0
        return stage_left + factor * later


class Progress:
    """Progress of one input at a time. This base class shows nothing (``--quiet``)."""

    label = ""
    silent = True  # nothing is shown: notes (costs, defaults) are not shown either
    _plan: PassPlan | None = None

    def plan(self, passes: dict[str, float]) -> None:
        """The estimated seconds of the input's passes, in order: the ETA then covers all of them."""
        self._plan = PassPlan(passes) if passes else None

    def revise(self, passes: dict[str, float]) -> None:
        """A refined estimate of the passes not finished yet."""
        if self._plan is not None:
            self._plan.revise(passes)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def start(self, label: str) -> None:
        """A new input (or task) begins: earlier stages are cleared."""
        self.label = label
        self._plan = None

    def __call__(self, stage: str, done: int, total: int | None) -> None:
        return None

    def describe(self, stage: str, text: str) -> None:
        """Extra text on a stage's bar (or its next line)."""

    def line(self, text: str) -> None:
        """A result line on stdout that stays (above the bars on a terminal)."""
        echo(text)


class Bars(Progress):
    """Rich progress bars on stderr (a terminal), one per stage, with rate and ETA."""

    silent = False

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            ProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as RichProgress
        from rich.text import Text

        class Rate(ProgressColumn):
            def render(self, task: Any) -> Text:
                return Text(f"{rate_text(task.speed)}/s" if task.speed else "")

        self._rich = RichProgress(
            TextColumn("{task.description:<10}"),
            BarColumn(bar_width=20),
            MofNCompleteColumn(),
            TextColumn("{task.fields[unit]}"),
            Rate(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[overall]}"),
            TextColumn("{task.fields[info]}"),
            console=Console(stderr=True),
            transient=True,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self._tasks: dict[str, Any] = {}
        self._stdout_tty = sys.stdout.isatty()

    def __enter__(self) -> Bars:
        self._rich.start()
        _live.append(self._rich.console)
        return self

    def __exit__(self, *exc: object) -> None:
        self._rich.stop()
        _live.remove(self._rich.console)

    def start(self, label: str) -> None:
        super().start(label)
        for task in self._tasks.values():
            self._rich.remove_task(task)
        self._tasks.clear()

    def __call__(self, stage: str, done: int, total: int | None) -> None:
        if stage not in self._tasks:  # (the longer notes go to log lines only: a bar must fit 80 columns)
            self._tasks[stage] = self._rich.add_task(stage, total=total, unit=UNITS.get(stage, ""), info="", overall="")
        self._rich.update(self._tasks[stage], completed=done, total=total)
        if self._plan is not None:
            task = next(t for t in self._rich.tasks if t.id == self._tasks[stage])
            if task.finished:
                self._plan.finished(stage, task.elapsed or 0.0)
                self._rich.update(self._tasks[stage], overall="")
            elif task.time_remaining is not None:
                left = self._plan.left(stage, task.time_remaining)
                if left is not None:
                    self._rich.update(self._tasks[stage], overall=f"all {duration(left)}")

    def describe(self, stage: str, text: str) -> None:
        if stage in self._tasks:
            self._rich.update(self._tasks[stage], info=text)

    def line(self, text: str) -> None:
        if self._stdout_tty:  # the same terminal: print above the bars, where it stays
            self._rich.console.print(text, markup=False, highlight=False, soft_wrap=True)
        else:  # stdout is a file or a pipe: the bars are elsewhere
            echo(text)


class LogLines(Progress):
    """Plain progress lines on stderr for logs: per stage every 30 s, or at a new 10 % step when 5 s have passed
    since its last line; and one at its end."""

    silent = False

    def __init__(self, every: float = 30.0) -> None:
        self.every = every
        self._state: dict[str, tuple[float, int, float]] = {}  # stage -> (start time, last tenth, last print)
        self._info: dict[str, str] = dict(NOTES)
        self._ended: set[str] = set()
        self._first: dict[str, tuple[float, int]] = {}  # stage -> (time, count) of its first report

    def start(self, label: str) -> None:
        super().start(label)
        self._state.clear()
        self._first.clear()
        self._info = dict(NOTES)
        self._ended: set[str] = set()
        self._origin = time.monotonic()  # a stage's clock starts when the one before it ended

    def __call__(self, stage: str, done: int, total: int | None) -> None:
        if stage in self._ended:
            return
        now = time.monotonic()
        origin = getattr(self, "_origin", now)
        began, tenth, printed = self._state.setdefault(stage, (origin, 0, origin))
        first_time, first_done = self._first.setdefault(stage, (now, done))
        new_tenth = 10 * done // total if total else tenth
        finished = total is not None and done >= total
        due = now - printed >= self.every or (new_tenth > tenth and now - printed >= self.every / 6)
        if not finished and not due:
            return
        self._state[stage] = (began, new_tenth, now)
        elapsed = now - began
        unit = UNITS.get(stage, "")
        text = f"{self.label}: {stage} {done}" + (f"/{total}" if total else "") + f" {unit}"
        if total:
            text += f" ({100 * done / total:.0f} %)"
        if done and elapsed > 0:
            text += f", {rate_text(done / elapsed)} {unit}/s"
        if finished:
            text += f", done in {duration(elapsed)}"
            self._origin = now
            self._ended.add(stage)
            if self._plan is not None:
                self._plan.finished(stage, elapsed)
        elif done and elapsed > 0 and total:
            # the pace since the stage's first report: its first item carries the warm-up (a window waits for a
            # whole backbone batch of frames), which would make the time left look longer
            since, items = (now - first_time, done - first_done) if done > first_done else (elapsed, done)
            stage_left = since * (total - done) / items
            text += f", about {duration(stage_left)} left"
            every = self._plan.left(stage, stage_left) if self._plan is not None else None
            if every is not None and every > stage_left + 0.5:
                text += f" (all passes: about {duration(every)})"
        if self._info.get(stage):
            text += f" ({self._info.pop(stage)})"  # a stage's note once, on its first line
        note(text)

    def describe(self, stage: str, text: str) -> None:
        self._info[stage] = text


def progress_for(quiet: bool) -> Progress:
    """Bars on a terminal, plain lines otherwise, nothing with --quiet."""
    if quiet:
        return Progress()
    return Bars() if sys.stderr.isatty() else LogLines()


class TrainView:
    """Training progress: a bar with loss, steps/s and ETA on a terminal, else a line per metrics record."""

    def __init__(self, enabled: bool, label: str = "training", steps: int | None = None) -> None:
        self.rank = int(os.environ.get("RANK", "0"))
        self.enabled = enabled and self.rank == 0
        self._progress = progress_for(not self.enabled)
        self._progress.start(label)  # names the lines; the first stage's clock starts now
        self._steps = steps  # the run's, where this call stops before them (--until)
        self._stop = 0
        self._began = 0.0
        self._first = 0

    def __enter__(self) -> TrainView:
        self._progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.__exit__(*exc)

    def warn(self, message: str) -> None:
        if self.rank == 0 and self.enabled:  # -q: errors only
            warn(message)

    def note(self, message: str) -> None:
        if self.enabled:
            note(message)

    def stage(self, name: str, done: int, total: int | None) -> None:
        self._progress(name, done, total)

    def start(self, step: int, stop: int, clips: int, skipped: int) -> None:
        self._stop, self._first, self._began = stop, step, time.monotonic()
        if self.enabled:
            until = f" of {self._steps} (--until {stop})" if self._steps and self._steps > stop else ""
            note(f"training on {clips} clips ({skipped} skipped), steps {step + 1}..{stop}{until}")
        self._progress.start("train")
        if isinstance(self._progress, Bars):
            self._progress("train", step, stop)

    def step(self, step: int, record: dict[str, Any] | None) -> None:
        if isinstance(self._progress, Bars):
            self._progress("train", step, self._stop)
        if record is None or not self.enabled:
            return
        done = step - self._first
        left = (time.monotonic() - self._began) * (self._stop - step) / done if done else 0.0
        text = (
            f"loss {record['loss']:.4f} (semantic {record['semantic_pos']:.4f} + {record['semantic_neg']:.4f}, "
            f"motion {record['motion']:.4f})"
        )
        if isinstance(self._progress, Bars):
            self._progress.describe("train", text)
        else:
            total = self._steps or self._stop
            until = f" to step {self._stop}" if total > self._stop else ""
            note(f"step {step}/{total} {text}, {record['steps_per_s']:.3g} steps/s, about {duration(left)} left{until}")

    def checkpoint(self, path: Path, step: int) -> None:
        return None

    def estimate(self, estimate: Any, start: int, stop: int) -> None:
        if self.enabled:
            from bavos.models.costs import gigabytes

            note(
                f"estimated {duration(estimate.seconds['step'])} a step, {duration(estimate.seconds['run'])} for "
                f"steps {start + 1}..{stop}, peak memory {gigabytes(estimate.peak_bytes)}"
            )


class Results:
    """Per-input results: a line of text, or with --json exactly one JSON line per input on stdout."""

    def __init__(self, as_json: bool, quiet: bool, progress: Progress | None = None) -> None:
        self.as_json, self.quiet = as_json, quiet
        self.progress = progress or Progress()
        self.reported: set[Path] = set()  # the inputs given their line

    def not_run_rest(self, paths: list[Path], why: str) -> None:
        """Each of ``paths`` not given its line yet is not run, for ``why``."""
        for path in paths:
            if path not in self.reported:
                self.not_run(path, why)

    def _emit(
        self,
        path: Path,
        status: str,
        output: Path | str | None,
        frames: int | None,
        objects: int | None,
        seconds: float,
        error: str | None,
        why: str = "",
        warnings: list[str] | None = None,
    ) -> None:
        self.reported.add(path)
        if self.as_json:
            import json

            line = json.dumps(
                {
                    "input": str(path),
                    "status": status,
                    "output": None if output is None else str(output),
                    "frames": frames,
                    "objects": objects,
                    "seconds": round(seconds, 3),
                    "error": error,
                    "warnings": warnings or [],
                }
            )
            echo(line)
        elif not self.quiet and status not in ("failed", "interrupted", "not-run"):
            what = f"skipped, {why}" if status == "skipped" else f"{count(frames, 'frame')}, {count(objects, 'object')}"
            self.progress.line(f"{output}: {what} ({seconds:.1f} s)")

    def ok(self, path: Path, summary: dict[str, Any], seconds: float) -> None:
        """An input done: its warnings about the input (summary.json's ``warnings``) on stderr, then its line."""
        warnings = list(summary.get("warnings") or [])
        if not self.quiet:
            from bavos.io.files import display_name  # the standard library only: --help stays fast

            for message in warnings:
                warn(f"{display_name(path)}: {message}")
        self._emit(path, "ok", summary["output"], summary["frames"], summary["objects"], seconds, None, "", warnings)
        hint = no_object_hint(summary)
        if hint and not self.quiet and not self.as_json:
            note(hint)

    def failed(self, path: Path, error: str, seconds: float) -> None:
        """An input that failed. It, and one stopped or never run, has no result: its "output" is null, as its frames
        and objects are."""
        self._emit(path, "failed", None, None, None, seconds, error)

    def interrupted(self, path: Path, seconds: float, why: str = "interrupted") -> None:
        """An input stopped by Ctrl-C (``why`` "interrupted") or SIGTERM ("terminated"): status "interrupted"."""
        self._emit(path, "interrupted", None, None, None, seconds, why)

    def not_run(self, path: Path, why: str) -> None:
        """An input never started, for what stopped the run before it (a refusal, ``--fail-fast``, a signal):
        status "not-run", ``why`` its error."""
        self._emit(path, "not-run", None, None, None, 0.0, why)

    def skipped(self, path: Path, folder: Path, summary: dict[str, Any]) -> None:
        self._emit(
            path,
            "skipped",
            folder,
            summary.get("frames"),
            summary.get("objects"),
            0.0,
            None,
            "finished output with the same settings",
            summary.get("warnings"),
        )


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
    if to_stderr:
        console.print(table)
        return
    with _to_stdout():
        console.print(table)
