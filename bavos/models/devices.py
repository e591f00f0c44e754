"""Which device a run uses, and the precision its networks run in.

float32 is the default everywhere, as in the paper's release; on CUDA it is strict float32 (TensorFloat-32 off for
matrix products and convolutions while the networks run). ``bf16`` and ``fp16`` are autocast, asked for by name.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util
import os
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import torch

from bavos.config import PRECISIONS
from bavos.errors import ConfigError, UsageError
from bavos.models.costs import resident_bytes

_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str, index: int | None = None) -> torch.device:
    """ "auto" -> CUDA when available, else CPU; "cuda" without CUDA is an error.

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


class _Strict:
    """The process's strict-float32 sections. TensorFloat-32 is a process-wide switch: each section saving and
    restoring it would let a thread that ends first switch it back on under another one still running (its float32
    products then in TF32). So the first section in saves the process's setting and the last one out restores it."""

    lock = threading.Lock()
    depth = 0
    saved = (False, False)


@contextmanager
def strict_float32(device: torch.device) -> Iterator[None]:
    """On CUDA, float32 matrix products and convolutions in full float32 (TensorFloat-32 off), whatever the process
    set (``torch.set_float32_matmul_precision``); restored when the last such block of the process ends (threads may
    overlap theirs). Nothing on a CPU."""
    if device.type != "cuda":
        yield
        return
    with _Strict.lock:
        if _Strict.depth == 0:
            _Strict.saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        _Strict.depth += 1
    try:
        yield
    finally:
        with _Strict.lock:
            _Strict.depth -= 1
            if _Strict.depth == 0:
                torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = _Strict.saved


