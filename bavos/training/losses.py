"""The two self-supervised losses of the temporal correlator (method.md §4.3-§4.5).

Both read the correlator's head-mean attention of a clip, ``attn: (B, T*N, T*N)`` (CLS rows and columns
removed, so rows sum to about 1, not exactly), at ``P`` query positions of each clip, shared by the frames of that
clip (``points: (B, P)``, drawn per clip as the release does with one clip per GPU; ``(P,)`` shares them over the
batch). Token ``t * N + n`` is patch ``n`` of frame ``t``. Rankings are taken without gradient
(``topk`` on detached attention); the scores they select carry the gradient.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from bavos.config import TrainConfig

LOG_EPS = 1e-10  # added inside the logs of the motion loss, as released


@dataclass
class Losses:
    """Loss terms of one step (scalars); ``total = semantic_pos + semantic_neg + motion``."""

    semantic_pos: Tensor
    semantic_neg: Tensor
    motion: Tensor

    @property
    def semantic(self) -> Tensor:
        return self.semantic_pos + self.semantic_neg

    @property
    def total(self) -> Tensor:
        return self.semantic_pos + self.semantic_neg + self.motion


def query_tokens(points: Tensor, frames: int, n: int) -> Tensor:
    """Token indices of the query positions in every frame, frame-major: ``t * N + points[..., p]``.

    Args:
        points: (P,) or (B, P) patch indices.

    Returns:
        (T * P,) or (B, T * P).
    """
    tokens = torch.arange(frames, device=points.device)[:, None] * n + points[..., None, :]  # (..., T, P)
    return tokens.reshape(*points.shape[:-1], -1)


def _per_clip(points: Tensor, b: int) -> Tensor:
    """(B, P) points: per-clip points as they are, shared (P,) points repeated for each clip."""
    return points if points.ndim == 2 else points.expand(b, -1)


def _take(x: Tensor, rows: Tensor) -> Tensor:
    """Rows ``rows`` (B, R) of each clip's x (B, L, C): (B, R, C)."""
    return x.gather(1, rows[..., None].expand(-1, -1, x.shape[-1]))


def semantic_loss(
    attn: Tensor,
    feats: Tensor,
    points: Tensor,
    pos: int = 30,
    neg: int = 200,
    pos_threshold: float = 0.9,
    neg_threshold: float = 0.1,
) -> tuple[Tensor, Tensor]:
    """Semantic consistency on the correlator's output features (method.md §4.4).

    For each query (frame s, point n) and every frame t (t = s included), the ``pos`` patches of t it attends
    most are pulled above cosine ``pos_threshold`` and the ``neg`` it attends least pushed below
    ``neg_threshold``, with hinges averaged separately.

    Args:
        attn: (B, T*N, T*N) attention.
        feats: (B, T, N, D) output tokens of the correlator.
        points: (B, P) patch indices of each clip's query positions, or (P,) shared by the batch.

    Returns:
        (positive term, negative term), scalars.
    """
    b, t, n, d = feats.shape
    unit = F.normalize(feats, dim=-1).reshape(b, t * n, d)  # (B, T*N, D)
    rows = query_tokens(_per_clip(points, b), t, n)  # (B, T*P)
    q = rows.shape[1]
    cos = (_take(unit, rows) @ unit.transpose(1, 2)).reshape(b, q, t, n)  # (B, T*P, T, N)
    ranked = _take(attn.detach(), rows).reshape(b, q, t, n)
    top = ranked.topk(pos, dim=-1).indices  # (B, T*P, T, pos)
    bottom = ranked.topk(neg, dim=-1, largest=False).indices  # (B, T*P, T, neg)
    pos_term = (pos_threshold - cos.gather(-1, top)).clamp_min(0).mean()
    neg_term = (cos.gather(-1, bottom) - neg_threshold).clamp_min(0).mean()
    return pos_term, neg_term


def _rows(attn: Tensor, tokens: Tensor) -> Tensor:
    """Rows ``tokens`` (B, ...) of attn (B, L, L), L1-normalised: (B, ..., L)."""
    b, length, _ = attn.shape
    picked = attn.gather(1, tokens.reshape(b, -1, 1).expand(-1, -1, length))  # (B, prod(...), L)
    picked = picked / picked.sum(-1, keepdim=True).clamp_min(1e-30)
    return picked.reshape(*tokens.shape, length)


