"""Test helpers: a spec on a temporary warehouse, the default spec as a mapping and its load
problems, a run on either engine, table reads, and the generator's ground truth (which
records are malformed and why, how many rows the good ones make); and, for the metrics /
product / alerts pipeline tests, a source of hand-made records (one raw batch per record, so
event time moves record by record), a small spec around a metric flow, and a run on either
engine."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

import pyarrow as pa
import pytest
import yaml

from core.stats import RunStats
from pipelines import DEFAULT_SPEC
from pipelines.loader import SpecError, parse_spec
from pipelines.spec import PipelineSpec
from runners.job import RunRequest
from runners.stats import STATS
from sinks.catalog import open_catalog
from sources.generator import EmbeddedPartition, EmbeddedSource
from transforms.batch import RawBatch

START_MS = 1_763_000_000_000  # a fixed simulated start, so runs are comparable


def default_data() -> dict:
    """A fresh mapping of the default spec (pipelines/observability.yaml), to mutate."""
    return yaml.safe_load(DEFAULT_SPEC.read_text())


def spec_problems(data) -> list[tuple[str, str]]:
    """The ``(key path, message)`` problems of a spec mapping that must fail to load; the
    test fails when it loads."""
    with pytest.raises(SpecError) as e:
        parse_spec(data)
    return e.value.problems


def engine_run(req: RunRequest):
    """Run ``req`` on its engine (``req.runner``: ``bytewax``, else Beam) and return what
    that engine's ``run`` returns."""
    if req.runner == "bytewax":
        from runners.bytewax.run import run as go
    else:
        from runners.beam.run import run as go
    return go(req)


def local_spec(warehouse, traces: bool = False, metrics: bool = False, **storage_commit) -> PipelineSpec:
    """The default spec on a local warehouse. Without ``traces``: no spans, logs
    unsampled; without ``metrics``: no metric source, rollups, product stage or alerts
    (so every table's rows are exactly predictable). ``storage_commit`` keys ending in
    ``_seconds`` are given as numbers of seconds (the spec reads them as ``"<n>s"``)."""
    data = yaml.safe_load(DEFAULT_SPEC.read_text())
    data["storage"]["catalog"]["warehouse"] = str(warehouse)
    if not traces:
        strip_traces(data, metrics=metrics)
    elif not metrics:
        strip_metrics(data)
    data["storage"]["commit"].update({k: f"{v}s" if k.endswith("_seconds") else v for k, v in storage_commit.items()})
    return parse_spec(data)


def shared_spec(catalog_properties: dict) -> PipelineSpec:
    """The default spec on the session's shared catalog (the ``trino_catalog_properties``
    fixture: PostgreSQL catalog + S3 warehouse), so Trino reads what a run writes: its name,
    uri and warehouse, and the S3 FileIO properties (``s3.*``, ``py-io-impl``) as strings."""
    props = dict(catalog_properties)
    keep = {k: v for k, v in props.items() if k.startswith("s3.") or k == "py-io-impl"}
    data = default_data()
    data["storage"]["catalog"] = {
        "name": props["name"],
        "uri": props["uri"],
        "warehouse": props["warehouse"],
        "properties": {k: str(v) for k, v in keep.items()},
    }
    return parse_spec(data)


def strip_traces(data: dict, metrics: bool = False) -> dict:
    """Remove the span source and flow and log sampling from a spec mapping (in place);
    unless ``metrics``, also the metric flow, product step and alerts (:func:`strip_metrics`),
    so that specs built before those existed stay the same."""
    if not metrics:
        strip_metrics(data)
    data["sources"] = [s for s in data["sources"] if s["signal"] != "span"]
    data["flows"] = [f for f in data["flows"] if f["source"] in {s["name"] for s in data["sources"]}]
    for f in data["flows"]:
        f["steps"] = [st for st in f["steps"] if st["kind"] != "log_sample"]
    return data


def strip_metrics(data: dict) -> dict:
    """Remove the metric source and flow, the product step and the alerts from a spec mapping (in place)."""
    data["sources"] = [s for s in data["sources"] if s["signal"] != "metric"]
    data["flows"] = [f for f in data["flows"] if f["source"] in {s["name"] for s in data["sources"]}]
    for f in data["flows"]:
        f["steps"] = [st for st in f["steps"] if st["kind"] not in ("product", "rollup")]
    data.pop("alerts", None)
    return data


