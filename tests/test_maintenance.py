"""obsflow maintain on local tables: retention deletes exactly the expired rows (and
archives them when asked, once), compaction keeps every row in fewer files, snapshot
expiry and orphan removal free files, recorded positions survive, and maintenance
running beside a writer loses nothing."""

import os
import threading
import time
from datetime import datetime, timedelta, timezone

import pyarrow.compute as pc
import yaml

from pipelines import DEFAULT_SPEC
from pipelines.loader import parse_spec
from sinks.catalog import open_catalog
from sinks.iceberg import snapshot_offsets
from sinks.maintenance import maintain, referenced_files
from sources.generator import EmbeddedSource
from tests.helpers import strip_traces, write_through_sink, read_table, sorted_rows

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=timezone.utc)
DAY = 86400_000


def spec_for(warehouse, **storage):
    d = strip_traces(yaml.safe_load(DEFAULT_SPEC.read_text()))
    d["storage"]["catalog"]["warehouse"] = str(warehouse)
    d["storage"].update(storage)
    return parse_spec(d)


def load(spec, count, start_ms, topic_suffix="", max_rows=None, batch_size=500):
    """Run the graph into the sink directly (no engine needed for maintenance tests)."""
    sources = [s.model_copy(update={"topic": s.topic + topic_suffix}) for s in spec.sources]
    src = EmbeddedSource(sources, count=count, seed=3, start_ms=start_ms, rate_per_s=50.0, batch_size=batch_size)
    write_through_sink(spec, src, max_rows)


def ts_col(spec, table, col):
    return read_table(spec, table).column(col)


def test_retention_deletes_exactly_the_expired_rows_and_keeps_positions(tmp_path):
    spec = spec_for(tmp_path / "wh")
    load(spec, 400, int((NOW - timedelta(days=45)).timestamp() * 1000))
    load(spec, 400, int((NOW - timedelta(hours=2)).timestamp() * 1000), topic_suffix="-new")
    logs = ts_col(spec, "logs", "ts")
    events = ts_col(spec, "events", "ts")
    cut_logs = NOW - timedelta(days=30)
    keep_logs = pc.sum(pc.greater_equal(logs, cut_logs)).as_py()
    keep_events = events.length()  # 45 days < 90 days: nothing expires
    assert keep_logs < logs.length()
    cat = open_catalog(spec.storage)
    positions = snapshot_offsets(cat.load_table("obs.logs"))
    reports = {r.table: r for r in maintain(spec, now=NOW, steps=("retention",))}
    assert reports["obs.logs"].expired_rows == logs.length() - keep_logs
    assert reports["obs.events"].expired_rows == 0
    assert ts_col(spec, "logs", "ts").length() == keep_logs
    assert pc.min(ts_col(spec, "logs", "ts")).as_py() >= cut_logs
    assert ts_col(spec, "events", "ts").length() == keep_events
    assert snapshot_offsets(cat.load_table("obs.logs")) == positions


def test_archive_then_delete_once(tmp_path):
    spec = spec_for(tmp_path / "wh", tables={"logs": {"retention": "30d", "archive": {"retention": "365d"}}})
    load(spec, 400, int((NOW - timedelta(days=45)).timestamp() * 1000))
    before = read_table(spec, "logs")
    expired = before.filter(pc.less(before.column("ts"), NOW - timedelta(days=30)))
    assert expired.num_rows > 0
    r1 = {r.table: r for r in maintain(spec, now=NOW, steps=("retention",))}
    assert r1["obs.logs"].archived_rows == expired.num_rows == r1["obs.logs"].expired_rows
    archive = read_table(spec, "logs_archive")
    keys = ["source_topic", "source_partition", "source_offset"]
    assert sorted_rows(archive, keys) == sorted_rows(expired, keys)
    cat = open_catalog(spec.storage)
    assert "/archive/obs/logs_archive" in cat.load_table("obs.logs_archive").location()
    # a second run archives nothing again
    r2 = {r.table: r for r in maintain(spec, now=NOW + timedelta(hours=1), steps=("retention",))}
    assert r2["obs.logs"].archived_rows == 0
    assert read_table(spec, "logs_archive").num_rows == expired.num_rows


