"""--products: the splits exact, the fp32-tensor products at float32's accuracy, the other modes measurably coarser,
float32 untouched, and a segmentation in fp32-tensor the same as in float32 (the CPU emulates the tensor cores)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bavos.pipeline.products import cross as cross_product
from bavos.pipeline.products import products, smooth, split_bf16, split_tf32, to_tf32


def _rows(n: int, m: int, seed: int) -> torch.Tensor:
    """(n, m) attention-like rows: peaked distributions, many entries far below 1e-6."""
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(n, m, generator=g) * 6, dim=1)


def test_the_splits_are_exact() -> None:
    for x in (_rows(64, 300, 0), torch.randn(64, 300, generator=torch.Generator().manual_seed(1)) * 1e3):
        h, m, low = split_bf16(x)
        assert h.dtype == m.dtype == low.dtype == torch.bfloat16
        normal = x.abs() > 1e-30  # bf16's pieces of a float32 near its smallest normals can underflow
        assert torch.equal(((h.float() + m.float()) + low.float())[normal], x[normal])
        head, rest = split_tf32(x)
        assert torch.equal(head + (x - head), x) and torch.equal(to_tf32(rest), rest)
        for t in (head, rest):
            assert int((t.view(torch.int32) & ((1 << 13) - 1)).abs().max()) == 0  # 10 mantissa bits at most


def _error(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.double() - want).abs().max() / want.abs().max())


def test_fp32_tensor_products_are_as_accurate_as_float32() -> None:
    p, q = _rows(200, 400, 2), _rows(150, 400, 3)
    log_q = q.clamp_min(1e-10).log()
    want = p.double() @ log_q.double().T
    adjacency = (torch.rand(200, 200, generator=torch.Generator().manual_seed(4)) < 0.1).float()
    want_smooth = adjacency.double() @ p.double()
    errors = {}
    for mode in ("float32", "fp32-tensor", "tf32", "bf16"):
        with products(mode):
            errors[mode] = (_error(cross_product(p, log_q), want), _error(smooth(adjacency, p), want_smooth))
    for i in range(2):
        assert errors["fp32-tensor"][i] <= 2 * errors["float32"][i], errors
        assert errors["tf32"][i] > 4 * errors["float32"][i] and errors["bf16"][i] > errors["tf32"][i], errors
    with products("float32"):
        assert torch.equal(cross_product(p, log_q), p @ log_q.T)  # the default is the plain product
        assert torch.equal(smooth(adjacency, p), adjacency @ p)
    with pytest.raises(ValueError, match="--products must be one of float32, fp32-tensor, tf32, bf16, got fp8"):
        with products("fp8"):
            pass


def test_a_segmentation_in_fp32_tensor_equals_float32(sharp_weights) -> None:
    from conftest import clip_frames

    import bavos

    frames = np.stack(clip_frames(9, 48, 64))
    masks = {}
    for mode in ("float32", "fp32-tensor"):
        seg = bavos.Segmenter.from_checkpoint(
            "none",
            backbone="bavos_test_vit",
            backbone_weights=str(sharp_weights),
            device="cpu",
            resolution=(64, 96),
            stride=1,
            max_key_frames=30,
            tau=0.2,
            max_objects=0,
            products=mode,
        )
        with seg(frames) as result:
            masks[mode] = result.masks
            sizes = result.hierarchy.sizes
        assert sizes[0] > 20  # many clusters, not a trivial partition
    assert (masks["float32"] == masks["fp32-tensor"]).mean() >= 0.999


def test_the_pairs_within_tau_on_the_whole_product_path() -> None:
    """What CUDA's path decides (every pair from the whole product): fp32-tensor moves no more pairs across tau than
    float32's own rounding does against float64; tf32 and bf16 move more."""
    from bavos.pipeline.cluster import safe_log, sym_kl

    p = _rows(400, 600, 5)
    exact = sym_kl(p.double(), p.double())
    tau = float(exact.median())  # half of the pairs on either side: many near it
    flips = {}
    for mode in ("float32", "fp32-tensor", "tf32", "bf16"):
        with products(mode):
            flips[mode] = int(((sym_kl(p, p, safe_log(p)) <= tau) != (exact <= tau)).sum())
    assert flips["fp32-tensor"] <= max(2 * flips["float32"], 4), flips
    assert flips["tf32"] > flips["fp32-tensor"] and flips["bf16"] > flips["tf32"], flips
