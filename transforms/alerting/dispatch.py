"""Alertmanager's notification pipeline in event time: routing through the route tree
(``matchers``, ``continue``, inherited ``receiver`` / ``group_by`` / timers), grouping
(``group_by``), the timers ``group_wait`` / ``group_interval`` / ``repeat_interval``,
deduplication, and inhibition (``source_matchers``, ``target_matchers``, ``equal``).

Consumes :class:`AlertEvent` s (``add(events)``) and the event-time clock
(``advance(t)``); emits :class:`Notification` s — what each receiver would be sent, when.

Semantics, as Alertmanager's: an alert goes down the route tree (first matching child,
and the next siblings too while a matched child has ``continue: true``; the node itself
when no child matches) and, for each route it lands on, into that route's group of its
``group_by`` label values (``["..."]`` = all labels), notified to the route's receiver. A
new group is flushed its route's ``group_wait`` after its first alert, then every
``group_interval``. A flush notifies when a firing alert was not in the last notification,
when alerts resolved since, or when ``repeat_interval`` passed since the last notification
with the same firing alerts. Resolved alerts leave the group once flushed; an empty group
is removed.

Inhibition (Alertmanager's ``Inhibitor.Mutes``), decided at flush time: an alert matching
an inhibit rule's ``target_matchers`` is muted — left out of the notification, firing or
resolved, and recorded in ``inhibited`` — while another firing alert matches its
``source_matchers`` with the same values of the ``equal`` labels; when the target alert
itself also matches ``source_matchers``, sources that also match ``target_matchers`` do
not count (so a source matching both sides still mutes target-only alerts). Muting comes
before deduplication, as in Alertmanager's notification pipeline: when every alert of a
flush is muted nothing is sent and the group's notification log is left as it was (no
empty notification; no second notification of the same firing alert when the inhibition
ends)."""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field

from transforms.alerting.config import AlertingConfig, RouteConfig
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


@dataclass
class _Route:
    """A route with its inherited settings resolved (timers in ms)."""

    key: str
    receiver: str
    group_by: list
    wait: int
    interval: int
    repeat: int
    matchers: list
    cont: bool
    routes: list

    @classmethod
    def build(cls, r: RouteConfig, parent: _Route | None = None, index: int = 0) -> _Route:
        def pick(name, ms=False):
            v = getattr(r, name)
            if v is None:
                return getattr(
                    parent,
                    {"group_wait": "wait", "group_interval": "interval", "repeat_interval": "repeat"}.get(name, name),
                )
            return duration_ms(v) if ms else v

        ms = ",".join(f"{m.name}{m.op}{m.value!r}" for m in r.matchers)
        key = "{}" if parent is None else f"{parent.key}/{{{ms}}}/{index}"
        node = cls(
            key,
            pick("receiver"),
            list(pick("group_by")),
            pick("group_wait", True),
            pick("group_interval", True),
            pick("repeat_interval", True),
            list(r.matchers),
            r.continue_,
            [],
        )
        node.routes = [cls.build(c, node, i) for i, c in enumerate(r.routes)]
        return node

    def match(self, labels: dict) -> list[_Route]:
        """Alertmanager's ``Route.Match``: the deepest matching routes, in order."""
        if not all(m.matches(labels) for m in self.matchers):
            return []
        out = []
        for c in self.routes:
            hit = c.match(labels)
            out += hit
            if hit and not c.cont:
                break
        return out or [self]


