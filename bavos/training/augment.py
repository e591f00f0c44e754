"""Training augmentation on the device, with the same parameters on every frame of a clip (METHOD.md 3.2).

In order: random grayscale (p 0.2); colour jitter (p 0.8; brightness, contrast and saturation factors in
[0.6, 1.4], hue shift in [-0.1, 0.1] turns, applied in a random order as torchvision/kornia do); Gaussian blur
(p 0.5; kernel 10% of the height and width rounded up to odd, 19 x 39 at 192 x 384, reflect borders) with a
sigma in [0.1, 2] drawn per clip (the release draws one sigma per process, METHOD.md B17: not reproduced); then
normalisation. Parameters are drawn on the CPU from a given generator, so a step's augmentation depends on
that generator's seed only, whatever the device.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from bavos.config import NORMALIZATION

GRAY_P, JITTER_P, BLUR_P = 0.2, 0.8, 0.5
JITTER, HUE = 0.4, 0.1
SIGMA = (0.1, 2.0)
_LUMA = (0.299, 0.587, 0.114)


@dataclass
class ClipParams:
    """Augmentation parameters of B clips (each a (B,) tensor; ``order`` is (B, 4))."""

    gray: Tensor
    jitter: Tensor
    brightness: Tensor
    contrast: Tensor
    saturation: Tensor
    hue: Tensor
    order: Tensor  # permutation of (brightness, contrast, saturation, hue)
    blur: Tensor
    sigma: Tensor


def sample_params(clips: int, generator: torch.Generator) -> ClipParams:
    """Draw the parameters of ``clips`` clips from ``generator`` (a CPU generator)."""

    def uniform(low: float, high: float) -> Tensor:
        return low + (high - low) * torch.rand(clips, generator=generator)

    return ClipParams(
        gray=torch.rand(clips, generator=generator) < GRAY_P,
        jitter=torch.rand(clips, generator=generator) < JITTER_P,
        brightness=uniform(1 - JITTER, 1 + JITTER),
        contrast=uniform(1 - JITTER, 1 + JITTER),
        saturation=uniform(1 - JITTER, 1 + JITTER),
        hue=uniform(-HUE, HUE),
        order=torch.stack([torch.randperm(4, generator=generator) for _ in range(clips)]),
        blur=torch.rand(clips, generator=generator) < BLUR_P,
        sigma=uniform(*SIGMA),
    )


def grayscale(x: Tensor) -> Tensor:
    """(..., 3, H, W) RGB -> (..., 1, H, W) luma."""
    r, g, b = x.unbind(-3)
    return (_LUMA[0] * r + _LUMA[1] * g + _LUMA[2] * b).unsqueeze(-3)


def rgb_to_hsv(x: Tensor) -> Tensor:
    """(..., 3, H, W) RGB in [0, 1] -> HSV, hue in turns [0, 1)."""
    maxc, argmax = x.max(dim=-3)
    delta = maxc - x.min(dim=-3).values
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    r, g, b = x.unbind(-3)
    hue = torch.where(argmax == 0, ((g - b) / safe) % 6, torch.where(argmax == 1, (b - r) / safe + 2,
                                                                       (r - g) / safe + 4)) / 6
    hue = torch.where(delta > 0, hue, torch.zeros_like(hue))
    sat = torch.where(maxc > 0, delta / torch.where(maxc > 0, maxc, torch.ones_like(maxc)), torch.zeros_like(maxc))
    return torch.stack([hue, sat, maxc], dim=-3)


def hsv_to_rgb(x: Tensor) -> Tensor:
    """(..., 3, H, W) HSV (hue in turns) -> RGB."""
    h, s, v = x.unbind(-3)
    h6 = (h % 1) * 6
    sector = h6.floor().long() % 6
    f = h6 - h6.floor()
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    table = torch.stack([torch.stack(c, dim=0) for c in ((v, q, p, p, t, v), (t, v, v, q, p, p),
                                                          (p, p, t, v, v, q))], dim=0)  # (3, 6, ...)
    index = sector.unsqueeze(0).unsqueeze(0).expand(3, 1, *sector.shape)
    return table.gather(1, index).squeeze(1).movedim(0, -3)


def _jitter(x: Tensor, op: int, factor: float) -> Tensor:
    """One colour operation on (T, 3, H, W) frames: 0 brightness, 1 contrast, 2 saturation, 3 hue."""
    if op == 0:
        return (x * factor).clamp(0, 1)
    if op == 1:
        mean = grayscale(x).mean(dim=(-3, -2, -1), keepdim=True)  # per frame
        return (factor * x + (1 - factor) * mean).clamp(0, 1)
    if op == 2:
        return (factor * x + (1 - factor) * grayscale(x)).clamp(0, 1)
    hsv = rgb_to_hsv(x)
    hsv = torch.cat([(hsv[:, :1] + factor) % 1, hsv[:, 1:]], dim=1)
    return hsv_to_rgb(hsv).clamp(0, 1)


def kernel_size(side: int) -> int:
    """10% of a side, made odd (19 for 192, 39 for 384)."""
    k = max(3, int(0.1 * side))
    return k if k % 2 else k + 1


def gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of (T, 3, H, W) frames, kernel 10% of each side, reflect borders."""
    t, c, h, w = x.shape
    out = x.reshape(t * c, 1, h, w)
    for dim, size in ((-2, kernel_size(h)), (-1, kernel_size(w))):
        size = min(size, 2 * (x.shape[dim] - 1) + 1)  # reflect padding must be narrower than the side
        r = torch.arange(size, device=x.device, dtype=x.dtype) - size // 2
        kernel = torch.exp(-(r**2) / (2 * sigma**2))
        kernel = kernel / kernel.sum()
        pad = (0, 0, size // 2, size // 2) if dim == -2 else (size // 2, size // 2, 0, 0)
        shape = (1, 1, size, 1) if dim == -2 else (1, 1, 1, size)
        out = F.conv2d(F.pad(out, pad, mode="reflect"), kernel.view(shape))
    return out.reshape(t, c, h, w)


def normalize(x: Tensor, normalization: str) -> Tensor:
    """(..., 3, H, W) in [0, 1] -> normalised with the named statistics."""
    mean, std = (torch.tensor(v, device=x.device, dtype=x.dtype).view(3, 1, 1) for v in NORMALIZATION[normalization])
    return (x - mean) / std


def augment(x: Tensor, params: ClipParams) -> Tensor:
    """Augment clips with the same parameters on every frame of a clip.

    Args:
        x: (B, T, 3, H, W) frames in [0, 1].
        params: from :func:`sample_params` with B clips.

    Returns:
        (B, T, 3, H, W) augmented frames in [0, 1] (not normalised).
    """
    clips = []
    for i, clip in enumerate(x):  # (T, 3, H, W): B is small (clips per process)
        if params.gray[i]:
            clip = grayscale(clip).expand_as(clip)
        if params.jitter[i]:
            factors = (params.brightness[i], params.contrast[i], params.saturation[i], params.hue[i])
            for op in params.order[i].tolist():
                clip = _jitter(clip, op, float(factors[op]))
        if params.blur[i]:
            clip = gaussian_blur(clip, float(params.sigma[i]))
        clips.append(clip)
    return torch.stack(clips)
