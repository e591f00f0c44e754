"""What a `bavos segment` process spends around the work: importing torch and timm, and exiting, with Python's garbage
collector paused and frozen during the imports (``bavos.cli.app.import_torch``, the default) and without (the same
code with ``gc.disable``/``gc.freeze`` made no-ops), in alternating runs of one session.

    python benchmarks/bench_startup.py                     # 6 pairs on the demo's first 3 frames
    python benchmarks/bench_startup.py --pairs 10 --clip my.mp4

Each run is a fresh process running ``bavos segment CLIP --end 3 -q`` in process; it reports the seconds of
``import_torch``, of the whole command, and from the command's end to the process's end (the interpreter's exit).
Printed: the medians of each, and without / with.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import gc, importlib, sys, time
start = time.perf_counter()
if sys.argv[1] == "without":
    gc.disable = gc.freeze = lambda: None
app = importlib.import_module("bavos.cli.app")
segment = importlib.import_module("bavos.cli.segment")
real = app.import_torch
def timed():
    t = time.perf_counter()
    real()
    sys.stderr.write(f"IMPORT {time.perf_counter() - t}\n")
segment.import_torch = timed
from bavos.cli import main
try:
    main(["segment", sys.argv[2], "-o", sys.argv[3], "--end", "3", "-q"])
except SystemExit as e:
    if e.code:
        raise
sys.stderr.write(f"COMMAND {time.perf_counter() - start} {time.time()!r}\n")
"""


def one(mode: str, clip: Path, out: Path) -> tuple[float, float, float]:
    """(import s, command s, exit s) of one process."""
    shutil.rmtree(out, ignore_errors=True)
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, mode, str(clip), str(out)], capture_output=True, text=True, cwd=ROOT, timeout=600
    )
    ended = time.time()
    said = {
        line.split()[0]: line.split()[1:]
        for line in proc.stderr.splitlines()
        if line.startswith(("IMPORT ", "COMMAND "))
    }
    if proc.returncode or "IMPORT" not in said or "COMMAND" not in said:
        raise SystemExit(f"bench_startup: the {mode} run failed: {proc.stderr.strip()[-500:]}")
    return float(said["IMPORT"][0]), float(said["COMMAND"][0]), ended - float(said["COMMAND"][1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip", type=Path, default=ROOT / "assets" / "demo.mp4")
    parser.add_argument("--pairs", type=int, default=6)
    args = parser.parse_args()
    runs: dict[str, list[tuple[float, float, float]]] = {"without": [], "with": []}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.pairs):
            for mode in runs:
                runs[mode].append(one(mode, args.clip, Path(tmp) / "out"))
    medians = {mode: [statistics.median(r[i] for r in rs) for i in range(3)] for mode, rs in runs.items()}
    print(f"bavos segment {args.clip.name} --end 3, {args.pairs} alternating pairs, medians in seconds")
    print(f"{'collector':<14} {'imports':>8} {'command':>8} {'exit':>6} {'process':>8}")
    for mode, (imp, command, exit_) in medians.items():
        print(f"{mode + ' pause':<14} {imp:>8.2f} {command:>8.2f} {exit_:>6.2f} {command + exit_:>8.2f}")
    (wi, wc, we), (ii, ic, ie) = medians["without"], medians["with"]
    print(f"without / with: imports {wi / ii:.2f}, exit {we / ie:.2f}, process {(wc + we) / (ic + ie):.2f}")


if __name__ == "__main__":
    main()
