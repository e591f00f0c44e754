"""What the attention and the clustering cost beyond their arithmetic, counted on any device: the bytes their tensor
operations move, and the times the host waits to read a result from the device.

On a GPU the attention and the clustering are bound by memory traffic and by the host's waits rather than by their
products (docs/performance.md, "On a GPU"); both are counted here from the operations themselves, so that a test on
a CPU can hold each stage at its budget and a GPU run only confirms what the counts say.

- Bytes: each tensor operation is taken to read each tensor it is given once and to write each tensor it gives
  back once (``out=`` tensors are written, not read). Views move nothing, nor does a new tensor left unfilled; a
  tensor made like another (``new_zeros``) does not read it; a gather (``x[index]``) reads what it picks, not all of
  ``x``, and a scatter writes as many elements as it puts; an expanded operand (a stride of 0) counts its own
  elements once. A product counts its operands and its result, not its arithmetic.
- Host reads: operations whose result's size or value the host must know before it can go on (``nonzero``, a
  boolean mask's indexing, ``.item()`` and ``int()``, ``unique``...), and every copy of a result to host memory that
  bavos makes, which goes through :func:`to_host`. On a CPU these cost nothing; on a GPU each waits for the device
  to finish everything queued before it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

_aten = torch.ops.aten
# operations whose output's size or value the host reads from the device before it returns
HOST_READ_OPS = {
    _aten._local_scalar_dense.default,  # .item(), int(), float(), bool()
    _aten.nonzero.default,
    _aten.masked_select.default,
    _aten._unique2.default,
    _aten.unique_consecutive.default,
    _aten.unique_dim.default,
    _aten.repeat_interleave.Tensor,
}
_NO_MOVE = {_aten.detach.default, _aten.alias.default, _aten._unsafe_view.default}  # views torch does not mark
# operations given a tensor only for its dtype and device: they write their result (if they fill it) and read nothing
_MADE = {"new_zeros", "new_ones", "new_full", "zeros_like", "ones_like", "full_like"}
_UNFILLED = {"new_empty", "new_empty_strided", "empty_like", "empty", "empty_strided"}  # nothing written either
# gathers read only what they pick: their result's elements (and the indices)
_GATHERS = {"index", "index_select", "gather", "take", "masked_select"}
# scatters write only where they put: as many elements as their values (and read the indices and the values)
_SCATTERS = {"index_put_", "index_put", "index_add_", "index_copy_", "scatter_", "scatter_add_", "scatter_reduce_"}
_INDEXING = {_aten.index.Tensor, _aten.index_put_.default, _aten.index_put.default}


def _stored_bytes(t: Tensor) -> int:
    """Bytes a tensor's elements take, an expanded dimension (stride 0) counted once (a sparse tensor: its parts)."""
    if t.layout == torch.sparse_csr:
        return sum(_stored_bytes(part) for part in (t.crow_indices(), t.col_indices(), t.values()))
    count = 1
    for size, stride in zip(t.shape, t.stride(), strict=True):
        if stride:
            count *= size
    return count * t.element_size() if t.numel() else 0


def _tensors(x: Any) -> list[Tensor]:
    return [t for t in tree_flatten(x)[0] if isinstance(t, Tensor)]


@dataclass
class Counts:
    """What a block of work cost: ``bytes`` moved, ``host_reads`` (waits for the device), and both per operation."""

    bytes: int = 0
    host_reads: int = 0
    by_op: Counter[str] = field(default_factory=Counter)  # bytes per operation's name
    reads_by_op: Counter[str] = field(default_factory=Counter)


class Traffic(TorchDispatchMode):
    """``with Traffic() as t: ...`` counts the bytes the block's tensor operations move and its host reads
    (``t.counts``). The block runs as it would without it, only slower."""

    def __init__(self) -> None:
        super().__init__()
        self.counts = Counts()
        self._token: Any = None

    def __enter__(self) -> Traffic:
        self._token = _ACTIVE.set(self)
        return super().__enter__()

    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)
        _ACTIVE.reset(self._token)

    def host_read(self, name: str) -> None:
        self.counts.host_reads += 1
        self.counts.reads_by_op[name] += 1

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        name = func.overloadpacket.__name__
        if func in HOST_READ_OPS or (func in _INDEXING and _has_bool_index(args)):
            self.host_read(name)
        if func.is_view or func in _NO_MOVE or name in _UNFILLED:
            return result
        outs = {id(t) for t in _tensors(kwargs.get("out"))}
        given = () if name in _MADE else _tensors((args, kwargs))
        made = sum(_stored_bytes(t) for t in _tensors(result))
        if name in _GATHERS:  # the source's picked elements, as many as the result's, and the indices
            moved = 2 * made + sum(_stored_bytes(t) for t in given[1:] if id(t) not in outs)
        elif name in _SCATTERS and len(given) > 1:  # the indices and values read, the values written
            moved = sum(_stored_bytes(t) for t in given[1:]) + _stored_bytes(given[-1])
        else:
            moved = made + sum(_stored_bytes(t) for t in given if id(t) not in outs)
        self.counts.bytes += moved
        self.counts.by_op[name] += moved
        return result


def _has_bool_index(args: tuple) -> bool:
    indices = args[1] if len(args) > 1 else ()
    return any(isinstance(t, Tensor) and t.dtype == torch.bool for t in indices or ())


_ACTIVE: ContextVar[Traffic | None] = ContextVar("bavos_traffic", default=None)


def to_host(x: Tensor) -> np.ndarray:
    """``x`` as a NumPy array in host memory: the one way bavos's attention and clustering read a result from the
    device (a wait for the device on a GPU), so that :class:`Traffic` counts each."""
    counter = _ACTIVE.get()
    if counter is not None:
        counter.host_read("to_host")
    return x.detach().cpu().numpy()


@contextmanager
def counting() -> Iterator[Counts]:
    """``with counting() as c: ...``: :class:`Traffic`'s counts of the block, in ``c``."""
    with Traffic() as traffic:
        yield traffic.counts
