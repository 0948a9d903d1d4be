"""The Iceberg sink's effectively-once bookkeeping: a crash between two tables' commits
neither loses nor duplicates rows on restart; bounds by rows trigger commits."""

from core.stats import RunStats
from pipelines.graph import PipelineGraph, write_plan
from sinks.catalog import open_catalog
from sinks.iceberg import IcebergSink, snapshot_offsets
from tests.helpers import embedded, local_spec, read_table


def outputs(spec, count=400, partition: int = 0, topic: str = "events"):
    """The flow outputs of one generated partition, in batches of 50."""
    graph = PipelineGraph(spec, counters=RunStats())
    src = embedded(spec, count, batch_size=50)
    part = next(p for p in src.partitions() if p.topic == topic and p.partition == partition)
    return [graph.process(b) for b in src.batches(part)]


def test_crash_between_table_commits_resumes_without_loss_or_duplicates(tmp_path):
    spec = local_spec(tmp_path / "wh")
    outs = outputs(spec)  # 100 records of events:0, in batches of 50
    names = ["events", "dead_letters"]
    sink = IcebergSink(spec, names, plan=write_plan(spec), counters=RunStats())
    sink.write(outs[0])
    sink._commit("events")  # events committed up to offset 50 ...
    sink.drain()
    # ... and the process dies before dead_letters commits
    sink = IcebergSink(spec, names, plan=write_plan(spec), counters=RunStats())
    resume = sink.resume_offsets({"events": names})
    assert resume == {"events:0": 0}  # dead_letters has nothing yet: start from 0
    for out in outs:  # re-deliver everything from the resume point
        sink.write(out)
    sink.close()
    events = read_table(spec, "events")
    offsets = events.column("source_offset").to_pylist()
    expected = sum(o.rows["events"].num_rows for o in outs)
    assert len(offsets) == expected  # nothing twice
    assert sorted(set(offsets)) == sorted(
        {o for out in outs for o in out.rows["events"].column("source_offset").to_pylist()}
    )
    assert read_table(spec, "dead_letters").num_rows == sum(o.records_dead for o in outs)
    cat = open_catalog(spec.storage)
    assert snapshot_offsets(cat.load_table("obs.events")) == {"events:0": 100}
    assert snapshot_offsets(cat.load_table("obs.dead_letters")) == {"events:0": 100}


def test_commits_when_the_row_bound_is_reached(tmp_path):
    spec = local_spec(tmp_path / "wh", max_rows=40, max_seconds=3600)
    outs = outputs(spec)
    sink = IcebergSink(spec, ["events", "dead_letters"], plan=write_plan(spec), counters=RunStats())
    sink.write(outs[0])
    sink.drain()  # the commit the row bound started (on the committer thread) has landed
    rows0 = outs[0].rows["events"].num_rows
    assert rows0 >= 40
    assert sink.stats.commits == 1 and sink.stats.rows_by_table == {"events": rows0}
    assert read_table(spec, "events").num_rows == rows0
    sink.write(outs[1])
    sink.close()
    assert read_table(spec, "events").num_rows == sum(o.rows["events"].num_rows for o in outs[:2])


def test_two_writers_conflicting_keep_both_positions(tmp_path):
    """Two writers of one table (two Flink subtasks, two Bytewax processes) load the same
    table version; the second commit conflicts. Its retry must merge the positions the
    first one recorded — pyiceberg's own retry would re-apply the stale ones and drop them."""
    from prometheus_client import generate_latest

    from runners.metrics import registry
    from runners.stats import STATS

    spec = local_spec(tmp_path / "wh")
    names = ["events", "dead_letters"]
    STATS.reset()
    a, b = (
        IcebergSink(spec, names, plan=write_plan(spec), counters=STATS),
        IcebergSink(spec, names, plan=write_plan(spec), counters=STATS),
    )  # both hold the same table metadata
    assert a.tables["events"].properties["commit.retry.num-retries"] == "0"
    out_a, out_b = outputs(spec, partition=0)[0], outputs(spec, partition=1)[0]
    a.write(out_a)
    b.write(out_b)
    a._commit("events")
    a.drain()
    b._commit("events")  # stale metadata: conflicts, reloads, merges
    b.drain()
    assert b.stats.retries == 1
    # the conflict is counted for /metrics, by table and cause
    assert dict(STATS.commit_retries) == {("events", "conflict"): 1}
    assert 'obsflow_commit_retries_total{cause="conflict",table="events"} 1.0' in generate_latest(registry()).decode()
    events = open_catalog(spec.storage).load_table("obs.events")
    assert snapshot_offsets(events) == {"events:0": out_a.next_offset, "events:1": out_b.next_offset}
    assert read_table(spec, "events").num_rows == out_a.rows["events"].num_rows + out_b.rows["events"].num_rows
    # the retry committed the Parquet files it had written, not a second encoding of them:
    # every data file on disk is referenced by the table (no orphan left by the conflict)
    referenced = {t.file.file_path for t in events.scan().plan_files()}
    on_disk = {"file://" + str(f) for f in (tmp_path / "wh").rglob("*.parquet") if "/events/" in str(f)}
    assert a.stats.files_written + b.stats.files_written == len(referenced) > 0
    assert on_disk == referenced
    a.close()
    b.close()


