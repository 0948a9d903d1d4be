"""A one-process Bytewax run's start-up (issue 17, Kafka → Iceberg in one process): the
catalog is opened once and each table loaded once for the positions, the catch-up plan
and the sink together; the table list comes from the spec without building the
transforms; the graph (its lookup tables) is built on a thread, and a build that fails
raises its own error. Embedded source, local warehouse: no services."""

from __future__ import annotations

import threading

import pytest
import yaml

import sinks.catalog
import sinks.iceberg
from pipelines import DEFAULT_SPEC
from pipelines.graph import PipelineGraph
from pipelines.loader import parse_spec
from pipelines.prebuilt import PrebuiltGraph
from runners.bytewax.run import run
from runners.job import RunRequest
from runners.stats import STATS
from core.stats import RunStats
from tests.helpers import START_MS, local_spec, read_table

COUNT = 600  # records per source


def _request(spec) -> RunRequest:
    return RunRequest(
        spec=spec, runner="bytewax", count=COUNT, seed=7, start_ms=START_MS, rate_per_s=2000.0, batch_size=200
    )


def test_a_run_opens_the_catalog_once_and_loads_each_table_once(tmp_path, monkeypatch):
    spec = local_spec(tmp_path / "wh")
    opened: list[str] = []
    loaded: list[str] = []
    real_open, real_load = sinks.catalog.open_catalog, sinks.catalog.load_tables

    def counting_open(storage, create=True):
        opened.append(storage.catalog.warehouse)
        return real_open(storage, create)

    def counting_load(catalog, storage, names):
        loaded.extend(names)
        return real_load(catalog, storage, names)

    monkeypatch.setattr(sinks.iceberg, "open_catalog", counting_open)
    monkeypatch.setattr(sinks.iceberg, "load_tables", counting_load)
    STATS.reset()
    run(_request(spec))
    names = PipelineGraph.names_of(spec)
    assert len(opened) == 1
    assert sorted(loaded) == sorted(names)
    assert STATS.records_in == 2 * COUNT
    assert read_table(spec, "dead_letters").num_rows == STATS.records_dead == 12
    # a second run reads the positions the first recorded, again with one catalog: nothing new
    opened.clear()
    loaded.clear()
    STATS.reset()
    resumed = run(_request(spec))
    assert len(opened) == 1 and sorted(loaded) == sorted(names)
    assert sum(resumed.values()) == 2 * COUNT
    assert STATS.records_in == 0


def test_table_names_from_the_spec_are_the_built_graphs(tmp_path):
    """The order is the one a built graph gave before (the flows' tables, then the stages'):
    the sink commits its tables in that order."""
    spec = local_spec(tmp_path / "wh")
    assert (
        PipelineGraph.names_of(spec)
        == PipelineGraph(spec, counters=RunStats()).table_names
        == ["events", "dead_letters", "logs"]
    )
    data = yaml.safe_load(DEFAULT_SPEC.read_text())
    data["storage"]["catalog"]["warehouse"] = str(tmp_path / "wh2")
    full = parse_spec(data)  # every stage: metrics, sessions, traces, alerts
    assert PipelineGraph.names_of(full) == [
        "events",
        "dead_letters",
        "metrics",
        "sessions",
        "logs",
        "spans",
        "traces",
        "alerts",
    ]
    assert PipelineGraph(full, counters=RunStats()).table_names == PipelineGraph.names_of(full)


def test_the_graph_is_built_on_its_own_thread(tmp_path):
    spec = local_spec(tmp_path / "wh")
    started = threading.active_count()
    pre = PrebuiltGraph(spec, counters=RunStats())
    assert threading.active_count() <= started + 1
    graph = pre.get()
    assert pre.get() is graph and pre.failure() is None
    assert graph.table_names == PipelineGraph.names_of(spec)


def test_a_graph_that_fails_to_build_raises_its_own_error(tmp_path, monkeypatch):
    class LookupBroken(RuntimeError):
        pass

    def broken(self, spec, *, counters):
        raise LookupBroken("no geo data")

    monkeypatch.setattr(PipelineGraph, "__init__", broken)
    pre = PrebuiltGraph(local_spec(tmp_path / "wh"), counters=RunStats())
    with pytest.raises(LookupBroken, match="no geo data"):
        pre.get()
    assert isinstance(pre.failure(), LookupBroken)
    with pytest.raises(LookupBroken, match="no geo data"):
        run(_request(local_spec(tmp_path / "wh2")))
