"""orchestrator.files.write_atomic: the target is whole or untouched, never half-written (unit)."""

from __future__ import annotations

import numpy as np
import pytest

from orchestrator.files import write_atomic

pytestmark = pytest.mark.unit


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "cache" / "table.npy"
    write_atomic(target, lambda fh: np.save(fh, np.arange(3)))
    assert np.load(target).tolist() == [0, 1, 2]

    def crash(fh):
        fh.write(b"half a table")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        write_atomic(target, crash)
    assert np.load(target).tolist() == [0, 1, 2]
    assert sorted(p.name for p in target.parent.iterdir()) == ["table.npy"]


def test_npy_keeps_its_exact_name(tmp_path):
    # np.save on a path adds ".npy" to a temporary name; through a handle it cannot
    target = write_atomic(tmp_path / "bank", lambda fh: np.save(fh, np.ones(2)))
    assert target.name == "bank" and np.load(target).tolist() == [1.0, 1.0]