def read_table(spec: PipelineSpec, name: str) -> pa.Table:
    catalog = open_catalog(spec.storage)
    return catalog.load_table(f"{spec.storage.namespace}.{name}").scan().to_arrow()


def sorted_rows(table: pa.Table, keys: list[str]) -> list[dict]:
    return table.sort_by([(k, "ascending") for k in keys]).to_pylist()


@dataclass
class Truth:
    dead: dict[tuple[str, int, int], str]  # (topic, partition, offset) -> reason
    kinds: dict[tuple[str, int, int], str]  # (topic, partition, offset) -> malformation kind
    event_rows: int  # rows the good product events make
    log_rows: int
    records: int


def ground_truth(source: EmbeddedSource) -> Truth:
    dead, kinds = {}, {}
    event_rows = log_rows = records = 0
    for part in source.partitions():
        for off, g in enumerate(source.stream(part)):
            records += 1
            key = (part.topic, part.partition, off)
            if g.label:
                dead[key] = g.label
                kinds[key] = g.kind
            elif part.signal == "event":
                event_rows += len(json.loads(g.value)["events"])
            else:
                log_rows += 1
    return Truth(dead, kinds, event_rows, log_rows, records)


def embedded(spec: PipelineSpec, count: int, seed: int = 42, batch_size: int = 1000) -> EmbeddedSource:
    return EmbeddedSource(
        spec.sources, count=count, seed=seed, start_ms=START_MS, rate_per_s=2000.0, batch_size=batch_size
    )


def write_through_sink(spec: PipelineSpec, source, max_rows: int | None = None):
    """Run the stateless flows of ``spec`` over ``source`` straight into the Iceberg sink
    (no engine): for storage tests. Returns the closed sink (its stats)."""
    from pipelines.graph import PipelineGraph, write_plan
    from sinks.iceberg import IcebergSink

    graph = PipelineGraph(spec, counters=RunStats())
    sink = IcebergSink(spec, graph.table_names, plan=write_plan(spec), counters=STATS)
    if max_rows:
        sink.max_rows = max_rows
    for part in source.partitions():
        for raw in source.batches(part):
            raw.source = part.source
            sink.write(graph.process(raw))
    sink.close()
    return sink


# -- hand-made records for the stage pipeline tests (metrics, product, alerts) --------------------

BASE = 1_763_000_040_000  # a whole minute
MIN = 60_000


def iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def sample(name, kind, ts, labels, **fields) -> bytes:
    return json.dumps({"name": name, "kind": kind, "timestamp": iso(ts), "labels": labels, **fields}).encode()


class ListSource:
    """Records given per partition as (payload, ingest ms); one raw batch per record."""

    def __init__(self, source: str, topic: str, signal: str, parts: dict[int, list[tuple[bytes, int]]]):
        self.source, self.topic, self.signal, self.parts = source, topic, signal, parts

    def partitions(self):
        return [
            EmbeddedPartition(self.source, self.signal, self.topic, p, len(r)) for p, r in sorted(self.parts.items())
        ]

    def batches(self, part, start_offset: int = 0):
        for off, (v, ts) in enumerate(self.parts[part.partition]):
            if off >= start_offset:
                yield RawBatch(
                    self.source, self.topic, part.partition, [v], [off], [ts], topic_partitions=len(self.parts)
                )


def metric_spec(warehouse, rollup: dict, alerts: dict | None = None, partitions: int = 2, shards: int = 2):
    d = {
        "name": "t",
        "storage": {"catalog": {"warehouse": str(warehouse)}},
        "sources": [{"name": "metrics", "topic": "metrics", "signal": "metric", "partitions": partitions}],
        "flows": [
            {
                "name": "m",
                "source": "metrics",
                "sink": {"table": "metrics"},
                "steps": [{"kind": "validate"}, {"kind": "rollup", "shards": shards, "config": rollup}],
            }
        ],
    }
    if alerts:
        d["alerts"] = alerts
    return parse_spec(d)


def run(runner: str, spec, source=None, **kw):
    STATS.reset()
    req = RunRequest(spec=spec, runner=runner, source_override=source, **kw)
    return engine_run(req)
