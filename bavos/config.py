"""Frozen configuration dataclasses. CLI options map one-to-one onto these fields.

The resolved configuration is written into every output (``summary.json``) and every checkpoint.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from bavos.errors import ConfigError

DEFAULT_BACKBONE = "vit_small_patch8_224.dino"
KNOWN_PATCH_SIZES = {DEFAULT_BACKBONE: 8, "bavos_test_vit": 8}  # checked without importing timm
EXPORTS = ("coco", "objects", "video")  # what --export writes (bavos.io.exports)
PAPER_RESOLUTION = (320, 480)  # the release's inference size (METHOD.md 1.5)
# The defaults on a CPU, where the paper's settings cost several times as long (docs/performance.md, "A CPU at many
# clusters"): half the paper's size per side, fewer key frames, every other frame.
CPU_RESOLUTION = (160, 240)
CPU_MAX_KEY_FRAMES = 10
CPU_STRIDE = 2
GPU_MAX_KEY_FRAMES = 30  # every key frame of clips up to 300 processed frames at the paper's ratio
PRECISIONS = ("float32", "bf16", "fp16")  # of the backbone and correlator (bavos.models.devices applies them)

# Per-channel statistics used to normalise frames (METHOD.md 1.4, decision 7.5).
NORMALIZATION: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "kinetics": ((0.43216, 0.394666, 0.37645), (0.22803, 0.22145, 0.216989)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}


def _raise_first(checks: list[tuple[bool, str]]) -> None:
    """Raise ConfigError with the message of the first failed (ok, message) check."""
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


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
        raise ConfigError(f"--resolution {h} {w} must be a multiple of the patch size {patch} in both sides")


@dataclass(frozen=True)
class ModelConfig:
    """Which networks to build and where their weights come from (None: decided by the checkpoint, see
    ``bavos.models.weights.plan_weights``)."""

    # timm model name of the frozen ViT backbone; None = the one a bavos checkpoint was trained with, else DINO
    # ViT-S/8 (tests use "bavos_test_vit").
    backbone: str | None = None
    # "hub" (timm download/cache), "none" (random weights, explicit), or a path to a local weights file; None = the
    # release checkpoint's own encoder, or what a bavos checkpoint was trained with, else "hub".
    backbone_weights: str | None = None
    # The correlator: "release" (the paper's checkpoint, downloaded once into the cache), "none" (training-free
    # mode, METHOD.md 7.9), or a path to a bavos or release checkpoint.
    checkpoint: str = "release"
    # Number of heads of the temporal correlator (8 in the paper; head width = backbone width / heads).
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
    """How one video is segmented and what is written."""

    # Model input size (height, width), multiples of the backbone's patch size (METHOD.md 1.5); None = the paper's
    # 320 x 480 on a GPU, CPU_RESOLUTION on a CPU (see ``for_device``).
    resolution: tuple[int, int] | None = None
    # Every key_ratio-th processed frame is a key frame; at least one key frame always (METHOD.md 2.3, 7.4).
    key_ratio: int = 10
    # At most this many key frames, spread evenly over the video (0 = no limit): bounds time and memory per frame.
    # None: GPU_MAX_KEY_FRAMES on a GPU, CPU_MAX_KEY_FRAMES on a CPU (see ``for_device``).
    max_key_frames: int | None = None
    # MB of queries kept in host memory from the clustering's first pass for its second (0: decode and run the
    # backbone again). None ("auto"): on a CPU, every query in a temporary file beside the result when they take at
    # most a quarter of the disk's free space; on a GPU (or without that space), every query in memory when they take
    # at most min(512 MB, a tenth of the available memory), else none. So the backbone runs once per frame on a CPU
    # whatever the length, and long videos keep flat memory (``bavos.models.costs.query_plan``). The results are the
    # same either way.
    query_cache_mb: int | None = None
    # MB of attention rows kept from the clustering's first pass for its second (0: computed again); GPU memory on
    # CUDA, host memory on CPU. None ("auto"): on a CPU, every window's rows when they take at most min(512 MB, a
    # tenth of the available memory), else none; on a GPU none (``bavos.models.costs.attention_plan``). Trades memory
    # for time; the results are the same.
    attention_cache_mb: int | None = None
    # Symmetric-KL merge threshold of the hierarchical clustering (METHOD.md 2.6).
    tau: float = 1.0
    # Frames per level-1 clustering window (METHOD.md 2.6, ts = 3).
    window: int = 3
    # Hierarchy level to cut: 0 = per-window clusters, 1.. = global merge rounds; None = the converged level.
    level: int | None = None
    # Keep the cut level's this many largest clusters, the others merged into their nearest (0 = no limit).
    max_objects: int = 20
    # How patch-level labels reach full frame size: "bilinear" (per-cluster masks, then argmax) or "nearest".
    upsample: Literal["bilinear", "nearest"] = "bilinear"
    # Feed every stride-th frame to the model; skipped frames take the labels of the nearest processed frame.
    # None: 1 on a GPU, CPU_STRIDE on a CPU (see ``for_device``).
    stride: int | None = None
    # "auto" (CUDA when available), "cpu" or "cuda".
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # Input normalisation statistics: "kinetics" (the release's inference) or "imagenet" (its training).
    normalization: Literal["kinetics", "imagenet"] = "kinetics"
    # Precision of the backbone and the correlator: "float32" (as released; strict, no TF32, on CUDA), or "bf16" /
    # "fp16" autocast. Attention and clustering are float32 either way.
    precision: Literal["float32", "bf16", "fp16"] = "float32"
    # Frames per backbone batch.
    batch_size: int = 8
    # Decode frames ahead of the model, and write masks and overlay frames behind it, in background threads; None: on
    # a GPU (where the model would wait for the CPU work), not on a CPU (where the threads only compete with the
    # model for the cores). The results are the same either way.
    background: bool | None = None
    # Frame rate given to the overlay of a frame folder (video files keep their own timing).
    fps: float = 24.0
    # Write overlay.mp4 next to the masks.
    overlay: bool = True
    # Write hierarchy.npz (patch-level labels of every level) next to the masks.
    save_hierarchy: bool = True
    # Opacity of the object colours in the overlay.
    overlay_alpha: float = 0.5
    # Part of the video: from this frame ("120") or time ("12.5s"), included, to this one, excluded (None: all).
    start: str | None = None
    end: str | None = None
    # Exports written next to the masks: "coco" (coco.json, YouTube-VIS layout), "objects" (objects/<id>/*.png),
    # "video" (masks.mp4).
    exports: tuple[str, ...] = ()
    # Most PNGs ``--export objects`` writes (one per object per frame) without being asked for more (0: no limit).
    max_export_files: int = 100_000

    def __post_init__(self) -> None:
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
            (self.fps > 0, f"--fps must be positive, got {self.fps}"),
            (
                self.max_export_files >= 0,
                f"--max-export-files must be 0 (no limit) or more, got {self.max_export_files}",
            ),
            (0.0 <= self.overlay_alpha <= 1.0, f"overlay alpha must be in [0, 1], got {self.overlay_alpha}"),
            (self.upsample in ("bilinear", "nearest"), f"--upsample must be bilinear or nearest, got {self.upsample}"),
            (
                set(self.exports) <= set(EXPORTS),
                f"--export must be one of {', '.join(EXPORTS)}, got "
                f"{', '.join(sorted(set(self.exports) - set(EXPORTS)))}",
            ),
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
        decided = {
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

    def cpu_defaults(self) -> dict[str, str]:
        """The CPU operating point's settings this config leaves to the device (option -> value), each differing
        from the paper's."""
        taken = {
            "--resolution": (self.resolution, f"{CPU_RESOLUTION[0]}x{CPU_RESOLUTION[1]}"),
            "--max-key-frames": (self.max_key_frames, str(CPU_MAX_KEY_FRAMES)),
            "--stride": (self.stride, str(CPU_STRIDE)),
        }
        return {option: value for option, (given, value) in taken.items() if given is None}


