"""The Iceberg sink's effectively-once bookkeeping: a crash between two tables' commits
neither loses nor duplicates rows on restart; bounds by rows trigger commits."""

from pipelines.graph import PipelineGraph
from sinks.catalog import open_catalog
from sinks.iceberg import IcebergSink, snapshot_offsets
from tests.helpers import embedded, local_spec, read_table


def outputs(spec, count=400):
    graph = PipelineGraph(spec)
    src = embedded(spec, count, batch_size=50)
    part = next(p for p in src.partitions() if p.topic == "events" and p.partition == 0)
    return [graph.process(b) for b in src.batches(part)]


def test_crash_between_table_commits_resumes_without_loss_or_duplicates(tmp_path):
    spec = local_spec(tmp_path / "wh")
    outs = outputs(spec)  # 100 records of events:0, in batches of 50
    names = ["events", "dead_letters"]
    sink = IcebergSink(spec, names)
    sink.write(outs[0])
    sink._commit("events")          # events committed up to offset 50 ...
    sink.drain()
    # ... and the process dies before dead_letters commits
    sink = IcebergSink(spec, names)
    resume = sink.resume_offsets({"events": names})
    assert resume == {"events:0": 0}  # dead_letters has nothing yet: start from 0
    for out in outs:                   # re-deliver everything from the resume point
        sink.write(out)
    sink.close()
    events = read_table(spec, "events")
    offsets = events.column("source_offset").to_pylist()
    expected = sum(o.rows["events"].num_rows for o in outs)
    assert len(offsets) == expected                              # nothing twice
    assert sorted(set(offsets)) == sorted({o for out in outs for o in out.rows["events"].column("source_offset").to_pylist()})
    assert read_table(spec, "dead_letters").num_rows == sum(o.records_dead for o in outs)
    cat = open_catalog(spec.storage)
    assert snapshot_offsets(cat.load_table("obs.events")) == {"events:0": 100}
    assert snapshot_offsets(cat.load_table("obs.dead_letters")) == {"events:0": 100}


def test_commits_when_the_row_bound_is_reached(tmp_path):
    spec = local_spec(tmp_path / "wh", max_rows=40, max_seconds=3600)
    outs = outputs(spec)
    sink = IcebergSink(spec, ["events", "dead_letters"])
    sink.write(outs[0])
    sink.drain()  # the commit the row bound started (on the committer thread) has landed
    rows0 = outs[0].rows["events"].num_rows
    assert rows0 >= 40
    assert sink.stats.commits == 1 and sink.stats.rows_by_table == {"events": rows0}
    assert read_table(spec, "events").num_rows == rows0
    sink.write(outs[1])
    sink.close()
    assert read_table(spec, "events").num_rows == sum(o.rows["events"].num_rows for o in outs[:2])
