"""Many inputs per call: output folder names, finished outputs and their settings, inputs checked before the model.

Used by ``bavos segment``; nothing here touches a model.
"""

from __future__ import annotations

from pathlib import Path

from bavos.config import ModelConfig
from bavos.errors import OutputError
from bavos.pipeline.outputs import WEIGHT_FILES, other_place, read_summary, source_stamp, weights_stamp
from bavos.pipeline.segment import output_name, source_id


def finished_source(folder: Path) -> str | None:
    """The ``source`` of a finished output folder (one with summary.json), else None."""
    summary = read_summary(folder)
    return None if summary is None else str(summary.get("source", ""))


def plan_outputs(inputs: list[Path], output: Path) -> list[tuple[Path, str]]:
    """(input, output folder name) for each distinct input, in the order given.

    The name is the stem (``output_name``) unless another input already holds it, one before it in the order of
    their absolute paths (not the order given: array tasks that list the inputs in different orders name them
    alike) or a finished output of a different source in ``output``; then it is ``<stem>-<first 8 hex digits of the
    SHA-1 of the input's absolute path>``. The rule is deterministic, so a re-run finds the same folders. An input
    given twice is planned once.
    """
    first: dict[str, Path] = {}
    for path in inputs:
        first.setdefault(source_id(path), path)
    distinct = list(first.items())
    owners: dict[str, str] = {}
    names = {}
    for src, path in sorted(distinct):
        name = output_name(path)
        owner = owners.get(name) or finished_source(Path(output) / name)
        if owner and owner != src:
            name = other_place(name, src)
        owners.setdefault(name, src)
        names[src] = name
    return [(path, names[src]) for src, path in distinct]


_OPTIONS = {"save_hierarchy": "--hierarchy", "overlay_alpha": "overlay opacity"}


def _shown(value: object) -> str:
    if value is None:
        return "default"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, list | tuple):
        return " ".join(str(v) for v in value)
    return str(value)


def stale_reason(summary: dict, settings: dict) -> str | None:
    """Why a finished output (its summary) does not hold the result asked for with ``settings``; None if it does.

    ``settings`` is ``config.result_settings(...)``: options that do not change the result (``--batch-size``,
    ``--attention-cache``, ``--device``, ``--quiet``, ``--json``, ...) are not in it.
    """
    old = summary.get("settings")
    if not isinstance(old, dict):
        return "it was made by an older bavos that did not record its settings"
    if old.get("level") is not None and old.get("level") == summary.get("converged_level"):
        old = {**old, "level": None}  # --level at the converged level is the default's cut (a page's save asks so)
    changed = [key for key in settings if old.get(key) != settings[key]]
    if not changed:
        return None
    parts = [
        f"{_OPTIONS.get(k, '--' + k.replace('_', '-'))} {_shown(old.get(k))} (now {_shown(settings[k])})"
        for k in changed[:4]
    ]
    more = f" and {len(changed) - 4} more" if len(changed) > 4 else ""
    return f"it was made with other settings: {', '.join(parts)}{more}"


def changed_reason(summary: dict, path: Path) -> str | None:
    """Why the source ``path`` is not what a finished output (its summary) was made from, or None: its size or
    modification time differ (``outputs.source_stamp``; results made before bavos recorded them are not checked)."""
    old = summary.get("source_stamp")
    if old is None or old == source_stamp(path):
        return None
    return "its source changed since it was made (its size or modification time)"


def weights_reason(summary: dict, model: ModelConfig) -> str | None:
    """Why the weights files named by ``model`` are not those a finished output (its summary) was made with, or None:
    a file's size or modification time differ (``outputs.weights_stamp``; results made before bavos recorded them
    are not checked)."""
    old = summary.get("weights_stamp")
    if not isinstance(old, dict):
        return None
    now = weights_stamp(model)
    changed = [option for option in WEIGHT_FILES if old.get(option) != now.get(option)]
    if not changed:
        return None
    option = changed[0]
    return (
        f"its --{option.replace('_', '-')} {getattr(model, option)} changed since it was made (its size or "
        "modification time)"
    )


def damage_reason(folder: Path, summary: dict) -> str | None:
    """Why a finished output (its folder and summary) no longer holds its whole result, or None: a file bavos
    recorded there (``.bavos-files``) missing or emptied, a mask missing, a file its settings wrote missing or empty, a
    hierarchy.npz cut short (a disk that filled, a copy or sync that stopped). Cheap: it lists and sizes files, and
    reads no image."""
    import zipfile

    from bavos.pipeline.outputs import recorded_files

    folder = Path(folder)
    for name, size in sorted((recorded_files(folder) or {}).items()):  # every file bavos wrote there, by name
        path = folder / name
        if not path.is_file():
            return f"its {name} is missing"
        if size and path.stat().st_size == 0:
            return f"its {name} is empty"
    frames = summary.get("frames")
    masks = sum(1 for p in (folder / "masks").glob("*.png")) if (folder / "masks").is_dir() else 0
    if isinstance(frames, int) and masks != frames:
        return f"its masks/ holds {masks} of its {frames} masks"
    settings = summary.get("settings") or {}
    wanted = (
        ["preview.png", "hierarchy.png"]
        + ["overlay.mp4"] * bool(settings.get("overlay", True))
        + ["hierarchy.npz"] * bool(settings.get("save_hierarchy", True))
    )
    for name in wanted:
        path = folder / name
        if not path.is_file() or path.stat().st_size == 0:
            return f"its {name} is missing or empty"
    npz = folder / "hierarchy.npz"
    if "hierarchy.npz" in wanted and not zipfile.is_zipfile(npz):
        return "its hierarchy.npz is cut short"
    return None


def check_input(path: Path, start: str | None, end: str | None, fps: float) -> str | None:
    """None when ``path`` is a video or frame folder bavos can read (its first frame decodes) with frames in the
    range ``start``..``end`` (a folder's times at ``fps``), else why not."""
    from bavos.errors import InputError
    from bavos.io.video import FrameRange, VideoSource

    try:
        VideoSource(path, FrameRange.parse(start, end), fps)
    except InputError as e:
        return str(e)
    return None


def is_finished(folder: Path) -> bool:
    """An output folder is finished when its summary.json, written last before the atomic rename, is there."""
    return (Path(folder) / "summary.json").is_file()


def check_destinations(
    jobs: list[tuple[Path, str]], output: Path, inputs: list[Path] | None = None
) -> list[tuple[Path, str, str]]:
    """(input, output name, why) for each planned result folder ``output/<name>`` that cannot be written; empty when
    all can. With ``inputs``: whether it is, holds or lies inside one of them (``outputs.InputPlaces``, before
    anything is created); without: what is there already (``outputs.check_contents``)."""
    from bavos.pipeline.outputs import InputPlaces, check_contents

    places = InputPlaces(inputs) if inputs is not None else None
    problems = []
    for path, name in jobs:
        try:
            if places is not None:
                places.check(Path(output) / name)
            else:
                check_contents(Path(output) / name)
        except OutputError as e:
            problems.append((path, name, str(e)))
    return problems
