"""An independent reference of one step of `bavos train`, written from method.md §4 only.

Nothing here calls bavos. The correlator block is written out from its raw state dict (pre-norm LayerNorm, one qkv
matrix, eight heads, softmax with scale ``head_dim ** -0.5``, projection, GELU MLP, two residuals; no dropout), the
clip's tokens are each frame's CLS followed by its keys, the attention's CLS rows and columns are removed after
the softmax and the heads averaged (3.3). The losses are loops over clips, query frames, points and frames (3.4,
3.5), and AdamW with the release's parameter groups and cosine schedule is written out (3.7). Slow; for tests only.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

# method.md §4.7: weight decay on the four weight matrices, none on biases and LayerNorms.
DECAYED = ("attn.qkv.weight", "attn.proj.weight", "mlp.fc1.weight", "mlp.fc2.weight")


def block(state: dict[str, Tensor], x: Tensor, heads: int = 8) -> tuple[Tensor, Tensor]:
    """One pre-norm transformer block: x (L, D) -> (y (L, D), attention (heads, L, L))."""
    length, dim = x.shape
    hd = dim // heads
    h = F.layer_norm(x, (dim,), state["norm1.weight"], state["norm1.bias"], eps=1e-5)
    qkv = h @ state["attn.qkv.weight"].T  # (L, 3D): no bias
    q, k, v = (qkv[:, i * dim : (i + 1) * dim].reshape(length, heads, hd).transpose(0, 1) for i in range(3))
    attn = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(hd), dim=-1)  # (heads, L, L)
    out = (attn @ v).transpose(0, 1).reshape(length, dim) @ state["attn.proj.weight"].T + state["attn.proj.bias"]
    x = x + out
    h = F.layer_norm(x, (dim,), state["norm2.weight"], state["norm2.bias"], eps=1e-5)
    h = F.gelu(h @ state["mlp.fc1.weight"].T + state["mlp.fc1.bias"])
    return x + h @ state["mlp.fc2.weight"].T + state["mlp.fc2.bias"], attn


def train_forward(state: dict[str, Tensor], keys: Tensor, cls: Tensor) -> tuple[Tensor, Tensor]:
    """keys (T, N, D), cls (T, D) of one clip -> (A (T*N, T*N) head mean without CLS, F (T, N, D))."""
    t, n, d = keys.shape
    tokens = torch.cat([torch.cat([cls[i : i + 1], keys[i]]) for i in range(t)])  # (T * (1 + N), D)
    y, attn = block(state, tokens)
    patches = [i * (n + 1) + 1 + j for i in range(t) for j in range(n)]
    a = attn.mean(0)[patches][:, patches]
    return a, y[patches].reshape(t, n, d)


def semantic(a: Tensor, f: Tensor, points: list[int], pos: int = 30, neg: int = 200) -> tuple[Tensor, Tensor]:
    """method.md §4.4 for one clip: (mean positive hinge, mean negative hinge)."""
    t, n, _ = f.shape
    unit = F.normalize(f, dim=-1)
    pos_terms, neg_terms = [], []
    for s in range(t):
        for p in points:
            for u in range(t):
                order = torch.argsort(a[s * n + p, u * n : (u + 1) * n].detach(), descending=True)
                cos = unit[u] @ unit[s, p]  # (N,)
                pos_terms.append((0.9 - cos[order[:pos]]).clamp_min(0))
                neg_terms.append((cos[order[-neg:]] - 0.1).clamp_min(0))
    return torch.cat(pos_terms).mean(), torch.cat(neg_terms).mean()


def motion(a: Tensor, points: list[int], t: int, pos: int = 10, neg: int = 50, centre: bool = False) -> Tensor:
    """method.md §4.5 for one clip: the entropy-weighted hinge, mean over frames and (negative, positive) pairs.

    ``centre``: the weighted centre ``c = sum_j A[q, j] A[j, :]`` over the positives j, its weights without gradient
    as in the release's (unused) code, joins them as an eleventh positive (method.md §5.3).
    """
    n = a.shape[0] // t
    per_frame = []
    for u in range(t):
        weights, hinges = [], []
        for p in points:
            row = a[u * n + p]
            p_q = (row / row.sum()).detach()
            order = torch.argsort(row[u * n : (u + 1) * n].detach(), descending=True)

            def sigma(j: Tensor, p_q: Tensor = p_q, u: int = u) -> Tensor:
                rows = a[u * n + j]  # (K, T*N)
                return (p_q * torch.log(rows / rows.sum(-1, keepdim=True) + 1e-10)).sum(-1)

            s_pos, s_neg = sigma(order[:pos]), sigma(order[-neg:])
            if centre:
                j = order[:pos]
                c = (row[u * n + j].detach()[:, None] * a[u * n + j]).sum(0)
                s_pos = torch.cat([s_pos, (p_q * torch.log(c / c.sum() + 1e-10)).sum()[None]])
            hinges.append((s_neg[:, None] - s_pos[None, :] + 1.0).clamp_min(0))  # (neg, pos)
            weights.append((p_q * torch.log(p_q + 1e-10)).sum())
        w = torch.softmax(torch.stack(weights), dim=0)
        per_frame.append(sum(wi * h for wi, h in zip(w, hinges, strict=True)).mean())
    return torch.stack(per_frame).mean()


def losses(state: dict[str, Tensor], keys: Tensor, cls: Tensor, points: Tensor) -> dict[str, Tensor]:
    """The loss terms of a batch, as the release gets them with one clip per GPU and DDP averaging the gradients:
    the mean over clips of each clip's terms. keys (B, T, N, D), cls (B, T, D), points (B, P)."""
    terms: dict[str, list[Tensor]] = {"semantic_pos": [], "semantic_neg": [], "motion": []}
    for b in range(keys.shape[0]):
        a, f = train_forward(state, keys[b], cls[b])
        sp, sn = semantic(a, f, points[b].tolist())
        terms["semantic_pos"].append(sp)
        terms["semantic_neg"].append(sn)
        terms["motion"].append(motion(a, points[b].tolist(), keys.shape[1]))
    out = {k: torch.stack(v).mean() for k, v in terms.items()}
    out["total"] = out["semantic_pos"] + out["semantic_neg"] + out["motion"]
    return out


