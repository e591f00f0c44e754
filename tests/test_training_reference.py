"""bavos's training step against tests/reference_train.py (method.md §4, written without bavos), in float64.

The correlator's forward pass with each frame's CLS, both losses at the release's counts (30/200 and 10/50 of 256
patches per frame), every gradient of the correlator, and the parameters after AdamW steps with the release's
parameter groups and cosine schedule.
"""

from dataclasses import replace

import pytest
import reference_train as ref
import torch

from bavos.config import TrainConfig
from bavos.training.losses import clip_losses, motion_loss
from bavos.training.train import apply_gradients, correlate, make_optimizer, new_correlator

B, T, N, D = 2, 3, 256, 64  # 16 x 16 patches per frame, 8 heads of 8


def _clips(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keys with object-like structure (a few centres plus noise, moving between frames), CLS tokens, points."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(B, 5, D, generator=g, dtype=torch.float64) * 2
    owner = torch.randint(0, 5, (B, 1, N), generator=g).expand(B, T, N).clone()
    owner[:, 1:] = owner[:, 1:].roll(3, dims=-1)  # the "objects" move by 3 patches after the first frame
    keys = centres.gather(1, owner.reshape(B, T * N, 1).expand(-1, -1, D)).reshape(B, T, N, D)
    keys = keys + torch.randn(B, T, N, D, generator=g, dtype=torch.float64)
    cls = torch.randn(B, T, D, generator=g, dtype=torch.float64)
    points = torch.stack([torch.randperm(N, generator=g)[:8] for _ in range(B)])
    return keys, cls, points


@pytest.fixture
def cfg() -> TrainConfig:
    return TrainConfig(attn_drop=0.0, drop=0.0, seed=4, lr=1e-3, min_lr=1e-6, steps=3)


def _model(cfg: TrainConfig) -> torch.nn.Module:
    from bavos.config import ModelConfig

    model = new_correlator(D, replace(ModelConfig(), correlator_heads=8), cfg).double()
    # wider q/k than the default init: sharper, less uniform attention, as training makes it
    with torch.no_grad():
        model.attn.qkv.weight[: 2 * D] *= 4
    return model


def _bavos_step(model: torch.nn.Module, keys, cls, points, cfg: TrainConfig):
    attn, feats = correlate(model, keys, cls, clean_attention=False)
    return clip_losses(attn, feats, points, cfg)


def test_losses_and_every_gradient_equal_the_reference(cfg: TrainConfig) -> None:
    keys, cls, points = _clips(0)
    model = _model(cfg)
    state = {k: v.detach().clone().requires_grad_() for k, v in model.state_dict().items()}
    mine = _bavos_step(model, keys, cls, points, cfg)
    mine.total.backward()
    theirs = ref.losses(state, keys, cls, points)
    theirs["total"].backward()
    for name in ("semantic_pos", "semantic_neg", "motion", "total"):
        value = float(getattr(mine, name).detach())
        assert value == pytest.approx(float(theirs[name]), rel=1e-12), name
        assert value > 1e-3, name  # every term is active on these clips
    for name, p in model.named_parameters():
        g, g_ref = p.grad, state[name].grad
        assert g_ref.norm() > 0, name
        assert float((g - g_ref).norm() / g_ref.norm()) < 1e-10, name


def test_adamw_steps_equal_the_reference(cfg: TrainConfig) -> None:
    """Three steps on three batches: the release's groups (decay on the four weight matrices) and cosine."""
    model = _model(cfg)
    start = {k: v.detach().clone() for k, v in model.state_dict().items()}
    params = {k: v.clone() for k, v in start.items()}
    reference = ref.AdamW(params, cfg.lr, cfg.min_lr, cfg.steps, cfg.weight_decay)
    optimizer, scheduler = make_optimizer(model, cfg)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    for step in range(3):
        keys, cls, points = _clips(10 + step)
        apply_gradients(_bavos_step(model, keys, cls, points, cfg), optimizer, scheduler, scaler)
        state = {k: v.detach().clone().requires_grad_() for k, v in params.items()}
        ref.losses(state, keys, cls, points)["total"].backward()
        reference.step({k: v.grad for k, v in state.items()})
    for name, p in model.named_parameters():
        moved, moved_ref = p.detach() - start[name], params[name] - start[name]
        assert moved_ref.norm() > 0, name
        assert float((moved - moved_ref).norm() / moved_ref.norm()) < 1e-9, name


def test_the_weighted_centre_equals_the_reference() -> None:
    """--motion-centre: the centre as an eleventh positive, its weights without gradient (the release's code)."""
    g = torch.Generator().manual_seed(5)
    attn = (torch.randn(2, 3 * 64, 3 * 64, generator=g, dtype=torch.float64) * 3).softmax(-1).requires_grad_()
    points = torch.stack([torch.randperm(64, generator=g)[:4] for _ in range(2)])
    mine = motion_loss(attn, points, 3, pos=10, neg=20, centre=True)
    (grad,) = torch.autograd.grad(mine, attn)
    theirs = torch.stack(
        [ref.motion(attn[b], points[b].tolist(), 3, pos=10, neg=20, centre=True) for b in range(2)]
    ).mean()
    (grad_ref,) = torch.autograd.grad(theirs, attn)
    assert float(mine) == pytest.approx(float(theirs), rel=1e-12)
    assert float((grad - grad_ref).norm() / grad_ref.norm()) < 1e-10
    assert float(motion_loss(attn, points, 3, pos=10, neg=20)) != pytest.approx(float(mine))  # the centre counts
