"""A training run's folder: checkpoints, metrics.jsonl, config.json and data.json.

Only the writer (process 0) writes; every process reads. Checkpoints are bavos checkpoints (what
``bavos segment --checkpoint`` loads) with the training state added::

    {"model", "config": {"ModelConfig", "TrainConfig"}, "version", "optimizer", "scheduler", "step", "seed"}

plus ``"scaler"`` (the loss scale) for fp16 runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any, NoReturn

import torch
from torch import nn

from bavos.config import RUNTIME_FIELDS
from bavos.errors import (
    CheckpointError,
    ConfigError,
    DestinationError,
    InputError,
    OutputError,
    UsageError,
    plain_os_error,
)
from bavos.io.files import atomic_path, prepare_output, write_json
from bavos.io.owners import Heartbeat, live_entries, owner_tag, sweep
from bavos.io.video import source_stamp
from bavos.models.backbone import check_state_keys
from bavos.models.correlator import read_checkpoint, save_checkpoint
from bavos.training.clips import CachedClip, Skipped

LAST = "last.pt"
METRICS = "metrics.jsonl"
CONFIG = "config.json"
DATA = "data.json"  # the clips a run trained on
_CACHED = re.compile(r"^(\.|[0-9a-f]{40}(\.|$))")  # a cached clip's files (training.clips.cache_key), or hidden


def _own_files(path: Path) -> set[str]:
    """The entries of a folder that a run wrote before its first checkpoint: config.json when it holds a run's
    settings, then data.json and metrics.jsonl; cache/ when it holds only cached clips."""
    own = {CONFIG, DATA, METRICS} if _holds_settings(path) else set()
    cache = path / "cache"
    with contextlib.suppress(OSError):
        if cache.is_dir() and all(_CACHED.match(e.name) for e in os.scandir(cache)):
            own.add("cache")
    return own


def _theirs(path: Path) -> list[str]:
    """The entries of a run folder that are not a run's own files (one without a checkpoint: checked before)."""
    if not path.is_dir():
        return []
    own = _own_files(path)
    return sorted(e.name for e in path.iterdir() if not e.name.startswith(".") and e.name not in own)


def _nothing_to_resume(path: Path) -> NoReturn:
    """Raises the refusal of --resume where ``path`` holds no run: ConfigError (start it without --resume), or
    DestinationError where it holds files bavos did not write (starting there is refused too)."""
    theirs = _theirs(path)
    if theirs:
        raise DestinationError(
            f"{path}: nothing to resume ({LAST} not found), and it holds files bavos did not write "
            f"({', '.join(theirs[:3])}): choose another -o"
        )
    raise ConfigError(f"{path}: nothing to resume ({LAST} not found); start the run without --resume")


def read_run_config(path: Path) -> dict[str, Any]:
    """The resolved configs of the run in ``path`` ({"ModelConfig": ..., "TrainConfig": ...}): those saved in
    ``last.pt``, or in ``config.json`` for a run that stopped before its first checkpoint.

    Raises:
        ConfigError: no run there. CheckpointError: the file holds no bavos training configs.
    """
    last, saved = Path(path) / LAST, Path(path) / CONFIG
    if last.is_file():
        config = read_last(last).get("config")
        where = last
    elif saved.is_file():
        try:
            config = json.loads(saved.read_text())
        except (OSError, ValueError) as e:
            raise CheckpointError(f"{saved}: unreadable ({e}); start the run again without --resume") from e
        where = saved
    else:
        _nothing_to_resume(Path(path))
    if not isinstance(config, dict) or "TrainConfig" not in config:
        raise CheckpointError(f"{where}: not a bavos training run's settings (no TrainConfig in it)")
    return config


