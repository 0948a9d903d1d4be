"""Shared storage: the pipeline on a PostgreSQL catalog with the warehouse on a real
S3-compatible server (MinIO), credentials from the environment; DuckDB reading S3;
maintenance checked by listing the bucket; an S3 outage mid-commit; two writers on one
table."""

import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from datetime import UTC, datetime, timedelta

import pytest
import yaml

from core.stats import RunStats
from pipelines import DEFAULT_SPEC
from pipelines.loader import parse_spec
from sinks.catalog import open_catalog
from sinks.maintenance import maintain, referenced_files
from tests.helpers import (
    strip_traces,
    write_through_sink,
    embedded,
    ground_truth,
    CLUSTER_RUN,
    obsflow_cli,
    read_table,
    sorted_rows,
)

pytestmark = pytest.mark.storage


@pytest.fixture
def shared_spec_data(s3_server, postgres_server, monkeypatch) -> dict:
    """A spec (as data) whose catalog is PostgreSQL and whose warehouse is a fresh S3
    bucket; the credentials are ${VAR} references resolved from the environment."""
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
        "name": "obsflow",
        "uri": "${TEST_CATALOG_URI}",
        "warehouse": f"s3://{bucket}/warehouse",
        "properties": {
            "s3.endpoint": s3_server.endpoint,
            "s3.access-key-id": "${TEST_S3_KEY}",
            "s3.secret-access-key": "${TEST_S3_SECRET}",
            "s3.region": s3_server.region,
            "s3.path-style-access": "true",
        },
    }
    d["storage"]["commit"]["retry_seconds"] = "60s"
    return d


@pytest.fixture
def shared_spec(shared_spec_data):
    return parse_spec(shared_spec_data)


def bucket_of(spec) -> str:
    return spec.storage.catalog.warehouse.split("/")[2]


def source_with_suffix(spec, count, topic_suffix="", seed=42, batch_size=500):
    src = embedded(spec, count, seed=seed, batch_size=batch_size)
    src.sources = [s.model_copy(update={"topic": s.topic + topic_suffix}) for s in spec.sources]
    return src


def write(spec, count, seed=42, topic_suffix="", max_rows=None, batch_size=500):
    src = source_with_suffix(spec, count, topic_suffix, seed, batch_size)
    return write_through_sink(spec, src, max_rows)


