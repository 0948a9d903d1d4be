"""obsflow maintain on local tables: retention deletes exactly the expired rows (and
archives them when asked, once), compaction keeps every row in fewer files, snapshot
expiry and orphan removal free files, recorded positions survive, and maintenance
running beside a writer loses nothing."""

import os
import threading
import time
from datetime import datetime, timedelta, UTC

import pyarrow as pa
import pyarrow.compute as pc
import yaml

from pipelines import DEFAULT_SPEC
from pipelines.loader import parse_spec
from sinks.catalog import open_catalog
from sinks.iceberg import snapshot_offsets
from sinks.maintenance import maintain, referenced_files
from sources.generator import EmbeddedSource
from tests.helpers import strip_traces, write_through_sink, read_table, sorted_rows

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
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
    (r,) = maintain(spec, now=datetime.now(UTC), tables=["logs"], steps=("expire", "orphans"))
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
        load(
            spec, 800, int((NOW - timedelta(hours=1)).timestamp() * 1000), topic_suffix="-2", max_rows=40, batch_size=40
        )
    finally:
        stop.set()
        th.join()
    assert errors == []
    fresh = spec_for(tmp_path / "fresh")
    load(fresh, 800, int((NOW - timedelta(days=40)).timestamp() * 1000), max_rows=60, batch_size=60)
    load(fresh, 800, int((NOW - timedelta(hours=1)).timestamp() * 1000), topic_suffix="-2", max_rows=40, batch_size=40)
    keys = ["source_topic", "source_partition", "source_offset", "event_index"]
    assert sorted_rows(read_table(spec, "events"), keys) == sorted_rows(read_table(fresh, "events"), keys)


# -- archiving by default, the archive's own retention, late rows ------------------------

LOG_KEYS = ["source_topic", "source_partition", "source_offset"]


def logs_at(spec, start, suffix):
    """Load 400 records per source starting at ``start``; return the log rows it added."""
    load(spec, 400, int(start.timestamp() * 1000), topic_suffix=suffix)
    rows = read_table(spec, "logs")
    topic = next(s.topic for s in spec.sources if s.signal == "log") + suffix
    return rows.filter(pc.equal(rows.column("source_topic"), topic))


def test_logs_are_archived_by_default_and_the_archive_keeps_a_year(tmp_path):
    spec = spec_for(tmp_path / "wh")  # the default spec: no storage.tables
    assert spec.storage.tables == {}
    old = logs_at(spec, NOW - timedelta(days=400), "-old")
    mid = logs_at(spec, NOW - timedelta(days=45), "-mid")
    new = logs_at(spec, NOW - timedelta(hours=2), "-new")
    assert old.num_rows > 0 and mid.num_rows > 0 and new.num_rows > 0
    r1 = {r.table: r for r in maintain(spec, now=NOW, steps=("retention",))}
    assert r1["obs.logs"].archived_rows == old.num_rows + mid.num_rows
    assert r1["obs.logs"].expired_rows == old.num_rows + mid.num_rows
    # the archive is maintained in the run that created it: rows past a year go
    assert r1["obs.logs_archive"].expired_rows == old.num_rows
    assert sorted_rows(read_table(spec, "logs_archive"), LOG_KEYS) == sorted_rows(mid, LOG_KEYS)
    assert sorted_rows(read_table(spec, "logs"), LOG_KEYS) == sorted_rows(new, LOG_KEYS)
    cat = open_catalog(spec.storage)
    assert "/archive/obs/logs_archive" in cat.load_table("obs.logs_archive").location()
    assert cat.load_table("obs.logs_archive").properties["obsflow.retention-seconds"] == str(365 * 86400)
    # 340 days later: the newest rows are archived, the 45-day-old ones are past a year
    r2 = {r.table: r for r in maintain(spec, now=NOW + timedelta(days=340), steps=("retention",))}
    assert r2["obs.logs"].archived_rows == new.num_rows == r2["obs.logs"].expired_rows
    assert r2["obs.logs_archive"].expired_rows == mid.num_rows
    assert sorted_rows(read_table(spec, "logs_archive"), LOG_KEYS) == sorted_rows(new, LOG_KEYS)
    assert read_table(spec, "logs").num_rows == 0


def test_archive_false_deletes_expired_logs_outright(tmp_path):
    spec = spec_for(tmp_path / "wh", tables={"logs": {"archive": False}})
    old = logs_at(spec, NOW - timedelta(days=45), "-old")
    new = logs_at(spec, NOW - timedelta(hours=2), "-new")
    r = {r.table: r for r in maintain(spec, now=NOW, steps=("retention",))}
    assert r["obs.logs"].archived_rows == 0 and r["obs.logs"].expired_rows == old.num_rows > 0
    assert "obs.logs_archive" not in r
    assert not open_catalog(spec.storage).table_exists("obs.logs_archive")
    assert sorted_rows(read_table(spec, "logs"), LOG_KEYS) == sorted_rows(new, LOG_KEYS)


