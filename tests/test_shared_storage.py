"""Shared storage: the pipeline on a PostgreSQL catalog with the warehouse on a real
S3-compatible server (MinIO), credentials from the environment; DuckDB reading S3;
maintenance checked by listing the bucket; an S3 outage mid-commit; two writers on one
table."""

import threading
import time
import uuid
from datetime import datetime, timezone

import pytest
import yaml

from pipelines import DEFAULT_SPEC
from pipelines.loader import parse_spec
from sinks.catalog import open_catalog
from sinks.maintenance import maintain, referenced_files
from tests.helpers import strip_traces, write_through_sink, embedded, ground_truth, read_table, sorted_rows

pytestmark = pytest.mark.storage


@pytest.fixture
def shared_spec(s3_server, postgres_server, monkeypatch):
    """A spec whose catalog is PostgreSQL and whose warehouse is a fresh S3 bucket; the
    credentials are ${VAR} references resolved from the environment."""
    if not s3_server.ready():
        s3_server.restart()
    suffix = uuid.uuid4().hex[:10]
    db, bucket = f"obs_{suffix}", f"obs-{suffix}"
    postgres_server.create_database(db)
    s3_server.create_bucket(bucket)
    monkeypatch.setenv("TEST_CATALOG_URI", postgres_server.sqlalchemy_url_for(db))
    monkeypatch.setenv("TEST_S3_KEY", s3_server.access_key)
    monkeypatch.setenv("TEST_S3_SECRET", s3_server.secret_key)
    d = strip_traces(yaml.safe_load(DEFAULT_SPEC.read_text()))
    d["storage"]["catalog"] = {
        "name": "obsflow", "uri": "${TEST_CATALOG_URI}", "warehouse": f"s3://{bucket}/warehouse",
        "properties": {"s3.endpoint": s3_server.endpoint, "s3.access-key-id": "${TEST_S3_KEY}",
                       "s3.secret-access-key": "${TEST_S3_SECRET}", "s3.region": s3_server.region,
                       "s3.path-style-access": "true"},
    }
    d["storage"]["commit"]["retry_seconds"] = 60
    return parse_spec(d)


def bucket_of(spec) -> str:
    return spec.storage.catalog.warehouse.split("/")[2]


def source_with_suffix(spec, count, topic_suffix="", seed=42, batch_size=500):
    src = embedded(spec, count, seed=seed, batch_size=batch_size)
    src.sources = [s.model_copy(update={"topic": s.topic + topic_suffix}) for s in spec.sources]
    return src


def write(spec, count, seed=42, topic_suffix="", max_rows=None, batch_size=500):
    src = source_with_suffix(spec, count, topic_suffix, seed, batch_size)
    return write_through_sink(spec, src, max_rows)


def test_pipeline_on_postgres_and_s3_writes_exact_rows(shared_spec, s3_server):
    from runners.bytewax.run import run
    from runners.job import RunRequest
    from tests.helpers import strip_traces, write_through_sink, START_MS

    run(RunRequest(spec=shared_spec, runner="bytewax", count=1200, start_ms=START_MS, rate_per_s=2000.0, batch_size=500))
    truth = ground_truth(embedded(shared_spec, 1200))
    assert read_table(shared_spec, "events").num_rows == truth.event_rows
    assert read_table(shared_spec, "logs").num_rows == truth.log_rows
    dl = read_table(shared_spec, "dead_letters")
    assert {(r["source_topic"], r["source_partition"], r["source_offset"]): r["reason"] for r in dl.to_pylist()} == truth.dead
    keys = s3_server.list_objects(bucket_of(shared_spec))
    assert any(k.startswith("warehouse/obs/events/data/") and k.endswith(".parquet") for k in keys)
    assert any(k.startswith("warehouse/obs/logs/metadata/") and k.endswith(".metadata.json") for k in keys)

    from runners.query import query
    _, rows = query(shared_spec, "SELECT (SELECT count(*) FROM obs.events), (SELECT count(*) FROM obs.logs)")
    assert rows == [(truth.event_rows, truth.log_rows)]