class Dispatcher:
    def __init__(self, config: AlertingConfig):
        self.config = config
        self.root = _Route.build(config.route)
        self.groups: dict[str, dict] = {}
        self.firing: dict[str, AlertEvent] = {}  # every firing alert, by fingerprint (inhibition sources)
        self.inhibited: list[tuple[int, str]] = []  # (flush time, fingerprint) of alerts left out
        self.now: int | None = None

    def routes(self, labels: dict) -> list[tuple[_Route, str, dict]]:
        """(route, group key, group labels) of every route an alert with ``labels`` lands on."""
        out = []
        for r in self.root.match(labels):
            glabels = dict(labels) if r.group_by == ["..."] else {k: labels.get(k, "") for k in r.group_by}
            key = r.key + ":{" + ",".join(f'{k}="{v}"' for k, v in sorted(glabels.items())) + "}"
            out.append((r, key, glabels))
        return out

    def receivers(self, labels: dict) -> list[str]:
        """Receivers an alert with ``labels`` is notified to (as Alertmanager lists them)."""
        return [r.receiver for r, _, _ in self.routes(labels)]

    def add(self, events: list[AlertEvent]) -> list[Notification]:
        """Take alert state changes (in event time); flushes due before them run first."""
        out = []
        for e in events:
            out.extend(self.advance(e.at))
            if e.status == "firing":
                self.firing[e.fingerprint] = e
            else:
                self.firing.pop(e.fingerprint, None)
            for route, key, glabels in self.routes(e.labels):
                g = self.groups.get(key)
                if g is None:
                    g = self.groups[key] = {
                        "receiver": route.receiver,
                        "labels": glabels,
                        "alerts": {},
                        "next": e.at + route.wait,
                        "sent": None,
                        "interval": route.interval,
                        "repeat": route.repeat,
                    }
                g["alerts"][e.fingerprint] = e
        return out

    def _inhibited(self, e: AlertEvent) -> bool:
        """Alertmanager's ``Inhibitor.Mutes``: ``e`` matches a rule's target side and a firing
        source with equal ``equal`` labels exists; when ``e`` matches the source side too,
        sources matching both sides are skipped (``excludeTwoSidedMatch``)."""
        for rule in self.config.inhibit_rules:
            if not all(m.matches(e.labels) for m in rule.target_matchers):
                continue
            two_sided = all(m.matches(e.labels) for m in rule.source_matchers)
            for src in self.firing.values():
                if src.fingerprint == e.fingerprint or not all(m.matches(src.labels) for m in rule.source_matchers):
                    continue
                if two_sided and all(m.matches(src.labels) for m in rule.target_matchers):
                    continue
                if all(src.labels.get(k, "") == e.labels.get(k, "") for k in rule.equal):
                    return True
        return False

    def advance(self, t: int) -> list[Notification]:
        """Run every flush due at or before ``t``, in time order."""
        out: list[Notification] = []
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
            if self._inhibited(e):  # firing or resolved: Alertmanager mutes both
                self.inhibited.append((at, e.fingerprint))
                continue
            send.append(e)
        firing = {e.fingerprint for e in send if e.status == "firing"}
        resolved = {e.fingerprint for e in send if e.status == "resolved"}
        sent = g["sent"]
        repeat = False
        if not send:
            notify = False  # all muted: the pipeline stops before dedup, the log is unchanged
        elif sent is None:
            notify = bool(firing)
        elif not firing <= sent["firing"]:
            notify = True
        elif not firing and sent["firing"]:
            notify = True
        elif not resolved <= sent["resolved"]:
            notify = True
        else:
            notify = bool(firing) and at - sent["at"] >= g["repeat"]
            repeat = notify
        note = None
        if notify:
            note = Notification(
                at, g["receiver"], key, dict(g["labels"]), "firing" if firing else "resolved", send, repeat
            )
            g["sent"] = {"firing": firing, "resolved": resolved, "at": at}
        for e in alerts:
            if e.status == "resolved":
                del g["alerts"][e.fingerprint]
        if not g["alerts"]:
            del self.groups[key]
        else:
            g["next"] = at + g["interval"]
        return note

    def snapshot(self) -> bytes:
        return pickle.dumps(
            {"groups": self.groups, "firing": self.firing, "inhibited": self.inhibited, "now": self.now}, protocol=5
        )

    def restore(self, blob: bytes) -> None:
        self.__dict__.update(pickle.loads(blob))
        for g in self.groups.values():  # snapshots from before per-route timers: the root's
            g.setdefault("interval", self.root.interval)
            g.setdefault("repeat", self.root.repeat)
