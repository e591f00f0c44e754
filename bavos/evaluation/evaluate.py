"""Dataset-level evaluation: DAVIS-2017 unsupervised (two named protocols) and FG-ARI / mIoU on instance masks.

Predictions are folders of indexed PNGs, one folder per sequence, named like the ground truth: either
``PREDS/<seq>/00000.png`` (the DAVIS layout) or ``PREDS/<seq>/masks/00000.png`` (what ``bavos segment`` writes).
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from bavos.errors import DestinationError, EvalError, EvalUsageError
from bavos.evaluation.metrics import (
    VOID,
    fg_ari,
    frame_scores,
    match_per_frame,
    match_per_sequence,
    pair_counts,
    statistics,
    video_miou,
)
from bavos.io.files import atomic_path
from bavos.progress import Callback, as_progress

PROTOCOLS = ("official", "per-frame", "release")
MAX_PROPOSALS = {"official": 20, "per-frame": 300, "release": 300}
MEASURES = ("J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay")
ID_MODES = ("P", "L", "I;16", "I")  # indexed or 8-bit grey; 16-bit grey (bavos's masks above 255 clusters)


def protocol_name(protocol: str, max_proposals: int | None = None) -> str:
    """The name every reported number carries: the protocol's, with its proposal limit when it is not the usual."""
    if protocol not in PROTOCOLS:
        raise EvalUsageError(f"unknown protocol {protocol!r}: choose one of {', '.join(PROTOCOLS)}")
    limit = MAX_PROPOSALS[protocol] if max_proposals is None else max_proposals
    if limit == MAX_PROPOSALS[protocol]:
        return protocol
    proposals = f"up to {limit} proposal{'s' * (limit != 1)}"
    return f"official (non-standard: {proposals})" if protocol == "official" else f"{protocol} ({proposals})"


def _number(value: float) -> float | None:
    """A measure as JSON gives it: six decimals, null where there is nothing to score (NaN is not JSON)."""
    return None if np.isnan(value) else round(value, 6)


@dataclass(frozen=True)
class ObjectScore:
    """J and F statistics of one ground-truth object."""

    sequence: str
    object_id: int  # 1-based id in the ground truth
    j: tuple[float, float, float]  # mean, recall, decay
    f: tuple[float, float, float]  # mean, recall, decay
    proposal: int  # matched proposal id (official); -1 with per-frame matching, where it changes per frame

    @property
    def name(self) -> str:
        return f"{self.sequence}_{self.object_id}"

    def measures(self) -> dict[str, float]:
        return dict(zip(MEASURES, ((self.j[0] + self.f[0]) / 2, *self.j, *self.f), strict=True))


def _mean_measures(objects: Sequence[ObjectScore]) -> dict[str, float]:
    """Means over objects (the DAVIS convention: every object counts once, whatever its sequence)."""
    if not objects:
        return dict.fromkeys(MEASURES, float("nan"))
    rows = np.array([[*o.j, *o.f] for o in objects])  # (objects, 6)
    jm, jr, jd, fm, fr, fd = rows.mean(axis=0).tolist()
    return dict(zip(MEASURES, ((jm + fm) / 2, jm, jr, jd, fm, fr, fd), strict=True))


@dataclass(frozen=True)
class DavisResult:
    """Scores of a DAVIS evaluation, always with the name of the protocol that produced them."""

    protocol: str
    sequences: list[str]
    objects: list[ObjectScore]
    notes: list[str] = field(default_factory=list)

    def overall(self) -> dict[str, float]:
        return _mean_measures(self.objects)

    def per_sequence(self) -> dict[str, dict[str, float]]:
        return {s: _mean_measures([o for o in self.objects if o.sequence == s]) for s in self.sequences}

    def to_json(self) -> dict[str, object]:
        """The seven DAVIS measures (0..1), ``protocol``, ``sequences`` and ``per_sequence`` (each sequence's objects
        and measures; null where it has no object to score)."""
        return {
            **{k: _number(v) for k, v in self.overall().items()},
            "protocol": self.protocol,
            "sequences": list(self.sequences),
            "per_sequence": {
                s: {"objects": sum(o.sequence == s for o in self.objects), **{k: _number(v) for k, v in m.items()}}
                for s, m in self.per_sequence().items()
            },
        }


