"""How the clustering's two whole-window products are computed (``--products``, method.md §6.5).

The products are the distances' ``P @ log(P).T`` and the smoothing's ``A @ P`` (A: the 0/1 neighbour matrix).

- ``float32``: ordinary float32 products (the default, the paper's).
- ``fp32-tensor``: float32's accuracy from the tensor cores. The smoothing splits P into three bf16 pieces
  (``P = h + m + l``, exact) and multiplies the 0/1 matrix, which is exact in bf16, by each, accumulating in
  float32. The distances use 3xTF32: each operand is split into a TF32 head and a TF32 remainder, and three TF32
  products are summed (the remainders' product is left out, below float32's rounding).
- ``tf32``: plain TF32 products (10-bit mantissas).
- ``bf16``: plain bf16 products (8-bit mantissas), accumulated in float32.

Only ``float32`` is the paper's; the others are faster on a GPU's tensor cores and move some tokens to other
clusters (docs/performance.md, "Precision"). On a CPU there are no tensor cores: the other modes are emulated there
(operands rounded as the tensor cores round them, products in float32), for the checks, not for speed.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch
from torch import Tensor

from bavos.config import PRODUCTS
from bavos.models.devices import tf32_matmul

_MODE: ContextVar[str] = ContextVar("bavos_products", default="float32")
TF32_DROPPED_BITS = 13  # float32's 23 mantissa bits, TF32's 10


@contextmanager
def products(mode: str) -> Iterator[None]:
    """The clustering's products in ``mode`` (one of PRODUCTS) inside the block.

    Raises:
        ValueError: an unknown mode.
    """
    if mode not in PRODUCTS:
        raise ValueError(f"--products must be one of {', '.join(PRODUCTS)}, got {mode}")
    token = _MODE.set(mode)
    try:
        yield
    finally:
        _MODE.reset(token)


def cross(a: Tensor, b: Tensor) -> Tensor:
    """``a @ b.T`` of two float32 (n, M) and (m, M) tensors, in the current mode (the distances' product)."""
    mode = _MODE.get()
    if mode == "float32":
        return a @ b.T
    if mode == "bf16":
        return _mm_bf16(a.bfloat16(), b.T.bfloat16())
    if mode == "tf32":
        return _mm_tf32(a, b.T)
    ah, al = split_tf32(a)
    bh, bl = split_tf32(b)
    return _mm_tf32(ah, bh.T) + (_mm_tf32(ah, bl.T) + _mm_tf32(al, bh.T))


def smooth(adjacency: Tensor, rows: Tensor) -> Tensor:
    """``adjacency @ rows`` for a 0/1 (n, n) matrix and float32 (n, M) rows, in the current mode (the smoothing)."""
    mode = _MODE.get()
    if mode == "float32":
        return adjacency @ rows
    if mode == "tf32":
        return _mm_tf32(adjacency, rows)
    a = adjacency.bfloat16()  # 0 and 1: exact
    if mode == "bf16":
        return _mm_bf16(a, rows.bfloat16())
    h, m, low = split_bf16(rows)
    return _mm_bf16(a, h) + (_mm_bf16(a, m) + _mm_bf16(a, low))


def split_bf16(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """float32 ``x`` as three bf16 pieces whose float32 sum is ``x`` (exact for normal numbers: 3 x 8 bits hold
    float32's 24)."""
    h = x.bfloat16()
    rest = x - h.float()
    m = rest.bfloat16()
    return h, m, (rest - m.float()).bfloat16()


def to_tf32(x: Tensor) -> Tensor:
    """float32 ``x`` rounded to TF32's 10-bit mantissa (to nearest, ties away from zero), still float32."""
    bits = x.view(torch.int32)
    half = 1 << (TF32_DROPPED_BITS - 1)
    return ((bits + half) & ~((1 << TF32_DROPPED_BITS) - 1)).view(torch.float32)


def split_tf32(x: Tensor) -> tuple[Tensor, Tensor]:
    """float32 ``x`` as a TF32 head and the TF32 rounding of what is left (``x - head`` is exact in float32)."""
    head = to_tf32(x)
    return head, to_tf32(x - head)


def _mm_bf16(a: Tensor, b: Tensor) -> Tensor:
    """bf16 operands, float32 products and sums: the tensor cores' mode on CUDA; emulated on a CPU."""
    if a.is_cuda:
        return torch.mm(a, b, out_dtype=torch.float32)
    return a.float() @ b.float()


def _mm_tf32(a: Tensor, b: Tensor) -> Tensor:
    """A TF32 product: the tensor cores' on CUDA (TF32 allowed for this product only); on a CPU, the operands rounded
    to TF32 and multiplied in float32."""
    if not a.is_cuda:
        return to_tf32(a) @ to_tf32(b)
    return tf32_matmul(a, b)