# The two known training settings (METHOD.md 3.7): the released script, and the paper's as reported in issue #1.
PRESETS: dict[str, dict[str, Any]] = {
    "release": {"batch_size": 8, "lr": 1e-5, "steps": 60_000},
    "paper": {"batch_size": 16, "lr": 1e-4, "steps": 30_000},
}

# Fields that may change when a run is resumed: they do not change what is learned.
RUNTIME_FIELDS = frozenset({"workers", "log_every", "checkpoint_every", "device", "cache"})


@dataclass(frozen=True)
class TrainConfig:
    """How the temporal correlator is trained (METHOD.md 3); defaults are the release's."""

    # "release" (batch 8, lr 1e-5, 60k steps) or "paper" (batch 16, lr 1e-4, 30k steps); sets the next three.
    preset: Literal["release", "paper"] = "release"
    # Optimizer steps in the whole run (the cosine schedule spans them).
    steps: int = 60_000
    # Clips per step over all processes (split evenly across torchrun processes).
    batch_size: int = 8
    # Peak learning rate, decayed by a cosine without warm-up to min_lr.
    lr: float = 1e-5
    # Learning rate at the end of the schedule.
    min_lr: float = 1e-6
    # AdamW weight decay of the weight matrices (biases and LayerNorms get none).
    weight_decay: float = 0.1
    # Training frame size (height, width), multiples of the patch size.
    resolution: tuple[int, int] = (192, 384)
    # Frames per clip sample.
    frames: int = 3
    # Distance in frames between the sampled frames (shrunk for short clips).
    gap: int = 4
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
    # Use the query's weighted centre as an extra motion positive (the release computes it but leaves it out).
    motion_centre: bool = False
    # Attention the losses see: "dropped" (after attention dropout, the release's) or "clean" (before it).
    loss_attention: Literal["dropped", "clean"] = "dropped"
    # Prepend each frame's last-block CLS token to its keys (the release's training input).
    with_cls: bool = True
    # Correlator dropout on the attention, and after the projection and inside the MLP.
    attn_drop: float = 0.4
    drop: float = 0.1
    # Colour, grayscale and blur augmentation with the same parameters on the frames of a clip.
    augment: bool = True
    # The blur's sigma: once for the whole run of each process ("process", the release's, METHOD.md B17), or drawn
    # for each clip ("clip").
    blur_sigma: Literal["clip", "process"] = "process"
    # Input normalisation: "imagenet" (the release's training) or "kinetics".
    normalization: Literal["kinetics", "imagenet"] = "imagenet"
    # Base seed; the randomness of step s on process r is derived from (seed, s, r).
    seed: int = 0
    # Write last.pt and step-<n>.pt every this many steps (and at the end).
    checkpoint_every: int = 1_000
    # Add a line to metrics.jsonl every this many steps.
    log_every: int = 10
    # Decoding / loading worker processes (default: this machine's cores, at most 8).
    workers: int = field(default_factory=lambda: default_workers())
    # Frame cache folder (None: <run>/cache); frames are decoded once at training size.
    cache: str | None = None
    # "auto" (CUDA when available), "cpu" or "cuda".
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # Precision of the backbone and the correlator: "float32" (as released), or "bf16" / "fp16" autocast (fp16 with
    # loss scaling).
    precision: Literal["float32", "bf16", "fp16"] = "float32"

    def __post_init__(self) -> None:
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
            (self.lr > 0 and 0 <= self.min_lr <= self.lr, f"need 0 <= min lr <= --lr and --lr > 0, got {self.lr}"),
            (self.weight_decay >= 0, f"--weight-decay must be 0 or more, got {self.weight_decay}"),
            (self.gap >= 1, f"--gap must be at least 1, got {self.gap}"),
            (0 <= self.attn_drop < 1 and 0 <= self.drop < 1, "dropout rates must be in [0, 1)"),
            (self.workers >= 0, f"--workers must be 0 or more, got {self.workers}"),
            (
                self.loss_attention in ("dropped", "clean"),
                f"--loss-attention must be dropped or clean, got {self.loss_attention}",
            ),
            (self.blur_sigma in ("clip", "process"), f"--blur-sigma must be clip or process, got {self.blur_sigma}"),
            _precision_check(self.precision),
        ]
        _raise_first(checks + _device_checks(self.device, self.normalization))

    def check_tokens(self, patch: int) -> None:
        """Raise ConfigError unless the resolution fits the patch size and each frame has enough patches."""
        _check_resolution(self.resolution, patch)
        h, w = self.resolution
        n = (h // patch) * (w // patch)
        need = max(self.semantic_pos, self.semantic_neg, self.motion_pos, self.motion_neg, self.points)
        if n < need:
            raise ConfigError(
                f"--resolution {h} {w} gives {n} patches per frame; the losses need at least {need} "
                "(raise the resolution or lower the positive/negative counts)"
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
                f"--resume: --{key.replace('_', '-')} {value} differs from the run's "
                f"{values.get(key)}; resume with the run's settings or start a new run"
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
        if key not in RESULT_FREE:
            out[key] = list(value) if isinstance(value, tuple) else value
    return out


@dataclass(frozen=True)
class Part:
    """This call's share of the inputs in a job array: part ``index`` of ``count`` (0-based), and where that came
    from (``--shard``, or a Slurm array's variables)."""

    index: int = 0
    count: int = 1
    slurm: str | None = None  # "task 3 of 0-9" when read from SLURM_ARRAY_TASK_ID

    def take(self, items: list) -> list:
        """Every count-th item from index on: over the parts, each item goes to exactly one."""
        return items[self.index :: self.count]


def parse_part(text: str) -> Part:
    """``--shard I/N``: part I (0 to N-1) of N.

    Raises:
        ConfigError: not two whole numbers with 0 <= I < N.
    """
    try:
        index, count = (int(x) for x in text.split("/"))
    except ValueError:
        raise ConfigError(
            f"--shard takes I/N, part I (0 to N-1) of N, e.g. --shard 0/4; got {text or 'nothing'}"
        ) from None
    if not 0 <= index < count:
        raise ConfigError(f"--shard {text}: I runs from 0 to N-1 (--shard 0/{max(count, 1)} is the first part)")
    return Part(index, count)


def slurm_part(env: dict[str, str]) -> Part:
    """The part a Slurm array task takes: its place among the array's tasks (SLURM_ARRAY_TASK_ID between
    SLURM_ARRAY_TASK_MIN and _MAX in steps of SLURM_ARRAY_TASK_STEP); the whole list outside an array.

    Raises:
        ConfigError: the variables do not fit together.
    """
    if "SLURM_ARRAY_TASK_ID" not in env:
        return Part()
    try:
        task = int(env["SLURM_ARRAY_TASK_ID"])
        low, high = int(env.get("SLURM_ARRAY_TASK_MIN", task)), int(env.get("SLURM_ARRAY_TASK_MAX", task))
        step = int(env.get("SLURM_ARRAY_TASK_STEP", "1"))
    except ValueError as e:
        raise ConfigError(f"the Slurm array's variables must be integers ({e}); pass --shard I/N") from None
    if step < 1 or not low <= task <= high or (task - low) % step:
        raise ConfigError(f"SLURM_ARRAY_TASK_ID={task} does not fit the array {low}-{high}:{step}; pass --shard I/N")
    count = (high - low) // step + 1
    span = f"{low}-{high}" + (f":{step}" if step > 1 else "")
    told = env.get("SLURM_ARRAY_TASK_COUNT", str(count))
    if told != str(count):  # a list of tasks (--array=3,7: a rerun of the failed ones), not every step of a range
        raise ConfigError(
            f"the Slurm array holds {told} tasks between {low} and {high}, not every step of {span}: "
            "its parts cannot be told from its variables; pass --shard I/N with the part each task "
            "takes of the whole array's (--shard 3/10 for task 3 of --array=0-9)"
        )
    return Part((task - low) // step, count, f"task {task} of {span}")
