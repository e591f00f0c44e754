"""Frozen configuration dataclasses. CLI options map one-to-one onto these fields.

The resolved configuration is written into every output (``summary.json``) and every checkpoint.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from bavos.errors import ConfigError

DEFAULT_BACKBONE = "vit_small_patch8_224.dino"

# Per-channel statistics used to normalise frames (METHOD.md 1.4, decision 7.5).
NORMALIZATION: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "kinetics": ((0.43216, 0.394666, 0.37645), (0.22803, 0.22145, 0.216989)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}


@dataclass(frozen=True)
class ModelConfig:
    """Which networks to build and where their weights come from."""

    # timm model name of the frozen ViT backbone (DINO ViT-S/8 by default; tests use "bavos_test_vit").
    backbone: str = DEFAULT_BACKBONE
    # "hub" (timm download/cache), "none" (random weights, explicit), or a path to a local weights file.
    backbone_weights: str = "hub"
    # Path to a correlator checkpoint (bavos or the paper's release); None = training-free mode (METHOD.md 7.9).
    checkpoint: str | None = None
    # Number of heads of the temporal correlator (8 in the paper; head width = backbone width / heads).
    correlator_heads: int = 8


@dataclass(frozen=True)
class SegmentConfig:
    """How one video is segmented and what is written."""

    # Model input size (height, width), multiples of the backbone's patch size (METHOD.md 1.5).
    resolution: tuple[int, int] = (320, 480)
    # Every key_ratio-th processed frame is a key frame; at least one key frame always (METHOD.md 2.3, 7.4).
    key_ratio: int = 10
    # At most this many key frames, spread evenly over the video (0 = no limit): bounds time and memory per frame.
    max_key_frames: int = 0
    # Symmetric-KL merge threshold of the hierarchical clustering (METHOD.md 2.6).
    tau: float = 1.0
    # Frames per level-1 clustering window (METHOD.md 2.6, ts = 3).
    window: int = 3
    # Hierarchy level to cut: 0 = per-window clusters, 1.. = global merge rounds; None = the converged level.
    level: int | None = None
    # Merge the closest clusters past convergence until at most this many remain (0 = no limit).
    max_objects: int = 20
    # How patch-level labels reach full frame size: "bilinear" (per-cluster masks, then argmax) or "nearest".
    upsample: Literal["bilinear", "nearest"] = "bilinear"
    # Feed every stride-th frame to the model; skipped frames take the labels of the nearest processed frame.
    stride: int = 1
    # "auto" (CUDA when available), "cpu" or "cuda".
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # Input normalisation statistics: "kinetics" (the release's inference) or "imagenet" (its training).
    normalization: Literal["kinetics", "imagenet"] = "kinetics"
    # Frames per backbone batch.
    batch_size: int = 8
    # Frame rate given to the overlay of a frame folder (video files keep their own timing).
    fps: float = 24.0
    # Write overlay.mp4 next to the masks.
    overlay: bool = True
    # Write hierarchy.npz (patch-level labels of every level) next to the masks.
    save_hierarchy: bool = True
    # Opacity of the object colours in the overlay.
    overlay_alpha: float = 0.5

    def __post_init__(self) -> None:
        h, w = self.resolution
        checks = [
            (h > 0 and w > 0, f"--resolution must be positive, got {h} {w}"),
            (self.key_ratio >= 1, f"--key-ratio must be at least 1, got {self.key_ratio}"),
            (self.max_key_frames >= 0, f"--max-key-frames must be 0 (no limit) or more, got {self.max_key_frames}"),
            (self.tau > 0, f"--tau must be positive, got {self.tau}"),
            (self.window >= 1, f"--window must be at least 1, got {self.window}"),
            (self.level is None or self.level >= 0, f"--level must be 0 or more, got {self.level}"),
            (0 <= self.max_objects <= 255, f"--max-objects must be in 0..255 (0 = no limit), got {self.max_objects}"),
            (self.stride >= 1, f"--stride must be at least 1, got {self.stride}"),
            (self.batch_size >= 1, f"--batch-size must be at least 1, got {self.batch_size}"),
            (self.fps > 0, f"--fps must be positive, got {self.fps}"),
            (0.0 <= self.overlay_alpha <= 1.0, f"overlay alpha must be in [0, 1], got {self.overlay_alpha}"),
            (self.upsample in ("bilinear", "nearest"), f"--upsample must be bilinear or nearest, got {self.upsample}"),
            (self.device in ("auto", "cpu", "cuda"), f"--device must be auto, cpu or cuda, got {self.device}"),
            (self.normalization in NORMALIZATION,
             f"--normalization must be kinetics or imagenet, got {self.normalization}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

    def check_patch(self, patch: int) -> None:
        """Raise ConfigError unless the resolution is a multiple of the backbone's patch size."""
        h, w = self.resolution
        if h % patch or w % patch:
            raise ConfigError(f"--resolution {h} {w} must be a multiple of the patch size {patch} in both sides")


def to_dict(*configs: ModelConfig | SegmentConfig) -> dict[str, Any]:
    """Flatten configs into one JSON-ready dict keyed by config class name."""
    out: dict[str, Any] = {}
    for cfg in configs:
        out[type(cfg).__name__] = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()}
    return out
