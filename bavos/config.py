"""Frozen configuration dataclasses. CLI options map one-to-one onto these fields.

The resolved configuration is written into every output (``summary.json``) and every checkpoint.
"""

from __future__ import annotations

import math
import numbers
import os
import types
import typing
from collections.abc import Collection
from dataclasses import MISSING, Field, asdict, dataclass, field, fields, replace
from typing import Any, Literal

from bavos.errors import ConfigError, UsageError

DEFAULT_BACKBONE = "vit_small_patch8_224.dino"
KNOWN_PATCH_SIZES = {DEFAULT_BACKBONE: 8, "bavos_test_vit": 8}  # checked without importing timm
PAPER_RESOLUTION = (320, 480)  # the release's inference size (method.md §2.5)
# The defaults on a CPU, where the paper's settings cost several times as long (docs/performance.md, "A CPU at many
# clusters"): half the paper's size per side, fewer key frames, every other frame.
CPU_RESOLUTION = (160, 240)
CPU_MAX_KEY_FRAMES = 10
CPU_STRIDE = 2
GPU_MAX_KEY_FRAMES = 30  # every key frame of clips up to 300 processed frames at the paper's ratio
PRECISIONS = ("float32", "bf16", "fp16")  # of the backbone and correlator (bavos.models.devices applies them)
PRODUCTS = ("float32", "fp32-tensor", "tf32", "bf16")  # of the clustering (bavos.pipeline.products)
# --fps: the videos bavos writes hold a rate with a denominator up to 1001 (29.97 as 30000/1001) and a 32-bit numerator
FPS_RANGE = (0.001, 1_000_000.0)

# Per-channel statistics used to normalise frames (method.md §2.4, §7.5).
NORMALIZATION: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "kinetics": ((0.43216, 0.394666, 0.37645), (0.22803, 0.22145, 0.216989)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}


# The panels of `bavos segment --help` (and `bavos train --help`), in the order they are shown.
WHAT, LEARNED, WEIGHTS = "What you get", "What is learned", "Weights"
SPEED, OUTPUTS, RUN = "Speed and memory", "Outputs", "The run"
PANELS = (WHAT, LEARNED, WEIGHTS, SPEED, OUTPUTS, RUN)


@dataclass(frozen=True)
class Flag:
    """How a config field appears on the command line: ``bavos.cli.options`` builds the option from this, so the
    help, metavar and panel are written once, next to the field."""

    help: str  # one sentence; the docs say the rest
    metavar: str | None = None  # what a value is ("H W", "MB"); None for on/off flags
    panel: str = RUN  # one of PANELS
    names: tuple[str, ...] = ()  # the option's names; () = "--" + the field's name with dashes
    shown: str | None = None  # the default as the help says it, where the field's own default does not say it


def flag(
    default: Any,
    help: str,
    *,
    metavar: str | None = None,
    panel: str = RUN,
    names: tuple[str, ...] = (),
    shown: str | None = None,
) -> Any:
    """A dataclass field with ``default`` whose command-line option is described by a ``Flag`` (its metadata)."""
    return field(default=default, metadata={"flag": Flag(help, metavar, panel, names, shown)})


def flag_of(config: type, name: str) -> Flag | None:
    """The Flag of ``config``'s field ``name`` (None: the field has no option)."""
    return fields_of(config)[name].metadata.get("flag")


def fields_of(config: type) -> dict[str, Field[Any]]:
    """``config``'s dataclass fields by name."""
    return {f.name: f for f in fields(config)}


def _raise_first(checks: list[tuple[bool, str]]) -> None:
    """Raise ConfigError with the message of the first failed (ok, message) check."""
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


_HINTS: dict[type, dict[str, Any]] = {}  # each config class's fields' types, resolved once


def _hints(config_type: type) -> dict[str, Any]:
    if config_type not in _HINTS:
        _HINTS[config_type] = typing.get_type_hints(config_type)
    return _HINTS[config_type]


def _wanted(hint: Any, value: Any) -> str | None:
    """What a value of type ``hint`` is, said for a user, where ``value`` is not one (else None); only numbers,
    flags and tuples are checked here (names and choices have their own checks)."""
    args = typing.get_args(hint)
    if type(None) in args:
        rest = [a for a in args if a is not type(None)]
        wanted = None if value is None or len(rest) != 1 else _wanted(rest[0], value)
        return None if wanted is None else wanted + " or None"
    if hint is bool:
        return None if isinstance(value, bool) else "True or False"
    if hint is int:
        return None if isinstance(value, numbers.Integral) and not isinstance(value, bool) else "a whole number"
    if hint is float:
        return None if isinstance(value, numbers.Real) and not isinstance(value, bool) else "a number"
    if typing.get_origin(hint) is tuple and args and args[-1] is not Ellipsis:
        fits = isinstance(value, tuple) and len(value) == len(args)
        fits = fits and all(_wanted(a, v) is None for a, v in zip(args, value, strict=False))
        return None if fits else f"a tuple of {len(args)} {'whole numbers' if set(args) == {int} else 'values'}"
    return None


