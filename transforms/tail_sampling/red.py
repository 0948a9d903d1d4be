"""RED span metrics (rate, errors, duration) from *all* spans, before sampling, so they
are unbiased; exemplar trace ids come from kept traces, so an exemplar always resolves to
a trace in obs.traces.

Series, per event-time window (of span ``start_time``) and per labels ``service``,
``operation`` (span name), ``kind`` and ``status`` (status code):

- ``span.calls`` (counter): spans; ``count`` = ``sum`` = ``increase``, ``rate`` per second;
- ``span.errors`` (counter): spans with status ERROR;
- ``span.duration_ms`` (histogram): ``count``, ``sum``, ``min``, ``max`` exact; ``p50`` /
  ``p75`` / ``p90`` / ``p95`` / ``p99`` from a DDSketch (``ddsketch``, 1% relative accuracy,
  mergeable); ``exemplar_trace_ids`` (up to ``max_exemplars`` kept traces, first seen);
- ``span.duration_ms.bucket`` (histogram): one row per bound with label ``le`` (ms, and
  ``+Inf``), ``count`` cumulative — fixed bounds, Prometheus style.

Rows have the METRICS table's columns (schemas/tables.py). A window is emitted by
``flush(watermark_ms)`` once ``window_end + allowed_lateness_ms + exemplar_delay_ms <=
watermark_ms``: ``exemplar_delay_ms`` (set it to the tail sampler's ``decision_wait``)
gives kept-trace exemplars time to arrive. Spans for a window after its watermark
passed but before it was emitted are counted in ``late_samples``; spans for a window
already emitted are counted in ``late_dropped`` and :meth:`RedMetrics.add` returns which
they were (the trace stage dead-letters them as ``late_data``: never silently).

Shards: a shard's closed windows can leave as partial aggregates (:meth:`RedMetrics.partials`;
the DDSketch is mergeable, the other fields add up) which :func:`merge_partials` merges and
:func:`red_rows` turns into rows, so that a series and window that several shards saw is
one row with the series' quantiles (the trace stage's shards hand them to the global
stage)."""

from __future__ import annotations

import pickle

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from ddsketch import DDSketch

DEFAULT_BOUNDS_MS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
QUANTILES = (("p50", 0.5), ("p75", 0.75), ("p90", 0.9), ("p95", 0.95), ("p99", 0.99))

METRICS_SCHEMA = pa.schema(
    [
        ("window_start", pa.timestamp("us", tz="UTC")),
        ("window_end", pa.timestamp("us", tz="UTC")),
        ("resolution", pa.string()),
        ("name", pa.string()),
        ("kind", pa.string()),
        ("labels", pa.map_(pa.string(), pa.string())),
        ("count", pa.int64()),
        ("sum", pa.float64()),
        ("min", pa.float64()),
        ("max", pa.float64()),
        ("last", pa.float64()),
        ("increase", pa.float64()),
        ("rate", pa.float64()),
        ("p50", pa.float64()),
        ("p75", pa.float64()),
        ("p90", pa.float64()),
        ("p95", pa.float64()),
        ("p99", pa.float64()),
        ("exemplar_trace_ids", pa.list_(pa.string())),
        ("late_samples", pa.int64()),
    ]
)


def sketch_add_many(sk: DDSketch, values: np.ndarray) -> None:
    """Add many values to a DDSketch at once (vectorized key mapping; same bins as ``add``)."""
    values = np.maximum(np.asarray(values, dtype=np.float64), 0.0)
    if not len(values):
        return
    m = sk._mapping
    pos = values > m.min_possible
    v = values[pos]
    if len(v):
        keys = np.ceil(np.log2(v) * m._multiplier).astype(np.int64) + int(m._offset)
        uk, cnt = np.unique(keys, return_counts=True)
        for k, c in zip(uk.tolist(), cnt.tolist()):
            sk._store.add(k, float(c))
    sk._zero_count += float(len(values) - len(v))
    sk._count += float(len(values))
    sk._sum += float(values.sum())
    sk._min = min(sk._min, float(values.min()))
    sk._max = max(sk._max, float(values.max()))


