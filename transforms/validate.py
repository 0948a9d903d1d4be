"""Validation: reject decoded records that break the contract the codec cannot see.

Consumes a decoded :class:`Batch` of wire columns; emits the batch without the rejected
rows. Rejects with ``schema_violation`` (required field missing, unknown event type or
log level, malformed trace/span id, an envelope without interactions) and
``timestamp_out_of_range`` (event time more than ``max_future`` after, or ``max_past``
before, the time the record entered the source — not the wall clock, so a replay of an
old topic is judged as it was when it arrived).

Product events sent through ``obsflow collect`` carry the device's send time (Kafka header
``sent_at``, ISO-8601) and the door's receive time (header ``received_at``, epoch ms).
Before the range check, their event time is corrected for the device's clock skew:
``timestamp + (received_at - sent_at)``, applied only when ``|received_at - sent_at|`` is
at most ``max_clock_skew`` and never later than ``received_at`` (see
:func:`clock_skew_ms`)."""

from __future__ import annotations

import difflib
import json
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core.encodings import one_array
from schemas.wire import arrow_schema
from transforms.batch import INDEX, MAX_PROBLEMS, Batch

if TYPE_CHECKING:  # the spec model is a layer above transforms: types only, never imported at run time
    from pipelines.spec import ValidateStep

#: counts at or past this are rejected: float64 (the rollups' arithmetic) holds every integer below it
_EXACT_COUNT = 1 << 53

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

LEVEL_ALIASES = {"WARNING": "WARN", "CRITICAL": "FATAL", "ERR": "ERROR", "INFORMATION": "INFO"}


def _suggest(name: str, known: list[str]) -> str | None:
    """The known name closest to ``name`` (same letters in another case first), or None."""
    lower = {k.lower().replace("_", ""): k for k in known}
    hit = lower.get(name.lower().replace("_", "").replace("-", ""))
    if hit is not None:
        return hit
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.75)
    return close[0] if close else None


def unknown_field_hints(doc: dict, fields: list[str], inner: list[str], event_types: list[str]) -> list[str]:
    """``unknown field 'x' (did you mean 'y'?)`` per field of ``doc`` not in ``fields``
    (and per interaction field not in ``inner``), at most ``MAX_PROBLEMS``."""
    out = []
    for key in doc:
        if key not in fields:
            close = _suggest(key, fields)
            out.append(f"unknown field {key!r}" + (f" (did you mean {close!r}?)" if close else ""))
    events = doc.get("events")
    if inner and isinstance(events, list):
        for i, e in enumerate(events):
            if not isinstance(e, dict):
                continue
            for key in e:
                if key in inner:
                    continue
                if "type" not in e and key in event_types:
                    out.append(
                        f"events[{i}]: unknown field {key!r} (an interaction names its kind in 'type': "
                        f'{{"type": "{key}", ...}})'
                    )
                else:
                    close = _suggest(key, inner)
                    out.append(f"events[{i}]: unknown field {key!r}" + (f" (did you mean {close!r}?)" if close else ""))
    if len(out) > MAX_PROBLEMS:
        out = out[:MAX_PROBLEMS] + [f"… ({len(out) - MAX_PROBLEMS} more unknown fields)"]
    return out


def _fmt_delta(seconds: float) -> str:
    s = abs(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s / size:.1f}{unit}"
    return f"{s:.1f}s"


