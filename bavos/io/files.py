"""Atomic file writes: a temporary name beside the target, renamed over it only when complete.

A reader never sees a half-written file; on any failure the temporary file is removed and an OSError becomes
one clear BavosError naming the file.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bavos.errors import BavosError, DestinationError, OutputError, plain_os_error
from bavos.io.owners import HIDDEN_NAME_BYTES, owner_tag


def display_name(path: Path) -> str:
    """The name of an input as a user knows it: "." is named by its folder."""
    return Path(os.path.abspath(path)).name or str(path)


def plain_name(name: str, what: str) -> str:
    """``name`` as a result folder's name: one path component, not hidden, no way out of its folder.

    Raises:
        UsageError: it is not such a name (``what`` says where it was given).
    """
    from bavos.errors import UsageError

    name = name.strip()
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name or name.startswith("."):
        raise UsageError(f"{what} {name!r}: a plain folder name is needed (no slashes, not hidden)")
    return name


def hidden_sibling(path: Path, tag: str) -> Path:
    """A hidden name beside ``path`` for bavos's own temporary use: ``.<name>.bavos-<tag>-<owner>`` (``owner_tag``:
    machine, process and its start, so that a later run can tell a dead process's leftovers, ``owners.sweep``), the
    name cut to ``HIDDEN_NAME_BYTES`` bytes so that the longest names a file system allows still leave room (255
    bytes on most; a name of 80 CJK characters is 240)."""
    path = Path(path)
    return path.with_name(f".{cut_name(path.name)}.bavos-{tag}-{owner_tag()}")


def cut_name(name: str, limit: int = HIDDEN_NAME_BYTES) -> str:
    """``name`` cut to at most ``limit`` bytes, whole characters only."""
    while len(os.fsencode(name)) > limit:
        name = name[:-1]
    return name


@contextmanager
def atomic_path(path: Path, error: type[BavosError] = OutputError) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path``, on failure it is removed.

    Raises:
        error: an OSError while writing or renaming, as "cannot write PATH: reason".
    """
    path = Path(path)
    tmp = hidden_sibling(path, f"tmp-{threading.get_ident()}")
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as e:
        raise error(f"cannot write {path}: {plain_os_error(e, '')}") from e
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: Path, payload: Any, indent: int | None = None) -> None:
    """Write ``payload`` as JSON atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=indent) + "\n")


def prepare_output(output: Path) -> None:
    """Create the output folder and check that files can be created in it (before any long computation)."""
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise DestinationError(f"{output}: is a file, not a folder; -o names the folder that receives the results")
    if output.is_symlink() and not output.exists():
        raise DestinationError(
            f"{output}: a link to {os.readlink(output)}, which is not there; make that folder or give another -o"
        )
    # named as bavos's working entries are, so that one left by a process killed here is swept (a bare process
    # number collided: each container's bavos can be process 1)
    probe = output / f".bavos-work-{owner_tag()}-probe"
    try:
        output.mkdir(parents=True, exist_ok=True)
        probe.mkdir()
        probe.rmdir()
    except OSError as e:
        raise OutputError(f"the output folder is not writable: {plain_os_error(e, output)}") from e