class _Agg:
    __slots__ = ("calls", "errors", "sum", "min", "max", "hist", "sketch", "exemplars", "late")

    def __init__(self, nb: int, acc: float):
        self.calls = 0
        self.errors = 0
        self.sum = 0.0
        self.min = float("inf")
        self.max = float("-inf")
        self.hist = np.zeros(nb + 1, np.int64)
        self.sketch = DDSketch(acc)
        self.exemplars: list[str] = []
        self.late = 0


def _resolution(ms: int) -> str:
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def _us(col) -> np.ndarray:
    t = col.type
    v = pc.cast(col, pa.int64()).to_numpy() if pa.types.is_timestamp(t) else np.asarray(col.to_numpy(), np.int64)
    if pa.types.is_timestamp(t):
        v = {"s": v * 1_000_000, "ms": v * 1000, "us": v, "ns": v // 1000}[t.unit]
    return v


class RedMetrics:
    def __init__(
        self,
        window_ms: int = 60_000,
        bucket_bounds_ms=DEFAULT_BOUNDS_MS,
        relative_accuracy: float = 0.01,
        max_exemplars: int = 3,
        allowed_lateness_ms: int = 0,
        exemplar_delay_ms: int = 0,
    ):
        self.window_ms = int(window_ms)
        self.bounds = np.asarray(sorted(bucket_bounds_ms), dtype=np.float64)
        self.acc = relative_accuracy
        self.max_exemplars = max_exemplars
        self.lateness = allowed_lateness_ms
        self.delay = exemplar_delay_ms
        self.resolution = _resolution(self.window_ms)
        self._aggs: dict[tuple, _Agg] = {}
        self._watermark: int | None = None
        self._emitted_until = None  # windows with start < this were emitted
        self.late_dropped = 0

    def _keys(self, spans: pa.Table):
        """``(start us, key code per span, distinct keys)``: a key is ``(window start ms,
        service, name, kind, status)``. Each column is dictionary-encoded on its own and
        the codes combined, so no character in a name can split a key (a span name with
        U+001F is a name like any other)."""
        start = _us(spans.column("start_time"))
        w = (start // 1000) // self.window_ms * self.window_ms
        cols = [pa.array(w, pa.int64())] + [
            pc.fill_null(spans.column(c).cast(pa.string()), "") for c in ("service", "name", "kind", "status_code")
        ]
        dicts, codes = [], []
        for col in cols:
            enc = pc.dictionary_encode(col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col)
            dicts.append(enc.dictionary.to_pylist())
            codes.append(enc.indices.to_numpy(zero_copy_only=False).astype(np.int64))
        rows, first, inverse = np.unique(np.stack(codes, axis=1), axis=0, return_index=True, return_inverse=True)
        order = np.argsort(first, kind="stable")  # keys in order of first appearance
        rank = np.empty(len(order), np.int64)
        rank[order] = np.arange(len(order))
        uniq = [(int(dicts[0][r[0]]), *(dicts[k][r[k]] for k in range(1, 5))) for r in rows[order].tolist()]
        return start, rank[np.asarray(inverse, np.int64).reshape(-1)], uniq

    def add(self, spans: pa.Table) -> np.ndarray:
        """Count every span (call this before sampling). Returns a mask of the rows that
        were not counted because their window had been emitted (``late_dropped``)."""
        n = spans.num_rows
        late_mask = np.zeros(n, dtype=bool)
        if n == 0:
            return late_mask
        start, codes, uniq = self._keys(spans)
        dur = (_us(spans.column("end_time")) - start) / 1000.0
        err = np.asarray(
            pc.fill_null(pc.equal(spans.column("status_code").cast(pa.string()), "ERROR"), False).to_numpy(
                zero_copy_only=False
            ),
            dtype=bool,
        )
        order = np.argsort(codes, kind="stable")
        bounds = np.concatenate([[0], np.cumsum(np.bincount(codes, minlength=len(uniq)))])
        bucket = np.searchsorted(self.bounds, dur, side="left")  # le semantics: dur <= bound
        nb = len(self.bounds)
        for g, key in enumerate(uniq):
            rows = order[bounds[g] : bounds[g + 1]]
            wend = key[0] + self.window_ms
            if self._emitted_until is not None and key[0] < self._emitted_until:
                self.late_dropped += len(rows)
                late_mask[rows] = True
                continue
            a = self._aggs.get(key)
            if a is None:
                a = self._aggs[key] = _Agg(nb, self.acc)
            d = dur[rows]
            a.calls += len(rows)
            a.errors += int(err[rows].sum())
            a.sum += float(d.sum())
            a.min = min(a.min, float(d.min()))
            a.max = max(a.max, float(d.max()))
            a.hist += np.bincount(bucket[rows], minlength=nb + 1)
            sketch_add_many(a.sketch, d)
            if self._watermark is not None and wend <= self._watermark:
                a.late += len(rows)
        return late_mask

    def add_exemplars(self, kept_spans: pa.Table) -> None:
        """Record trace ids of kept spans (e.g. ``Decisions.spans``) as exemplars."""
        if kept_spans.num_rows == 0:
            return
        _, codes, uniq = self._keys(kept_spans)
        tids = kept_spans.column("trace_id").to_pylist()
        for row, g in enumerate(codes.tolist()):
            a = self._aggs.get(uniq[g])
            if a is not None and len(a.exemplars) < self.max_exemplars and tids[row] not in a.exemplars:
                a.exemplars.append(tids[row])

    def _ready(self, watermark_ms: int) -> list:
        self._watermark = watermark_ms if self._watermark is None else max(self._watermark, watermark_ms)
        limit = self.closed_through(watermark_ms) - self.window_ms  # windows starting at or before limit
        ready = sorted(k for k in self._aggs if k[0] <= limit)
        if ready:
            cut = ready[-1][0] + self.window_ms
            self._emitted_until = cut if self._emitted_until is None else max(self._emitted_until, cut)
        return ready

    def _ready_all(self) -> list:
        ready = sorted(self._aggs)
        if ready:
            self._emitted_until = max(
                self._emitted_until or ready[-1][0] + self.window_ms, ready[-1][0] + self.window_ms
            )
        return ready

    def closed_through(self, watermark_ms: int) -> int:
        """Windows ending at or before this time are complete at ``watermark_ms``."""
        return watermark_ms - self.lateness - self.delay

    def flush(self, watermark_ms: int) -> pa.Table:
        """Rows of every window complete at ``watermark_ms`` (see the module doc)."""
        return self._rows(self._ready(watermark_ms))

    def flush_all(self) -> pa.Table:
        return self._rows(self._ready_all())

    def partials(self, watermark_ms: int | None) -> dict:
        """The aggregates of every window complete at ``watermark_ms`` (all of them when
        None), removed from this object: ``{(window start ms, service, operation, kind,
        status): aggregate}`` for :func:`merge_partials` / :func:`red_rows`."""
        ready = self._ready_all() if watermark_ms is None else self._ready(watermark_ms)
        return {k: self._aggs.pop(k) for k in ready}

    def _rows(self, keys: list) -> pa.Table:
        return red_rows({k: self._aggs.pop(k) for k in keys}, self.window_ms, self.bounds)

    def snapshot(self) -> bytes:
        return pickle.dumps(
            {
                "aggs": self._aggs,
                "watermark": self._watermark,
                "emitted": self._emitted_until,
                "late_dropped": self.late_dropped,
            },
            protocol=5,
        )

    def restore(self, data: bytes) -> None:
        st = pickle.loads(data)
        self._aggs, self._watermark, self._emitted_until, self.late_dropped = (
            st["aggs"],
            st["watermark"],
            st["emitted"],
            st["late_dropped"],
        )


def merge_partials(into: dict, parts: dict, max_exemplars: int) -> None:
    """Add the partial aggregates ``parts`` (:meth:`RedMetrics.partials`) into ``into``:
    counts, sums and histogram buckets add, min / max combine, the sketches merge (the
    merged sketch keeps the relative accuracy), exemplars are united up to ``max_exemplars``."""
    for key, b in parts.items():
        a = into.get(key)
        if a is None:
            into[key] = b
            continue
        a.calls += b.calls
        a.errors += b.errors
        a.sum += b.sum
        a.min = min(a.min, b.min)
        a.max = max(a.max, b.max)
        a.hist = a.hist + b.hist
        a.sketch.merge(b.sketch)
        a.late += b.late
        for t in b.exemplars:
            if len(a.exemplars) < max_exemplars and t not in a.exemplars:
                a.exemplars.append(t)


def red_rows(aggs: dict, window_ms: int, bounds=DEFAULT_BOUNDS_MS) -> pa.Table:
    """Rows (:data:`METRICS_SCHEMA`) of the aggregates ``aggs``, in key order: per series
    and window, ``span.calls``, ``span.errors``, ``span.duration_ms`` and its buckets."""
    bounds = np.asarray(sorted(bounds), dtype=np.float64)
    resolution = _resolution(window_ms)
    rows = []
    secs = window_ms / 1000.0
    for key in sorted(aggs):
        a = aggs[key]
        ws, svc, name, kind, status = key
        labels = [("service", svc), ("operation", name), ("kind", kind), ("status", status)]
        base = {
            "window_start": ws * 1000,
            "window_end": (ws + window_ms) * 1000,
            "resolution": resolution,
            "labels": labels,
            "last": None,
            "late_samples": a.late,
            "exemplar_trace_ids": list(a.exemplars),
        }
        q = {n: a.sketch.get_quantile_value(p) for n, p in QUANTILES}
        none_q = dict.fromkeys(q)
        for nm, v in (("span.calls", a.calls), ("span.errors", a.errors)):
            rows.append(
                base
                | none_q
                | {
                    "name": nm,
                    "kind": "counter",
                    "count": v,
                    "sum": float(v),
                    "min": None,
                    "max": None,
                    "increase": float(v),
                    "rate": v / secs,
                }
            )
        rows.append(
            base
            | q
            | {
                "name": "span.duration_ms",
                "kind": "histogram",
                "count": a.calls,
                "sum": a.sum,
                "min": a.min,
                "max": a.max,
                "increase": None,
                "rate": None,
            }
        )
        cum = np.cumsum(a.hist).tolist()
        les = [f"{b:g}" for b in bounds.tolist()] + ["+Inf"]
        for le, c in zip(les, cum):
            rows.append(
                base
                | none_q
                | {
                    "name": "span.duration_ms.bucket",
                    "kind": "histogram",
                    "labels": labels + [("le", le)],
                    "count": c,
                    "sum": None,
                    "min": None,
                    "max": None,
                    "increase": None,
                    "rate": None,
                    "exemplar_trace_ids": None,
                }
            )
    if not rows:
        return METRICS_SCHEMA.empty_table()
    cols = {f.name: [r[f.name] for r in rows] for f in METRICS_SCHEMA}
    arrays = []
    for f in METRICS_SCHEMA:
        if pa.types.is_timestamp(f.type):
            arrays.append(pa.array(cols[f.name], pa.int64()).cast(f.type))
        else:
            arrays.append(pa.array(cols[f.name], f.type))
    return pa.Table.from_arrays(arrays, schema=METRICS_SCHEMA)