def test_cli_cluster_forks_onto_postgres_and_s3_exact_rows(shared_spec_data, s3_server, tmp_path):
    """`obsflow run --processes 2` on a PostgreSQL catalog and an S3 warehouse: the launcher
    opens both (it creates the tables) and then forks its processes, which write to S3 and
    commit to PostgreSQL themselves; the tables hold exactly the generated records."""
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(shared_spec_data))  # credentials stay ${VAR} references
    run = obsflow_cli(
        *CLUSTER_RUN,
        "--spec",
        str(path),
        "--count",
        "1200",
        "--batch-size",
        "500",
        "--no-progress",
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    assert "cluster finished" in run.stdout and "(ok)" in run.stdout
    spec = parse_spec(shared_spec_data)
    truth = ground_truth(embedded(spec, 1200))
    assert read_table(spec, "events").num_rows == truth.event_rows
    assert read_table(spec, "logs").num_rows == truth.log_rows
    dl = read_table(spec, "dead_letters")
    assert {
        (r["source_topic"], r["source_partition"], r["source_offset"]): r["reason"] for r in dl.to_pylist()
    } == truth.dead
    assert any(k.startswith("warehouse/obs/events/data/") for k in s3_server.list_objects(bucket_of(spec)))


def test_pipeline_on_postgres_and_s3_writes_exact_rows(shared_spec, s3_server):
    from runners.bytewax.run import run
    from runners.job import RunRequest
    from tests.helpers import START_MS

    run(
        RunRequest(spec=shared_spec, runner="bytewax", count=1200, start_ms=START_MS, rate_per_s=2000.0, batch_size=500)
    )
    truth = ground_truth(embedded(shared_spec, 1200))
    assert read_table(shared_spec, "events").num_rows == truth.event_rows
    assert read_table(shared_spec, "logs").num_rows == truth.log_rows
    dl = read_table(shared_spec, "dead_letters")
    assert {
        (r["source_topic"], r["source_partition"], r["source_offset"]): r["reason"] for r in dl.to_pylist()
    } == truth.dead
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
    with pytest.raises(
        ValueError, match=r"storage.catalog.properties.s3.secret-access-key: refers to \$\{TEST_S3_SECRET\}"
    ):
        open_catalog(shared_spec.storage)


def test_maintenance_on_s3_leaves_only_referenced_objects(shared_spec, s3_server):
    spec = shared_spec.model_copy(
        update={
            "storage": shared_spec.storage.model_copy(
                update={
                    "maintenance": shared_spec.storage.maintenance.model_copy(
                        update={
                            "snapshot_max_age": __import__("datetime").timedelta(0),
                            "orphan_min_age": __import__("datetime").timedelta(0),
                        }
                    )
                }
            )
        }
    )
    write(spec, 1200, max_rows=100, batch_size=100)
    keys = ["source_topic", "source_partition", "source_offset", "event_index"]
    before = sorted_rows(read_table(spec, "events"), keys)
    listed_before = s3_server.list_objects(bucket_of(spec), "warehouse/obs/events/")
    reports = {
        r.table: r
        for r in maintain(spec, now=datetime.now(UTC), tables=["events"], steps=("compact", "expire", "orphans"))
    }
    r = reports["obs.events"]
    assert r.compacted_partitions > 0 and r.expired_snapshots > 0 and r.orphan_files > 0
    table = open_catalog(spec.storage).load_table("obs.events")
    listed = {f"{bucket_of(spec)}/{k}" for k in s3_server.list_objects(bucket_of(spec), "warehouse/obs/events/")}
    assert listed == referenced_files(table)
    data_before = [k for k in listed_before if "/data/" in k]
    data_after = [k for k in listed if "/data/" in k]
    assert len(data_after) < len(data_before)
    assert sorted_rows(read_table(spec, "events"), keys) == before


def _stop_when_metadata_is_written(table, on_manifest):
    """Make ``table``'s FileIO call ``on_manifest()`` when the first manifest of a commit
    is about to be written, i.e. after the commit uploaded its data files and before any
    metadata: the moment an outage leaves a commit half done."""
    io = table.io
    base = type(io)
    fired = []

    class HookedIO(base):
        def new_output(self, location):
            if not fired and "/metadata/" in location and location.endswith(".avro"):
                fired.append(location)
                on_manifest()
            return base.new_output(self, location)

    io.__class__ = HookedIO


def _catalog_pointer(spec, table):
    """The metadata location the catalog database (PostgreSQL) holds for ``obs.<table>``:
    readable while S3 is down."""
    from sqlalchemy import text

    cat = open_catalog(spec.storage)
    try:
        with cat.engine.connect() as c:
            return c.execute(
                text("SELECT metadata_location FROM iceberg_tables WHERE table_namespace = 'obs' AND table_name = :t"),
                {"t": table},
            ).scalar_one()
    finally:
        cat.engine.dispose()


def _state(spec, table):
    t = open_catalog(spec.storage).load_table(f"obs.{table}")
    snap = t.current_snapshot()
    return len(t.snapshots()), int(snap.summary.additional_properties.get("total-records", 0)) if snap else 0


def test_s3_outage_mid_commit_retries_and_loses_nothing(shared_spec, s3_server):
    """S3 is stopped by the committer thread itself, between the data files and the
    manifest of the third commit to obs.events; while it is down the catalog still points
    at the snapshot before; once it is back, and before the sink retries, the table shows
    exactly the state before that commit (its uploaded data files are not visible); the
    retry then lands it, and at the end every row is there once."""
    from pipelines.graph import PipelineGraph, write_plan
    from sinks.iceberg import IcebergSink

    spec = shared_spec
    seen = {}
    stopped, restarted = threading.Event(), threading.Event()

    class OutageSink(IcebergSink):
        events_commits = 0

        def _commit_now(self, name, p):
            if name == "events":
                self.events_commits += 1
                if self.events_commits == 3:
                    table = self.tables[name]
                    snap = table.current_snapshot()
                    seen["before"] = (len(table.snapshots()), int(snap.summary.additional_properties["total-records"]))
                    seen["rows"] = p.rows
                    seen["pointer"] = table.metadata_location

                    def outage():
                        s3_server.stop()
                        stopped.set()

                    _stop_when_metadata_is_written(table, outage)
            return super()._commit_now(name, p)

        def _reload(self, name, table):
            # the failed commit is retried only after the table was read with S3 back up, so
            # that read sees exactly what the half-done commit left visible
            if stopped.is_set() and not restarted.is_set():
                restarted.wait(300)
            return super()._reload(name, table)

    def restart():
        stopped.wait(300)
        seen["pointer_during"] = _catalog_pointer(spec, "events")
        seen["sink_retries_during"] = sink.stats.retries
        time.sleep(3.0)
        s3_server.start()
        seen["state_after_start"] = _state(spec, "events")
        restarted.set()

    graph = PipelineGraph(spec, counters=RunStats())
    sink = OutageSink(spec, graph.table_names, plan=write_plan(spec), counters=RunStats())
    sink.max_rows = 150
    th = threading.Thread(target=restart)
    th.start()
    try:
        src = source_with_suffix(spec, 2400, batch_size=150)
        for part in src.partitions():
            for raw in src.batches(part):
                raw.source = part.source
                sink.write(graph.process(raw))
        sink.close()
    finally:
        stopped.set()
        th.join()
        if not s3_server.ready():
            s3_server.start()
    assert restarted.is_set() and sink.events_commits > 3
    assert sink.stats.retries > 0
    # while S3 was down the catalog still pointed at the snapshot before the commit
    assert seen["pointer_during"] == seen["pointer"]
    before_n, before_rows = seen["before"]
    assert seen["rows"] > 0
    assert seen["state_after_start"] == (before_n, before_rows)
    # the retried commit landed whole, as the snapshot right after the one it was based on
    snaps = sorted(open_catalog(spec.storage).load_table("obs.events").snapshots(), key=lambda x: x.sequence_number)
    props = snaps[before_n].summary.additional_properties
    assert (int(props["added-records"]), int(props["total-records"])) == (seen["rows"], before_rows + seen["rows"])
    truth = ground_truth(embedded(spec, 2400))
    keys = ["source_topic", "source_partition", "source_offset", "event_index"]
    events = read_table(spec, "events")
    assert events.num_rows == truth.event_rows
    rows = events.select(keys).to_pylist()
    assert len({tuple(r.values()) for r in rows}) == len(rows)  # nothing twice
    logs = read_table(spec, "logs")
    assert logs.num_rows == truth.log_rows
    assert len(set(zip(*(logs.column(k).to_pylist() for k in keys[:3])))) == truth.log_rows
    dl = read_table(spec, "dead_letters")
    assert dl.num_rows == len(truth.dead)
    assert {
        (r["source_topic"], r["source_partition"], r["source_offset"]): r["reason"] for r in dl.to_pylist()
    } == truth.dead


def test_credentials_never_appear_in_logs_or_errors_during_an_outage(
    shared_spec, s3_server, postgres_server, caplog, capfd
):
    """A run whose S3 server goes away: the commit retries (logged), gives up after
    commit.retry_seconds with StorageUnavailable; neither the S3 secret (nor its key id)
    nor the PostgreSQL password is in any log record, the error or the process output."""
    import logging

    from pipelines.graph import PipelineGraph, write_plan
    from sinks.iceberg import IcebergSink, StorageUnavailable

    spec = shared_spec.model_copy(
        update={
            "storage": shared_spec.storage.model_copy(
                update={"commit": shared_spec.storage.commit.model_copy(update={"retry_seconds": timedelta(seconds=4)})}
            )
        }
    )
    caplog.set_level(logging.DEBUG)
    graph = PipelineGraph(spec, counters=RunStats())
    sink = IcebergSink(spec, graph.table_names, plan=write_plan(spec), counters=RunStats())
    src = source_with_suffix(spec, 300, batch_size=300)
    outs = []  # processed while S3 is up: the event dedupe reads the table on a partition's first batch
    for part in src.partitions():
        for raw in src.batches(part):
            raw.source = part.source
            outs.append(graph.process(raw))
    s3_server.stop()
    try:
        with pytest.raises(StorageUnavailable) as err:
            for out in outs:
                sink.write(out)
            sink.close()
        # and a catalog that cannot be opened (its database missing) says so without the password
        bad = spec.storage.catalog.model_copy(update={"uri": postgres_server.sqlalchemy_url_for("obs_no_such_db")})
        with pytest.raises(ConnectionError) as err2:
            open_catalog(spec.storage.model_copy(update={"catalog": bad}))
    finally:
        s3_server.start()
    assert "storage or catalog unavailable for 4s" in str(err.value)
    assert sink.stats.retries > 0
    assert any("retrying" in r.getMessage() for r in caplog.records)
    out, errout = capfd.readouterr()
    everything = "\n".join(
        [
            str(err.value),
            repr(err.value),
            str(err2.value),
            caplog.text,
            out,
            errout,
            *(r.getMessage() for r in caplog.records),
        ]
    )
    for secret in (s3_server.secret_key, s3_server.access_key, postgres_server.password):
        assert secret not in everything


def test_s3_secret_reaches_duckdb_verbatim_whatever_it_holds():
    """runners.query quotes the credentials as SQL string literals: a secret holding quotes,
    backslashes or SQL is stored as given, not run."""
    import duckdb
    import duckdb_extension_httpfs

    from runners.query import _extension, _s3_secret

    con = duckdb.connect(config={"allow_unredacted_secrets": True})
    con.execute(f"LOAD '{_extension(duckdb_extension_httpfs)}'")
    secret = "se'cr\\et'); DROP TABLE x; --"
    _s3_secret(
        con,
        {
            "s3.access-key-id": "AK'ID",
            "s3.secret-access-key": secret,
            "s3.endpoint": "http://127.0.0.1:9000",
            "s3.path-style-access": "true",
        },
    )
    (row,) = con.execute("SELECT secret_string FROM duckdb_secrets(redact=false) WHERE name = 'obsflow_s3'").fetchall()
    assert f";secret={secret};" in row[0] and ";key_id=AK'ID;" in row[0] and ";url_style=path" in row[0]
    (red,) = con.execute("SELECT secret_string FROM duckdb_secrets() WHERE name = 'obsflow_s3'").fetchall()
    assert secret not in red[0]


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


EXAMPLE = Path(__file__).resolve().parents[2] / "pipelines" / "examples" / "shared-storage.yaml"


def test_example_shared_storage_spec_runs_on_postgres_and_s3(s3_server, postgres_server, tmp_path):
    """pipelines/examples/shared-storage.yaml (issue 13.6), loaded and run as a user would:
    a missing bucket is one line naming it and how to create it; `python -m infra.s3
    create-bucket --spec` creates it; the run then writes the tables, which `obsflow
    query` reads; `python -m infra.trino start --spec` takes its nine settings from it."""
    import os

    from infra.trino import settings_from_spec
    from pipelines.loader import load_spec

    example = yaml.safe_load(EXAMPLE.read_text())
    default = yaml.safe_load(DEFAULT_SPEC.read_text())
    assert {**example, "storage": {**example["storage"], "catalog": None}} == {
        **default,
        "storage": {**default["storage"], "catalog": None},
    }  # only the catalog differs
    if not s3_server.ready():
        s3_server.restart()
    suffix = uuid.uuid4().hex[:10]
    db, bucket = f"ex_{suffix}", f"ex-{suffix}"
    postgres_server.create_database(db)
    env = {
        **os.environ,
        "OBSFLOW_CATALOG_URI": postgres_server.sqlalchemy_url_for(db),
        "OBSFLOW_S3_BUCKET": bucket,
        "OBSFLOW_S3_ENDPOINT": s3_server.endpoint,
        "OBSFLOW_S3_ACCESS_KEY": s3_server.access_key,
        "OBSFLOW_S3_SECRET_KEY": s3_server.secret_key,
        "OBSFLOW_CACHE": str(tmp_path / "cache"),
    }

    def sh(*argv):
        return subprocess.run(
            [sys.executable, "-m", *argv],
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
            cwd=Path(__file__).resolve().parents[2],
        )

    run = ["runners.cli", "run", "--spec", str(EXAMPLE), "--count", "300", "--batch-size", "300", "--no-progress"]
    r = sh(*run)
    assert r.returncode == 2, r.stderr[-3000:]
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert lines == [
        f"obsflow: S3 bucket {bucket!r} of storage.catalog.warehouse (s3://{bucket}/warehouse) does not exist "
        f"at {s3_server.endpoint}: create it, e.g. `python -m infra.s3 create-bucket --spec {EXAMPLE}` "
        f"(uses the spec's S3 settings) or `aws s3 mb s3://{bucket}`"
    ]
    c = sh("infra.s3", "create-bucket", "--spec", str(EXAMPLE))
    assert c.returncode == 0 and c.stdout == f"bucket {bucket!r} created at {s3_server.endpoint}\n", c.stderr
    assert (
        sh("infra.s3", "create-bucket", "--spec", str(EXAMPLE)).stdout
        == f"bucket {bucket!r} already exists at {s3_server.endpoint}\n"
    )

    r = sh(*run)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert "reconciliation: in = accepted + dead-lettered + dropped: yes" in r.stdout
    for k in (
        "OBSFLOW_CATALOG_URI",
        "OBSFLOW_S3_BUCKET",
        "OBSFLOW_S3_ENDPOINT",
        "OBSFLOW_S3_ACCESS_KEY",
        "OBSFLOW_S3_SECRET_KEY",
    ):
        os.environ[k] = env[k]
    try:
        spec = load_spec(EXAMPLE)
        n_logs = read_table(spec, "logs").num_rows
        assert n_logs > 0 and s3_server.list_objects(bucket, "warehouse/obs/logs/data/")
        q = sh("runners.cli", "query", "SELECT count(*) AS n FROM obs.logs", "--spec", str(EXAMPLE), "--format", "csv")
        assert q.returncode == 0 and q.stdout.split() == ["n", str(n_logs)], q.stderr
        assert settings_from_spec(str(EXAMPLE)) == {
            "jdbc_url": postgres_server.jdbc_url_for(db),
            "jdbc_user": postgres_server.user,
            "jdbc_password": postgres_server.password,
            "catalog_id": "obsflow",
            "warehouse": f"s3://{bucket}/warehouse",
            "s3_endpoint": s3_server.endpoint,
            "s3_access_key": s3_server.access_key,
            "s3_secret_key": s3_server.secret_key,
            "s3_region": "us-east-1",
        }
    finally:
        for k in (
            "OBSFLOW_CATALOG_URI",
            "OBSFLOW_S3_BUCKET",
            "OBSFLOW_S3_ENDPOINT",
            "OBSFLOW_S3_ACCESS_KEY",
            "OBSFLOW_S3_SECRET_KEY",
        ):
            os.environ.pop(k, None)


def test_dedupe_seed_during_an_outage_fails_naming_the_table_without_credentials(
    shared_spec, s3_server, postgres_server, caplog
):
    """The event dedupe reads a partition's held ids from the table on its first batch; with
    S3 gone it retries for commit.retry_seconds, then raises StorageUnavailable naming the
    table and the partition, with no S3 secret or PostgreSQL password in it or in the log."""
    import logging

    from pipelines.graph import PipelineGraph, write_plan
    from sinks.iceberg import IcebergSink, StorageUnavailable

    spec = shared_spec.model_copy(
        update={
            "storage": shared_spec.storage.model_copy(
                update={"commit": shared_spec.storage.commit.model_copy(update={"retry_seconds": timedelta(seconds=2)})}
            )
        }
    )
    caplog.set_level(logging.DEBUG)
    graph = PipelineGraph(spec, counters=RunStats())
    IcebergSink(spec, graph.table_names, plan=write_plan(spec), counters=RunStats()).close()  # the tables exist
    src = source_with_suffix(spec, 300, batch_size=300)
    part = next(p for p in src.partitions() if p.source == "events")
    raw = next(iter(src.batches(part)))
    raw.source = part.source
    s3_server.stop()
    try:
        with pytest.raises(StorageUnavailable) as err:
            graph.process(raw)
    finally:
        s3_server.start()
    message = str(err.value)
    assert "for the dedupe: storage or catalog unavailable for 2s" in message
    assert f"{spec.storage.namespace}.events" in message
    assert any("dedupe: reading events failed" in r.getMessage() for r in caplog.records)
    for secret in (s3_server.secret_key, s3_server.access_key, postgres_server.password):
        assert secret not in message and secret not in caplog.text