def test_a_retry_after_a_schema_change_writes_its_files_again(tmp_path):
    """Files written for one schema are not committed under another: when the table's
    schema changed while a commit was being retried, the retry re-encodes its rows."""
    from pyiceberg.types import StringType

    spec = local_spec(tmp_path / "wh")
    names = ["events", "dead_letters"]
    other, sink = (
        IcebergSink(spec, names, plan=write_plan(spec), counters=RunStats()),
        IcebergSink(spec, names, plan=write_plan(spec), counters=RunStats()),
    )
    other.write(outputs(spec, partition=1)[0])
    out = outputs(spec, partition=0)[0]
    sink.write(out)
    other.close()  # another writer commits first, then evolves the schema
    with open_catalog(spec.storage).load_table("obs.events").update_schema() as up:
        up.add_column("added_later", StringType())
    sink._commit("events")  # stale metadata: conflicts; the reloaded table has a new schema
    sink.drain()
    assert sink.stats.retries == 1 and sink.stats.commits == 1
    events = open_catalog(spec.storage).load_table("obs.events")
    mine = [
        t.file.file_path
        for t in events.scan().plan_files()
        if t.file.file_path
        not in {
            f.file.file_path for f in events.scan(snapshot_id=events.current_snapshot().parent_snapshot_id).plan_files()
        }
    ]
    assert sink.stats.files_written == 2 * len(mine) > 0  # once per schema
    assert events.current_snapshot().schema_id == events.metadata.current_schema_id
    assert (
        sum(t.file.record_count for t in events.scan().plan_files() if t.file.file_path in mine)
        == out.rows["events"].num_rows
    )
    sink.close()


def test_tables_made_before_get_pyiceberg_retries_turned_off(tmp_path):
    spec = local_spec(tmp_path / "wh")
    IcebergSink(spec, ["events"], plan=write_plan(spec), counters=RunStats()).close()
    cat = open_catalog(spec.storage)
    with cat.load_table("obs.events").transaction() as tx:  # as an older obsflow created it
        tx.remove_properties("commit.retry.num-retries")
    assert "commit.retry.num-retries" not in cat.load_table("obs.events").properties
    sink = IcebergSink(spec, ["events"], plan=write_plan(spec), counters=RunStats())
    assert sink.tables["events"].properties["commit.retry.num-retries"] == "0"
    sink.close()


def test_losing_the_namespace_creation_race_loads_the_winners(tmp_path):
    """pyiceberg's SQL catalog checks that a namespace is missing, then inserts it: when
    another process inserts in between, the loser gets the database's unique-key error.
    ensure_table takes that as "created" (CI saw it with two writers on PostgreSQL). The
    race is made deterministic: the other writer creates the namespace right after this
    catalog's check, in the same SQLite catalog database."""
    from sqlalchemy.exc import IntegrityError

    from schemas.tables import EVENTS
    from sinks.catalog import ensure_table

    spec = local_spec(tmp_path / "wh")
    other, cat = open_catalog(spec.storage), open_catalog(spec.storage)
    checked = []

    def exists_then_lose(namespace):
        answer = type(cat).namespace_exists(cat, namespace)
        if not checked:  # the first check: not there yet ... then the other writer creates it
            checked.append(answer)
            other.create_namespace(namespace)
        return answer

    cat.namespace_exists = exists_then_lose
    try:  # what pyiceberg alone does in this race
        cat.create_namespace("raced")
        raise AssertionError("the lost race should raise")
    except IntegrityError:
        pass
    checked.clear()
    other.drop_namespace("raced")
    table = ensure_table(cat, "obs", EVENTS)
    assert checked == [False]
    assert table.name() == ("obs", "events") and other.namespace_exists("obs")


def test_files_are_split_by_partition_exactly(tmp_path):
    """The sink cuts a commit's rows into one slice per partition itself (sorted once)
    before pyiceberg writes them: every data file holds one partition, and the files'
    partitions and row counts are exactly the data's."""
    import datetime

    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from sinks.iceberg import _WrittenFiles

    spec = local_spec(tmp_path / "wh")
    sink = IcebergSink(spec, ["logs"], plan=write_plan(spec), counters=RunStats())
    table = sink.tables["logs"]
    rows = pa.concat_tables([o.rows["logs"] for o in outputs(spec, topic="logs")])
    # a second day, so both partition fields vary
    ts = rows.schema.get_field_index("ts")
    later = pc.add(rows.column("ts"), pa.scalar(datetime.timedelta(days=1), pa.duration("us"))).cast(
        rows.schema.field("ts").type
    )
    data = pa.concat_tables([rows, rows.set_column(ts, rows.schema.field("ts"), later).slice(0, 300)])
    days = pc.cast(pc.cast(data.column("ts"), pa.timestamp("us")), pa.date32()).cast(pa.int32()).to_pylist()
    want: dict = {}
    for d, s in zip(days, data.column("service").to_pylist()):
        want[(d, s)] = want.get((d, s), 0) + 1
    assert len({d for d, _ in want}) == 2 and len(want) > 4
    files = _WrittenFiles.write(table, data).data_files
    got: dict = {}
    for f in files:
        key = (f.partition[0], f.partition[1])
        got[key] = got.get(key, 0) + f.record_count
        # and each file holds only its own partition's rows
        part = pq.read_table(f.file_path.removeprefix("file://"), columns=["ts", "service"])
        file_days = pc.cast(pc.cast(part.column("ts"), pa.timestamp("us")), pa.date32()).cast(pa.int32())
        assert set(zip(file_days.to_pylist(), part.column("service").to_pylist())) == {key}
    assert got == want
    assert len(files) == len(want)  # one file per partition (all far below the target file size)
    sink.close()


