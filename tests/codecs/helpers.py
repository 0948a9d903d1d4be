"""Helpers shared by the codec tests."""

from __future__ import annotations

import pyarrow as pa

from schemas.wire import arrow_schema
from transforms.batch import INDEX, RawBatch


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
    assert table.column_names == wire.names + extra.names + [INDEX]
    for f in (*wire, *extra):
        assert table.schema.field(f.name).type == f.type, f.name
    assert table.schema.field(INDEX).type == pa.int64()


def accounted(batch, n: int) -> None:
    """Every input record is either a row or a reject, never both, never neither."""
    rows = set(batch.table.column(INDEX).to_pylist())
    rej = batch.rejects.indices
    assert len(rej) == len(set(rej))
    assert rows.isdisjoint(rej)
    assert rows | set(rej) == set(range(n))
    assert set(batch.rejects.reasons) <= {"format_violation", "schema_violation", "size_violation"}
    assert all(isinstance(d, str) and d for d in batch.rejects.details)
