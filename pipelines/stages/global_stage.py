"""The ``global`` stage (one shard): what needs every shard of another stage at once.

Guarantees: a window is evaluated or written only once every upstream shard has passed
it (the smallest of their watermarks), so the answer does not depend on which shard
reported first; the positions it reports are, per partition, the smallest its upstream
shards reported."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from pipelines.stages.contract import (
    _MAX,
    _MIN,
    GLOBAL,
    METRICS,
    PRODUCT,
    TRACE,
    GlobalConfig,
    StageDef,
    StageOutput,
    StageTick,
    _concat,
    _Pickled,
)
from pipelines.stages.positions import upstream_positions
from schemas.tables import table_def
from transforms.product.funnels import FunnelReport


def global_inputs(out) -> list:
    """What an engine hands the global stage of a fed stage's output: ``[(key, output)]``
    for the metrics and product stages' outputs and, slimmed to their positions and
    ``extra`` (RED partial aggregates and the windows closed), the trace stage's; ``[]``
    for anything else."""
    if not isinstance(out, StageOutput) or out.stage not in (METRICS, PRODUCT, TRACE):
        return []
    if out.stage == TRACE:
        if not out.extra:
            return []
        out = StageOutput(stage=TRACE, shard=out.shard, rows={}, positions=out.positions, shards=out.shards, extra=out.extra)
    return [(out.key, out)]


class GlobalStage(_Pickled):
    """One shard, fed by the metrics, product and trace stages' outputs.

    Alerts: rollup rows are buffered per (window end, resolution) and evaluated, in event
    time order, once every metrics shard's watermark has passed the window's close (so a
    ratio's numerator and denominator from different shards are seen together); windows
    without rows are ticks (absence rules). Emits ``alerts`` rows, the alert events and
    the notifications. Funnels: the product shards' closed-window tallies are merged and
    a report window is emitted (``metrics`` rows) once every product shard is past it.
    RED metrics: the trace shards' closed windows arrive as partial aggregates
    (``extra["red"]``) and are merged (counts add, DDSketches merge) into one row per
    series and window, written once every trace shard has closed the window
    (``extra["red_through"]``). Positions: per partition, the smallest position the
    upstream shards reported."""

    kind = GLOBAL

    def __init__(self, defn: StageDef[GlobalConfig], shard: int = 0):
        from transforms.alerting import AlertEngine

        self.upstream = dict(defn.upstream)
        alerts, product, rollup = GlobalConfig(*defn.config)
        self.engine = AlertEngine(alerts) if alerts is not None and alerts.rules else None
        self.lateness = rollup.lateness_ms if rollup is not None else 0
        self.rule_res: list[int] = []
        self.metric_names: set = set()
        if self.engine is not None:
            from transforms.rollup.config import duration_ms

            self.rule_res = sorted({duration_ms(r.resolution) for r in alerts.rules})
            self.metric_names = {r.select.metric for r in alerts.rules} | {r.ratio_of.metric for r in alerts.rules if r.ratio_of}
        self.pending: dict[tuple[int, int], list] = {}
        self.next_end: dict[int, int] = {}
        self.report = FunnelReport(product.config.funnels, product.config.report_ms) if product is not None else None
        self.res = product.config.report_ms if product is not None else 0
        self.errors: dict[tuple[int, str], list] = {}
        red = defn.options.get("red")                    # (window ms, max exemplars) of the trace stage's RED metrics
        self.red_window, self.red_exemplars = red if red else (0, 0)
        self.red_aggs: dict = {}                         # (window start ms, service, operation, kind, status) -> merged aggregate
        self.marks: dict[tuple[str, int], int] = {}      # (stage, shard) -> watermark / through
        self.reports: dict[tuple[str, int], dict] = {}   # (stage, shard) -> positions
        self.horizon = _MIN

    def process(self, out: StageOutput | StageTick) -> StageOutput | None:
        if isinstance(out, StageTick):
            return None  # no clock of its own: it follows the metrics and product shards' (idle-advanced) watermarks
        self.reports[(out.stage, out.shard)] = dict(out.positions)
        rows: dict[str, list] = {"alerts": [], "metrics": []}
        events, notes = [], []
        if out.stage == METRICS:
            if out.watermark is not None:
                self.marks[(METRICS, out.shard)] = out.watermark
            m = out.rows.get("metrics")
            if self.engine is not None and m is not None and m.num_rows:
                self._buffer(m)
            self._alerts(self._mark(METRICS), rows, events, notes)
        elif out.stage == PRODUCT and self.report is not None:
            x = out.extra
            for k, funnels in x.get("funnels", {}).items():
                for name, f in funnels.items():
                    self._merge_funnel(k, name, f)
            for key, (etype, n, *seen) in x.get("errors", {}).items():
                g = self.errors.setdefault(key, [etype, 0, *seen])
                g[1] += n
                if seen and len(g) == 4:
                    g[2], g[3] = min(g[2], seen[0]), max(g[3], seen[1])
            sl = self.__dict__.setdefault("sessionless", {})
            for k, n in x.get("sessionless", {}).items():
                sl[k] = sl.get(k, 0) + n
            if x.get("through") is not None:
                self.marks[(PRODUCT, out.shard)] = x["through"]
            self._funnels(self._mark(PRODUCT), rows)
        elif out.stage == TRACE:
            self._red(out, rows)
        return self._output(rows, events, notes)

    def _red(self, out: StageOutput, rows) -> None:
        """Merge a trace shard's RED partial aggregates; write the windows every trace shard closed."""
        from transforms.tail_sampling.red import merge_partials

        aggs = self.__dict__.setdefault("red_aggs", {})
        if out.extra.get("red"):
            merge_partials(aggs, out.extra["red"], getattr(self, "red_exemplars", 3))
        if out.extra.get("red_through") is not None:
            self.marks[(TRACE, out.shard)] = out.extra["red_through"]
        mark = self._mark(TRACE)
        if mark is not None:
            self._red_rows(mark, rows)

    def _red_rows(self, mark: int, rows) -> None:
        from transforms.tail_sampling.red import red_rows

        aggs = self.__dict__.setdefault("red_aggs", {})
        window = getattr(self, "red_window", 0) or 60_000  # a global stage restored from before RED merging: the default
        due = {k: aggs.pop(k) for k in [k for k in aggs if mark >= _MAX or k[0] + window <= mark]}
        if due:
            rows["metrics"].append(red_rows(due, window))

    def flush(self) -> StageOutput:
        rows: dict[str, list] = {"alerts": [], "metrics": []}
        events, notes = [], []
        self._alerts(_MAX, rows, events, notes)
        self._funnels(_MAX, rows)
        if self.__dict__.get("red_aggs"):
            self._red_rows(_MAX, rows)
        return self._output(rows, events, notes)

    def _mark(self, stage: str) -> int | None:
        shards = self.upstream.get(stage, (0, ()))[0]
        vals = [self.marks.get((stage, k)) for k in range(shards)]
        return None if any(v is None for v in vals) or not vals else min(vals)

    def _buffer(self, m: pa.Table) -> None:
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

    def _alerts(self, mark, rows, events, notes) -> None:
        if self.engine is None or mark is None:
            return
        final = mark >= _MAX
        last = max((e for e, _ in self.pending), default=None)
        due = []
        for r, nxt in self.next_end.items():
            stop = (last if final else mark - self.lateness)
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
            events += out.events + out.resends  # firing / resolved: Kafka alerts topic, Alertmanager; re-sends: Alertmanager
            notes += out.notifications
            changes += out.changes        # pending / inactive too: obs.alerts
        if changes:
            from transforms.alerting import alert_rows

            rows["alerts"].append(alert_rows(changes))

    def _merge_funnel(self, k: int, name: str, f: dict) -> None:
        w = self.report.windows.setdefault(k, {})
        g = w.get(name)
        if g is None:
            w[name] = {"reached": list(f["reached"]), "last": list(f["last"]), "times": [list(x) for x in f["times"]],
                       "abandoned": f["abandoned"], "convert": list(f.get("convert", []))}
            return
        for i in range(len(g["reached"])):
            g["reached"][i] += f["reached"][i]
            g["last"][i] += f["last"][i]
            g["times"][i].extend(f["times"][i])
        g["abandoned"] += f["abandoned"]
        g.setdefault("convert", []).extend(f.get("convert", []))

    def _funnels(self, mark, rows) -> None:
        if self.report is None or mark is None:
            return
        for w in self.report.windows.values():
            for g in w.values():
                for x in (*g["times"], g.setdefault("convert", [])):
                    x.sort()  # merged order must not depend on shard arrival order
        rows["metrics"].append(self.report.close(None if mark >= _MAX else mark))
        due = sorted(k for k in self.errors if mark >= _MAX or (k[0] + 1) * self.res <= mark)
        sl = self.__dict__.setdefault("sessionless", {})
        due_sl = sorted(k for k in sl if mark >= _MAX or (k + 1) * self.res <= mark)
        if due or due_sl:
            import datetime as dt

            base = {c: None for c in table_def("metrics").arrow_schema().names}
            out = []

            def window(k):
                return {"window_start": dt.datetime.fromtimestamp(k * self.res / 1000, dt.timezone.utc),
                        "window_end": dt.datetime.fromtimestamp((k + 1) * self.res / 1000, dt.timezone.utc),
                        "resolution": _fmt(self.res), "kind": "summary", "exemplar_trace_ids": [], "late_samples": 0}
            for k in due:
                etype, n, *seen = self.errors.pop(k)
                # min / max: first / last seen (event time, epoch ms) of the fingerprint in the window
                first, last = (float(seen[0]), float(seen[1])) if seen else (None, None)
                out.append({**base, **window(k[0]), "name": "product.errors",
                            "labels": [("error_type", etype[:200]), ("fingerprint", k[1])], "count": n, "sum": float(n),
                            "min": first, "max": last})
            for k in due_sl:
                n = sl.pop(k)
                out.append({**base, **window(k), "name": "product.events_without_session", "labels": [], "count": n,
                            "sum": float(n)})
            rows["metrics"].append(pa.Table.from_pylist(out, schema=table_def("metrics").arrow_schema()))

    def positions(self) -> dict[str, int]:
        """Per partition, the smallest position the upstream shards reported."""
        return upstream_positions(self.reports, self.upstream)

    def _output(self, rows, events, notes) -> StageOutput:
        out = {n: t for n in rows if (t := _concat(rows[n], n)) is not None}
        return StageOutput(stage=GLOBAL, shard=0, rows=out, positions=self.positions(), shards=1, notifications=notes,
                           alerts=[e for e in events if not e.resend], resends=[e for e in events if e.resend])


def _fmt(ms: int) -> str:
    from transforms.rollup.config import format_duration

    return format_duration(ms)
