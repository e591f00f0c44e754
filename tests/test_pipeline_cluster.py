import numpy as np
import pytest
import torch
from reference_cluster import jeffreys, leader_groups, reference_partition, same_partition

from bavos.pipeline.cluster import (
    PROB_FLOOR,
    cap_by_area,
    cluster_attention,
    greedy_leaders,
    sym_kl,
)


def structured_attention(t: int, n: int, m: int, k: int, seed: int, concentration: float = 30.0) -> np.ndarray:
    """(T, N, M) float64 rows drawn around k prototype distributions."""
    rng = np.random.default_rng(seed)
    protos = rng.dirichlet(np.full(m, 0.3), size=k)
    which = rng.integers(0, k, size=(t, n))
    return np.stack([[rng.dirichlet(protos[which[i, j]] * concentration + 0.01) for j in range(n)] for i in range(t)])


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("tau", [0.3, 1.0, 3.0])
def test_partition_matches_independent_reference(seed: int, tau: float, device: str) -> None:
    attn = structured_attention(7, 12, 20, 4, seed)  # 7 frames: windows of 3, 3 and 1
    expected = reference_partition(attn, tau, window=3)
    result = cluster_attention(torch.from_numpy(attn).to(device), tau=tau, window=3)
    assert result.labels.shape == (7, 12)
    assert same_partition(expected, result.labels)
    assert result.sizes[result.converged] == len(np.unique(expected))


@pytest.mark.parametrize("window", [1, 2, 5])
def test_partition_matches_reference_for_other_windows(window: int) -> None:
    attn = structured_attention(5, 10, 16, 3, seed=11)
    result = cluster_attention(torch.from_numpy(attn), 1.0, window)
    assert same_partition(reference_partition(attn, 1.0, window), result.labels)


def test_single_frame_and_single_token() -> None:
    attn = structured_attention(1, 6, 8, 2, seed=3)
    assert same_partition(reference_partition(attn, 0.5), cluster_attention(torch.from_numpy(attn), 0.5).labels)
    one = torch.full((1, 1, 4), 0.25, dtype=torch.float64)
    assert cluster_attention(one).labels.tolist() == [[0]]


def test_sym_kl_is_jeffreys_divergence() -> None:
    rng = np.random.default_rng(0)
    p, q = rng.dirichlet(np.ones(9), size=4), rng.dirichlet(np.ones(9), size=3)
    d = sym_kl(torch.from_numpy(p), torch.from_numpy(q)).numpy()
    expected = np.array([[jeffreys(a, b) for b in q] for a in p])
    np.testing.assert_allclose(d, expected, rtol=1e-10, atol=1e-12)
    kl = lambda a, b: float(np.sum(a * np.log(a / b)))  # noqa: E731
    assert d[0, 0] == pytest.approx(kl(p[0], q[0]) + kl(q[0], p[0]))  # not halved


def test_exact_zeros_give_finite_distances() -> None:
    p = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0]], dtype=torch.float64)
    d = sym_kl(p, p)
    assert torch.isfinite(d).all()
    assert d[0, 0] == pytest.approx(0.0, abs=1e-12)
    # 0.5*(log 0.5 - log 1) + 0.5*(log 0.5 - log floor) over the two coordinates that differ
    expected = 0.5 * (np.log(1.0) - np.log(0.5)) + 0.5 * (np.log(0.5) - np.log(PROB_FLOOR))
    assert d[0, 1].item() == pytest.approx(expected)


def test_greedy_leaders_follow_index_order() -> None:
    close = np.array(
        [
            [1, 1, 0, 1],
            [1, 1, 1, 0],
            [0, 1, 1, 1],
            [1, 0, 1, 1],
        ],
        dtype=bool,
    )
    # leader 0 takes {0, 1, 3}; 2 is left and leads its own group (radius around the leader, not a chain)
    for block in (1, 2, 64):
        assert greedy_leaders(lambda i, j: close[np.ix_(i, j)], 4, block).tolist() == [0, 0, 1, 0]


