"""Helpers for the metrics / product / alerts pipeline tests: a source of hand-made
records (one raw batch per record, so event time moves record by record), a small spec
around a metric flow, and a run on either engine."""

from __future__ import annotations

import datetime as dt
import json

from pipelines.loader import parse_spec
from runners.job import RunRequest
from runners.stats import STATS
from sources.generator import EmbeddedPartition
from tests.helpers import engine_run
from transforms.batch import RawBatch

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
        return [EmbeddedPartition(self.source, self.signal, self.topic, p, len(r)) for p, r in sorted(self.parts.items())]

    def batches(self, part, start_offset: int = 0):
        for off, (v, ts) in enumerate(self.parts[part.partition]):
            if off >= start_offset:
                yield RawBatch(self.source, self.topic, part.partition, [v], [off], [ts], topic_partitions=len(self.parts))


def metric_spec(warehouse, rollup: dict, alerts: dict | None = None, partitions: int = 2, shards: int = 2):
    d = {"name": "t", "storage": {"catalog": {"warehouse": str(warehouse)}},
         "sources": [{"name": "metrics", "topic": "metrics", "signal": "metric", "partitions": partitions}],
         "flows": [{"name": "m", "source": "metrics", "sink": {"table": "metrics"},
                    "steps": [{"kind": "validate"}, {"kind": "rollup", "shards": shards, "config": rollup}]}]}
    if alerts:
        d["alerts"] = alerts
    return parse_spec(d)


def run(runner: str, spec, source=None, **kw):
    STATS.reset()
    req = RunRequest(spec=spec, runner=runner, source_override=source, **kw)
    return engine_run(req)
