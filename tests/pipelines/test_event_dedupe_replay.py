"""A replay after a crash gives every record the dedupe verdict it got the first time: the
events flow and the Iceberg sink on a local warehouse (no services), the table written by
a first process, then a new process (a fresh graph: no ids held) replaying from an offset
inside what the table holds and from one past it. The ids come back from obs.events."""

from __future__ import annotations

import datetime as dt

from core.stats import RunStats
from pipelines.graph import PipelineGraph, write_plan
from pipelines.spec import DedupeStep
from sinks.iceberg import IcebergSink
from tests.helpers import door_envelopes, local_spec, read_table
from transforms.batch import RawBatch

T0 = int(dt.datetime.now(dt.UTC).timestamp() * 1000) - 60_000


def raw(ids: list[str], first: int, read_from: int) -> RawBatch:
    """Door-shaped envelopes with ``ids`` at offsets ``first..`` of events:0."""
    return door_envelopes(ids, first, read_from, T0)


A = [f"a{k}" for k in range(10)]


def verdicts(graph: PipelineGraph, batches: list[RawBatch], sink: IcebergSink | None = None) -> list[tuple]:
    out = []
    for b in batches:
        o = graph.process(b)
        out.append((o.records_accepted, o.records_dropped, o.dropped_by_reason))
        if sink is not None:
            sink.write(o)
    return out


def test_a_replay_judges_every_record_as_the_first_pass_did(tmp_path):
    spec = local_spec(tmp_path / "wh")
    names = ["events", "dead_letters"]
    first = [raw(A, 0, 0), raw(A, 10, 10), raw(A[:5] + ["b0", "b1", "b2", "b3", "b4"], 20, 20)]
    sink = IcebergSink(spec, names, plan=write_plan(spec), counters=RunStats())
    assert verdicts(PipelineGraph(spec, counters=RunStats()), first[:2], sink) == [
        (10, 0, {}),
        (0, 10, {"duplicate": 10}),
    ]
    sink._commit("events")
    sink.drain()
    assert sorted(read_table(spec, "events").column("event_id").to_pylist()) == sorted(A * 2)  # 2 rows each
    # the process died; the next one resumes at 10 (past the first copies): the ids come from the table
    assert verdicts(PipelineGraph(spec, counters=RunStats()), [raw(A, 10, 10), first[2]]) == [
        (0, 10, {"duplicate": 10}),
        (5, 5, {"duplicate": 5}),
    ]
    # ... or at 5, inside what the table holds: offsets 5..9 are judged again (first copies,
    # their rows filtered by the sink), not mistaken for copies of themselves
    replay = raw(A[5:] + A, 5, 5)
    assert verdicts(PipelineGraph(spec, counters=RunStats()), [replay]) == [(5, 10, {"duplicate": 10})]
    # a flow with the dedupe off keeps every copy
    spec_off = local_spec(tmp_path / "wh2")
    flow = next(f for f in spec_off.flows if f.source == "events")
    flow.steps.append(DedupeStep(kind="dedupe", enabled=False))
    assert verdicts(PipelineGraph(spec_off, counters=RunStats()), first[:2]) == [(10, 0, {}), (10, 0, {})]
