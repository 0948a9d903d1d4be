"""``core.batch.without_rows``: exactly ``Table.filter`` of the kept rows (values, nulls,
schema), by slices for a few runs of dropped rows and by the filter for many."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from core.batch import without_rows


def _table(n: int) -> pa.Table:
    rng = np.random.default_rng(n)
    return pa.table(
        {
            "s": pa.array([None if k % 7 == 3 else f"v{k}" * (k % 5) for k in range(n)], pa.string()),
            "i": pa.array(rng.integers(0, 100, n), pa.int64()),
            "l": pa.array([[k, None] if k % 3 else None for k in range(n)], pa.list_(pa.int32())),
            "m": pa.array([[("k", str(k))] for k in range(n)], pa.map_(pa.string(), pa.string())),
        }
    )


@pytest.mark.parametrize("n", [0, 1, 2, 10, 500])
@pytest.mark.parametrize("pattern", ["none", "first", "last", "all", "runs", "many", "random"])
def test_same_as_filter(n, pattern):
    t = _table(n)
    drop = np.zeros(n, dtype=bool)
    if n:
        if pattern == "first":
            drop[0] = True
        elif pattern == "last":
            drop[-1] = True
        elif pattern == "all":
            drop[:] = True
        elif pattern == "runs":
            drop[1:3] = True
            drop[n // 2 : n // 2 + 4] = True
        elif pattern == "many":
            drop[::2] = True  # n/2 runs: past the slicing limit at n=500
        elif pattern == "random":
            drop = np.random.default_rng(7).random(n) < 0.05
    got = without_rows(t, drop)
    want = t.filter(pa.array(~drop))
    assert got.schema == want.schema
    assert got.num_rows == int((~drop).sum())
    assert got.to_pydict() == want.to_pydict()
    assert got.equals(want)


def test_sliced_input_table():
    t = _table(300).slice(17, 200)
    drop = np.zeros(200, dtype=bool)
    drop[[0, 5, 6, 199]] = True
    assert without_rows(t, drop).to_pydict() == t.filter(pa.array(~drop)).to_pydict()
