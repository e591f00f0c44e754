import pytest
import torch

from bavos.pipeline.attention import key_frame_indices, window_attention


def test_key_frames_as_released_and_never_empty() -> None:
    assert key_frame_indices(49, 10) == [0, 10, 20, 30]
    assert key_frame_indices(50, 10) == [0, 10, 20, 30, 40]
    assert key_frame_indices(3, 10) == [0]
    assert key_frame_indices(1, 10) == [0]
    assert key_frame_indices(5, 1) == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError):
        key_frame_indices(0, 10)


def test_bounded_key_set_spreads_keys_over_the_video() -> None:
    assert key_frame_indices(1000, 10, max_keys=5) == [0, 250, 500, 740, 990]
    assert key_frame_indices(1000, 10, max_keys=1) == [0]
    assert key_frame_indices(50, 10, max_keys=8) == [0, 10, 20, 30, 40]  # under the limit: unchanged
    assert len(key_frame_indices(100_000, 10, max_keys=12)) == 12  # cost per frame no longer grows with T
    with pytest.raises(ValueError):
        key_frame_indices(10, 2, max_keys=-1)


def naive(q: torch.Tensor, k: torch.Tensor, scale: float) -> torch.Tensor:
    """Joint softmax over every key token of every key frame, then mean over heads, token by token."""
    t, heads, n, _ = q.shape
    keys = k.permute(1, 0, 2, 3).reshape(heads, -1, k.shape[-1])
    out = torch.zeros(t, n, keys.shape[1], dtype=torch.float64)
    for f in range(t):
        for i in range(n):
            for h in range(heads):
                out[f, i] += torch.softmax(keys[h] @ q[f, h, i] * scale, dim=0) / heads
    return out


def test_window_attention_is_one_softmax_over_all_key_tokens(device: str) -> None:
    torch.manual_seed(0)
    q, k = torch.randn(3, 4, 6, 5, dtype=torch.float64), torch.randn(2, 4, 6, 5, dtype=torch.float64)
    out = window_attention(q.to(device), k.to(device), 0.7)
    assert out.shape == (3, 6, 12) and out.device.type == device
    torch.testing.assert_close(out.cpu(), naive(q, k, 0.7))
    torch.testing.assert_close(out.sum(-1).cpu(), torch.ones(3, 6, dtype=torch.float64))


def test_row_chunking_does_not_change_results(device: str) -> None:
    torch.manual_seed(1)
    q, k = torch.randn(2, 2, 10, 4, device=device), torch.randn(3, 2, 10, 4, device=device)
    torch.testing.assert_close(window_attention(q, k, 0.5, budget_bytes=64), window_attention(q, k, 0.5))


def test_the_default_key_bound_keeps_the_papers_key_frames_up_to_300_frames() -> None:
    from bavos.config import SegmentConfig

    bound = SegmentConfig().for_device("cuda").max_key_frames
    assert bound == 30
    for frames in (1, 9, 10, 299, 300, 309):
        assert key_frame_indices(frames, 10, bound) == key_frame_indices(frames, 10, 0)  # the paper's setting
    long = key_frame_indices(3000, 10, bound)
    assert len(long) == 30 and long[0] == 0 and long[-1] == 2990  # spread over the video, first and last kept
    assert key_frame_indices(310, 10, bound) != key_frame_indices(310, 10, 0)  # 31 candidates: one is left out


def test_underflowing_numerators_are_zero_and_change_no_cluster(device: str) -> None:
    """Sharp attention: most logits are far below their row's largest, where exp underflows to subnormal numbers
    (where a CPU's exp is far slower). Those numerators are 0; every other entry is the softmax's (as close to
    the float64 softmax as torch's float32 softmax is: the logits are taken in base 2), and the clustering gives the
    same labels as on the plain softmax."""
    from bavos.pipeline.attention import underflow_bounds
    from bavos.pipeline.cluster import cluster_attention

    torch.manual_seed(2)
    q, k = torch.randn(6, 2, 12, 8) * 6, torch.randn(2, 2, 12, 8) * 6  # logits spread over hundreds
    out = window_attention(q.to(device), k.to(device), 1.0).cpu()
    logits = torch.einsum("whnd,khmd->whnkm", q, k).flatten(-2)  # (w, heads, N, K*N)
    plain = torch.softmax(logits, -1).mean(1)
    numerators = (logits - logits.amax(-1, keepdim=True)).exp()
    floor = underflow_bounds(torch.float32)[1]
    flushed = (numerators <= floor).all(1)  # (w, N, K*N): every head's numerator underflows
    assert flushed.float().mean() > 0.3 and (plain[flushed] > 0).any()  # the case is there
    assert (out[flushed] == 0).all()
    assert not ((out > 0) & (out < torch.finfo(torch.float32).tiny)).any()  # no subnormal numbers
    exact = torch.softmax(torch.einsum("whnd,khmd->whnkm", q.double(), k.double()).flatten(-2), -1).mean(1)
    error, plain_error = ((x.double() - exact).abs().max().item() for x in (out, plain))
    assert 0 < error <= 2 * plain_error
    torch.testing.assert_close(out, plain, rtol=1e-4, atol=1e-5)
    for tau in (0.5, 1.0, 4.0):
        ours, theirs = cluster_attention(out, tau), cluster_attention(plain, tau)
        assert ours.sizes == theirs.sizes and (ours.level_labels == theirs.level_labels).all()


def test_the_key_set_is_laid_out_once_for_every_window() -> None:
    """Every window attends to the same key set: its layout is made once, made again when the keys change, and let
    go with them."""
    import gc

    from bavos.pipeline import attention
    from bavos.pipeline.traffic import counting

    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 3, 16, 8, generator=g), torch.randn(4, 3, 16, 8, generator=g)
    first = window_attention(q, k, 8**-0.5)
    with counting() as again:
        second = window_attention(q, k, 8**-0.5)
    k_bytes = k.numel() * k.element_size()
    with counting() as changed:
        k.mul_(1.0)  # the same values, a new version: laid out again
        window_attention(q, k, 8**-0.5)
    assert torch.equal(first, second)
    assert changed.bytes - 2 * k_bytes == again.bytes + 2 * k_bytes  # mul_ reads and writes k; the copy, the same
    assert id(k) in attention._LAID_OUT
    key = id(k)
    del k
    gc.collect()
    assert key not in attention._LAID_OUT
