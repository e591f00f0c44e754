"""`bavos recut`: another cut of a finished result, without the model."""

from __future__ import annotations

import traceback
from pathlib import Path
from typing import Annotated

import typer

from bavos.cli.app import app, debug, import_torch, usage_error
from bavos.cli.help import Command
from bavos.cli.options import field_default, option
from bavos.cli.output import count, error, progress_for, say_swept, warn
from bavos.config import RUN
from bavos.config import SegmentConfig as S
from bavos.errors import BavosError, ConfigError, plain_os_error


@app.command(cls=Command)
def recut(
    folders: Annotated[
        list[Path],
        typer.Argument(metavar="RESULT", help="Output folders of bavos segment (OUT/<name>).", show_default=False),
    ],
    level: Annotated[int | None, option(S, "level")] = field_default(S, "level"),
    max_objects: Annotated[int, option(S, "max_objects")] = field_default(S, "max_objects"),
    max_export_files: Annotated[int | None, option(S, "max_export_files", shown="the result's own")] = None,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress and no result lines.", rich_help_panel=RUN)
    ] = False,
) -> int:
    """Cut a result's hierarchy at another level or cap, without the model: masks, overlay, pictures,
    hierarchy.npz, exports and summary are rewritten as bavos segment would write them with these options (the
    source video is read again for the frames)."""
    try:
        limit = S.max_export_files if max_export_files is None else max_export_files
        S(level=level, max_objects=max_objects, max_export_files=limit)  # segment's rules for them, and its words
    except ConfigError as e:
        usage_error(str(e), "recut")
    import_torch()
    from bavos.io.owners import sweep
    from bavos.pipeline.recut import recut_folder

    code = 0
    with progress_for(quiet) as progress:
        for parent in dict.fromkeys(f.absolute().parent for f in folders):  # each once, however many results it holds
            removed = sweep(parent)  # what killed runs left beside the results
            if not quiet:
                say_swept(removed, parent)
        for folder in folders:
            progress.start(folder.name)
            try:
                summary = recut_folder(folder, level, max_objects, progress, max_export_files)
            except (BavosError, OSError) as e:
                if debug():
                    traceback.print_exc()  # BAVOS_DEBUG=1: the traceback, as segment shows it
                message = plain_os_error(e) if isinstance(e, OSError) else str(e)
                error(f"{folder}: {message}" if str(folder) not in message else message)
                code = max(code, getattr(e, "exit_code", 1))
                continue
            if not quiet:
                for message in summary["warnings"]:  # about the input and the cut, as segment says them
                    warn(f"{folder}: {message}")
                progress.line(
                    f"{folder}: level {summary['level']}, {count(summary['objects'], 'object')} "
                    f"({summary['timings']['recut']:.1f} s)"
                )
    return code