def test_credentials_never_appear_in_errors(shared_spec, monkeypatch, postgres_server):
    bad = shared_spec.storage.catalog.model_copy(update={"uri": postgres_server.sqlalchemy_url_for("obs_missing_db")})
    spec = shared_spec.model_copy(update={"storage": shared_spec.storage.model_copy(update={"catalog": bad})})
    with pytest.raises(ConnectionError) as e:
        open_catalog(spec.storage)
    assert postgres_server.password not in str(e.value)
    assert "python -m infra.postgres start" in str(e.value)
    monkeypatch.delenv("TEST_S3_SECRET")
    with pytest.raises(ValueError, match=r"storage.catalog.properties.s3.secret-access-key: refers to \$\{TEST_S3_SECRET\}"):
        open_catalog(shared_spec.storage)


def test_maintenance_on_s3_leaves_only_referenced_objects(shared_spec, s3_server):
    spec = shared_spec.model_copy(update={"storage": shared_spec.storage.model_copy(update={
        "maintenance": shared_spec.storage.maintenance.model_copy(update={"snapshot_max_age": __import__("datetime").timedelta(0),
                                                                           "orphan_min_age": __import__("datetime").timedelta(0)})})})
    write(spec, 1200, max_rows=100, batch_size=100)
    keys = ["source_topic", "source_partition", "source_offset", "event_index"]
    before = sorted_rows(read_table(spec, "events"), keys)
    listed_before = s3_server.list_objects(bucket_of(spec), "warehouse/obs/events/")
    reports = {r.table: r for r in maintain(spec, now=datetime.now(timezone.utc), tables=["events"], steps=("compact", "expire", "orphans"))}
    r = reports["obs.events"]
    assert r.compacted_partitions > 0 and r.expired_snapshots > 0 and r.orphan_files > 0
    table = open_catalog(spec.storage).load_table("obs.events")
    listed = {f"{bucket_of(spec)}/{k}" for k in s3_server.list_objects(bucket_of(spec), "warehouse/obs/events/")}
    assert listed == referenced_files(table)
    data_before = [k for k in listed_before if "/data/" in k]
    data_after = [k for k in listed if "/data/" in k]
    assert len(data_after) < len(data_before)
    assert sorted_rows(read_table(spec, "events"), keys) == before


def test_s3_outage_mid_commit_retries_and_loses_nothing(shared_spec, s3_server):
    spec = shared_spec
    outage = threading.Event()

    def flaky():
        time.sleep(1.0)
        s3_server.stop()
        outage.set()
        time.sleep(4.0)
        s3_server.start()

    th = threading.Thread(target=flaky)
    th.start()
    sink = write(spec, 2400, max_rows=150, batch_size=150)
    th.join()
    assert outage.is_set()
    assert sink.stats.retries > 0
    truth = ground_truth(embedded(spec, 2400))
    events = read_table(spec, "events")
    assert events.num_rows == truth.event_rows
    keys = ["source_topic", "source_partition", "source_offset", "event_index"]
    rows = events.select(keys).to_pylist()
    assert len({tuple(r.values()) for r in rows}) == len(rows)  # nothing twice


def test_two_writers_on_one_table_both_land(shared_spec):
    errors = []

    def writer(suffix):
        try:
            write(shared_spec, 800, topic_suffix=suffix, max_rows=50, batch_size=50)
        except Exception as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(s,)) for s in ("-a", "-b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    truth_a, truth_b = (ground_truth(source_with_suffix(shared_spec, 800, s)) for s in ("-a", "-b"))
    events = read_table(shared_spec, "events")
    assert events.num_rows == truth_a.event_rows + truth_b.event_rows
    topics = set(events.column("source_topic").to_pylist())
    assert topics == {"events-a", "events-b"}

