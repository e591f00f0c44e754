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
        raise ConfigError(
            f"{len(present)} clusters do not fit a 16-bit mask ({MAX_IDS} at most); lower the count with --max-objects"
        )
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


def _corners(out_size: int, in_size: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The two input indices each output index interpolates between and their weights (float64 of
    ``_interp_matrix``'s float32 ones; the second weight 0 where both indices are the same, at the edges)."""
    m = _interp_matrix(out_size, in_size)  # (out, in), at most two nonzero entries a row
    nonzero = m.ne(0).int()
    lo = nonzero.argmax(1)
    hi = (in_size - 1) - nonzero.flip(1).argmax(1)
    rows = torch.arange(out_size)
    return lo, hi, m[rows, lo].double(), torch.where(hi != lo, m[rows, hi], 0.0).double()


def upsample_ids(
    ids: np.ndarray, size: tuple[int, int], mode: str, band: int = 256, device: torch.device | None = None
) -> np.ndarray:
    """Patch-grid ids (h, w) -> (H, W) ids at frame size, of the same dtype, computed on ``device`` (default the
    CPU; a GPU gives the same ids, every operation being exact or correctly rounded alike).

    "bilinear": each id's mask upsampled bilinearly (as ``F.interpolate(align_corners=False)``), every pixel taking
    the id of the largest value, ties to the lowest id. A pixel interpolates between four patches, so only their ids
    can win: each one's value is the sum of the weights of the corners holding it (in float64, from the float32
    interpolation weights), whatever the number of ids in the frame; computed in bands of rows, so 4000x3000 frames
    stay in bounded memory. "nearest": nearest neighbour.
    """
    height, width = size
    grid = torch.from_numpy(ids.astype(np.int64)).to(device or "cpu")
    if mode == "nearest":
        up = F.interpolate(grid[None, None].float(), size=size, mode="nearest")[0, 0]
        return up.cpu().numpy().astype(ids.dtype)
    if bool((grid == grid.view(-1)[0]).all()):  # one id
        return np.full(size, int(ids.flat[0]), dtype=ids.dtype)
    y0, y1, wy0, wy1 = (t.to(grid.device) for t in _corners(height, grid.shape[0]))
    x0, x1, wx0, wx1 = (t.to(grid.device) for t in _corners(width, grid.shape[1]))
    out = np.empty(size, dtype=ids.dtype)
    for start in range(0, height, band):
        top, bottom = grid[y0[start : start + band]], grid[y1[start : start + band]]  # (band, w)
        corner = [top[:, x0], top[:, x1], bottom[:, x0], bottom[:, x1]]  # (band, W) ids of the four corners
        a, b = wy0[start : start + band, None], wy1[start : start + band, None]
        weight = [a * wx0, a * wx1, b * wx0, b * wx1]
        value = [w.clone() for w in weight]  # each corner's id's value: its weight and those of its equals
        for i in range(4):
            for j in range(i + 1, 4):
                same = corner[i] == corner[j]
                value[i] += weight[j] * same
                value[j] += weight[i] * same
        best, best_id = value[0], corner[0]
        for i in range(1, 4):
            better = (value[i] > best) | ((value[i] == best) & (corner[i] < best_id))
            best, best_id = torch.where(better, value[i], best), torch.where(better, corner[i], best_id)
        out[start : start + band] = best_id.cpu().numpy()
    return out


def nearest_processed(index: int, stride: int, count: int) -> int:
    """Position in the processed frames of the one nearest to decoded frame ``index`` (ties: the earlier)."""
    return min((2 * index + stride - 1) // (2 * stride), count - 1)
