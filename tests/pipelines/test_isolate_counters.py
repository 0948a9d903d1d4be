"""Isolated records are counted in the run's own counters (the ``counters=`` handed to
:class:`PipelineGraph` and :class:`GuardedStage`, as the sinks and sources take them),
never in the process-wide ``STATS``: two pipelines in one process keep separate counts."""

from __future__ import annotations

from core.stats import STATS, RunStats
from pipelines.graph import PipelineGraph, plan_stages
from pipelines.isolate import GuardedStage
from pipelines.loader import parse_spec
from tests.e2e.test_internal_errors import local, log_line, poison_flows, poison_rollups, sample
from tests.pipelines.test_stage_crashes import INGEST, raw


def test_two_graphs_in_one_process_count_their_own_isolated_records(tmp_path, monkeypatch):
    STATS.reset()
    poison_flows(monkeypatch)
    spec = parse_spec(local(tmp_path))
    a, b = RunStats(), RunStats()
    ga, gb = PipelineGraph(spec, counters=a), PipelineGraph(spec, counters=b)
    out_a = ga.process(raw("logs", [log_line(k, INGEST - 1000, poison=k in (1, 2)) for k in range(4)]))
    out_b = gb.process(raw("logs", [log_line(k, INGEST - 1000, poison=k == 3) for k in range(5)]))
    assert (out_a.records_accepted, out_a.records_dead) == (2, 2)
    assert (out_b.records_accepted, out_b.records_dead) == (4, 1)
    assert a.internal_errors == {"flow:logs": 2}
    assert b.internal_errors == {"flow:logs": 1}
    assert STATS.internal_errors == {}


def test_two_guarded_stages_in_one_process_count_their_own_isolated_rows(tmp_path, monkeypatch):
    STATS.reset()
    poison_rollups(monkeypatch)
    spec = parse_spec(local(tmp_path))
    graph = PipelineGraph(spec, counters=RunStats())
    r = raw("metrics", [sample(k, INGEST - 1000, poison=k in (1, 4)) for k in range(6)])
    inputs = [si for si in graph.process(r).stage_inputs if si.table.num_rows]
    assert len(inputs) == 1  # one metric name: one shard
    defn = next(d for d in plan_stages(spec) if d.name == "metrics")
    a, b = RunStats(), RunStats()
    stage_a = GuardedStage(defn, inputs[0].shard, counters=a)
    stage_b = GuardedStage(defn, inputs[0].shard, counters=b)
    outs = stage_a.process(inputs[0])
    dead_a = [row for o in outs if "dead_letters" in o.rows for row in o.rows["dead_letters"].to_pylist()]
    assert sorted(row["source_offset"] for row in dead_a) == [1, 4]
    assert a.internal_errors == {"stage:metrics": 2}
    assert b.internal_errors == {}
    stage_b.process(inputs[0])
    assert b.internal_errors == {"stage:metrics": 2}
    assert a.internal_errors == {"stage:metrics": 2}
    assert STATS.internal_errors == {}
