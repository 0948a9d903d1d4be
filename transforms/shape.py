"""Shape: map a signal's wire columns onto its table's columns, and finish rows for the
sink.

``to_rows`` runs after validation: product-event envelopes are exploded into one row per
interaction (all rows of an envelope keep its ``_i``), and wire names become table names
(``timestamp`` → ``ts``, ``stackTrace`` → ``error_stack`` ...). ``finish`` runs last: it
adds the ingest time and source coordinates and casts to the table's exact Arrow schema,
dropping in-flight columns such as the raw ``client_ip`` and ``user_id``, which are never
stored."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core.encodings import one_array
from schemas.tables import TableDef
from transforms.batch import INDEX, Batch

_EVENT_TOP = {
    "event_id": "event_id",
    "timestamp": "ts",
    "page": "page",
    "session_id": "session_id",
    "user": "user_id",
    "location": "reported_location",
    "platform": "platform",
    "user_agent": "user_agent",
    "client_ip": "client_ip",
}
_EVENT_INNER = {
    "type": "event_type",
    "target": "target",
    "depth": "scroll_depth",
    "form": "form",
    "step": "form_step",
    "duration_ms": "duration_ms",
    "message": "error_message",
    "stackTrace": "error_stack",
}
_LOG = {"timestamp": "ts", "user_id": "user_id"}


def to_rows(signal: str, batch: Batch) -> Batch:
    """Wire columns → table-named columns (exploding event envelopes).

    Rows rejected while the batch's drops are deferred (a validator that leaves them) are
    dropped here: for events inside the explode's ``take`` (no filter of the wire table),
    the same rows as :meth:`Batch.drop_rejected` then the explode."""
    if signal != "event":
        batch.drop_rejected()
        t = batch.table
        batch.table = t.rename_columns([_LOG.get(n, n) for n in t.column_names])
        return batch
    t = batch.table
    dropped = batch.end_deferral()
    events = one_array(t.column("events"))  # no copy: only read
    p = pc.list_parent_indices(events).to_numpy()
    flat = pc.list_flatten(events)
    # position of each interaction inside its envelope (a slice's offsets need not start at 0)
    offsets = events.offsets.to_numpy()
    pos = (
        np.arange(len(p), dtype=np.int32) - (offsets[p] - offsets[0]).astype(np.int32)
        if len(p)
        else np.zeros(0, np.int32)
    )
    keep = None
    if dropped is not None:
        kept = ~dropped[p]
        keep = pa.array(kept)  # filtered field by field: cheaper than filtering the struct
        p, pos = p[kept], pos[kept]
    # the envelope's fields repeated for each of its interactions: one take of them all
    top = t.select([*_EVENT_TOP, INDEX]).take(pa.array(p, pa.int64()))
    cols = top.columns[: len(_EVENT_TOP)]
    names = list(_EVENT_TOP.values())
    for k, f in enumerate(flat.type):
        if f.name in _EVENT_INNER:
            inner = pc.struct_field(flat, [k])
            cols.append(inner if keep is None else inner.filter(keep))
            names.append(_EVENT_INNER[f.name])
    cols.append(pa.array(pos, pa.int32()))
    names.append("event_index")
    cols.append(top.column(INDEX))
    names.append(INDEX)
    batch.table = pa.Table.from_arrays(cols, names=names)
    return batch


def annotate(batch: Batch) -> pa.Table:
    """The batch's rows with their source coordinates and ingest time, without ``_i``
    (for rows that go on to a stateful stage, which no longer sees the raw batch)."""
    t = batch.table
    raw = batch.raw
    idx = t.column(INDEX).to_numpy()
    n = t.num_rows
    t = t.drop_columns([INDEX])
    t = t.append_column("source_topic", repeat_string(raw.topic, n))
    t = t.append_column("source_partition", pa.array(np.full(n, raw.partition, dtype=np.int32)))
    t = t.append_column("source_offset", pa.array(raw.offsets_array()[idx]))
    t = t.append_column("ingested_at", pa.array(raw.timestamps_array()[idx] * 1000, pa.timestamp("us", tz="UTC")))
    return t


def repeat_string(text: str, n: int) -> pa.Array:
    """A string array of ``n`` copies of ``text``, built from its buffers (offsets
    ``0, len, 2·len …`` and the bytes repeated): no Python object per row. Equal to
    ``pa.array([text] * n, pa.string())``."""
    data = text.encode("utf-8")
    if n * len(data) >= 2**31 - 1:  # past 32-bit offsets: Arrow's own builder picks the layout
        return pa.array([text] * n, pa.string())
    ends = np.arange(0, (n + 1) * len(data), len(data), dtype=np.int32) if data else np.zeros(n + 1, np.int32)
    return pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(ends), pa.py_buffer(data * n)])


#: wire names kept through stateful stages, renamed when rows are written
RENAMES = {"spans": {"start_time": "start", "end_time": "end"}}


def conform(t: pa.Table, table: TableDef, extra: dict | None = None) -> pa.Table:
    """``t`` in ``table``'s exact Arrow schema: missing columns null (or from ``extra``),
    others cast, unknown ones dropped."""
    renames = RENAMES.get(table.name)
    if renames:
        t = t.rename_columns([renames.get(c, c) for c in t.column_names])
        if "duration_ms" not in t.column_names and "start" in t.column_names:
            # validation keeps start within bounds and end >= start, so the difference fits
            # int64; past 2**53 us (an end centuries away) it becomes the nearest float64
            us = pc.subtract(pc.cast(t.column("end"), pa.int64()), pc.cast(t.column("start"), pa.int64()))
            t = t.append_column("duration_ms", pc.divide(pc.cast(us, pa.float64(), safe=False), 1000.0))
    n = t.num_rows
    extra = extra or {}
    schema = table.arrow_schema()
    cols = []
    names = t.column_names  # read once: each read builds a list
    at = {name: i for i, name in enumerate(names)}
    for f in schema:
        i = at.get(f.name)
        if i is not None:
            col = t.column(i if len(at) == len(names) else f.name)  # a name twice: Arrow's own error
        elif f.name in extra:
            col = pa.array([extra[f.name]] * n, f.type)
        else:
            col = pa.nulls(n, f.type)
        if col.type != f.type:
            col = _map_as(col, f.type) if pa.types.is_map(f.type) else pc.cast(col, f.type)
        cols.append(col)
    return pa.Table.from_arrays(cols, schema=schema)


def finish(batch: Batch, table: TableDef, extra: dict | None = None) -> pa.Table:
    """The rows of ``batch`` in ``table``'s exact Arrow schema, with source coordinates."""
    return conform(annotate(batch), table, extra)


def _map_as(col, typ: pa.MapType) -> pa.Array:
    """Rebuild a map column with the target map type (field names and nullability as the
    table declares them); Arrow's cast between map types is not reliable."""
    col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if pa.types.is_null(col.type):
        return pa.nulls(len(col), typ)
    mask = col.is_null() if col.null_count else None
    return pa.MapArray.from_arrays(col.offsets, col.keys, col.items, type=typ, mask=mask)
