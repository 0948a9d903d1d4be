"""Trino reads what pyiceberg writes: a day-partitioned table in the shared JDBC catalog on S3."""

from __future__ import annotations

import datetime as dt
import json
import urllib.request

import pytest

pytestmark = pytest.mark.trino

N = 500
START = dt.datetime(2024, 3, 1, tzinfo=dt.UTC)


def _rows() -> dict[str, list]:
    """500 deterministic events spread over 5 days (so 5 partitions)."""
    ts = [START + dt.timedelta(minutes=17 * i) for i in range(N)]
    return {
        "ts": ts,
        "user_id": [f"u{i % 37:02d}" for i in range(N)],
        "kind": [("view", "click", "buy")[i % 3] for i in range(N)],
        "amount": [round((i * 7919) % 1000 / 10, 1) for i in range(N)],
    }


@pytest.fixture
def events_table(trino_catalog):
    import pyarrow as pa
    from pyiceberg.partitioning import PartitionField, PartitionSpec
    from pyiceberg.schema import Schema
    from pyiceberg.transforms import DayTransform
    from pyiceberg.types import DoubleType, NestedField, StringType, TimestamptzType

    schema = Schema(
        NestedField(1, "ts", TimestamptzType(), required=True),
        NestedField(2, "user_id", StringType(), required=True),
        NestedField(3, "kind", StringType(), required=True),
        NestedField(4, "amount", DoubleType(), required=True),
    )
    spec = PartitionSpec(PartitionField(source_id=1, field_id=1000, transform=DayTransform(), name="ts_day"))
    trino_catalog.create_namespace_if_not_exists("obs")
    if trino_catalog.table_exists("obs.t"):
        trino_catalog.drop_table("obs.t")
    table = trino_catalog.create_table("obs.t", schema=schema, partition_spec=spec)
    data = _rows()
    arrow = pa.Table.from_pydict(data, schema=schema.as_arrow())
    table.append(arrow)
    yield table, data
    trino_catalog.drop_table("obs.t")


def test_server_reports_started(trino_server):
    with urllib.request.urlopen(f"{trino_server.url}/v1/info", timeout=5) as resp:
        info = json.loads(resp.read())
    assert info["starting"] is False
    assert info["nodeVersion"]["version"] == trino_server.version
    assert trino_server.host == "127.0.0.1"
    assert ["iceberg"] in trino_server.query("SHOW CATALOGS")


def test_trino_reads_pyiceberg_table(trino_server, events_table):
    table, data = events_table

    assert trino_server.query("SELECT count(*) FROM iceberg.obs.t") == [[N]]
    assert ["obs"] in trino_server.query("SHOW SCHEMAS FROM iceberg")
    assert ["t"] in trino_server.query("SHOW TABLES FROM iceberg.obs")

    # A filtered aggregate equal to the value computed in Python.
    cutoff = START + dt.timedelta(days=2)
    expected_n = sum(1 for ts, k in zip(data["ts"], data["kind"]) if k == "buy" and ts >= cutoff)
    expected_sum = sum(a for ts, k, a in zip(data["ts"], data["kind"], data["amount"]) if k == "buy" and ts >= cutoff)
    [[n, total]] = trino_server.query(
        "SELECT count(*), sum(amount) FROM iceberg.obs.t "
        "WHERE kind = 'buy' AND ts >= TIMESTAMP '2024-03-03 00:00:00 UTC'"
    )
    assert n == expected_n and n > 0
    assert total == pytest.approx(expected_sum, abs=1e-9)

    # Group by the partition day: one row per day, counts matching Python.
    by_day: dict[dt.date, int] = {}
    for ts in data["ts"]:
        by_day[ts.date()] = by_day.get(ts.date(), 0) + 1
    rows = trino_server.query("SELECT CAST(ts AS date) AS d, count(*) FROM iceberg.obs.t GROUP BY 1 ORDER BY 1")
    assert {d: c for d, c in rows} == by_day

    # Trino sees pyiceberg's snapshot and the day partitions.
    snap = table.current_snapshot()
    snaps = trino_server.query('SELECT snapshot_id, operation FROM iceberg.obs."t$snapshots"')
    assert snaps == [[snap.snapshot_id, "append"]]
    [[partitions]] = trino_server.query('SELECT count(*) FROM iceberg.obs."t$partitions"')
    assert partitions == len(by_day)


def test_connect_with_schema(trino_server, events_table):
    conn = trino_server.connect(schema="obs")
    try:
        cur = conn.cursor()
        cur.execute("SELECT max(amount), min(user_id) FROM t")
        [[max_amount, min_user]] = cur.fetchall()
    finally:
        conn.close()
    _, data = events_table
    assert max_amount == max(data["amount"])
    assert min_user == min(data["user_id"])
