"""Typed configuration of alert rules, routing, grouping and inhibition (Alertmanager's
names and semantics)."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from core.durations import MIN_WINDOW, Duration, duration_ms, format_duration

_MATCHER = re.compile(r'^\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"?(.*?)"?\s*$')
VALUE_FIELDS = ("count", "sum", "min", "max", "last", "avg", "increase", "rate", "p50", "p75", "p90", "p95", "p99")


class Matcher(BaseModel):
    """An Alertmanager label matcher: ``name="v"``, ``name!="v"``, ``name=~"re"``, ``name!~"re"``
    (regexes are anchored, as in Alertmanager)."""

    name: str = Field(description="the label's name")
    op: str = Field(description="=, !=, =~ or !~")
    value: str = Field(description="the value, or an anchored regular expression for =~ and !~")

    @classmethod
    def parse(cls, text: str) -> Matcher:
        m = _MATCHER.match(text)
        if not m:
            raise ValueError(f'expected a matcher like severity="P0", got {text!r}')
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
    """A list of matchers from a list of matcher texts; ``ValueError`` for anything else."""
    if v is None:
        return []
    if not isinstance(v, list):
        raise ValueError(f'expected a list of matchers like [severity="P0"], got {type(v).__name__} {v!r:.60}')  # noqa: TRY004 - pydantic reports ValueError
    for x in v:
        if not isinstance(x, (str, Matcher)):
            raise ValueError(f'expected a matcher like severity="P0", got {type(x).__name__} {x!r:.60}')  # noqa: TRY004
    return [x if isinstance(x, Matcher) else Matcher.parse(x) for x in v]


class Selector(BaseModel):
    """Rollup rows of one metric: name, resolution, label equalities, and the value column."""

    model_config = ConfigDict(extra="forbid")

    metric: str = Field(description="the rollup metric's name")
    match: dict[str, str] = Field(default_factory=dict, description="label equalities the rows must have")
    value: str = Field("last", description="the value column: " + " ".join(VALUE_FIELDS))

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

    model_config = ConfigDict(extra="forbid", populate_by_name=True, allow_inf_nan=False)

    name: str = Field(description="the rule's name: the alert's alertname label")
    type: Literal["threshold", "anomaly", "absence"] = Field("threshold", description="threshold, anomaly or absence")
    resolution: Duration = Field(
        timedelta(minutes=1), ge=MIN_WINDOW, description="the rollup resolution whose window closes evaluate the rule"
    )
    select: Selector = Field(description="the rows evaluated: {metric, match: {label: value}, value}")
    ratio_of: Selector | None = Field(None, description="denominator selector (value = select / ratio_of)")
    on: list[str] | None = Field(None, description="labels joining numerator and denominator (null: all labels)")
    op: Literal[">", ">=", "<", "<=", "==", "!="] = Field(
        ">", description="threshold: the comparison of value with threshold"
    )
    threshold: float | None = Field(
        None, description="threshold: the number compared with (required for threshold rules)"
    )
    k: float = Field(3.0, ge=0, le=1e6, description="anomaly: standard deviations from the mean")
    baseline_windows: int = Field(10, ge=2, le=100_000, description="anomaly: how many previous values make the mean")
    absent_for: Duration = Field(
        timedelta(minutes=5), ge=MIN_WINDOW, description="absence: how long a series seen before may have no row"
    )
    for_: Duration = Field(timedelta(0), alias="for", description="how long the condition holds before firing")
    keep_firing_for: Duration = Field(
        timedelta(0), description="how long a firing alert stays firing after the condition stops"
    )
    severity: Literal["P0", "P1", "P2"] = Field("P2", description="the severity label: P0, P1 or P2")
    labels: dict[str, str] = Field(default_factory=dict, description="extra alert labels")
    annotations: dict[str, str] = Field(
        default_factory=dict,
        description="summary, description, runbook_url; {{ $value }} and {{ $labels.x }} are expanded",
    )

    @model_validator(mode="after")
    def _check(self):
        if self.type == "threshold" and self.threshold is None:
            raise ValueError("a threshold rule needs threshold")
        return self


class InhibitRule(BaseModel):
    """Mute alerts matching ``target_matchers`` while an alert matching ``source_matchers``
    fires with the same values of the ``equal`` labels."""

    model_config = ConfigDict(extra="forbid")

    source_matchers: list[Matcher] = Field(description='matchers of the muting alerts, like severity="P0"')
    target_matchers: list[Matcher] = Field(description="matchers of the alerts that get muted")
    equal: list[str] = Field(default_factory=list, description="labels whose values must be equal in source and target")

    _p = field_validator("source_matchers", "target_matchers", mode="before")(classmethod(lambda cls, v: _matchers(v)))


class RouteConfig(BaseModel):
    """A node of Alertmanager's routing tree (same keys and semantics as its ``route``).

    An alert enters at the root and descends into the first child whose ``matchers`` all
    match its labels (recursively); with ``continue: true`` on that child it goes on to
    try the following siblings too. It is handled by every deepest route it matched, or by
    the node itself when no child matched. ``receiver``, ``group_by``, ``group_wait``,
    ``group_interval`` and ``repeat_interval`` unset on a child are inherited from its
    parent; the root has no matchers and gets the defaults below."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    receiver: str | None = Field(
        None, description="receiver of the alerts that land on this route (root: default); inherited"
    )
    group_by: list[str] | None = Field(
        None, description="grouping labels (root: [alertname]); ['...'] groups by all labels; inherited"
    )
    group_wait: Duration | None = Field(
        None, description="wait before a new group's first notification (root: 30s); inherited"
    )
    group_interval: Duration | None = Field(
        None, ge=MIN_WINDOW, description="between flushes of a group (root: 5m); inherited"
    )
    repeat_interval: Duration | None = Field(
        None, ge=MIN_WINDOW, description="re-notify unchanged firing groups (root: 4h); inherited"
    )
    matchers: list[Matcher] = Field(
        default_factory=list,
        description='matchers like severity="P0", team=~"pay.*"; all must match; the root has none',
    )
    continue_: bool = Field(False, alias="continue", description="after matching, go on trying the following siblings")
    routes: list[RouteConfig] = Field(default_factory=list, description="child routes, with these same keys")

    _p = field_validator("matchers", mode="before")(classmethod(lambda cls, v: _matchers(v)))

    @model_validator(mode="before")
    @classmethod
    def _removed(cls, v):
        if isinstance(v, dict) and "severity_receivers" in v:
            raise ValueError(
                "severity_receivers was removed: route by severity with child routes, e.g. "
                "routes: [{matchers: ['severity=\"P0\"'], receiver: pager}]"
            )
        return v

    def receiver_names(self) -> list[str]:
        out = [self.receiver] if self.receiver else []
        for r in self.routes:
            out += [n for n in r.receiver_names() if n not in out]
        return out


