"""Issue 16 item 4: the job's write plan (who writes which table) is built once from the spec
by :func:`pipelines.graph.write_plan` and handed to the sinks (the sink no longer re-derives
the topology from ``pipelines.graph``). Exact plans of the default spec and of its stateless
variant. No services."""

from __future__ import annotations

import pickle

from pipelines.graph import PipelineGraph, write_plan
from pipelines.loader import parse_spec
from sinks.iceberg import table_writers
from sinks.plan import StageWrites
from tests.helpers import default_data, strip_traces


def test_default_spec_plan():
    plan = write_plan(parse_spec(default_data()))
    assert plan.stages == {
        "trace": StageWrites("trace", 4, ("spans", "traces", "logs", "dead_letters"), ("logs", "spans")),
        "metrics": StageWrites("metrics", 4, ("metrics", "dead_letters"), ("events", "logs", "metrics")),
        "product": StageWrites("product", 4, ("sessions", "dead_letters"), ("events",)),
        "global": StageWrites("global", 1, ("alerts", "metrics"), ("events", "logs", "metrics", "spans")),
    }
    every = frozenset({"events", "logs", "metrics", "spans"})
    assert plan.topics_of == {
        "alerts": every, "dead_letters": every, "metrics": every, "events": frozenset({"events"}),
        "sessions": frozenset({"events"}), "logs": frozenset({"logs", "spans"}),
        "spans": frozenset({"logs", "spans"}), "traces": frozenset({"logs", "spans"}),
    }
    # flows write their dead letters and the events table themselves; the trace stage samples the logs
    assert plan.stateless == {("dead_letters", t) for t in every} | {("events", "events")}
    assert plan.staged_tables() == {"spans", "traces", "logs", "dead_letters", "metrics", "sessions", "alerts"}
    assert table_writers(plan, PipelineGraph.tables_of(parse_spec(default_data()))) == (
        ["events"], ["alerts", "dead_letters", "logs", "metrics", "sessions", "spans", "traces"])
    assert pickle.loads(pickle.dumps(plan)) == plan  # the engines ship it to their workers


def test_stateless_spec_plan():
    plan = write_plan(parse_spec(strip_traces(default_data())))
    assert plan.stages == {}
    assert plan.topics_of == {"events": frozenset({"events"}), "logs": frozenset({"logs"}),
                              "dead_letters": frozenset({"events", "logs"})}
    assert plan.stateless == {("events", "events"), ("logs", "logs"), ("dead_letters", "events"), ("dead_letters", "logs")}
    assert table_writers(plan, ["dead_letters", "events", "logs"]) == (["dead_letters", "events", "logs"], [])
