"""Sessions per user session from product events → rows of the ``obs.sessions`` table,
with funnel progress per session and the aggregate funnel report.

Consumes event rows (EVENTS columns: ``session_id``, ``ts``, ``event_type``, ``page``,
``form``, ``form_step``, ``user_pseudonym``, ``geo_country``, ``device``). Emits
(:class:`ProductOutput`) SESSIONS rows of sessions that closed, and funnel report rows
(METRICS columns, see :mod:`transforms.product.funnels`).

Event time: ``watermark = max(max event time seen - watermark_delay, advance_watermark
values)``, moved after each batch. A session (keyed by ``session_id``) closes when
``watermark >= last event + session_gap``; its events are applied in time order, so the
row does not depend on arrival order while it is open. An event for a session id whose
session already closed, or more than ``session_gap`` after the session's last event,
starts a new session with the same id (counted in ``stats["reopened"]``). A row without a
session id (null or empty) or without a time is in no session: counted in
``stats["no_session_id"]`` / ``stats["no_ts"]`` (``stats["events"]`` = events of closed
sessions + of open ones + those two; :meth:`reconcile` checks it). The funnel report
window of a session is the one holding its last event; a report window closes when the
watermark passes its end + ``session_gap`` (every session ending in it has closed)."""

from __future__ import annotations

import pickle
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from schemas.tables import SESSIONS
from transforms.product.config import ProductConfig
from transforms.product.funnels import FunnelMatcher, FunnelReport

_COLS = ("session_id", "ts", "event_type", "page", "form", "form_step", "user_pseudonym", "geo_country", "device")


@dataclass
class ProductOutput:
    sessions: pa.Table
    funnel_report: pa.Table


