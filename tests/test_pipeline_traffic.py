"""bavos.pipeline.traffic counts what operations move and when the host waits; the clustering in a GPU's way
(torch's operations, counted on the CPU) held at its budgets of bytes and host reads per window; the clock that
never waits for the device."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bavos.models.devices import gpu_ways
from bavos.pipeline.cluster import MergeTreeBuilder, label_window
from bavos.pipeline.traffic import counting, to_host


def test_an_operation_reads_its_operands_and_writes_its_result_once() -> None:
    a, b = torch.ones(4, 8), torch.ones(8, 2)
    with counting() as c:
        a @ b
    assert c.bytes == (32 + 16 + 8) * 4
    with counting() as c:
        a.T, a.view(8, 4), a[1:3]  # views
        torch.empty_like(a)  # left unfilled
    assert c.bytes == 0
    with counting() as c:
        a.new_zeros(2, 2)  # made like a: a is not read
        a.add_(1)  # read and written
        torch.mul(a, 2, out=torch.empty(4, 8))  # out=: written, not read
    assert c.bytes == 4 * 4 + 2 * 32 * 4 + 2 * 32 * 4
    column = torch.ones(4, 1)
    with counting() as c:
        column.expand(4, 8) + a  # an expanded operand: its own elements once
    assert c.bytes == (4 + 32 + 32) * 4
    big = torch.ones(1000, 8)
    with counting() as c:
        big[torch.tensor([1, 5])]  # a gather reads what it picks
    assert c.bytes == 2 * 16 * 4 + 2 * 8
    assert c.by_op == {"index": c.bytes} and c.host_reads == 0


def test_host_reads_are_what_the_host_must_wait_for() -> None:
    x = torch.arange(6.0)
    with counting() as c:
        float(x.sum()), int(x[2])  # .item(): two
        x.nonzero()
        x[x > 2]  # a boolean mask: its count is read first
        y = x.clone()
        y[y > 4] = 0
        to_host(x)
        x[torch.tensor([0, 1])], x * 2, x.argmax()  # none
    assert c.host_reads == 6
    assert dict(c.reads_by_op) == {"_local_scalar_dense": 2, "nonzero": 1, "index": 1, "index_put_": 1, "to_host": 1}


def _windows(objects: int, n: int = 72, m: int = 240, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two windows' (n, m) rows around ``objects`` sharp prototypes (n tokens, m key tokens: M > n as on a GPU)."""
    g = torch.Generator().manual_seed(seed)
    prototypes = torch.randn(objects, m, generator=g) * 3
    which = torch.randint(0, objects, (2, n), generator=g)
    rows = torch.softmax(prototypes[which] + torch.randn(2, n, m, generator=g) * 0.3, -1)
    return rows[0], rows[1]


# A second window's bytes per row element and host reads in a GPU's way (torch's operations), by objects in view;
# before the logs and row dots were computed once and the leaders' two reads made one: 187.5, 241.6 and 297.2 bytes,
# and 4, 5 and 5 reads (docs/performance.md, "On a GPU").
BUDGETS = {1: (120, 3), 4: (170, 4), 24: (215, 4)}


@pytest.mark.parametrize("objects", sorted(BUDGETS))
def test_a_window_in_a_gpus_way_moves_at_most_its_budget(objects: int) -> None:
    first, second = _windows(objects)
    with gpu_ways():
        builder = MergeTreeBuilder(1.0)
        builder.add_window(first)
        before = builder.level0_size
        with counting() as clustering:
            level0 = builder.add_window(second)
        hierarchy = builder.finish()
        label_window(second, level0, hierarchy)  # the distinct centroids are made once a video
        with counting() as labelling:
            label_window(second, level0, hierarchy)
    assert builder.level0_size - before == objects  # the clusters the budget is for
    bytes_budget, reads_budget = BUDGETS[objects]
    assert clustering.bytes / second.numel() <= bytes_budget
    assert clustering.host_reads <= reads_budget
    assert dict(clustering.reads_by_op) == {"to_host": clustering.host_reads}  # nothing read by accident
    assert labelling.bytes / second.numel() <= 40 and labelling.host_reads == 1  # every level's labels at once


@pytest.mark.parametrize("objects", [1, 4, 24])
def test_a_gpus_way_gives_the_cpus_partition(objects: int) -> None:
    """The same windows clustered in both ways: the same labels at every level."""
    rows = torch.cat(_windows(objects, seed=objects)).reshape(6, 24, 240).double()
    from bavos.pipeline.cluster import cluster_attention

    cpu = cluster_attention(rows, tau=1.0)
    with gpu_ways():
        gpu = cluster_attention(rows, tau=1.0)
    assert cpu.sizes == gpu.sizes
    np.testing.assert_array_equal(cpu.level_labels, gpu.level_labels)


class _FakeEvent:
    """A CUDA event on a CPU: its time is the moment it is recorded; ``synchronize`` counts the waits."""

    waits = 0

    def __init__(self, enable_timing: bool = False) -> None:
        self.at = 0.0

    def record(self, stream: object = None) -> None:
        import time

        self.at = time.perf_counter()

    def query(self) -> bool:
        return False  # the device is still busy: the clock must not wait for it

    def synchronize(self) -> None:
        _FakeEvent.waits += 1

    def elapsed_time(self, end: _FakeEvent) -> float:
        return (end.at - self.at) * 1000


def test_the_clock_on_cuda_never_waits_for_the_device_until_it_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    from bavos.pipeline.segment import _Clock

    def no_sync(*args: object) -> None:
        raise AssertionError("the clock synchronised the device")

    monkeypatch.setattr(torch.cuda, "Event", _FakeEvent)
    monkeypatch.setattr(torch.cuda, "synchronize", no_sync)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: None)
    clock = _Clock(torch.device("cuda"))
    for _ in range(3):
        with clock.backbone(4):
            pass
        with clock("attention"), clock("clustering"):
            pass
    assert _FakeEvent.waits == 0  # nine stages timed, none waited for
    seconds = clock.seconds
    assert set(seconds) == {"backbone", "attention", "clustering"} and _FakeEvent.waits == 9
    assert clock.paced_frames == 8 and 0 <= clock.paced_seconds <= seconds["backbone"]
