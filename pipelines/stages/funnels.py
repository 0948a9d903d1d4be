"""The global stage's funnel job: the product shards' closed report windows merged into
report rows.

Guarantees: a report window's ``metrics`` rows (funnels, ``product.errors``,
``product.events_without_session``) are written once, when every product shard is past
the window; the merged tallies do not depend on the order the shards reported in (times
are sorted before a window closes); at the end of input (:data:`_MAX`) every window is
written."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

import pyarrow as pa

from pipelines.stages.contract import _MAX
from schemas.tables import table_def
from transforms.product.funnels import FunnelReport

if TYPE_CHECKING:
    from transforms.product.config import ProductConfig


class FunnelJob:
    """Funnel tallies, error groups and counts of events without a session id, per report
    window, summed over the product shards (``StageOutput.extra`` of the product stage)."""

    def __init__(self, config: ProductConfig):
        self.report = FunnelReport(config.funnels, config.report_ms)
        self.res = config.report_ms
        self.errors: dict[tuple[int, str], list] = {}  # (window, fingerprint) -> [error type, count, first ms, last ms]
        self.sessionless: dict[int, int] = {}  # window -> events without a session id

    def merge(self, extra: dict) -> None:
        """Add a product shard's closed windows (``extra["funnels"]``, ``["errors"]``, ``["sessionless"]``)."""
        for k, funnels in extra.get("funnels", {}).items():
            for name, f in funnels.items():
                self._merge_funnel(k, name, f)
        for key, (etype, n, *seen) in extra.get("errors", {}).items():
            g = self.errors.setdefault(key, [etype, 0, *seen])
            g[1] += n
            if seen and len(g) == 4:
                g[2], g[3] = min(g[2], seen[0]), max(g[3], seen[1])
        for k, n in extra.get("sessionless", {}).items():
            self.sessionless[k] = self.sessionless.get(k, 0) + n

    def _merge_funnel(self, k: int, name: str, f: dict) -> None:
        w = self.report.windows.setdefault(k, {})
        g = w.get(name)
        if g is None:
            w[name] = {
                "reached": list(f["reached"]),
                "last": list(f["last"]),
                "times": [list(x) for x in f["times"]],
                "abandoned": f["abandoned"],
                "convert": list(f.get("convert", [])),
            }
            return
        for i in range(len(g["reached"])):
            g["reached"][i] += f["reached"][i]
            g["last"][i] += f["last"][i]
            g["times"][i].extend(f["times"][i])
        g["abandoned"] += f["abandoned"]
        g.setdefault("convert", []).extend(f.get("convert", []))

    def emit(self, mark: int | None, rows: dict[str, list]) -> None:
        """Write to ``rows["metrics"]`` the report windows every product shard is past
        (``mark``: the smallest of their ``through``; None: some shard has not reported)."""
        if mark is None:
            return
        for w in self.report.windows.values():
            for g in w.values():
                for x in (*g["times"], g.setdefault("convert", [])):
                    x.sort()  # merged order must not depend on shard arrival order
        rows["metrics"].append(self.report.close(None if mark >= _MAX else mark))
        due = sorted(k for k in self.errors if mark >= _MAX or (k[0] + 1) * self.res <= mark)
        sl = self.sessionless
        due_sl = sorted(k for k in sl if mark >= _MAX or (k + 1) * self.res <= mark)
        if due or due_sl:
            base = {c: None for c in table_def("metrics").arrow_schema().names}
            out = []

            def window(k):
                return {
                    "window_start": dt.datetime.fromtimestamp(k * self.res / 1000, dt.UTC),
                    "window_end": dt.datetime.fromtimestamp((k + 1) * self.res / 1000, dt.UTC),
                    "resolution": _fmt(self.res),
                    "kind": "summary",
                    "exemplar_trace_ids": [],
                    "late_samples": 0,
                }

            for key in due:
                etype, n, *seen = self.errors.pop(key)
                # min / max: first / last seen (event time, epoch ms) of the fingerprint in the window
                first, last = (float(seen[0]), float(seen[1])) if seen else (None, None)
                out.append(
                    {
                        **base,
                        **window(key[0]),
                        "name": "product.errors",
                        "labels": [("error_type", etype[:200]), ("fingerprint", key[1])],
                        "count": n,
                        "sum": float(n),
                        "min": first,
                        "max": last,
                    }
                )
            for k in due_sl:
                n = sl.pop(k)
                out.append(
                    {
                        **base,
                        **window(k),
                        "name": "product.events_without_session",
                        "labels": [],
                        "count": n,
                        "sum": float(n),
                    }
                )
            rows["metrics"].append(pa.Table.from_pylist(out, schema=table_def("metrics").arrow_schema()))


def _fmt(ms: int) -> str:
    from transforms.rollup.config import format_duration

    return format_duration(ms)