def read_last(last: Path) -> dict[str, Any]:
    """A run's ``last.pt``; a damaged one (a copy or a disk that failed: bavos writes it whole or not at all) is an
    error that says how to go on: from the newest numbered checkpoint, or from step 0.

    Raises:
        CheckpointError: the file cannot be read.
    """
    try:
        return read_checkpoint(last)
    except CheckpointError as e:
        reason = str(e).removeprefix(f"{last}: ").removeprefix("not a checkpoint bavos can load: ")
        reason = reason.removesuffix("; fetch it again")
        if not _holds_settings(last.parent):  # not a run bavos wrote: the file is not bavos's to have removed
            raise CheckpointError(
                f"{last}: not a checkpoint bavos can load ({reason}), and {last.parent} holds no bavos run "
                f"({CONFIG} with a run's settings): nothing to resume there"
            ) from e
        steps = sorted(last.parent.glob("step-*.pt"))
        fix = (
            f"copy {steps[-1].name} over it to resume from that step"
            if steps
            else "remove it to start the run again from step 0"
        )
        raise CheckpointError(f"{last}: the run's last checkpoint is damaged ({reason}); {fix}") from e


def _same_file(done: Path, path: Path) -> None:
    """``path`` made to hold ``done``'s bytes, atomically: a hard link, else a copy.

    Raises:
        OutputError: it cannot be written.
    """
    with atomic_path(path) as tmp:
        try:
            os.link(done, tmp)
        except OSError:  # a file system without hard links (some network and FAT ones)
            shutil.copyfile(done, tmp)


