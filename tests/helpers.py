"""Test helpers: a spec on a temporary warehouse, the default spec as a mapping and its load
problems, a run on either engine, table reads, and the generator's ground truth (which
records are malformed and why, how many rows the good ones make); and, for the metrics /
product / alerts pipeline tests, a source of hand-made records (one raw batch per record, so
event time moves record by record), a small spec around a metric flow, a run on either
engine, and the alert tests' rules and timeline; the obsflow CLI in a subprocess."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

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


def door_envelopes(ids: list[str], first: int, read_from: int, t0_ms: int) -> RawBatch:
    """Door-shaped product event envelopes with ``ids`` at offsets ``first..`` of events:0 (two
    interactions each), record times ``t0_ms`` + offset."""
    import orjson

    values = [
        orjson.dumps(
            {
                "event_id": e,
                "page": "/p",
                "session_id": "s-1",
                "timestamp": dt.datetime.fromtimestamp(t0_ms / 1000, dt.UTC).isoformat(),
                "client_ip": "203.0.113.7",
                "events": [{"type": "click"}, {"type": "scroll", "depth": 0.5}],
            }
        )
        for e in ids
    ]
    offs = list(range(first, first + len(ids)))
    return RawBatch("events", "events", 0, values, offs, [t0_ms + o for o in offs], read_from=read_from)


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


def alert_timeline(m: int) -> tuple[float, float, float]:
    """Minute ``m`` (1..12) of the alert tests' timeline: service a's error rate (5% in
    minute 1, 20% to minute 8, then 0), service b's (0 to minute 3, then 50%) and b's ``up``
    (1 to minute 4, then 0)."""
    rate_a = 0.05 if m == 1 else (0.2 if m <= 8 else 0.0)
    rate_b = 0.0 if m <= 3 else 0.5
    up_b = 1.0 if m <= 4 else 0.0
    return rate_a, rate_b, up_b


def alert_rules(**error_rate_select) -> dict:
    """The alert tests' rules (a fresh mapping each call): ``HighErrorRate`` over what
    ``error_rate_select`` selects (``select``, and ``ratio_of`` / ``on`` for a ratio),
    ``> 0.1`` for 2m, kept firing 90s, P2; ``ServiceDown`` (``up`` last ``< 1``, P0); the
    route tree (P0/P1 to pager, P2 to ticket) and P0 inhibiting P2 of the same service."""
    return {
        "rules": [
            {
                "name": "HighErrorRate",
                **error_rate_select,
                "op": ">",
                "threshold": 0.1,
                "for": "2m",
                "keep_firing_for": "90s",
                "severity": "P2",
                "annotations": {
                    "summary": "{{ $labels.service }} error rate {{ $value }}",
                    "runbook_url": "https://runbooks/errors",
                },
            },
            {
                "name": "ServiceDown",
                "select": {"metric": "up", "value": "last"},
                "op": "<",
                "threshold": 1,
                "severity": "P0",
                "annotations": {"runbook_url": "https://runbooks/down"},
            },
        ],
        "route": {
            "receiver": "default",
            "group_by": ["alertname"],
            "group_wait": "30s",
            "group_interval": "1m",
            "repeat_interval": "3m",
            "routes": [
                {"matchers": ['severity=~"P0|P1"'], "receiver": "pager"},
                {"matchers": ['severity="P2"'], "receiver": "ticket"},
            ],
        },
        "inhibit_rules": [
            {"source_matchers": ['severity="P0"'], "target_matchers": ['severity="P2"'], "equal": ["service"]}
        ],
    }


#: every state change of :func:`alert_rules` over :func:`alert_timeline`'s 12 minutes (1m
#: windows, no lateness): (at s, rule, service, status, starts_at s, ends_at s); pending when
#: the condition first holds (starts_at = activeAt), ServiceDown (for: 0) fires at once
ALERT_CHANGES = [
    (120, "HighErrorRate", "a", "pending", 120, None),
    (240, "HighErrorRate", "a", "firing", 240, None),
    (240, "HighErrorRate", "b", "pending", 240, None),
    (300, "ServiceDown", "b", "firing", 300, None),
    (360, "HighErrorRate", "b", "firing", 360, None),
    (600, "HighErrorRate", "a", "resolved", 240, 600),
]


# -- the obsflow CLI in a subprocess -----------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]
#: ``obsflow run`` as a local Bytewax cluster of two processes (append the rest)
CLUSTER_RUN = ("run", "--runner", "bytewax", "--processes", "2")


def obsflow_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m runners.cli ARGS`` from the repository root, its output captured as text."""
    return subprocess.run(
        [*obsflow_command(), *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )


def obsflow_command() -> list[str]:
    """The command line that starts the obsflow CLI with this interpreter (append its arguments)."""
    return [sys.executable, "-m", "runners.cli"]


def run_bounded_from_kafka(spec_path, runner: str) -> subprocess.CompletedProcess:
    """``obsflow run --source kafka --runner RUNNER --spec SPEC_PATH --bounded``; asserts it
    exited 0 (the message holds the output's tails) and returns it."""
    proc = obsflow_cli(
        "run", "--source", "kafka", "--runner", runner, "--spec", str(spec_path), "--bounded", "--no-progress"
    )
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc
