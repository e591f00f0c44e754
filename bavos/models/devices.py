"""Which device a run uses, and the precision its networks run in.

float32 is the default everywhere, as in the paper's release; on CUDA it is strict float32 (TensorFloat-32 off for
matrix products and convolutions while the networks run). ``bf16`` and ``fp16`` are autocast, asked for by name.
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from bavos.config import PRECISIONS
from bavos.errors import ConfigError

_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str, index: int | None = None) -> torch.device:
    """"auto" -> CUDA when available, else CPU; "cuda" without CUDA is an error.

    A CUDA device always has its index (``cuda:0``): ``torch.cuda.set_device`` and the peak-memory counters refuse
    a bare ``cuda``.

    Args:
        name: "auto", "cpu" or "cuda".
        index: CUDA device for this process (e.g. torchrun's LOCAL_RANK), taken modulo the device count; None: the
            current CUDA device.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but no CUDA device is available; use --device cpu")
    if name == "cuda":
        return torch.device("cuda", torch.cuda.current_device() if index is None else index % torch.cuda.device_count())
    return torch.device(name)


def check_precision(device: torch.device, precision: str) -> None:
    """Raise ConfigError for an unknown precision, or bf16 on a GPU that has none."""
    if precision not in PRECISIONS:
        raise ConfigError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision}")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError("--precision bf16: this GPU has no bfloat16; use --precision fp16 or float32")


@contextmanager
def strict_float32(device: torch.device) -> Iterator[None]:
    """On CUDA, float32 matrix products and convolutions in full float32 (TensorFloat-32 off), whatever the process
    set (``torch.set_float32_matmul_precision``); restored on exit. Nothing on a CPU."""
    if device.type != "cuda":
        yield
        return
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@contextmanager
def precision_context(device: torch.device, precision: str) -> Iterator[None]:
    """Run the networks in ``precision``: "float32" (strict), or "bf16" / "fp16" autocast on ``device``'s type."""
    check_precision(device, precision)
    if precision == "float32":
        with strict_float32(device):
            yield
    else:
        with torch.autocast(device.type, dtype=_AUTOCAST[precision]):
            yield


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (e.g. musl)
        return None


def release_free_heap() -> None:
    """Hand the C heap's free pages back to the OS (glibc's malloc_trim; nothing elsewhere).

    Each clustering window allocates and frees blocks of a few to tens of MB; glibc keeps freed heap pages
    resident, and long-lived small allocations between them stop it from reusing or returning them, so without
    this the resident memory grows window after window (330 MB over 128 windows at 160x224) although the live
    data does not.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@dataclass(frozen=True)
class Shard:
    """This process's place among torchrun's processes (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world: int = 1
    local_rank: int | None = None  # CUDA device index on this node

    def take(self, items: list) -> list:
        """Every world-th item from this rank on: each item goes to exactly one process."""
        return items[self.rank :: self.world]


def shard_from_env(env: dict[str, str] | None = None) -> Shard:
    """Read RANK, WORLD_SIZE and LOCAL_RANK as set by torchrun; inconsistent values are an error."""
    env = dict(os.environ) if env is None else env
    try:
        world = int(env.get("WORLD_SIZE", "1"))
        rank = int(env.get("RANK", "0"))
        local = int(env["LOCAL_RANK"]) if "LOCAL_RANK" in env else None
    except ValueError as e:
        raise ConfigError(f"RANK, WORLD_SIZE and LOCAL_RANK must be integers ({e})") from e
    if world < 1 or not 0 <= rank < world:
        raise ConfigError(f"RANK={rank} does not fit WORLD_SIZE={world}")
    return Shard(rank, world, local)
