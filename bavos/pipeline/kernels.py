"""bavos's Triton kernels (the GPU's way: ``bavos.pipeline.fused`` says what each does and runs them).

Only kernels live here, so that a test can import this module again under Triton's interpreter
(``TRITON_INTERPRET=1``) and run them on a CPU.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def stats_kernel(
    q_ptr,  # (heads, R, d) base-2-scaled queries
    k_ptr,  # (heads, M, d) keys
    largest_ptr,  # (heads, R) out: each row's largest logit
    total_ptr,  # (heads, R) out: sum of exp2(logit - largest)
    R,
    M,
    d,
    BLOCK_R: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    tile, head = tl.program_id(0), tl.program_id(1)
    rows = tile * BLOCK_R + tl.arange(0, BLOCK_R)
    dims = tl.arange(0, BLOCK_D)
    q = tl.load(
        q_ptr + head * R * d + rows[:, None] * d + dims[None, :],
        mask=(rows[:, None] < R) & (dims[None, :] < d),
        other=0.0,
    )
    largest = tl.full([BLOCK_R], float("-inf"), dtype=q.dtype)
    total = tl.zeros([BLOCK_R], dtype=q.dtype)
    for start in range(0, M, BLOCK_M):
        keys = start + tl.arange(0, BLOCK_M)
        k = tl.load(
            k_ptr + head * M * d + keys[:, None] * d + dims[None, :],
            mask=(keys[:, None] < M) & (dims[None, :] < d),
            other=0.0,
        )
        logits = tl.dot(q, tl.trans(k), input_precision="ieee", out_dtype=q.dtype)
        logits = tl.where(keys[None, :] < M, logits, float("-inf"))
        grown = tl.maximum(largest, tl.max(logits, 1))
        total = total * tl.exp2(largest - grown) + tl.sum(tl.exp2(logits - grown[:, None]), 1)
        largest = grown
    tl.store(largest_ptr + head * R + rows, largest, mask=rows < R)
    tl.store(total_ptr + head * R + rows, total, mask=rows < R)


@triton.jit
def rows_kernel(
    q_ptr,  # (heads, R, d)
    k_ptr,  # (heads, M, d)
    largest_ptr,  # (heads, R)
    total_ptr,  # (heads, R)
    out_ptr,  # (R, M) out: the head-averaged probabilities
    R,
    M,
    d,
    heads,
    low,  # logit floor (relative to the row's largest)
    floor,  # numerators at most this are 0
    BLOCK_R: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    keys = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    dims = tl.arange(0, BLOCK_D)
    at = rows.to(tl.int64)[:, None] * M + keys[None, :]  # R * M can pass 2**31: 64-bit offsets
    row_mask = (rows[:, None] < R) & (dims[None, :] < d)
    key_mask = (keys[:, None] < M) & (dims[None, :] < d)
    acc = tl.zeros([BLOCK_R, BLOCK_M], dtype=out_ptr.dtype.element_ty)
    for head in range(heads):
        q = tl.load(q_ptr + head * R * d + rows[:, None] * d + dims[None, :], mask=row_mask, other=0.0)
        k = tl.load(k_ptr + head * M * d + keys[:, None] * d + dims[None, :], mask=key_mask, other=0.0)
        logits = tl.dot(q, tl.trans(k), input_precision="ieee", out_dtype=q.dtype)
        largest = tl.load(largest_ptr + head * R + rows, mask=rows < R, other=0.0)
        total = tl.load(total_ptr + head * R + rows, mask=rows < R, other=1.0)
        p = tl.exp2(tl.maximum(logits - largest[:, None], low))
        p = tl.where(p <= floor, 0.0, p)
        acc += p / total[:, None]
    tl.store(out_ptr + at, acc / heads, mask=(rows[:, None] < R) & (keys[None, :] < M))


@triton.jit
def log_kernel(
    x_ptr,  # (n, M) probabilities
    log_ptr,  # (n, M) out: log of each clamped at floor
    dot_ptr,  # (n,) out: sum of x * log
    M,
    floor,
    BLOCK_M: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)  # n * M can pass 2**31: 64-bit offsets
    acc = tl.zeros([BLOCK_M], dtype=log_ptr.dtype.element_ty)
    for start in range(0, M, BLOCK_M):
        cols = start + tl.arange(0, BLOCK_M)
        x = tl.load(x_ptr + row * M + cols, mask=cols < M, other=1.0)
        log = tl.log(tl.maximum(x, floor))
        tl.store(log_ptr + row * M + cols, log, mask=cols < M)
        acc += tl.where(cols < M, x * log, 0.0)
    tl.store(dot_ptr + row, tl.sum(acc, 0))


@triton.jit
def pairs_kernel(
    cross_ptr,  # (n, n) c[i, j] = sum_c p_ic log p_jc
    dots_ptr,  # (n,) s[i] = sum_c p_ic log p_ic
    adjacency_ptr,  # (n, n) out: 1 where (s_i + s_j) - (c_ij + c_ji) <= tau or i == j, else 0
    counts_ptr,  # (n,) out, zeroed: the ones of each row
    n,
    tau,
    BLOCK: tl.constexpr,
):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    j = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    inside = (i[:, None] < n) & (j[None, :] < n)
    i64, j64 = i.to(tl.int64), j.to(tl.int64)  # 64-bit offsets, as n * n may pass 2**31
    c_ij = tl.load(cross_ptr + i64[:, None] * n + j64[None, :], mask=inside, other=0.0)
    c_ji = tl.load(cross_ptr + j64[None, :] * n + i64[:, None], mask=inside, other=0.0)
    s_i = tl.load(dots_ptr + i, mask=i < n, other=0.0)
    s_j = tl.load(dots_ptr + j, mask=j < n, other=0.0)
    distance = (s_i[:, None] + s_j[None, :]) - (c_ij + c_ji)  # as cluster.sym_kl assembles it: symmetric
    close = ((distance <= tau) | (i[:, None] == j[None, :])) & inside
    ones = tl.where(close, 1.0, 0.0).to(adjacency_ptr.dtype.element_ty)
    tl.store(adjacency_ptr + i64[:, None] * n + j64[None, :], ones, mask=inside)
    tl.atomic_add(counts_ptr + i, tl.sum(ones, 1), mask=i < n)  # whole numbers: the same sum in any order