@pytest.mark.parametrize("block", [1, 3, 64])
@pytest.mark.parametrize("tau", [0.05, 1.0, 4.0])
def test_leader_pass_asks_only_for_candidate_rows_and_free_columns(block: int, tau: float) -> None:
    rows = structured_attention(1, 60, 12, 5, seed=9)[0]  # (60, 12)
    requests: list[tuple[list[int], list[int]]] = []

    def close_rows(index: np.ndarray, columns: np.ndarray) -> np.ndarray:
        requests.append((index.tolist(), columns.tolist()))
        return np.array([[jeffreys(rows[i], rows[j]) <= tau for j in columns] for i in index])

    labels = greedy_leaders(close_rows, len(rows), block)
    groups = leader_groups(list(rows), tau)
    assert [np.flatnonzero(labels == g).tolist() for g in range(labels.max() + 1)] == groups
    asked = [i for index, _ in requests for i in index]
    leaders = [g[0] for g in groups]
    assert len(asked) == len(set(asked)) and set(leaders) <= set(asked)  # no row twice, every leader's row
    assert requests[0] == ([0], list(range(60)))  # the first row alone (it leads), over every column
    for r, (index, columns) in enumerate(requests):
        before = {i for earlier, _ in requests[:r] for i in earlier}
        grouped = {j for g in groups if g[0] in before for j in g}
        assert columns == sorted(set(range(60)) - grouped)  # only the rows no earlier leader took
        assert len(index) == (1 if r == 0 else min(block, len(columns)))
    if block == 1:
        assert asked == leaders  # one at a time: the leaders' rows only


def test_the_cap_keeps_the_largest_and_merges_the_rest_into_the_nearest() -> None:
    c = torch.tensor(
        [[0.9, 0.05, 0.05], [0.05, 0.9, 0.05], [0.85, 0.1, 0.05], [0.1, 0.8, 0.1], [0.05, 0.05, 0.9]],
        dtype=torch.float64,
    )

    def d(i: int, j: int) -> float:  # symmetric KL, written out
        p, q = c[i].numpy(), c[j].numpy()
        return float(((p - q) * (np.log(p) - np.log(q))).sum())

    areas = np.array([10, 30, 20, 5, 8])
    merged, parent = cap_by_area(c, areas, 3)  # 1, 2 and 0 kept (the largest); 3 and 4 into their nearest of them
    assert parent[[0, 1, 2]].tolist() == [0, 1, 2]
    for other in (3, 4):
        assert parent[other] == int(np.argmin([d(other, k) for k in (0, 1, 2)]))
    assert parent[3] == 1  # (0.1, 0.8, 0.1) is 1's
    group = parent == parent[4]
    torch.testing.assert_close(
        merged[parent[4]], (torch.from_numpy(areas[group]).double()[:, None] * c[group]).sum(0) / areas[group].sum()
    )  # area-weighted, as a cluster's mean of its tokens
    _, parent = cap_by_area(c, np.array([0, 0, 7, 0, 0]), 3)  # clusters no token chose are never kept
    assert parent.tolist() == [0, 0, 0, 0, 0]


def test_the_cap_keeps_large_clusters_over_far_specks() -> None:
    """Specks far from everything (a trained ViT's artifact tokens) are never what the cap keeps: the closest-pair
    rule kept them and merged the large segments, which sit closer to one another, into one."""
    rng = np.random.default_rng(0)
    m = 40
    large = [np.full(m, 0.2 / (m - 4)) for _ in range(4)]
    for i, row in enumerate(large):
        row[i * 4 : i * 4 + 4] = 0.2  # four large segments sharing most of their mass with one another
    specks = [np.eye(m)[20 + i] * 0.97 + 0.03 / m for i in range(8)]  # each peaked on a key token of its own
    c = torch.tensor(np.stack(large + specks) / np.stack(large + specks).sum(1, keepdims=True))
    areas = np.array([5000, 3000, 2000, 1500] + list(rng.integers(1, 9, 8)))
    _, parent = cap_by_area(c, areas, 4)
    assert parent[:4].tolist() == [0, 1, 2, 3] and set(parent[4:].tolist()) <= {0, 1, 2, 3}


