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
OTTL_REFUSED = ("ottl_condition is not supported: OTTL is a language of its own (paths into span, resource, scope and "
                "events, converters, error modes) and a partial evaluator would decide differently from the Collector "
                "without saying so; express the condition with string_attribute / numeric_attribute / boolean_attribute / "
                "status_code / latency / span_count combined with and / not / drop")


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


# -- policy bodies ------------------------------------------------------------------------

#: the largest millisecond / span / byte count a key takes (about 292 years in ms; int64 ns overflow beyond)
MAX_MS = 9_223_372_036_854
MAX_I64 = 2**63 - 1


class LatencyCfg(Model):
    threshold_ms: int = Field(ge=0, le=MAX_MS)
    upper_threshold_ms: int = Field(0, ge=0, le=MAX_MS, description="0 = no upper bound")

    @model_validator(mode="after")
    def _bounds(self):
        if self.upper_threshold_ms and self.upper_threshold_ms < self.threshold_ms:
            raise ValueError("upper_threshold_ms must be 0 (no bound) or >= threshold_ms")
        return self


StatusName = Literal["OK", "ERROR", "UNSET"]


class StatusCodeCfg(Model):
    status_codes: list[StatusName] = Field(min_length=1)


class ProbabilisticCfg(Model):
    """``sampling_percentage`` above 100 is accepted and samples every trace (as the
    Collector, whose threshold saturates at 2^64-1); the adjusted count is then 1."""

    hash_salt: str = ""
    sampling_percentage: float = Field(ge=0, le=1e9, allow_inf_nan=False, description="0..100 (above 100: every trace)")


