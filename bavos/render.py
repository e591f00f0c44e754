"""Palettes, overlays and indexed-PNG writing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from bavos.errors import OutputError


def davis_palette() -> np.ndarray:
    """The 256-colour DAVIS (PASCAL VOC) palette as (256, 3) uint8: id 0 black, 1 dark red, 2 dark green, ...

    Colour bits of each channel come from interleaving the bits of the id (bit 0 -> red, 1 -> green, 2 -> blue),
    most significant first.
    """
    palette = np.zeros((256, 3), dtype=np.uint8)
    for index in range(256):
        value, r, g, b = index, 0, 0, 0
        for shift in range(7, -1, -1):
            r |= (value & 1) << shift
            g |= ((value >> 1) & 1) << shift
            b |= ((value >> 2) & 1) << shift
            value >>= 3
        palette[index] = (r, g, b)
    return palette


PALETTE = davis_palette()
_PALETTE_BYTES = PALETTE.tobytes()


def write_mask(path: Path, labels: np.ndarray) -> None:
    """Write (H, W) labels in 0..255 as an indexed (mode "P") PNG with the DAVIS palette."""
    image = Image.fromarray(labels.astype(np.uint8, copy=False), mode="P")
    image.putpalette(_PALETTE_BYTES)
    try:
        image.save(path, format="PNG", compress_level=1)
    except OSError as e:
        raise OutputError(f"{path}: cannot write mask ({e.strerror or e})") from e


def overlay(image: np.ndarray, labels: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend object colours over a frame; the background (id 0) is left as it is.

    Args:
        image: (H, W, 3) uint8 RGB.
        labels: (H, W) integer ids.
        alpha: opacity of the object colours.

    Returns:
        (H, W, 3) uint8.
    """
    colours = PALETTE[labels].astype(np.float32)
    blended = image.astype(np.float32) * (1 - alpha) + colours * alpha
    out = np.where((labels > 0)[..., None], blended, image.astype(np.float32))
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)
