"""Training augmentation on the device, with the same parameters on every frame of a clip (method.md §4.2).

The release's pipeline is kornia's ``VideoSequential(RandomGrayscale(p=0.2), ColorJitter(0.4, 0.4, 0.4, 0.1,
p=0.8), RandomGaussianBlur(kernel, (sigma, sigma), p=0.5), Normalize, same_on_frame=True)``. bavos draws the
parameters itself (on the CPU, from a given generator, so a step's augmentation depends on that generator's seed
only, whatever the device; kornia draws from torch's global generator) and applies them with kornia's own
operations, those its ColorJitter (torchvision's semantics, kornia >= 0.6.4) and RandomGaussianBlur use. In order:
grayscale (p 0.2); colour jitter (p 0.8; brightness, contrast and saturation factors in [0.6, 1.4], hue shift in
[-0.1, 0.1] turns, in a random order of the four); Gaussian blur (p 0.5; kernel 10% of the height and width
rounded to odd, 19 x 39 at 192 x 384, reflect borders) with a sigma in [0.1, 2] drawn once per process for the
whole run, as the release does (method.md §5.4), or per clip with ``--blur-sigma clip``; then normalisation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import kornia
import torch
from torch import Tensor

from bavos.config import NORMALIZATION

GRAY_P, JITTER_P, BLUR_P = 0.2, 0.8, 0.5
JITTER, HUE = 0.4, 0.1
SIGMA = (0.1, 2.0)


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


def sample_params(clips: int, generator: torch.Generator, sigma: float | None = None) -> ClipParams:
    """Draw the parameters of ``clips`` clips from ``generator`` (a CPU generator); every clip blurs with ``sigma``
    when it is given (the same draws are made, so the other parameters do not change)."""

    def uniform(low: float, high: float) -> Tensor:
        return low + (high - low) * torch.rand(clips, generator=generator)

    params = ClipParams(
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
    if sigma is not None:
        params.sigma = torch.full_like(params.sigma, sigma)
    return params


def process_sigma(generator: torch.Generator) -> float:
    """The one blur sigma of a process for a whole run (``--blur-sigma process``, the release's: it draws it once
    per process when the pipeline is built, method.md §5.4), uniform in [0.1, 2], from ``generator`` (CPU)."""
    return float(SIGMA[0] + (SIGMA[1] - SIGMA[0]) * torch.rand((), generator=generator))


# kornia's operations of ColorJitter, by the index its ``order`` gives them: brightness, contrast, saturation, hue
_JITTER = (
    kornia.enhance.adjust_brightness_accumulative,
    kornia.enhance.adjust_contrast_with_mean_subtraction,
    kornia.enhance.adjust_saturation_with_gray_subtraction,
    lambda x, turns: kornia.enhance.adjust_hue(x, turns * 2 * math.pi),  # kornia's hue is in radians
)


def kernel_size(side: int) -> int:
    """The release's blur kernel along a side: 10% of it, made odd (19 for 192, 39 for 384), at least 3, and
    narrower than twice the side (reflect borders need it)."""
    return min(max(3, int(0.1 * side) // 2 * 2 + 1), 2 * (side - 1) + 1)


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
    kernel = (kernel_size(x.shape[-2]), kernel_size(x.shape[-1]))
    clips = []
    for i, clip in enumerate(x):  # (T, 3, H, W): B is small (clips per process)
        if params.gray[i]:
            clip = kornia.color.rgb_to_grayscale(clip).expand_as(clip)
        if params.jitter[i]:
            factors = (params.brightness[i], params.contrast[i], params.saturation[i], params.hue[i])
            for op in params.order[i].tolist():
                clip = _JITTER[op](clip, float(factors[op]))
        if params.blur[i]:
            sigma = float(params.sigma[i])
            clip = kornia.filters.gaussian_blur2d(clip, kernel, (sigma, sigma), border_type="reflect")
        clips.append(clip)
    return torch.stack(clips)