def read_ids(path: Path, what: str) -> np.ndarray:
    """(H, W) ids of an indexed (mode P) or 8-bit grey (mode L) PNG (uint8), or a 16-bit grey PNG (uint16).

    Anything else (RGB, RGBA, ...) is an error.
    """
    try:
        with Image.open(path) as img:
            if img.format != "PNG":  # a lossy format under a .png name changes the ids at the objects' edges
                raise EvalError(
                    f"{path}: a {img.format} file named {path.suffix}: masks must be PNGs ({what} ids are exact only "
                    "in a lossless format)"
                )
            if img.mode not in ID_MODES:
                raise EvalError(
                    f"{path}: {what} must be PNGs of ids: indexed (palette), 8-bit or 16-bit grey; this one is mode "
                    f"{img.mode}"
                )
            ids = np.asarray(img)
    except OSError as exc:
        raise EvalError(f"{path}: cannot read {what} PNG ({exc})") from exc
    if ids.dtype.itemsize > 1:  # 16-bit: mode I;16 reads as uint16, mode I as int32
        if ids.min() < 0 or ids.max() > 65535:
            raise EvalError(f"{path}: {what} ids must be in 0..65535")
        return ids.astype(np.uint16, copy=False)
    return ids.astype(np.uint8, copy=False)


def prediction_dir(preds: Path, sequence: str, known: Sequence[str] = ()) -> Path:
    """``PREDS/<seq>/masks`` when it exists (bavos segment's layout), else ``PREDS/<seq>``.

    Raises:
        EvalUsageError: ``preds`` is one result or one sequence's masks, or the sequences' folders lie a level down.
        EvalError: no folder for ``sequence``; the message names those there that can be scored (among ``known``,
            the sequences with ground truth) and one named in other capitals.
    """
    for candidate in (preds / sequence / "masks", preds / sequence):
        if candidate.is_dir():
            return candidate
    if (preds / "masks").is_dir():  # one result given for the folder of results
        raise EvalUsageError(
            f"{preds} is one result (it holds masks/), not a folder of results: give the folder above it, "
            f"{preds.parent}, with --sequences {preds.name}"
        )
    if preds.is_dir() and _pngs(preds):  # one sequence's masks given for the folder of sequences
        raise EvalUsageError(
            f"{preds} holds mask PNGs: it is one sequence; give the folder above it, {preds.parent}, with "
            f"--sequences {preds.name}"
        )
    there = sorted(p.name for p in preds.iterdir() if p.is_dir()) if preds.is_dir() else []
    wanted = set(known) | {sequence}
    for sub in there:  # the sequences' folders one level down (PREDS/run1/<seq>)
        if any((preds / sub / name).is_dir() for name in wanted):
            raise EvalUsageError(
                f"no predictions for sequence {sequence!r} in {preds}: {preds / sub} holds the sequences' folders: "
                "give it instead"
            )
    said = f"no predictions for sequence {sequence!r}: {preds / sequence} does not exist"
    other_case = [name for name in there if name.lower() == sequence.lower()]
    if other_case:
        said += f"; a folder {other_case[0]} is there: sequence names are case-sensitive"
    scorable = [name for name in there if name in wanted]
    if scorable:
        said += (
            f"; predictions are there for {len(scorable)} sequence{'s' * (len(scorable) != 1)}: score "
            f"{'them' if len(scorable) != 1 else 'it'} alone with --sequences {','.join(scorable[:10])}"
            f"{',...' if len(scorable) > 10 else ''}"
        )
    raise EvalError(said)


def _pngs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() == ".png" and not p.name.startswith("."))