def test_max_objects_caps_the_cut_level_and_keeps_levels() -> None:
    attn = torch.from_numpy(structured_attention(6, 16, 24, 6, seed=5))
    free = cluster_attention(attn, tau=0.3)
    assert free.sizes[free.converged] > 3
    capped = cluster_attention(attn, tau=0.3, max_objects=3)
    assert capped.level == len(capped.sizes) - 1 and capped.sizes[-1] == 3
    assert len(np.unique(capped.labels)) <= 3
    assert capped.level_labels.shape == (len(capped.sizes), 6, 16)
    np.testing.assert_array_equal(capped.level_labels[capped.converged], free.labels)
    assert capped.hierarchy.capped_from == capped.converged
    # every converged cluster goes wholly into one capped cluster
    parent = capped.hierarchy.parents[-1]
    assert len(parent) == free.sizes[free.converged]


def test_every_level_is_kept_and_can_be_cut() -> None:
    attn = torch.from_numpy(structured_attention(6, 12, 20, 4, seed=2))
    result = cluster_attention(attn, tau=1.0)
    assert result.converged >= 1
    assert result.sizes == sorted(result.sizes, reverse=True)
    level0 = cluster_attention(attn, tau=1.0, level=0)
    assert level0.level == 0
    np.testing.assert_array_equal(level0.labels, result.level_labels[0])
    for level, parents in enumerate(result.hierarchy.parents[1:], start=1):
        assert len(parents) == result.sizes[level - 1] and parents.max() == result.sizes[level] - 1
    top = cluster_attention(attn, tau=1.0, level=result.converged + 1)  # known after the work: kept, cut at the top
    assert top.hierarchy.cut == result.converged and top.hierarchy.warnings == [
        f"--level {result.converged + 1} does not exist: this video's hierarchy has levels 0..{result.converged}; "
        f"cut at the top level, {result.converged}"
    ]


def test_float32_matches_float64_on_separated_data() -> None:
    attn = structured_attention(5, 12, 20, 3, seed=8)
    a64 = cluster_attention(torch.from_numpy(attn)).labels
    a32 = cluster_attention(torch.from_numpy(attn).float()).labels
    assert same_partition(a64, a32)


def test_self_distances_use_one_product_and_are_symmetric() -> None:
    p = torch.rand(50, 30, dtype=torch.float64, generator=torch.Generator().manual_seed(4)).softmax(-1)
    d = sym_kl(p, p)
    assert torch.equal(d, d.T)
    torch.testing.assert_close(d, sym_kl(p, p.clone()), rtol=0, atol=1e-12)
    p = torch.rand(400, 300, generator=torch.Generator().manual_seed(5)).mul(20).softmax(-1)  # float32, sharper
    d = sym_kl(p, p)
    assert torch.equal(d, d.T)  # bit for bit: (s_i + s_j) - (c_ij + c_ji), each sum the same both ways
    torch.testing.assert_close(d, sym_kl(p.double(), p.double()).float(), rtol=0, atol=1e-4)


@pytest.mark.parametrize(("t", "window"), [(1, 3), (2, 3), (7, 3), (8, 3), (10, 4), (9, 1)])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_every_level_matches_the_reference(t: int, window: int, dtype: torch.dtype, device: str) -> None:
    """Streamed first round and own-window level-0 labels against the vectorised reference, at every level."""
    from reference_cluster import vector_levels

    attn = structured_attention(t, 10, 18, 4, seed=t + window, concentration=12.0)
    expected = vector_levels(attn, 1.0, window)
    result = cluster_attention(torch.from_numpy(attn).to(device, dtype), tau=1.0, window=window)
    assert len(result.sizes) == len(expected)
    for level, labels in enumerate(expected):
        assert same_partition(labels, result.level_labels[level]), level
        assert result.sizes[level] >= len(np.unique(labels))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_labels_come_from_each_levels_nearest_centroid_computed_once(dtype: torch.dtype, device: str) -> None:
    """A global round leaves most clusters alone: their centroids are the level below's bit for bit and their
    distances are computed once; every level's labels stay the nearest of its own centroids."""
    from bavos.pipeline.cluster import distinct_centroids, label_window, safe_log

    attn = torch.from_numpy(structured_attention(12, 16, 24, 20, seed=0, concentration=8.0)).to(device, dtype)
    result = cluster_attention(attn, tau=2.0, window=2)
    hierarchy = result.hierarchy
    assert result.converged == 4
    stacked, log_stacked, index, _, _ = distinct_centroids(hierarchy)
    assert stacked.shape[0] < sum(result.sizes[1:]) * 0.4  # (145 distinct of 434)
    for lv, at in enumerate(index, start=1):
        assert torch.equal(stacked[torch.as_tensor(at, device=device)], hierarchy.centroids[lv])
    assert torch.equal(log_stacked, safe_log(stacked))
    rows = attn.reshape(-1, attn.shape[-1])
    for lv in range(1, result.converged + 1):
        centroids = hierarchy.centroids[lv]
        nearest = sym_kl(centroids, rows).argmin(0).cpu().numpy()
        np.testing.assert_array_equal(result.level_labels[lv].reshape(-1), nearest)
    np.testing.assert_array_equal(
        label_window(rows, result.level_labels[0].reshape(-1), hierarchy),
        result.level_labels.reshape(len(result.sizes), -1),
    )


