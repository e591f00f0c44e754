"""bavos from Python: the models loaded once, videos (files, frame folders, arrays, iterables of frames) segmented,
results looked at, re-cut and saved. Nothing is written unless asked.

    seg = bavos.Segmenter.from_checkpoint("release")  # plus device="auto" and any segment option: tau, resolution
    result = seg("video.mp4")                       # or a (T, H, W, 3) uint8 array, or an iterable of frames
    result.masks                                    # (T, H, W) ids, 0 = the largest cluster (background)
    result.hierarchy.sizes                          # clusters per level
    coarse = result.hierarchy.recut(max_objects=5)  # another cut, without the model
    result.save("out/video")                        # the same files as `bavos segment`
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import warnings
import weakref
from collections.abc import Generator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from bavos.config import ModelConfig, SegmentConfig
from bavos.errors import (
    BavosError,
    ConfigError,
    InputError,
    OutputError,
    RandomWeightsWarning,
    ResourceError,
    plain_os_error,
)
from bavos.io.exports import check_exports
from bavos.io.files import plain_name
from bavos.io.owners import Heartbeat, owner_tag, sweep
from bavos.io.sources import FrameSource, Video, as_path, open_source
from bavos.io.video import FrameRange
from bavos.models.costs import over_budget
from bavos.models.loading import load_models
from bavos.pipeline.segment import Analysis, Estimates, Models, analyse, estimate_cost, iter_masks, output_name
from bavos.progress import Callback, Progress, as_progress

if TYPE_CHECKING:
    import torch


class Hierarchy:
    """The levels of a result: sizes, the converged level and the cut, and other cuts without the model.

    Attributes:
        sizes: clusters at each level, 0 (the finest) to ``converged``.
        converged: the level where merging stopped (nothing left within tau).
        level: the level the result is cut at (``--level``; ``converged`` by default).
        capped_from: the level ``--max-objects`` merged further (the cut's level), or None where it merged none.
        capped_to: the clusters that merge left (``max_objects``, background included), or None.
    """

    def __init__(self, result: Result) -> None:
        self._result = result
        h = result.analysis.hierarchy
        self.sizes: list[int] = h.real_sizes  # clusters at each level 0..converged
        self.converged: int = h.converged
        self.level: int = h.level  # the level cut at (what --level and recut take)
        self.capped_from: int | None = h.capped_from
        self.capped_to: int | None = h.capped_size  # clusters after --max-objects merged the level, or None

    def __repr__(self) -> str:
        cap = f", capped_from={self.capped_from}, capped_to={self.capped_to}" if self.capped_to is not None else ""
        return f"Hierarchy(sizes={self.sizes}, converged={self.converged}, level={self.level}{cap})"

    def recut(self, level: int | None = None, max_objects: int = 0) -> Result:
        """The same video cut at ``level`` (None: converged) and capped at ``max_objects`` (0: no cap), without the
        model; the new result shares the files of the result first segmented: closing that one closes every cut made
        from it, closing a cut closes it alone. Unlike ``bavos recut``, whose ``--max-objects`` defaults to segment's
        20, no argument means the level uncapped.

        Raises:
            ConfigError: a value of the wrong type or out of range. UsageError: a level the hierarchy does not have.
            BavosError: this result is closed.
        """
        from bavos.pipeline.recut import recut_analysis

        r = self._result
        r._check_open()
        config = replace(r.config, level=level, max_objects=max_objects)  # the values checked first
        analysis = recut_analysis(r.analysis, level, max_objects)
        return Result(r.source, analysis, config, r.models, r._workdir, owner=r._owner or r)  # the files' owner


class Result:
    """A segmented video. Its labels wait in a temporary file until the result is closed (or garbage collected).

    Attributes:
        source: what was segmented.
        analysis: the pipeline's analysis (key frames, hierarchy, labels).
        config: the settings it was made with.
        hierarchy: its levels and other cuts (``Hierarchy``).
    """

    def __init__(
        self,
        source: FrameSource,
        analysis: Analysis,
        config: SegmentConfig,
        models: Models,
        workdir: Path,
        owner: Result | None = None,
        made: tuple[Path, ...] = (),
    ) -> None:
        self.source, self.analysis, self.config, self.models = source, analysis, config, models
        self._workdir = workdir
        self._made = made  # the folders above ``workdir`` this call made (removed by close when left empty)
        self._started = time.perf_counter() - analysis.seconds
        self._owner = owner  # a re-cut shares its parent's files
        self._closed = False
        self._pid = os.getpid()  # the process that removes the files (not a forked child)
        # the frame iterators reading the video for this result and its cuts (which close() ends, each holding it
        # open), by the result they serve; kept by the files' owner
        self._readers: weakref.WeakKeyDictionary[Generator[Any, None, None], Result] = weakref.WeakKeyDictionary()

    @property
    def hierarchy(self) -> Hierarchy:
        """Its levels and other cuts (made on each access: a Hierarchy kept here would be a reference cycle, and a
        result dropped would keep its files until the cyclic garbage collector ran)."""
        return Hierarchy(self)

    def __repr__(self) -> str:
        name = str(self.source.path) if self.source.from_path else "frames in memory"
        h = self.hierarchy
        clusters = h.capped_to if h.capped_to is not None else h.sizes[h.level]
        state = ", closed" if self._closed or (self._owner is not None and self._owner._closed) else ""
        return f"Result({name!r}, {self.frames} frames, {clusters} clusters at level {h.level}{state})"

    @property
    def frames(self) -> int:
        """Frames read from the video (the processed ones are every ``stride``-th of them)."""
        return self.analysis.decoded

    @property
    def warnings(self) -> list[str]:
        """What differed from what the input announced or the options asked (as in summary.json)."""
        from bavos.pipeline.outputs import result_warnings

        return result_warnings(self.source, self.analysis)

    @property
    def labels(self) -> np.ndarray:
        """(processed frames, h, w) output ids on the patch grid (0 = the largest cluster)."""
        self._check_open()
        return np.stack([self.analysis.ids(t) for t in range(self.analysis.processed)])

    def _check_open(self) -> None:
        """Raises BavosError where this result, or the result whose files it shares, is closed."""
        if self._closed or (self._owner is not None and self._owner._closed):
            raise BavosError(
                "this result is closed: its labels went with close() or the end of its with-block; read "
                "result.masks (or save it) before, or keep a copy"
            )

    def iter_masks(self) -> Iterator[np.ndarray]:
        """Every frame's (H, W) ids at the frame's size, one at a time (the source is read again).

        Raises:
            BavosError: the result is closed.
        """
        self._check_open()
        masks = iter_masks(self.source, self.analysis, self.config.upsample, bool(self.config.background))
        (self._owner or self)._readers[masks] = self
        while True:
            self._check_open()  # an iterator kept past close() says so, as a new one would
            try:
                _, ids = next(masks)
            except StopIteration:
                return
            yield ids

    @property
    def masks(self) -> np.ndarray:
        """(T, H, W) ids of every frame at its size (uint8, uint16 above 255 clusters); ``iter_masks`` for long
        videos."""
        return np.stack(list(self.iter_masks()))

    def save(
        self, folder: str | Path, progress: Progress | Callback | None = None, keep_others: bool = False
    ) -> dict[str, Any]:
        """Write the files of ``bavos segment`` into ``folder`` (a result there is replaced when this one is
        complete); returns the summary, whose ``output`` says where it went.

        Args:
            keep_others: keep a finished result of another video found at ``folder`` (written by a run beside this
                one) and write this one to ``<folder>-<8 hex digits>`` instead, as ``bavos segment`` does.

        Raises:
            DestinationError: ``folder`` holds files bavos did not write.
            OutputError: writing failed (nothing is left half-written).
            TypeError: ``progress`` cannot be called.
        """
        from bavos.pipeline.outputs import write_result

        progress = as_progress(progress)
        self._check_open()
        return write_result(
            Path(folder),
            self.source,
            self.analysis,
            self.config,
            self.models,
            progress,
            self._started,
            keep_others,
        )

    def close(self) -> None:
        """Remove the temporary files (a re-cut's are the first result's: closing a re-cut closes it alone).
        Closing twice does nothing."""
        if os.getpid() == self._pid:  # a forked child's readers are its copies of the parent's
            root = self._owner or self
            for reader, served in list(root._readers.items()):
                if served is self or self is root:
                    reader.close()  # the video it holds open is closed now, not when it is next advanced
        if self._owner is not None or os.getpid() != self._pid:  # a forked child's copy: the files are the parent's
            self._closed = True
        elif not self._closed:
            self._closed = True
            self.analysis.close()
            Heartbeat.remove(self._workdir)
            shutil.rmtree(self._workdir, ignore_errors=True)
            _remove_empty(self._made)

    def __enter__(self) -> Result:
        return self

    def __reduce_ex__(self, protocol: object) -> Any:
        raise TypeError(
            "a bavos Result cannot be pickled or copied: its labels are in this process's temporary files; send "
            "result.masks or result.labels, or save it (result.save(folder)) and send the folder"
        )

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


WEIGHT_OPTIONS = ("checkpoint", "backbone", "backbone_weights")  # ModelConfig's, as keywords


def _check_options(options: dict[str, Any], caller: str = "Segmenter", taken: tuple[str, ...] = ("device",)) -> None:
    """Raises ConfigError for a name that is not a segment option (SegmentConfig's fields but ``taken``, which the
    caller takes itself), naming the closest one."""
    import dataclasses
    import difflib

    names = sorted(f.name for f in dataclasses.fields(SegmentConfig) if f.name not in taken)
    for key in options:
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(f"{caller}: no option {key!r}; {hint}(the options: {', '.join(names)})")


def _check_range(config: SegmentConfig) -> None:
    """Raises ConfigError for a ``start`` or ``end`` that is neither a frame number nor a time (said before the models
    load, not at the first video)."""
    try:
        FrameRange.parse(config.start, config.end)
    except InputError as e:
        raise ConfigError(str(e)) from None


def _remove_empty(folders: tuple[Path, ...]) -> None:
    """The folders a call made (the deepest first), each removed while it is empty."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:  # something is there now (a result saved into it, another run's files): kept, and above it
            return


def _caller_level() -> int:
    """``warnings.warn``'s stacklevel that names the user's line: Segmenter() itself, or from_checkpoint's caller."""
    import sys
    from types import FrameType

    frame: FrameType | None = sys._getframe(2)
    level = 2
    while frame is not None and frame.f_globals.get("__name__") == __name__:
        frame, level = frame.f_back, level + 1
    return level


class Segmenter:
    """Segment videos with the models loaded once.

    Args:
        models: the networks, loaded (``Segmenter.from_checkpoint`` loads them; ``bavos.models.loading.load_models``
            too).
        config: how videos are segmented (default: ``SegmentConfig()``); what the device decides (the resolution, the
            key frames, the stride) is decided for ``models``'s device.
    """

    def __init__(self, models: Models, config: SegmentConfig | None = None) -> None:
        if not isinstance(models, Models):
            raise ConfigError(
                f"Segmenter takes models already loaded, not {models!r}: Segmenter.from_checkpoint({models!r}) loads "
                "them"
            )
        self.models = models
        self.model_config: ModelConfig = models.requested
        self.config = (config or SegmentConfig()).for_device(models.device.type)
        check_exports(self.config.exports)
        if models.weights.backbone_weights == "none":
            warnings.warn(RandomWeightsWarning(models.weights.random_note(python=True)), stacklevel=_caller_level())

    def __repr__(self) -> str:
        c = self.config
        return (
            f"Segmenter(checkpoint={self.models.weights.checkpoint!r}, backbone={self.models.weights.backbone!r}, "
            f"backbone_weights={self.models.weights.backbone_weights!r}, device={str(self.models.device)!r}, "
            f"resolution={c.resolution}, tau={c.tau}, max_objects={c.max_objects})"
        )

    @classmethod
    def from_checkpoint(
        cls,
        checkpoint: str = "release",
        *,
        backbone: str | None = None,
        backbone_weights: str | None = None,
        device: Literal["auto", "cpu", "cuda"] | torch.device = "auto",
        **options: Any,
    ) -> Segmenter:
        """Load the models and make a segmenter.

        Args:
            checkpoint: "release" (the paper's, downloaded once into the cache), "none" (training-free) or a checkpoint
                file.
            backbone, backbone_weights: as ``bavos segment``'s options (None: the checkpoint's).
            device: "auto", "cpu" or "cuda" (a ``torch.device`` too).
            **options: any other segment option, as ``SegmentConfig``'s fields (``tau=0.8``, ``resolution=(320,
                480)``, ``max_objects=10``, ...).

        Raises:
            ConfigError: an option that does not exist, or a value it does not take (said before the models load;
                a resolution the backbone's patches do not divide, once they have).
            WeightsError, CheckpointError: the weights cannot be found, fetched or loaded (``DownloadError``, a
                CheckpointError, for the paper's checkpoint offline).
        """
        _check_options(options)
        named: Any = device if isinstance(device, str) else str(device)  # torch.device("cpu") too
        config = SegmentConfig(device=named, **options)  # every value checked before the models load
        _check_range(config)
        model_config = ModelConfig(backbone=backbone, backbone_weights=backbone_weights, checkpoint=checkpoint)
        models = load_models(model_config, named)
        config.for_device(models.device.type).check_patch(models.backbone.patch_size)  # not at the first video
        return cls(models, config)

    def __call__(
        self,
        video: Video,
        *,
        start: str | int | None = None,
        end: str | int | None = None,
        progress: Progress | Callback | None = None,
        workdir: str | Path | None = None,
        estimates: Estimates | None = None,
    ) -> Result:
        """Segment ``video``: a path (video file or frame folder; ``str``, ``bytes`` or ``os.PathLike``), a source
        opened already (its own range then holds), a (T, H, W, 3) uint8 array or tensor, or an iterable of (H, W, 3)
        uint8 frames (arrays or tensors).

        Args:
            start, end: part of the video, a frame number or a time ("12.5s"), end excluded (default: the config's).
            progress: told each pass's progress, ``progress(stage, done, total)``.
            workdir: where the labels wait while the result lives, in a new folder removed by ``Result.close``; by
                default the system's temporary folder. Put it on a disk, not a RAM disk, for long videos.
            estimates: called as ``estimates(said, estimate)`` each time the run's cost estimate is refined by what
                it has learnt (``said``: what it learnt; ``estimate``: a ``bavos.models.costs.Estimate``).

        Raises:
            InputError: the video cannot be read, or is none of the above.
            ResourceError: the run would need more memory than this machine has (checked before the work, as
                ``bavos segment`` does).
            TypeError: ``progress`` cannot be called.
        """
        progress = as_progress(progress)  # a wrong one said before any folder is made
        start = self.config.start if start is None else str(start)
        end = self.config.end if end is None else str(end)
        frame_range = FrameRange.parse(start, end)
        # absolute: the result's files stay found (and removed) after the caller changes its working folder
        where = Path(workdir).absolute() if workdir is not None else Path(tempfile.gettempdir()).absolute()
        made = tuple(p for p in (where, *where.parents) if not p.exists())  # the deepest first
        try:
            where.mkdir(parents=True, exist_ok=True)
            sweep(where)  # what killed processes left there
            # a new folder named by this process (owners.sweep removes a dead one's)
            work = Path(tempfile.mkdtemp(prefix=f".bavos-work-{owner_tag()}-", dir=where))
        except OSError as e:
            raise OutputError(f"workdir {where}: cannot make a folder there: {plain_os_error(e, '')}") from e
        Heartbeat.add(work)
        try:
            source = open_source(video, frame_range, self.config.fps, work)
            estimate = estimate_cost(source, self.models, self.config, work)
            too_big = over_budget(estimate, self.models.device) if estimate is not None else None
            if too_big:
                raise ResourceError(f"{source.path if source.from_path else 'the frames'}: {too_big}")
            analysis = analyse(source, self.models, self.config, progress, work, estimates)
        except BaseException:
            Heartbeat.remove(work)
            shutil.rmtree(work, ignore_errors=True)
            _remove_empty(made)  # a run that could not be made leaves no empty folder (segment_video's output) behind
            raise
        return Result(source, analysis, replace(self.config, start=start, end=end), self.models, work, made=made)


def segment_video(
    video: Video,
    output: str | Path = "out",
    config: SegmentConfig | None = None,
    models: Models | None = None,
    model_config: ModelConfig | None = None,
    progress: Progress | Callback | None = None,
    name: str | None = None,
    estimates: Estimates | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Segment one video (file or frame folder, a FrameSource opened on one, or frames in memory as ``Segmenter``
    takes them, given a ``name``) into ``output/<name>/`` (default name: ``output_name``).

    The settings come as configs (``config``, ``model_config``; ``models`` when loaded already) or as keywords, the
    options' names with underscores as ``Segmenter.from_checkpoint`` takes them: ``checkpoint``, ``backbone``,
    ``backbone_weights``, ``device`` and every other segment option (``segment_video(path, "out",
    checkpoint="none", tau=0.8)``).

    Writes what ``bavos segment`` writes for ``config`` (docs/usage.md, "What comes out"): ``masks/*.png`` (one
    mask per decoded frame), ``overlay.mp4``, ``preview.png``, ``hierarchy.png``, ``hierarchy.npz`` (unless
    ``save_hierarchy`` is off), the exports asked for and, last, ``summary.json``, all in a temporary folder renamed
    into place at the end: an interrupted run leaves nothing that looks finished.

    Returns:
        The summary (also written to summary.json).

    Raises:
        ConfigError: a keyword that is no option, a value it does not take, or a keyword given beside the config
            (or loaded models) that would hold it; frames in memory without a ``name``.
        TypeError: ``progress`` cannot be called.
        InputError, ResourceError: as ``Segmenter.__call__``.
        WeightsError, CheckpointError: the weights cannot be found, fetched or loaded.
        DestinationError, OutputError: ``output/<name>`` holds files of the user's, or cannot be written.
    """
    progress = as_progress(progress)  # before the models load
    weights = {key: options.pop(key) for key in WEIGHT_OPTIONS if key in options}
    if weights:
        if model_config is not None or models is not None:
            raise ConfigError(
                f"segment_video: {', '.join(weights)} given beside {'models' if models is not None else 'model_config'}"
                "; give the weights one way"
            )
        model_config = ModelConfig(**weights)
    if not isinstance(options.get("device", ""), str):
        options["device"] = str(options["device"])  # torch.device("cpu") too, as Segmenter.from_checkpoint takes it
    if options:
        if config is not None:
            raise ConfigError(f"segment_video: {', '.join(options)} given beside config; give the settings one way")
        _check_options(options, "segment_video", taken=())
        config = SegmentConfig(**options)
    cfg = config or SegmentConfig()
    _check_range(cfg)
    if name is not None:
        name = plain_name(name, "segment_video: name")  # never a way out of ``output``, as --name
    elif isinstance(video, FrameSource):
        name = output_name(video.path)
    elif isinstance(video, str | bytes | os.PathLike):
        name = output_name(as_path(video))
    else:  # before the models load
        raise ConfigError(
            f"segment_video: frames in memory ({type(video).__name__}) have no name to write their result under: "
            "give name=..."
        )
    models = models or load_models(model_config or ModelConfig(), cfg.device)
    final = Path(output) / name
    with Segmenter(models, cfg)(
        video,
        progress=progress,
        workdir=final.parent,  # a disk, not /tmp
        estimates=estimates,
    ) as result:
        return result.save(final, progress, keep_others=True)  # a run beside this one may have taken the name
