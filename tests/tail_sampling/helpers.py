"""Span rows for the tail sampling tests: built directly as Arrow tables in the wire
schema, or with the OpenTelemetry SDK and decoded by the OTLP codec."""

from __future__ import annotations

import hashlib

import pyarrow as pa

from schemas.wire import arrow_schema
from transforms.tail_sampling import TailSampler

SPAN = arrow_schema("span")


def tid(k: int) -> str:
    """Trace id number ``k``: 8 hex digits of k, then 24 pseudo-random ones (real trace ids
    are random; FNV-1a, the collector's sampling hash, mixes sequential ids poorly)."""
    return f"{k:08x}" + hashlib.sha256(str(k).encode()).hexdigest()[:24]


def sid(k: int) -> str:
    return f"{k:016x}"


def span(trace: int, span_no: int, parent: int | None = None, start_ms: int = 0, dur_ms: float = 10, status="UNSET",
         attrs=None, service="api", name="GET /", kind="SERVER", resource=None) -> dict:
    return dict(trace_id=tid(trace), span_id=sid(trace * 1000 + span_no),
                parent_span_id=None if parent is None else sid(trace * 1000 + parent), service=service, name=name, kind=kind,
                start_time=int(start_ms * 1000), end_time=int((start_ms + dur_ms) * 1000), status_code=status,
                status_message=None, attributes=attrs, resource=resource if resource is not None else {"service.name": service})


def table(rows: list[dict]) -> pa.Table:
    return pa.table({f.name: pa.array([r.get(f.name) for r in rows], f.type) for f in SPAN})


def trace(k: int, n: int = 3, dur_ms: float = 10, status="UNSET", attrs=None, start_ms: int = 0, service="api") -> list[dict]:
    """A root and n-1 children; ``attrs`` on the root only."""
    rows = [span(k, 0, None, start_ms, dur_ms, status, attrs, service=service)]
    rows += [span(k, i, 0, start_ms + 1, 1, service=service) for i in range(1, n)]
    return rows


def sampler(*policies, **settings) -> TailSampler:
    cfg = {"decision_wait": "10s", "policies": list(policies)} | settings
    return TailSampler(cfg)


def decide(policies: list[dict], traces: list[list[dict]], **settings):
    """Add all traces at t=0, advance past the wait: (kept trace ids in order, Decisions)."""
    ts = sampler(*policies, **settings)
    ts.add(table([r for t in traces for r in t]), 0)
    d = ts.advance(10_000)
    return d.traces.column("trace_id").to_pylist(), d


def kept_numbers(ids: list[str]) -> list[int]:
    return [int(t[:8], 16) for t in ids]
