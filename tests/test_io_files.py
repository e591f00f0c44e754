import errno
from pathlib import Path

import pytest

from bavos.errors import EvalError, OutputError
from bavos.io.files import atomic_path, write_json


def test_written_whole_or_not_at_all(tmp_path: Path) -> None:
    target = tmp_path / "a.json"
    write_json(target, {"x": 1})
    assert target.read_text() == '{"x": 1}\n'
    with (
        pytest.raises(OutputError, match=f"cannot write {target}: no space left on the device"),
        atomic_path(target) as tmp,
    ):
        tmp.write_text("half")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert target.read_text() == '{"x": 1}\n'  # the older file is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]  # no temporary file left


def test_other_failures_also_clean_up_and_keep_their_type(tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt), atomic_path(tmp_path / "b.csv", EvalError) as tmp:
        tmp.write_text("part")
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(EvalError, match="cannot write"), atomic_path(tmp_path / "missing" / "c.csv", EvalError) as t:
        t.write_text("x")
