"""The health page's "Dropped records by reason" panel: a run whose events flow dropped
duplicates (a batch given twice: the retry's records are copies) and dead-lettered a
malformed record; the panel's rows equal the run's own counters (the ``RunStats`` the
flow counted into), and its split adds up to the ``records_dropped`` the counters panel
shows. The events flow and the Iceberg sink on a local warehouse, read by ``obsflow ui``'s
reader (DuckDB). No services."""

from __future__ import annotations

import dataclasses
import datetime as dt

from core.stats import RunStats
from pipelines.graph import PipelineGraph, write_plan
from sinks.iceberg import IcebergSink
from tests.helpers import door_envelopes, local_spec
from transforms.batch import RawBatch
from ui import panels as P
from ui.app import answer
from ui.data import Reader

T0 = int(dt.datetime.now(dt.UTC).timestamp() * 1000) - 60_000


def envelopes(ids: list[str], first: int) -> RawBatch:
    return door_envelopes(ids, first, first, T0)


def rows_as_dicts(p: dict) -> list[dict]:
    return [dict(zip(p["columns"], r)) for r in p["rows"]]


def test_dropped_records_by_reason_equal_the_runs_counters(tmp_path):
    spec = local_spec(tmp_path / "wh")
    stats = RunStats()
    graph = PipelineGraph(spec, counters=stats)
    sink = IcebergSink(spec, ["events", "dead_letters"], plan=write_plan(spec), counters=stats)
    first = envelopes([f"a{k}" for k in range(12)], 0)
    retry = envelopes([f"a{k}" for k in range(7)], 12)  # 7 of the 12 sent again
    bad = dataclasses.replace(envelopes(["b0", "b1"], 19), values=[b"{not json", first.values[0]])
    for raw in (first, retry, bad):
        out = graph.process(raw)
        stats.add_output(out)
        sink.write(out)
    sink._commit("events")
    sink._commit("dead_letters")
    sink.drain()
    snap = stats.snapshot()
    assert (snap["records_in"], snap["records_accepted"], snap["records_dead"], snap["records_dropped"]) == (
        21,
        12,
        1,
        8,
    )
    assert dict(snap["dropped_by_source_reason"]) == {("events", "duplicate"): 8}

    reader = Reader(spec)
    tr = P.time_range({"range": "all"})
    ps = {p.id: p for p in P.health_panels(sorted(reader.tables()), tr)}
    dropped = rows_as_dicts(answer(reader, ps["dropped_by_reason"], tr=tr))
    assert [(r["reason"], r["records_dropped"], r["run_records_dropped"]) for r in dropped] == [("duplicate", 8, 8)]
    counters = rows_as_dicts(answer(reader, ps["pipeline_counters"], tr=tr))
    assert counters[-1]["records_dropped"] == sum(r["records_dropped"] for r in dropped)
    reader.close()
