"""What each CPU operating point costs against the paper's settings at the same resolution, in one run.

    python benchmarks/bench_cpu_point.py CLIP [CLIP ...]
    python benchmarks/bench_cpu_point.py clip.mp4 --points "paper=--max-key-frames 30 --stride 1" "tau=--tau 1.05"

Each clip is segmented by ``bavos segment`` (a process of its own, as a user runs it) once per point, the points in
the order given, the first being the reference: the weightless mode (random ViT-S/8 weights sharpened, which give
many clusters, as trained weights do) unless ``--checkpoint`` is given, on the CPU, at ``--resolution`` (160x240,
the CPU's default). For every point: the command's wall time and the segmenting's (what the first estimate is
for), the clusters of the converged level, the objects written, and the share of tokens in matching objects
against the reference over every decoded frame (a frame that a point skips with ``--stride`` takes its nearest
processed frame's labels, as its masks do; one Hungarian match on the contingency table:
``bavos.evaluation.metrics.matched_share``).
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DEFAULT_POINTS = [
    "paper=--key-ratio 10 --max-key-frames 30 --stride 1",
    "keys 10=--key-ratio 10 --max-key-frames 10 --stride 1",
    "stride 2=--key-ratio 10 --max-key-frames 30 --stride 2",
    "keys 10, stride 2=--key-ratio 10 --max-key-frames 10 --stride 2",
    "keys 10, stride 3=--key-ratio 10 --max-key-frames 10 --stride 3",
]


def output_labels(folder: Path) -> tuple[np.ndarray, np.ndarray, int]:
    """(processed frames, N) output cluster of every token, the decoded index of each processed frame, and the
    converged level's clusters, read from hierarchy.npz (the cut, capped as written)."""
    with np.load(folder / "hierarchy.npz") as z:
        labels, level, capped_from = z["labels"], int(z["level"]), int(z["capped_from"])
        offsets = z["parent_offsets"]
        parents = [z["parents"][a:b] for a, b in zip(offsets[:-1], offsets[1:], strict=True)]
        processed, sizes, converged = z["processed"], z["sizes"], int(z["converged"])
    if capped_from >= 0:  # the cap's groups of the level it was made from
        return parents[-1][labels[capped_from]], processed, int(sizes[converged])
    return labels[level], processed, int(sizes[converged])


def per_decoded(labels: np.ndarray, processed: np.ndarray, decoded: int) -> np.ndarray:
    """(decoded frames, N): each decoded frame's nearest processed frame's labels (ties to the earlier)."""
    nearest = np.abs(np.arange(decoded)[:, None] - processed[None, :]).argmin(1)
    return labels[nearest]


def run(clip: Path, options: list[str], out: Path, args: argparse.Namespace) -> dict:
    weights = (
        ["--checkpoint", args.checkpoint] if args.checkpoint else ["--checkpoint", "none", "--backbone-weights", "none"]
    )
    command = [
        sys.executable,
        "-m",
        "bavos",
        "segment",
        str(clip),
        "-o",
        str(out),
        "--device",
        "cpu",
        "--resolution",
        *args.resolution.split("x"),
        *weights,
        *options,
    ]
    started = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if proc.returncode:
        sys.exit(f"{shlex.join(command)} failed:\n{proc.stderr[-3000:]}")
    folder = out / clip.stem
    summary = json.loads((folder / "summary.json").read_text())
    labels, processed, clusters = output_labels(folder)
    said = [
        line.split(": estimated ", 1)[1].split(" at ")[0] for line in proc.stderr.splitlines() if ": estimated " in line
    ]
    return {
        "seconds": seconds,
        "run": summary["timings"]["total"],
        "frames": summary["frames"],
        "labels": labels,
        "processed": processed,
        "clusters": clusters,
        "objects": summary["objects"],
        "estimate": said[0] if said else "-",
    }


def main() -> None:
    from bavos.evaluation.metrics import matched_share

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("clips", nargs="+", type=Path)
    parser.add_argument("--points", nargs="+", default=DEFAULT_POINTS, help='"name=options", the first the reference')
    parser.add_argument("--resolution", default="160x240")
    parser.add_argument("--checkpoint", help="a checkpoint (default: the weightless mode)")
    args = parser.parse_args()
    points = [(p.split("=", 1)[0], shlex.split(p.split("=", 1)[1])) for p in args.points]
    print(
        "| clip | point | command s | x reference | segmenting s | first estimate | clusters | objects | tokens in "
        "matching objects |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as tmp:
        for clip in args.clips:
            reference = None
            for i, (name, options) in enumerate(points):
                r = run(clip, options, Path(tmp) / str(i), args)
                mine = per_decoded(r["labels"], r["processed"], r["frames"])
                if reference is None:
                    reference = r | {"decoded": mine}
                share = matched_share(reference["decoded"], mine)
                cells = [
                    f"{clip.name} ({r['frames']} frames)",
                    name,
                    f"{r['seconds']:.1f}",
                    f"{r['seconds'] / reference['seconds']:.2f}",
                    f"{r['run']:.1f}",
                    r["estimate"],
                    str(r["clusters"]),
                    str(r["objects"]),
                    f"{100 * share:.2f} %",
                ]
                print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
