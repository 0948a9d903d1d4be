"""Alertmanager's notification pipeline in event time: routing by severity, grouping
(``group_by``), the timers ``group_wait`` / ``group_interval`` / ``repeat_interval``,
deduplication, and inhibition (``source_matchers``, ``target_matchers``, ``equal``).

Consumes :class:`AlertEvent` s (``add(events)``) and the event-time clock
(``advance(t)``); emits :class:`Notification` s — what each receiver would be sent, when.

Semantics, as Alertmanager's: an alert goes to the receiver of its ``severity`` (else the
route's ``receiver``) and into the group of its ``group_by`` label values (``["..."]`` = all
labels). A new group is flushed ``group_wait`` after its first alert, then every
``group_interval``. A flush notifies when a firing alert was not in the last notification,
when alerts resolved since, or when ``repeat_interval`` passed since the last notification
with the same firing alerts. Resolved alerts leave the group once notified; an empty group
is removed. An alert is *inhibited* (left out of the notification, counted) while a firing
alert matching ``source_matchers`` and not itself matching ``target_matchers`` has the same
values of the ``equal`` labels; inhibition is decided at flush time."""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field

from transforms.alerting.config import AlertingConfig
from transforms.alerting.events import AlertEvent
from transforms.rollup.config import duration_ms


@dataclass
class Notification:
    at: int
    receiver: str
    group_key: str
    group_labels: dict
    status: str  # firing if any alert fires, else resolved
    alerts: list[AlertEvent] = field(default_factory=list)
    repeat: bool = False  # only the repeat_interval elapsed


class Dispatcher:
    def __init__(self, config: AlertingConfig):
        self.config = config
        r = config.route
        self.wait, self.interval, self.repeat = duration_ms(r.group_wait), duration_ms(r.group_interval), duration_ms(r.repeat_interval)
        self.groups: dict[str, dict] = {}
        self.firing: dict[str, AlertEvent] = {}  # every firing alert, by fingerprint (inhibition sources)
        self.inhibited: list[tuple[int, str]] = []  # (flush time, fingerprint) of alerts left out
        self.now: int | None = None

    def _route(self, e: AlertEvent) -> tuple[str, str, dict]:
        receiver = self.config.route.severity_receivers.get(e.severity, self.config.route.receiver)
        gb = self.config.route.group_by
        glabels = dict(e.labels) if gb == ["..."] else {k: e.labels.get(k, "") for k in gb}
        key = receiver + ":{" + ",".join(f'{k}="{v}"' for k, v in sorted(glabels.items())) + "}"
        return receiver, key, glabels

    def add(self, events: list[AlertEvent]) -> list[Notification]:
        """Take alert state changes (in event time); flushes due before them run first."""
        out = []
        for e in events:
            out.extend(self.advance(e.at))
            if e.status == "firing":
                self.firing[e.fingerprint] = e
            else:
                self.firing.pop(e.fingerprint, None)
            receiver, key, glabels = self._route(e)
            g = self.groups.get(key)
            if g is None:
                g = self.groups[key] = {"receiver": receiver, "labels": glabels, "alerts": {}, "next": e.at + self.wait,
                                        "sent": None}
            g["alerts"][e.fingerprint] = e
        return out

    def _inhibited(self, e: AlertEvent) -> bool:
        for rule in self.config.inhibit_rules:
            if not all(m.matches(e.labels) for m in rule.target_matchers):
                continue
            for src in self.firing.values():
                if src.fingerprint == e.fingerprint or not all(m.matches(src.labels) for m in rule.source_matchers):
                    continue
                if all(m.matches(src.labels) for m in rule.target_matchers):
                    continue  # an alert matching both sides cannot inhibit (Alertmanager)
                if all(src.labels.get(k, "") == e.labels.get(k, "") for k in rule.equal):
                    return True
        return False

    def advance(self, t: int) -> list[Notification]:
        """Run every flush due at or before ``t``, in time order."""
        out = []
        self.now = t if self.now is None else max(self.now, t)
        while True:
            due = [(g["next"], k) for k, g in self.groups.items() if g["next"] <= t]
            if not due:
                return out
            at, key = min(due)
            n = self._flush(key, at)
            if n is not None:
                out.append(n)

    def _flush(self, key: str, at: int) -> Notification | None:
        g = self.groups[key]
        alerts = [e for _, e in sorted(g["alerts"].items())]
        send = []
        for e in alerts:
            if e.status == "firing" and self._inhibited(e):
                self.inhibited.append((at, e.fingerprint))
                continue
            send.append(e)
        firing = {e.fingerprint for e in send if e.status == "firing"}
        resolved = {e.fingerprint for e in send if e.status == "resolved"}
        sent = g["sent"]
        repeat = False
        if sent is None:
            notify = bool(firing)
        elif not firing <= sent["firing"]:
            notify = True
        elif not firing and sent["firing"]:
            notify = True
        elif not resolved <= sent["resolved"]:
            notify = True
        else:
            notify = bool(firing) and at - sent["at"] >= self.repeat
            repeat = notify
        note = None
        if notify:
            note = Notification(at, g["receiver"], key, dict(g["labels"]), "firing" if firing else "resolved", send, repeat)
            g["sent"] = {"firing": firing, "resolved": resolved, "at": at}
        for e in alerts:
            if e.status == "resolved":
                del g["alerts"][e.fingerprint]
        if not g["alerts"]:
            del self.groups[key]
        else:
            g["next"] = at + self.interval
        return note

    def snapshot(self) -> bytes:
        return pickle.dumps({"groups": self.groups, "firing": self.firing, "inhibited": self.inhibited, "now": self.now}, protocol=5)

    def restore(self, blob: bytes) -> None:
        self.__dict__.update(pickle.loads(blob))
