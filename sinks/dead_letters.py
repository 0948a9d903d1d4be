"""Dead-letter rows: one per rejected record, with reason, detail, raw bytes (bounded)
and source coordinates."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas.tables import DEAD_LETTERS
from transforms.batch import RawBatch, Rejects


def dead_letter_rows(raw: RawBatch, rejects: Rejects, max_raw_bytes: int) -> pa.Table:
    """Rows for ``obs.dead_letters``. A record rejected twice (e.g. one row per
    interaction of an envelope) yields one row, with the first reason."""
    schema = DEAD_LETTERS.arrow_schema()
    seen: dict[int, int] = {}
    for k, i in enumerate(rejects.indices):
        seen.setdefault(i, k)
    order = sorted(seen)
    values = [raw.values[i] for i in order]
    sizes = [len(v) if v is not None else 0 for v in values]
    cols = {
        "received_at": pa.array(np.asarray([raw.timestamps_ms[i] for i in order], dtype=np.int64) * 1000, pa.timestamp("us", tz="UTC")),
        "reason": pa.array([rejects.reasons[seen[i]] for i in order], pa.string()),
        "detail": pa.array([rejects.details[seen[i]] for i in order], pa.string()),
        "source": pa.array([raw.source] * len(order), pa.string()),
        "source_topic": pa.array([raw.topic] * len(order), pa.string()),
        "source_partition": pa.array([raw.partition] * len(order), pa.int32()),
        "source_offset": pa.array([raw.offsets[i] for i in order], pa.int64()),
        "raw": pa.array([None if v is None else v[:max_raw_bytes] for v in values], pa.binary()),
        "raw_size": pa.array(sizes, pa.int64()),
        "raw_truncated": pa.array([s > max_raw_bytes for s in sizes], pa.bool_()),
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
            raise ValueError(f"dead letter without {col}: reason {row['reason']!r}, detail {row['detail']!r}, "
                             f"{row['source_topic']}:{row['source_partition']} offset {row['source_offset']}")
    return dead
