"""Dead-letter rows: one per rejected record, with reason, detail, raw bytes (bounded)
and source coordinates (plus the item index for a span, log record or data point of an
OTLP message rejected alone)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core.batch import RawBatch, Rejects
from schemas.tables import DEAD_LETTERS


def dead_letter_rows(
    raw: RawBatch,
    rejects: Rejects,
    max_raw_bytes: int,
    scrubber=None,
    item_raw: Callable[[int, int], bytes] | None = None,
) -> pa.Table:
    """Rows for ``obs.dead_letters``, in (offset, item) order. A record rejected twice
    (e.g. one row per interaction of an envelope) yields one row, with the first reason.
    A reject that names an item (a span, log record or data point of an OTLP message) is
    its own row: ``item_index`` set and ``raw`` that item's bytes (``item_raw``). With a
    ``scrubber`` (a ``transforms.scrub.Scrubber``), ``raw`` is scrubbed before it is cut
    (``raw_text`` says whether it was text or masked as binary; ``raw_size`` stays the
    received size) and ``detail`` is scrubbed as free text."""
    schema = DEAD_LETTERS.arrow_schema()
    seen: dict[tuple[int, int], int] = {}
    for k, (i, item) in enumerate(zip(rejects.indices, rejects.items)):
        seen.setdefault((i, -1 if item is None else item), k)
    order = sorted(seen)
    values = [raw.values[i] if item < 0 or item_raw is None else item_raw(i, item) for i, item in order]
    sizes = [len(v) if v is not None else 0 for v in values]
    details = pa.array([rejects.details[seen[key]] for key in order], pa.string())
    is_text = [None] * len(order)
    if scrubber is not None and order:
        values, is_text = scrubber.scrub_raw(values)
        details = scrubber.scrub_text(details)
    cols = {
        "received_at": pa.array(
            np.asarray([raw.timestamps_ms[i] for i, _ in order], dtype=np.int64) * 1000, pa.timestamp("us", tz="UTC")
        ),
        "reason": pa.array([rejects.reasons[seen[key]] for key in order], pa.string()),
        "detail": details,
        "source": pa.array([raw.source] * len(order), pa.string()),
        "source_topic": pa.array([raw.topic] * len(order), pa.string()),
        "source_partition": pa.array([raw.partition] * len(order), pa.int32()),
        "source_offset": pa.array([raw.offsets[i] for i, _ in order], pa.int64()),
        "item_index": pa.array([None if item < 0 else item for _, item in order], pa.int32()),
        "raw": pa.array([None if v is None else v[:max_raw_bytes] for v in values], pa.binary()),
        "raw_size": pa.array(sizes, pa.int64()),
        "raw_truncated": pa.array([s > max_raw_bytes for s in sizes], pa.bool_()),
        "raw_text": pa.array(is_text, pa.bool_()),
    }
    return require_reasons(pa.Table.from_arrays([cols[f.name] for f in schema], schema=schema))


def require_reasons(dead: pa.Table) -> pa.Table:
    """``dead`` unchanged if every dead letter has a non-empty ``reason`` and a non-null
    ``detail``; else ValueError naming the first offender (a bug in the step that
    rejected it: the run isolates it as ``internal_error``, see ``pipelines.isolate``)."""
    for col in ("reason", "detail"):
        c = dead.column(col)
        bad = pc.or_(pc.is_null(c), pc.equal(pc.fill_null(c, ""), "")) if col == "reason" else pc.is_null(c)
        if pc.any(bad).as_py():
            k = pc.index(bad, True).as_py()
            row = dead.slice(k, 1).to_pylist()[0]
            raise ValueError(
                f"dead letter without {col}: reason {row['reason']!r}, detail {row['detail']!r}, "
                f"{row['source_topic']}:{row['source_partition']} offset {row['source_offset']}"
            )
    return dead
