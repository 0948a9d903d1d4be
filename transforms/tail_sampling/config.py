"""Typed configuration of the tail sampler, with the OpenTelemetry Collector
``tail_sampling`` processor's key names (see README.md in this package for every key and
its default).

``load_config(dict)`` validates a mapping and raises :class:`ConfigError` whose message
names the key path, e.g. ``policies[1].latency.threshold_ms: Input should be a valid
integer``."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from core.durations import Duration, parse_duration
from core.errors import ConfigurationError

__all__ = ["ConfigError", "Duration", "TailSamplingConfig", "load_config", "parse_duration"]

#: the largest count any key accepts
_MAX_COUNT = 1_000_000_000
#: the largest millisecond threshold (100 years)
_MAX_MS = 36500 * 86_400_000

#: why ottl_condition is refused (README: "The Collector (v0.161.0) and us")
OTTL_REFUSED = (
    "ottl_condition is not supported: OTTL is a language of its own (paths into span, resource, scope and "
    "events, converters, error modes) and a partial evaluator would decide differently from the Collector "
    "without saying so; express the condition with string_attribute / numeric_attribute / boolean_attribute / "
    "status_code / latency / span_count combined with and / not / drop"
)


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


# -- policy bodies ------------------------------------------------------------------------

#: the largest millisecond / span / byte count a key takes (about 292 years in ms; int64 ns overflow beyond)
MAX_MS = 9_223_372_036_854
MAX_I64 = 2**63 - 1


class LatencyCfg(Model):
    threshold_ms: int = Field(
        ge=0,
        le=MAX_MS,
        description="sampled when the trace duration (earliest span start to latest span end) is above this many ms",
    )
    upper_threshold_ms: int = Field(
        0, ge=0, le=MAX_MS, description="inclusive upper bound of the duration in ms; 0 = no upper bound"
    )

    @model_validator(mode="after")
    def _bounds(self):
        if self.upper_threshold_ms and self.upper_threshold_ms < self.threshold_ms:
            raise ValueError("upper_threshold_ms must be 0 (no bound) or >= threshold_ms")
        return self


StatusName = Literal["OK", "ERROR", "UNSET"]


class StatusCodeCfg(Model):
    status_codes: list[StatusName] = Field(
        min_length=1, description="sampled when any span has one of these: OK, ERROR, UNSET"
    )


class ProbabilisticCfg(Model):
    """``sampling_percentage`` above 100 is accepted and samples every trace (as the
    Collector, whose threshold saturates at 2^64-1); the adjusted count is then 1."""

    hash_salt: str = Field("", description='salt of the trace-id hash; "" = the Collector\'s default-hash-seed')
    sampling_percentage: float = Field(ge=0, le=1e9, allow_inf_nan=False, description="0..100 (above 100: every trace)")


class RateLimitingCfg(Model):
    """``rate_limiting``: the Collector's keys ``spans_per_second`` and ``burst_capacity``;
    ``algorithm`` is an obsflow extension (see policies/rate_limiting.py)."""

    spans_per_second: int = Field(gt=0, le=MAX_I64 // 2, description="spans sampled per second of the decision clock")
    algorithm: Literal["token_bucket", "per_second"] = Field(
        "token_bucket", description="token_bucket: the Collector's; per_second: earlier Collector releases' counter"
    )
    burst_capacity: int = Field(
        0,
        ge=0,
        le=MAX_I64,
        description="token_bucket only: bucket size; 0 = 2 x spans_per_second (the Collector's default)",
    )


class BytesLimitingCfg(Model):
    bytes_per_second: int = Field(
        gt=0, le=MAX_I64 // 2, description="estimated trace bytes sampled per second of the decision clock"
    )
    burst_capacity: int = Field(0, ge=0, le=MAX_I64, description="token bucket size; 0 = 2 x bytes_per_second")


class StringAttributeCfg(Model):
    key: str = Field(min_length=1, description="the resource or span attribute read")
    values: list[str] = Field(
        min_length=1, description="sampled when the string value equals one of these (or matches one, with regexes)"
    )
    enabled_regex_matching: bool = Field(False, description="true: values are regular expressions (unanchored)")
    cache_max_size: int = Field(
        0, ge=0, le=MAX_I64, description="accepted for compatibility; regexes run vectorized, no cache"
    )
    invert_match: bool = Field(False, description="true: sampled when no value matches")

    @model_validator(mode="after")
    def _regexes(self):
        if self.enabled_regex_matching:
            for v in self.values:
                try:
                    re.compile(v)
                except re.error as e:
                    raise ValueError(f"values: {v!r} is not a regular expression: {e}") from None
        return self


class NumericAttributeCfg(Model):
    """Bounds are int64 (as the Collector's); unset or 0 means unbounded on that side, so at
    least one must be a non-zero number (the Collector builds no evaluator otherwise)."""

    key: str = Field(min_length=1, description="the resource or span attribute read (an int64)")
    min_value: int | None = Field(
        None, ge=-MAX_I64 - 1, le=MAX_I64, description="inclusive; unset or 0 = no lower bound"
    )
    max_value: int | None = Field(
        None, ge=-MAX_I64 - 1, le=MAX_I64, description="inclusive; unset or 0 = no upper bound"
    )
    invert_match: bool = Field(False, description="true: sampled when the value is outside the bounds")

    @model_validator(mode="after")
    def _bounds(self):
        if not self.min_value and not self.max_value:
            raise ValueError(
                "set min_value or max_value to a non-zero integer (0 or unset means unbounded on that side)"
            )
        if self.min_value and self.max_value and self.max_value < self.min_value:
            raise ValueError(f"max_value {self.max_value} is below min_value {self.min_value}")
        return self


class BooleanAttributeCfg(Model):
    key: str = Field(min_length=1, description="the resource or span attribute read")
    value: bool = Field(description="sampled when the attribute is this boolean")
    invert_match: bool = Field(False, description="true: sampled when it is not")


class SpanCountCfg(Model):
    min_spans: int = Field(ge=0, le=2**31 - 1, description="sampled when the trace has at least this many spans")
    max_spans: int = Field(0, ge=0, le=2**31 - 1, description="0 = no upper bound")

    @model_validator(mode="after")
    def _bounds(self):
        if self.max_spans and self.max_spans < self.min_spans:
            raise ValueError("max_spans must be 0 (no bound) or >= min_spans")
        return self


class TraceStateCfg(Model):
    """``trace_state``: a span's W3C ``tracestate`` holds ``key`` with one of ``values``."""

    key: str = Field(min_length=1, max_length=256, description="the W3C tracestate key")
    values: list[str] = Field(
        min_length=1, description="sampled when any span's tracestate holds the key with one of these"
    )


# -- policies -----------------------------------------------------------------------------


class _Policy(Model):
    name: str = Field(min_length=1, description="the policy's name, unique among its siblings")


class AlwaysSamplePolicy(_Policy):
    type: Literal["always_sample"] = Field(description="the policy kind")


class LatencyPolicy(_Policy):
    type: Literal["latency"] = Field(description="the policy kind")
    latency: LatencyCfg = Field(description="the latency policy's keys")


class StatusCodePolicy(_Policy):
    type: Literal["status_code"] = Field(description="the policy kind")
    status_code: StatusCodeCfg = Field(description="the status_code policy's keys")


class ProbabilisticPolicy(_Policy):
    type: Literal["probabilistic"] = Field(description="the policy kind")
    probabilistic: ProbabilisticCfg = Field(description="the probabilistic policy's keys")


class RateLimitingPolicy(_Policy):
    type: Literal["rate_limiting"] = Field(description="the policy kind")
    rate_limiting: RateLimitingCfg = Field(description="the rate_limiting policy's keys")


class BytesLimitingPolicy(_Policy):
    type: Literal["bytes_limiting"] = Field(description="the policy kind")
    bytes_limiting: BytesLimitingCfg = Field(description="the bytes_limiting policy's keys")


class StringAttributePolicy(_Policy):
    type: Literal["string_attribute"] = Field(description="the policy kind")
    string_attribute: StringAttributeCfg = Field(description="the string_attribute policy's keys")


class NumericAttributePolicy(_Policy):
    type: Literal["numeric_attribute"] = Field(description="the policy kind")
    numeric_attribute: NumericAttributeCfg = Field(description="the numeric_attribute policy's keys")


class BooleanAttributePolicy(_Policy):
    type: Literal["boolean_attribute"] = Field(description="the policy kind")
    boolean_attribute: BooleanAttributeCfg = Field(description="the boolean_attribute policy's keys")


class SpanCountPolicy(_Policy):
    type: Literal["span_count"] = Field(description="the policy kind")
    span_count: SpanCountCfg = Field(description="the span_count policy's keys")


class TraceStatePolicy(_Policy):
    type: Literal["trace_state"] = Field(description="the policy kind")
    trace_state: TraceStateCfg = Field(description="the trace_state policy's keys")


class TraceFlagsPolicy(_Policy):
    """``trace_flags``: Sampled when any span has the W3C sampled flag (bit 0 of its flags)."""

    type: Literal["trace_flags"] = Field(description="the policy kind")


class OttlConditionPolicy(_Policy):
    """``ottl_condition``: refused, with the reason (:data:`OTTL_REFUSED`), wherever it appears."""

    type: Literal["ottl_condition"] = Field(description="the policy kind")
    model_config = ConfigDict(extra="allow", frozen=True)

    @model_validator(mode="after")
    def _refuse(self):
        raise ValueError(OTTL_REFUSED)


class AndCfg(Model):
    and_sub_policy: list[SubPolicy] = Field(min_length=1, description="sampled when every sub-policy samples")


class AndPolicy(_Policy):
    type: Literal["and"] = Field(description="the policy kind")
    and_: AndCfg = Field(alias="and", description="the and policy's keys")
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class NotCfg(Model):
    not_sub_policy: SubPolicy = Field(description="Sampled and NotSampled of this sub-policy are swapped")


class NotPolicy(_Policy):
    type: Literal["not"] = Field(description="the policy kind")
    not_: NotCfg = Field(alias="not", description="the not policy's keys")
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class DropCfg(Model):
    drop_sub_policy: list[SubPolicy] = Field(
        min_length=1, description="Dropped (not kept whatever else matched) when every sub-policy samples"
    )


class DropPolicy(_Policy):
    type: Literal["drop"] = Field(description="the policy kind")
    drop: DropCfg = Field(description="the drop policy's keys")


class RateAllocation(Model):
    policy: str = Field(description="a composite_sub_policy name")
    percent: float = Field(ge=0, le=100, description="its share of max_total_spans_per_second")


class CompositeCfg(Model):
    max_total_spans_per_second: int = Field(gt=0, le=MAX_I64, description="spans per second shared by the sub-policies")
    policy_order: list[str] = Field(
        default_factory=list, description="evaluation order; empty = composite_sub_policy order"
    )
    composite_sub_policy: list[SubPolicy] = Field(
        min_length=1, description="the first (in policy_order) that samples decides, within its share"
    )
    rate_allocation: list[RateAllocation] = Field(
        default_factory=list, description="[{policy, percent}]: shares of the total"
    )
    unallocated_share: Literal["equal", "remainder"] = Field(
        "equal",
        description="ours: a sub-policy without a rate_allocation entry (or with percent 0) gets total / "
        "number of sub-policies (equal, the Collector's) or an equal part of what the entries leave (remainder)",
    )

    @model_validator(mode="after")
    def _names(self):
        names = [p.name for p in self.composite_sub_policy]
        if len(set(names)) != len(names):
            raise ValueError("composite_sub_policy names must be unique")
        for n in self.policy_order:
            if n not in names:
                raise ValueError(f"policy_order names {n!r}, which is not a composite_sub_policy")
        for a in self.rate_allocation:
            if a.policy not in names:
                raise ValueError(f"rate_allocation names {a.policy!r}, which is not a composite_sub_policy")
        if sum(a.percent for a in self.rate_allocation) > 100 + 1e-9:
            raise ValueError("rate_allocation percentages add up to more than 100")
        return self


class CompositePolicy(_Policy):
    type: Literal["composite"] = Field(description="the policy kind")
    composite: CompositeCfg = Field(description="the composite policy's keys")


_LEAVES = (
    AlwaysSamplePolicy
    | LatencyPolicy
    | StatusCodePolicy
    | ProbabilisticPolicy
    | RateLimitingPolicy
    | BytesLimitingPolicy
    | StringAttributePolicy
    | NumericAttributePolicy
    | BooleanAttributePolicy
    | SpanCountPolicy
    | TraceStatePolicy
    | TraceFlagsPolicy
    | OttlConditionPolicy
)

#: what and / not / drop / composite may hold (no drop or composite inside another policy)
SubPolicy = Annotated[_LEAVES | AndPolicy | NotPolicy, Field(discriminator="type")]
#: a top-level policy
PolicyCfg = Annotated[_LEAVES | AndPolicy | NotPolicy | DropPolicy | CompositePolicy, Field(discriminator="type")]

for _m in (AndCfg, NotCfg, DropCfg, CompositeCfg, AndPolicy, NotPolicy, DropPolicy, CompositePolicy):
    _m.model_rebuild()


# -- the processor ------------------------------------------------------------------------

#: the largest decision wait (a week): longer waits hold spans past any retention of theirs
MAX_WAIT = timedelta(days=7)
#: the largest count of traces / cache entries (memory: about 1 KiB per buffered span)
MAX_COUNT = 100_000_000


class DecisionCacheCfg(Model):
    sampled_cache_size: int = Field(
        100_000,
        ge=0,
        le=MAX_COUNT,
        description="LRU of kept trace ids: late spans are kept (Collector default 0 — it keeps decided traces in its "
        "map instead; we release them at once, so the cache is what remembers)",
    )
    non_sampled_cache_size: int = Field(
        100_000, ge=0, le=MAX_COUNT, description="LRU of not-kept trace ids: late spans counted ``late_after_drop``"
    )


class TailSamplingConfig(Model):
    decision_wait: Duration = Field(
        timedelta(seconds=30),
        description="wait after a trace's first span arrived (per ``add``'s ``now_ms``) before "
        "deciding it; at most 7 days",
    )
    decision_wait_after_root_received: Duration = Field(
        timedelta(0),
        description="when set, decide this long after the root span (no parent) arrived, if that comes "
        "first; ``0s`` = off; at most 7 days",
    )
    num_traces: int = Field(
        50_000, gt=0, le=MAX_COUNT, description="traces buffered at most (1 … 10^8); see ``num_traces_overflow``"
    )
    expected_new_traces_per_sec: int = Field(
        0, ge=0, le=MAX_COUNT, description="sizes the initial per-trace arrays (they grow anyway)"
    )
    max_trace_size: int = Field(
        10_000,
        ge=0,
        le=2**31 - 1,
        description="ours: a trace is decided as soon as it holds this many spans (``0`` = unbounded); later spans follow "
        "its decision. Counted in ``early_decisions`` / dropped reason ``max_trace_size``",
    )
    num_traces_overflow: Literal["decide_early", "drop_oldest"] = Field(
        "decide_early",
        description="ours: when ``num_traces`` is exceeded, the oldest traces (first arrival) are decided at once with "
        "the spans they have; ``drop_oldest`` drops them undecided (what the Collector does). Counted in "
        "``early_decisions`` / dropped reason ``num_traces_overflow``",
    )
    sample_on_first_match: bool = Field(
        False, description="stop evaluating a trace at the first policy that samples it"
    )
    decision_cache: DecisionCacheCfg = Field(DecisionCacheCfg(), description="caches of decided trace ids")
    # -- the Collector's v0.161.0 keys (README: "Collector keys and what they do here")
    block_on_overflow: bool = Field(
        False,
        description="``true``: ``num_traces`` never evicts or decides early; traces wait for their "
        "``decision_wait`` and the buffer may exceed ``num_traces`` (the Collector blocks its input "
        "instead; here the input is Kafka, which holds what is not read)",
    )
    sampling_strategy: Literal["trace-complete", "span-ingest"] = Field(
        "trace-complete", description="``span-ingest`` is refused with the reason (below)"
    )
    num_shards: int = Field(
        1,
        ge=1,
        le=256,
        description="accepted (1 … 256), no effect: the engine shards the trace stage by trace id, "
        "each shard with its own sampler (per-second limits are per shard)",
    )
    maximum_trace_size_bytes: int = Field(
        0,
        ge=0,
        le=MAX_I64,
        description="``0`` = off; a trace whose size (the estimate of ``policies/bytes_limiting.py``) exceeds this is not "
        "sampled at once, without evaluating the policies, and its later spans are dropped (non-sampled "
        "cache): dropped reason ``maximum_trace_size_bytes``",
    )
    drop_pending_traces_on_shutdown: bool = Field(
        False,
        description="``true``: ``flush_all`` (the end of a bounded run) drops the undecided traces (dropped "
        "reason ``shutdown``) instead of deciding them",
    )
    tail_storage: str | None = Field(
        None,
        description="accepted, no effect: the spans are held by the sampler and snapshotted into the engine's state",
    )
    # -- ours
    legacy_invert_decisions: bool = Field(
        False,
        description="ours: ``true``: ``invert_match`` policies return InvertSampled / InvertNotSampled, and "
        "InvertNotSampled vetoes every other policy (Collector releases before v0.150.0)",
    )
    policies: list[PolicyCfg] = Field(
        min_length=1, description="list of ``{name, type, <type>: {...}}``; names unique (see Policies)"
    )

    @model_validator(mode="after")
    def _unique_names(self):
        names = [p.name for p in self.policies]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"duplicate policy name(s): {', '.join(dup)}")
        return self

    @field_validator("sampling_strategy")
    @classmethod
    def _strategy(cls, v: str) -> str:
        if v == "span-ingest":
            raise ValueError(
                "span-ingest is not supported: it decides on each arriving batch alone, so a trace's fate "
                "would depend on how its spans were split into Kafka messages and engine batches; use "
                "trace-complete (the default) with decision_wait_after_root_received for early decisions"
            )
        return v

    @field_validator("decision_wait", "decision_wait_after_root_received")
    @classmethod
    def _wait_bound(cls, v: timedelta) -> timedelta:
        if v > MAX_WAIT:
            raise ValueError(f"{v.total_seconds():g}s is longer than the bound of {MAX_WAIT.days} days")
        return v

    @property
    def decision_wait_ms(self) -> int:
        return round(self.decision_wait.total_seconds() * 1000)

    @property
    def decision_wait_after_root_ms(self) -> int:
        return round(self.decision_wait_after_root_received.total_seconds() * 1000)


