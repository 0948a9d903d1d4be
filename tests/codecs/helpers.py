"""Helpers shared by the codec tests."""

from __future__ import annotations

import pyarrow as pa

from schemas.wire import arrow_schema
from transforms.batch import INDEX, ITEM, RawBatch


def raw_batch(values: list[bytes | None]) -> RawBatch:
    return RawBatch("src", "topic", 0, list(values), list(range(100, 100 + len(values))), [0] * len(values))


def as_rows(table: pa.Table) -> list[dict]:
    """Rows with maps as dicts (Arrow gives maps as lists of pairs)."""
    rows = table.to_pylist()
    for f in table.schema:
        if pa.types.is_map(f.type):
            for r in rows:
                if r[f.name] is not None:
                    r[f.name] = dict(r[f.name])
    return rows


def assert_wire_schema(table: pa.Table, signal: str, extra: pa.Schema | None = None) -> None:
    """The wire columns, then ``extra`` (the OTLP codec's span columns), then ``_i``."""
    wire = arrow_schema(signal)
    extra = extra if extra is not None else pa.schema([])
    per_item = ITEM in table.column_names  # OTLP: the item's index in its message, last
    assert table.column_names == wire.names + extra.names + [INDEX] + ([ITEM] if per_item else [])
    for f in (*wire, *extra):
        assert table.schema.field(f.name).type == f.type, f.name
    assert table.schema.field(INDEX).type == pa.int64()
    if per_item:
        assert table.schema.field(ITEM).type == pa.int32()


def accounted(batch, n: int) -> None:
    """Every input record is either a row or a reject, never both, never neither. For a
    per-item codec (OTLP) at both levels: a message rejected whole has no rows and counts
    one item; every item of another message is rows or one reject, never both."""
    keys = batch.rejects.keys()
    assert len(keys) == len(set(keys))
    assert set(batch.rejects.reasons) <= {"format_violation", "schema_violation", "size_violation"}
    assert all(isinstance(d, str) and d for d in batch.rejects.details)
    if batch.items_in is None:
        rows = set(batch.table.column(INDEX).to_pylist())
        rej = batch.rejects.indices
        assert all(item is None for item in batch.rejects.items)
        assert rows.isdisjoint(rej)
        assert rows | set(rej) == set(range(n))
        return
    assert len(batch.items_in) == n
    rows = set(zip(batch.table.column(INDEX).to_pylist(), batch.table.column(ITEM).to_pylist()))
    whole = {i for i, k in keys if k is None}
    item_rej = {(i, k) for i, k in keys if k is not None}
    assert rows.isdisjoint(item_rej)
    assert whole.isdisjoint({i for i, _ in rows | item_rej})
    for i in range(n):
        if i in whole:
            assert batch.items_in[i] == 1
        else:
            assert {k for j, k in rows | item_rej if j == i} == set(range(batch.items_in[i])), i
