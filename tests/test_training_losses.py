import math

import pytest
import reference_train as ref
import torch

from bavos.training.losses import motion_loss, semantic_loss


def _reference_semantic(attn, feats, points):
    """tests/reference_train.py's loops (method.md §4.4), the mean over clips, at 5 positives and 9 negatives."""
    terms = [ref.semantic(attn[b], feats[b], points[b].tolist(), pos=5, neg=9) for b in range(len(attn))]
    return [float(sum(t[k] for t in terms) / len(terms)) for k in range(2)]


def _reference_motion(attn, points):
    """tests/reference_train.py's loops (method.md §4.5), the mean over clips, at 4 positives and 7 negatives."""
    return float(sum(ref.motion(attn[b], points[b].tolist(), 3, pos=4, neg=7) for b in range(len(attn))) / len(attn))


@pytest.fixture
def random_case():
    g = torch.Generator().manual_seed(3)
    t, n = 3, 24
    attn = (torch.randn(2, t * n, t * n, generator=g, dtype=torch.float64) * 3).softmax(-1)
    feats = torch.randn(2, t, n, 8, generator=g, dtype=torch.float64)
    points = torch.stack([torch.randperm(n, generator=g)[:4] for _ in range(2)])  # (B, P): drawn per clip
    assert not torch.equal(points[0], points[1])
    return attn, feats, points


def test_shared_points_are_the_per_clip_points_repeated(random_case) -> None:
    attn, feats, points = random_case
    shared = points[0]
    sem = {"pos": 5, "neg": 9}
    mot = {"frames": 3, "pos": 4, "neg": 7}
    repeated = shared.expand(2, -1)
    for got, want in (
        (semantic_loss(attn, feats, shared, **sem), semantic_loss(attn, feats, repeated, **sem)),
        ((motion_loss(attn, shared, **mot),), (motion_loss(attn, repeated, **mot),)),
    ):
        for a, b in zip(got, want, strict=True):
            torch.testing.assert_close(a, b)


def test_per_clip_points_give_the_mean_of_each_clips_loss(random_case) -> None:
    attn, feats, points = random_case
    alone = [semantic_loss(attn[i : i + 1], feats[i : i + 1], points[i], pos=5, neg=9) for i in range(2)]
    both = semantic_loss(attn, feats, points, pos=5, neg=9)
    for k in range(2):
        torch.testing.assert_close(both[k], (alone[0][k] + alone[1][k]) / 2)
    motions = [motion_loss(attn[i : i + 1], points[i], 3, pos=4, neg=7, centre=True) for i in range(2)]
    torch.testing.assert_close(motion_loss(attn, points, 3, pos=4, neg=7, centre=True), (motions[0] + motions[1]) / 2)


def test_semantic_matches_the_loop_reference(random_case) -> None:
    attn, feats, points = random_case
    got = semantic_loss(attn, feats, points, pos=5, neg=9, pos_threshold=0.9, neg_threshold=0.1)
    want = _reference_semantic(attn, feats, points)
    assert float(got[0]) == pytest.approx(want[0], rel=1e-10)
    assert float(got[1]) == pytest.approx(want[1], rel=1e-10)


def test_motion_matches_the_loop_reference(random_case) -> None:
    attn, _, points = random_case
    got = motion_loss(attn, points, frames=3, pos=4, neg=7, margin=1.0)
    assert float(got) == pytest.approx(_reference_motion(attn, points), rel=1e-10)


def test_semantic_known_answers() -> None:
    attn = torch.rand(1, 3 * 6, 3 * 6).softmax(-1)
    points = torch.tensor([0, 2])
    same = torch.ones(1, 3, 6, 4)  # every feature identical: cosine 1 everywhere
    pos, neg = semantic_loss(attn, same, points, pos=2, neg=3)
    assert float(pos) == 0.0 and float(neg) == pytest.approx(0.9)
    # Perfectly separated: the attended half shares the query's feature, the ignored half is orthogonal to it.
    feats = torch.zeros(1, 3, 6, 4)
    feats[..., :3, 0] = 1
    feats[..., 3:, 1] = 1
    sep = torch.zeros(1, 18, 18)
    for t in range(3):
        sep[:, :, t * 6 : t * 6 + 3] = 1.0
        sep[:, :, t * 6 + 3 : t * 6 + 6] = 0.01
    pos, neg = semantic_loss(sep / sep.sum(-1, keepdim=True), feats, points, pos=3, neg=3)
    assert float(pos) == 0.0 and float(neg) == 0.0


def test_motion_zero_for_a_perfectly_separated_map() -> None:
    """Positives' rows equal the query's; negatives attend elsewhere: every hinge is 0."""
    n, t = 6, 2
    attn = torch.full((1, t * n, t * n), 1e-12)
    group_a = [i for f in range(t) for i in range(f * n, f * n + 3)]
    group_b = [i for f in range(t) for i in range(f * n + 3, f * n + 6)]
    for rows in (group_a, group_b):
        for r in rows:
            attn[0, r, rows] = 1.0 / len(rows)
    loss = motion_loss(attn, torch.tensor([0, 1]), frames=t, pos=3, neg=3, margin=1.0)
    assert float(loss) == 0.0


def test_motion_known_answer_for_uniform_rows() -> None:
    """All rows uniform: sigma(pos) = sigma(neg), every hinge equals the margin, weights sum to 1 per frame."""
    attn = torch.full((2, 12, 12), 1 / 12)
    loss = motion_loss(attn, torch.tensor([0, 1, 2]), frames=2, pos=2, neg=3, margin=0.7)
    assert float(loss) == pytest.approx(0.7)


def test_entropy_weighting_by_hand() -> None:
    """One frame, 4 patches, queries 0 and 1, one positive and one negative each, computed by hand."""
    rows = [[0.97, 0.015, 0.01, 0.005], [0.1, 0.4, 0.3, 0.2], [0.25] * 4, [0.25] * 4]
    attn = torch.tensor([rows], dtype=torch.float64)
    loss = motion_loss(attn, torch.tensor([0, 1]), frames=1, pos=1, neg=1, margin=5.0)

    def cross(q: list[float], r: list[float]) -> float:
        return sum(a * math.log(b + 1e-10) for a, b in zip(q, r, strict=True))

    # query 0: positive = itself (0.97), negative = patch 3 (0.005); query 1: positive = itself, negative = 0.
    hinge0 = max(0.0, cross(rows[0], rows[3]) - cross(rows[0], rows[0]) + 5)
    hinge1 = max(0.0, cross(rows[1], rows[0]) - cross(rows[1], rows[1]) + 5)
    e0, e1 = cross(rows[0], rows[0]), cross(rows[1], rows[1])
    w0 = math.exp(e0) / (math.exp(e0) + math.exp(e1))
    assert w0 > 0.5  # the sharper query weighs more
    assert float(loss) == pytest.approx(w0 * hinge0 + (1 - w0) * hinge1, rel=1e-12)
    assert hinge0 > 0 and hinge1 > 0


def test_gradients_reach_attention_and_features(random_case) -> None:
    attn, feats, points = random_case
    attn = attn.clone().requires_grad_()
    feats = feats.clone().requires_grad_()
    pos, neg = semantic_loss(attn, feats, points, pos=5, neg=9)
    (pos + neg + motion_loss(attn, points, 3, pos=4, neg=7, centre=True)).backward()
    assert feats.grad.abs().sum() > 0 and attn.grad.abs().sum() > 0
