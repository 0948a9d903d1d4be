"""Rules and notification together: the object an engine hosts for alerting.

``process(rows)`` takes closed-window rollup rows and returns every alert state change
(``changes``: pending, inactive, firing, resolved → ``obs.alerts``), the firing / resolved
ones (``events`` → the Kafka alerts topic, Alertmanager, the dispatcher; Prometheus sends
only those), the re-sends of still-firing alerts (``resends`` → Alertmanager only, every
``resend_delay``, each with a fresh ``endsAt``) and the notifications due by the latest
window end; ``advance(t)`` moves the notification clock on without rows."""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field

import pyarrow as pa

from transforms.alerting.config import AlertingConfig
from transforms.alerting.dispatch import Dispatcher, Notification
from transforms.alerting.events import AlertEvent, alert_rows
from transforms.alerting.rules import RuleEvaluator
from transforms.rollup.config import duration_ms


NOTIFIED = ("firing", "resolved")


@dataclass
class AlertOutput:
    events: list[AlertEvent] = field(default_factory=list)  # firing / resolved
    notifications: list[Notification] = field(default_factory=list)
    changes: list[AlertEvent] = field(default_factory=list)  # every state change, pending included
    resends: list[AlertEvent] = field(default_factory=list)  # still-firing alerts re-sent (Alertmanager only)

    def rows(self) -> pa.Table:
        """``obs.alerts`` rows: every state change."""
        return alert_rows(self.changes)


def _split(out: list[AlertEvent]) -> tuple[list[AlertEvent], list[AlertEvent]]:
    """(state changes, re-sends) of an evaluation's events, each in order."""
    return [e for e in out if not e.resend], [e for e in out if e.resend]


class AlertEngine:
    def __init__(self, config: AlertingConfig | dict | None = None):
        self.config = config if isinstance(config, AlertingConfig) else AlertingConfig(**(config or {}))
        self.rules = RuleEvaluator(self.config.rules, duration_ms(self.config.resend_delay))
        self.dispatcher = Dispatcher(self.config)

    def process(self, rows: pa.Table) -> AlertOutput:
        changes, resends = _split(self.rules.evaluate(rows))
        events = [e for e in changes if e.status in NOTIFIED]
        notes = self.dispatcher.add(events)
        if rows.num_rows:
            import pyarrow.compute as pc

            t = pc.max(rows.column("window_end")).cast(pa.timestamp("ms", tz="UTC")).value
            notes += self.dispatcher.advance(t)
        return AlertOutput(events, notes, changes, resends)

    def tick(self, resolution_ms: int, t: int) -> AlertOutput:
        """A window of ``resolution_ms`` closed at ``t`` with no rows (absence rules need it)."""
        changes, resends = _split(self.rules.tick(resolution_ms, t))
        events = [e for e in changes if e.status in NOTIFIED]
        notes = self.dispatcher.add(events) + self.dispatcher.advance(t)
        return AlertOutput(events, notes, changes, resends)

    def advance(self, t: int) -> AlertOutput:
        return AlertOutput([], self.dispatcher.advance(t))

    def snapshot(self) -> bytes:
        return pickle.dumps(
            {
                "config": self.config.model_dump(by_alias=True),
                "rules": self.rules.snapshot(),
                "dispatch": self.dispatcher.snapshot(),
            },
            protocol=5,
        )

    def restore(self, blob: bytes) -> None:
        doc = pickle.loads(blob)
        doc["config"].setdefault("resend_delay", "1m")  # snapshots from before resend_delay had its default
        if doc["config"] != self.config.model_dump(by_alias=True):
            raise ValueError("snapshot was taken with a different alerting config")
        self.rules.restore(doc["rules"])
        self.dispatcher.restore(doc["dispatch"])
