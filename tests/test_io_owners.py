import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bavos.io import owners
from bavos.io.files import hidden_sibling
from bavos.io.owners import Heartbeat, is_left_over, output_lock, owner_tag, sweep


def dead_pid() -> int:
    """The id of a process that has ended."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_the_tag_names_this_machine_this_process_and_its_start() -> None:
    host, pid, start = owner_tag().split("~")
    assert int(pid) == os.getpid() and host
    if Path("/proc/self/stat").exists():
        assert int(start) > 0  # a later process with the same id has another start: not taken for this one
    assert hidden_sibling(Path("out/clip"), "tmp").name == f".clip.bavos-tmp-{owner_tag()}"


def test_a_dead_process_s_entries_are_swept_and_nothing_else(tmp_path: Path) -> None:
    host, _, start = owner_tag().split("~")
    dead = f"{host}~{dead_pid()}~{start}"
    reused = f"{host}~{os.getpid()}~{int(start) + 1}"  # this process's id, another start: a dead process
    left = [
        tmp_path / f".clip.bavos-tmp-{dead}",
        tmp_path / f".bavos-work-{dead}-k2j4_x9a",
        tmp_path / f".clip.bavos-old-{reused}",
        tmp_path / f".summary.json.bavos-tmp-140233-{dead}",
    ]
    kept = [
        tmp_path / f".clip.bavos-tmp-{owner_tag()}",
        tmp_path / f".bavos-work-{owner_tag()}-abc",
        tmp_path / ".clip.bavos-tmp-mine",
        tmp_path / ".config",
        tmp_path / "clip",
    ]
    for path in left + kept:
        if "summary" in path.name:
            path.write_bytes(b"x" * 1000)
        else:
            path.mkdir()
            (path / "queries.f32").write_bytes(b"x" * 5000)
    removed = sweep(tmp_path)
    assert sorted(r.path for r in removed) == sorted(left)
    assert sum(r.bytes for r in removed) == 3 * 5000 + 1000
    assert sorted(tmp_path.iterdir()) == sorted(kept)


def test_a_live_run_in_another_pid_namespace_is_not_swept(tmp_path: Path) -> None:
    """A field report: a run inside ``unshare --pid`` (a container sharing the host's name) took a live run's working
    folders for a dead process's, its process id unknown here, and removed them. Another namespace is another
    machine: alive while touched."""
    from bavos.io.owners import STALE_SECONDS, live_entries

    host, _, start = owner_tag().split("~")
    if "." not in host:
        pytest.skip("no PID namespace to read here (/proc/self/ns/pid)")
    name, _, space = host.partition(".")
    other = f"{name}.{int(space, 16) + 1:x}~{dead_pid()}~{start}"  # a process id this namespace does not know
    live, old = tmp_path / f".clip.bavos-tmp-{other}", tmp_path / f".bavos-work-{other}-abc"
    for path in (live, old):
        path.mkdir()
    then = time.time() - STALE_SECONDS - 60
    os.utime(old, (then, then))
    assert [r.path for r in sweep(tmp_path)] == [old]
    assert live_entries(tmp_path) == [f"process {other.split('~')[1]} on {name} (in another PID namespace)"]


def test_a_result_a_killed_run_was_replacing_is_put_back(tmp_path: Path) -> None:
    """Killed between publishing's two renames (the old result set aside, the new one not yet in place), a run left
    the old result only under its hidden name: the next sweep puts it back (it removed it); where the new result
    made it into place, the old one goes."""
    host, _, start = owner_tag().split("~")
    dead = f"{host}~{dead_pid()}~{start}"
    aside, new = tmp_path / f".clip.bavos-old-{dead}", tmp_path / f".clip.bavos-tmp-{dead}"
    for folder in (aside, new):
        (folder / "masks").mkdir(parents=True)
        (folder / "summary.json").write_text(folder.name)
    replaced = tmp_path / f".done.bavos-old-{dead}"
    replaced.mkdir()
    (tmp_path / "done").mkdir()  # its new result is in place
    swept = sweep(tmp_path)
    assert sorted((r.path.name, r.restored) for r in swept) == sorted(
        [("clip", True), (new.name, False), (replaced.name, False)]
    )
    assert (tmp_path / "clip" / "summary.json").read_text() == aside.name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip", "done"]


def test_another_machine_s_entries_live_while_touched(tmp_path: Path) -> None:
    entry = tmp_path / ".clip.bavos-tmp-node042~1234~999"
    entry.mkdir()
    now = time.time()
    assert not is_left_over(entry, now)  # a run on another node, writing: kept
    assert is_left_over(entry, now + owners.STALE_SECONDS + 1)  # untouched past the heartbeat's reach: left over


def test_the_heartbeat_touches_what_it_holds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(owners, "HEARTBEAT_SECONDS", 0.05)
    monkeypatch.setattr(Heartbeat, "_thread", None)
    entry = tmp_path / "work"
    entry.mkdir()
    os.utime(entry, (1, 1))
    Heartbeat.add(entry)
    try:
        deadline = time.monotonic() + 10
        while entry.stat().st_mtime < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        Heartbeat.remove(entry)
    assert entry.stat().st_mtime > time.time() - 60


def test_entries_of_bavos_before_owner_tags_go_after_a_day(tmp_path: Path) -> None:
    entry = tmp_path / f".clip.bavos-tmp-{dead_pid()}"
    entry.mkdir()
    assert not is_left_over(entry)
    os.utime(entry, (time.time() - owners.OLD_STALE_SECONDS - 60,) * 2)
    assert is_left_over(entry)


def test_the_lock_is_held_by_one_process_at_a_time(tmp_path: Path) -> None:
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from bavos.io.owners import output_lock\n"
            f"with output_lock(Path({str(tmp_path)!r})):\n"
            "    print('held', flush=True); time.sleep(1.0)\n"
            f"    Path({str(tmp_path / 'done')!r}).write_text('x')\n"
            "sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout.readline() == "held\n"
        with output_lock(tmp_path):
            assert (tmp_path / "done").exists()  # only once the other process let go
    finally:
        child.communicate("", timeout=30)
    assert not (tmp_path / owners.LOCK_NAME).exists()  # present only while held


def test_a_result_whose_name_was_cut_is_put_back_under_its_whole_name(tmp_path: Path) -> None:
    """A result being replaced waits under a hidden name holding its own cut to fit (files.hidden_sibling); a run
    killed then left it, and the sweep put it back under the cut name."""
    name = "漢" * 80  # 240 bytes: the hidden name holds 40 of its characters
    final = tmp_path / name
    old = hidden_sibling(final, "old")
    assert len(os.fsencode(old.name)) <= 255
    host, _, start = owner_tag().split("~")
    left = old.with_name(old.name.replace(owner_tag(), f"{host}~{dead_pid()}~{start}"))
    left.mkdir()
    (left / "summary.json").write_text(json.dumps({"output": str(final)}), encoding="utf-8")
    (restored,) = sweep(tmp_path)
    assert restored.restored and restored.path == final and (final / "summary.json").is_file()
    short = tmp_path / f".clip.bavos-old-{host}~{dead_pid()}~{start}"  # a name not cut: its own, whatever recorded
    short.mkdir()
    (short / "summary.json").write_text(json.dumps({"output": str(tmp_path / "clip-renamed")}), encoding="utf-8")
    sweep(tmp_path)
    assert (tmp_path / "clip").is_dir() and not (tmp_path / "clip-renamed").exists()
