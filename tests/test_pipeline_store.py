from pathlib import Path

import pytest
import torch

from bavos.pipeline.store import QueryStore


def test_query_store_gives_back_each_window_exactly(tmp_path: Path) -> None:
    store = QueryStore(tmp_path / "q.bin")
    windows = {i: torch.randn(3 - (i == 2), 2, 5, 4) for i in range(3)}  # the last window is shorter
    for i, q in windows.items():
        assert store.offer(i, q)
    assert store.kept == {0, 1, 2}
    assert torch.equal(store.take(1), windows[1])  # any order
    store.drop(0)
    assert store.take(0) is None and store.take(1) is None  # taken and dropped windows are let go
    assert torch.equal(store.take(2), windows[2])
    store.close()
    assert not (tmp_path / "q.bin").exists()


def test_a_failed_write_gives_up_and_keeps_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A full disk is not an error: the windows are computed again instead."""
    store = QueryStore(tmp_path / "q.bin")
    assert store.offer(0, torch.ones(2, 3))

    def full(data: object) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store._file, "write", full)
    assert not store.offer(1, torch.ones(2, 3))
    assert store.kept == set() and store.take(0) is None and (tmp_path / "q.bin").stat().st_size == 0
    assert not store.offer(2, torch.ones(2, 3))
    store.close()
    assert not (tmp_path / "q.bin").exists()
