"""Validation and ``to_rows`` read the ``events`` column in place: on a table whose
envelopes are a slice (list offsets not starting at 0) they give the same rows, positions
and problems as on the same envelopes copied out."""

from __future__ import annotations

import json

from pipelines.spec import ValidateStep
from schemas.codecs import codec_for
from transforms import shape
from transforms.batch import Batch, RawBatch
from transforms.validate import Validator

T0 = 1_763_000_000_000


def _doc(k: int, types: list[str]) -> bytes:
    events = [{"type": t, "target": f"#b{k}-{j}"} for j, t in enumerate(types)]
    doc = {"event_id": f"e{k}", "timestamp": "2025-11-13T02:13:20Z", "page": "/", "session_id": "s", "events": events}
    return json.dumps(doc).encode()


def _batches() -> tuple[Batch, Batch]:
    """The same three envelopes, once as a slice of a four-envelope table, once copied."""
    values = [
        _doc(0, ["click", "click", "click"]),
        _doc(1, ["click", "page_view"]),
        _doc(2, ["click", "nonsense", "click"]),
        _doc(3, ["scroll"]),
    ]
    raw = RawBatch("events", "t", 0, values, list(range(4)), [T0] * 4)
    decoded = codec_for("json", "event", 65536).decode(raw)
    sliced = decoded.table.slice(1)
    assert sliced.column("events").chunk(0).offsets[0].as_py() == 3  # the case under test
    copied = sliced.combine_chunks()
    copied = copied.set_column(
        copied.schema.get_field_index("events"), "events", sliced.column("events").combine_chunks()
    )
    assert copied.column("events").chunk(0).offsets[0].as_py() == 0
    return Batch(raw=raw, table=sliced), Batch(raw=raw, table=copied)


def _rows(batch: Batch) -> tuple[list[dict], list]:
    v = Validator("event", ValidateStep(kind="validate"), json_hints=True, leave_drops=True)
    out = shape.to_rows("event", v(batch))
    rows = out.table.select(["event_id", "event_type", "target", "event_index", "_i"]).to_pylist()
    return rows, list(zip(out.rejects.indices, out.rejects.reasons, out.rejects.details))


def test_a_sliced_events_column_gives_the_rows_and_problems_of_a_copied_one():
    sliced, copied = _batches()
    rows, rejects = _rows(sliced)
    assert (rows, rejects) == _rows(copied)
    assert [(r["event_id"], r["event_index"], r["target"]) for r in rows] == [
        ("e1", 0, "#b1-0"),
        ("e1", 1, "#b1-1"),
        ("e3", 0, "#b3-0"),
    ]
    assert len(rejects) == 1 and rejects[0][:2] == (2, "schema_violation")
    assert rejects[0][2].startswith("events[1].type: unknown event type 'nonsense'")
