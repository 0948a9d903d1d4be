"""Alert rule evaluation over rollup rows, in event time.

Consumes METRICS rows (what :class:`transforms.rollup.MetricRollup` emits); rules of a
resolution are evaluated at each window close of that resolution, at ``t = window_end``.
Emits :class:`AlertEvent` state changes with Prometheus' lifecycle: the condition holds →
*pending* (event ``pending``, ``startsAt = activeAt = t``; none when ``for`` is 0: the
alert fires in the same evaluation, as in Prometheus); held for ``for`` → *firing* (event,
``startsAt = t``); stops holding → a pending alert becomes *inactive* (event ``inactive``,
``startsAt = activeAt``, ``endsAt = t``; Prometheus drops it silently), a firing one stays
firing while ``t - last_true < keep_firing_for``, then *resolved* (event, ``endsAt = t``).
Only ``firing`` and ``resolved`` events are notifications (what Prometheus sends to
Alertmanager); ``pending`` and ``inactive`` are rows of ``obs.alerts`` only.

Re-sending (Prometheus' ``sendAlerts``): a firing event carries ``valid_until = t + 4 x
max(resend_delay, resolution)``; at each later evaluation ``t`` of its rule where the last
send is more than ``resend_delay`` ago (strictly, as Prometheus' ``needsSending``), a
still-firing alert is emitted again as a ``resend`` event (status ``firing``,
``resend=True``, a fresh ``valid_until``): for Alertmanager only, not a state change."""

from __future__ import annotations

import math
import pickle
import re
from collections import deque

import pyarrow as pa
import pyarrow.compute as pc

from transforms.alerting.config import AlertRule, Selector
from transforms.alerting.events import AlertEvent, fingerprint
from transforms.rollup.config import duration_ms

_OPS = {
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
}
_TPL = re.compile(r"\{\{\s*\$(value|labels\.([A-Za-z_][A-Za-z0-9_]*))\s*\}\}")


def _value(row: dict, field: str):
    if field == "avg":
        return row["sum"] / row["count"] if row.get("sum") is not None and row.get("count") else None
    v = row.get(field)
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def _expand(text: str, labels: dict, value) -> str:
    return _TPL.sub(
        lambda m: (f"{value:g}" if value is not None else "") if m.group(1) == "value" else labels.get(m.group(2), ""),
        text,
    )