class RateLimitingCfg(Model):
    """``rate_limiting``: the Collector's keys ``spans_per_second`` and ``burst_capacity``;
    ``algorithm`` is an obsflow extension (see policies/rate_limiting.py)."""

    spans_per_second: int = Field(gt=0, le=MAX_I64 // 2)
    algorithm: Literal["token_bucket", "per_second"] = Field(
        "token_bucket", description="token_bucket: the Collector's; per_second: earlier Collector releases' counter")
    burst_capacity: int = Field(0, ge=0, le=MAX_I64, description="token_bucket only: bucket size; 0 = 2 x spans_per_second (the Collector's default)")


class BytesLimitingCfg(Model):
    bytes_per_second: int = Field(gt=0, le=MAX_I64 // 2)
    burst_capacity: int = Field(0, ge=0, le=MAX_I64, description="token bucket size; 0 = 2 x bytes_per_second")


class StringAttributeCfg(Model):
    key: str = Field(min_length=1)
    values: list[str] = Field(min_length=1)
    enabled_regex_matching: bool = False
    cache_max_size: int = Field(0, ge=0, le=MAX_I64, description="accepted for compatibility; regexes run vectorized, no cache")
    invert_match: bool = False

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

    key: str = Field(min_length=1)
    min_value: int | None = Field(None, ge=-MAX_I64 - 1, le=MAX_I64, description="inclusive; unset or 0 = no lower bound")
    max_value: int | None = Field(None, ge=-MAX_I64 - 1, le=MAX_I64, description="inclusive; unset or 0 = no upper bound")
    invert_match: bool = False

    @model_validator(mode="after")
    def _bounds(self):
        if not self.min_value and not self.max_value:
            raise ValueError("set min_value or max_value to a non-zero integer (0 or unset means unbounded on that side)")
        if self.min_value and self.max_value and self.max_value < self.min_value:
            raise ValueError(f"max_value {self.max_value} is below min_value {self.min_value}")
        return self


class BooleanAttributeCfg(Model):
    key: str = Field(min_length=1)
    value: bool
    invert_match: bool = False


class SpanCountCfg(Model):
    min_spans: int = Field(ge=0, le=2**31 - 1)
    max_spans: int = Field(0, ge=0, le=2**31 - 1, description="0 = no upper bound")

    @model_validator(mode="after")
    def _bounds(self):
        if self.max_spans and self.max_spans < self.min_spans:
            raise ValueError("max_spans must be 0 (no bound) or >= min_spans")
        return self


class TraceStateCfg(Model):
    """``trace_state``: a span's W3C ``tracestate`` holds ``key`` with one of ``values``."""

    key: str = Field(min_length=1, max_length=256)
    values: list[str] = Field(min_length=1)


# -- policies -----------------------------------------------------------------------------

class _Policy(Model):
    name: str = Field(min_length=1)


class AlwaysSamplePolicy(_Policy):
    type: Literal["always_sample"]


class LatencyPolicy(_Policy):
    type: Literal["latency"]
    latency: LatencyCfg


class StatusCodePolicy(_Policy):
    type: Literal["status_code"]
    status_code: StatusCodeCfg


class ProbabilisticPolicy(_Policy):
    type: Literal["probabilistic"]
    probabilistic: ProbabilisticCfg


class RateLimitingPolicy(_Policy):
    type: Literal["rate_limiting"]
    rate_limiting: RateLimitingCfg


class BytesLimitingPolicy(_Policy):
    type: Literal["bytes_limiting"]
    bytes_limiting: BytesLimitingCfg


class StringAttributePolicy(_Policy):
    type: Literal["string_attribute"]
    string_attribute: StringAttributeCfg


class NumericAttributePolicy(_Policy):
    type: Literal["numeric_attribute"]
    numeric_attribute: NumericAttributeCfg


class BooleanAttributePolicy(_Policy):
    type: Literal["boolean_attribute"]
    boolean_attribute: BooleanAttributeCfg


class SpanCountPolicy(_Policy):
    type: Literal["span_count"]
    span_count: SpanCountCfg


class TraceStatePolicy(_Policy):
    type: Literal["trace_state"]
    trace_state: TraceStateCfg


class TraceFlagsPolicy(_Policy):
    """``trace_flags``: Sampled when any span has the W3C sampled flag (bit 0 of its flags)."""

    type: Literal["trace_flags"]


class OttlConditionPolicy(_Policy):
    """``ottl_condition``: refused, with the reason (:data:`OTTL_REFUSED`), wherever it appears."""

    type: Literal["ottl_condition"]
    model_config = ConfigDict(extra="allow", frozen=True)

    @model_validator(mode="after")
    def _refuse(self):
        raise ValueError(OTTL_REFUSED)


class AndCfg(Model):
    and_sub_policy: list[SubPolicy] = Field(min_length=1)


class AndPolicy(_Policy):
    type: Literal["and"]
    and_: AndCfg = Field(alias="and")
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class NotCfg(Model):
    not_sub_policy: SubPolicy


class NotPolicy(_Policy):
    type: Literal["not"]
    not_: NotCfg = Field(alias="not")
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class DropCfg(Model):
    drop_sub_policy: list[SubPolicy] = Field(min_length=1)


class DropPolicy(_Policy):
    type: Literal["drop"]
    drop: DropCfg


class RateAllocation(Model):
    policy: str
    percent: float = Field(ge=0, le=100)


class CompositeCfg(Model):
    max_total_spans_per_second: int = Field(gt=0, le=MAX_I64)
    policy_order: list[str] = Field(default_factory=list, description="evaluation order; empty = composite_sub_policy order")
    composite_sub_policy: list[SubPolicy] = Field(min_length=1)
    rate_allocation: list[RateAllocation] = Field(default_factory=list)
    unallocated_share: Literal["equal", "remainder"] = Field(
        "equal", description="ours: a sub-policy without a rate_allocation entry (or with percent 0) gets total / "
                             "number of sub-policies (equal, the Collector's) or an equal part of what the entries leave (remainder)")

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
    type: Literal["composite"]
    composite: CompositeCfg


_LEAVES = (AlwaysSamplePolicy | LatencyPolicy | StatusCodePolicy | ProbabilisticPolicy | RateLimitingPolicy
           | BytesLimitingPolicy | StringAttributePolicy | NumericAttributePolicy | BooleanAttributePolicy | SpanCountPolicy
           | TraceStatePolicy | TraceFlagsPolicy | OttlConditionPolicy)

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
    sampled_cache_size: int = Field(100_000, ge=0, le=MAX_COUNT)
    non_sampled_cache_size: int = Field(100_000, ge=0, le=MAX_COUNT)


class TailSamplingConfig(Model):
    decision_wait: Duration = Field(timedelta(seconds=30), description="how long a trace's spans are buffered before its decision")
    decision_wait_after_root_received: Duration = Field(timedelta(0), description="0s = off")
    num_traces: int = Field(50_000, gt=0, le=MAX_COUNT)
    expected_new_traces_per_sec: int = Field(0, ge=0, le=MAX_COUNT)
    max_trace_size: int = Field(10_000, ge=0, le=2**31 - 1, description="0 = unbounded")
    num_traces_overflow: Literal["decide_early", "drop_oldest"] = "decide_early"
    sample_on_first_match: bool = False
    decision_cache: DecisionCacheCfg = DecisionCacheCfg()
    # -- the Collector's v0.161.0 keys (README: "Collector keys and what they do here")
    block_on_overflow: bool = Field(False, description="true: num_traces never evicts; traces wait for their decision")
    sampling_strategy: Literal["trace-complete", "span-ingest"] = Field(
        "trace-complete", description="span-ingest is refused, with the reason (see README)")
    num_shards: int = Field(1, ge=1, le=256, description="accepted; the engine shards the trace stage by trace id")
    maximum_trace_size_bytes: int = Field(0, ge=0, le=MAX_I64, description="0 = off; larger traces are not sampled, at once")
    drop_pending_traces_on_shutdown: bool = Field(False, description="true: flush_all drops undecided traces")
    tail_storage: str | None = Field(None, description="accepted; spans are held in the engine's state")
    # -- ours
    legacy_invert_decisions: bool = Field(
        False, description="true: invert_match policies return InvertSampled / InvertNotSampled (Collector < v0.150.0)")
    policies: list[PolicyCfg] = Field(min_length=1)

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
            raise ValueError("span-ingest is not supported: it decides on each arriving batch alone, so a trace's fate "
                             "would depend on how its spans were split into Kafka messages and engine batches; use "
                             "trace-complete (the default) with decision_wait_after_root_received for early decisions")
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


_TAGS = {"always_sample", "latency", "status_code", "probabilistic", "rate_limiting", "bytes_limiting", "string_attribute",
         "numeric_attribute", "boolean_attribute", "span_count", "trace_state", "trace_flags", "ottl_condition", "and", "not",
         "drop", "composite"}


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
