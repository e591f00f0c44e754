"""The networks of a run: the frozen backbone and the correlator, loaded once, and the queries and keys they give a
batch of frames."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from bavos.config import NORMALIZATION, ModelConfig, SegmentConfig
from bavos.errors import WeightsError
from bavos.models.backbone import Backbone, build_backbone
from bavos.models.correlator import Correlator, load_correlator
from bavos.models.devices import precision_context, resolve_device
from bavos.models.hub import Download
from bavos.models.weights import WeightsPlan, plan_weights


@dataclass
class Models:
    """The networks of a run, loaded once and reused for every input.

    Attributes:
        config: the model config as resolved (backbone name and weights filled in).
        weights: which weights were used and where each came from.
        requested: the model config as asked (None: decided by the checkpoint).
    """

    backbone: Backbone
    correlator: Correlator | None
    device: torch.device
    config: ModelConfig
    weights: WeightsPlan
    requested: ModelConfig

    @property
    def scale(self) -> float:
        """Logit scale of the attention that is clustered."""
        return self.correlator.scale if self.correlator is not None else self.backbone.scale

    @property
    def heads(self) -> int:
        """Heads of the attention that is clustered."""
        return self.correlator.heads if self.correlator is not None else self.backbone.num_heads


def load_models(
    config: ModelConfig,
    device: str = "auto",
    index: int | None = None,
    progress: Download | None = None,
    plan: WeightsPlan | None = None,
) -> Models:
    """Build the frozen backbone and the correlator (on CUDA device ``index``) as ``plan_weights`` resolves them.

    Args:
        progress: reports the download of the paper's checkpoint, when it is not cached yet.
        plan: the weights, when already planned (``plan_weights(config)``).
    """
    dev = resolve_device(device, index)
    plan = plan or plan_weights(config, progress)
    try:
        backbone = build_backbone(plan.backbone, plan.backbone_weights, plan.backbone_loaded, progress).to(dev)
    except WeightsError as e:
        if plan.backbone_weights_from != "checkpoint":
            raise
        raise WeightsError(
            f"{e} (the backbone weights recorded in {plan.checkpoint_file}; pass --backbone-weights to use others)"
        ) from e
    correlator = None
    if plan.checkpoint_file is None and plan.backbone_weights == "none":
        backbone.sharpen()  # the weightless mode: clusters that show the pipeline at work (still meaningless)
    if plan.checkpoint_file is not None:
        correlator = load_correlator(plan.checkpoint_file, backbone.embed_dim, config.correlator_heads, plan.loaded).to(
            dev
        )
    return Models(backbone, correlator, dev, plan.model_config(config), replace(plan, loaded=None), config)


PREPROCESS_CHUNK_BYTES = 64 * 2**20  # float frames at frame size converted together at most (one frame at least)


def _preprocess(images: list[np.ndarray] | Tensor, cfg: SegmentConfig, device: torch.device) -> Tensor:
    """(H, W, 3) uint8 frames, or a (B, H, W, 3) uint8 batch (pinned: copied without waiting) -> (B, 3, h, w)
    normalised, resized bilinearly (no antialiasing, as released)."""
    batch = images if isinstance(images, Tensor) else torch.from_numpy(np.stack(images))
    batch = batch.to(device, non_blocking=True).permute(0, 3, 1, 2)  # (B, 3, H, W) uint8
    # a few frames at a time: float frames at their size (100 MB each at 4K) never all at once; each frame's
    # result is the same whatever the chunk (interpolation and division are per pixel)
    chunk = max(1, PREPROCESS_CHUNK_BYTES // max(1, 4 * batch[0].numel()))
    x = torch.cat(
        [
            F.interpolate(
                part.float().div_(255), size=cfg.resolution, mode="bilinear", align_corners=False, antialias=False
            )
            for part in batch.split(chunk)
        ]
    )  # (B, 3, h, w)
    mean, std = (torch.tensor(v, device=device).view(1, 3, 1, 1) for v in NORMALIZATION[cfg.normalization])
    return (x - mean) / std


@torch.no_grad()
def frame_tokens(models: Models, cfg: SegmentConfig, images: list[np.ndarray] | Tensor) -> tuple[Tensor, Tensor]:
    """Queries and keys of a batch of frames ((H, W, 3) uint8 arrays or a (B, H, W, 3) uint8 tensor): (B, heads, N,
    d) each, float32, on the models' device."""
    x = _preprocess(images, cfg, models.device)
    with precision_context(models.device, cfg.precision):  # float32 unless bf16 / fp16 was asked for
        out = models.backbone(x)
        if models.correlator is not None:
            q, k = models.correlator.query_key(out.keys)
        else:
            q, k = out.q, out.k
    return q.float(), k.float()