class Validator:
    """Validate one signal's decoded rows against ``ValidateStep`` settings."""

    def __init__(self, signal: str, step: ValidateStep, json_hints: bool = False, leave_drops: bool = False):
        self.signal = signal
        #: leave the rejected rows in the table, drops deferred (:meth:`Batch.end_deferral`),
        #: for a caller that drops them itself: ``shape.to_rows`` folds them into its explode
        self.leave_drops = leave_drops
        self.step = step
        self.json_hints = json_hints  # records are JSON objects of wire fields: name unknown fields of rejects
        wire = arrow_schema(signal)
        self.fields = [f.name for f in wire]
        self.inner_fields = [f.name for f in wire.field("events").type.value_type] if signal == "event" else []
        self.required = [f.name for f in arrow_schema(signal) if not f.nullable]
        self.ts_field = "start_time" if signal == "span" else "timestamp"
        self.event_types = pa.array(sorted(set(step.event_types)))
        self._event_type_names: list[str] = self.event_types.to_pylist()  # read per reject: made once
        self.levels = pa.array(sorted(set(step.levels)))
        self.max_future_ms = int(step.max_future.total_seconds() * 1000)
        self.max_past_ms = int(step.max_past.total_seconds() * 1000)
        self.max_skew_ms = int(step.max_clock_skew.total_seconds() * 1000)

    def __call__(self, batch: Batch) -> Batch:
        if self.signal == "event":
            self._correct_clock_skew(batch)
        batch.defer_drops()
        self._required(batch)
        self._time_range(batch)
        if self.signal == "event":
            self._event_types(batch)
        elif self.signal == "log":
            self._levels(batch)
            self._hex_id(batch, "trace_id", 32)
            self._hex_id(batch, "span_id", 16)
        elif self.signal == "span":
            self._hex_id(batch, "trace_id", 32)
            self._hex_id(batch, "span_id", 16)
            self._hex_id(batch, "parent_span_id", 16)
            self._time_range(batch, "end_time", past=False)  # a span ends before it is exported
            t = batch.table
            if t.num_rows:
                backwards = pc.less(t.column("end_time"), t.column("start_time"))
                batch.reject_mask(backwards, "schema_violation", "end_time: before start_time")
        elif self.signal == "metric":
            self._metric(batch)
        if self.json_hints:
            self._unknown_fields(batch)
        if not self.leave_drops:
            batch.drop_rejected()
        return batch

    def _unknown_fields(self, batch: Batch) -> None:
        """For each rejected JSON record: its unknown field names, with the close wire name
        (``timeStamp`` → ``timestamp``) or, in an interaction, how to name its type.
        Records that are not rejected are not judged by their extra fields."""
        rows = batch.rejected_rows()
        if len(rows) == 0:
            return
        idx = batch.table.column(INDEX).to_numpy()
        details = np.empty(batch.table.num_rows, dtype=object)
        for r in rows.tolist():
            value = batch.raw.values[int(idx[r])]
            try:
                doc = json.loads(value)  # type: ignore[arg-type]  # None raises TypeError: skipped
            except (ValueError, TypeError):
                continue
            if isinstance(doc, dict):
                hints = unknown_field_hints(doc, self.fields, self.inner_fields, self._event_type_names)
                details[r] = "; ".join(hints) if hints else None
        mask = np.zeros(batch.table.num_rows, dtype=bool)
        mask[[r for r in rows.tolist() if details[r]]] = True
        if mask.any():
            batch.reject_mask(mask, "schema_violation", details)

    def _metric(self, batch: Batch) -> None:
        """Metric samples: a known kind (case-insensitive, written lower case); counters and
        gauges carry a finite value, histograms their bucket counts; a temporality, when
        given, is CUMULATIVE or DELTA (case-insensitive, written lower case)."""
        t = batch.table
        if t.num_rows == 0:
            return
        kind = pc.utf8_lower(t.column("kind"))
        batch.table = t = t.set_column(t.column_names.index("kind"), "kind", kind)
        bad = pc.fill_null(
            pc.invert(pc.is_in(kind, value_set=pa.array(["counter", "gauge", "histogram", "summary"]))), False
        )
        if pc.any(bad).as_py():
            batch.reject_mask(
                bad,
                "schema_violation",
                pc.coalesce(
                    pc.binary_join_element_wise(
                        "kind: unknown metric kind ",
                        pc.utf8_slice_codeunits(t.column("kind"), 0, 40),
                        "; expected COUNTER, GAUGE, HISTOGRAM or SUMMARY",
                        "",
                    ),
                    "kind: required field is missing or null",
                ),
            )
        value = t.column("value")
        needs = pc.is_in(kind, value_set=pa.array(["counter", "gauge"]))
        novalue = pc.fill_null(pc.and_(needs, pc.invert(pc.fill_null(pc.is_finite(value), False))), False)
        if pc.any(novalue).as_py():
            batch.reject_mask(novalue, "schema_violation", "value: a counter or gauge sample needs a finite value")
        nobuckets = pc.fill_null(pc.and_(pc.equal(kind, "histogram"), pc.is_null(t.column("bucket_counts"))), False)
        if pc.any(nobuckets).as_py():
            batch.reject_mask(
                nobuckets, "schema_violation", "bucket_counts: a histogram sample needs its bucket counts"
            )
        self._exact_counts(batch)
        t = batch.table
        if "temporality" in t.column_names and t.column("temporality").null_count < t.num_rows:
            temp = pc.utf8_lower(t.column("temporality"))
            batch.table = t = t.set_column(t.column_names.index("temporality"), "temporality", temp)
            # a sample without temporality is valid (is_in reads null as "not in the set": exclude it)
            unknown = pc.and_(pc.is_valid(temp), pc.invert(pc.is_in(temp, value_set=pa.array(["cumulative", "delta"]))))
            if pc.any(unknown).as_py():
                batch.reject_mask(
                    unknown,
                    "schema_violation",
                    pc.binary_join_element_wise(
                        "temporality: unknown temporality ",
                        pc.utf8_slice_codeunits(t.column("temporality"), 0, 40),
                        "; expected CUMULATIVE or DELTA",
                        "",
                    ),
                )

    @staticmethod
    def _exact_counts(batch: Batch) -> None:
        """Reject a sample whose ``count`` or a bucket count is at or past 2**53: the
        rollups add counts in float64, which holds every integer only below that."""
        t = batch.table
        if t.num_rows == 0:
            return
        limit = pa.scalar(_EXACT_COUNT, pa.int64())
        if "count" in t.column_names and pa.types.is_integer(t.schema.field("count").type):
            big = pc.fill_null(pc.greater_equal(t.column("count"), limit), False)
            if pc.any(big).as_py():
                batch.reject_mask(
                    big,
                    "schema_violation",
                    pc.binary_join_element_wise(
                        "count: ",
                        pc.cast(t.column("count"), pa.string()),
                        " is 2**53 or more, beyond what a rollup adds exactly",
                        "",
                    ),
                )
                t = batch.table
        if "bucket_counts" in t.column_names and t.num_rows:
            bc = t.column("bucket_counts")
            bc = bc.combine_chunks() if isinstance(bc, pa.ChunkedArray) else bc
            if pa.types.is_list(bc.type) and pa.types.is_integer(bc.type.value_type) and len(bc.values):
                flat = pc.list_flatten(bc)
                over = pc.fill_null(pc.greater_equal(flat, limit), False).to_numpy(zero_copy_only=False)
                if over.any():
                    rows = np.zeros(t.num_rows, bool)
                    rows[np.unique(pc.list_parent_indices(bc).to_numpy()[over])] = True
                    batch.reject_mask(
                        rows,
                        "schema_violation",
                        "bucket_counts: a bucket count is 2**53 or more, beyond what a rollup adds exactly",
                    )

    def _correct_clock_skew(self, batch: Batch) -> None:
        """Shift each event time by its record's clock skew (see :func:`clock_skew_ms`): the
        corrected time is ``timestamp + skew``, at most the receive time; rows without both
        headers, or with a skew over ``max_clock_skew``, keep their time."""
        raw, t = batch.raw, batch.table
        if self.max_skew_ms <= 0 or raw.headers is None or t.num_rows == 0:
            return
        n = len(raw.values)
        skew = np.zeros(n, dtype=np.int64)
        received = np.zeros(n, dtype=np.int64)
        has = np.zeros(n, dtype=bool)
        for i, headers in enumerate(raw.headers):
            found = clock_skew_ms(headers) if headers else None
            if found is not None and abs(found[0]) <= self.max_skew_ms:
                skew[i], received[i], has[i] = found[0], found[1], True
        if not has.any():
            return
        col = t.column(self.ts_field).combine_chunks()
        per_ms = {"s": None, "ms": 1, "us": 1000, "ns": 1_000_000}[col.type.unit]
        if per_ms is None:
            return
        idx = t.column(INDEX).to_numpy()
        valid = col.is_valid().to_numpy(zero_copy_only=False)
        values = pc.cast(col, pa.int64()).fill_null(0).to_numpy().copy()
        fix = has[idx] & valid
        values[fix] = np.minimum(values[fix] + skew[idx][fix] * per_ms, received[idx][fix] * per_ms)
        fixed = pa.array(values, pa.int64(), mask=~valid).cast(col.type)
        batch.table = t.set_column(t.schema.get_field_index(self.ts_field), self.ts_field, fixed)

    def _required(self, batch: Batch) -> None:
        for name in self.required:
            col = batch.table.column(name)
            if col.null_count:
                batch.reject_mask(pc.is_null(col), "schema_violation", f"{name}: required field is missing or null")

    def _time_range(self, batch: Batch, field: str | None = None, past: bool = True) -> None:
        """Reject rows whose ``field`` (default: the signal's event time) is more than
        ``max_future`` after ingest or (with ``past``) more than ``max_past`` before it."""
        field = field or self.ts_field
        t = batch.table
        if t.num_rows == 0:
            return
        ts_ms = pc.cast(t.column(field), pa.int64()).fill_null(0).to_numpy()
        if t.column(field).type.unit == "us":
            ts_ms = ts_ms // 1000
        idx = t.column(INDEX).to_numpy()
        ingest = batch.raw.timestamps_array()[idx]
        delta = ts_ms - ingest
        present = t.column(field).is_valid().to_numpy(zero_copy_only=False)  # a missing time is named by _required
        bad = ((delta > self.max_future_ms) | ((delta < -self.max_past_ms) if past else False)) & present
        if bad.any():
            details = np.empty(len(delta), dtype=object)
            for k in np.flatnonzero(bad):
                d = delta[k] / 1000.0
                when = "after" if d > 0 else "before"
                limit = self.step.max_future if d > 0 else self.step.max_past
                details[k] = (
                    f"{field} is {_fmt_delta(d)} {when} ingest time (limit {_fmt_delta(limit.total_seconds())})"
                )
            batch.reject_mask(bad, "timestamp_out_of_range", details)

    def _event_types(self, batch: Batch) -> None:
        """Every interaction of an envelope has a known ``type``: an envelope is rejected
        when any of its interactions lacks one or names an unknown one (each named, by
        position, at most ``MAX_PROBLEMS``)."""
        events = one_array(batch.table.column("events"))  # no copy: only read
        lengths = pc.list_value_length(events).fill_null(0).to_numpy(zero_copy_only=False)
        empty = lengths == 0
        if empty.any():
            batch.reject_mask(empty, "schema_violation", "events: an envelope needs at least one interaction")
        if len(events) == 0:
            return
        flat = pc.list_flatten(events)
        if len(flat) == 0:
            return
        types = pc.struct_field(flat, [0])
        missing = pc.is_null(types).to_numpy(zero_copy_only=False) | pc.is_null(flat).to_numpy(zero_copy_only=False)
        unknown = pc.invert(pc.fill_null(pc.is_in(types, value_set=self.event_types), True)).to_numpy(
            zero_copy_only=False
        )
        bad_flat = missing | unknown
        if not bad_flat.any():
            return
        parents = pc.list_parent_indices(events).to_numpy()
        offsets = events.offsets.to_numpy()
        starts = offsets[:-1] - offsets[0]  # into the flattened values (a slice's offsets need not start at 0)
        problems: dict[int, list[str]] = {}
        at = np.flatnonzero(bad_flat)
        # the type texts of the bad interactions only (a whole-column to_pylist costs a Python string per row)
        named = dict(zip(at.tolist(), types.take(pa.array(at)).to_pylist())) if unknown.any() else {}
        for k in at.tolist():
            p = int(parents[k])
            where = f"events[{k - int(starts[p])}].type"
            if missing[k]:
                msg = f"{where}: required field is missing or null"
            else:
                msg = f"{where}: unknown event type {named[k]!r}; expected one of {self._event_type_names}"
            problems.setdefault(p, []).append(msg)
        bad = np.zeros(len(events), dtype=bool)
        details = np.empty(len(events), dtype=object)
        for p, msgs in problems.items():
            bad[p] = True
            more = f"; … ({len(msgs) - MAX_PROBLEMS} more)" if len(msgs) > MAX_PROBLEMS else ""
            details[p] = "; ".join(msgs[:MAX_PROBLEMS]) + more
        batch.reject_mask(bad, "schema_violation", details)

    def _levels(self, batch: Batch) -> None:
        col = pc.utf8_upper(batch.table.column("level"))
        for alias, canon in LEVEL_ALIASES.items():
            col = pc.if_else(pc.equal(col, alias), canon, col)
        i = batch.table.column_names.index("level")
        batch.table = batch.table.set_column(i, "level", col)
        bad = pc.invert(pc.is_in(col, value_set=self.levels))
        if pc.any(bad).as_py():
            batch.reject_mask(
                bad,
                "schema_violation",
                pc.binary_join_element_wise(
                    "level: unknown log level ", pc.utf8_slice_codeunits(batch.table.column("level"), 0, 40), ""
                ),
            )

    def _hex_id(self, batch: Batch, name: str, length: int) -> None:
        col = batch.table.column(name)
        if col.null_count == len(col):
            return
        col = pc.utf8_lower(col)
        i = batch.table.column_names.index(name)
        batch.table = batch.table.set_column(i, name, col)
        bad = pc.invert(pc.match_substring_regex(col, f"^[0-9a-f]{{{length}}}$"))
        if pc.any(bad).as_py():
            batch.reject_mask(bad, "schema_violation", f"{name}: expected {length} hexadecimal characters")


def clock_skew_ms(headers: list[tuple[str, bytes | None]]) -> tuple[int, int] | None:
    """``(received_at - sent_at, received_at)`` in ms from a record's Kafka headers (the
    door writes ``received_at`` as epoch ms and ``sent_at`` as the client gave it, ISO-8601
    or epoch ms), or None when either is missing or unreadable."""
    sent = received = None
    for name, value in headers:
        if value is None:
            continue
        if name == "sent_at":
            sent = _epoch_ms(value)
        elif name == "received_at":
            try:
                received = int(value)
            except ValueError:
                return None
    if sent is None or received is None:
        return None
    return received - sent, received


def _epoch_ms(value: bytes) -> int | None:
    """ISO-8601 (with a zone; none: UTC) or epoch milliseconds, as ms; None if neither."""
    text = value.decode("utf-8", "replace").strip()
    if text.isdigit():
        return int(text)
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return (dt - _EPOCH) // timedelta(milliseconds=1)
