"""Make assets/demo.mp4: a short synthetic clip (moving shapes on a textured background), written with PyAV.

Run `python assets/make_demo.py` to rebuild it; the file is committed so that the README's first command works
on a fresh machine without any data.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

WIDTH, HEIGHT, FRAMES, FPS = 320, 240, 48, 24


def frame(t: int, rng_texture: np.ndarray) -> np.ndarray:
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    img = np.empty((HEIGHT, WIDTH, 3), dtype=np.float32)
    img[..., 0] = 90 + 40 * np.sin(xx / 23.0)
    img[..., 1] = 120 + 30 * np.cos(yy / 17.0)
    img[..., 2] = 80 + rng_texture
    ball = (xx - (40 + 4.5 * t)) ** 2 + (yy - (80 + 30 * np.sin(t / 8))) ** 2 < 28**2
    img[ball] = (230, 60, 40)
    left, top = int(250 - 3 * t), 150
    img[top : top + 50, max(left, 0) : max(left + 70, 0)] = (40, 70, 220)
    return np.clip(img, 0, 255).astype(np.uint8)


DEMO = Path(__file__).with_name("demo.mp4")


def main(path: Path = DEMO) -> None:
    texture = np.random.default_rng(0).normal(0, 12, size=(HEIGHT, WIDTH)).astype(np.float32)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.options = {"crf": "28"}
        for t in range(FRAMES):
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame(t, texture), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


if __name__ == "__main__":
    main()
