"""Output ids: clusters numbered by decreasing area, and patch-grid ids brought up to the frame's size."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from bavos.errors import ConfigError

MAX_IDS_8BIT = 255  # ids 0..254 fit an 8-bit indexed PNG, 255 is DAVIS's void label
MAX_IDS = 65536  # more clusters than MAX_IDS_8BIT are written as 16-bit PNGs, ids 0..65535


def ids_by_area(counts: np.ndarray) -> np.ndarray:
    """Map cluster index -> output id by decreasing token count (id 0 = the largest); absent clusters get -1.

    Raises:
        ConfigError: more than 65,536 clusters have tokens (more than a 16-bit mask holds).
    """
    present = np.flatnonzero(counts)
    if len(present) > MAX_IDS:
        raise ConfigError(f"{len(present)} clusters do not fit a 16-bit mask ({MAX_IDS} at most); "
                          "lower the count with --max-objects")
    order = present[np.argsort(-counts[present], kind="stable")]
    mapping = np.full(len(counts), -1, dtype=np.int64)
    mapping[order] = np.arange(len(order))
    return mapping


def _interp_matrix(out_size: int, in_size: int) -> Tensor:
    """(out, in) bilinear interpolation weights, as F.interpolate(mode="bilinear", align_corners=False)."""
    src = ((torch.arange(out_size, dtype=torch.float64) + 0.5) * (in_size / out_size) - 0.5).clamp_min(0)
    lo = src.floor().long().clamp_max(in_size - 1)
    hi = (lo + 1).clamp_max(in_size - 1)
    frac = (src - lo).to(torch.float32)
    m = torch.zeros(out_size, in_size)
    m[torch.arange(out_size), lo] += 1 - frac
    m[torch.arange(out_size), hi] += frac
    return m


def upsample_ids(ids: np.ndarray, size: tuple[int, int], mode: str, band: int = 256) -> np.ndarray:
    """Patch-grid ids (h, w) -> (H, W) ids at frame size, of the same dtype.

    "bilinear": each present id's mask is upsampled bilinearly and every pixel takes the id of the largest value
    (computed in bands of rows, so 4000x3000 frames stay in bounded memory); "nearest": nearest neighbour.
    """
    height, width = size
    grid = torch.from_numpy(ids.astype(np.int64))
    if mode == "nearest":
        up = F.interpolate(grid[None, None].float(), size=size, mode="nearest")[0, 0]
        return up.numpy().astype(ids.dtype)
    present = torch.unique(grid)
    if len(present) == 1:
        return np.full(size, int(present[0]), dtype=ids.dtype)
    masks = (grid[None] == present[:, None, None]).float()  # (k, h, w)
    rows, cols = _interp_matrix(height, grid.shape[0]), _interp_matrix(width, grid.shape[1])
    right = masks @ cols.T  # (k, h, W)
    out = np.empty(size, dtype=ids.dtype)
    for start in range(0, height, band):
        scores = torch.einsum("yh,khx->kyx", rows[start : start + band], right)  # (k, band, W)
        out[start : start + band] = present[scores.argmax(0)].numpy()
    return out


def nearest_processed(index: int, stride: int, count: int) -> int:
    """Position in the processed frames of the one nearest to decoded frame ``index`` (ties: the earlier)."""
    return min((2 * index + stride - 1) // (2 * stride), count - 1)