class RuleEvaluator:
    """State of every rule's alerts; ``evaluate(rows)`` for closed windows, ``tick`` for a
    window close without rows (so absence rules see time pass)."""

    def __init__(self, rules: list[AlertRule], resend_delay_ms: int = 60_000):
        self.rules = rules
        self.resend_ms = resend_delay_ms
        self.by_res: dict[int, list[AlertRule]] = {}
        for r in rules:
            self.by_res.setdefault(duration_ms(r.resolution), []).append(r)
        self.alerts: dict[tuple[str, str], dict] = {}  # (rule, fp) -> state
        self.baselines: dict[tuple[str, str], deque] = {}  # anomaly history
        self.seen: dict[tuple[str, str], tuple[int, dict]] = {}  # absence: last window_end, labels
        self.last_eval: dict[int, int] = {}

    def evaluate(self, rows: pa.Table) -> list[AlertEvent]:
        """Evaluate at every (resolution, window_end) present in ``rows``, in time order."""
        if rows.num_rows == 0:
            return []
        names = sorted({r.select.metric for r in self.rules} | {r.ratio_of.metric for r in self.rules if r.ratio_of})
        rows = rows.filter(pc.is_in(rows.column("name"), value_set=pa.array(names, pa.string())))
        ends = pc.cast(rows.column("window_end").cast(pa.timestamp("ms", tz="UTC")), pa.int64()).to_pylist()
        groups: dict[tuple[int, int], list] = {}
        for end, row in zip(ends, rows.to_pylist()):
            row["labels"] = dict(row["labels"] or [])
            groups.setdefault((end, self._res_ms(row["resolution"])), []).append(row)
        out = []
        for end, res in sorted(groups):
            out.extend(self.evaluate_at(res, end, groups[(end, res)]))
        return out

    @staticmethod
    def _res_ms(r: str) -> int:
        return duration_ms(r)

    def tick(self, resolution_ms: int, t: int) -> list[AlertEvent]:
        return self.evaluate_at(resolution_ms, t, [])

    def evaluate_at(self, res: int, t: int, rows: list[dict]) -> list[AlertEvent]:
        if self.last_eval.get(res, -1) >= t:
            return []
        self.last_eval[res] = t
        out = []
        for rule in self.by_res.get(res, []):
            active = self._active(rule, t, rows)
            out.extend(self._transition(rule, t, active))
            out.extend(self._resend(rule, t))
        return out

    def _validity(self, rule: AlertRule) -> int:
        return 4 * max(self.resend_ms, duration_ms(rule.resolution))

    def _resend(self, rule: AlertRule, t: int) -> list[AlertEvent]:
        """``resend`` events of the rule's firing alerts last sent more than ``resend_delay`` before ``t``."""
        out = []
        for key in sorted(k for k in self.alerts if k[0] == rule.name):
            st = self.alerts[key]
            if st["state"] == "firing" and st.get("last_sent", st["fired_at"]) + self.resend_ms < t:
                st["last_sent"] = t
                e = self._event(rule, st, "firing", t)
                e.valid_until, e.resend = t + self._validity(rule), True
                out.append(e)
        return out

    def _select(self, sel: Selector, rows: list[dict]):
        for r in rows:
            if r["name"] == sel.metric and all(r["labels"].get(k) == v for k, v in sel.match.items()):
                yield r, _value(r, sel.value)

    def _active(self, rule: AlertRule, t: int, rows: list[dict]) -> dict[str, tuple[dict, float | None]]:
        active = {}
        if rule.type == "threshold":
            pairs = []
            if rule.ratio_of is None:
                pairs = [(r["labels"], v) for r, v in self._select(rule.select, rows) if v is not None]
            else:
                on = rule.on
                key = (
                    (lambda lab: tuple(sorted(lab.items())))
                    if on is None
                    else (lambda lab: tuple((k, lab.get(k, "")) for k in on))
                )
                den: dict[tuple, float] = {}
                for r, v in self._select(rule.ratio_of, rows):
                    if v is not None:
                        den[key(r["labels"])] = den.get(key(r["labels"]), 0.0) + v
                num: dict[tuple, float] = {}
                for r, v in self._select(rule.select, rows):
                    if v is not None:
                        num[key(r["labels"])] = num.get(key(r["labels"]), 0.0) + v
                pairs = [(dict(k), num.get(k, 0.0) / d) for k, d in den.items() if d]
            for lab, v in pairs:
                if _OPS[rule.op](v, rule.threshold):
                    labels = self._labels(rule, lab)
                    active[fingerprint(labels)] = (labels, v)
        elif rule.type == "anomaly":
            for r, v in self._select(rule.select, rows):
                if v is None:
                    continue
                labels = self._labels(rule, r["labels"])
                fp = fingerprint(labels)
                hist = self.baselines.setdefault((rule.name, fp), deque(maxlen=rule.baseline_windows))
                if len(hist) == rule.baseline_windows:
                    mean = sum(hist) / len(hist)
                    std = math.sqrt(sum((x - mean) ** 2 for x in hist) / len(hist))
                    if abs(v - mean) > rule.k * std:
                        active[fp] = (labels, v)
                hist.append(v)
        else:  # absence
            present = set()
            for r, _ in self._select(rule.select, rows):
                labels = self._labels(rule, r["labels"])
                fp = fingerprint(labels)
                self.seen[(rule.name, fp)] = (t, labels)
                present.add(fp)
            gap = duration_ms(rule.absent_for)
            for (name, fp), (last, labels) in self.seen.items():
                if name == rule.name and fp not in present and t - last >= gap:
                    active[fp] = (labels, (t - last) / 1000.0)
        return active

    @staticmethod
    def _labels(rule: AlertRule, lab: dict) -> dict:
        return {**lab, **rule.labels, "alertname": rule.name, "severity": rule.severity}

    def _event(self, rule, st, status, t, ends_at=None) -> AlertEvent:
        ann = {k: _expand(v, st["labels"], st["value"]) for k, v in rule.annotations.items()}
        starts = st["fired_at"] if status in ("firing", "resolved") else st["active_at"]
        return AlertEvent(
            status=status,
            rule=rule.name,
            severity=rule.severity,
            labels=dict(st["labels"]),
            annotations=ann,
            value=st["value"],
            starts_at=starts,
            ends_at=ends_at,
            at=t,
        )

    def _transition(self, rule: AlertRule, t: int, active: dict) -> list[AlertEvent]:
        out = []
        for_ms, keep_ms = duration_ms(rule.for_), duration_ms(rule.keep_firing_for)
        for fp in sorted(active):
            labels, v = active[fp]
            st = self.alerts.get((rule.name, fp))
            if st is None:
                st = self.alerts[(rule.name, fp)] = {
                    "state": "pending",
                    "active_at": t,
                    "fired_at": None,
                    "labels": labels,
                }
            st["last_true"], st["value"] = t, v
            if st["state"] == "pending" and t - st["active_at"] >= for_ms:
                st["state"], st["fired_at"], st["last_sent"] = "firing", t, t
                e = self._event(rule, st, "firing", t)
                e.valid_until = t + self._validity(rule)
                out.append(e)
            elif st["state"] == "pending" and st["active_at"] == t:
                out.append(self._event(rule, st, "pending", t))
        for key in sorted(k for k in self.alerts if k[0] == rule.name and k[1] not in active):
            st = self.alerts[key]
            if st["state"] == "pending":
                del self.alerts[key]
                out.append(self._event(rule, st, "inactive", t, ends_at=t))
            elif t - st["last_true"] >= keep_ms:
                del self.alerts[key]
                out.append(self._event(rule, st, "resolved", t, ends_at=t))
        return out

    def state(self) -> dict[tuple[str, str], str]:
        """``(rule, fingerprint) -> pending|firing`` of the alerts that are not inactive."""
        return {k: v["state"] for k, v in self.alerts.items()}

    def snapshot(self) -> bytes:
        return pickle.dumps(
            {"alerts": self.alerts, "baselines": self.baselines, "seen": self.seen, "last_eval": self.last_eval},
            protocol=5,
        )

    def restore(self, blob: bytes) -> None:
        self.__dict__.update(pickle.loads(blob))
