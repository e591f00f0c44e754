"""bavos's Triton kernels (bavos.pipeline.fused), run in Triton's interpreter on the CPU: the attention rows equal to
the CPU's in float64 to 1e-12 and written once; the clustering's kernels giving torch's numbers, neighbours and
partition with fewer bytes per window. On a GPU, ``pytest -m gpu`` runs them compiled, against the CPU's and
torch's numbers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("triton")


@pytest.fixture(scope="module")
def checked() -> dict:
    """What tests/kernels_interpreted.py measures (in its own process: the interpreter is chosen at import)."""
    script = Path(__file__).with_name("kernels_interpreted.py")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_fused_attention_is_the_cpus_in_float64(checked: dict) -> None:
    assert checked["error_float64"] <= 1e-12 and checked["sums_float64"] <= 1e-12
    assert checked["error_float32"] <= 1e-6 and checked["sums_float32"] <= 1e-6


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_the_fused_attention_writes_its_rows_once(checked: dict, dtype: str) -> None:
    """The kernels read the queries and keys and write the rows, nothing of the rows' size besides (the CPU's way
    makes about 80 passes over them with 8 heads); the call's other work is on the queries and keys alone."""
    kernel, call, inputs, rows = checked["bytes_" + dtype]
    assert kernel == inputs + rows
    assert call - kernel <= 4 * inputs  # scaled and laid out for the kernels: two reads and two writes at most


def test_the_clustering_kernels_give_torchs_numbers_and_partition(checked: dict) -> None:
    assert checked["log_error"] <= 1e-6 and checked["dots_error"] <= 1e-6
    assert checked["same_neighbours"]  # the distances assembled bit for bit as torch's operations do
    assert checked["same_partition"]


# (bytes per row element, host reads) of a second window with the kernels: torch's operations in a GPU's way give
# 113.5, 160.1 and 203.7 (test_pipeline_traffic), the code before both 187.5, 241.6 and 297.2
KERNEL_BUDGETS = {1: (70, 3), 4: (115, 4), 24: (150, 4)}


@pytest.mark.parametrize("objects", sorted(KERNEL_BUDGETS))
def test_a_window_with_the_kernels_moves_at_most_its_budget(checked: dict, objects: int) -> None:
    bytes_, reads, label_bytes, label_reads = checked[f"window_{objects}_kernels"]
    torch_bytes = checked[f"window_{objects}_torch"][0]
    assert bytes_ <= KERNEL_BUDGETS[objects][0] < torch_bytes
    assert reads <= KERNEL_BUDGETS[objects][1]
    assert label_bytes <= 25 and label_reads == 1


H100 = 90  # compute capability of the H100 and H200, which allow a block 227 KB of shared memory


@pytest.mark.parametrize("name", ["stats_kernel", "rows_kernel", "log_kernel", "pairs_kernel"])
def test_the_kernels_compile_for_an_h100_without_spilling(name: str) -> None:
    """What only the compiler checks (the interpreter runs anything): each kernel compiles for an H100 as bavos
    launches it (Triton's compiler and ptxas, no GPU), its shared memory fits the card, its registers are not
    spilled to memory (a stack frame), and the attention's products are IEEE float32, not TF32."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from bench_kernels import compiled_for

    got = compiled_for(name, H100)
    assert got.shared <= 227 * 1024
    assert got.stack == 0
    assert "tf32" not in got.ptx


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_the_kernels_compiled_on_cuda_give_the_cpus_numbers() -> None:
    from bavos.models.devices import kernels
    from bavos.pipeline.attention import window_attention
    from bavos.pipeline.cluster import bins, log_and_dots, neighbours

    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(3, 8, 300, 48, generator=g) * 3, torch.randn(5, 8, 300, 48, generator=g) * 3
    exact = window_attention(q.double(), k.double(), 48**-0.5)  # the CPU's, in float64
    rows = window_attention(q.cuda(), k.cuda(), 48**-0.5)  # the kernels, float32
    assert float((rows.cpu().double() - exact).abs().max()) <= 1e-6
    flat = rows.reshape(-1, rows.shape[-1])
    with kernels(False):  # torch's operations on the same device
        log, dots = log_and_dots(flat)
        adjacency, counts = neighbours(flat, log, dots, bins(flat), 1.0)
    log_k, dots_k = log_and_dots(flat)
    torch.testing.assert_close(log_k, log, rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(dots_k, dots, rtol=1e-5, atol=1e-4)
    adjacency_k, counts_k = neighbours(flat, log, dots, bins(flat), 1.0)
    assert torch.equal(adjacency_k, adjacency) and torch.equal(counts_k, counts)
