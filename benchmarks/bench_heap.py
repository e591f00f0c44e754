"""What `bavos segment` spends getting memory from the OS, in alternating runs of one session:
- ``before``: glibc's usual thresholds and the heap trimmed after every window (what bavos did before);
- ``default``: the heap policy (``keep_freed_memory`` in the command, ``HeapTrimmer`` after each window).

    python benchmarks/bench_heap.py                                          # 6 rounds, the demo at the defaults
    python benchmarks/bench_heap.py --rounds 3 -- --resolution 320 480 --end 10

Each run is a fresh process running ``bavos segment CLIP -q [ARGS]`` in process (Linux with glibc: elsewhere there is
nothing to compare). It reports the command's seconds, its CPU seconds in user and system mode, its minor page
faults (pages the OS had to hand it), its peak RSS and its heap trims. Printed: the medians of each, before / default,
and every round's seconds (this machine's runs vary by several seconds: compare rounds, and run more of them).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import importlib, json, resource, sys, time
start = time.perf_counter()
importlib.import_module("bavos.cli.app").import_torch()  # as the command does (the collector paused)
devices = importlib.import_module("bavos.models.devices")
if sys.argv[1] == "before":  # glibc's thresholds as they are, and a trim after every window
    devices.keep_freed_memory = lambda: False
    devices.TRIM_SLACK_BYTES = -(2**62)
trims = []
real = devices.HeapTrimmer.release
def counted(self):
    trims.append(1)
    real(self)
devices.HeapTrimmer.release = counted
from bavos.cli import main
try:
    main(["segment", sys.argv[2], "-o", sys.argv[3], "-q", *sys.argv[4:]])
except SystemExit as e:
    if e.code:
        raise
use = resource.getrusage(resource.RUSAGE_SELF)
sys.stderr.write("RESULT " + json.dumps({"command": time.perf_counter() - start, "user": use.ru_utime,
                 "system": use.ru_stime, "faults": use.ru_minflt, "rss": use.ru_maxrss / 1024,
                 "trims": len(trims)}) + "\n")
"""

FIELDS = ("command", "user", "system", "faults", "rss", "trims")


def one(mode: str, clip: Path, out: Path, extra: list[str]) -> dict[str, float]:
    shutil.rmtree(out, ignore_errors=True)
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, mode, str(clip), str(out), *extra],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=3600,
    )
    said = [line for line in proc.stderr.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not said:
        raise SystemExit(f"bench_heap: the {mode} run failed: {proc.stderr.strip()[-500:]}")
    return json.loads(said[-1].split(" ", 1)[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip", type=Path, default=ROOT / "assets" / "demo.mp4")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("extra", nargs="*", help="more bavos segment options (after --)")
    args = parser.parse_args()
    if not sys.platform.startswith("linux"):
        raise SystemExit("bench_heap: glibc's heap is on Linux only")
    runs: dict[str, list[dict[str, float]]] = {"before": [], "default": []}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            for mode in runs:
                runs[mode].append(one(mode, args.clip, Path(tmp) / "out", args.extra))
    med = {mode: {f: statistics.median(r[f] for r in rs) for f in FIELDS} for mode, rs in runs.items()}
    print(f"bavos segment {args.clip.name} {' '.join(args.extra)}, {args.rounds} alternating rounds, medians")
    print(
        f"{'mode':<13} {'command s':>9} {'user s':>7} {'system s':>8} {'page faults':>11} {'peak RSS MB':>11} "
        f"{'trims':>5}"
    )
    for mode, m in med.items():
        print(
            f"{mode:<13} {m['command']:>9.2f} {m['user']:>7.2f} {m['system']:>8.2f} {m['faults']:>11.0f} "
            f"{m['rss']:>11.0f} {m['trims']:>5.0f}"
        )
    print("before / default: " + ", ".join(f"{f} {med['before'][f] / med['default'][f]:.2f}" for f in FIELDS[:5]))
    print(
        "per round, command s ("
        + ", ".join(runs)
        + "): "
        + "; ".join(", ".join(f"{r['command']:.2f}" for r in round_) for round_ in zip(*runs.values(), strict=True))
    )


if __name__ == "__main__":
    main()