def _load_pairs(pred_dir: Path, gt_dir: Path, exact: bool) -> tuple[np.ndarray, np.ndarray]:
    """(T, H, W) prediction and ground-truth ids for every ground-truth frame, with every check one line."""
    gt_files = _pngs(gt_dir)
    if not gt_files:
        raise EvalError(f"{gt_dir}: no ground-truth PNGs")
    have = {p.stem: p for p in _pngs(pred_dir)}  # by stem: 00000.PNG is frame 00000 too
    missing = [p.name for p in gt_files if p.stem not in have]
    extra = sorted(set(have) - {p.stem for p in gt_files}) if exact else []
    if missing or extra:
        first = f" (first missing: {missing[0]})" if missing else f" (not in it: {have[extra[0]].name})"
        raise EvalError(f"{pred_dir}: {len(have)} prediction frames, the ground truth has {len(gt_files)}{first}")
    gts, preds = [], []
    for gt_file in gt_files:
        gt = read_ids(gt_file, "ground-truth")
        pred = read_ids(have[gt_file.stem], "prediction")
        if pred.shape != gt.shape:
            raise EvalError(
                f"{have[gt_file.stem]}: prediction is {pred.shape[1]}x{pred.shape[0]}, "
                f"the ground truth is {gt.shape[1]}x{gt.shape[0]}"
            )
        gts.append(gt)
        preds.append(pred)
    return np.stack(preds), np.stack(gts)


class DavisLayout:
    """A DAVIS-2017 root: ``Annotations_unsupervised/480p/<seq>/*.png`` and ``ImageSets/2017/val.txt``."""

    def __init__(self, root: Path, resolution: str = "480p", subset: str = "val") -> None:
        self.root = Path(root)
        self.annotations = self.root / "Annotations_unsupervised" / resolution
        self.imageset = self.root / "ImageSets" / "2017" / f"{subset}.txt"
        self.notes: list[str] = []  # what sequences() dropped (a name listed twice)
        if not self.root.is_dir():
            raise EvalUsageError(f"DAVIS root {self.root} {_not_a_folder(self.root)}")
        if not self.annotations.is_dir():
            below = sorted(self.root.glob(f"*/Annotations_unsupervised/{resolution}"))
            hint = f"; {below[0].parent.parent} is one: give it" if below else ""
            raise EvalUsageError(
                f"{self.annotations} does not exist: --davis must be a DAVIS-2017 root with the "
                f"unsupervised annotations (Annotations_unsupervised/480p){hint}"
            )

    def sequences(self, requested: Sequence[str] | None = None) -> list[str]:
        """The requested sequences, or those listed in ImageSets/2017/val.txt, each once; each must have annotations.

        Raises:
            EvalError: val.txt is missing, empty or not UTF-8 text, or names a sequence without annotations.
            EvalUsageError: a requested sequence has no annotations.
        """
        if requested:
            names, source = list(requested), "--sequences"
        elif self.imageset.is_file():
            names, source = _listed(self.imageset), str(self.imageset)
        else:
            raise EvalError(f"{self.imageset} does not exist: give the sequences with --sequences")
        for name in names:
            if not (self.annotations / name).is_dir():  # named by --sequences: a usage error; by val.txt: the data's
                error = EvalUsageError if requested else EvalError
                raise error(f"sequence {name!r} has no annotations in {self.annotations}")
        once = list(dict.fromkeys(names))  # each sequence counts once in the means, as in the official code
        self.notes = [
            f"{source} lists {name} {names.count(name)} times: it is scored once"
            if names.count(name) > 2
            else f"{source} lists {name} twice: it is scored once"
            for name in once
            if names.count(name) > 1
        ]
        return once


def _listed(path: Path) -> list[str]:
    """The names in a sequence list, one a line (UTF-8, a byte-order mark and CRLF line ends allowed)."""
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise EvalError(f"{path} is not UTF-8 text (byte {e.start}): it must list one sequence name a line") from e
    except OSError as e:
        raise EvalError(f"{path}: cannot read it ({e.strerror or e})") from e
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names:
        raise EvalError(f"{path} lists no sequence: it must list one sequence name a line")
    return names