def tf32_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` of CUDA float32 tensors on the tensor cores in TF32, inside a strict section or not. TF32 is on
    while the product is dispatched only; a float32 product that another thread dispatches at that moment gets TF32
    too (the switch is the process's): calls with other ``--products`` than float32 belong in a process of their
    own where threads share one."""
    with _Strict.lock:
        saved = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = True
        try:
            return a @ b
        finally:
            torch.backends.cuda.matmul.allow_tf32 = saved


_GPU_WAYS: ContextVar[bool] = ContextVar("bavos_gpu_ways", default=False)


def gpu_way(device: torch.device) -> bool:
    """Whether the attention and the clustering take a GPU's way on ``device`` rather than a CPU's.

    A CPU's way skips work through lower bounds and host-side decisions, and keeps the attention's softmax in place
    in one buffer; a GPU's way computes whole products and keeps the decisions on the device, where each host read
    waits for everything queued (method.md §6.3, §6.6). Both give the same partition. Inside ``gpu_ways()`` a CPU
    takes the GPU's way too: for tests of its results and of its costs (``bavos.pipeline.traffic``), not for speed.
    """
    return device.type != "cpu" or _GPU_WAYS.get()


@contextmanager
def gpu_ways() -> Iterator[None]:
    """Every device takes the GPU's way inside the block (``gpu_way``)."""
    token = _GPU_WAYS.set(True)
    try:
        yield
    finally:
        _GPU_WAYS.reset(token)


_KERNELS: ContextVar[bool | None] = ContextVar("bavos_kernels", default=None)


@functools.cache
def triton_installed() -> bool:
    return importlib.util.find_spec("triton") is not None


def use_kernels(device: torch.device) -> bool:
    """Whether the attention and the clustering run bavos's Triton kernels (``bavos.pipeline.fused``) on ``device``:
    on CUDA where Triton is installed, unless ``BAVOS_KERNELS=0`` is set or inside ``kernels(False)``; elsewhere
    only inside ``kernels(True)``, which on a CPU needs Triton's interpreter (``TRITON_INTERPRET=1`` set before the
    kernels are imported): for tests."""
    asked = _KERNELS.get()
    if asked is None:
        asked = device.type == "cuda" and os.environ.get("BAVOS_KERNELS", "1") != "0"
    return asked and triton_installed()


@contextmanager
def kernels(on: bool) -> Iterator[None]:
    """Inside the block, the Triton kernels on (every device) or off (the GPU's way in torch's operations)."""
    token = _KERNELS.set(on)
    try:
        yield
    finally:
        _KERNELS.reset(token)


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
def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim, libc.mallopt  # noqa: B018 - both there: glibc (not musl)
    except (OSError, AttributeError):
        return None
    return libc


TRIM_SLACK_BYTES = 64 * 2**20  # freed heap a run may hold beyond one window's buffers before it is handed back


class HeapTrimmer:
    """Hands the C heap's free pages back to the OS when they pile up (glibc's malloc_trim; nothing elsewhere).

    Each clustering window allocates and frees the same buffers. Long-lived small allocations between them stop
    glibc from reusing all of that memory, so without any trim the resident memory grows window after window
    although the live data does not. Trimming after every window bounds it, but then the next window faults every
    page of its buffers in again, in system time (both: docs/performance.md, "Peak memory"). So the first window's
    call trims and measures what a window leaves free (``working``); each later call trims only when the resident
    memory is over what the last trim left plus ``working`` plus ``slack``. Memory stays within one window's
    buffers plus the slack of where it was, and a window reuses the pages the one before it freed.

    Args:
        slack: bytes of growth allowed beyond one window's buffers (``TRIM_SLACK_BYTES`` when None).
        resident: the resident memory now, in bytes (this process's by default).
        trim: hands free pages back (glibc's ``malloc_trim(0)`` by default; nothing where there is none).
    """

    def __init__(
        self,
        slack: int | None = None,
        resident: Callable[[], int] = resident_bytes,
        trim: Callable[[], object] | None = None,
    ) -> None:
        self.slack = TRIM_SLACK_BYTES if slack is None else slack
        self._resident, self._trim = resident, trim
        self.left: int | None = None  # resident bytes after the last trim
        self.working: int | None = None  # what the first window left free
        self.trims = 0

    def release(self) -> None:
        """Trim now (after work unlike a window's, such as the key pass)."""
        if self._trim is not None:
            self._trim()
        else:
            libc = _glibc()
            if libc is not None:
                libc.malloc_trim(0)
        self.trims += 1
        self.left = self._resident()

    def __call__(self) -> bool:
        """After a window: trim when the free heap has piled up (always after the first); True when it trimmed."""
        now = self._resident()
        if self.working is not None and self.left is not None and now <= self.left + self.working + self.slack:
            return False
        self.release()
        if self.working is None:
            self.working = max(0, now - self.left)
        return True


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt's parameters (malloc.h)
HEAP_MMAP_THRESHOLD = 32 * 2**20  # blocks up to 32 MB come from the heap, whose freed pages are reused


def keep_freed_memory() -> bool:
    """Let freed C memory be reused by this process instead of handed back at once (glibc; False elsewhere).

    By default glibc gives a block over its mmap threshold (128 kB, rising as such blocks are freed, to 32 MB at
    most) a mapping of its own, unmapped when freed, and hands the top of the heap back past twice that; bavos then
    trimmed the heap after every window, so each window faulted its buffers in again, page by page. Here blocks up
    to 32 MB come from the heap from the start and its top is kept; ``HeapTrimmer`` decides when freed pages go
    back. Larger blocks keep a mapping of their own: from the heap, a window's freed 207 MB buffer that the next
    block does not fit stays resident beside it and raises the peak memory (docs/performance.md, "Peak memory").
    Process-wide and not undone, so only bavos's own command calls it (``bavos segment``), never the library.
    """
    libc = _glibc()
    if libc is None:
        return False
    mapped = libc.mallopt(_M_MMAP_THRESHOLD, ctypes.c_int(HEAP_MMAP_THRESHOLD))
    top = libc.mallopt(_M_TRIM_THRESHOLD, ctypes.c_int(2**31 - 1))  # the heap's top: handed back by HeapTrimmer
    return bool(mapped and top)


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
    """Read RANK, WORLD_SIZE and LOCAL_RANK as set by torchrun.

    Raises:
        UsageError: values that are not integers or do not fit together (exit code 2).
    """
    env = dict(os.environ) if env is None else env
    try:
        world = int(env.get("WORLD_SIZE", "1"))
        rank = int(env.get("RANK", "0"))
        local = int(env["LOCAL_RANK"]) if "LOCAL_RANK" in env else None
    except ValueError as e:
        raise UsageError(f"RANK, WORLD_SIZE and LOCAL_RANK must be integers ({e})") from e
    if world < 1 or not 0 <= rank < world:
        raise UsageError(f"RANK={rank} does not fit WORLD_SIZE={world}")
    return Shard(rank, world, local)