def _type_checks(config: Any) -> list[tuple[bool, str]]:
    """A config's numbers, flags and tuples of the wrong type, as ``_raise_first`` checks (a Python caller's
    mistake: the CLI parses them), to be checked before the values are compared. Lists become tuples first."""
    checks = []
    for name, hint in _hints(type(config)).items():
        given = value = getattr(config, name)
        if isinstance(value, list) and typing.get_origin(hint) in (tuple, types.UnionType, typing.Union):
            value = tuple(value)
        wanted = _wanted(hint, value)
        checks.append((wanted is None, f"{_option(type(config), name)} must be {wanted}, got {value!r}"))
        value = _plain(value)  # numpy's numbers as Python's (summary.json, checkpoints)
        if wanted is None and value is not given:
            object.__setattr__(config, name, value)  # frozen: the one change a config makes to itself
    return checks


def _option(config_type: type, name: str) -> str:
    """A field as the user names it: its option (``--tau``, as the errors of its values say), else
    ``Config.field``."""
    said = flag_of(config_type, name)
    if said is None:
        return f"{config_type.__name__}.{name}"
    return said.names[0] if said.names else "--" + name.replace("_", "-")


def _plain(value: Any) -> Any:
    """numpy's (or any) integers and reals as Python's int and float, in tuples too; other values as they are."""
    if isinstance(value, tuple):
        items = tuple(_plain(v) for v in value)
        return value if all(a is b for a, b in zip(items, value, strict=True)) else items
    if isinstance(value, numbers.Integral) and not isinstance(value, int):
        return int(value)
    if isinstance(value, numbers.Real) and not isinstance(value, int | float):
        return float(value)
    return value


def _device_checks(device: str, normalization: str) -> list[tuple[bool, str]]:
    return [
        (device in ("auto", "cpu", "cuda"), f"--device must be auto, cpu or cuda, got {device}"),
        (normalization in NORMALIZATION, f"--normalization must be kinetics or imagenet, got {normalization}"),
    ]


def _precision_check(precision: str) -> tuple[bool, str]:
    return (precision in PRECISIONS, f"--precision must be one of {', '.join(PRECISIONS)}, got {precision}")


def _check_resolution(resolution: tuple[int, int], patch: int) -> None:
    h, w = resolution
    if h % patch or w % patch:
        raise UsageError(f"--resolution {h} {w} must be a multiple of the patch size {patch} in both sides")


@dataclass(frozen=True)
class ModelConfig:
    """Which networks to build and where their weights come from (None: decided by the checkpoint, see
    ``bavos.models.weights.plan_weights``)."""

    # None: the one a bavos checkpoint was trained with, else DINO ViT-S/8 (tests use "bavos_test_vit").
    backbone: str | None = flag(
        None,
        "timm ViT name of the frozen backbone.",
        metavar="NAME",
        panel=WEIGHTS,
        shown=f"the checkpoint's, else {DEFAULT_BACKBONE}",
    )
    # None: the release checkpoint's own encoder, or what a bavos checkpoint was trained with, else "hub".
    backbone_weights: str | None = flag(
        None,
        "'hub' (timm's DINO weights, downloaded once), a weights file, or 'none' (random weights: masks are "
        "meaningless).",
        metavar="hub|none|PATH",
        panel=WEIGHTS,
        shown="the checkpoint's, else hub",
    )
    # "none" is the training-free mode (method.md §7.9); a path is a bavos or release checkpoint.
    checkpoint: str = flag(
        "release",
        "The correlator: 'release' (the paper's, downloaded once), 'none' (training-free: DINO's own "
        "attention) or a checkpoint file.",
        metavar="release|none|PATH",
        panel=WEIGHTS,
    )
    # Heads of the temporal correlator (8 in the paper; head width = backbone width / heads).
    correlator_heads: int = 8

    def __post_init__(self) -> None:
        if self.checkpoint == "release" and self.backbone not in (None, DEFAULT_BACKBONE):
            raise ConfigError(
                f"--checkpoint release is the paper's correlator for {DEFAULT_BACKBONE}; with "
                f"--backbone {self.backbone} pass --checkpoint none (training-free) or a checkpoint "
                "trained for it"
            )
        if not self.checkpoint:
            raise ConfigError("--checkpoint must be release, none or a checkpoint file")