def _sequence_scores(
    sequence: str,
    pred: np.ndarray,
    gt: np.ndarray,
    protocol: str,
    limit: int,
    notes: list[str],
    progress: Callback | None,
    result: Path | None = None,
) -> list[ObjectScore]:
    """Per-object statistics of one sequence; pred and gt are (T, H, W) ids; ``result``: the folder of bavos
    segment's result that holds the predictions (which bavos recut can cut to fewer objects), or None."""
    n_objs = int(np.where(gt[0] == VOID, 0, gt[0]).max())  # objects: the ids of the first annotated frame
    later = int(np.where(gt == VOID, 0, gt).max())
    if later > n_objs:
        notes.append(
            f"{sequence}: ids above {n_objs} appear after the first frame and count as background "
            "(the official evaluator takes the objects from the first frame)"
        )
    if n_objs == 0:
        notes.append(f"{sequence}: no object in the first annotated frame, nothing to score")
        return []
    shift = 1 if protocol == "release" else 0  # the release's evaluator: every cluster, id 0 too, is a proposal
    n_props = int(pred.max()) + shift
    if n_props > limit:
        held = f"{n_props} clusters (ids 0..{n_props - 1})" if shift else f"id {n_props}"
        if limit == MAX_PROPOSALS[protocol]:
            allowed = f"the {limit} proposals the {protocol} protocol allows"
        else:
            allowed = f"the {limit} proposals of --max-proposals {limit}"
        fewer = (
            f"cut them to fewer (bavos recut {shlex.quote(str(result))} --max-objects {limit + 1 - shift}: the "
            "background is one)"
            if result is not None
            else f"relabel them with ids {1 - shift}..{limit - shift} (0 is the background)"
        )
        raise EvalError(
            f"{sequence}: the predictions hold {held}, more than {allowed}: {fewer} or raise --max-proposals, which "
            "makes the scores non-standard"
        )
    n_slots = max(n_props, n_objs)  # fewer proposals than objects: pad with empty ones
    n_frames = len(gt)
    j = np.zeros((n_slots, n_objs, n_frames))
    f = np.zeros((n_slots, n_objs, n_frames))
    for t in range(n_frames):
        frame = pred[t].astype(np.int32) + shift if shift else pred[t]
        j[:, :, t], f[:, :, t] = frame_scores(frame, gt[t], n_slots, n_objs)
        if progress is not None:
            progress(sequence, t + 1, n_frames)
    if protocol == "official":
        jm, fm, match = match_per_sequence(j, f)
        proposals = [int(m) + 1 for m in match]
    else:
        jm, fm, _ = match_per_frame(j, f)
        proposals = [-1] * n_objs
    return [ObjectScore(sequence, g + 1, statistics(jm[g]), statistics(fm[g]), proposals[g]) for g in range(n_objs)]


def evaluate_davis(
    preds: Path,
    davis: Path,
    protocol: str = "official",
    sequences: Sequence[str] | None = None,
    max_proposals: int | None = None,
    progress: Callback | None = None,
) -> DavisResult:
    """Score prediction folders against DAVIS-2017 unsupervised annotations.

    Args:
        preds: folder with one sub-folder of indexed PNGs per sequence.
        davis: DAVIS-2017 root.
        protocol: ``official`` (one Hungarian match per sequence on the mean (J+F)/2, ids 1..20; id 0 is
            background), ``per-frame`` (a Hungarian match on J+F in every frame, ids 1..300) or ``release`` (the
            paper's released evaluator: as ``per-frame``, but every id, 0 included, is a proposal; at most 300).
        sequences: names to score; default: ImageSets/2017/val.txt.
        max_proposals: proposal limit; a value other than the protocol's makes it non-standard (named so).
        progress: called with (sequence, frames done, frames).

    Raises:
        EvalUsageError: a folder or a sequence named is not there, or a proposal limit below 1. EvalError: the
            masks cannot be scored. TypeError: ``progress`` cannot be called.
    """
    as_progress(progress)  # one that cannot be called is said before the scoring
    name = protocol_name(protocol, max_proposals)
    limit = MAX_PROPOSALS[protocol] if max_proposals is None else max_proposals
    if limit < 1:
        raise EvalUsageError(f"--max-proposals must be at least 1, not {limit}")
    layout = DavisLayout(davis)
    names = layout.sequences(sequences)
    preds = Path(preds)
    if not preds.is_dir():
        raise EvalUsageError(f"prediction folder {preds} {_not_a_folder(preds)}")
    found = {seq: prediction_dir(preds, seq, names) for seq in names}  # a missing one said before any is scored
    objects: list[ObjectScore] = []
    notes: list[str] = list(layout.notes)
    for seq in names:
        pred, gt = _load_pairs(found[seq], layout.annotations / seq, exact=True)
        ours = found[seq].name == "masks" and (found[seq].parent / "summary.json").is_file()  # a bavos result
        result = found[seq].parent if ours else None
        objects += _sequence_scores(seq, pred, gt, protocol, limit, notes, progress, result)
    if not objects:
        raise EvalError(
            "nothing to score: no sequence has an object in its first annotated frame (the objects are those of the "
            f"first frame) in {layout.annotations}"
        )
    return DavisResult(name, names, objects, notes)


