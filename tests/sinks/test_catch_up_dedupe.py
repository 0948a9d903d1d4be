"""Issue 19 item 2, per-table effectively-once for rows a stage derives: a catch-up
(``IcebergSink(dedupe=True)``, see ``runners.job.CatchUp``) re-derives rows its table may
hold already, and a stage restarted empty derives them with its own clock and decisions:
a trace's ``decided_at`` (and its counts, when only part of its spans is read again), a
span's ``sampling_policy`` / ``adjusted_count``, a log line's ``sample_rate`` (log sampling
by trace). The catch-up must still write each trace, span and log line once: keyed by
what identifies the row (a trace id; a span's ids and source coordinates; a log line's
content and source coordinates), not by the whole row. Real SQLite catalog and local
warehouse; the rows go through ``write_stage`` as the trace stage's outputs do."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyarrow as pa

from core.stats import RunStats
from pipelines.stages import StageOutput
from schemas.tables import table_def
from pipelines.graph import write_plan
from sinks.iceberg import IcebergSink
from tests.helpers import local_spec, read_table

T = datetime(2025, 11, 13, 2, 13, 59, tzinfo=UTC)
TABLES = ["traces", "spans", "logs"]


def rows(name: str, *items: dict) -> pa.Table:
    """Rows of table ``name``: each item's columns, other nullable ones null, required ones a fixed value."""
    schema = table_def(name).arrow_schema()

    def fill(f: pa.Field):
        t = f.type
        if pa.types.is_timestamp(t):
            return T
        if pa.types.is_floating(t):
            return 1.0
        if pa.types.is_integer(t):
            return 1
        if pa.types.is_list(t) or pa.types.is_map(t):
            return []
        return "x"

    return pa.Table.from_pylist(
        [{f.name: item.get(f.name, None if f.nullable else fill(f)) for f in schema} for item in items], schema=schema
    )


def trace(tid: str, decided_s: int, spans: int = 2) -> dict:
    return {"trace_id": tid, "span_count": spans, "decided_at": T + timedelta(seconds=decided_s), "adjusted_count": 1.0}


def span(tid: str, sid: str, offset: int, adjusted: float) -> dict:
    return {
        "trace_id": tid,
        "span_id": sid,
        "source_topic": "spans",
        "source_partition": 0,
        "source_offset": offset,
        "adjusted_count": adjusted,
        "sampling_policy": "errors" if adjusted == 1.0 else "probabilistic",
    }


def log(offset: int, rate: float, message: str = "line") -> dict:
    return {
        "message": message,
        "trace_id": "t1",
        "source_topic": "logs",
        "source_partition": 0,
        "source_offset": offset,
        "sample_rate": rate,
    }


def write(spec, out: dict[str, pa.Table], dedupe: bool) -> None:
    sink = IcebergSink(spec, TABLES, background=False, dedupe=dedupe, plan=write_plan(spec), counters=RunStats())
    sink.write_stage(StageOutput(stage="trace", shard=0, rows=out, positions={}))
    sink.flush()
    sink.close()


def test_a_catch_up_writes_each_trace_span_and_log_line_once(tmp_path):
    spec = local_spec(tmp_path, traces=True)
    # what the table holds from the failed run (committed past its recorded position)
    write(
        spec,
        {
            "traces": rows("traces", trace("t1", 10), trace("t2", 11)),
            "spans": rows("spans", span("t1", "s1", 5, 1.0), span("t2", "s2", 6, 1.0)),
            "logs": rows("logs", log(7, 1.0), log(8, 1.0)),
        },
        dedupe=False,
    )
    # the catch-up re-derives them with another clock / decision, and derives new ones
    write(
        spec,
        {
            "traces": rows("traces", trace("t1", 12, spans=1), trace("t2", 11), trace("t3", 12)),
            "spans": rows(
                "spans",
                span("t1", "s1", 5, 10.0),
                span("t2", "s2", 6, 1.0),
                span("t3", "s3", 9, 1.0),
                span("t1", "s1", 11, 1.0),
            ),  # the same span sent again at another offset: a row of its own
            "logs": rows("logs", log(7, 0.1), log(8, 1.0), log(10, 1.0), log(7, 1.0, "another line at offset 7")),
        },
        dedupe=True,
    )
    traces = read_table(spec, "traces").sort_by("trace_id").to_pylist()
    assert [(r["trace_id"], r["decided_at"], r["span_count"]) for r in traces] == [
        ("t1", T + timedelta(seconds=10), 2),
        ("t2", T + timedelta(seconds=11), 2),
        ("t3", T + timedelta(seconds=12), 2),
    ]
    spans = read_table(spec, "spans").sort_by([("trace_id", "ascending"), ("source_offset", "ascending")]).to_pylist()
    assert [(r["trace_id"], r["span_id"], r["source_offset"], r["adjusted_count"]) for r in spans] == [
        ("t1", "s1", 5, 1.0),
        ("t1", "s1", 11, 1.0),
        ("t2", "s2", 6, 1.0),
        ("t3", "s3", 9, 1.0),
    ]
    logs = read_table(spec, "logs").sort_by([("source_offset", "ascending"), ("message", "ascending")]).to_pylist()
    assert [(r["source_offset"], r["message"], r["sample_rate"]) for r in logs] == [
        (7, "another line at offset 7", 1.0),
        (7, "line", 1.0),
        (8, "line", 1.0),
        (10, "line", 1.0),
    ]
