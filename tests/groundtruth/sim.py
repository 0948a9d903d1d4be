"""A stage host for engine-agnostic tests of the event-time model: raw batches in a
forced order through :class:`pipelines.graph.PipelineGraph` and the stateful stages, as
the engines wire them (every fed stage's output that the global stage consumes goes to
it; shards flushed at the end of input, the global stage last)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json

import pyarrow as pa
import yaml

from core.stats import RunStats
from pipelines.graph import PipelineGraph, plan_stages
from pipelines.loader import parse_spec
from pipelines.stages import GLOBAL, METRICS, PRODUCT, TRACE, make_stage
from transforms.batch import RawBatch

SPEC_PATH = "pipelines/observability.yaml"


def spans_logs_spec(warehouse: str, shards: int = 4):
    """The default spec reduced to its spans and logs flows (the trace stage)."""
    d = yaml.safe_load(open(SPEC_PATH))
    d["storage"]["catalog"]["warehouse"] = str(warehouse)
    d["sources"] = [s for s in d["sources"] if s["name"] in ("spans", "logs")]
    d["flows"] = [f for f in d["flows"] if f["source"] in ("spans", "logs")]
    for f in d["flows"]:
        for s in f["steps"]:
            if s["kind"] == "tail_sample":
                s["shards"] = shards
    d.pop("alerts", None)
    return parse_spec(d)


def iso_us(us: int) -> str:
    return dt.datetime.fromtimestamp(us // 1_000_000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{us % 1_000_000:06d}Z"


def trace_id(k: int) -> str:
    return hashlib.sha256(f"trace-{k}".encode()).hexdigest()[:32]


def span_json(
    tid: str, sid: str, parent: str | None, service: str, name: str, kind: str, start_us: int, end_us: int, status: str
) -> bytes:
    return json.dumps(
        {
            "trace_id": tid,
            "span_id": sid,
            "parent_span_id": parent,
            "service": service,
            "name": name,
            "kind": kind,
            "start_time": iso_us(start_us),
            "end_time": iso_us(end_us),
            "status_code": status,
            "status_message": None,
            "attributes": {},
            "resource": {"service.name": service},
        }
    ).encode()


def log_json(ts_us: int, level: str, service: str, message: str, tid: str | None) -> bytes:
    return json.dumps(
        {
            "timestamp": iso_us(ts_us)[:-4] + "Z",
            "level": level,
            "service": service,
            "message": message,
            "trace_id": tid,
            "span_id": None,
            "request_id": None,
            "user_id": None,
            "host": f"{service}-1",
            "env": "prod",
            "attributes": {},
        }
    ).encode()


def batches_of(
    source: str,
    topic: str,
    partition: int,
    records: list[tuple[bytes, int]],
    n_parts: int,
    size: int,
    first_offset: int = 0,
) -> list[RawBatch]:
    """``records`` (payload, record timestamp ms) of one partition cut into raw batches of
    ``size``; ``lag`` as a Kafka reader reports it (records left after each batch)."""
    out = []
    for k in range(0, len(records), size):
        chunk = records[k : k + size]
        offs = list(range(first_offset + k, first_offset + k + len(chunk)))
        out.append(
            RawBatch(
                source,
                topic,
                partition,
                [v for v, _ in chunk],
                offs,
                [t for _, t in chunk],
                topic_partitions=n_parts,
                lag=len(records) - k - len(chunk),
            )
        )
    return out


class StageHost:
    """The stateful stages of ``spec`` over the partitions known at start (``partitions``)."""

    def __init__(self, spec, partitions: list[str]):
        self.graph = PipelineGraph(spec, counters=RunStats())
        self.defs = {d.name: d for d in plan_stages(spec, partitions)}
        self.stages: dict[str, object] = {}
        self.outputs: list = []

    def _stage(self, name: str, shard: int):
        key = f"{name}:{shard}"
        if key not in self.stages:
            self.stages[key] = make_stage(self.defs[name], shard)
        return self.stages[key]

    def _emit(self, out) -> None:
        if out is None:
            return
        self.outputs.append(out)
        if out.stage in (METRICS, PRODUCT, TRACE) and GLOBAL in self.defs:
            self._emit(self._stage(GLOBAL, 0).process(out))

    def feed(self, raw: RawBatch) -> None:
        fo = self.graph.process(raw)
        self.outputs.append(fo)
        for si in fo.stage_inputs:
            self._emit(self._stage(si.stage, si.shard).process(si))

    def flush(self) -> None:
        for key in sorted(k for k in self.stages if not k.startswith(GLOBAL)):
            self._emit(self.stages[key].flush())
        if GLOBAL in self.defs:
            self._emit(self._stage(GLOBAL, 0).flush())

    def rows(self, table: str) -> pa.Table | None:
        parts = [o.rows[table] for o in self.outputs if table in o.rows and o.rows[table].num_rows]
        return pa.concat_tables(parts, promote_options="permissive") if parts else None