def test_partition_tasks_keep_null_keys_apart_and_rows_in_order():
    """A null partition value is a partition of its own (as pyiceberg writes it), every row
    lands in exactly one task, and rows keep their order within a partition."""
    import itertools
    import uuid

    import pyarrow as pa
    from pyiceberg.partitioning import PartitionField, PartitionSpec
    from pyiceberg.schema import Schema
    from pyiceberg.table.metadata import new_table_metadata
    from pyiceberg.table.sorting import UNSORTED_SORT_ORDER
    from pyiceberg.transforms import IdentityTransform
    from pyiceberg.types import LongType, NestedField, StringType

    from sinks.iceberg import _partition_tasks

    schema = Schema(NestedField(1, "n", LongType(), required=True), NestedField(2, "k", StringType(), required=False))
    spec = PartitionSpec(PartitionField(source_id=2, field_id=1000, transform=IdentityTransform(), name="k"))
    meta = new_table_metadata(schema, spec, UNSORTED_SORT_ORDER, "file:///nowhere", properties={})
    keys = ["b", None, "a", "b", None, "a", "c", "b"]
    data = pa.table({"n": pa.array(range(len(keys)), pa.int64()), "k": pa.array(keys, pa.string())})
    tasks = _partition_tasks(meta, data, uuid.uuid4(), itertools.count(0), downcast_ns=False)
    got = {}
    for t in tasks:
        rows = pa.Table.from_batches(t.record_batches)
        got.setdefault(t.partition_key.partition[0], []).extend(rows.column("n").to_pylist())
        assert set(rows.column("k").to_pylist()) == {t.partition_key.partition[0]}
    assert got == {"a": [2, 5], "b": [0, 3, 7], "c": [6], None: [1, 4]}
    assert [t.task_id for t in tasks] == list(range(len(tasks)))


def test_two_sinks_in_one_process_keep_separate_counters(tmp_path):
    """Each sink records its commits into the counters it was given (``counters=``) and
    writes those counters into each commit's summary: two sinks in one process keep their
    figures apart, and the process's ``STATS`` is left alone."""
    import json

    from runners.stats import STATS
    from sinks.iceberg import STATS_KEY

    STATS.reset()
    names = ["events", "dead_letters"]
    spec_a, spec_b = local_spec(tmp_path / "a"), local_spec(tmp_path / "b")
    outs_a = outputs(spec_a, partition=0)  # 100 records in two batches
    outs_b = outputs(spec_b, partition=1)[:1]  # 50 records
    counters_a, counters_b = RunStats(), RunStats()
    a = IcebergSink(spec_a, names, plan=write_plan(spec_a), counters=counters_a)
    b = IcebergSink(spec_b, names, plan=write_plan(spec_b), counters=counters_b)
    for counters, sink, outs in ((counters_a, a, outs_a), (counters_b, b, outs_b)):
        for out in outs:
            counters.add_output(out)  # as the runners' process step does
            sink.write(out)
    a.close()
    b.close()
    events_a = sum(o.rows["events"].num_rows for o in outs_a)
    events_b = sum(o.rows["events"].num_rows for o in outs_b)
    assert events_a > events_b > 0
    assert a.stats.rows_by_table["events"] == events_a and b.stats.rows_by_table["events"] == events_b
    for counters, sink in ((counters_a, a), (counters_b, b)):
        assert dict(counters.rows_by_table) == sink.stats.rows_by_table
        assert counters.commits == sink.stats.commits > 0
        assert dict(counters.commits_by_table) == {t: 1 for t in sink.stats.rows_by_table}
    assert counters_a.records_in == 100 and counters_b.records_in == 50
    # the process's counters saw none of it
    assert STATS.commits == 0 and not STATS.rows_by_table and STATS.records_in == 0
    # each commit's summary carries its own sink's counters
    for spec, records in ((spec_a, 100), (spec_b, 50)):
        snap = open_catalog(spec.storage).load_table("obs.events").current_snapshot()
        assert json.loads(snap.summary.additional_properties[STATS_KEY])["records_in"] == records
