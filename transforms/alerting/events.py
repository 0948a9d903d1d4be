"""Alert events in Alertmanager's shape, and their three renderings: ``obs.alerts`` rows,
the JSON payload of the Kafka alerts topic (the ``alert_event.avsc`` fields) and the list
Alertmanager's ``POST /api/v2/alerts`` takes.

The fingerprint is Prometheus' label-set fingerprint (FNV-1a 64 over the sorted label
names and values, each followed by byte 255), printed as 16 hex digits — the same value
Alertmanager shows for the alert."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field

import pyarrow as pa

from schemas.tables import ALERTS

_FNV_OFFSET, _FNV_PRIME, _MASK = 14695981039346656037, 1099511628211, (1 << 64) - 1
ZERO_TIME = "0001-01-01T00:00:00Z"


def fingerprint(labels: dict[str, str]) -> str:
    h = _FNV_OFFSET
    for name in sorted(labels):
        for part in (name, labels[name]):
            for b in part.encode():
                h = ((h ^ b) * _FNV_PRIME) & _MASK
            h = ((h ^ 255) * _FNV_PRIME) & _MASK
    return f"{h:016x}"


def iso(ms: int | None) -> str:
    if ms is None:
        return ZERO_TIME
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


@dataclass
class AlertEvent:
    """One state change of one alert. ``at`` is the event time of the change."""

    status: str  # firing | resolved (notified); pending | inactive (obs.alerts only)
    rule: str
    severity: str
    labels: dict[str, str]
    annotations: dict[str, str]
    value: float | None
    starts_at: int
    ends_at: int | None
    at: int
    fingerprint: str = field(default="")
    valid_until: int | None = None  # firing: the endsAt sent to Alertmanager (Prometheus' ValidUntil), event time
    resend: bool = False  # a re-send of a still-firing alert (Alertmanager only; not a state change)

    def __post_init__(self):
        if not self.fingerprint:
            self.fingerprint = fingerprint(self.labels)

    def to_kafka(self) -> bytes:
        """JSON payload for the alerts topic (fields of ``alert_event.avsc``; times in epoch ms)."""
        return json.dumps(
            {
                "fingerprint": self.fingerprint,
                "status": self.status,
                "rule": self.rule,
                "severity": self.severity,
                "labels": self.labels,
                "annotations": self.annotations,
                "value": self.value,
                "startsAt": self.starts_at,
                "endsAt": self.ends_at,
            },
            sort_keys=True,
            separators=(",", ":"),
        ).encode()

    def to_alertmanager(self, generator_url: str = "", now: int | None = None) -> dict:
        """One element of the ``POST /api/v2/alerts`` body. A resolved alert carries its
        ``endsAt``; a firing one ``endsAt = valid_until`` (as Prometheus sends it), so
        Alertmanager keeps it active until then and never applies its ``resolve_timeout``.
        With ``now`` (wall-clock ms), a firing alert's validity is counted from ``now``
        rather than from its event time: ``endsAt = max(valid_until, now + valid_until - at)``,
        so a pipeline running behind the wall clock (or a replay) does not send an ``endsAt``
        that has already passed."""
        d = {
            "labels": self.labels,
            "annotations": self.annotations,
            "startsAt": iso(self.starts_at),
            "generatorURL": generator_url,
        }
        ends = self.ends_at
        if self.status == "firing" and self.valid_until is not None:
            ends = self.valid_until if now is None else max(self.valid_until, now + self.valid_until - self.at)
        if ends is not None:
            d["endsAt"] = iso(ends)
        return d


def alert_rows(events: list[AlertEvent]) -> pa.Table:
    """Rows of the ``obs.alerts`` table."""
    sch = ALERTS.arrow_schema()
    ts = sch.field("ts").type
    return pa.table(
        {
            "ts": pa.array([e.at * 1000 for e in events], pa.int64()).cast(ts),
            "fingerprint": [e.fingerprint for e in events],
            "status": [e.status for e in events],
            "rule": [e.rule for e in events],
            "severity": [e.severity for e in events],
            "labels": pa.array([sorted(e.labels.items()) for e in events], sch.field("labels").type),
            "annotations": pa.array([sorted(e.annotations.items()) for e in events], sch.field("annotations").type),
            "value": pa.array([e.value for e in events], pa.float64()),
            "starts_at": pa.array([e.starts_at * 1000 for e in events], pa.int64()).cast(ts),
            "ends_at": pa.array([e.ends_at * 1000 if e.ends_at is not None else None for e in events], pa.int64()).cast(
                ts
            ),
        },
        schema=sch,
    )


def alertmanager_payload(events: list[AlertEvent], generator_url: str = "", now: int | None = None) -> list[dict]:
    return [e.to_alertmanager(generator_url, now) for e in events]
