"""Who wrote bavos's hidden working entries, whether that process still lives, and a lock for an output folder.

Every hidden entry a run makes beside its outputs (a result being written, ``.<name>.bavos-tmp-<owner>``; a result
being replaced, ``-old-``; the labels and queries of a run, ``.bavos-work-<owner>-*``) carries its process's owner
tag, ``<host>~<pid>~<start>``: the machine (its name and, after a dot, its PID namespace: a container or an
``unshare`` on the same machine numbers its processes apart), the process id and the process's start time (clock
ticks since boot, so that a reused process id is not taken for the dead process). A later run removes what a dead
process left (``sweep``). A process on another machine cannot be asked whether it lives, so its entries count as
alive while it touches them (``Heartbeat``) and as left over once untouched for ``STALE_SECONDS``: a run on a shared
file system (a Slurm array) never removes what a live run on another node is writing.

``output_lock`` makes a short decision (which folder a result goes to, replacing an older one) one process at a
time among every bavos writing into the same folder, on this machine or another (POSIX record locks, which NFS and
Lustre carry); where the file system has no locks, the decision is made without one.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

STALE_SECONDS = 600  # another machine's entry untouched this long is left over (the heartbeat touches it each minute)
HEARTBEAT_SECONDS = 60
LOCK_NAME = ".bavos-lock"
HIDDEN_NAME_BYTES = 120  # of a name in a hidden entry's (files.hidden_sibling): the rest of 255 is for the tags

_TAG = re.compile(r"(?P<host>[A-Za-z0-9.-]{1,40})~(?P<pid>\d+)~(?P<start>\d+)")
# the owner tag ends the name, or a "-" and a suffix does (a work folder's random part; "-download", and the part
# files gdown makes of that name: "<name><8 random characters>.part")
_ENTRY = re.compile(rf"^\.(?:.+\.bavos-(?:tmp|old)(?:-\d+)?|bavos-work)-{_TAG.pattern}(?:-[A-Za-z0-9_]+(?:\.part)?)?$")
# entries of bavos before owner tags, and its output folder's write test, named by the process number alone
_OLD_ENTRY = re.compile(
    r"^\.(?:(?:.+\.bavos-(?:tmp|old)(?:-\d+)?|bavos-write-test)-(?P<pid>\d+)|bavos-work-[A-Za-z0-9_]{8})$"
)
OLD_STALE_SECONDS = 24 * 3600  # entries of bavos before owner tags: no machine named, so only when this old


def _start_ticks(pid: int) -> int:
    """A process's start time in clock ticks since boot (Linux); 0 where it cannot be read."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    return int(stat.rsplit(")", 1)[1].split()[19])  # field 22; the command name before it may hold spaces


def _host() -> str:
    """This machine's name and, after a dot, the inode of this process's PID namespace in hex (where /proc tells
    it): processes in another namespace on the same machine cannot be asked whether they live by their ids."""
    name = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname().split(".")[0])[:30] or "host"
    try:
        return f"{name}.{os.stat('/proc/self/ns/pid').st_ino:x}"
    except OSError:
        return name


def _machine(host: str) -> str:
    """How a tag's host is named to a user: the machine, and "in another PID namespace" where only that differs."""
    name, _, space = host.partition(".")
    mine, _, my_space = _host().partition(".")
    return f"{name} (in another PID namespace)" if name == mine and space != my_space else name


def owner_tag() -> str:
    """This process's tag, ``<host>~<pid>~<start>``."""
    pid = os.getpid()
    return f"{_host()}~{pid}~{_start_ticks(pid)}"


