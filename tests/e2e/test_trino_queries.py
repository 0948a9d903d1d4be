"""Trino reads what the pipeline writes: a run on the shared catalog (PostgreSQL + S3)
that Trino's Iceberg connector reads; exact row counts, a time-range query, a join of
logs and spans by trace id, and the saved queries giving the same answers in Trino and
in DuckDB (`obsflow query`)."""

from datetime import datetime, UTC
from decimal import Decimal

import pytest

from runners.job import RunRequest
from runners.query import query, saved_query
from tests.helpers import START_MS, read_table, shared_spec

pytestmark = [pytest.mark.trino, pytest.mark.storage]


@pytest.fixture(scope="module")
def landed(trino_server, trino_catalog_properties):
    spec = shared_spec(trino_catalog_properties)
    from runners.bytewax.run import run

    run(RunRequest(spec=spec, runner="bytewax", count=2000, start_ms=START_MS, rate_per_s=2000.0, batch_size=500))
    return spec, trino_server


def trino(server, sql):
    return server.query(sql, schema="obs")


def norm(rows):
    out = []
    for r in rows:
        out.append(tuple(float(v) if isinstance(v, (Decimal, float)) else v for v in r))
    return out


def test_row_counts_match_what_was_written(landed):
    spec, server = landed
    for table in ("events", "logs", "spans", "traces", "metrics", "dead_letters"):
        n = read_table(spec, table).num_rows
        assert n > 0, table
        assert trino(server, f"SELECT count(*) FROM iceberg.obs.{table}") == [[n]], table


def test_time_range_query(landed):
    spec, server = landed
    events = read_table(spec, "events").to_pylist()
    lo = datetime.fromtimestamp(START_MS / 1000 + 1, UTC)
    hi = datetime.fromtimestamp(START_MS / 1000 + 2, UTC)
    want = sum(1 for e in events if lo <= e["ts"] < hi)
    assert want > 0
    got = trino(
        server,
        f"SELECT count(*) FROM iceberg.obs.events WHERE ts >= from_iso8601_timestamp('{lo.isoformat()}') "
        f"AND ts < from_iso8601_timestamp('{hi.isoformat()}')",
    )
    assert got == [[want]]


def test_join_logs_and_spans_by_trace_id(landed):
    spec, server = landed
    spans = read_table(spec, "spans").to_pylist()
    logs = read_table(spec, "logs").to_pylist()
    span_traces = {}
    for s in spans:
        span_traces[s["trace_id"]] = span_traces.get(s["trace_id"], 0) + 1
    want = sum(span_traces.get(l["trace_id"], 0) for l in logs if l["trace_id"])
    assert want > 0
    got = trino(server, "SELECT count(*) FROM iceberg.obs.logs l JOIN iceberg.obs.spans s ON l.trace_id = s.trace_id")
    assert got == [[want]]


@pytest.mark.parametrize(
    "name", ["funnel_dropoff", "error_rate_by_service", "p99_latency_by_service", "time_to_convert"]
)
def test_saved_queries_agree_in_trino_and_duckdb(landed, name):
    spec, server = landed
    sql = saved_query(name)
    in_trino = norm(trino(server, sql))
    _, in_duckdb = query(spec, sql)
    assert in_trino, name
    assert in_trino == norm(in_duckdb)