def cosine_lr(i: int, lr: float, min_lr: float, steps: int) -> float:
    """The learning rate of step i (from 0): cosine from lr to min_lr over ``steps``, no warm-up (3.7)."""
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * i / steps))


class AdamW:
    """AdamW written out (decoupled decay, bias-corrected moments), on a dict of named float64 parameters."""

    def __init__(
        self,
        params: dict[str, Tensor],
        lr: float,
        min_lr: float,
        steps: int,
        weight_decay: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        self.params, self.lr, self.min_lr, self.steps = params, lr, min_lr, steps
        self.wd, self.betas, self.eps, self.i = weight_decay, betas, eps, 0
        self.m = {k: torch.zeros_like(v) for k, v in params.items()}
        self.v = {k: torch.zeros_like(v) for k, v in params.items()}

    def step(self, grads: dict[str, Tensor]) -> None:
        lr = cosine_lr(self.i, self.lr, self.min_lr, self.steps)
        b1, b2 = self.betas
        self.i += 1
        for k, p in self.params.items():
            g = grads[k]
            decay = self.wd if k in DECAYED else 0.0
            p.mul_(1 - lr * decay)
            self.m[k] = b1 * self.m[k] + (1 - b1) * g
            self.v[k] = b2 * self.v[k] + (1 - b2) * g * g
            m_hat = self.m[k] / (1 - b1**self.i)
            v_hat = self.v[k] / (1 - b2**self.i)
            p.sub_(lr * m_hat / (v_hat.sqrt() + self.eps))