class ConfigError(ConfigurationError, ValueError):
    """A wrong tail sampling configuration; the message names the key path."""


_TAGS = {
    "always_sample",
    "latency",
    "status_code",
    "probabilistic",
    "rate_limiting",
    "bytes_limiting",
    "string_attribute",
    "numeric_attribute",
    "boolean_attribute",
    "span_count",
    "trace_state",
    "trace_flags",
    "ottl_condition",
    "and",
    "not",
    "drop",
    "composite",
}


def _refused(data: Any, path: str = "policies") -> str | None:
    """The key path of an ``ottl_condition`` policy anywhere in ``data``, or None."""
    if isinstance(data, dict):
        if data.get("type") == "ottl_condition":
            return path
        for k, v in data.items():
            if isinstance(v, (dict, list)):
                found = _refused(v, f"{path}.{k}")
                if found:
                    return found
    elif isinstance(data, list):
        for i, v in enumerate(data):
            found = _refused(v, f"{path}[{i}]")
            if found:
                return found
    return None


def load_config(data: Any, where: str = "") -> TailSamplingConfig:
    """Validate a mapping (e.g. a spec's ``tail_sampling`` block) into a config."""
    if isinstance(data, TailSamplingConfig):
        return data
    if isinstance(data, dict):
        at = _refused(data.get("policies"))
        if at:
            raise ConfigError(f"{where}{'.' if where else ''}{at}.type: {OTTL_REFUSED}")
    try:
        return TailSamplingConfig.model_validate(data)
    except ValidationError as e:
        msgs = []
        for err in e.errors():
            loc = list(err["loc"])
            # keep the policy-type key that holds the body (policies[0].latency.threshold_ms)
            p = _loc_path(loc)
            msgs.append(f"{where}{'.' if where and p else ''}{p}: {err['msg']}")
        raise ConfigError("; ".join(msgs)) from None


def _loc_path(loc: list) -> str:
    # pydantic puts the discriminator tag before the model's own field: policies.0.latency.latency.threshold_ms
    out: list = []
    i = 0
    while i < len(loc):
        part = loc[i]
        if isinstance(part, str) and part in _TAGS and i + 1 < len(loc) and loc[i + 1] in (part, f"{part}_"):
            i += 1
            continue
        if isinstance(part, str) and part in _TAGS and (i + 1 == len(loc) or loc[i + 1] in ("name", "type")):
            i += 1
            continue
        out.append(part)
        i += 1
    s = ""
    for part in out:
        s += f"[{part}]" if isinstance(part, int) else ("." if s else "") + str(part)
    return s or "<root>"
