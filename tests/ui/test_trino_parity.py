"""The UI's panels give the same answers through Trino as through DuckDB, from the same SQL
text, over a run written to shared storage (PostgreSQL catalog + S3): every panel of every
page (and a trace, a session and an alert), with all time and with a bounded time range (so
the timestamp literals run in both)."""

from __future__ import annotations

import math
from datetime import datetime

import pytest

from runners.job import RunRequest
from tests.helpers import START_MS, shared_spec

pytestmark = [pytest.mark.ui, pytest.mark.trino, pytest.mark.storage]


@pytest.fixture(scope="module")
def shared(trino_server, trino_catalog_properties):
    spec = shared_spec(trino_catalog_properties)
    from runners.bytewax.run import run
    from runners.stats import STATS

    # The session's shared catalog may hold tables of earlier tests (test_shared_storage,
    # test_trino_queries) whose positions cover this generator's offsets: this run would read
    # nothing and the newest commit's counters would be theirs. Start from empty tables.
    from sinks.catalog import open_catalog

    cat = open_catalog(spec.storage, create=False)
    ns = spec.storage.namespace
    if ns in {n[0] for n in cat.list_namespaces()}:
        for ident in cat.list_tables(ns):
            cat.drop_table(ident)
    STATS.reset()  # this run's counters only (tests before it may have run jobs in this process)
    run(RunRequest(spec=spec, runner="bytewax", count=2000, start_ms=START_MS, rate_per_s=2000.0, batch_size=500))
    from sinks.iceberg import run_counters

    return spec, trino_server, run_counters(STATS)


def _norm(v):
    if isinstance(v, float):
        return round(v, 6) if math.isfinite(v) else None
    if isinstance(v, list):
        return tuple(_norm(x) for x in v)
    if isinstance(v, dict):
        return tuple(sorted((k, _norm(x)) for k, x in v.items()))
    if isinstance(v, str) and len(v) >= 25 and v[10] == "T" and v.endswith("+00:00"):
        return datetime.fromisoformat(v)  # 12:00:00.500000+00:00 and 12:00:00.5+00:00 are one time
    return v


def _rows(data: dict) -> list[tuple]:
    """The rows, normalized and sorted, without the columns that depend on when the
    request ran (seconds since the last commit / event: "now" differs between the two)."""
    keep = [i for i, c in enumerate(data["columns"]) if not c.startswith("seconds_since_")]
    return sorted((tuple(_norm(r[i]) for i in keep) for r in data["rows"]), key=repr)


def test_every_panel_same_in_trino_and_duckdb(shared):
    from starlette.testclient import TestClient

    from ui.app import create_app
    from ui.data import Reader

    spec, server, counters = shared
    duck = TestClient(create_app(spec, Reader(spec, "duckdb")))
    tri = TestClient(create_app(spec, Reader(spec, "trino", server.url)))
    tid = duck.get("/api/v1/traces/search", params={"range": "all", "limit": "1"}).json()["rows"][0][0]
    sid = duck.get("/api/v1/sessions/list", params={"range": "all"}).json()["rows"][0][0]
    fp = duck.get("/api/v1/alerts/changes", params={"range": "all"}).json()["rows"][0][4]
    paths = [f"/api/v1/{p}" for p in ("health", "services", "traces", "logs", "alerts", "product", "sessions")]
    paths += [f"/api/v1/traces/{tid}", f"/api/v1/sessions/{sid}", f"/api/v1/alerts/{fp}"]
    compared = 0
    for params in ({"range": "all"}, {"from": "2000-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z"}):
        for path in paths:
            a, b = duck.get(path, params=params), tri.get(path, params=params)
            assert a.status_code == b.status_code == 200, (path, a.text[:300], b.text[:300])
            for pa, pb in zip(a.json()["panels"], b.json()["panels"], strict=True):
                assert pa["sql"] == pb["sql"]
                assert pb["backend"] == "trino"
                assert pa["columns"] == pb["columns"], (path, pa["id"])
                assert _rows(pa) == _rows(pb), (path, pa["id"])
                compared += pa["row_count"] > 0
    assert compared >= 40  # most panels hold rows on this run
    # the commits panel reads snapshot summaries through the PostgreSQL catalog too
    commits = duck.get("/api/v1/health/commits").json()
    events = [dict(zip(commits["columns"], r)) for r in commits["rows"] if r[1] == "events"]
    assert sum(r["source_records_since_previous_commit"] for r in events) == 2000
    # and the job's counters in them (obsflow.stats): the newest equal the run's own
    got = duck.get("/api/v1/health/pipeline_counters", params={"range": "all"}).json()
    newest = dict(zip(got["columns"], got["rows"][-1]))
    assert (
        newest["records_in"],
        newest["records_accepted"],
        newest["records_dead_lettered"],
        newest["records_dropped"],
    ) == (counters["records_in"], counters["records_accepted"], counters["records_dead"], counters["records_dropped"])
    assert counters["records_in"] == 8000  # 2,000 per source