def motion_loss(
    attn: Tensor, points: Tensor, frames: int, pos: int = 10, neg: int = 50, margin: float = 1.0, centre: bool = False
) -> Tensor:
    """Motion consistency with entropy weighting (method.md §4.5).

    For query (frame t, point n), its L1-normalised attention row ``p_q`` (detached) scores candidate rows
    ``p_c`` by ``sigma(c) = sum p_q log(p_c + 1e-10)``. Positives are the ``pos`` patches of frame t the query
    attends most, negatives the ``neg`` it attends least; every (negative, positive) pair gives
    ``[sigma(neg) - sigma(pos) + margin]_+``. Within a frame, the queries are weighted by a softmax over the
    points of their negative entropy.

    Args:
        attn: (B, T*N, T*N) attention.
        points: (B, P) patch indices of each clip's query positions, or (P,) shared by the batch.
        frames: T.
        centre: add the query's weighted centre ``sum_j A[q, j] * A[j, :]`` (j over the positives; the weights
            ``A[q, j]`` without gradient) as one more positive, L1-normalised like the others. The release computes it
            but leaves it out (method.md §5.3), so the default is False.

    Returns:
        The loss, a scalar: mean over (B, T, negatives, positives) of the weighted sum over points.
    """
    b, length, _ = attn.shape
    points = _per_clip(points, b)
    n, p = length // frames, points.shape[1]
    rows = query_tokens(points, frames, n)  # (B, T*P)
    p_q = _rows(attn, rows).detach()  # (B, T*P, L)
    own = _take(attn.detach(), rows).reshape(b, frames, p, frames, n)
    own = own[:, torch.arange(frames), :, torch.arange(frames)].transpose(0, 1)  # (B, T, P, N): own frame
    offset = (torch.arange(frames, device=attn.device) * n).view(1, frames, 1, 1)
    top = own.topk(pos, dim=-1).indices + offset  # (B, T, P, pos) token indices
    bottom = own.topk(neg, dim=-1, largest=False).indices + offset  # (B, T, P, neg)
    positives = _rows(attn, top)  # (B, T, P, pos, L)
    if centre:
        # the query's attention to its positives weighs them, without gradient (the release's unused code detaches it)
        weights = _take(attn.detach(), rows).reshape(b, frames, p, length).gather(-1, top)  # (B, T, P, pos)
        middle = (
            weights[..., None]
            * attn.gather(1, top.reshape(b, -1, 1).expand(-1, -1, length)).reshape(*top.shape, length)
        ).sum(-2, keepdim=True)  # (B, T, P, 1, L)
        positives = torch.cat([positives, middle / middle.sum(-1, keepdim=True).clamp_min(1e-30)], dim=-2)
    negatives = _rows(attn, bottom)  # (B, T, P, neg, L)
    query = p_q.reshape(b, frames, p, 1, length)
    sigma_pos = (query * torch.log(positives + LOG_EPS)).sum(-1)  # (B, T, P, pos)
    sigma_neg = (query * torch.log(negatives + LOG_EPS)).sum(-1)  # (B, T, P, neg)
    pairs = (sigma_neg[..., :, None] - sigma_pos[..., None, :] + margin).clamp_min(0)  # (B, T, P, neg, pos)
    neg_entropy = (p_q * torch.log(p_q + LOG_EPS)).sum(-1).reshape(b, frames, p)
    weights = neg_entropy.softmax(dim=-1)  # (B, T, P): sharper queries weigh more
    return (weights[..., None, None] * pairs).sum(2).mean()


def clip_losses(attn: Tensor, feats: Tensor, points: Tensor, cfg: TrainConfig) -> Losses:
    """Both losses of a batch of clips. attn: (B, T*N, T*N); feats: (B, T, N, D); points: (B, P) or (P,)."""
    pos_term, neg_term = semantic_loss(
        attn, feats, points, cfg.semantic_pos, cfg.semantic_neg, cfg.semantic_pos_threshold, cfg.semantic_neg_threshold
    )
    motion = motion_loss(
        attn, points, feats.shape[1], cfg.motion_pos, cfg.motion_neg, cfg.motion_margin, cfg.motion_centre
    )
    return Losses(pos_term, neg_term, motion)
