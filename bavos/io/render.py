"""Palettes, overlays and mask PNG writing.

Masks are indexed (mode "P") 8-bit PNGs with the DAVIS palette when a video's ids fit (up to 255 clusters), else
16-bit greyscale PNGs (mode "I;16", the id as the pixel value), which PIL, OpenCV (``IMREAD_UNCHANGED``) and
``bavos eval`` read.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


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
_GOLDEN = 0.618033988749895


def palette(count: int) -> np.ndarray:
    """(max(count, 256), 3) uint8 colours: the DAVIS palette, then (ids 256 and up) hues spread by the golden ratio."""
    if count <= len(PALETTE):
        return PALETTE
    ids = np.arange(len(PALETTE), count)
    hue = (ids * _GOLDEN) % 1.0
    sat = 0.55 + 0.35 * ((ids // 7) % 2)
    val = 0.65 + 0.3 * ((ids // 3) % 2)
    sector = np.floor(hue * 6).astype(int) % 6  # HSV to RGB, one sector of the hue circle at a time
    f = hue * 6 - np.floor(hue * 6)
    p, q, t = val * (1 - sat), val * (1 - f * sat), val * (1 - (1 - f) * sat)
    rgb = np.choose(sector[None], [[val, t, p], [q, val, p], [p, val, t], [p, q, val], [t, p, val], [val, p, q]])
    extra = np.round(rgb.T * 255).astype(np.uint8)  # (count - 256, 3)
    return np.concatenate([PALETTE, extra])


def write_mask(path: Path, labels: np.ndarray) -> None:
    """Write (H, W) ids: uint8 as an indexed (mode "P") PNG with the DAVIS palette, uint16 as a 16-bit PNG."""
    if labels.dtype == np.uint16:
        image = Image.fromarray(np.ascontiguousarray(labels))  # mode "I;16"
    else:
        image = Image.fromarray(labels.astype(np.uint8, copy=False), mode="P")
        image.putpalette(_PALETTE_BYTES)
    image.save(path, format="PNG", compress_level=1)  # an OSError goes to the caller, which names the result


OVERLAY_BAND = 128  # rows blended at a time


def overlay(image: np.ndarray, labels: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend object colours over a frame; the background (id 0) is left as it is.

    Args:
        image: (H, W, 3) uint8 RGB.
        labels: (H, W) integer ids.
        alpha: opacity of the object colours.

    Returns:
        (H, W, 3) uint8.
    """
    colours = palette(int(labels.max()) + 1)
    out = np.empty_like(image)
    for top in range(0, image.shape[0], OVERLAY_BAND):  # float rows a band at a time: bounded at any frame size
        rows, ids = image[top : top + OVERLAY_BAND], labels[top : top + OVERLAY_BAND]
        blended = rows.astype(np.float32) * (1 - alpha) + colours[ids].astype(np.float32) * alpha
        band = np.where((ids > 0)[..., None], blended, rows.astype(np.float32))
        out[top : top + OVERLAY_BAND] = np.clip(band + 0.5, 0, 255).astype(np.uint8)
    return out