class ProductAnalytics:
    """Sessionization and funnels; ``process`` / ``advance_watermark`` / ``flush`` /
    ``snapshot`` / ``restore`` like the metric rollups."""

    def __init__(self, config: ProductConfig | dict | None = None):
        self.config = config if isinstance(config, ProductConfig) else ProductConfig(**(config or {}))
        self.matchers = [FunnelMatcher(f) for f in self.config.funnels]
        self.gap = self.config.gap_ms
        self.open: dict[
            str, list
        ] = {}  # session_id -> list of event tuples (ts, seq, type, page, form, step, user, geo, device)
        self.last: dict[str, int] = {}
        self.watermark: int | None = None
        self.max_seen: int | None = None
        self.seq = 0
        self.report = FunnelReport(self.config.funnels, self.config.report_ms)
        self.stats = {
            "events": 0,
            "sessions_closed": 0,
            "reopened": 0,
            "no_session_id": 0,
            "no_ts": 0,
            "session_events": 0,
        }

    def process(self, events: pa.Table) -> ProductOutput:
        cols = [events.column(c).to_pylist() if c in events.column_names else [None] * events.num_rows for c in _COLS]
        ts = pc.cast(events.column("ts").cast(pa.timestamp("ms", tz="UTC")), pa.int64()).to_pylist()
        cols[1] = ts
        closed = []
        for sid, t, et, page, form, step, user, geo, dev in zip(*cols):
            if sid is None or sid == "":
                self.stats["no_session_id"] += 1
                continue
            if t is None:
                self.stats["no_ts"] += 1
                continue
            self.seq += 1
            last = self.last.get(sid)
            if last is not None and t >= last + self.gap:
                closed.append(self._close_one(sid))  # a new session with the same id
                self.stats["reopened"] += 1
                last = None
            elif last is None and sid in self._closed_ids:
                self.stats["reopened"] += 1
            self.open.setdefault(sid, []).append((t, self.seq, et, page, form, step, user, geo, dev))
            self.last[sid] = t if last is None else max(last, t)
        self.stats["events"] += events.num_rows
        if events.num_rows:
            mx = max(t for t in ts if t is not None) if any(t is not None for t in ts) else None
            if mx is not None:
                self.max_seen = mx if self.max_seen is None else max(self.max_seen, mx)
                cand = self.max_seen - self.config.delay_ms
                if self.watermark is None or cand > self.watermark:
                    self.watermark = cand
        return self._close(self.watermark, closed)

    @property
    def _closed_ids(self) -> set:
        return self.__dict__.setdefault("_closed_set", set())

    def advance_watermark(self, ts_ms: int) -> ProductOutput:
        if self.watermark is None or ts_ms > self.watermark:
            self.watermark = int(ts_ms)
        return self._close(self.watermark, [])

    def flush(self) -> ProductOutput:
        """Close every open session and report window (end of a bounded input)."""
        rows = [self._close_one(s) for s in sorted(self.open, key=lambda s: (self.last[s], s))]
        return ProductOutput(self._table(rows), self.report.close(None))

    def _close(self, wm, rows) -> ProductOutput:
        if wm is not None:
            due = [s for s, last in self.last.items() if last + self.gap <= wm]
            due.sort(key=lambda s: (self.last[s], s))
            rows.extend(self._close_one(s) for s in due)
            rep = self.report.close(wm - self.gap)
        else:
            rep = self.report.close(-1)
        return ProductOutput(self._table(rows), rep)

    def _close_one(self, sid: str) -> dict:
        evs = sorted(self.open.pop(sid))
        self.last.pop(sid)
        self._closed_ids.add(sid)
        self.stats["sessions_closed"] += 1
        self.stats["session_events"] = self.stats.get("session_events", 0) + len(evs)
        pages: list[str] = []
        for e in evs:
            if e[3] is not None and (not pages or pages[-1] != e[3]) and len(pages) < self.config.max_pages:
                pages.append(e[3])
        best = None
        for m in self.matchers:
            k, times, started, submitted = 0, [], False, False
            form = m.funnel.form
            if m.funnel.ordered:
                for e in evs:
                    if k < m.n and m.matches(k, e[2], e[3], e[4], e[5]):
                        k += 1
                        times.append(e[0])
            else:
                for j in range(m.n):
                    hit = next((e[0] for e in evs if m.matches(j, e[2], e[3], e[4], e[5])), None)
                    if hit is None:
                        break
                    k += 1
                    # reached when steps 1..k have all occurred: at the latest of their first
                    # occurrences (a jittered client clock never makes a step precede the one before)
                    times.append(max(hit, times[-1]) if times else hit)
            for e in evs:
                if form is not None and e[4] == form:
                    started |= e[2] == "form_start"
                    submitted |= e[2] == "form_submit"
            if k and (best is None or k > best[1]):
                best = (m, k, times, started and not submitted)
        start, end = evs[0][0], evs[-1][0]
        first = lambda i: next((e[i] for e in evs if e[i] is not None), None)  # noqa: E731
        row = {
            "session_id": sid,
            "user_pseudonym": first(6),
            "start": start,
            "end": end,
            "duration_ms": end - start,
            "events": len(evs),
            "pages": pages,
            "errors": sum(1 for e in evs if e[2] == "error"),
            "geo_country": first(7),
            "device": first(8),
            "funnel": None,
            "funnel_steps_reached": 0,
            "funnel_last_step": None,
            "abandoned": False,
        }
        if best is not None:
            m, k, times, abandoned = best
            row.update(
                funnel=m.funnel.name,
                funnel_steps_reached=k,
                funnel_last_step=m.funnel.steps[k - 1].name,
                abandoned=abandoned,
            )
            self.report.add(end, m.funnel.name, k, times, abandoned)
        return row

    def reconcile(self) -> bool:
        """Every event seen is in a closed session, an open one, or counted as sessionless."""
        st = self.stats
        open_events = sum(len(v) for v in self.open.values())
        return st["events"] == st.get("session_events", 0) + open_events + st.get("no_session_id", 0) + st.get(
            "no_ts", 0
        )

    @staticmethod
    def _table(rows: list[dict]) -> pa.Table:
        sch = SESSIONS.arrow_schema()
        if not rows:
            return sch.empty_table()
        import datetime as dt

        for r in rows:
            r["start"] = dt.datetime.fromtimestamp(r["start"] / 1000, dt.UTC)
            r["end"] = dt.datetime.fromtimestamp(r["end"] / 1000, dt.UTC)
        return pa.Table.from_pylist(rows, schema=sch)

    def snapshot(self) -> bytes:
        state = {k: self.__dict__[k] for k in ("open", "last", "watermark", "max_seen", "seq", "stats")}
        state["report"] = self.report.windows
        state["closed"] = self._closed_ids
        return pickle.dumps({"config": self.config.model_dump(), "state": state}, protocol=5)

    def restore(self, blob: bytes) -> None:
        doc = pickle.loads(blob)
        if doc["config"] != self.config.model_dump():
            raise ValueError("snapshot was taken with a different product config")
        st = doc["state"]
        self.report.windows = st.pop("report")
        self.__dict__["_closed_set"] = st.pop("closed")
        self.__dict__.update(st)
