"""Peak memory that `bavos segment` says before an input, against what it then uses, at several frame sizes.

    python benchmarks/bench_memory.py                                  # 320x240, 1920x1080, 3840x2160, 16x4096
    python benchmarks/bench_memory.py --sizes 2160x3840 --frames 30 -- --batch-size 2

For each size, a clip of ``--frames`` frames of 8x8 noise blocks (x264 ultrafast) is written to a temporary folder
and segmented in a fresh process, ``bavos segment CLIP --checkpoint none --backbone-weights none -o OUT [ARGS]``
(the weightless mode at the defaults of this machine). Printed per size: the peak memory the run said (its
estimate line, in tenths of a GB), the peak resident memory the process used (``ru_maxrss``) and their ratio.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import av
import numpy as np

SIZES = ["240x320", "1080x1920", "2160x3840", "4096x16"]


def write_clip(path: Path, frames: int, height: int, width: int, container: str | None = None) -> Path:
    """``frames`` frames of 8x8 blocks of noise moving right, x264 ultrafast (quick to make even at 4K); ``container``:
    the format when the file's suffix does not say it (``mpegts``)."""
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
    with av.open(str(path), "w", format=container) as out:
        stream = out.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast"}
        for i in range(frames):
            image = np.kron(np.roll(base, i, axis=1), np.ones((8, 8, 1), np.uint8))[:height, :width]
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def measure(clip: Path, out: Path, args: list[str]) -> tuple[float | None, float]:
    """(GB said, GB used) by one `bavos segment` run in a fresh process."""
    command = [
        sys.executable,
        "-m",
        "bavos",
        "segment",
        str(clip),
        "-o",
        str(out),
        "--checkpoint",
        "none",
        "--backbone-weights",
        "none",
        *args,
    ]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"bavos segment failed:\n{err}")
    said = re.search(r"peak memory (\d+\.\d) GB", err)
    return (float(said.group(1)) if said else None), usage.ru_maxrss / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=SIZES, metavar="HxW")
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("args", nargs="*", help="more `bavos segment` options, after --")
    opts = parser.parse_args()
    print("| frames | said | used | used / said |\n| --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as tmp:
        for size in opts.sizes:
            height, width = (int(v) for v in size.split("x"))
            clip = write_clip(Path(tmp) / f"clip-{size}.mp4", opts.frames, height, width)
            said, used = measure(clip, Path(tmp) / f"out-{size}", opts.args)
            ratio = f"{used / said:.2f}" if said else "-"
            shown = f"{said:.1f} GB" if said is not None else "not said"
            print(f"| {opts.frames} of {width}x{height} | {shown} | {used:.2f} GB | {ratio} |", flush=True)


if __name__ == "__main__":
    main()
