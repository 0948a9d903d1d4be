"""Sampling policies, one module per kind, with the OpenTelemetry Collector's names.

``build_policy(cfg)`` turns a validated policy config into its evaluator."""

from __future__ import annotations


from .always_sample import AlwaysSample
from .and_ import And
from .base import Policy
from .boolean_attribute import BooleanAttribute
from .bytes_limiting import BytesLimiting
from .composite import Composite
from .drop import Drop
from .latency import Latency
from .not_ import Not
from .numeric_attribute import NumericAttribute
from .probabilistic import Probabilistic
from .rate_limiting import RateLimiting
from .span_count import SpanCount
from .status_code import StatusCode
from .string_attribute import StringAttribute
from .trace_flags import TraceFlags
from .trace_state import TraceState

_LEAVES = {
    "always_sample": (AlwaysSample, None),
    "latency": (Latency, "latency"),
    "status_code": (StatusCode, "status_code"),
    "probabilistic": (Probabilistic, "probabilistic"),
    "rate_limiting": (RateLimiting, "rate_limiting"),
    "bytes_limiting": (BytesLimiting, "bytes_limiting"),
    "string_attribute": (StringAttribute, "string_attribute"),
    "numeric_attribute": (NumericAttribute, "numeric_attribute"),
    "boolean_attribute": (BooleanAttribute, "boolean_attribute"),
    "span_count": (SpanCount, "span_count"),
    "trace_state": (TraceState, "trace_state"),
    "trace_flags": (TraceFlags, None),
}


def build_policy(cfg) -> Policy:
    t = cfg.type
    if t in _LEAVES:
        cls, attr = _LEAVES[t]
        return cls(cfg.name, getattr(cfg, attr) if attr else None)
    if t == "and":
        return And(cfg.name, [build_policy(p) for p in cfg.and_.and_sub_policy])
    if t == "drop":
        return Drop(cfg.name, [build_policy(p) for p in cfg.drop.drop_sub_policy])
    if t == "not":
        return Not(cfg.name, build_policy(cfg.not_.not_sub_policy))
    if t == "composite":
        subs = {p.name: build_policy(p) for p in cfg.composite.composite_sub_policy}
        return Composite(cfg.name, cfg.composite, subs)
    raise ValueError(f"unknown policy type {t!r}")


__all__ = [
    "Policy",
    "build_policy",
    "AlwaysSample",
    "And",
    "BooleanAttribute",
    "BytesLimiting",
    "Composite",
    "Drop",
    "Latency",
    "Not",
    "NumericAttribute",
    "Probabilistic",
    "RateLimiting",
    "SpanCount",
    "StatusCode",
    "StringAttribute",
    "TraceFlags",
    "TraceState",
]
