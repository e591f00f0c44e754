"""bavos's training augmentation: its own parameter draws, applied as the release's kornia pipeline applies them."""

import pytest
import torch
from kornia.augmentation import ColorJitter, Normalize, RandomGaussianBlur, RandomGrayscale
from kornia.augmentation.container import VideoSequential
from kornia.augmentation.container.params import ParamItem

from bavos.training.augment import augment, kernel_size, normalize, sample_params

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def _release_pipeline(height: int, width: int, sigma: float) -> VideoSequential:
    """The release's augmentation (method.md §4.2) with its kernel rule and one fixed sigma."""
    kernel = (int(0.1 * height) // 2 * 2 + 1, int(0.1 * width) // 2 * 2 + 1)
    return VideoSequential(
        RandomGrayscale(p=0.2),
        ColorJitter(0.4, 0.4, 0.4, 0.1, p=0.8),
        RandomGaussianBlur(kernel, (sigma, sigma), p=0.5),
        Normalize(torch.tensor(IMAGENET[0]), torch.tensor(IMAGENET[1])),
        data_format="BTCHW",
        same_on_frame=True,
    )


def _release_params(params, i: int, frames: int) -> list:
    """Clip i's bavos parameters in the form the release's VideoSequential replays (one entry per frame)."""

    def each(v) -> torch.Tensor:
        return torch.full((frames,), float(v))

    def on(v) -> torch.Tensor:
        return torch.full((frames,), bool(v))

    return [
        ParamItem("RandomGrayscale_0", {"batch_prob": on(params.gray[i])}),
        ParamItem(
            "ColorJitter_1",
            {
                "batch_prob": on(params.jitter[i]),
                "brightness_factor": each(params.brightness[i]),
                "contrast_factor": each(params.contrast[i]),
                "saturation_factor": each(params.saturation[i]),
                "hue_factor": each(params.hue[i]),
                "order": params.order[i].clone(),
            },
        ),
        ParamItem("RandomGaussianBlur_2", {"batch_prob": on(params.blur[i]), "sigma": each(params.sigma[i])}),
        ParamItem("Normalize_3", {"batch_prob": on(True)}),
    ]


@pytest.mark.parametrize("seed", range(6))
def test_equals_the_releases_kornia_pipeline_for_the_same_parameters(seed: int) -> None:
    """For fixed parameters, bavos's augmentation and normalisation give what the release's VideoSequential gives
    (ColorJitter replays one order per call, so one call per clip: the release's one clip per GPU)."""
    b, t, h, w = 2, 3, 96, 192
    x = torch.rand(b, t, 3, h, w, generator=torch.Generator().manual_seed(100 + seed))
    params = sample_params(b, torch.Generator().manual_seed(seed))
    if seed < 3:  # every operation on, grayscale in one of them
        params.gray[:], params.jitter[:], params.blur[:] = seed == 0, True, True
    mine = normalize(augment(x, params), "imagenet")
    for i in range(b):
        theirs = _release_pipeline(h, w, float(params.sigma[i]))(x[i : i + 1], params=_release_params(params, i, t))
        assert float((mine[i] - theirs[0]).abs().max()) < 1e-5
    if seed < 3:  # not the identity
        assert float((mine - normalize(x, "imagenet")).abs().max()) > 0.05


def test_kernel_sizes_of_the_release() -> None:
    assert (kernel_size(192), kernel_size(384), kernel_size(96), kernel_size(200)) == (19, 39, 9, 21)
    assert kernel_size(12) == 3 and kernel_size(2) == 3 and kernel_size(1) == 1  # small test frames still blur


def test_same_parameters_on_every_frame_of_a_clip() -> None:
    g = torch.Generator().manual_seed(5)
    frame = torch.rand(3, 24, 40, generator=g)
    x = torch.stack([frame.expand(3, -1, -1, -1), torch.rand(3, 3, 24, 40, generator=g)])  # (2, 3, 3, H, W)
    params = sample_params(2, torch.Generator().manual_seed(7))
    params.jitter[:] = True
    params.blur[:] = True
    y = augment(x, params)
    assert y.shape == x.shape
    torch.testing.assert_close(y[0, 0], y[0, 1])
    torch.testing.assert_close(y[0, 0], y[0, 2])
    assert not torch.allclose(y[0, 0], x[0, 0])
    assert y.min() >= 0 and y.max() <= 1


def test_parameters_depend_on_the_generator_only() -> None:
    a, b = (sample_params(4, torch.Generator().manual_seed(11)) for _ in range(2))
    for field in ("gray", "jitter", "brightness", "hue", "order", "blur", "sigma"):
        assert torch.equal(getattr(a, field), getattr(b, field))
    assert ((a.brightness >= 0.6) & (a.brightness <= 1.4)).all() and (a.hue.abs() <= 0.1).all()
    assert ((a.sigma >= 0.1) & (a.sigma <= 2.0)).all()
    assert sorted(a.order[0].tolist()) == [0, 1, 2, 3]


def test_grayscale_and_identity_paths() -> None:
    x = torch.rand(1, 2, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    params = sample_params(1, torch.Generator().manual_seed(0))
    params.gray[:], params.jitter[:], params.blur[:] = True, False, False
    y = augment(x, params)
    torch.testing.assert_close(y[0, :, 0], y[0, :, 1])
    params.gray[:] = False
    torch.testing.assert_close(augment(x, params), x)


def test_imagenet_normalisation() -> None:
    x = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1).expand(3, 2, 2)
    torch.testing.assert_close(normalize(x, "imagenet"), torch.zeros(3, 2, 2))
