"""Funnel matching per session and the aggregate funnel report.

With ``ordered: true`` a session walks a funnel strictly in event-time order: an event
advances it from step ``k`` to ``k+1`` only if it matches step ``k+1``. By default (``ordered:
false``) step ``k`` is reached when steps ``1..k`` each occur in the session, whatever their
order (client clocks jitter by seconds, so a form step can carry an earlier time than the
one before it); a step's time is when it and every step before it have occurred (the latest
of their first occurrences), so times between steps and to convert are never negative. Per
session this gives the steps reached, the last step, the time of each step (time between steps), and form abandonment (a ``form_start`` of the funnel's
form without a ``form_submit`` of it in the session).

:class:`FunnelReport` aggregates closed sessions per report window (the window holding
the session's last event) and emits rows in the METRICS table's columns, kind ``summary``,
labels ``funnel``, ``step`` and ``step_index`` (zero-padded):

* ``funnel.step.reached``: ``count`` = sessions that reached the step;
* ``funnel.step.dropoff``: ``count`` = sessions whose last step it was (they did not reach the next);
  0 for the final step: a session that reached it converted;
* ``funnel.step.conversion``: ``last`` = reached(step) / reached(previous step) (the first step: 1.0);
* ``funnel.step.time_ms``: time from the previous step to this one: count, sum, min, max, p50, p75, p90, p95, p99
  (exact order statistics, lower quantile);
* ``funnel.time_to_convert_ms`` (labels ``funnel``, ``from`` = first step, ``to`` = final step):
  per session that reached the final step, the time from its first step to its final step
  (the signup duration): count (= conversions), sum, min, max, p50, p75, p90, p95, p99 as above;
* ``funnel.form.abandoned`` (labels ``funnel``, ``form``): ``count`` = sessions that started the form and did not submit it.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from schemas.tables import METRICS
from transforms.product.config import FunnelConfig
from transforms.rollup.config import format_duration


def _summary(t: np.ndarray) -> dict:
    """count, sum, min, max and p50, p75, p90, p95, p99 (exact order statistics, lower quantile) of sorted ``t``."""
    q = {f"p{int(p * 100)}": float(t[int(np.floor(p * (len(t) - 1)))]) for p in (0.5, 0.75, 0.9, 0.95, 0.99)}
    return {"count": len(t), "sum": float(t.sum()), "min": float(t[0]), "max": float(t[-1]), **q}


class FunnelMatcher:
    """Compiled step predicates of one funnel."""

    def __init__(self, funnel: FunnelConfig):
        self.funnel = funnel
        self.preds = [(s.event_type, s.page, s.form, s.form_step) for s in funnel.steps]
        self.n = len(self.preds)

    def matches(self, k: int, event_type, page, form, form_step) -> bool:
        et, pg, fm, st = self.preds[k]
        return (
            et == event_type
            and (pg is None or pg == page)
            and (fm is None or fm == form)
            and (st is None or st == form_step)
        )


class FunnelReport:
    """Per report window and funnel: reached, last-step and step-time tallies."""

    def __init__(self, funnels: list[FunnelConfig], resolution_ms: int):
        self.funnels = {f.name: f for f in funnels}
        self.res = resolution_ms
        self.windows: dict[int, dict[str, dict]] = {}

    def add(self, end_ms: int, funnel: str, steps_reached: int, step_times: list[int], abandoned: bool) -> None:
        w = self.windows.setdefault(end_ms // self.res, {})
        f = w.get(funnel)
        if f is None:
            n = len(self.funnels[funnel].steps)
            f = w[funnel] = {"reached": [0] * n, "last": [0] * n, "times": [[] for _ in range(n)], "abandoned": 0}
        for k in range(steps_reached):
            f["reached"][k] += 1
            if k > 0:
                f["times"][k].append(step_times[k] - step_times[k - 1])
        n = len(f["reached"])
        if 0 < steps_reached < n:  # reaching the final step is a conversion, not a drop-off
            f["last"][steps_reached - 1] += 1
        if steps_reached == n:
            f.setdefault("convert", []).append(step_times[n - 1] - step_times[0])
        f["abandoned"] += int(abandoned)

    def close(self, before_ms: int | None) -> pa.Table:
        """Rows of the windows that end at or before ``before_ms`` (all when ``None``)."""
        rows = []
        for k in sorted(self.windows):
            if before_ms is not None and (k + 1) * self.res > before_ms:
                break
            for name in sorted(self.windows[k]):
                rows.extend(self._rows(k, name, self.windows[k][name]))
            del self.windows[k]
        sch = METRICS.arrow_schema()
        if not rows:
            return sch.empty_table()
        return pa.Table.from_pylist(rows, schema=sch)

    def _rows(self, k, name, f):
        funnel = self.funnels[name]
        start, end = k * self.res, (k + 1) * self.res
        import datetime as dt

        ws = dt.datetime.fromtimestamp(start / 1000, dt.UTC)
        we = dt.datetime.fromtimestamp(end / 1000, dt.UTC)
        base = {c: None for c in METRICS.arrow_schema().names}
        base.update(
            window_start=ws,
            window_end=we,
            resolution=format_duration(self.res),
            kind="summary",
            exemplar_trace_ids=[],
            late_samples=0,
        )
        out = []
        for i, step in enumerate(funnel.steps):
            labels = [("funnel", name), ("step", step.name), ("step_index", f"{i:02d}")]
            reached = f["reached"][i]
            out.append({**base, "name": "funnel.step.reached", "labels": labels, "count": reached})
            out.append({**base, "name": "funnel.step.dropoff", "labels": labels, "count": f["last"][i]})
            prev = f["reached"][i - 1] if i else reached
            out.append(
                {
                    **base,
                    "name": "funnel.step.conversion",
                    "labels": labels,
                    "count": reached,
                    "last": (reached / prev) if prev else None,
                }
            )
            t = np.sort(np.asarray(f["times"][i], dtype=np.float64))
            if len(t):
                out.append({**base, "name": "funnel.step.time_ms", "labels": labels, **_summary(t)})
        t = np.sort(np.asarray(f.get("convert", []), dtype=np.float64))
        if len(t):
            labels = [("from", funnel.steps[0].name), ("funnel", name), ("to", funnel.steps[-1].name)]
            out.append({**base, "name": "funnel.time_to_convert_ms", "labels": labels, **_summary(t)})
        if funnel.form:
            out.append(
                {
                    **base,
                    "name": "funnel.form.abandoned",
                    "labels": [("form", funnel.form), ("funnel", name)],
                    "count": f["abandoned"],
                }
            )
        return out
