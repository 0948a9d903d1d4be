"""``trace_state``: Sampled when any span's W3C ``tracestate`` (span column ``trace_state``)
holds ``key`` with one of ``values``, parsed as the Collector parses it
(``go.opentelemetry.io/otel/trace.ParseTraceState``: a tracestate with an invalid member,
a duplicate key or more than 32 members holds nothing). Values longer than
``256 - len(key) - 1`` never match (as the Collector). Spans without the column (JSON and
Avro spans carry no tracestate) never match."""

from __future__ import annotations

import re
from functools import lru_cache

import pyarrow as pa
import pyarrow.compute as pc

from ..decision import NS, filled, from_bool
from .base import Policy

_KEY_REST = re.compile(r"[a-z0-9_\-*/]*")


def _key_ok(key: str) -> bool:
    tenant, at, system = key.partition("@")
    if not at:
        return _part_ok(key, 255, lambda c: "a" <= c <= "z")
    return _part_ok(tenant, 240, lambda c: "a" <= c <= "z" or "0" <= c <= "9") and _part_ok(
        system, 13, lambda c: "a" <= c <= "z"
    )


def _part_ok(part: str, n: int, first) -> bool:
    return bool(part) and first(part[0]) and len(part) - 1 <= n and _KEY_REST.fullmatch(part[1:]) is not None


def _value_ok(v: str) -> bool:
    if not 0 < len(v) <= 256 or not v.isascii():
        return False
    if any(not (" " <= c <= "~") or c in ",=" for c in v[:-1]):
        return False
    return "!" <= v[-1] <= "~" and v[-1] not in ",="


@lru_cache(maxsize=4096)
def parse_trace_state(ts: str) -> dict[str, str] | None:
    """The members of a W3C tracestate, or None when Go's ``ParseTraceState`` rejects it."""
    out: dict[str, str] = {}
    for member in ts.split(","):
        if member == "":
            continue
        key, eq, value = member.partition("=")
        if not eq:
            return None
        key, value = key.lstrip(" \t"), value.rstrip(" \t")
        if not _key_ok(key) or not _value_ok(value) or key in out:
            return None
        out[key] = value
        if len(out) > 32:
            return None
    return out


class TraceState(Policy):
    kind = "trace_state"

    def __init__(self, name: str, cfg):
        super().__init__(name)
        self.key = cfg.key
        self.values = frozenset(v for v in cfg.values if v and len(cfg.key) + len(v) < 256)

    def evaluate_all(self, view):
        col = view.column("trace_state")
        if col is None:
            return filled(view.n, NS)
        col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
        enc = pc.dictionary_encode(col.cast(pa.string()))
        hits = []
        for ts in enc.dictionary.to_pylist():
            members = parse_trace_state(ts) if ts else None
            hits.append(members is not None and members.get(self.key) in self.values)
        rows = pc.take(pa.array(hits, pa.bool_()), enc.indices)
        return from_bool(view.any_per_trace(rows))