@dataclass(frozen=True)
class SegmentConfig:
    """How one video is segmented and what is written. Each field's flag carries the help of its option."""

    # None: the paper's 320 x 480 on a GPU, CPU_RESOLUTION on a CPU (``for_device``; method.md §2.5).
    resolution: tuple[int, int] | None = flag(
        None,
        "Model input size, multiples of 8: larger finds smaller objects, at a steep cost in time.",
        metavar="H W",
        panel=WHAT,
        shown="320 480 on a GPU (the paper's), 160 240 on a CPU",
    )
    # At least one key frame always (method.md §3.3, §7.4).
    key_ratio: int = flag(
        10, "Every R-th processed frame is a key frame that every frame attends to.", metavar="R", panel=WHAT
    )
    # Spread evenly over the video (0 = no limit): bounds time and memory per frame. None: GPU_MAX_KEY_FRAMES on a
    # GPU, CPU_MAX_KEY_FRAMES on a CPU (``for_device``).
    max_key_frames: int | None = flag(
        None,
        "At most N key frames, spread over the video (0: no limit); bounds the cost of long videos.",
        metavar="N",
        panel=SPEED,
        shown="30 on a GPU, 10 on a CPU",
    )
    # MB of queries kept from the clustering's first pass for its second (0: decode and run the backbone again).
    # None (auto): ``bavos.models.costs.query_plan`` decides (a temporary file beside the result on a CPU, memory on
    # a GPU). The results are the same either way.
    query_cache_mb: int | None = flag(
        None,
        "MB of frame features kept for the clustering's second pass (0: none); docs/usage.md says what auto keeps.",
        metavar="auto|MB",
        panel=SPEED,
        names=("--query-cache",),
        shown="auto",
    )
    # MB of attention rows kept from the clustering's first pass for its second (0: computed again); GPU memory on
    # CUDA, host memory on CPU. None (auto): ``bavos.models.costs.attention_plan`` decides. The results are the same.
    attention_cache_mb: int | None = flag(
        None,
        "MB of attention kept for the clustering's second pass (0: none); docs/usage.md says what auto keeps.",
        metavar="auto|MB",
        panel=SPEED,
        names=("--attention-cache",),
        shown="auto",
    )
    # The symmetric-KL merge threshold of the hierarchical clustering (method.md §3.6).
    tau: float = flag(1.0, "Merge threshold: higher gives fewer, larger objects.", metavar="TAU", panel=WHAT)
    # Frames per level-1 clustering window (method.md §3.6, ts = 3).
    window: int = flag(
        3, "Frames clustered together before the global merges (the paper's 3).", metavar="N", panel=WHAT
    )
    # 0 = per-window clusters, 1.. = global merge rounds; None = the converged level.
    level: int | None = flag(
        None,
        "Hierarchy level to cut: 0 = per-window clusters, each level above one more merge round.",
        metavar="L",
        panel=WHAT,
        shown="the converged level",
    )
    # The cut level's this many largest clusters kept, the others merged into their nearest (0 = no limit).
    max_objects: int = flag(
        20,
        "Keep the N largest objects, background included, the others merged into them (0: no limit).",
        metavar="N",
        panel=WHAT,
    )
    # "bilinear": per-cluster masks upsampled, then argmax; "nearest": the release's 8-pixel blocks.
    upsample: Literal["bilinear", "nearest"] = flag(
        "bilinear",
        "How masks reach the frame size: smooth edges, or 8-pixel blocks (as released).",
        metavar="bilinear|nearest",
        panel=WHAT,
    )
    # Skipped frames take the labels of the nearest processed frame. None: 1 on a GPU, CPU_STRIDE on a CPU.
    stride: int | None = flag(
        None,
        "Feed every K-th frame to the model; the others take the nearest processed frame's masks.",
        metavar="K",
        panel=SPEED,
        shown="1 on a GPU, 2 on a CPU",
    )
    device: Literal["auto", "cpu", "cuda"] = flag(
        "auto", "Where to run: 'auto' takes CUDA when there is one.", metavar="auto|cpu|cuda", panel=SPEED
    )
    # "kinetics": the release's inference statistics; "imagenet": its training's.
    normalization: Literal["kinetics", "imagenet"] = flag(
        "kinetics",
        "Input statistics: the paper's inference (kinetics) or its training (imagenet).",
        metavar="kinetics|imagenet",
        panel=WHAT,
    )
    # Of the backbone and the correlator: "float32" as released (strict, no TF32, on CUDA), or "bf16" / "fp16"
    # autocast. Attention and clustering are float32 either way.
    precision: Literal["float32", "bf16", "fp16"] = flag(
        "float32",
        "Backbone and correlator precision: bf16 / fp16 are faster on a GPU but move tokens to other objects.",
        metavar="float32|bf16|fp16",
        panel=SPEED,
    )
    batch_size: int = flag(8, "Frames per backbone batch (memory, not the result).", metavar="N", panel=SPEED)
    # None: on a GPU, where the model would wait for the CPU work; not on a CPU, where the threads only compete with
    # the model for the cores. The results are the same either way.
    background: bool | None = flag(
        None,
        "Decode ahead of the model and write behind it in background threads.",
        panel=SPEED,
        names=("--background/--no-background",),
        shown="on a GPU only",
    )
    # Video files keep their own timing.
    fps: float = flag(
        24.0,
        "Frame rate of frame folders and arrays: their overlay and the times of --start/--end.",
        metavar="FPS",
        panel=OUTPUTS,
    )
    overlay: bool = flag(True, "Write overlay.mp4.", panel=OUTPUTS, names=("--overlay/--no-overlay",))
    # Patch-level labels of every level, for `bavos recut`.
    save_hierarchy: bool = flag(
        True,
        "Write hierarchy.npz (every level, for other cuts later).",
        panel=OUTPUTS,
        names=("--hierarchy/--no-hierarchy",),
    )
    overlay_alpha: float = flag(0.5, "Opacity of the object colours in the overlay.", metavar="A", panel=OUTPUTS)
    # From this frame ("120") or time ("12.5s"), included, to this one, excluded (None: all).
    start: str | None = flag(
        None,
        "Segment from this frame number (120) or time (12.5s); names and times stay the video's.",
        metavar="FRAME|SECONDS",
        panel=WHAT,
        shown="the first frame",
    )
    end: str | None = flag(
        None,
        "Segment up to this frame number or time, excluded.",
        metavar="FRAME|SECONDS",
        panel=WHAT,
        shown="the last frame",
    )
    # Names of ``bavos.io.exports.EXPORTS`` (checked there: ``check_exports``); the help's {choices} and the metavar
    # come from that registry.
    exports: tuple[str, ...] = flag(
        (),
        "Also write {choices}; several: repeat it, or list them (coco,video).",
        metavar="{choices}",
        panel=OUTPUTS,
        names=("--export",),
        shown="none",
    )
    # One PNG per object and frame; over it the rest is written and a warning names the recut that writes them.
    max_export_files: int = flag(
        100_000,
        "Most PNGs --export objects writes without being asked for more (0: no limit).",
        metavar="N",
        panel=OUTPUTS,
    )
    # The clustering's whole-window products (bavos.pipeline.products): "float32" the paper's; the others use a
    # GPU's tensor cores, "fp32-tensor" at float32's accuracy.
    products: Literal["float32", "fp32-tensor", "tf32", "bf16"] = flag(
        "float32",
        "The clustering's products: float32 (the paper's), or fp32-tensor, tf32, bf16 on a GPU's tensor cores "
        "(docs/usage.md).",
        metavar="|".join(PRODUCTS),
        panel=SPEED,
    )

    def __post_init__(self) -> None:
        for name in ("start", "end"):  # a frame number from Python (start=120) is kept as the command line's text
            value = getattr(self, name)
            if isinstance(value, int) and not isinstance(value, bool):
                object.__setattr__(self, name, str(value))
        # "coco" from Python is one name, not its letters; "coco,video" (--export coco,video) two, as ffmpeg's lists
        listed = (self.exports,) if isinstance(self.exports, str) else self.exports
        if isinstance(listed, tuple | list) and all(isinstance(x, str) for x in listed):
            object.__setattr__(
                self, "exports", tuple(x.strip() for item in listed for x in item.split(",") if x.strip())
            )
        _raise_first(_type_checks(self))
        h, w = self.resolution or PAPER_RESOLUTION
        checks = [
            (h > 0 and w > 0, f"--resolution must be positive, got {h} {w}"),
            (self.key_ratio >= 1, f"--key-ratio must be at least 1, got {self.key_ratio}"),
            (
                self.max_key_frames is None or self.max_key_frames >= 0,
                f"--max-key-frames must be 0 (no limit) or more, got {self.max_key_frames}",
            ),
            (
                self.attention_cache_mb is None or self.attention_cache_mb >= 0,
                f"--attention-cache must be auto, 0 (none) or more MB, got {self.attention_cache_mb}",
            ),
            (
                self.query_cache_mb is None or self.query_cache_mb >= 0,
                f"--query-cache must be auto, 0 (none) or more MB, got {self.query_cache_mb}",
            ),
            (self.tau > 0, f"--tau must be positive, got {self.tau}"),
            (self.window >= 1, f"--window must be at least 1, got {self.window}"),
            (self.level is None or self.level >= 0, f"--level must be 0 or more, got {self.level}"),
            (
                0 <= self.max_objects <= 65536,
                f"--max-objects must be in 0..65536 (0 = no limit), got {self.max_objects}",
            ),
            (self.stride is None or self.stride >= 1, f"--stride must be at least 1, got {self.stride}"),
            (self.batch_size >= 1, f"--batch-size must be at least 1, got {self.batch_size}"),
            (
                FPS_RANGE[0] <= self.fps <= FPS_RANGE[1],
                f"--fps must be from {FPS_RANGE[0]:g} to {FPS_RANGE[1]:.0f} frames per second, got {self.fps:g}",
            ),
            (
                self.max_export_files >= 0,
                f"--max-export-files must be 0 (no limit) or more, got {self.max_export_files}",
            ),
            (0.0 <= self.overlay_alpha <= 1.0, f"--overlay-alpha must be in [0, 1], got {self.overlay_alpha}"),
            (self.products in PRODUCTS, f"--products must be one of {', '.join(PRODUCTS)}, got {self.products}"),
            (self.upsample in ("bilinear", "nearest"), f"--upsample must be bilinear or nearest, got {self.upsample}"),
        ] + [_precision_check(self.precision)]
        _raise_first(checks + _device_checks(self.device, self.normalization))

    def check_patch(self, patch: int) -> None:
        """Raise ConfigError unless the resolution is a multiple of the backbone's patch size."""
        _check_resolution(self.resolution or PAPER_RESOLUTION, patch)

    def for_device(self, device_type: str) -> SegmentConfig:
        """This config with what depends on the device decided: on CUDA the paper's 320 x 480, every frame and at
        most GPU_MAX_KEY_FRAMES key frames; on a CPU the CPU_* operating point; the background threads on CUDA
        only."""
        cuda = device_type == "cuda"
        decided: dict[str, Any] = {
            "resolution": self.resolution or (PAPER_RESOLUTION if cuda else CPU_RESOLUTION),
            "max_key_frames": self.max_key_frames
            if self.max_key_frames is not None
            else GPU_MAX_KEY_FRAMES
            if cuda
            else CPU_MAX_KEY_FRAMES,
            "stride": self.stride or (1 if cuda else CPU_STRIDE),
            "background": cuda if self.background is None else self.background,
        }
        if all(getattr(self, k) == v for k, v in decided.items()):
            return self
        return replace(self, **decided)

    @property
    def model_size(self) -> tuple[int, int]:
        """The model's input size (H, W), as decided by ``for_device``.

        Raises:
            ValueError: the config was not resolved for a device (``for_device``).
        """
        return self._decided("resolution")

    @property
    def frame_stride(self) -> int:
        """Every this many frames one goes to the model, as decided by ``for_device`` (ValueError before)."""
        return self._decided("stride")

    @property
    def key_frame_bound(self) -> int:
        """The most key frames (0: no bound), as decided by ``for_device`` (ValueError before)."""
        return self._decided("max_key_frames")

    def _decided(self, name: str) -> Any:
        value = getattr(self, name)
        if value is None:
            raise ValueError(f"SegmentConfig.{name} is decided by for_device(device); call it first")
        return value

    def cpu_defaults(self) -> dict[str, str]:
        """The CPU operating point's settings this config leaves to the device (option -> value), each differing
        from the paper's."""
        taken = {
            "--resolution": (self.resolution, f"{CPU_RESOLUTION[0]}x{CPU_RESOLUTION[1]}"),
            "--max-key-frames": (self.max_key_frames, str(CPU_MAX_KEY_FRAMES)),
            "--stride": (self.stride, str(CPU_STRIDE)),
        }
        return {option: value for option, (given, value) in taken.items() if given is None}


