"""The global stage's alerting job: alert rules over the metrics shards' rollup rows.

Guarantees: a (window end, resolution) is evaluated once, in event-time order, and only
when every metrics shard's watermark is past the window's close + ``allowed_lateness``
(so a ratio's numerator and denominator from different shards are seen together); a
window without rows is a tick (absence rules); at the end of input (:data:`_MAX`) every
window buffered is evaluated."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc

from pipelines.stages.contract import _MAX

if TYPE_CHECKING:
    from transforms.alerting.config import AlertingConfig
    from transforms.rollup.config import RollupConfig


class AlertJob:
    """Rollup rows buffered per (window end, resolution) until the metrics shards' common
    watermark passed them, then evaluated by the :class:`~transforms.alerting.AlertEngine`."""

    def __init__(self, alerts: AlertingConfig, rollup: RollupConfig | None):
        from transforms.alerting import AlertEngine
        from transforms.rollup.config import duration_ms

        self.engine = AlertEngine(alerts)
        self.lateness = rollup.lateness_ms if rollup is not None else 0
        self.rule_res: list[int] = sorted({duration_ms(r.resolution) for r in alerts.rules})
        self.metric_names: set = {r.select.metric for r in alerts.rules} | {
            r.ratio_of.metric for r in alerts.rules if r.ratio_of
        }
        self.pending: dict[tuple[int, int], list] = {}  # (window end ms, resolution ms) -> rollup rows
        self.next_end: dict[int, int] = {}  # resolution ms -> the next window end to evaluate

    def add(self, m: pa.Table) -> None:
        """Buffer the rows of ``m`` (``metrics`` rows) that some rule reads, per (window end, resolution)."""
        m = m.filter(pc.is_in(m.column("name"), value_set=pa.array(sorted(self.metric_names), pa.string())))
        if not m.num_rows:
            return
        from transforms.rollup.config import duration_ms

        ends = pc.cast(m.column("window_end").cast(pa.timestamp("ms", tz="UTC")), pa.int64()).to_pylist()
        res = [duration_ms(r) for r in m.column("resolution").to_pylist()]
        idx: dict[tuple[int, int], list] = {}
        for i, (e, r) in enumerate(zip(ends, res)):
            if r in self.rule_res:
                idx.setdefault((e, r), []).append(i)
        for key, ix in idx.items():
            self.pending.setdefault(key, []).append(m.take(pa.array(ix)))
            self.next_end.setdefault(key[1], key[0])
            self.next_end[key[1]] = min(self.next_end[key[1]], key[0])

    def evaluate(self, mark: int | None, rows: dict[str, list], events: list, notes: list) -> None:
        """Evaluate every window the metrics shards' watermark ``mark`` closed (None: some
        shard has not reported one yet, nothing is due); ``obs.alerts`` rows go to
        ``rows["alerts"]``, alert events (re-sends included) to ``events``, notifications
        to ``notes``."""
        if mark is None:
            return
        final = mark >= _MAX
        last = max((e for e, _ in self.pending), default=None)
        due = []
        for r, nxt in self.next_end.items():
            stop = last if final else mark - self.lateness
            if stop is None:
                continue
            e = nxt
            while e <= stop:
                due.append((e, r))
                e += r
            self.next_end[r] = e
        changes = []
        for e, r in sorted(due):
            parts = self.pending.pop((e, r), None)
            out = self.engine.process(pa.concat_tables(parts)) if parts else self.engine.tick(r, e)
            events += (
                out.events + out.resends
            )  # firing / resolved: Kafka alerts topic, Alertmanager; re-sends: Alertmanager
            notes += out.notifications
            changes += out.changes  # pending / inactive too: obs.alerts
        if changes:
            from transforms.alerting import alert_rows

            rows["alerts"].append(alert_rows(changes))