def _pid_lives(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


@dataclass(frozen=True)
class Leftover:
    """A hidden entry of bavos's whose process is gone: removed, or ``restored`` (then ``path`` is where it went)."""

    path: Path
    bytes: int
    restored: bool = False


# a result being replaced (``outputs.publish``): ``.<name>.bavos-old-<owner>``
_REPLACED = re.compile(rf"^\.(?P<name>.+)\.bavos-old(?:-\d+)?-{_TAG.pattern}$")


def _size(path: Path) -> int:
    if path.is_file() or path.is_symlink():
        return path.lstat().st_size
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total


def _untouched(path: Path, now: float) -> float:
    try:
        return now - path.lstat().st_mtime
    except OSError:
        return 0.0


def is_left_over(path: Path, now: float | None = None) -> bool:
    """Whether ``path`` is a hidden entry of bavos's whose process is gone (see the module docstring)."""
    now = time.time() if now is None else now
    name = Path(path).name
    match = _ENTRY.match(name)
    if match is not None:
        if match["host"] != _host():
            return _untouched(Path(path), now) > STALE_SECONDS
        pid = int(match["pid"])
        if pid == os.getpid() and int(match["start"]) == _start_ticks(pid):
            return False
        return not _pid_lives(pid) or int(match["start"]) != _start_ticks(pid)
    old = _OLD_ENTRY.match(name)
    if old is not None:
        return _untouched(Path(path), now) > OLD_STALE_SECONDS and not (old["pid"] and _pid_lives(int(old["pid"])))
    return False


def _replaced_name(entry: Path, name: str) -> str:
    """The name of the result that the hidden ``entry`` held while it was replaced: ``name``, read from the entry's
    own, or where that was cut to fit (``HIDDEN_NAME_BYTES``) the whole name its summary.json records."""
    if len(os.fsencode(name)) <= HIDDEN_NAME_BYTES - 4:  # not cut: the cut leaves fewer than a character's 4 bytes
        return name
    try:
        recorded = Path(json.loads((entry / "summary.json").read_text(encoding="utf-8"))["output"]).name
    except (OSError, ValueError, KeyError, TypeError):
        return name
    return recorded if recorded.startswith(name) else name


def sweep(folder: Path) -> list[Leftover]:
    """Remove from ``folder`` the hidden entries that dead bavos processes left (a run killed by the OOM killer or a
    scheduler's hard limit); return what was removed. A finished result that a run killed between its two renames
    was replacing (its ``-old-`` entry, and nothing at its name) is put back under its name instead. Nothing else is
    touched; a folder that cannot be read gives nothing."""
    removed = []
    try:
        entries = [Path(e.path) for e in os.scandir(folder) if e.name.startswith(".")]
    except OSError:
        return []
    now = time.time()
    for path in entries:
        if not is_left_over(path, now):
            continue
        size = _size(path)
        replaced = _REPLACED.match(path.name)
        name = _replaced_name(path, replaced["name"]) if replaced is not None else ""
        if replaced is not None and not os.path.lexists(Path(folder) / name):
            try:
                path.rename(Path(folder) / name)
            except OSError:
                continue  # another run put it back first, or it cannot be moved: left for the user
            removed.append(Leftover(Path(folder) / name, size, restored=True))
            continue
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        except OSError:
            continue  # another run removed it first, or it cannot be removed: left for the user
        removed.append(Leftover(path, size))
    return removed


def is_working_entry(name: str) -> bool:
    """Whether ``name`` is one of bavos's hidden working entries (a result being written or replaced, a run's
    labels and queries), of any process."""
    return bool(_ENTRY.match(name) or _OLD_ENTRY.match(name))


def live_entries(folder: Path) -> list[str]:
    """Other live processes with hidden working entries in ``folder``: "process 4242 on node1" for each entry."""
    try:
        names = [e.name for e in os.scandir(folder) if e.name.startswith(".")]
    except OSError:
        return []
    mine, live = owner_tag(), []
    for name in names:
        match = _ENTRY.match(name)
        if (
            match
            and f"{match['host']}~{match['pid']}~{match['start']}" != mine
            and not is_left_over(Path(folder) / name)
        ):
            live.append(f"process {match['pid']} on {_machine(match['host'])}")
    return live


class Heartbeat:
    """Touches this process's working entries every ``HEARTBEAT_SECONDS`` so that runs on other machines see them
    as alive (``is_left_over``): one daemon thread per process, while it holds any entry."""

    _changed = threading.Condition()
    _paths: set[Path] = set()
    _thread: threading.Thread | None = None

    @classmethod
    def add(cls, path: Path) -> None:
        with cls._changed:
            cls._paths.add(Path(path))
            if cls._thread is None:
                cls._thread = threading.Thread(target=cls._run, name="bavos-heartbeat", daemon=True)
                cls._thread.start()

    @classmethod
    def remove(cls, path: Path) -> None:
        with cls._changed:
            cls._paths.discard(Path(path))
            cls._changed.notify_all()
            ending = cls._thread if not cls._paths else None
        if ending is not None and ending is not threading.current_thread():
            ending.join(timeout=1.0)  # gone when the last entry is: no thread outlives the work

    @classmethod
    def _forked(cls) -> None:
        """In a forked child: no thread runs there and the parent's entries are the parent's."""
        cls._changed, cls._paths, cls._thread = threading.Condition(), set(), None

    @classmethod
    def _run(cls) -> None:
        while True:
            with cls._changed:
                deadline = time.monotonic() + HEARTBEAT_SECONDS
                while cls._paths and (left := deadline - time.monotonic()) > 0:
                    cls._changed.wait(left)
                if not cls._paths:  # nothing held: the thread ends (a later entry starts another)
                    cls._thread = None
                    return
                paths = list(cls._paths)
            for path in paths:
                with contextlib.suppress(OSError):
                    os.utime(path)


_THREADS = threading.RLock()  # output_lock within this process


_NO_LOCKS = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL, errno.EBADF}


def _locked(path: Path) -> int | None:
    """An open descriptor of the lock file ``path``, locked; None where the file system has no locks."""
    import fcntl

    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX)
        except OSError as e:
            os.close(fd)
            if e.errno in _NO_LOCKS:
                return None
            raise
        try:  # the holder before us may have removed the file we waited on: lock the file the name holds now
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


@contextlib.contextmanager
def output_lock(folder: Path) -> Iterator[None]:
    """Hold ``folder``'s lock (``folder/.bavos-lock``, present only while held) for a short decision. Without POSIX
    locks (no ``fcntl``, or a file system without them) the decision is made unlocked.

    Raises:
        OSError: the lock file cannot be created (the folder is missing or not writable).
    """
    path = Path(folder) / LOCK_NAME
    with _THREADS:  # POSIX locks are a process's: threads of one (two saves at once from Python) wait here
        fd = _locked(path) if os.name == "posix" else None
        try:
            yield
        finally:
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.unlink(path)
                os.close(fd)  # closing releases the lock


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=Heartbeat._forked)