# The two known training settings (method.md §4.7): the released script, and the paper's as reported in issue #1.
PRESETS: dict[str, dict[str, Any]] = {
    "release": {"batch_size": 8, "lr": 1e-5, "steps": 60_000},
    "paper": {"batch_size": 16, "lr": 1e-4, "steps": 30_000},
}

# Fields that may change when a run is resumed: they do not change what is learned.
RUNTIME_FIELDS = frozenset({"workers", "log_every", "checkpoint_every", "device", "cache"})


@dataclass(frozen=True)
class TrainConfig:
    """How the temporal correlator is trained (method.md §4); defaults are the release's. The fields with a flag are
    options of `bavos train` (given as None there: the preset's or the resumed run's value holds)."""

    # Sets steps, batch_size and lr (PRESETS).
    preset: Literal["release", "paper"] = flag(
        "release",
        "'release': batch 8, lr 1e-5, 60k steps (the released script); 'paper': batch 16, lr 1e-4, 30k "
        "steps (as the paper reports).",
        metavar="release|paper",
        panel=LEARNED,
    )
    steps: int = flag(
        60_000, "Optimizer steps (the cosine schedule spans them).", metavar="N", panel=LEARNED, shown="the preset's"
    )
    # Split evenly across torchrun processes.
    batch_size: int = flag(8, "Clips per step, over all processes.", metavar="N", panel=LEARNED, shown="the preset's")
    # Decayed by a cosine without warm-up to min_lr.
    lr: float = flag(
        1e-5, "Peak learning rate (cosine decay to 1e-6).", metavar="LR", panel=LEARNED, shown="the preset's"
    )
    # Learning rate at the end of the schedule.
    min_lr: float = 1e-6
    # AdamW weight decay of the weight matrices (biases and LayerNorms get none).
    weight_decay: float = 0.1
    # Multiples of the patch size.
    resolution: tuple[int, int] = flag((192, 384), "Training frame size.", metavar="H W", panel=LEARNED)
    # Frames per clip sample.
    frames: int = 3
    gap: int = flag(4, "Frames between the 3 sampled frames (shrunk for short clips).", metavar="N", panel=LEARNED)
    # Query positions per clip (the same in its frames), drawn for each clip at every step.
    points: int = 8
    # Semantic consistency: positives (most attended) and negatives (least attended) per query and frame.
    semantic_pos: int = 30
    semantic_neg: int = 200
    # Hinge thresholds: positives pushed above this cosine, negatives below the next one.
    semantic_pos_threshold: float = 0.9
    semantic_neg_threshold: float = 0.1
    # Motion consistency: positives and negatives in the query's own frame, and the hinge margin.
    motion_pos: int = 10
    motion_neg: int = 50
    motion_margin: float = 1.0
    # The release computes the query's weighted centre but leaves it out.
    motion_centre: bool = flag(
        False,
        "Add the weighted centre as a motion positive (the release computes it and leaves it out).",
        panel=LEARNED,
        names=("--motion-centre/--no-motion-centre",),
    )
    # "dropped": after attention dropout, the release's; "clean": before it.
    loss_attention: Literal["dropped", "clean"] = flag(
        "dropped",
        "Attention the losses read: after attention dropout (as released) or before it.",
        metavar="dropped|clean",
        panel=LEARNED,
    )
    # Prepend each frame's last-block CLS token to its keys (the release's training input).
    with_cls: bool = True
    # Correlator dropout on the attention, and after the projection and inside the MLP.
    attn_drop: float = 0.4
    drop: float = 0.1
    # The same parameters on the frames of a clip.
    augment: bool = flag(
        True, "Colour, grayscale and blur augmentation.", panel=LEARNED, names=("--augment/--no-augment",)
    )
    # "process": once for the whole run of each process (the release's, method.md §5.4); "clip": for each clip.
    blur_sigma: Literal["clip", "process"] = flag(
        "process",
        "Blur sigma drawn once per process for the whole run (as released), or for each clip.",
        metavar="process|clip",
        panel=LEARNED,
    )
    normalization: Literal["kinetics", "imagenet"] = flag(
        "imagenet", "Input statistics (imagenet as released).", metavar="imagenet|kinetics", panel=LEARNED
    )
    # The randomness of step s on process r is derived from (seed, s, r).
    seed: int = flag(0, "Base seed.", metavar="N", panel=LEARNED)
    # last.pt and step-<n>.pt, and at the end.
    checkpoint_every: int = flag(1_000, "Steps between checkpoints.", metavar="N", panel=RUN)
    log_every: int = flag(10, "Steps between metrics.jsonl lines.", metavar="N", panel=RUN)
    workers: int = field(
        default_factory=lambda: default_workers(),
        metadata={"flag": Flag("Decoding and loading workers.", "N", SPEED, (), "this machine's cores, at most 8")},
    )
    # Frames are decoded once at training size. None: <run>/cache.
    cache: str | None = flag(
        None, "Frame cache folder (shareable between runs).", metavar="DIR", panel=SPEED, shown="OUTPUT/cache"
    )
    device: Literal["auto", "cpu", "cuda"] = flag(
        "auto", "Where to run: 'auto' takes CUDA when there is one.", metavar="auto|cpu|cuda", panel=SPEED
    )
    # "bf16" / "fp16" autocast (fp16 with loss scaling); "float32" as released.
    precision: Literal["float32", "bf16", "fp16"] = flag(
        "float32",
        "float32 as released; bf16 / fp16 autocast (fp16 with loss scaling).",
        metavar="float32|bf16|fp16",
        panel=SPEED,
    )

    def __post_init__(self) -> None:
        _raise_first(_type_checks(self))
        h, w = self.resolution
        positive = (
            "steps",
            "batch_size",
            "frames",
            "points",
            "semantic_pos",
            "semantic_neg",
            "motion_pos",
            "motion_neg",
            "checkpoint_every",
            "log_every",
        )
        checks = [
            (getattr(self, f) >= 1, f"--{f.replace('_', '-')} must be at least 1, got {getattr(self, f)}")
            for f in positive
        ]
        checks += [
            (self.preset in PRESETS, f"--preset must be release or paper, got {self.preset}"),
            (h > 0 and w > 0, f"--resolution must be positive, got {h} {w}"),
            (math.isfinite(self.lr) and self.lr > 0, f"--lr must be a finite number above 0, got {self.lr:g}"),
            (
                0 <= self.min_lr <= self.lr,
                f"--lr must be at least {self.min_lr:g}, where its cosine schedule ends, got {self.lr:g}",
            ),
            (self.weight_decay >= 0, f"--weight-decay must be 0 or more, got {self.weight_decay}"),
            (self.gap >= 1, f"--gap must be at least 1, got {self.gap}"),
            (0 <= self.attn_drop < 1 and 0 <= self.drop < 1, "dropout rates must be in [0, 1)"),
            (self.workers >= 0, f"--workers must be 0 or more, got {self.workers}"),
            (0 <= self.seed < 2**64, f"--seed must be from 0 to 2**64 - 1, got {self.seed}"),  # numpy's and torch's
            (
                self.loss_attention in ("dropped", "clean"),
                f"--loss-attention must be dropped or clean, got {self.loss_attention}",
            ),
            (self.blur_sigma in ("clip", "process"), f"--blur-sigma must be clip or process, got {self.blur_sigma}"),
            _precision_check(self.precision),
        ]
        _raise_first(checks + _device_checks(self.device, self.normalization))

    def check_tokens(self, patch: int) -> None:
        """Raise UsageError (a ConfigError) unless the resolution fits the patch size and each frame has enough
        patches for the losses' samples; the error names a resolution of about the same shape that has."""
        _check_resolution(self.resolution, patch)
        h, w = self.resolution
        n = (h // patch) * (w // patch)
        need = max(self.semantic_pos, self.semantic_neg, self.motion_pos, self.motion_neg, self.points)
        if n < need:
            scale = math.sqrt(need / max(1, n))
            while True:
                size = [math.ceil(side * scale / patch) * patch for side in (h, w)]
                if (size[0] // patch) * (size[1] // patch) >= need:
                    break
                scale *= 1.01
            raise UsageError(
                f"--resolution {h} {w} gives {n} patches of {patch}x{patch} pixels a frame; the losses sample "
                f"{need} a frame: give at least --resolution {size[0]} {size[1]}"
            )


def default_workers() -> int:
    """Loader processes by default: the cores this process may use, at most 8."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return min(8, cores)


def _tuples(values: dict[str, Any]) -> dict[str, Any]:
    """Lists (from JSON or a checkpoint) back to the tuples the dataclasses hold."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}


def _spoken(value: Any) -> str:
    """An option's value as it is typed: ``96 160``, not ``(96, 160)``."""
    return " ".join(map(str, value)) if isinstance(value, tuple | list) else str(value)


def _typed(key: str, value: Any) -> str:
    """An option as it is typed: ``--resolution 96 160``, ``--no-augment``."""
    name = key.replace("_", "-")
    if isinstance(value, bool):
        return f"--{name}" if value else f"--no-{name}"
    return f"--{name} {_spoken(value)}"


def train_config(
    preset: str | None = None, saved: dict[str, Any] | None = None, learned: bool = True, **given: Any
) -> TrainConfig:
    """Resolve a TrainConfig: defaults, then the preset (or a resumed run's saved values), then given options.

    Options given as None are not given. With ``saved`` (the config of a run being resumed), every option that
    changes what is learned must equal the saved value, unless nothing was learned yet (``learned`` False: a run
    that stopped before its first checkpoint), when given options replace the saved ones.

    Raises:
        ConfigError: an unknown preset, or a given option that differs from the resumed run's.
    """
    given = _tuples({k: v for k, v in given.items() if v is not None})
    if saved is None:
        preset = preset or "release"
        if preset not in PRESETS:
            raise ConfigError(f"--preset must be release or paper, got {preset}")
        return TrainConfig(**{"preset": preset, **PRESETS[preset], **given})
    values = _tuples(saved)
    if preset is not None and preset != values["preset"]:
        raise ConfigError(f"--resume: the run was trained with --preset {values['preset']}, not {preset}")
    for key, value in given.items():
        if learned and key not in RUNTIME_FIELDS and value != values.get(key):
            raise ConfigError(
                f"--resume: {_typed(key, value)} differs from the run's "
                f"{_typed(key, was) if isinstance(was := values.get(key), bool) else _spoken(was)}; resume with the "
                "run's settings or start a new run"
            )
    return TrainConfig(**{**values, **given})


def to_dict(*configs: ModelConfig | SegmentConfig | TrainConfig) -> dict[str, Any]:
    """Flatten configs into one JSON-ready dict keyed by config class name."""
    out: dict[str, Any] = {}
    for cfg in configs:
        out[type(cfg).__name__] = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()}
    return out


# Fields that change how a result is computed, not what it is: an output made with other values is still current.
RESULT_FREE = frozenset(
    {"batch_size", "attention_cache_mb", "query_cache_mb", "device", "background", "max_export_files"}
)


def segment_options(config: dict[str, dict[str, Any]], leave_out: Collection[str] = ()) -> list[str]:
    """The options of ``bavos segment`` that give a result's settings again, from its summary.json's ``config``
    (``to_dict`` of its ModelConfig and SegmentConfig): each one not at its default, but those that change how a
    result is computed and not what it is (``RESULT_FREE``), and the fields named in ``leave_out``."""
    args: list[str] = []
    for config_type in (ModelConfig, SegmentConfig):
        values = config.get(config_type.__name__, {})
        for name, f in fields_of(config_type).items():
            spec = f.metadata.get("flag")
            if spec is None or name in RESULT_FREE or name in leave_out or name not in values:
                continue
            value = tuple(values[name]) if isinstance(values[name], list) else values[name]
            default = f.default if f.default_factory is MISSING else f.default_factory()
            if value is None or value == default or (name == "backbone" and value == DEFAULT_BACKBONE):
                continue
            option = spec.names[0] if spec.names else f"--{name.replace('_', '-')}"
            if "/" in option:  # an on/off flag
                args.append(option.split("/")[0 if value else 1])
            elif isinstance(value, tuple) and " " in (spec.metavar or ""):  # one option, several values ("H W")
                args += [option, *(str(v) for v in value)]
            elif isinstance(value, tuple):  # an option given once a value
                args += [a for v in value for a in (option, str(v))]
            else:
                args += [option, str(value)]
    return args


def result_settings(model: ModelConfig, segment: SegmentConfig) -> dict[str, Any]:
    """The settings a segmentation result depends on, as asked (flat, JSON-ready): what --skip-existing compares.

    The model's are taken as given (``None``: decided by the checkpoint), with the default backbone filled in where
    the checkpoint does not decide it.
    """
    backbone = model.backbone or (DEFAULT_BACKBONE if model.checkpoint in ("release", "none") else None)
    out: dict[str, Any] = {
        "checkpoint": model.checkpoint,
        "backbone": backbone,
        "backbone_weights": model.backbone_weights,
        "correlator_heads": model.correlator_heads,
    }
    for key, value in asdict(segment).items():
        if key not in RESULT_FREE and not (key == "products" and value == "float32"):  # float32: what results
            out[key] = list(value) if isinstance(value, tuple) else value  # made before --products were made with
    return out


@dataclass(frozen=True)
class Part:
    """This call's share of the inputs in a job array: part ``index`` of ``count`` (0-based), and where that came
    from (``--shard``, or a Slurm array's variables)."""

    index: int = 0
    count: int = 1
    slurm: str | None = None  # "task 3 of 0-9" when read from SLURM_ARRAY_TASK_ID
    shard: bool = False  # asked for with --shard slurm (else a Slurm task's call that takes every input)

    def take(self, items: list) -> list:
        """Every count-th item from index on: over the parts, each item goes to exactly one."""
        return items[self.index :: self.count]


def parse_part(text: str, env: dict[str, str] | None = None) -> Part:
    """``--shard I/N``: part I (0 to N-1) of N; ``--shard slurm``: this Slurm array task's part (``slurm_part``,
    read from ``env``).

    Raises:
        ConfigError: not two whole numbers with 0 <= I < N; ``slurm`` outside an array, or an array whose parts
            cannot be told.
    """
    if text == "slurm":
        return slurm_part(env if env is not None else {})
    try:
        index, count = (int(x) for x in text.split("/"))
    except ValueError:
        raise ConfigError(
            f"--shard takes I/N, part I (0 to N-1) of N, e.g. --shard 0/4, or slurm; got {text or 'nothing'}"
        ) from None
    if count < 1:
        raise ConfigError(f"--shard {text}: N, the number of parts, must be at least 1")
    if not 0 <= index < count:
        raise ConfigError(f"--shard {text}: I runs from 0 to N-1 (--shard 0/{count} is the first part)")
    return Part(index, count)


SLURM_RERUN = (
    "pass --shard I/N with the part each task takes of the whole array's (--shard $SLURM_ARRAY_TASK_ID/10 for "
    "tasks of --array=0-9)"
)


def slurm_part(env: dict[str, str]) -> Part:
    """The part a Slurm array task takes (``--shard slurm``): its place among the array's tasks
    (SLURM_ARRAY_TASK_ID between SLURM_ARRAY_TASK_MIN and _MAX in steps of SLURM_ARRAY_TASK_STEP).

    Raises:
        ConfigError: not in an array; variables that do not fit together; an array that is a list of tasks
            (``--array=3,7``) or starts past task 1 (``--array=5-6``): a rerun of some tasks of a larger array,
            whose parts the variables do not tell.
    """
    if "SLURM_ARRAY_TASK_ID" not in env:
        raise ConfigError(
            "--shard slurm: not a task of a Slurm job array (no SLURM_ARRAY_TASK_ID; sbatch --array sets it); "
            "without --shard every input is taken"
        )
    # without the count a list of tasks (--array=0,4,5) passed for every step of its range, and half the inputs
    # were never done
    missing = [k for k in ("SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_MAX", "SLURM_ARRAY_TASK_COUNT") if k not in env]
    if missing:
        raise ConfigError(f"--shard slurm: {listed(missing)} not set, so the array's parts are unknown; {SLURM_RERUN}")
    try:
        task = int(env["SLURM_ARRAY_TASK_ID"])
        low, high = int(env["SLURM_ARRAY_TASK_MIN"]), int(env["SLURM_ARRAY_TASK_MAX"])
        step = int(env.get("SLURM_ARRAY_TASK_STEP", "1"))
    except ValueError as e:
        raise ConfigError(f"the Slurm array's variables must be integers ({e}); pass --shard I/N") from None
    if step < 1 or not low <= task <= high or (task - low) % step:
        raise ConfigError(f"SLURM_ARRAY_TASK_ID={task} does not fit the array {low}-{high}:{step}; pass --shard I/N")
    count = (high - low) // step + 1
    span = f"{low}-{high}" + (f":{step}" if step > 1 else "")
    told = env["SLURM_ARRAY_TASK_COUNT"]
    if told != str(count):  # a list of tasks (--array=3,7: a rerun of the failed ones), not every step of a range
        raise ConfigError(
            f"the Slurm array holds {told} tasks between {low} and {high}, not every step of {span}: "
            f"its parts cannot be told from its variables; {SLURM_RERUN}"
        )
    if low > 1:  # --array=3 or --array=5-6: looks like a rerun of some tasks, which a whole array does not
        raise ConfigError(
            f"the Slurm array {span} starts at task {low}, not 0 or 1: if it runs some tasks of a larger array again, "
            f"its parts cannot be told from its variables; {SLURM_RERUN}"
        )
    return Part((task - low) // step, count, f"task {task} of {span}", shard=True)


def listed(names: list[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return ", ".join(names[:-1]) + (" and " if len(names) > 1 else "") + names[-1]


def slurm_task(env: dict[str, str]) -> str | None:
    """ "task 3 of 0-9" where this process is a Slurm array task (what the note without ``--shard`` names), else
    None."""
    if "SLURM_ARRAY_TASK_ID" not in env:
        return None
    low, high = env.get("SLURM_ARRAY_TASK_MIN", "?"), env.get("SLURM_ARRAY_TASK_MAX", "?")
    return f"task {env['SLURM_ARRAY_TASK_ID']} of {low}-{high}"
