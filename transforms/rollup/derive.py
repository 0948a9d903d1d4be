"""Metrics derived from log and event rows by rules (:class:`DeriveRule`).

Consumes Arrow tables of ``obs.logs`` or ``obs.events`` rows (table column names: ``ts``,
``level``, ``service``, ``event_type``, ``form``, ``form_step``, ``duration_ms`` ...); emits
metric samples in the ``metric_sample`` wire columns, ready for :class:`MetricRollup`:

* a *count* rule (no ``value``) → one ``summary`` sample per matching row with ``count`` 1
  and ``sum`` 1, so the rollup row's ``count`` is the number of matching rows per window;
* a *value* rule → one ``gauge`` sample per matching row whose value column is not null
  (count, sum, min, max, last and sketch quantiles per window).

Labels are the rule's ``labels`` columns cast to strings (null → ``""``), in sorted order.
Stateless: nothing to snapshot."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.rollup.config import DeriveRule

SAMPLE_SCHEMA = pa.schema(
    [
        ("name", pa.string()),
        ("kind", pa.string()),
        ("timestamp", pa.timestamp("ms", tz="UTC")),
        ("labels", pa.map_(pa.string(), pa.string())),
        ("value", pa.float64()),
        ("bucket_bounds", pa.list_(pa.float64())),
        ("bucket_counts", pa.list_(pa.int64())),
        ("count", pa.int64()),
        ("sum", pa.float64()),
    ]
)


class MetricDeriver:
    """Applies the rules of one source (``logs`` or ``events``) to row batches."""

    def __init__(self, rules: list[DeriveRule | dict], source: str):
        self.rules = [r if isinstance(r, DeriveRule) else DeriveRule(**r) for r in rules]
        self.rules = [r for r in self.rules if r.source == source]
        self.source = source

    def __call__(self, rows: pa.Table) -> pa.Table:
        """Samples derived from ``rows`` by every rule (empty table when nothing matches)."""
        parts = [self._apply(r, rows) for r in self.rules]
        parts = [p for p in parts if p.num_rows]
        return pa.concat_tables(parts) if parts else SAMPLE_SCHEMA.empty_table()

    @staticmethod
    def _apply(rule: DeriveRule, rows: pa.Table) -> pa.Table:
        mask = None
        for col, want in rule.filter.items():
            c = rows.column(col)
            vals = want if isinstance(want, list) else [want]
            typ = c.type
            m = (
                pc.is_in(c, value_set=pa.array(vals).cast(typ))
                if len(vals) > 1
                else pc.equal(c, pa.scalar(vals[0]).cast(typ))
            )
            m = pc.fill_null(m, False)
            mask = m if mask is None else pc.and_(mask, m)
        t = rows.filter(mask) if mask is not None else rows
        if rule.value is not None:
            t = t.filter(pc.is_valid(t.column(rule.value)))
        n = t.num_rows
        if n == 0:
            return SAMPLE_SCHEMA.empty_table()
        names = sorted(rule.labels)
        if names:
            keys = pa.array(np.tile(np.asarray(names, object), n).tolist(), pa.string())
            cols = [pc.fill_null(t.column(c).cast(pa.string()), "").combine_chunks() for c in names]
            items = pa.array(
                np.stack([c.to_numpy(zero_copy_only=False) for c in cols], axis=1).reshape(-1).tolist(), pa.string()
            )
            offsets = pa.array(np.arange(0, n * len(names) + 1, len(names), dtype=np.int32))
            labels = pa.MapArray.from_arrays(offsets, keys, items)
        else:
            labels = pa.array([[]] * n, pa.map_(pa.string(), pa.string()))
        ts = t.column(rule.time_column).cast(pa.timestamp("ms", tz="UTC"))
        if rule.value is None:
            kind, value, count, ssum = (
                "summary",
                pa.nulls(n, pa.float64()),
                pa.array(np.ones(n, np.int64)),
                pa.array(np.ones(n)),
            )
        else:
            kind, value, count, ssum = (
                "gauge",
                _as_float(t.column(rule.value)),
                pa.nulls(n, pa.int64()),
                pa.nulls(n, pa.float64()),
            )
        return pa.table(
            {
                "name": pa.array([rule.name] * n, pa.string()),
                "kind": pa.array([kind] * n, pa.string()),
                "timestamp": ts,
                "labels": labels,
                "value": value,
                "bucket_bounds": pa.nulls(n, pa.list_(pa.float64())),
                "bucket_counts": pa.nulls(n, pa.list_(pa.int64())),
                "count": count,
                "sum": ssum,
            },
            schema=SAMPLE_SCHEMA,
        )


def _as_float(col) -> pa.ChunkedArray | pa.Array:
    """A derive rule's value column as float64 (a sample's value), never raising: an
    integer beyond 2**53 (``duration_ms`` 2**60) becomes the nearest float64, as a
    float gauge holds it."""
    return pc.cast(col, pa.float64(), safe=False)
