"""The GPU's kernels (Triton) for the attention rows and for the clustering's passes over whole windows.

On a GPU the attention and the clustering's elementwise work are bound by the bytes they move, not by their
arithmetic (docs/performance.md, "On a GPU"): each kernel (``bavos.pipeline.kernels``) does in one pass what
torch's operations do in several, and each is one operation of torch's here (``torch.library.custom_op``), so that
``bavos.pipeline.traffic`` counts what it reads and writes. Each gives the numbers torch's operations give, up to
the order of its sums.

- The attention rows (method.md §3.4), as in FlashAttention without the logits ever in memory:
  ``stats_kernel`` finds, per head and query row, the largest base-2 logit and the sum of ``exp2(logit - largest)``
  (online: the sum is rescaled when the largest grows) in one pass over the key tokens; ``rows_kernel`` computes
  each tile of (query rows, key tokens) for every head again, turns it into probabilities with those numbers and
  writes the head mean once. The logits' products are computed twice, which a GPU does faster than it moves the
  logits. The products are in the inputs' precision (IEEE float32, never TF32); the softmax's underflow rule is the
  CPU's (``attention.underflow_bounds``).
- ``log_kernel``: the rows' ``safe_log`` and their ``sum_c p_c log p_c`` in one pass (``cluster.log_and_dots``).
- ``pairs_kernel``: a window's symmetric KL assembled from its one product and its rows' sums, thresholded at tau,
  written as the 0/1 neighbour matrix with its row counts (``cluster.neighbours``); bit for bit the distances torch's
  operations assemble, so the same pairs are within tau.

This module imports Triton, which only a GPU run needs: the pipeline imports it there, and tests run it in
Triton's interpreter.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

import torch
import triton
from torch import Tensor

from bavos.pipeline import kernels


class Tiles(NamedTuple):
    """The attention kernels' tiles: query rows and key tokens per tile, and the warps (Triton's ``num_warps``) that
    share one."""

    rows: int
    keys: int
    warps: int


# Float32 products without tensor cores hold their operands in registers: with 4 warps to a 64 x 64 tile the rows
# kernel spills registers to memory on an H100, with 16 neither kernel does (tests/test_pipeline_fused.py compiles
# them for one; docs/performance.md, "The kernels' registers")
ATTENTION_TILES = Tiles(rows=64, keys=64, warps=16)


def attention_launch(d: int, tiles: Tiles = ATTENTION_TILES) -> dict[str, int]:
    """The constants and warps ``stats_kernel`` and ``rows_kernel`` are launched with for a head size ``d``."""
    block_d = max(16, triton.next_power_of_2(d))  # the products' inner size: a power of two, at least 16
    return {"BLOCK_R": tiles.rows, "BLOCK_M": tiles.keys, "BLOCK_D": block_d, "num_warps": tiles.warps}


def fused_rows(queries: Tensor, keys: Tensor, low: float, floor: float, tiles: Tiles = ATTENTION_TILES) -> Tensor:
    """Head-averaged softmax rows of base-2 logits, computed tile by tile.

    Args:
        queries: (heads, R, d) queries, contiguous, scaled so that ``queries @ keys.T`` are base-2 logits.
        keys: (heads, M, d) keys, contiguous, of the same dtype and device.
        low, floor: ``attention.underflow_bounds`` of the dtype.
        tiles: the kernels' tiles (other than the default only to time them: ``benchmarks/gpu_check.py``).

    Returns:
        (R, M) rows in the inputs' dtype, each a probability distribution.
    """
    heads, r, d = queries.shape
    m = keys.shape[1]
    largest = queries.new_empty(heads, r)
    total = queries.new_empty(heads, r)
    out = queries.new_empty(r, m)
    launch = attention_launch(d, tiles)
    row_tiles = triton.cdiv(r, tiles.rows)
    with _on(queries):
        kernels.stats_kernel[(row_tiles, heads)](queries, keys, largest, total, r, m, d, **launch)
        grid = (row_tiles, triton.cdiv(m, tiles.keys))
        kernels.rows_kernel[grid](queries, keys, largest, total, out, r, m, d, heads, low, floor, **launch)
    return out


@contextmanager
def _on(t: Tensor) -> Iterator[None]:
    """Kernels launched on ``t``'s device (Triton launches on the current one: under torchrun a process's device need
    not be the current one)."""
    if t.is_cuda:
        with torch.cuda.device(t.device):
            yield
    else:
        yield


@torch.library.custom_op("bavos::attention_rows", mutates_args=())
def attention_rows(queries: Tensor, keys: Tensor, low: float, floor: float) -> Tensor:
    """``fused_rows`` as one operation of torch's: what it reads and writes is what ``bavos.pipeline.traffic``
    counts of it (the kernels' own tiles stay in the GPU's caches)."""
    return fused_rows(queries, keys, low, floor)


@attention_rows.register_fake
def _(queries: Tensor, keys: Tensor, low: float, floor: float) -> Tensor:
    return queries.new_empty(queries.shape[1], keys.shape[1])


LOG_LAUNCH: dict[str, Any] = {"BLOCK_M": 1024}
# with 4 warps to a 64 x 64 tile of pairs some Triton releases spill registers, with 8 none does (as above)
PAIR_LAUNCH: dict[str, Any] = {"BLOCK": 64, "num_warps": 8}


@torch.library.custom_op("bavos::log_rows", mutates_args=())
def log_rows(x: Tensor, floor: float) -> tuple[Tensor, Tensor]:
    """(n, M) contiguous probabilities -> their log clamped at ``floor`` (n, M) and ``sum_c x log x`` (n,)."""
    n, m = x.shape
    log, dots = torch.empty_like(x), x.new_empty(n)
    with _on(x):
        kernels.log_kernel[(n,)](x, log, dots, m, floor, **LOG_LAUNCH)
    return log, dots


@log_rows.register_fake
def _(x: Tensor, floor: float) -> tuple[Tensor, Tensor]:
    return torch.empty_like(x), x.new_empty(x.shape[0])


@torch.library.custom_op("bavos::close_pairs", mutates_args=())
def close_pairs(cross: Tensor, dots: Tensor, tau: float) -> tuple[Tensor, Tensor]:
    """(n, n) contiguous ``p @ log(p).T`` and (n,) row dots -> the (n, n) 0/1 neighbour matrix (the pairs within
    ``tau``, and the diagonal) in ``cross``'s dtype, and its (n,) row counts."""
    n = cross.shape[0]
    adjacency, counts = torch.empty_like(cross), cross.new_zeros(n)
    tiles = triton.cdiv(n, PAIR_LAUNCH["BLOCK"])
    with _on(cross):
        kernels.pairs_kernel[(tiles, tiles)](cross, dots, adjacency, counts, n, tau, **PAIR_LAUNCH)
    return adjacency, counts


@close_pairs.register_fake
def _(cross: Tensor, dots: Tensor, tau: float) -> tuple[Tensor, Tensor]:
    return torch.empty_like(cross), cross.new_empty(cross.shape[0])
