"""``RawBatch.offsets_array`` / ``timestamps_array``: the numpy copies the steps of one
batch share."""

from __future__ import annotations

import copy
import dataclasses
import pickle

import numpy as np
import pytest

from core.batch import RawBatch


def _raw() -> RawBatch:
    return RawBatch("events", "t", 0, [b"a", b"b", b"c"], [10, 11, 13], [1_000, 999, 1_002])


def test_the_arrays_equal_the_lists_and_are_made_once():
    raw = _raw()
    ts, off = raw.timestamps_array(), raw.offsets_array()
    assert ts.dtype == np.int64 and ts.tolist() == [1_000, 999, 1_002]
    assert off.dtype == np.int64 and off.tolist() == [10, 11, 13]
    assert raw.timestamps_array() is ts and raw.offsets_array() is off
    with pytest.raises(ValueError):
        ts[0] = 5  # read-only: a step cannot change what the next one reads


def test_a_replaced_or_grown_list_is_converted_again():
    raw = _raw()
    raw.timestamps_array()
    raw.timestamps_ms = [7, 8, 9]
    assert raw.timestamps_array().tolist() == [7, 8, 9]
    raw.offsets_array()
    raw.offsets.append(14)
    assert raw.offsets_array().tolist() == [10, 11, 13, 14]


def test_copies_do_not_share_the_arrays():
    raw = _raw()
    raw.timestamps_array()
    part = dataclasses.replace(raw, values=raw.values[:2], offsets=raw.offsets[:2], timestamps_ms=raw.timestamps_ms[:2])
    assert part.timestamps_array().tolist() == [1_000, 999]
    assert copy.copy(raw)._arrays == {}
    back = pickle.loads(pickle.dumps(raw))
    assert back._arrays == {} and back == raw
    assert back.timestamps_array().tolist() == [1_000, 999, 1_002]
