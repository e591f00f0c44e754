"""Spatio-temporal attention rows (METHOD.md 2.3-2.4), produced window by window in bounded memory.

Queries come from every processed frame, keys from the sparse key frames only. For each query token the logits
against all key tokens of all key frames share one softmax; probabilities are averaged over heads. The full
``(T*N, K*N)`` matrix is never built: a window of frames gives ``(w, N, K*N)`` rows, computed head by head and
in row chunks that fit ``budget_bytes``, with each head's softmax taken in place in one reused buffer.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from einops import rearrange
from torch import Tensor

DEFAULT_BUDGET_BYTES = 256 * 2**20


def key_frame_indices(num_frames: int, ratio: int, max_keys: int = 0) -> list[int]:
    """Indices of the key frames among ``num_frames`` processed frames.

    ``0, r, 2r, ..., (floor(T/r) - 1) * r`` as in the release, but never empty: a video shorter than the ratio
    gets frame 0 as its one key frame (decision 7.4). With ``max_keys > 0`` and more candidates than that,
    ``max_keys`` of those candidates evenly spread over the video are kept (first and last included), so the
    attention's cost per frame stops growing with the video's length.
    """
    if num_frames < 1 or ratio < 1 or max_keys < 0:
        raise ValueError(f"need at least one frame, a ratio >= 1 and max_keys >= 0, got {num_frames}, {ratio}, "
                         f"{max_keys}")
    keys = [i * ratio for i in range(max(1, num_frames // ratio))]
    if max_keys and len(keys) > max_keys:
        picks = [round(j * (len(keys) - 1) / (max_keys - 1)) for j in range(max_keys)] if max_keys > 1 else [0]
        keys = [keys[j] for j in picks]
    return keys


def window_attention(q: Tensor, k: Tensor, scale: float, budget_bytes: int = DEFAULT_BUDGET_BYTES) -> Tensor:
    """Head-averaged attention of a window of query frames over all key frames.

    Args:
        q: (w, heads, N, d) queries of the window's frames.
        k: (K, heads, N, d) keys of the key frames.
        scale: logit scale (head_dim ** -0.5).
        budget_bytes: largest logit block computed at once.

    Returns:
        (w, N, K*N) rows, each a probability distribution over the K*N key tokens (float32 or q's dtype if wider).
    """
    dtype = torch.promote_types(q.dtype, torch.float32)
    w, heads, n, _ = q.shape
    queries = rearrange(q.to(dtype) * scale, "w h n d -> h (w n) d")  # (heads, w*N, d), scale folded in
    keys = rearrange(k.to(dtype), "k h n d -> h (k n) d")  # (heads, K*N, d)
    m = keys.shape[1]
    out = torch.zeros(w * n, m, dtype=dtype, device=q.device)  # (w*N, K*N)
    rows = max(1, budget_bytes // (m * out.element_size()))
    logits = out.new_empty(min(rows, w * n), m)  # one buffer for every head and block: no allocation per head
    for start in range(0, w * n, rows):
        block = out[start : start + rows]
        buf = logits[: block.shape[0]]
        for h in range(heads):  # softmax in place, each head's probabilities added with weight 1 / heads
            torch.mm(queries[h, start : start + rows], keys[h].T, out=buf)
            buf -= buf.amax(1, keepdim=True)
            buf.exp_()
            block.addcdiv_(buf, buf.sum(1, keepdim=True), value=1 / heads)
    return out.reshape(w, n, m)  # (w, N, K*N)


class AttentionWindows:
    """The attention rows of consecutive windows of ``window`` frames (the last may be shorter), in order.

    Iterating computes each window's rows with ``window_attention``. The first pass also keeps every window whose
    rows fit what is left of ``cache_bytes`` (where they were computed: GPU memory on CUDA); the second pass
    hands those over instead of computing them again and lets them go as it goes, so memory never holds more than
    ``cache_bytes`` of rows beyond the window in use. Later passes compute everything again. Rows handed out must
    not be modified in place.

    Args:
        q: (T, heads, N, d) queries of every processed frame (any device; moved to ``k``'s device per window).
        k: (K, heads, N, d) keys of the key frames.
        scale: logit scale.
        window: frames per window.
        cache_bytes: rows kept from the first pass for the second (0: the second pass computes them again).
        budget_bytes: largest logit block computed at once.
    """

    def __init__(self, q: Tensor, k: Tensor, scale: float, window: int, cache_bytes: int = 0,
                 budget_bytes: int = DEFAULT_BUDGET_BYTES) -> None:
        self.q, self.k, self.scale, self.window = q, k, scale, window
        self.cache_bytes, self.budget_bytes = cache_bytes, budget_bytes
        self._kept: dict[int, Tensor] = {}
        self._passes = 0

    def __len__(self) -> int:
        return -(-self.q.shape[0] // self.window)

    @property
    def kept_bytes(self) -> int:
        """Bytes of rows held for the next pass."""
        return sum(rows.nbytes for rows in self._kept.values())

    def __iter__(self) -> Iterator[Tensor]:
        self._passes += 1
        room = self.cache_bytes if self._passes == 1 else 0
        for i in range(len(self)):
            rows = self._kept.pop(i, None)
            if rows is None:
                start = i * self.window
                q = self.q[start : start + self.window].to(self.k.device)
                rows = window_attention(q, self.k, self.scale, self.budget_bytes)
                if rows.nbytes <= room:
                    self._kept[i] = rows
                    room -= rows.nbytes
            yield rows
