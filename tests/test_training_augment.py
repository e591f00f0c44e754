import colorsys

import pytest
import torch

from bavos.training.augment import (
    augment,
    gaussian_blur,
    hsv_to_rgb,
    kernel_size,
    normalize,
    rgb_to_hsv,
    sample_params,
)


def test_hsv_matches_colorsys_and_round_trips() -> None:
    x = torch.rand(2, 3, 5, 7, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    hsv = rgb_to_hsv(x)
    for i, j in ((0, 0), (3, 4), (1, 6)):
        want = colorsys.rgb_to_hsv(*x[1, :, i, j].tolist())
        assert hsv[1, :, i, j].tolist() == pytest.approx(want, abs=1e-12)
    torch.testing.assert_close(hsv_to_rgb(hsv), x)
    gray = torch.full((1, 3, 2, 2), 0.4, dtype=torch.float64)  # no hue: saturation 0, round trip exact
    torch.testing.assert_close(hsv_to_rgb(rgb_to_hsv(gray)), gray)


def test_hue_shift_of_a_third_turns_red_into_green() -> None:
    red = torch.zeros(1, 3, 1, 1)
    red[0, 0] = 1.0
    hsv = rgb_to_hsv(red)
    hsv[:, 0] += 1 / 3
    torch.testing.assert_close(hsv_to_rgb(hsv).flatten(), torch.tensor([0.0, 1.0, 0.0]))


def test_kernel_sizes_of_the_release() -> None:
    assert (kernel_size(192), kernel_size(384)) == (19, 39)


def test_blur_keeps_constants_and_mean_and_smooths() -> None:
    flat = torch.full((2, 3, 32, 48), 0.3)
    torch.testing.assert_close(gaussian_blur(flat, 1.5), flat)
    x = torch.rand(1, 3, 32, 48, generator=torch.Generator().manual_seed(1))
    y = gaussian_blur(x, 2.0)
    assert y.std() < x.std() / 2
    assert abs(float(y.mean() - x.mean())) < 0.01


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