ROOT_DEFAULTS = {
    "receiver": "default",
    "group_by": ["alertname"],
    "group_wait": "30s",
    "group_interval": "5m",
    "repeat_interval": "4h",
}


def default_route() -> RouteConfig:
    """The default tree: P0 and P1 → ``pager``, P2 → ``ticket``, anything else → ``default``."""
    return RouteConfig(
        **ROOT_DEFAULTS,
        routes=[
            RouteConfig(matchers=['severity=~"P0|P1"'], receiver="pager"),
            RouteConfig(matchers=['severity="P2"'], receiver="ticket"),
        ],
    )


class Receiver(BaseModel):
    """An Alertmanager receiver: ``name``, plus any of its integration keys
    (``webhook_configs`` ...), passed through as given into the generated Alertmanager config."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(description="the name routes refer to")


class AlertingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rules: list[AlertRule] = Field(default_factory=list, description="alert rules (keys below)")
    route: RouteConfig = Field(
        default_factory=default_route,
        description="Alertmanager's route tree; by default P0 and P1 go to "
        "pager, P2 to ticket, the rest to default; a route given in the spec replaces the whole tree",
    )
    receivers: list[Receiver] | None = Field(
        None,
        description="[{name, ...}]: other keys (webhook_configs...) pass through to "
        "the generated Alertmanager config; every receiver the route names must be "
        "listed; default: the names the route uses",
    )
    inhibit_rules: list[InhibitRule] = Field(
        default_factory=list, description="alerts muted while others fire (keys below)"
    )
    external_url: str = Field("http://obsflow.local", description="generator URL base")
    resend_delay: str = Field(
        "1m",
        description="re-send still-firing alerts to Alertmanager this often (Prometheus' "
        "--rules.alert.resend-delay); each send's endsAt is 4 x max(resend_delay, "
        "the rule's resolution) ahead",
    )

    @field_validator("resend_delay")
    @classmethod
    def _resend(cls, v):
        if duration_ms(v) <= 0:
            raise ValueError(f"expected a duration above 0, got {v!r}")
        return str(v)

    def validity_ms(self, rule: AlertRule) -> int:
        """How far ahead of each send a firing alert's ``endsAt`` is (Prometheus' ValidUntil):
        4 x max(``resend_delay``, the rule's evaluation interval = its ``resolution``)."""
        return 4 * max(duration_ms(self.resend_delay), duration_ms(rule.resolution))

    def resolve_timeout_ms(self) -> int:
        """The generated Alertmanager's ``resolve_timeout``: the longest validity of any rule
        (only used for alerts posted without ``endsAt``, which obsflow never sends)."""
        return max([self.validity_ms(r) for r in self.rules] or [4 * duration_ms(self.resend_delay)])

    @model_validator(mode="after")
    def _route(self):
        r = self.route
        if r.matchers:
            raise ValueError("route: the root route must not have matchers (Alertmanager)")
        missing = {k: v for k, v in ROOT_DEFAULTS.items() if getattr(r, k) is None}
        if missing:
            self.route = r.model_copy(update=missing)
        if self.receivers is not None:
            names = [x.name for x in self.receivers]
            if len(set(names)) != len(names):
                raise ValueError("receivers: names must be distinct")
            undefined = [n for n in self.route.receiver_names() if n not in names]
            if undefined:
                raise ValueError(f"route: undefined receiver(s) {', '.join(undefined)} (not in receivers)")
        return self

    def receiver_list(self) -> list[Receiver]:
        return (
            list(self.receivers)
            if self.receivers is not None
            else [Receiver(name=n) for n in self.route.receiver_names()]
        )

    def alertmanager_config(self) -> dict:
        """This routing, receivers and inhibition as a Prometheus Alertmanager configuration
        (the dict of ``alertmanager.yml``), so a real Alertmanager routes exactly as
        :class:`transforms.alerting.Dispatcher` does. ``global.resolve_timeout`` is the
        alerts' validity (:meth:`resolve_timeout_ms`): firing alerts are re-sent every
        ``resend_delay`` with an ``endsAt`` that far ahead."""

        def fmt_m(ms):
            return [f"{m.name}{m.op}{json.dumps(m.value)}" for m in ms]

        def node(r: RouteConfig) -> dict:
            d: dict[str, object] = {}
            if r.receiver is not None:
                d["receiver"] = r.receiver
            if r.group_by is not None:
                d["group_by"] = list(r.group_by)
            for k in ("group_wait", "group_interval", "repeat_interval"):
                if getattr(r, k) is not None:
                    ms = duration_ms(getattr(r, k))
                    d[k] = format_duration(ms) if ms else "0s"
            if r.matchers:
                d["matchers"] = fmt_m(r.matchers)
            if r.continue_:
                d["continue"] = True
            if r.routes:
                d["routes"] = [node(c) for c in r.routes]
            return d

        out = {
            "global": {"resolve_timeout": format_duration(self.resolve_timeout_ms())},
            "route": node(self.route),
            "receivers": [x.model_dump() for x in self.receiver_list()],
        }
        if self.inhibit_rules:
            out["inhibit_rules"] = [
                {
                    "source_matchers": fmt_m(i.source_matchers),
                    "target_matchers": fmt_m(i.target_matchers),
                    "equal": list(i.equal),
                }
                for i in self.inhibit_rules
            ]
        return out

    def alertmanager_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.alertmanager_config(), sort_keys=False)
