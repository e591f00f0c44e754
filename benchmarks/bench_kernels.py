"""What bavos's Triton kernels take of a CUDA card, counted without one: each kernel compiled for a compute capability
by Triton's compiler and ptxas (both in Triton's wheel), then its registers, stack (registers spilled to memory) and
shared memory read off the binary with cuobjdump (also in the wheel).

    python benchmarks/bench_kernels.py                 # bavos's launches and other tiles, for an H100 (sm_90)
    python benchmarks/bench_kernels.py --arch 80 86    # other cards: A100, RTX 30xx

A kernel whose registers spill does extra memory traffic for every tile; the interpreter that runs the kernels in
the tests cannot tell (docs/performance.md, "The kernels' registers"). No timing: that needs the card
(``benchmarks/gpu_check.py`` times the attention kernels' tiles).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# the kernels' scalar arguments as a launch passes them: Python ints as 32-bit, floats as float32 (Triton's rule)
SCALARS = {**dict.fromkeys(("R", "M", "d", "n", "heads"), "i32"), **dict.fromkeys(("low", "floor", "tau"), "fp32")}
HEAD_SIZE = 64  # DINO ViT-S's (384 / 6 heads)


class Compiled(NamedTuple):
    ptx: str
    registers: int  # a thread's
    stack: int  # bytes a thread: registers spilled to memory (0 where none is)
    shared: int  # bytes a block


def launch_of(name: str) -> dict[str, Any]:
    """The constants and warps bavos launches kernel ``name`` with (``bavos.pipeline.fused``), at ViT-S's head size."""
    from bavos.pipeline import fused

    return {
        "stats_kernel": fused.attention_launch(HEAD_SIZE),
        "rows_kernel": fused.attention_launch(HEAD_SIZE),
        "log_kernel": fused.LOG_LAUNCH,
        "pairs_kernel": fused.PAIR_LAUNCH,
    }[name]


def compiled_for(name: str, arch: int, launch: dict[str, Any] | None = None) -> Compiled:
    """Kernel ``name`` compiled on float32 for a CUDA card of compute capability ``arch`` (90: H100, H200) with
    ``launch`` (its constants and ``num_warps``; default: bavos's). Raises what Triton's compiler raises."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from bavos.pipeline import kernels

    launch = launch_of(name) if launch is None else launch
    fn = getattr(kernels, name)
    signature = {
        arg: "constexpr" if param.is_constexpr else "*fp32" if arg.endswith("_ptr") else SCALARS[arg]
        for arg, param in zip(fn.arg_names, fn.params, strict=True)
    }
    constants = {arg: value for arg, value in launch.items() if arg != "num_warps"}
    options = {"num_warps": launch["num_warps"]} if "num_warps" in launch else {}
    kernel = triton.compile(
        ASTSource(fn=fn, signature=signature, constexprs=constants), target=GPUTarget("cuda", arch, 32), options=options
    )
    tool = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    with tempfile.TemporaryDirectory() as folder:
        cubin = Path(folder) / "kernel.cubin"
        cubin.write_bytes(kernel.asm["cubin"])
        usage = subprocess.run([str(tool), "-res-usage", str(cubin)], capture_output=True, text=True, check=True).stdout
    found = re.search(r"REG:(\d+) STACK:(\d+)", usage)
    if found is None:
        raise RuntimeError(f"cuobjdump gave no resource usage for {name}: {usage[:200]}")
    return Compiled(kernel.asm["ptx"], int(found.group(1)), int(found.group(2)), int(kernel.metadata.shared))


ATTENTION_CHOICES = ((64, 64, 4), (64, 64, 8), (64, 64, 16), (32, 64, 8), (64, 32, 8), (32, 32, 8))  # rows, keys, warps
PAIR_CHOICES = ((64, 4), (64, 8), (32, 4))  # block, warps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", type=int, nargs="+", default=[90], help="compute capabilities (default: 90)")
    args = parser.parse_args()
    import triton

    from bavos.pipeline import fused

    print(f"Triton {triton.__version__}; float32, head size {HEAD_SIZE}; (*) = bavos's launch")
    print("| card | kernel | tiles / warps | registers | stack bytes | shared KB |")
    print("| --- | --- | --- | --- | --- | --- |")
    for arch in args.arch:
        rows: list[tuple[str, str, dict[str, Any]]] = []
        for name in ("stats_kernel", "rows_kernel"):
            for r, k, w in ATTENTION_CHOICES:
                launch = fused.attention_launch(HEAD_SIZE, fused.Tiles(r, k, w))
                rows.append((name, f"{r}x{k} / {w}", launch))
        rows.append(("log_kernel", f"{fused.LOG_LAUNCH['BLOCK_M']} / 4", fused.LOG_LAUNCH))
        for block, w in PAIR_CHOICES:
            rows.append(("pairs_kernel", f"{block}x{block} / {w}", {"BLOCK": block, "num_warps": w}))
        for name, label, launch in rows:
            got = compiled_for(name, arch, launch)
            mark = " (*)" if launch == launch_of(name) else ""
            print(
                f"| sm_{arch} | {name} | {label}{mark} | {got.registers} | {got.stack} | {got.shared / 1024:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
