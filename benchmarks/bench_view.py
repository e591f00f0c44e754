"""How fast `bavos view` answers on a result: opening it, scrubbing to far frames, re-cutting, and its memory.

    python benchmarks/bench_view.py out/clip [--scrubs 20] [--seed 0]

Requests go through the viewer's own app in this process (Starlette's test client, no network), so the times are
the server's: opening (the result read, its cut's objects and lanes), a frame and its ids at a far frame (cold:
decoded from the keyframe before it), the next frame (warm: decoded on), and new cuts (level 0 uncapped, the
converged level at 5 objects). Peak resident memory is read before and after the scrubs.
"""

from __future__ import annotations

import argparse
import random
import resource
import statistics
import sys
import time
from pathlib import Path


def rss_mb() -> float:
    """Peak resident memory of this process so far, MB (Linux reports kB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("result", type=Path)
    parser.add_argument("--scrubs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from starlette.testclient import TestClient

    from bavos.cli.app import import_torch

    import_torch()
    from bavos.view.results import ViewedResult
    from bavos.view.server import make_app

    began = time.perf_counter()
    result = ViewedResult(args.result)
    client = TestClient(make_app([result], "t"))
    info = client.get("/api/results/0", params={"token": "t"}).json()
    cut = client.get("/api/results/0/cut", params={"token": "t"}).json()
    opened = time.perf_counter() - began
    print(f"{args.result}: {info['frames']} frames of {info['width']}x{info['height']}, {len(cut['objects'])} objects")
    print(f"open (result, info, the cut's objects and lanes): {opened:.2f} s, peak RSS {rss_mb():.0f} MB")

    rng = random.Random(args.seed)
    cold, warm = [], []
    for _ in range(args.scrubs):
        k = rng.randrange(info["frames"] - 1)
        for times, frame in ((cold, k), (warm, k + 1)):
            t = time.perf_counter()
            for what in ("frame", "ids"):
                r = client.get(f"/api/results/0/{what}/{frame}", params={"token": "t"})
                assert r.status_code == 200, r.text
            times.append(time.perf_counter() - t)
    for name, times in (("far frame (cold)", cold), ("next frame (warm)", warm)):
        print(f"{name}: median {statistics.median(times):.3f} s, max {max(times):.3f} s over {len(times)}")
    print(f"after {args.scrubs} scrubs: peak RSS {rss_mb():.0f} MB")
    for level, cap in ((0, 0), (info["converged"], 5)):
        t = time.perf_counter()
        r = client.get("/api/results/0/cut", params={"token": "t", "level": level, "max_objects": cap})
        seconds = time.perf_counter() - t
        said = f"{len(r.json()['objects'])} objects" if r.status_code == 200 else r.json()["error"]
        print(f"cut level {level}, max objects {cap}: {seconds:.2f} s ({said})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