@dataclass(frozen=True)
class InstanceResult:
    """FG-ARI and video mIoU per sequence (NaN where a sequence has no foreground)."""

    fg_ari: dict[str, float]  # mean over frames with ground-truth foreground
    miou: dict[str, float]  # mean over objects after one Hungarian match per video
    one_object: list[str] = field(default_factory=list)  # sequences with never two objects in one annotated frame
    bare: list[str] = field(default_factory=list)  # sequences without ground-truth foreground: nothing to score
    listed: list[str] = field(default_factory=list)  # what choosing the sequences dropped (a name listed twice)

    @property
    def notes(self) -> list[str]:
        """What the scores cannot say (one line each)."""
        said = [*self.listed, *(f"{s}: no foreground in the ground truth, nothing to score" for s in self.bare)]
        if not self.one_object:
            return said
        shown = ", ".join(self.one_object[:5]) + (
            f" and {len(self.one_object) - 5} more" if len(self.one_object) > 5 else ""
        )
        one = len(self.one_object) == 1
        return [
            *said,
            f"FG-ARI needs two or more objects in a frame: {len(self.one_object)} sequence{'' if one else 's'} "
            f"({shown}) never show{'s' if one else ''} two, so {'its' if one else 'their'} FG-ARI is only the "
            "share of frames in which the one object was kept whole (a frame scores 1.000 if it was, 0.000 if "
            f"it was split); mIoU still scores {'it' if one else 'them'}",
        ]

    def overall(self) -> dict[str, float]:
        """Means over sequences (sequences without foreground left out; NaN when none has any)."""

        def mean(values: dict[str, float]) -> float:
            scored = [v for v in values.values() if not np.isnan(v)]
            return float(np.mean(scored)) if scored else float("nan")

        return {"FG-ARI": mean(self.fg_ari), "mIoU": mean(self.miou)}

    def to_json(self) -> dict[str, object]:
        """FG-ARI and mIoU over the sequences, ``sequences`` and ``per_sequence`` (null where nothing was scored)."""
        return {
            **{k: _number(v) for k, v in self.overall().items()},
            "sequences": list(self.fg_ari),
            "per_sequence": {
                s: {"FG-ARI": _number(self.fg_ari[s]), "mIoU": _number(self.miou[s])} for s in self.fg_ari
            },
        }


