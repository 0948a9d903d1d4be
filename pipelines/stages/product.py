"""The ``product`` stage: sessions, funnel tallies and client-error groups for one shard
(session id hash).

Guarantees: a session's row is emitted once, when the stage watermark passed its end +
``gap``; closed report windows' funnel tallies, error groups and counts of events without
a session id leave in ``extra`` for the global stage, each window once per shard."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import pyarrow as pa
import pyarrow.compute as pc

from pipelines.stages.clock import _Tracked
from pipelines.stages.contract import _MAX, _MIN, _NEVER, PRODUCT, StageDef, StageInput, StageOutput, StageTick, _concat
from schemas.tables import table_def
from transforms.product import ProductAnalytics
from transforms.product.fingerprint import fingerprint as _fingerprint
from transforms.product.fingerprint import normalize_stacks
from transforms.product.funnels import FunnelReport

if TYPE_CHECKING:
    from pipelines.spec import ProductStep


class _TallyReport(FunnelReport):
    """Keeps the tallies of closed report windows (merged over shards by the global stage)
    instead of turning them into rows."""

    def close(self, before_ms):
        for k in sorted(self.windows):
            if before_ms is not None and (k + 1) * self.res > before_ms:
                break
            self.__dict__.setdefault("closed", {})[k] = self.windows.pop(k)
        return table_def("metrics").arrow_schema().empty_table()

    def take(self) -> dict:
        return self.__dict__.pop("closed", {})


class ProductStage(_Tracked):
    """Sessions, funnel tallies and client-error groups for one shard (session id hash).
    Emits ``sessions`` rows of closed sessions; closed report windows' funnel tallies,
    error groups (count, first and last seen per fingerprint) and counts of events without
    a session id travel in ``extra`` to the global stage, which merges the shards. Events
    without a session id (empty: a null one is a dead letter at validation) are in no
    session: counted per report window (``product.events_without_session`` rows) and in
    ``dropped["no_session_id"]``."""

    kind = PRODUCT

    def __init__(self, defn: StageDef[ProductStep], shard: int = 0):
        step = defn.config
        cfg = step.config
        self.shard, self.shards = shard, defn.shards
        self.gap, self.res = cfg.gap_ms, cfg.report_ms
        self.analytics = ProductAnalytics(cfg.model_copy(update={"watermark_delay": _NEVER}))
        self.analytics.report = _TallyReport(cfg.funnels, cfg.report_ms)
        self.error_groups = step.error_groups
        self.errors: dict[tuple[int, str], list] = {}  # (window, fingerprint) -> [error type, count, first ms, last ms]
        self.sessionless: dict[int, int] = {}  # window -> events without a session id
        self._init_tracking(defn, cfg.delay_ms)

    def process(self, item: StageInput | StageTick) -> StageOutput | None:
        sessions = []
        if isinstance(item, StageTick):  # idle advance: close the sessions and report windows the wall time allows
            g = self._idle_advance(item)
            if g is None:
                return None
            sessions.append(self.analytics.advance_watermark(g).sessions)
            return self._output(sessions, final=False)
        t = item.table
        release = _MIN
        dropped = {}
        if t is not None and t.num_rows:
            before = self.analytics.stats["no_session_id"]
            sessions.append(self.analytics.process(t).sessions)
            if self.analytics.stats["no_session_id"] > before:
                dropped["no_session_id"] = self._sessionless(t)
            if self.error_groups:
                self._errors(t)
            mx = pc.max(t.column("ts")).cast(pa.timestamp("ms", tz="UTC")).value
            release = (mx // self.res + 1) * self.res + self.gap
        self._track(item, release)
        g = self._horizon()
        if g is not None:
            sessions.append(self.analytics.advance_watermark(g).sessions)
        return self._output(sessions, final=False, dropped=dropped)

    def _sessionless(self, t: pa.Table) -> int:
        sid = t.column("session_id")
        miss = pc.fill_null(pc.or_(pc.is_null(sid), pc.equal(sid, "")), True)
        ts = pc.cast(t.filter(miss).column("ts").cast(pa.timestamp("ms", tz="UTC")), pa.int64()).to_pylist()
        for x in ts:
            if x is not None:
                k = x // self.res
                self.sessionless[k] = self.sessionless.get(k, 0) + 1
        return len(ts)

    def _errors(self, t: pa.Table) -> None:
        e = t.filter(pc.fill_null(pc.equal(t.column("event_type"), "error"), False))
        if not e.num_rows:
            return
        stack = pc.coalesce(e.column("error_stack"), e.column("error_message"), pa.scalar(""))
        norm = normalize_stacks(stack.combine_chunks() if isinstance(stack, pa.ChunkedArray) else stack).to_pylist()
        ts = pc.cast(e.column("ts").cast(pa.timestamp("ms", tz="UTC")), pa.int64()).to_pylist()
        for n, x in zip(norm, ts):
            g = self.errors.setdefault((x // self.res, _fingerprint(n)), [n.split("\n", 1)[0], 0, x, x])
            g[1] += 1
            g[2], g[3] = min(g[2], x), max(g[3], x)

    def flush(self) -> StageOutput:
        sessions = [self.analytics.flush().sessions]
        self.close_wm = _MAX
        return self._output(sessions, final=True)

    def _output(self, sessions, final: bool, dropped: dict | None = None) -> StageOutput:
        through = _MAX if final else (self.close_wm - self.gap if self.close_wm is not None else None)
        errors, sessionless = {}, {}
        if through is not None:
            for key in [k for k in self.errors if final or (k[0] + 1) * self.res <= through]:
                errors[key] = self.errors.pop(key)
            sl = self.__dict__.setdefault("sessionless", {})
            for k in [k for k in sl if final or (k + 1) * self.res <= through]:
                sessionless[k] = sl.pop(k)
        extra = {
            "funnels": cast(_TallyReport, self.analytics.report).take(),
            "errors": errors,
            "sessionless": sessionless,
            "through": through,
        }
        out = {"sessions": t} if (t := _concat(sessions, "sessions")) is not None else {}
        return StageOutput(
            stage=PRODUCT,
            shard=self.shard,
            rows=out,
            positions=self.positions(final),
            shards=self.shards,
            watermark=_MAX if final else self.close_wm,
            extra=extra,
            dropped=dropped or {},
        )
