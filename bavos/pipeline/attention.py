"""Spatio-temporal attention rows (method.md §3.3-§3.4), produced window by window in bounded memory.

Queries come from every processed frame, keys from the sparse key frames only. For each query token the logits
against all key tokens of all key frames share one softmax; probabilities are averaged over heads. The full
``(T*N, K*N)`` matrix is never built: a window of frames gives ``(w, N, K*N)`` rows, computed head by head and
in row chunks that fit ``budget_bytes``, with each head's softmax taken in place in one reused buffer. A softmax
numerator of at most twice float32's smallest normal number (about 2.4e-38) is 0 rather than a subnormal number
(``underflow_bounds``: no effect on the clustering, and a CPU's ``exp`` is far slower on them; docs/performance.md,
"Where the time goes on a CPU"). The logits are taken in base 2 and exponentiated with ``exp2`` (the same softmax
up to rounding; docs/method.md §3.4). On a GPU, bavos's kernels compute the rows without the logits in memory
(``fused_attention``, method.md §6.6).
"""

from __future__ import annotations

import math
import weakref

import torch
from einops import rearrange
from torch import Tensor
from torch.nn.functional import threshold_  # type: ignore[attr-defined]  # in torch, not in its stubs

from bavos.models.costs import ATTENTION_BLOCK_BYTES
from bavos.models.devices import use_kernels

DEFAULT_BUDGET_BYTES = ATTENTION_BLOCK_BYTES  # the largest logit block (what the cost estimate counts)


def key_frame_indices(num_frames: int, ratio: int, max_keys: int = 0) -> list[int]:
    """Indices of the key frames among ``num_frames`` processed frames.

    ``0, r, 2r, ..., (floor(T/r) - 1) * r`` as in the release, but never empty: a video shorter than the ratio
    gets frame 0 as its one key frame (method.md §7.4). With ``max_keys > 0`` and more candidates than that,
    ``max_keys`` of those candidates evenly spread over the video are kept (first and last included), so the
    attention's cost per frame stops growing with the video's length.
    """
    if num_frames < 1 or ratio < 1 or max_keys < 0:
        raise ValueError(
            f"need at least one frame, a ratio >= 1 and max_keys >= 0, got {num_frames}, {ratio}, {max_keys}"
        )
    keys = [i * ratio for i in range(max(1, num_frames // ratio))]
    if max_keys and len(keys) > max_keys:
        picks = [round(j * (len(keys) - 1) / (max_keys - 1)) for j in range(max_keys)] if max_keys > 1 else [0]
        keys = [keys[j] for j in picks]
    return keys


def underflow_bounds(dtype: torch.dtype) -> tuple[float, float]:
    """(logit floor, numerator floor) of the softmax: base-2 logits (relative to their row's largest) are clamped at
    the first before ``exp2``, and numerators at most the second (twice ``dtype``'s smallest normal number, about
    2.4e-38 in float32) are set to 0.

    Without it such numerators are subnormal numbers or 0; they are below the clustering's probability floor
    (``PROB_FLOOR``, 1e-30) by eight orders of magnitude and below the rounding of the row's sum (at least 1) by
    thirty, but a CPU's vectorised ``exp`` takes a slow path for every logit under about -87 (``exp2`` under -126;
    how much slower: docs/performance.md, "Where the time goes on a CPU"), and sharp attention is mostly made of
    them. The clamp keeps the results normal numbers, so the slow path is never taken.
    """
    tiny = torch.finfo(dtype).tiny
    return math.log2(tiny) + 0.01, 2 * tiny


def window_attention(q: Tensor, k: Tensor, scale: float, budget_bytes: int = DEFAULT_BUDGET_BYTES) -> Tensor:
    """Head-averaged attention of a window of query frames over all key frames.

    Args:
        q: (w, heads, N, d) queries of the window's frames.
        k: (K, heads, N, d) keys of the key frames.
        scale: logit scale (head_dim ** -0.5).
        budget_bytes: largest logit block computed at once.

    Returns:
        (w, N, K*N) rows, each a probability distribution over the K*N key tokens (float32 or q's dtype if wider);
        an entry whose softmax numerator is at most ``underflow_bounds(dtype)[1]`` is 0.
    """
    dtype = torch.promote_types(q.dtype, torch.float32)
    if use_kernels(q.device) and dtype == torch.float32:
        return fused_attention(q, k, scale)
    w, heads, n, _ = q.shape
    queries, keys = _base2(q, k, scale, dtype)
    m = keys.shape[1]
    low, floor = underflow_bounds(dtype)
    out = torch.zeros(w * n, m, dtype=dtype, device=q.device)  # (w*N, K*N)
    rows = max(1, budget_bytes // (m * out.element_size()))
    logits = out.new_empty(min(rows, w * n), m)  # one buffer for every head and block: no allocation per head
    for start in range(0, w * n, rows):
        block = out[start : start + rows]
        buf = logits[: block.shape[0]]
        for h in range(heads):  # softmax in place, each head's probabilities added with weight 1 / heads
            torch.mm(queries[h, start : start + rows], keys[h].T, out=buf)
            buf -= buf.amax(1, keepdim=True)
            threshold_(torch.exp2(buf.clamp_min_(low), out=buf), floor, 0.0)  # no subnormals (underflow_bounds)
            block.addcdiv_(buf, buf.sum(1, keepdim=True), value=1 / heads)
    return out.reshape(w, n, m)  # (w, N, K*N)


def _base2(q: Tensor, k: Tensor, scale: float, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """(heads, w*N, d) queries with the scale and log2(e) folded in, and (heads, K*N, d) keys: their products are
    base-2 logits, whose exp2 is e**logit (a CPU computes exp2 faster than exp: docs/performance.md, "Where the time
    goes on a CPU"; the same softmax up to rounding)."""
    queries = rearrange(q.to(dtype) * (scale * math.log2(math.e)), "w h n d -> h (w n) d").contiguous()
    return queries, _laid_out_keys(k, dtype)


_LAID_OUT: dict[int, tuple[int, torch.dtype, Tensor]] = {}  # id of a key set -> its version, the dtype, the layout


def _laid_out_keys(k: Tensor, dtype: torch.dtype) -> Tensor:
    """(heads, K*N, d) keys of a (K, heads, N, d) key set, laid out once for every window of a video (each attends to
    the same key set): kept while that very tensor lives unchanged, and let go with it."""
    held = _LAID_OUT.get(id(k))
    if held is not None and held[0] == k._version and held[1] == dtype:
        return held[2]
    if held is None:
        weakref.finalize(k, _LAID_OUT.pop, id(k), None)  # before its id can name another tensor
    keys = rearrange(k.to(dtype), "k h n d -> h (k n) d").contiguous()
    _LAID_OUT[id(k)] = (k._version, dtype, keys)
    return keys


def fused_attention(q: Tensor, k: Tensor, scale: float) -> Tensor:
    """``window_attention`` in Triton's two kernels (``bavos.pipeline.fused``): the logits never in memory, the rows
    written once. The same (w, N, K*N) rows up to rounding (``bavos.models.devices.use_kernels`` says where)."""
    from bavos.pipeline.fused import attention_rows  # Triton: imported only where it runs

    dtype = torch.promote_types(q.dtype, torch.float32)
    w, _, n, _ = q.shape
    queries, keys = _base2(q, k, scale, dtype)
    low, floor = underflow_bounds(dtype)
    return attention_rows(queries, keys, low, floor).reshape(w, n, keys.shape[1])  # (w, N, K*N)