def evaluate_instances(
    preds: Path,
    gt: Path | None = None,
    sequences: Sequence[str] | None = None,
    progress: Callback | None = None,
    davis: Path | None = None,
) -> InstanceResult:
    """FG-ARI (per frame, on ground-truth foreground) and video-level mIoU of folders of instance masks.

    Args:
        preds: one sub-folder of indexed PNGs per sequence (ids as predicted; 0 = background for mIoU).
        gt: one sub-folder of indexed PNGs per sequence (0 = background, 255 = void; 16-bit ids too); predictions
            are needed for every ground-truth frame, extra predicted frames (sparse annotations) are ignored.
        sequences: names to score; default: every sub-folder of ``gt``, or with ``davis`` its val.txt.
        progress: called with (sequence, frames done, frames).
        davis: a DAVIS-2017 root, instead of ``gt``: its unsupervised annotations and val.txt.

    Raises:
        EvalUsageError: a folder or a sequence named is not there. EvalError: the masks cannot be scored, or no
            sequence has foreground. TypeError: ``progress`` cannot be called.
    """
    as_progress(progress)  # one that cannot be called is said before the scoring
    preds = Path(preds)
    if not preds.is_dir():
        raise EvalUsageError(f"prediction folder {preds} {_not_a_folder(preds)}")
    listed: list[str] = []
    if davis is not None:
        layout = DavisLayout(davis)
        gt, names = layout.annotations, layout.sequences(sequences)
        listed = layout.notes
    elif gt is None:
        raise EvalUsageError("the ground truth is needed: gt (a folder of sequence folders) or davis (a DAVIS root)")
    else:
        gt = Path(gt)
        if not gt.is_dir():
            raise EvalUsageError(f"ground-truth folder {gt} {_not_a_folder(gt)}")
        names = list(dict.fromkeys(sequences)) if sequences else sorted(p.name for p in gt.iterdir() if p.is_dir())
        if not sequences and names and not any(_pngs(gt / n) for n in names):  # a level too high (.../480p below)
            inner = next((gt / n for n in names if any(p.is_dir() for p in (gt / n).iterdir())), None)
            if inner is not None:
                raise EvalUsageError(
                    f"{gt}: its folders hold no masks; {inner} holds the sequences' folders: give it as --gt"
                )
    if not names:
        raise EvalError(f"{gt}: no sequence folders")
    for seq in names:
        if not (gt / seq).is_dir():  # only a name given with --sequences can be missing
            raise EvalUsageError(f"sequence {seq!r} has no ground truth in {gt}")
    found = {seq: prediction_dir(preds, seq, names) for seq in names}  # a missing one said before any is scored
    aris: dict[str, float] = {}
    mious: dict[str, float] = {}
    one_object: list[str] = []
    for seq in names:
        pred, ann = _load_pairs(found[seq], gt / seq, exact=False)
        # every id a column: 16-bit ground truth holds ids past 255 (255 itself is void and left out below)
        table = np.zeros((int(pred.max()) + 1, max(VOID, int(ann.max())) + 1), dtype=np.int64)
        frame_aris = []
        several = False
        for t in range(len(ann)):
            frame_aris.append(fg_ari(pred[t], ann[t]))
            several = several or len(np.setdiff1d(np.unique(ann[t]), (0, VOID))) >= 2
            keep = ann[t] != VOID
            table += pair_counts(pred[t][keep], ann[t][keep], *table.shape)
            if progress is not None:
                progress(seq, t + 1, len(ann))
        scored = [a for a in frame_aris if not np.isnan(a)]
        aris[seq] = float(np.mean(scored)) if scored else float("nan")
        mious[seq] = video_miou(table).miou
        if scored and not several:
            one_object.append(seq)
    bare = [seq for seq in names if np.isnan(aris[seq])]
    if len(bare) == len(names):
        raise EvalError(f"nothing to score: no sequence has ground-truth foreground in {gt}")
    return InstanceResult(aris, mious, one_object, bare, listed)


def _not_a_folder(path: Path) -> str:
    """Why ``path`` is no folder, said after its name."""
    return "is a file, not a folder" if path.exists() else "does not exist"


DAVIS_HEADER = ["Sequence", "Objects", "Protocol", *MEASURES]
INSTANCE_HEADER = ["Sequence", "FG-ARI", "mIoU"]