def test_streaming_leaders_give_the_batch_pass_groups() -> None:
    from bavos.pipeline.cluster import StreamingLeaders, _leader_merge

    g = torch.Generator().manual_seed(9)
    centroids = (torch.randn(60, 16, generator=g, dtype=torch.float64) * 2).softmax(-1)
    for tau in (0.2, 0.8, 2.0):
        batch_means, batch_labels = _leader_merge(centroids, tau)
        stream = StreamingLeaders(tau)
        for start in (0, 7, 8, 30, 31):  # windows of uneven sizes, one of a single centroid
            stop = {0: 7, 7: 8, 8: 30, 30: 31, 31: 60}[start]
            stream.add(centroids[start:stop])
        means, labels = stream.result()
        np.testing.assert_array_equal(labels, batch_labels)
        torch.testing.assert_close(means, batch_means, rtol=0, atol=1e-15)


def test_a_capped_level_follows_the_merge_tree() -> None:
    attn = torch.from_numpy(structured_attention(6, 16, 24, 6, seed=5))
    capped = cluster_attention(attn, tau=0.3, max_objects=3)
    parent = capped.hierarchy.parents[-1]
    np.testing.assert_array_equal(capped.labels, parent[capped.level_labels[capped.converged]])
    level0 = cluster_attention(attn, tau=0.3, level=0, max_objects=4)  # level 0 capped: its centroids are kept
    assert level0.hierarchy.capped_from == 0 and len(np.unique(level0.labels)) <= 4


def test_group_sums_are_the_same_on_every_run(device: str) -> None:
    """Rows added into their groups: equal to NumPy's sums, and bit for bit the same when repeated (on CUDA too,
    where index_add_ adds in whatever order its threads finish)."""
    from bavos.pipeline.cluster import add_rows

    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.random((3000, 64), dtype=np.float32)).to(device)
    labels = rng.integers(0, 7, 3000)
    index = torch.as_tensor(labels, device=device)
    runs = [add_rows(torch.zeros(7, 64, device=device), index, x).cpu() for _ in range(5)]
    expected = np.stack([x.cpu().numpy()[labels == g].astype(np.float64).sum(0) for g in range(7)])
    np.testing.assert_allclose(runs[0].numpy(), expected, rtol=1e-5)
    assert all(torch.equal(runs[0], r) for r in runs[1:])


