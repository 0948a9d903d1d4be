"""The ``global`` stage (one shard): what needs every shard of another stage at once.

It hosts three jobs, each in its own module, and keeps what they share: the upstream
shards' watermarks (``marks``) and positions. :class:`~pipelines.stages.alerts.AlertJob`
evaluates alert rules over the metrics shards' rollup rows;
:class:`~pipelines.stages.funnels.FunnelJob` merges the product shards' funnel tallies
into report rows; :class:`~pipelines.stages.red_merge.RedJob` merges the trace shards'
RED partial aggregates.

Guarantees: a window is evaluated or written only once every upstream shard has passed
it (the smallest of their watermarks), so the answer does not depend on which shard
reported first; the positions it reports are, per partition, the smallest its upstream
shards reported; a snapshot taken before the jobs were split restores into them."""

from __future__ import annotations

from pipelines.stages.alerts import AlertJob
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
from pipelines.stages.funnels import FunnelJob
from pipelines.stages.positions import upstream_positions
from pipelines.stages.red_merge import RedJob


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
        out = StageOutput(
            stage=TRACE, shard=out.shard, rows={}, positions=out.positions, shards=out.shards, extra=out.extra
        )
    return [(out.key, out)]


class GlobalStage(_Pickled):
    """One shard, fed by the metrics, product and trace stages' outputs.

    Alerts (:class:`AlertJob`, when the spec has rules): the metrics shards' rollup rows,
    evaluated once every metrics shard's watermark passed a window; emits ``alerts`` rows,
    the alert events and the notifications. Funnels (:class:`FunnelJob`, when the spec has
    a product step): the product shards' closed-window tallies, a report window emitted
    (``metrics`` rows) once every product shard is past it. RED metrics (:class:`RedJob`):
    the trace shards' partial aggregates, one row per series and window once every trace
    shard has closed it. Positions: per partition, the smallest position the upstream
    shards reported."""

    kind = GLOBAL

    def __init__(self, defn: StageDef[GlobalConfig], shard: int = 0):
        self.upstream = dict(defn.upstream)
        alerts, product, rollup = GlobalConfig(*defn.config)
        self.alerting = AlertJob(alerts, rollup) if alerts is not None and alerts.rules else None
        self.funnels = FunnelJob(product.config) if product is not None else None
        red = defn.options.get("red")  # (window ms, max exemplars) of the trace stage's RED metrics
        self.red = RedJob(*red) if red else RedJob(0, 0)
        self.marks: dict[tuple[str, int], int] = {}  # (stage, shard) -> watermark / through
        self.reports: dict[tuple[str, int], dict] = {}  # (stage, shard) -> positions
        self.horizon = _MIN

    def __setstate__(self, state: dict) -> None:
        if "engine" in state:  # a snapshot from before the split: one object held the three jobs' state
            state = _split_state(state)
        self.__dict__.update(state)

    def process(self, out: StageOutput | StageTick) -> StageOutput | None:
        if isinstance(out, StageTick):
            return None  # no clock of its own: it follows the metrics and product shards' (idle-advanced) watermarks
        self.reports[(out.stage, out.shard)] = dict(out.positions)
        rows: dict[str, list] = {"alerts": [], "metrics": []}
        events: list = []
        notes: list = []
        if out.stage == METRICS:
            if out.watermark is not None:
                self.marks[(METRICS, out.shard)] = out.watermark
            if self.alerting is not None:
                m = out.rows.get("metrics")
                if m is not None and m.num_rows:
                    self.alerting.add(m)
                self.alerting.evaluate(self._mark(METRICS), rows, events, notes)
        elif out.stage == PRODUCT and self.funnels is not None:
            self.funnels.merge(out.extra)
            if out.extra.get("through") is not None:
                self.marks[(PRODUCT, out.shard)] = out.extra["through"]
            self.funnels.emit(self._mark(PRODUCT), rows)
        elif out.stage == TRACE:
            if out.extra.get("red"):
                self.red.merge(out.extra["red"])
            if out.extra.get("red_through") is not None:
                self.marks[(TRACE, out.shard)] = out.extra["red_through"]
            mark = self._mark(TRACE)
            if mark is not None:
                self.red.emit(mark, rows)
        return self._output(rows, events, notes)

    def flush(self) -> StageOutput:
        rows: dict[str, list] = {"alerts": [], "metrics": []}
        events: list = []
        notes: list = []
        if self.alerting is not None:
            self.alerting.evaluate(_MAX, rows, events, notes)
        if self.funnels is not None:
            self.funnels.emit(_MAX, rows)
        if self.red.aggs:
            self.red.emit(_MAX, rows)
        return self._output(rows, events, notes)

    def _mark(self, stage: str) -> int | None:
        """The smallest watermark over ``stage``'s shards; None until every shard reported one."""
        shards = self.upstream.get(stage, (0, ()))[0]
        vals = [self.marks.get((stage, k)) for k in range(shards)]
        known = [v for v in vals if v is not None]
        return min(known) if known and len(known) == len(vals) else None

    def positions(self) -> dict[str, int]:
        """Per partition, the smallest position the upstream shards reported."""
        return upstream_positions(self.reports, self.upstream)

    def _output(self, rows, events, notes) -> StageOutput:
        out = {n: t for n in rows if (t := _concat(rows[n], n)) is not None}
        return StageOutput(
            stage=GLOBAL,
            shard=0,
            rows=out,
            positions=self.positions(),
            shards=1,
            notifications=notes,
            alerts=[e for e in events if not e.resend],
            resends=[e for e in events if e.resend],
        )


def _split_state(old: dict) -> dict:
    """The state of a global stage pickled before its jobs were split (attributes
    ``engine``, ``pending``, ``next_end``, ``lateness``, ``rule_res``, ``metric_names``;
    ``report``, ``res``, ``errors``, ``sessionless``; ``red_window``, ``red_exemplars``,
    ``red_aggs``) in the current layout."""
    alerting = None
    if old.get("engine") is not None:
        alerting = AlertJob.__new__(AlertJob)
        alerting.__dict__.update(
            {k: old[k] for k in ("engine", "lateness", "rule_res", "metric_names", "pending", "next_end")}
        )
    funnels = None
    if old.get("report") is not None:
        funnels = FunnelJob.__new__(FunnelJob)
        funnels.__dict__.update(
            report=old["report"], res=old["res"], errors=old.get("errors", {}), sessionless=old.get("sessionless", {})
        )
    red = RedJob(old.get("red_window", 0), old.get("red_exemplars", 3))
    red.aggs = old.get("red_aggs", {})
    return {
        "upstream": old["upstream"],
        "alerting": alerting,
        "funnels": funnels,
        "red": red,
        "marks": old["marks"],
        "reports": old["reports"],
        "horizon": old.get("horizon", _MIN),
    }