def check_csv(path: Path, header: Sequence[str]) -> None:
    """Whether a table with ``header`` can be written at ``path``: its folder is there, and ``path`` is not a folder
    or a file other than such a table (bavos never replaces a file of yours). Said before the scoring too.

    Raises:
        DestinationError: ``path`` is a folder, or a file that is not such a table. EvalUsageError: its folder does
            not exist.
    """
    import csv

    path = Path(path)
    if not path.parent.is_dir():
        raise EvalUsageError(f"cannot write {path}: folder {path.parent} {_not_a_folder(path.parent)}")
    if path.is_dir():
        raise DestinationError(f"--csv {path}: is a folder; name the file to write")
    if path.exists():
        try:
            with open(path, newline="") as fh:
                first = next(csv.reader(fh), None)
        except (OSError, UnicodeDecodeError, csv.Error):
            first = None
        if first != list(header):
            other = first in (DAVIS_HEADER, INSTANCE_HEADER)  # bavos's table of the other measures
            raise DestinationError(
                f"--csv {path}: holds bavos's table of the other measures (its columns: {', '.join(first or [])}); "
                "choose another name or move it"
                if other
                else f"--csv {path}: a file that is not a bavos table is there; bavos replaces only its own: choose "
                "another name or move it"
            )


def write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Write a CSV file atomically (a temporary name in the same folder, then a rename). An existing file is
    replaced only when it is such a table (its first line is ``header``).

    Raises:
        DestinationError: ``path`` is a folder, or a file that is not a table bavos wrote.
        EvalError: the file cannot be written.
    """
    import csv

    check_csv(path, header)
    with atomic_path(Path(path), EvalError) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)


def davis_rows(result: DavisResult) -> tuple[list[str], list[list[object]]]:
    """The per-sequence table: sequence, objects, protocol and the seven measures (means over its objects)."""
    header = DAVIS_HEADER
    rows: list[list[object]] = []
    for seq, measures in result.per_sequence().items():
        count = sum(o.sequence == seq for o in result.objects)
        rows.append([seq, count, result.protocol, *(_six(measures[m]) for m in MEASURES)])
    return header, rows


def _six(value: float) -> str:
    """Six decimals for a CSV file, without the '-0.000000' of tiny negative values (as ``shown3``); empty where
    nothing was scored."""
    if np.isnan(value):
        return ""
    text = f"{value:.6f}"
    return "0.000000" if text == "-0.000000" else text


def shown3(value: float) -> str:
    """Three decimals for a table, without the '-0.000' of tiny negative values (FG-ARI of chance agreement); a
    dash where nothing was scored."""
    if np.isnan(value):
        return "-"
    text = f"{value:.3f}"
    return "0.000" if text == "-0.000" else text


@dataclass
class Report:
    """A result as the CLI shows it: a CSV table, a shorter printed table, and a JSON payload."""

    title: str
    header: list[str]  # CSV
    rows: list[list[object]]  # CSV
    shown_header: list[str]  # printed table
    shown: list[list[str]]  # printed table, the last row the overall one
    payload: dict[str, object]  # JSON


def instance_report(res: InstanceResult) -> Report:
    """FG-ARI / mIoU per sequence and overall."""
    overall = res.overall()
    header = INSTANCE_HEADER
    rows: list[list[object]] = [[s, _six(res.fg_ari[s]), _six(res.miou[s])] for s in res.fg_ari]
    shown = [[s, shown3(res.fg_ari[s]), shown3(res.miou[s])] for s in res.fg_ari]
    shown.append(["overall", *(shown3(v) for v in overall.values())])
    return Report("FG-ARI / video mIoU", header, rows, header, shown, res.to_json())


def davis_report(res: DavisResult) -> Report:
    """DAVIS J/F per sequence and overall, with the protocol in the title."""
    header, rows = davis_rows(res)
    shown = [
        [str(r[0]), str(r[1]), *(shown3(m[k]) for k in MEASURES)]
        for r, m in zip(rows, res.per_sequence().values(), strict=True)
    ]
    overall = res.overall()
    shown.append(["overall", str(len(res.objects)), *(shown3(overall[m]) for m in MEASURES)])
    return Report(
        f"DAVIS-2017 unsupervised, protocol: {res.protocol}",
        header,
        rows,
        ["Sequence", "Objects", *MEASURES],
        shown,
        res.to_json(),
    )
