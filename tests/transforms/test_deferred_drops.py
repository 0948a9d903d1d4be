"""Validation rejects dropped inside the explode (``shape.to_rows`` folds the validator's
deferred drops into its take), and ``shape.annotate``'s topic column built from buffers:
exactly the rows, values and types of the filter-then-explode path."""

from __future__ import annotations

import copy

import pyarrow as pa
import pytest

from pipelines.spec import ValidateStep
from schemas.codecs import codec_for
from sources.generator import partition_stream
from transforms import shape
from transforms.batch import RawBatch
from transforms.validate import Validator

START_MS = 1_763_000_000_000


def _decoded(records: int, bad: float, seed_partition: int = 0):
    values = [
        g.value for g in partition_stream("event", "t", seed_partition, records, start_ms=START_MS, bad_fraction=bad)
    ]
    raw = RawBatch("events", "t", 0, values, list(range(len(values))), [START_MS] * len(values))
    return codec_for("json", "event", 65536).decode(raw)


@pytest.mark.parametrize("bad", [0.0, 0.05, 0.5])
def test_drops_in_the_explode_match_filter_then_explode(bad):
    decoded = _decoded(600, bad)
    step = ValidateStep(kind="validate")
    ref = Validator("event", step, json_hints=True)(copy.deepcopy(decoded))
    ref = shape.to_rows("event", ref)
    new = Validator("event", step, json_hints=True, leave_drops=True)(copy.deepcopy(decoded))
    pending = new._deferred
    assert pending is not None and len(pending) == decoded.table.num_rows  # rows still in the table
    new = shape.to_rows("event", new)
    assert new._deferred is None
    assert new.table.schema == ref.table.schema
    assert new.table.to_pydict() == ref.table.to_pydict()
    assert (new.rejects.indices, new.rejects.reasons, new.rejects.details) == (
        ref.rejects.indices,
        ref.rejects.reasons,
        ref.rejects.details,
    )
    if bad:
        # one reject per row the validator rejected (the decoder's own rejects have no row)
        assert int(pending.sum()) == len(ref.rejects) - len(decoded.rejects) > 0


def test_every_envelope_rejected():
    values = [b'{"event_id": "e", "events": []}'] * 3
    raw = RawBatch("events", "t", 0, values, [0, 1, 2], [START_MS] * 3)
    b = Validator("event", ValidateStep(kind="validate"), leave_drops=True)(
        codec_for("json", "event", 65536).decode(raw)
    )
    rows = shape.to_rows("event", b).table
    assert rows.num_rows == 0
    assert rows.column_names[-2:] == ["event_index", "_i"]
    assert len(b.rejects) == 3


def test_end_deferral_without_rejects_is_none():
    b = _decoded(50, 0.0)
    b.defer_drops()
    assert b.end_deferral() is None
    assert b._deferred is None
    b.drop_rejected()  # no deferral: nothing to do
    assert b.table.num_rows == 50


@pytest.mark.parametrize("text", ["events", "", "tópico-ü", "x" * 300])
@pytest.mark.parametrize("n", [0, 1, 7, 5000])
def test_repeat_string_equals_the_builder(text, n):
    got = shape.repeat_string(text, n)
    got.validate(full=True)
    assert got.equals(pa.array([text] * n, pa.string()))
