"""Runs bavos's Triton kernels in Triton's interpreter on the CPU and prints what tests/test_pipeline_fused.py checks,
as JSON: the interpreter must be on before Triton is first imported, so this runs in its own process."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ["TRITON_INTERPRET"] = "1"
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from reference_cluster import same_partition
from test_pipeline_cluster import structured_attention
from test_pipeline_traffic import _windows

from bavos.models.devices import gpu_ways, kernels
from bavos.pipeline.attention import fused_attention, window_attention
from bavos.pipeline.cluster import (
    MergeTreeBuilder,
    bins,
    cluster_attention,
    label_window,
    log_and_dots,
    neighbours,
)
from bavos.pipeline.traffic import counting


def attention() -> dict[str, object]:
    """The fused rows against the CPU's in float64 and float32 (head dim 48: not a power of two), and their bytes."""
    out: dict[str, object] = {}
    torch.manual_seed(0)
    for dtype in (torch.float64, torch.float32):
        q = torch.randn(3, 8, 70, 48, dtype=dtype) * 3  # 3 frames of 70 tokens, 8 heads: sharp and flat rows
        k = torch.randn(2, 8, 70, 48, dtype=dtype) * 3
        cpu = window_attention(q, k, 48**-0.5)
        with kernels(True), counting() as c:  # float64: the kernels called as they are (a run's rows are float32)
            fused = fused_attention(q, k, 48**-0.5) if dtype == torch.float64 else window_attention(q, k, 48**-0.5)
        name = str(dtype).removeprefix("torch.")
        out[f"error_{name}"] = float((cpu - fused).abs().max())
        out[f"sums_{name}"] = float((fused.sum(-1) - 1).abs().max())
        size = q.element_size()
        # the kernels' operation, the whole call, what they must read (queries and keys) and write (the rows)
        inputs, rows = (q.numel() + k.numel()) * size, fused.numel() * size
        out[f"bytes_{name}"] = [c.by_op["attention_rows"], c.bytes, inputs, rows]
    return out


def clustering() -> dict[str, object]:
    """The clustering's kernels against torch's operations (the GPU's way): the same numbers and partition; and a
    second window's bytes and host reads with each (the windows of test_pipeline_traffic)."""
    attn = torch.from_numpy(structured_attention(9, 40, 64, 5, seed=1)).float()
    rows = attn[:3].reshape(-1, 64)
    out: dict[str, object] = {}
    with gpu_ways():
        log, dots = log_and_dots(rows)
        adjacency, counts = neighbours(rows, log, dots, bins(rows), 1.0)
        reference = cluster_attention(attn, 1.0)
        with kernels(True):
            log_k, dots_k = log_and_dots(rows)
            adjacency_k, counts_k = neighbours(rows, log, dots, bins(rows), 1.0)
            fused = cluster_attention(attn, 1.0)
        out["log_error"] = float((log - log_k).abs().max() / log.abs().max())
        out["dots_error"] = float((dots - dots_k).abs().max() / dots.abs().max())
        out["same_neighbours"] = bool(torch.equal(adjacency, adjacency_k) and torch.equal(counts, counts_k))
        out["same_partition"] = reference.sizes == fused.sizes and all(
            same_partition(a, b) for a, b in zip(reference.level_labels, fused.level_labels, strict=True)
        )
        for objects in (1, 4, 24):
            first, second = _windows(objects)
            for way, on in (("torch", False), ("kernels", True)):
                with kernels(on):
                    builder = MergeTreeBuilder(1.0)
                    builder.add_window(first)
                    with counting() as c:
                        level0 = builder.add_window(second)
                    hierarchy = builder.finish()
                    label_window(second, level0, hierarchy)
                    with counting() as labelling:
                        label_window(second, level0, hierarchy)
                out[f"window_{objects}_{way}"] = [
                    c.bytes / second.numel(),
                    c.host_reads,
                    labelling.bytes / second.numel(),
                    labelling.host_reads,
                ]
    return out


if __name__ == "__main__":
    print(json.dumps({**attention(), **clustering()}))
