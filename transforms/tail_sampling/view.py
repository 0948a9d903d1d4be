"""What a policy sees: the spans of a set of traces being decided together, columnar.

``TraceView`` holds the spans (an Arrow table) with ``group`` (the trace's position,
``0..n-1``, per span row) and per-trace aggregates kept while buffering. Policies
evaluate all traces of a view at once with Arrow compute and numpy.

Attribute values are typed as OTLP types them: ``attributes`` / ``resource`` hold every
value as text (ints in decimal, doubles as Python's ``repr``, booleans ``true`` /
``false``), and ``attribute_types`` / ``resource_types`` name the type of each value that
is not a string (``int``, ``double``, ``bool``, ``bytes``, ``array``, ``kvlist``); a key
absent from the types map holds a string. Rows without the types columns (JSON and Avro
spans, whose wire schema has string values only) hold strings."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .hashing import hash_trace_ids


class TraceView:
    def __init__(
        self,
        table: pa.Table,
        group: np.ndarray,
        trace_ids: list[str],
        start_ns: np.ndarray,
        end_ns: np.ndarray,
        span_count: np.ndarray,
        error_count: np.ndarray,
        nbytes: np.ndarray,
        now_ms: int,
    ):
        self.table = table
        self.group = group
        self.trace_ids = trace_ids
        self.n = len(trace_ids)
        self.start_ns = start_ns
        self.end_ns = end_ns
        self.span_count = span_count
        self.error_count = error_count
        self.nbytes = nbytes
        self.now_ms = now_ms
        self._cache: dict = {}

    # -- helpers ----------------------------------------------------------------------------

    def any_per_trace(self, row_mask) -> np.ndarray:
        """True for each trace with at least one row where ``row_mask`` holds (nulls = false)."""
        if isinstance(row_mask, (pa.Array, pa.ChunkedArray)):
            row_mask = np.asarray(pc.fill_null(row_mask, False).to_numpy(zero_copy_only=False), dtype=bool)
        out = np.zeros(self.n, dtype=bool)
        out[self.group[row_mask]] = True
        return out

    @property
    def start_us(self) -> np.ndarray:
        return self.start_ns // 1000

    @property
    def end_us(self) -> np.ndarray:
        return self.end_ns // 1000

    @property
    def duration_ms(self) -> np.ndarray:
        """Trace duration: earliest span start to latest span end, subtracted in nanoseconds,
        then whole milliseconds truncated toward zero (Go's ``Duration.Milliseconds``)."""
        d = self.end_ns - self.start_ns
        return np.where(d >= 0, d // 1_000_000, -((-d) // 1_000_000))

    def hashes(self, salt: str) -> np.ndarray:
        key = ("hash", salt)
        if key not in self._cache:
            self._cache[key] = hash_trace_ids(pa.array(self.trace_ids, pa.string()), salt)
        return self._cache[key]

    def column(self, name: str):
        return self.table.column(name) if name in self.table.column_names else None

    def span_attr(self, key: str):
        """Per span: the value of span attribute ``key`` (null when absent)."""
        ck = ("span", key)
        if ck not in self._cache:
            col = self.column("attributes")
            self._cache[ck] = None if col is None else pc.map_lookup(col, pa.scalar(key, pa.string()), "first")
        return self._cache[ck]

    def span_attr_type(self, key: str):
        """Per span: the type of span attribute ``key`` when it is not a string (null for a
        string or an absent key; see the module doc)."""
        return self._type_of("attribute_types", key)

    def resource_attr_type(self, key: str):
        """Per span: the type of resource attribute ``key`` when it is not a string."""
        return self._type_of("resource_types", key)

    def _type_of(self, column: str, key: str):
        ck = (column, key)
        if ck not in self._cache:
            col = self.column(column)
            self._cache[ck] = None if col is None else pc.map_lookup(col, pa.scalar(key, pa.string()), "first")
        return self._cache[ck]

    def resource_attr(self, key: str):
        """Per span: the value of resource attribute ``key`` (null when absent); ``service.name``
        falls back to the ``service`` column when the resource map lacks it."""
        ck = ("resource", key)
        if ck not in self._cache:
            col = self.column("resource")
            vals = None if col is None else pc.map_lookup(col, pa.scalar(key, pa.string()), "first")
            if key == "service.name" and self.column("service") is not None:
                svc = self.column("service")
                vals = svc if vals is None else pc.coalesce(vals, svc)
            self._cache[ck] = vals
        return self._cache[ck]