def test_a_late_row_below_archived_through_is_archived_before_it_is_deleted(tmp_path):
    spec = spec_for(tmp_path / "wh")
    first = logs_at(spec, NOW - timedelta(days=45), "")
    r1 = {r.table: r for r in maintain(spec, now=NOW, steps=("retention",))}
    assert r1["obs.logs"].archived_rows == first.num_rows == r1["obs.logs"].expired_rows
    cat = open_catalog(spec.storage)
    marker = cat.load_table("obs.logs_archive").current_snapshot().summary.additional_properties
    assert marker["obsflow.archived-through"] == (NOW - timedelta(days=30)).isoformat()
    # between runs the pipeline commits late rows, 40 days old: below archived-through
    late = logs_at(spec, NOW - timedelta(days=40), "-late")
    assert late.num_rows > 0
    assert pc.max(late.column("ts")).as_py() < NOW - timedelta(days=30)
    r2 = {r.table: r for r in maintain(spec, now=NOW + timedelta(hours=1), steps=("retention",))}
    assert r2["obs.logs"].archived_rows == late.num_rows == r2["obs.logs"].expired_rows
    assert sorted_rows(read_table(spec, "logs_archive"), LOG_KEYS) == sorted_rows(
        pa.concat_tables([first, late]), LOG_KEYS
    )
    assert read_table(spec, "logs").num_rows == 0
    # and nothing again on a third run
    r3 = {r.table: r for r in maintain(spec, now=NOW + timedelta(hours=2), steps=("retention",))}
    assert (r3["obs.logs"].archived_rows, r3["obs.logs"].expired_rows) == (0, 0)
    assert read_table(spec, "logs_archive").num_rows == first.num_rows + late.num_rows


def test_a_late_commit_between_archive_and_delete_fails_the_delete_and_is_archived_on_retry(tmp_path):
    from pyiceberg.exceptions import CommitFailedException

    from schemas.tables import LOGS
    from sinks.maintenance import TableReport, _archive_expired, _delete, apply_retention, expired_filter

    spec = spec_for(tmp_path / "wh")
    first = logs_at(spec, NOW - timedelta(days=45), "")
    cat = open_catalog(spec.storage)
    hot = cat.load_table("obs.logs")
    expired, cutoff = expired_filter(spec, hot, LOGS, NOW)
    report = TableReport("obs.logs")
    _archive_expired(cat, spec, hot, LOGS, expired, cutoff, report)  # archive commit from snapshot S
    assert report.archived_rows == first.num_rows
    late = logs_at(spec, NOW - timedelta(days=50), "-late")  # the pipeline commits after S
    assert late.num_rows > 0
    try:
        _delete(cat, hot, expired, report)  # based on S: must not remove the unarchived late rows
        raise AssertionError("the delete based on a stale snapshot committed")
    except CommitFailedException:
        pass
    assert read_table(spec, "logs").num_rows == first.num_rows + late.num_rows
    assert report.expired_rows == 0
    # what maintain's retry does: archive only what is new, then delete against the fresh head
    report2 = TableReport("obs.logs")
    apply_retention(cat, spec, cat.load_table("obs.logs"), LOGS, NOW, report2)
    assert report2.archived_rows == late.num_rows
    assert report2.expired_rows == first.num_rows + late.num_rows
    assert sorted_rows(read_table(spec, "logs_archive"), LOG_KEYS) == sorted_rows(
        pa.concat_tables([first, late]), LOG_KEYS
    )
    assert read_table(spec, "logs").num_rows == 0


# -- metrics: retention by rollup resolution ----------------------------------------------


def test_metrics_retention_depends_on_the_resolution(tmp_path):
    from schemas.tables import METRICS
    from sinks.catalog import ensure_table

    spec = spec_for(tmp_path / "wh")
    cat = open_catalog(spec.storage)
    table = ensure_table(cat, "obs", METRICS)
    # (resolution, age in days, rows)
    layout = [
        ("1m", 10, 3),
        ("1m", 29, 2),
        ("1m", 31, 4),
        ("1m", 45, 5),
        ("1m", 500, 1),
        ("1h", 10, 2),
        ("1h", 45, 3),
        ("1h", 399, 4),
        ("1h", 401, 2),
        ("1h", 500, 3),
        ("5m", 10, 1),
        ("5m", 31, 2),
    ]
    schema = METRICS.arrow_schema()
    rows = []
    for res, age, n in layout:
        for k in range(n):
            ws = NOW - timedelta(days=age, minutes=k)
            rows.append(
                {
                    "window_start": ws,
                    "window_end": ws + timedelta(minutes=1 if res == "1m" else 60),
                    "resolution": res,
                    "name": f"m.{res}.{age}",
                    "kind": "counter",
                    "count": k,
                }
            )
    for chunk in (rows[: len(rows) // 2], rows[len(rows) // 2 :]):  # two commits, several files per partition
        table.append(pa.Table.from_pylist(chunk, schema=schema))
    (r,) = maintain(spec, now=NOW, tables=["metrics"], steps=("retention",))
    expired = {("1m", 31), ("1m", 45), ("1m", 500), ("1h", 401), ("1h", 500), ("5m", 31)}
    assert r.expired_rows == sum(n for res, age, n in layout if (res, age) in expired) == 17
    assert r.archived_rows == 0
    kept = read_table(spec, "metrics")
    got = {}
    for name in kept.column("name").to_pylist():
        got[name] = got.get(name, 0) + 1
    assert got == {f"m.{res}.{age}": n for res, age, n in layout if (res, age) not in expired}
    assert kept.num_rows == 15
    assert not cat.table_exists("obs.metrics_archive")