def test_compaction_keeps_every_row_in_fewer_files(tmp_path):
    spec = spec_for(tmp_path / "wh")
    load(spec, 2000, int((NOW - timedelta(hours=3)).timestamp() * 1000), max_rows=50, batch_size=50)
    keys = ["source_topic", "source_partition", "source_offset", "event_index"]
    before = sorted_rows(read_table(spec, "events"), keys)
    cat = open_catalog(spec.storage)
    positions = snapshot_offsets(cat.load_table("obs.events"))
    (r,) = maintain(spec, now=NOW, tables=["events"], steps=("compact",))
    assert r.compacted_partitions > 0
    assert r.files_after < r.files_before
    assert sorted_rows(read_table(spec, "events"), keys) == before
    assert snapshot_offsets(cat.load_table("obs.events")) == positions


def test_expiry_and_orphans_free_files_but_never_referenced_ones(tmp_path):
    spec = spec_for(tmp_path / "wh", maintenance={"snapshot_max_age": "0s", "orphan_min_age": "1h"})
    load(spec, 1000, int((NOW - timedelta(hours=3)).timestamp() * 1000), max_rows=100, batch_size=100)
    cat = open_catalog(spec.storage)
    table = cat.load_table("obs.logs")
    data_dir = tmp_path / "wh" / "obs" / "logs" / "data"
    stray_old = data_dir / "stray-old.parquet"
    stray_new = data_dir / "stray-new.parquet"
    stray_old.write_bytes(b"x" * 100)
    stray_new.write_bytes(b"y" * 50)
    old = time.time() - 7200
    os.utime(stray_old, (old, old))
    rows_before = table.scan().to_arrow().num_rows
    snaps_before = len(table.snapshots())
    assert snaps_before > 1
    # every file on disk is old enough to be judged (except the young stray)
    for p in (tmp_path / "wh" / "obs" / "logs").rglob("*"):
        if p.is_file() and p != stray_new:
            os.utime(p, (old, old))
    (r,) = maintain(spec, now=datetime.now(timezone.utc), tables=["logs"], steps=("expire", "orphans"))
    table = cat.load_table("obs.logs")
    assert r.expired_snapshots == snaps_before - 1 and len(table.snapshots()) == 1
    assert not stray_old.exists() and stray_new.exists()
    assert r.orphan_files >= 1 + (snaps_before - 1)  # the stray plus the files of expired snapshots
    on_disk = {str(p) for p in (tmp_path / "wh" / "obs" / "logs").rglob("*") if p.is_file()}
    assert referenced_files(table) <= on_disk | {str(stray_new)}
    assert table.scan().to_arrow().num_rows == rows_before


def test_maintenance_beside_a_writer_loses_nothing(tmp_path):
    spec = spec_for(tmp_path / "wh")
    load(spec, 800, int((NOW - timedelta(days=40)).timestamp() * 1000), max_rows=60, batch_size=60)
    stop = threading.Event()
    errors = []

    def maintain_loop():
        while not stop.is_set():
            try:
                maintain(spec, now=NOW, tables=["events"], steps=("compact", "expire"))
            except Exception as e:  # surfaced below
                errors.append(e)
                return

    th = threading.Thread(target=maintain_loop)
    th.start()
    try:
        load(spec, 800, int((NOW - timedelta(hours=1)).timestamp() * 1000), topic_suffix="-2", max_rows=40, batch_size=40)
    finally:
        stop.set()
        th.join()
    assert errors == []
    fresh = spec_for(tmp_path / "fresh")
    load(fresh, 800, int((NOW - timedelta(days=40)).timestamp() * 1000), max_rows=60, batch_size=60)
    load(fresh, 800, int((NOW - timedelta(hours=1)).timestamp() * 1000), topic_suffix="-2", max_rows=40, batch_size=40)
    keys = ["source_topic", "source_partition", "source_offset", "event_index"]
    assert sorted_rows(read_table(spec, "events"), keys) == sorted_rows(read_table(fresh, "events"), keys)
