"""An independent reference of what `bavos segment` computes, written from method.md §2-§3 only.

Nothing here calls bavos: the ViT-S/8 forward pass is written out from the raw state dict (patch convolution, CLS,
DINO's positional-embedding resize computed in NumPy, 12 pre-norm blocks), the correlator's queries and keys come
from its LayerNorm and the two first thirds of its qkv weight, the attention is one softmax over every key token
of every key frame, averaged over heads (float64), and the clustering is ``reference_cluster.vector_partition``.
It is slow and for tests only.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from reference_cluster import vector_partition
from torch import Tensor

KINETICS = ((0.43216, 0.394666, 0.37645), (0.22803, 0.22145, 0.216989))


def _cubic(t: float, a: float = -0.75) -> list[float]:
    """Keys' cubic convolution weights of the 4 neighbours at offsets -1, 0, 1, 2 from floor(src)."""

    def near(x: float) -> float:  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x: float) -> float:  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    return [far(t + 1), near(t), near(1 - t), far(2 - t)]


def _resize_axis(arr: np.ndarray, axis: int, scale: float) -> np.ndarray:
    """Bicubic resize of one axis by a scale factor, the source coordinate being (dst + 0.5) / scale - 0.5."""
    size = arr.shape[axis]
    rows = []
    for dst in range(math.floor(size * scale)):
        src = (dst + 0.5) / scale - 0.5
        base = math.floor(src)
        weights = _cubic(src - base)
        rows.append(
            sum(w * np.take(arr, min(max(base - 1 + k, 0), size - 1), axis=axis) for k, w in enumerate(weights))
        )
    return np.stack(rows, axis=axis)


def reference_pos_embed(pos: np.ndarray, base: int, grid: tuple[int, int]) -> np.ndarray:
    """DINO's positional-embedding resize, written from its description: (1 + base**2, D) -> (1 + h * w, D)."""
    h, w = grid
    if (h, w) == (base, base):
        return pos
    patches = pos[1:].reshape(base, base, -1).astype(np.float64)
    patches = _resize_axis(_resize_axis(patches, 0, (h + 0.1) / base), 1, (w + 0.1) / base)
    assert patches.shape[:2] == (h, w)
    return np.concatenate([pos[:1], patches.reshape(h * w, -1)])


def vit_last_keys(encoder: dict[str, Tensor], x: Tensor, patch: int = 8, head_dim: int = 64) -> Tensor:
    """Last-block keys of the patch tokens, heads concatenated in head-major order: (B, 3, H, W) -> (B, N, D)."""
    p = {k: v.to(x.dtype) for k, v in encoder.items()}
    z = F.conv2d(x, p["patch_embed.proj.weight"], p["patch_embed.proj.bias"], stride=patch)  # (B, D, h, w)
    b, d, h, w = z.shape
    z = torch.cat([p["cls_token"].expand(b, -1, -1), z.flatten(2).transpose(1, 2)], dim=1)  # (B, 1 + N, D)
    base = math.isqrt(p["pos_embed"].shape[1] - 1)
    z = z + torch.from_numpy(reference_pos_embed(p["pos_embed"][0].double().numpy(), base, (h, w))).to(x.dtype)
    depth = 1 + max(int(k.split(".")[1]) for k in p if k.startswith("blocks."))
    heads = d // head_dim
    for i in range(depth):
        blk = f"blocks.{i}."
        u = F.layer_norm(z, (d,), p[blk + "norm1.weight"], p[blk + "norm1.bias"], eps=1e-6)
        qkv = F.linear(u, p[blk + "attn.qkv.weight"], p[blk + "attn.qkv.bias"])  # (B, 1 + N, 3D)
        if i == depth - 1:
            return qkv[:, 1:, d : 2 * d]
        q, k, v = qkv.reshape(b, -1, 3, heads, head_dim).permute(2, 0, 3, 1, 4)  # each (B, heads, L, d)
        mixed = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(d)) v, fused
        z = z + F.linear(
            mixed.transpose(1, 2).reshape(b, -1, d), p[blk + "attn.proj.weight"], p[blk + "attn.proj.bias"]
        )
        u = F.layer_norm(z, (d,), p[blk + "norm2.weight"], p[blk + "norm2.bias"], eps=1e-6)
        z = z + F.linear(
            F.gelu(F.linear(u, p[blk + "mlp.fc1.weight"], p[blk + "mlp.fc1.bias"])),
            p[blk + "mlp.fc2.weight"],
            p[blk + "mlp.fc2.bias"],
        )
    raise AssertionError("unreachable")


def correlator_qk(block: dict[str, Tensor], keys: Tensor, heads: int = 8) -> tuple[Tensor, Tensor]:
    """(T, N, D) backbone keys -> correlator queries and keys (T, heads, N, D / heads)."""
    d = keys.shape[-1]
    u = F.layer_norm(keys, (d,), block["norm1.weight"].to(keys.dtype), block["norm1.bias"].to(keys.dtype), eps=1e-5)
    weight = block["attn.qkv.weight"].to(keys.dtype)
    q, k = u @ weight[:d].T, u @ weight[d : 2 * d].T
    split = (keys.shape[0], keys.shape[1], heads, d // heads)
    return q.reshape(split).transpose(1, 2), k.reshape(split).transpose(1, 2)


def spatio_temporal_attention(q: Tensor, k: Tensor, ratio: int) -> Tensor:
    """(T, N, K*N) float64: every query token's one softmax over all tokens of the key frames 0, r, 2r, ...
    (floor(T / r) of them, at least one), averaged over heads."""
    t, heads, n, d = q.shape
    keys = list(range(0, max(1, t // ratio) * ratio, ratio))
    kk = torch.cat([k[j] for j in keys], dim=1).double()  # (heads, K*N, d)
    out = torch.zeros(t, n, len(keys) * n, dtype=torch.float64)
    for frame in range(t):
        for h in range(heads):
            out[frame] += (q[frame, h].double() @ kk[h].T / math.sqrt(d)).softmax(-1) / heads
    return out


def reference_segment(
    frames: list[np.ndarray],
    release: dict[str, Tensor],
    tau: float = 1.0,
    window: int = 3,
    ratio: int = 10,
    dtype: torch.dtype = torch.float32,
) -> np.ndarray:
    """(T, N) converged-level labels of frames already at the model's size, with a release-layout state dict.

    Args:
        frames: (H, W, 3) uint8 RGB, H and W multiples of 8.
        release: the release's ``model_state_dict`` (``encoder.*``, ``temporal_transformer.0.*``).
        dtype: of the backbone and correlator (the attention and clustering are float64).
    """
    encoder = {k.removeprefix("encoder."): v for k, v in release.items() if k.startswith("encoder.")}
    block = {
        k.removeprefix("temporal_transformer.0."): v
        for k, v in release.items()
        if k.startswith("temporal_transformer.0.")
    }
    mean, std = (torch.tensor(s, dtype=dtype).view(1, 3, 1, 1) for s in KINETICS)
    with torch.no_grad():
        x = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).to(dtype) / 255  # (T, 3, H, W)
        q, k = correlator_qk(block, vit_last_keys(encoder, (x - mean) / std))
        attn = spatio_temporal_attention(q, k, ratio)
    return vector_partition(attn.numpy(), tau, window)
