"""``obs.metrics`` gained a ``p75`` column (optional, after p50): a metrics table created
by an earlier version (no p75) gets it when the job opens the table, the rows written
before read back with p75 null, the rows written after with their p75, through pyiceberg
and through the UI's DuckDB reader (the funnel's time-between-steps panel)."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest
import yaml

from pipelines import DEFAULT_SPEC
from pipelines.loader import parse_spec

pytestmark = pytest.mark.metrics


def _old_metrics_row(ws: dt.datetime, p50: float, p95: float) -> dict:
    return {
        "window_start": ws,
        "window_end": ws + dt.timedelta(hours=1),
        "resolution": "1h",
        "name": "funnel.step.time_ms",
        "kind": "summary",
        "labels": [("funnel", "signup"), ("step", "form_start"), ("step_index", "01")],
        "count": 4,
        "sum": 40.0,
        "min": 1.0,
        "max": 20.0,
        "last": None,
        "increase": None,
        "rate": None,
        "p50": p50,
        "p90": p95,
        "p95": p95,
        "p99": p95,
        "exemplar_trace_ids": [],
        "late_samples": 0,
    }


def test_metrics_table_of_an_earlier_version_gains_p75(tmp_path):
    from pyiceberg.io.pyarrow import schema_to_pyarrow
    from pyiceberg.schema import Schema

    from schemas.tables import METRICS
    from sinks.catalog import ensure_table, open_catalog
    from transforms.product.funnels import FunnelReport
    from transforms.product.config import signup_funnel
    from ui.data import Reader
    from ui.panels import TimeRange, funnel_panels

    d = yaml.safe_load(DEFAULT_SPEC.read_text())
    d["storage"]["catalog"]["warehouse"] = str(tmp_path / "wh")
    spec = parse_spec(d)
    ns = spec.storage.namespace
    catalog = open_catalog(spec.storage)
    catalog.create_namespace(ns)
    old = Schema(*[f for f in METRICS.schema.fields if f.name != "p75"])
    table = catalog.create_table(f"{ns}.metrics", schema=old, partition_spec=METRICS.partition_spec())
    w0 = dt.datetime(2026, 1, 1, 10, tzinfo=dt.UTC)
    table.append(pa.Table.from_pylist([_old_metrics_row(w0, 5.0, 19.0)], schema=schema_to_pyarrow(table.schema())))

    table = ensure_table(catalog, ns, METRICS)  # what the job does when it opens its tables
    field = table.schema().find_field("p75")
    assert not field.required and "null in rows written before" in field.doc
    # a later window of the funnel report, written by the current writer: step times 1..8 ms
    rep = FunnelReport([signup_funnel()], 3_600_000)
    end = int((w0 + dt.timedelta(hours=1)).timestamp() * 1000)
    for t in range(1, 9):
        rep.add(end + 60_000, "signup", 2, [0, t], False)
    rows = rep.close(None)
    assert "p75" in rows.column_names
    table.append(rows)
    got = {(r["window_start"], r["name"]): r for r in table.scan().to_arrow().to_pylist()}
    assert got[(w0, "funnel.step.time_ms")]["p75"] is None
    new = got[(w0 + dt.timedelta(hours=1), "funnel.step.time_ms")]
    # sorted times 1..8, lower order statistic at floor(q * 7): p50 = 4 (rank 3), p75 = 6 (rank 5), p95 = 7 (rank 6)
    assert (new["p50"], new["p75"], new["p95"]) == (4.0, 6.0, 7.0)
    assert ensure_table(catalog, ns, METRICS).schema() == table.refresh().schema()  # idempotent

    # the UI's panel over the evolved table: the old window's p75 is null, max() takes the new one
    reader = Reader(spec)
    (panel,) = [p for p in funnel_panels(["signup"], TimeRange(w0, None, "t", ())) if p.id == "step_time"]
    res = reader.run(panel.sql)
    assert res.columns == [
        "funnel",
        "step_index",
        "step",
        "sessions",
        "avg_ms",
        "worst_window_p50_ms",
        "worst_window_p75_ms",
        "worst_window_p95_ms",
    ]
    assert [tuple(r) for r in res.rows] == [
        ("signup", 1, "form_start", 12, round((40.0 + 36.0) / 12, 1), 5.0, 6.0, 19.0)
    ]
    early = reader.run(
        f"SELECT p75 FROM {ns}.metrics WHERE window_start = TIMESTAMP '2026-01-01 10:00:00 UTC' "
        "AND name = 'funnel.step.time_ms'"
    )
    assert early.rows == [(None,)]
    reader.close()