def test_a_video_that_converges_at_level_0_can_be_capped() -> None:
    """One window whose clusters the global round leaves as they are: converged at level 0, and the cap still works
    (it stopped with "capping level 0 needs its centroids")."""
    attn = torch.from_numpy(structured_attention(3, 12, 20, 5, seed=2, concentration=60.0))
    result = cluster_attention(attn, tau=0.05, window=3, max_objects=2)
    assert result.converged == 0 and result.sizes[0] > 2 and result.sizes[-1] == 2
    assert len(np.unique(result.labels)) == 2


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_global_rounds_compare_only_pairs_with_a_group_of_several(dtype: torch.dtype, monkeypatch) -> None:
    """Two groups of one are their members, found farther than tau apart by the pass that left them alone: the next
    round computes no distance between them, and gives the hierarchy that comparing every pair gives."""
    from bavos.pipeline import cluster

    attn = torch.from_numpy(structured_attention(12, 16, 24, 20, seed=0, concentration=8.0)).to(dtype)
    cells = {"known far": 0, "every pair": 0}
    plain_sym_kl, plain_merge = cluster.sym_kl, cluster._leader_merge
    mode = "known far"

    def counted(p: torch.Tensor, q: torch.Tensor, *args: object) -> torch.Tensor:
        if counting:
            cells[mode] += p.shape[0] * q.shape[0]
        return plain_sym_kl(p, q, *args)

    monkeypatch.setattr(cluster, "sym_kl", counted)

    def finish() -> cluster.MergeTree:
        nonlocal counting
        builder, counting = cluster.MergeTreeBuilder(2.0), False
        for s in range(0, 12, 2):
            builder.add_window(attn[s : s + 2].reshape(-1, 24))
        counting = True
        return builder.finish()

    counting = False
    known = finish()
    mode = "every pair"
    monkeypatch.setattr(cluster, "_leader_merge", lambda x, tau, fresh=None: plain_merge(x, tau))
    plain = finish()
    assert known.sizes == plain.sizes and known.converged == plain.converged >= 4
    for a, b in zip(known.parents + known.centroids[1:], plain.parents + plain.centroids[1:], strict=True):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    assert cells["known far"] < 0.5 * cells["every pair"], cells


def test_binned_rows_bound_the_distance_from_below_even_at_the_floor() -> None:
    """The bins' symmetric KL never exceeds the rows' own, also where a row is 0 over a whole bin (its clamped
    entries, not its clamped sum, make the bound: the sum of a bin of zeros clamped once would exceed it)."""
    from bavos.pipeline.cluster import COARSE_BIN, coarse_rows

    g = torch.Generator().manual_seed(3)
    p = (torch.randn(40, 5 * COARSE_BIN + 7, generator=g, dtype=torch.float64) * 6).softmax(-1)
    p[:10, : 2 * COARSE_BIN] = 0.0  # whole bins at 0, and partly 0
    p[10:20, ::3] = 0.0
    p = p / p.sum(1, keepdim=True)
    exact, bound = sym_kl(p, p), sym_kl(coarse_rows(p), coarse_rows(p))
    assert (bound <= exact + 1e-9).all()
    assert (bound > 1e-3).float().mean() > 0.9  # and not a trivial one


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_nearest_centroids_and_pairs_within_tau_are_those_every_distance_gives(dtype: torch.dtype) -> None:
    from bavos.pipeline.cluster import _row_dot, nearest_rows, safe_log, within

    attn = torch.from_numpy(structured_attention(4, 60, 200, 12, seed=5, concentration=6.0)).to(dtype)
    rows = attn.reshape(-1, 200)
    centroids = torch.cat([rows[::7], rows[3:40:9]])  # (U, M); some rows are their own centroid: distance 0
    centroids = torch.cat([centroids, centroids[:5]])  # exact duplicates: the first of equals wins
    dist = sym_kl(centroids, rows)
    groups = [torch.arange(len(centroids)), torch.arange(0, len(centroids), 3), torch.tensor([4, 1, 30, 2])]
    expected = torch.stack([dist[at].argmin(0) for at in groups])
    assert torch.equal(nearest_rows(centroids, rows, safe_log(centroids), groups), expected)
    worst = torch.stack([at[dist[at].argmax(0)] for at in groups])  # guesses as far as can be: still right
    assert torch.equal(nearest_rows(centroids, rows, safe_log(centroids), groups, guesses=worst), expected)
    logs = safe_log(centroids), safe_log(rows)
    for tau in (0.5, 2.0, 8.0):
        close = within(centroids, rows, *logs, _row_dot(centroids, logs[0]), _row_dot(rows, logs[1]), tau)
        assert torch.equal(close, dist <= tau)
        assert 0 < int(close.sum()) < close.numel()