def _holds_settings(folder: Path) -> bool:
    """``folder`` holds a config.json with a training run's settings (every run writes one before its first
    checkpoint): what tells a run's ``last.pt`` from a file of the same name put there by hand."""
    try:
        settings = json.loads((folder / CONFIG).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(settings, dict) and "TrainConfig" in settings


def _bytes(clip: Path) -> int | None:
    """A clip's size in bytes (a frame folder's: its frames'), which a copy or a move keeps: how a resumed run tells
    a clip replaced by another of the same length. None when it cannot be read."""
    stamp = source_stamp(clip)
    return None if stamp is None else stamp["bytes"]


def _digest(clip: Path) -> str | None:
    """A digest of a clip's bytes where they tell clips apart, cheap at any size: the first and last 64 kB of a video
    file (its header, index and data at both ends), the first and last 4 kB of each frame of a folder (with its
    name). A copy or a move keeps it; a clip replaced by another of the same size and length does not. None when it
    cannot be read."""
    import hashlib

    from bavos.io.video import list_frames

    h = hashlib.blake2b(digest_size=16)
    try:
        if clip.is_dir():
            files, sampled = list_frames(clip)[0], 4 * 1024  # the frames a clip is decoded from
        else:
            files, sampled = [clip], 64 * 1024
        for f in files:
            with open(f, "rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                h.update(os.fsencode(f.name) + size.to_bytes(8, "little") + fh.read(sampled))
                if size > 2 * sampled:
                    fh.seek(size - sampled)
                h.update(fh.read(sampled))  # the end (or, for a small file, the rest of it)
    except (OSError, InputError):
        return None
    return h.hexdigest()


def _learned(configs: dict[str, Any]) -> dict[str, Any]:
    """The settings that change what is learned (runtime fields left out)."""
    train = {k: v for k, v in configs["TrainConfig"].items() if k not in RUNTIME_FIELDS}
    return {"ModelConfig": configs["ModelConfig"], "TrainConfig": train}


def _record(line: str) -> dict[str, Any] | None:
    """A metrics line, or None for one cut short (a full disk, a kill while writing) or not a record."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) and isinstance(record.get("step"), int) else None


class RunFolder:
    """Checkpoints and logs of one training run."""

    def __init__(self, path: Path, writer: bool) -> None:
        self.path, self.writer = Path(path), writer
        self.last = self.path / LAST
        self.metrics = self.path / METRICS
        self.saved_step = 0
        self.swept: list = []  # what killed runs left in the folder, removed by check
        self._marker: Path | None = None

    def unsaved(self) -> bool:
        """The folder holds a run that stopped before its first checkpoint (killed, or refused for memory): its
        settings (a bavos config.json) and logs but no ``last.pt``; starting it again loses nothing learned."""
        return not self.last.is_file() and CONFIG in self._own_files()

    def _own_files(self) -> set[str]:
        return _own_files(self.path)

    def check(self, resume: bool, clips: Path | None = None) -> None:
        """Refuse to overwrite a run, to start one in a folder holding anything else, to resume one that is not
        there, a folder another live run is writing, or a run folder that is the clips folder or lies inside it;
        check the folder is writable. A run with no checkpoint yet (``unsaved``) may start again, with or
        without --resume. The writer then removes what killed runs left there and marks the folder as its own
        until ``release``.

        Raises:
            DestinationError: the folder holds a run (without --resume), a live run, or files that are not bavos's.
        """
        steps = sorted(self.path.glob("step-*.pt"))
        if steps and not self.last.is_file() and _holds_settings(self.path):  # last.pt removed (or an older bavos)
            raise ConfigError(
                f"{self.path}: holds numbered checkpoints but no {LAST}: copy {steps[-1].name} to {LAST} to resume "
                "from its step (--resume), or choose another -o"
            )
        unsaved = self.unsaved()
        if resume and not self.last.is_file() and not unsaved:
            _nothing_to_resume(self.path)
        if not resume and self.last.is_file() and _holds_settings(self.path):  # else last.pt is not bavos's
            raise DestinationError(
                f"{self.path}: already holds a training run; continue it with --resume or choose another -o"
            )
        if clips is not None and self.path.resolve().is_relative_to(Path(clips).resolve()):
            raise DestinationError(
                f"{self.path}: the run folder would lie inside the clips folder {clips}; choose an -o outside it"
            )
        if not resume:
            theirs = _theirs(self.path)
            if theirs:
                raise DestinationError(
                    f"{self.path}: holds files bavos did not write ({', '.join(theirs[:3])}); a "
                    "new run needs a new or empty folder: choose another -o"
                )
        if self.writer:
            prepare_output(self.path)
            self.swept = sweep(self.path)
            live = live_entries(self.path)
            if live:
                raise DestinationError(
                    f"{self.path}: another training run is writing this folder ({live[0]}); "
                    "wait for it to end or choose another -o"
                )
            self._marker = self.path / f".bavos-work-{owner_tag()}-train"
            self._marker.touch()
            Heartbeat.add(self._marker)

    def release(self) -> None:
        """The folder is no longer this process's (``check`` marked it)."""
        if self._marker is not None:
            Heartbeat.remove(self._marker)
            self._marker.unlink(missing_ok=True)
            self._marker = None

    def restore(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        configs: dict[str, Any],
        scaler: torch.amp.GradScaler | None = None,
    ) -> int:
        """Load ``last.pt`` into the model, optimizer and schedule; returns the step it was written at (0 for a run
        with no checkpoint yet: it starts again)."""
        if not self.last.is_file():
            return 0
        obj = read_last(self.last)
        missing = [k for k in ("model", "config", "optimizer", "scheduler", "step") if k not in obj]
        if missing:
            raise CheckpointError(f"{self.last}: not a resumable bavos training checkpoint (no {', '.join(missing)})")
        if _learned(obj["config"]) != _learned(json.loads(json.dumps(configs))):
            raise ConfigError(
                f"{self.last}: the run was trained with other settings; resume with the run's "
                "settings (see config.json) or start a new run"
            )
        check_state_keys(model, obj["model"], str(self.last), CheckpointError)
        model.load_state_dict(obj["model"], strict=True)
        optimizer.load_state_dict(obj["optimizer"])
        scheduler.load_state_dict(obj["scheduler"])
        if scaler is not None and obj.get("scaler"):
            scaler.load_state_dict(obj["scaler"])
        self.saved_step = int(obj["step"])
        return self.saved_step

    def check_clips(self, root: Path, clips: list[Path], data: list[CachedClip] | None = None) -> None:
        """On resume: ``clips`` (found under ``root``) are the clips the run trained on (its data.json), wherever
        their folder is now, and with ``data`` (the usable ones, decoded) each has the frames it had: the samples of a
        step are drawn from them, so other clips would not continue the run but change it. A run without data.json
        is not checked.

        Raises:
            UsageError: a clip is missing, added, of another length, or of another size in bytes (a clip replaced
                by another of the same length; runs that recorded no sizes are not checked for it).
        """
        try:
            saved = json.loads((self.path / DATA).read_text())
            had = {e["source"]: e["frames"] for e in saved["used"]}
            had |= {e["source"]: None for e in saved["skipped_clips"]}
            sizes = {e["source"]: e.get("bytes") for e in saved["used"]}
            digests = {e["source"]: e.get("digest") for e in saved["used"]}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return
        frames = {c.source: c.frames for c in data} if data is not None else {}
        left = dict(had)
        problem = None
        for clip in clips:
            tail = clip.relative_to(root).parts or (clip.name,)
            source = next((s for s in left if Path(s).parts[-len(tail) :] == tail), None)
            if source is None:
                problem = f"{clip} is not one of them"
                break
            was, now = left.pop(source), frames.get(str(clip))
            if data is not None and (was is None) != (now is None):  # left out then and used now, or the other way
                problem = f"{clip} was {'left out' if was is None else 'used'} by the run and is " + (
                    "usable now" if now is not None else "left out now"
                )
                break
            if was is not None and now is not None and was != now:
                problem = f"{clip} has {now} frames, the run's had {was}"
                break
            size, size_now = sizes.get(source), _bytes(clip)
            if size is not None and size != size_now:
                problem = f"{clip} is not the clip the run trained on: {size_now} bytes, the run's had {size}"
                break
            digest = digests.get(source) if data is None else None  # read once, in the check before decoding
            if digest is not None and digest != _digest(clip):  # of the same size: other bytes
                problem = f"{clip} is not the clip the run trained on: its bytes differ (the same size, {size_now})"
                break
        if problem is None and left:
            problem = f"{Path(next(iter(left))).name} is missing: the run trained on {next(iter(left))}"
        if problem is not None:
            raise UsageError(
                f"--resume: {root} does not hold the clips the run trained on ({problem}; {self.path / DATA} "
                "lists them): resume with the run's clips, or start a new run from it with --init-from "
                f"{self.last}"
            )

    def begin(self, configs: dict[str, Any], data: list[CachedClip], skipped: list[Skipped], start: int) -> None:
        """Write config.json and data.json; keep only the metrics lines of steps up to ``start``."""
        if not self.writer:
            return
        write_json(self.path / "config.json", configs, indent=2)
        write_json(
            self.path / DATA,
            {
                "clips": len(data),
                "frames": sum(c.frames for c in data),
                "skipped": len(skipped),
                "used": [
                    {
                        "source": c.source,
                        "frames": c.frames,
                        "bytes": _bytes(Path(c.source)),
                        "digest": _digest(Path(c.source)),
                    }
                    | ({"warnings": list(c.warnings)} if c.warnings else {})
                    for c in data
                ],
                "skipped_clips": [{"source": s.source, "reason": s.reason} for s in skipped],
            },
            indent=2,
        )
        kept = []
        if start and self.metrics.is_file():
            kept = [
                line
                for line in self.metrics.read_text(errors="replace").splitlines()
                if (record := _record(line)) is not None and record["step"] <= start
            ]
        with atomic_path(self.metrics) as tmp:
            tmp.write_text("".join(line + "\n" for line in kept))

    def log(self, record: dict[str, Any]) -> None:
        """Append one line to metrics.jsonl."""
        if self.writer:
            try:
                with open(self.metrics, "a") as f:
                    f.write(json.dumps(record) + "\n")
            except OSError as e:
                raise OutputError(f"cannot write {self.metrics}: {plain_os_error(e, '')}") from e

    def save(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        configs: dict[str, Any],
        step: int,
        numbered: bool,
        scaler: torch.amp.GradScaler | None = None,
    ) -> Path | None:
        """Write ``step-<n>.pt`` (when ``numbered``) and ``last.pt`` atomically; returns ``last.pt``."""
        if not self.writer:
            self.saved_step = step
            return None
        extra = {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "step": step,
            "seed": configs["TrainConfig"]["seed"],
        }
        if scaler is not None and scaler.is_enabled():
            extra["scaler"] = scaler.state_dict()
        # last.pt first: a run stopped (killed, a full disk) between the two files resumes from it; the numbered
        # checkpoint is the same bytes, linked (or copied where links cannot be made)
        save_checkpoint(self.last, model, configs, **extra)
        if numbered:
            _same_file(self.last, self.path / f"step-{step:07d}.pt")
        self.saved_step = step
        return self.last
