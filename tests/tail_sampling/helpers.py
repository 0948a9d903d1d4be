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


#: columns the OTLP codec adds to the wire columns (typed attributes, exact times, W3C fields)
EXTRA = pa.schema(
    [
        ("attribute_types", pa.map_(pa.string(), pa.string())),
        ("resource_types", pa.map_(pa.string(), pa.string())),
        ("start_unix_nano", pa.int64()),
        ("end_unix_nano", pa.int64()),
        ("trace_state", pa.string()),
        ("flags", pa.int64()),
    ]
)


def typed(values: dict | None) -> tuple[dict | None, dict | None]:
    """Python attribute values as (text map, types map), as the OTLP codec writes them:
    ints in decimal, floats as ``repr``, booleans ``true`` / ``false``; strings untyped."""
    if values is None:
        return None, None
    text, types = {}, {}
    for k, v in values.items():
        if isinstance(v, bool):
            text[k], types[k] = ("true" if v else "false"), "bool"
        elif isinstance(v, int):
            text[k], types[k] = str(v), "int"
        elif isinstance(v, float):
            text[k], types[k] = repr(v), "double"
        else:
            text[k] = v
    return text, types or None


def span(
    trace: int,
    span_no: int,
    parent: int | None = None,
    start_ms: int = 0,
    dur_ms: float = 10,
    status="UNSET",
    attrs=None,
    service="api",
    name="GET /",
    kind="SERVER",
    resource=None,
    **extra,
) -> dict:
    """A span row; ``attrs`` / ``resource`` values may be str, int, float or bool (typed as
    the OTLP codec types them); ``extra``: columns of :data:`EXTRA`."""
    text, types = typed(attrs)
    rtext, rtypes = typed(resource if resource is not None else {"service.name": service})
    return dict(
        trace_id=tid(trace),
        span_id=sid(trace * 1000 + span_no),
        parent_span_id=None if parent is None else sid(trace * 1000 + parent),
        service=service,
        name=name,
        kind=kind,
        start_time=int(start_ms * 1000),
        end_time=int((start_ms + dur_ms) * 1000),
        status_code=status,
        status_message=None,
        attributes=text,
        resource=rtext,
        attribute_types=types,
        resource_types=rtypes,
        **extra,
    )


def table(rows: list[dict]) -> pa.Table:
    """The rows in the wire schema, plus the :data:`EXTRA` columns any row sets."""
    cols = {f.name: pa.array([r.get(f.name) for r in rows], f.type) for f in SPAN}
    for f in EXTRA:
        if any(r.get(f.name) is not None for r in rows):
            cols[f.name] = pa.array([r.get(f.name) for r in rows], f.type)
    return pa.table(cols)


def trace(
    k: int, n: int = 3, dur_ms: float = 10, status="UNSET", attrs=None, start_ms: int = 0, service="api"
) -> list[dict]:
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
