"""Typed configuration of alert rules, routing, grouping and inhibition (Alertmanager's
names and semantics)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from transforms.rollup.config import duration_ms

_MATCHER = re.compile(r'^\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"?(.*?)"?\s*$')
VALUE_FIELDS = ("count", "sum", "min", "max", "last", "avg", "increase", "rate", "p50", "p90", "p95", "p99")


class Matcher(BaseModel):
    """An Alertmanager label matcher: ``name="v"``, ``name!="v"``, ``name=~"re"``, ``name!~"re"``
    (regexes are anchored, as in Alertmanager)."""

    name: str
    op: str
    value: str

    @classmethod
    def parse(cls, text: str) -> "Matcher":
        m = _MATCHER.match(text)
        if not m:
            raise ValueError(f"expected a matcher like severity=\"P0\", got {text!r}")
        return cls(name=m.group(1), op=m.group(2), value=m.group(3))

    def matches(self, labels: dict) -> bool:
        v = labels.get(self.name, "")
        if self.op == "=":
            return v == self.value
        if self.op == "!=":
            return v != self.value
        hit = re.fullmatch(self.value, v) is not None
        return hit if self.op == "=~" else not hit


def _matchers(v):
    return [x if isinstance(x, Matcher) else Matcher.parse(x) for x in (v or [])]


class Selector(BaseModel):
    """Rollup rows of one metric: name, resolution, label equalities, and the value column."""

    model_config = ConfigDict(extra="forbid")

    metric: str
    match: dict[str, str] = Field(default_factory=dict)
    value: str = "last"

    @field_validator("value")
    @classmethod
    def _v(cls, v):
        if v not in VALUE_FIELDS:
            raise ValueError(f"expected one of {', '.join(VALUE_FIELDS)}, got {v!r}")
        return v


class AlertRule(BaseModel):
    """One alert rule over rollup rows, evaluated at each close of a window of ``resolution``.

    * ``threshold``: ``select`` value (or ``select / ratio_of`` joined on the labels in ``on``)
      compared with ``op`` ``threshold``;
    * ``anomaly``: value more than ``k`` standard deviations from the mean of the series'
      previous ``baseline_windows`` values (evaluated once that many are known);
    * ``absence``: a series seen before has had no row for ``absent_for``.

    ``for``: how long the condition must hold (pending) before firing; ``keep_firing_for``:
    how long a firing alert stays firing after the condition stops holding."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str
    type: Literal["threshold", "anomaly", "absence"] = "threshold"
    resolution: str = "1m"
    select: Selector
    ratio_of: Selector | None = None
    on: list[str] | None = None
    op: Literal[">", ">=", "<", "<=", "==", "!="] = ">"
    threshold: float | None = None
    k: float = 3.0
    baseline_windows: int = Field(10, ge=2)
    absent_for: str = "5m"
    for_: str = Field("0s", alias="for")
    keep_firing_for: str = "0s"
    severity: Literal["P0", "P1", "P2"] = "P2"
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict, description="summary, description, runbook_url; {{ $value }} and {{ $labels.x }} are expanded")

    @field_validator("resolution", "absent_for", "for_", "keep_firing_for")
    @classmethod
    def _dur(cls, v):
        duration_ms(v)
        return str(v)

    @model_validator(mode="after")
    def _check(self):
        if self.type == "threshold" and self.threshold is None:
            raise ValueError("a threshold rule needs threshold")
        return self


class InhibitRule(BaseModel):
    """Mute alerts matching ``target_matchers`` while an alert matching ``source_matchers``
    fires with the same values of the ``equal`` labels."""

    model_config = ConfigDict(extra="forbid")

    source_matchers: list[Matcher]
    target_matchers: list[Matcher]
    equal: list[str] = Field(default_factory=list)

    _p = field_validator("source_matchers", "target_matchers", mode="before")(classmethod(lambda cls, v: _matchers(v)))


class RouteConfig(BaseModel):
    """The root route: grouping and timing, and the receiver per severity."""

    model_config = ConfigDict(extra="forbid")

    receiver: str = "default"
    severity_receivers: dict[str, str] = Field(default_factory=lambda: {"P0": "pager", "P1": "pager", "P2": "ticket"})
    group_by: list[str] = Field(default_factory=lambda: ["alertname"], description="['...'] groups by all labels")
    group_wait: str = "30s"
    group_interval: str = "5m"
    repeat_interval: str = "4h"

    @field_validator("group_wait", "group_interval", "repeat_interval")
    @classmethod
    def _dur(cls, v):
        duration_ms(v)
        return str(v)


class AlertingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rules: list[AlertRule] = Field(default_factory=list)
    route: RouteConfig = Field(default_factory=RouteConfig)
    inhibit_rules: list[InhibitRule] = Field(default_factory=list)
    external_url: str = "http://obsflow.local"
