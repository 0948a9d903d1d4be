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
        "alerts": every,
        "dead_letters": every,
        "metrics": every,
        "events": frozenset({"events"}),
        "sessions": frozenset({"events"}),
        "logs": frozenset({"logs", "spans"}),
        "spans": frozenset({"logs", "spans"}),
        "traces": frozenset({"logs", "spans"}),
    }
    # flows write their dead letters and the events table themselves; the trace stage samples the logs
    assert plan.stateless == {("dead_letters", t) for t in every} | {("events", "events")}
    assert plan.staged_tables() == {"spans", "traces", "logs", "dead_letters", "metrics", "sessions", "alerts"}
    assert table_writers(plan, PipelineGraph.tables_of(parse_spec(default_data()))) == (
        ["events"],
        ["alerts", "dead_letters", "logs", "metrics", "sessions", "spans", "traces"],
    )
    assert pickle.loads(pickle.dumps(plan)) == plan  # the engines ship it to their workers


def test_stateless_spec_plan():
    plan = write_plan(parse_spec(strip_traces(default_data())))
    assert plan.stages == {}
    assert plan.topics_of == {
        "events": frozenset({"events"}),
        "logs": frozenset({"logs"}),
        "dead_letters": frozenset({"events", "logs"}),
    }
    assert plan.stateless == {
        ("events", "events"),
        ("logs", "logs"),
        ("dead_letters", "events"),
        ("dead_letters", "logs"),
    }
    assert table_writers(plan, ["dead_letters", "events", "logs"]) == (["dead_letters", "events", "logs"], [])


def test_bytewax_by_table_sinks_write_what_one_sink_writes(tmp_path):
    """The by-table writers (one per stage table, as a multi-worker cluster runs them) get the
    plan too: in one process they land the same rows and record the same positions as the
    single sink."""
    from pipelines.graph import PipelineGraph
    from runners.bytewax.flow import EmbeddedBytewaxSource, build_flow, run_flow
    from sinks.catalog import load_tables, open_catalog
    from sinks.iceberg import snapshot_offsets
    from tests.helpers import embedded, local_spec, read_table

    landed = {}
    for by_table in (False, True):
        spec = local_spec(tmp_path / f"wh-{by_table}", traces=True, metrics=True)
        run_flow(build_flow(spec, EmbeddedBytewaxSource(embedded(spec, 300), {}), by_table=by_table))
        names = PipelineGraph.tables_of(spec)
        tables = load_tables(open_catalog(spec.storage), spec.storage, names)
        landed[by_table] = (
            {t: read_table(spec, t).num_rows for t in names},
            {t: snapshot_offsets(tables[t]) for t in names},
        )
    assert landed[True] == landed[False]
    rows, positions = landed[True]
    assert rows == {
        "alerts": 3,
        "dead_letters": 11,
        "events": 311,
        "logs": 75,
        "metrics": 351,
        "sessions": 89,
        "spans": 28,
        "traces": 8,
    }
    assert all(positions[t] for t in rows)
