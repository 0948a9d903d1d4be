"""Event-time tumbling rollups of metric samples into rows of the ``obs.metrics`` table.

Consumes Arrow tables of metric samples (the ``metric_sample`` wire columns: ``name``,
``kind``, ``timestamp``, ``labels``, ``value``, ``bucket_bounds``, ``bucket_counts``,
``count``, ``sum``; optional ``trace_id`` for exemplars). Emits, whenever a window closes,
rows in exactly the METRICS table's columns, plus the input rows it could not use (too late,
or invalid), each with a ``reason`` column — nothing is dropped silently.

Event time, exactly:

* ``watermark = max(max event time seen - watermark_delay, every value passed to
  advance_watermark)``; it never goes back. It moves after a whole batch is taken in, so a
  batch is judged against the watermark as it stood when the batch arrived.
* Windows are ``[k*r, (k+1)*r)`` in epoch milliseconds for each resolution ``r``. A window
  *closes* (its rows are emitted, once) when ``watermark >= window_end + allowed_lateness``.
* A sample whose finest window is still open is taken; if its time is below the
  watermark it is *late* and counted in its rows' ``late_samples``. A sample whose finest
  window has closed goes to ``late`` (reason ``too_late``).
* Coarser resolutions are built from the closed finest windows (they are multiples of the
  finest), so lateness is judged once, at the finest resolution.

Per kind: counters → ``increase`` (sum of increases between consecutive samples in time
order, the previous sample possibly in an earlier window; a drop or a changed ``start_time``
is a reset and counts the post-reset value; a series' first sample ever contributes 0, or its
whole value when its ``start_time`` is known) and ``rate`` = increase / window seconds, with
min/max/last of the cumulative value; delta counters (``temporality = delta``) → each value
added to ``increase`` as it is; gauges → count, sum, min, max, last (avg = sum/count) and
p50/p75/p90/p95/p99 from a DDSketch; histograms (delta by default: each sample's buckets are
observations since the previous sample) → count, sum, quantiles from the merged buckets;
summaries (delta count and sum by default) → count, sum. Cumulative histograms and summaries
(``temporality = cumulative``, as OTLP sends them) become differences to their series'
previous export when the window closes (a changed ``start_time`` or a count or bucket going
down is a reset: the export counts in full). The optional input columns ``temporality``
(``cumulative`` / ``delta``) and ``start_time`` (ms or timestamp) come from the OTLP codec."""

from __future__ import annotations

from typing import cast
import pickle
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas.tables import METRICS
from transforms.rollup.config import RollupConfig, format_duration
from transforms.rollup.series import KINDS, SeriesRegistry, canonical_keys
from transforms.rollup.sketch import ColumnarSketch, histogram_quantiles

QUANTILES = (0.5, 0.75, 0.9, 0.95, 0.99)
_COUNTER, _GAUGE, _HIST, _SUMMARY = 0, 1, 2, 3
_STAT = ("oid", "count", "sum", "min", "max", "last_ts", "last_v", "late", "inc", "ex_v")
_HSHIFT = 16
_NOSTART = np.iinfo(np.int64).min  # start_time unknown
_ADDED_KEYS = {"histogram_buckets": "per_bucket", "counter_gap": None}


@dataclass
class RollupOutput:
    """What one call produced: closed-window rows (METRICS columns), input rows that came
    after their window closed (``late``) and rows that cannot be rolled up (``invalid``);
    both of the latter carry the input columns plus ``reason``."""

    metrics: pa.Table
    late: pa.Table | None = None
    invalid: pa.Table | None = None

    @staticmethod
    def concat(outs: list[RollupOutput]) -> RollupOutput:
        def cat(ts):
            ts = [t for t in ts if t is not None and t.num_rows]
            return pa.concat_tables(ts) if ts else None

        m = [o.metrics for o in outs if o.metrics.num_rows]
        return RollupOutput(
            pa.concat_tables(m) if m else METRICS.arrow_schema().empty_table(),
            cat([o.late for o in outs]),
            cat([o.invalid for o in outs]),
        )


@dataclass
class _Window:
    start: int
    end: int
    stats: list = field(default_factory=list)  # dicts of _STAT arrays (+ "ex_id")
    sketch: list = field(default_factory=list)  # (oid, code, count)
    hist: list = field(default_factory=list)  # (oid, pos, count)
    ctr: list = field(default_factory=list)  # (sid, oid, ts, value, start)
    cum: list = field(default_factory=list)  # cumulative histogram / summary rows (dicts, see _take)
    pending: int = 0


def _merge_stats(chunks: list[dict], exemplars: bool) -> dict:
    """Merge partial statistics of one window: one row per output series, sorted by oid."""
    if len(chunks) == 1 and chunks[0].get("_merged"):
        return chunks[0]
    with_ex = exemplars and any(ch.get("ex_id") is not None for ch in chunks)
    c = {k: np.concatenate([ch[k] for ch in chunks]) if len(chunks) > 1 else chunks[0][k] for k in _STAT}
    oid, lts = c["oid"], c["last_ts"]
    if len(oid) == 0:
        out = {k: c[k] for k in _STAT}
        out.update({"_merged": True, "ex_id": None})
        return out
    t0 = lts.min()
    span = int(lts.max() - t0) + 1
    if span < (1 << 31) and int(oid.max()) < (1 << 31):
        order = np.argsort((oid << 32) | (lts - t0), kind="stable")
    else:
        order = np.lexsort((lts, oid))
    so = oid[order]
    brk = np.flatnonzero(so[1:] != so[:-1]) + 1
    starts = np.r_[0, brk]
    ends = np.r_[brk - 1, len(so) - 1]
    out = {"_merged": True, "oid": so[starts]}
    for k in ("count", "sum", "late", "inc"):
        out[k] = np.add.reduceat(c[k][order], starts)
    out["min"] = np.fmin.reduceat(c["min"][order], starts)
    out["max"] = np.fmax.reduceat(c["max"][order], starts)
    last = order[ends]
    out["last_ts"] = lts[last]
    out["last_v"] = c["last_v"][last]
    if with_ex:
        ex_ids = np.concatenate(
            [ch["ex_id"] if ch.get("ex_id") is not None else np.full(len(ch["oid"]), None, object) for ch in chunks]
        )
        o2 = np.lexsort((c["ex_v"], oid))
        top = o2[np.r_[np.flatnonzero(oid[o2][1:] != oid[o2][:-1]), len(oid) - 1]]
        out["ex_v"] = c["ex_v"][top]
        out["ex_id"] = ex_ids[top]
    else:
        out["ex_v"] = np.fmax.reduceat(c["ex_v"][order], starts)
        out["ex_id"] = None
    return out


def _merge_pairs(chunks: list[tuple], shift: int):
    """Sum counts of equal (oid, sub) over chunks; sub is a non-negative int < 2**shift."""
    oid = np.concatenate([c[0] for c in chunks])
    sub = np.concatenate([c[1] for c in chunks])
    cnt = np.concatenate([c[2] for c in chunks])
    comp = (oid.astype(np.int64) << shift) | sub.astype(np.int64)
    order = np.argsort(comp, kind="stable")
    sc = comp[order]
    if len(sc) == 0:
        return oid, sub, cnt
    starts = np.flatnonzero(np.r_[True, sc[1:] != sc[:-1]])
    u = sc[starts]
    return u >> shift, u & ((1 << shift) - 1), np.add.reduceat(cnt[order], starts)


class MetricRollup:
    """Tumbling event-time rollups at every configured resolution.

    ``process(table)`` takes a batch of samples, ``advance_watermark(ms)`` moves event time
    on (e.g. for an idle source), ``flush()`` closes every open window (end of a bounded
    input). Each returns a :class:`RollupOutput`. ``snapshot()``/``restore()`` carry the
    whole state as bytes; a restored rollup continues with identical output."""

    def __init__(self, config: RollupConfig | dict | None = None):
        self.config = config if isinstance(config, RollupConfig) else RollupConfig(**(config or {}))
        self.res = self.config.resolutions_ms
        self.fine = self.res[0]
        self.delay = self.config.delay_ms
        self.lateness = self.config.lateness_ms
        self.sk = ColumnarSketch(self.config.relative_accuracy)
        self._sketch_kinds = {_GAUGE if k == "gauge" else _SUMMARY for k in self.config.sketch_kinds}
        self._init_state()

    def _init_state(self):
        self.registry = SeriesRegistry(self.config.max_series_per_metric)
        self.windows: dict[int, dict[int, _Window]] = {r: {} for r in self.res}
        self.watermark: int | None = None
        self.max_seen: int | None = None
        self.carry_v = np.zeros(0, np.float64)  # last counter value per sid
        self.carry_has = np.zeros(0, bool)
        self.carry_start = np.zeros(0, np.int64)  # start_time (ms) of the last counter value per sid
        self.carry_ts = np.zeros(0, np.int64)  # time (ms) of the last counter value per sid (counter_gap)
        self.cum_carry: dict[int, tuple] = {}  # sid -> (start, count, sum, buckets) of the last cumulative hist/summary
        self.hist_bounds: dict[int, tuple[str, np.ndarray]] = {}
        self.stats = {
            "samples_in": 0,
            "samples_accepted": 0,
            "late_accepted": 0,
            "too_late": 0,
            "invalid": 0,
            "windows_closed": 0,
            "rows_out": 0,
        }

    # ----------------------------------------------------------------- state
    def snapshot(self) -> bytes:
        """The whole state (config included) as bytes."""
        state = {
            k: getattr(self, k)
            for k in (
                "registry",
                "windows",
                "watermark",
                "max_seen",
                "carry_v",
                "carry_has",
                "carry_start",
                "carry_ts",
                "cum_carry",
                "hist_bounds",
                "stats",
            )
        }
        return pickle.dumps({"version": 1, "config": self.config.model_dump(), "state": state}, protocol=5)

    def restore(self, blob: bytes) -> None:
        """Replace this rollup's state by a snapshot's (its config must match)."""
        doc = pickle.loads(blob)
        for k, v in _ADDED_KEYS.items():  # snapshots from before these keys had their defaults
            doc["config"].setdefault(k, v)
        if doc["config"] != self.config.model_dump():
            raise ValueError("snapshot was taken with a different rollup config")
        for k, v in doc["state"].items():
            setattr(self, k, v)

    @classmethod
    def from_snapshot(cls, blob: bytes) -> MetricRollup:
        r = cls(RollupConfig(**pickle.loads(blob)["config"]))
        r.restore(blob)
        return r

    # ----------------------------------------------------------------- input
    @staticmethod
    def _col(t: pa.Table, name: str, typ):
        if name in t.column_names:
            c = t.column(name)
            return c.combine_chunks() if isinstance(c, pa.ChunkedArray) else c
        return pa.nulls(t.num_rows, typ)

    def process(self, table: pa.Table | pa.RecordBatch) -> RollupOutput:
        """Roll up one batch of samples; returns the rows of windows it closed."""
        if isinstance(table, pa.RecordBatch):
            table = pa.Table.from_batches([table])
        n = table.num_rows
        self.stats["samples_in"] += n
        if n == 0:
            return RollupOutput(METRICS.arrow_schema().empty_table())
        ts_col = self._col(table, "timestamp", pa.int64())
        if pa.types.is_timestamp(ts_col.type):
            ts_col = pc.cast(ts_col.cast(pa.timestamp("ms", tz=ts_col.type.tz)), pa.int64())
        kind_s = pc.utf8_lower(self._col(table, "kind", pa.string()).cast(pa.string()))
        kcode = pc.fill_null(pc.index_in(kind_s, value_set=pa.array(KINDS)), -1).to_numpy()
        value = pc.fill_null(self._col(table, "value", pa.float64()).cast(pa.float64()), np.nan).to_numpy()
        ts = pc.fill_null(ts_col, np.iinfo(np.int64).min).to_numpy()
        bad = (kcode < 0) | (ts == np.iinfo(np.int64).min)
        bad |= np.isin(kcode, (_COUNTER, _GAUGE)) & ~np.isfinite(value)
        converted, layout_why = self._bucket_layout(table, kcode)  # late / invalid rows keep the raw counts
        if layout_why is not None:
            bad |= layout_why.astype(bool)  # None: fine; a reason: invalid
        reasons = {}
        if bad.any():
            reasons["invalid"] = bad
        wm0 = self.watermark
        w = ts // self.fine
        if wm0 is not None:
            too_late = ~bad & ((w + 1) * self.fine + self.lateness <= wm0)
            if too_late.any():
                reasons["too_late"] = too_late
        late_out = inv_out = None
        keep = np.ones(n, bool)
        if "too_late" in reasons:
            keep &= ~reasons["too_late"]
            late_out = table.filter(pa.array(reasons["too_late"])).append_column(
                "reason", pa.array(["too_late"] * int(reasons["too_late"].sum()), pa.string())
            )
            self.stats["too_late"] += late_out.num_rows
        if "invalid" in reasons:
            keep &= ~bad
            sub = table.filter(pa.array(bad))
            why = np.where(
                kcode[bad] < 0,
                "unknown_kind",
                np.where(ts[bad] == np.iinfo(np.int64).min, "missing_timestamp", "missing_value"),
            )
            if layout_why is not None:
                why = np.where(layout_why[bad].astype(bool), layout_why[bad], why)
            inv_out = sub.append_column("reason", pa.array(why.tolist(), pa.string()))
            self.stats["invalid"] += inv_out.num_rows
        table = converted
        if not keep.all():
            table = table.filter(pa.array(keep))
            ts, w, kcode, value = ts[keep], w[keep], kcode[keep], value[keep]
        if table.num_rows:
            self._take(table, ts, w, kcode, value, wm0)
            mx = int(ts.max())
            self.max_seen = mx if self.max_seen is None else max(self.max_seen, mx)
            cand = self.max_seen - self.delay
            if self.watermark is None or cand > self.watermark:
                self.watermark = cand
        out = self._close(self.watermark)
        out.late, out.invalid = late_out, inv_out
        return out

    def _bucket_layout(self, table: pa.Table, kcode: np.ndarray) -> tuple[pa.Table, np.ndarray | None]:
        """Check (and with ``histogram_buckets: cumulative``, convert) histogram ``bucket_counts``.

        ``per_bucket``: a histogram whose ``count`` is given must have buckets summing to it;
        when they do not, the row is invalid: ``cumulative_buckets`` when the counts never go
        down and the last one equals ``count`` (Prometheus' cumulative ``le`` layout: set
        ``histogram_buckets: cumulative``), ``bucket_count_mismatch`` otherwise.
        ``cumulative``: each row's counts become per-bucket differences; a count going down is
        invalid (``non_monotonic_buckets``), and so is a last (``+Inf``) count other than a
        given ``count`` (``bucket_count_mismatch``). Returns the table (bucket_counts replaced
        when converted) and a reason per row (``None`` where fine), or ``None`` when no row is
        a histogram with buckets."""
        is_h = kcode == _HIST
        if not is_h.any() or "bucket_counts" not in table.column_names:
            return table, None
        bc = self._col(table, "bucket_counts", pa.list_(pa.int64()))
        if bc.null_count == len(bc):
            return table, None
        bc = bc.cast(pa.list_(pa.int64()))
        n = table.num_rows
        lens = pc.fill_null(pc.list_value_length(bc), 0).to_numpy(zero_copy_only=False).astype(np.int64)
        offs = bc.offsets.to_numpy().astype(np.int64) - int(bc.offsets[0].as_py())
        flat = pc.fill_null(pc.list_flatten(bc), 0).to_numpy(zero_copy_only=False).astype(np.int64)
        parent = np.repeat(np.arange(n), lens)
        total = np.bincount(parent, weights=flat, minlength=n) if len(flat) else np.zeros(n)
        has = is_h & (lens > 0)
        last = np.where(has, flat[np.maximum(offs[:n] + lens - 1, 0)] if len(flat) else 0, 0)
        step = np.diff(flat)
        down = np.zeros(n, bool)
        if len(step):
            inner = parent[1:] == parent[:-1]
            down[parent[1:][inner & (step < 0)]] = True
        cnt = pc.fill_null(self._col(table, "count", pa.int64()).cast(pa.float64()), np.nan).to_numpy()
        known = has & ~np.isnan(cnt)
        why = np.full(n, None, object)
        if self.config.histogram_buckets == "per_bucket":
            off = known & (total != cnt)
            why[off & ~down & (last == cnt)] = "cumulative_buckets"
            why[off & (down | (last != cnt))] = "bucket_count_mismatch"
        else:
            why[has & down] = "non_monotonic_buckets"
            why[known & ~down & (last != cnt)] = "bucket_count_mismatch"
            first = np.zeros(len(flat), bool)
            first[offs[:n][lens > 0]] = True
            per = flat - np.where(first, 0, np.r_[0, flat[:-1]])
            conv = np.where(np.repeat(has & ~why.astype(bool), lens), per, flat)
            arr = pa.ListArray.from_arrays(
                pa.array(np.r_[0, np.cumsum(lens)], pa.int32()), pa.array(conv, pa.int64()), mask=pc.is_null(bc)
            )
            table = table.set_column(table.column_names.index("bucket_counts"), "bucket_counts", arr)
        return table, why if why.astype(bool).any() else None

    def _take(self, table, ts, w, kcode, value, wm0):
        n = table.num_rows
        keys = canonical_keys(
            pa.array(np.asarray(KINDS, object)[kcode], pa.string()),
            self._col(table, "name", pa.string()),
            self._col(table, "labels", pa.map_(pa.string(), pa.string())),
        )
        sid, oid = self.registry.ids(keys)
        ns = self.registry.n_series
        if len(self.carry_v) < ns:
            grow = max(ns, 2 * len(self.carry_v))
            self.carry_v = np.concatenate([self.carry_v, np.full(grow - len(self.carry_v), np.nan)])
            self.carry_has = np.concatenate([self.carry_has, np.zeros(grow - len(self.carry_has), bool)])
        if len(self.carry_start) < len(self.carry_v):
            self.carry_start = np.concatenate(
                [self.carry_start, np.full(len(self.carry_v) - len(self.carry_start), _NOSTART)]
            )
        late = (ts < wm0).astype(np.int64) if wm0 is not None else np.zeros(n, np.int64)
        self.stats["samples_accepted"] += n
        self.stats["late_accepted"] += int(late.sum())
        cnt_col = pc.fill_null(
            pc.cast(self._col(table, "count", pa.int64()), pa.float64(), safe=False), np.nan
        ).to_numpy()
        sum_col = pc.fill_null(self._col(table, "sum", pa.float64()).cast(pa.float64()), np.nan).to_numpy()
        is_c, is_g, is_h, is_s = (kcode == _COUNTER), (kcode == _GAUGE), (kcode == _HIST), (kcode == _SUMMARY)
        # temporality (absent: counters cumulative, histograms and summaries delta) and start time
        start = np.full(n, _NOSTART, np.int64)
        dctr = cum = np.zeros(n, bool)
        if "temporality" in table.column_names:
            temp = self._col(table, "temporality", pa.string()).cast(pa.string())
            dctr = is_c & pc.fill_null(pc.equal(temp, "delta"), False).to_numpy(zero_copy_only=False)
            cum = (is_h | is_s) & pc.fill_null(pc.equal(temp, "cumulative"), False).to_numpy(zero_copy_only=False)
        if "start_time" in table.column_names:
            sc = self._col(table, "start_time", pa.int64())
            if pa.types.is_timestamp(sc.type):
                sc = pc.cast(sc.cast(pa.timestamp("ms", tz=sc.type.tz)), pa.int64())
            start = pc.fill_null(sc.cast(pa.int64()), _NOSTART).to_numpy()
        count = np.ones(n, np.float64)
        ssum = np.where(is_g, value, 0.0)
        if is_s.any() or is_h.any():
            count = np.where(is_s | is_h, np.where(np.isnan(cnt_col), np.where(is_s, 1.0, np.nan), cnt_col), count)
            ssum = np.where(
                is_s | is_h, np.where(np.isnan(sum_col), np.where(np.isfinite(value), value, 0.0), sum_col), ssum
            )
        hist = None
        if (is_h & ~cum).any():
            hist = self._hist_rows(table, is_h & ~cum, oid, ts)
            # histogram count defaults to the sum of its buckets
            if np.isnan(count).any():
                count = np.where(np.isnan(count), hist[3], count)
        cum_rows = None
        if cum.any():
            cum_rows = self._cum_rows(table, cum, is_h, sid, oid, ts, start, cnt_col, sum_col)
            count = np.where(cum, 0.0, count)  # taken at window close, as differences between exports
            ssum = np.where(cum, 0.0, ssum)
        # delta counters: the value is the increase itself (no cumulative value for min/max/last)
        inc = np.where(dctr, value, 0.0)
        vv = np.where(is_h | dctr, np.nan, value)
        is_c = is_c & ~dctr
        ex_id = None
        if self.config.exemplars and "trace_id" in table.column_names:
            ex_id = np.asarray(self._col(table, "trace_id", pa.string()).to_pylist(), object)
        skm = np.isin(kcode, list(self._sketch_kinds)) & np.isfinite(value)
        uw = np.unique(w)
        for wk in uw:
            m = (w == wk) if len(uw) > 1 else slice(None)
            win = self._window(self.fine, int(wk))
            chunk = {
                "oid": oid[m],
                "count": count[m],
                "sum": ssum[m],
                "min": vv[m],
                "max": vv[m],
                "last_ts": ts[m],
                "last_v": vv[m],
                "late": late[m],
                "inc": inc[m],
                "ex_v": np.where(np.isnan(vv[m]), -np.inf, vv[m]),
                "ex_id": ex_id[m] if ex_id is not None else None,
            }
            win.stats.append(_merge_stats([chunk], self.config.exemplars and ex_id is not None))
            cm = is_c[m]
            if cm.any():
                win.ctr.append((sid[m][cm], oid[m][cm], ts[m][cm], value[m][cm], start[m][cm]))
            if cum_rows is not None:
                cw = cum_rows["w"] == wk
                if cw.any():
                    win.__dict__.setdefault("cum", []).append({k: v[cw] for k, v in cum_rows.items()})
            sm = skm[m]
            if sm.any():
                s, c, k = ColumnarSketch.aggregate(oid[m][sm], self.sk.codes(value[m][sm]))
                win.sketch.append((s, c, k))
            if hist is not None:
                hm = (hist[4] == wk) if len(uw) > 1 else slice(None)
                win.hist.append(_merge_pairs([(hist[0][hm], hist[1][hm], hist[2][hm])], _HSHIFT))
            win.pending += len(chunk["oid"])
            if win.pending > self.config.compact_rows:
                self._compact(win)

    def _bounds_ok(self, bb: pa.Array, ro: np.ndarray) -> np.ndarray:
        """Register each output series' first bucket bounds; True where a row's bounds are its
        series' (rows whose bounds differ are counted, not merged into wrong buckets).

        Rows are grouped by their exact bounds (the float64 values' bits, per list length)
        first, so the text key of a bounds list is made once per distinct list, not per row."""
        n = len(ro)
        if isinstance(bb, pa.ChunkedArray):
            bb = bb.combine_chunks()
        lens = pc.fill_null(pc.list_value_length(bb), -1).to_numpy(zero_copy_only=False).astype(np.int64)
        flat = pc.list_flatten(bb).to_numpy(zero_copy_only=False).astype(np.float64).view(np.uint64)
        offs = np.r_[0, np.cumsum(np.maximum(lens, 0))]
        group = np.empty(n, np.int64)  # distinct bounds list of each row
        first_row: list[int] = []  # a row holding each distinct list
        for length in np.unique(lens).tolist():
            rows = np.flatnonzero(lens == length)
            if length <= 0:
                uniq_first, inverse = rows[:1], np.zeros(len(rows), np.int64)
            else:
                mat = flat[offs[rows][:, None] + np.arange(length)]
                _, idx, inverse = np.unique(mat, axis=0, return_index=True, return_inverse=True)
                uniq_first = rows[idx]
            group[rows] = len(first_row) + inverse.reshape(-1)
            first_row.extend(uniq_first.tolist())
        firsts = pa.array(first_row, pa.int64())
        keys = pc.fill_null(pc.binary_join(pc.cast(bb.take(firsts), pa.list_(pa.string())), ","), "").to_pylist()
        row_key = [keys[g] for g in group.tolist()]
        reg = self.hist_bounds
        ok = np.ones(n, bool)
        for r, (o, k) in enumerate(zip(ro.tolist(), row_key)):
            have = reg.get(o)
            if have is None:
                reg[o] = (k, np.asarray(bb[r].as_py() or [], np.float64))
            elif have[0] != k:
                ok[r] = False
        self.stats["histogram_bounds_mismatch"] = self.stats.get("histogram_bounds_mismatch", 0) + int((~ok).sum())
        return ok

    def _cum_rows(self, table, cum, is_h, sid, oid, ts, start, cnt_col, sum_col) -> dict:
        """Cumulative histogram and summary rows, kept per window until it closes (their
        differences to the series' previous export are taken then, in time order)."""
        rows = np.flatnonzero(cum)
        ok = np.ones(len(rows), bool)
        buckets = np.full(len(rows), None, object)
        hr = np.flatnonzero(is_h[rows])
        if len(hr):
            take = pa.array(rows[hr])
            ok[hr] = self._bounds_ok(
                self._col(table, "bucket_bounds", pa.list_(pa.float64())).take(take), oid[rows[hr]]
            )
            for j, b in zip(
                hr.tolist(), self._col(table, "bucket_counts", pa.list_(pa.int64())).take(take).to_pylist()
            ):
                buckets[j] = np.asarray(b or [], np.float64)
        cnt = cnt_col[rows].copy()
        for j in np.flatnonzero(np.isnan(cnt)).tolist():  # a histogram's count defaults to its buckets' sum
            cnt[j] = buckets[j].sum() if buckets[j] is not None else 0.0
        return {
            "sid": sid[rows],
            "oid": oid[rows],
            "ts": ts[rows],
            "start": start[rows],
            "count": cnt,
            "sum": sum_col[rows],
            "buckets": buckets,
            "ok": ok,
            "w": ts[rows] // self.fine,
        }

    def _hist_rows(self, table, is_h, oid, ts):
        """Flattened (oid, bucket position, count, per-row bucket total, window) of histogram rows."""
        n = table.num_rows
        counts = self._col(table, "bucket_counts", pa.list_(pa.int64()))
        bounds = self._col(table, "bucket_bounds", pa.list_(pa.float64()))
        rows = np.flatnonzero(is_h)
        bc = counts.take(pa.array(rows))
        bb = bounds.take(pa.array(rows))
        ro = oid[rows]
        ok = self._bounds_ok(bb, ro)
        flat = pc.cast(pc.list_flatten(bc), pa.float64(), safe=False).to_numpy(zero_copy_only=False)
        parent = pc.list_parent_indices(bc).to_numpy()
        offs = bc.offsets.to_numpy()
        pos = np.arange(len(parent)) - (offs[parent] - offs[0]) if len(parent) else np.zeros(0, np.int64)
        keepf = ok[parent] if len(parent) else np.zeros(0, bool)
        totals = np.zeros(n)
        totals[rows] = np.bincount(parent, weights=flat, minlength=len(rows)) if len(parent) else 0.0
        wrow = ts[rows] // self.fine
        return (ro[parent][keepf], pos[keepf].astype(np.int64), flat[keepf], totals, wrow[parent][keepf])

    def _window(self, res: int, k: int) -> _Window:
        ws = self.windows[res]
        win = ws.get(k)
        if win is None:
            win = ws[k] = _Window(k * res, (k + 1) * res)
        return win

    def _compact(self, win: _Window) -> None:
        ex = self.config.exemplars
        if len(win.stats) > 1:
            win.stats = [_merge_stats(win.stats, ex)]
        if len(win.sketch) > 1:
            win.sketch = [ColumnarSketch.aggregate(*[np.concatenate(x) for x in zip(*win.sketch)])]
        if len(win.hist) > 1:
            win.hist = [_merge_pairs(win.hist, _HSHIFT)]
        win.pending = len(win.stats[0]["oid"]) if win.stats else 0

    # ----------------------------------------------------------------- closing
    def advance_watermark(self, ts_ms: int) -> RollupOutput:
        """Move the watermark to ``ts_ms`` (if later) and close the windows it passes."""
        if self.watermark is None or ts_ms > self.watermark:
            self.watermark = int(ts_ms)
        return self._close(self.watermark)

    def flush(self) -> RollupOutput:
        """Close every open window (end of a bounded input); the watermark is unchanged."""
        return self._close(None, everything=True)

    def _close(self, wm: int | None, everything: bool = False) -> RollupOutput:
        parts = []
        if wm is None and not everything:
            return RollupOutput(METRICS.arrow_schema().empty_table())
        for res in self.res:
            ws = self.windows[res]
            for k in sorted(ws):
                win = ws[k]
                if not everything and win.end + self.lateness > cast(int, wm):
                    break
                del ws[k]
                parts.append(self._finish(res, win))
        parts = [p for p in parts if p is not None and p.num_rows]
        self.stats["windows_closed"] += len(parts)
        if not parts:
            return RollupOutput(METRICS.arrow_schema().empty_table())
        t = pa.concat_tables(parts)
        self.stats["rows_out"] += t.num_rows
        return RollupOutput(t)

    def _finish(self, res: int, win: _Window) -> pa.Table | None:
        if not win.stats:
            return None
        self._compact(win)
        st = win.stats[0]
        if win.ctr and res == self.fine:
            parts = [c if len(c) == 5 else (*c, np.full(len(c[0]), _NOSTART, np.int64)) for c in win.ctr]
            sid, oid, ts, v, s0 = (np.concatenate(x) for x in zip(*parts))
            order = np.lexsort((ts, sid))
            sid, oid, v, s0, ts = sid[order], oid[order], v[order], s0[order], ts[order]
            first = np.r_[True, sid[1:] != sid[:-1]]
            prev = np.r_[np.nan, v[:-1]]
            prev = np.where(first, np.where(self.carry_has[sid], self.carry_v[sid], np.nan), prev)
            prev_s = np.where(first, self.carry_start[sid], np.r_[_NOSTART, s0[:-1]])
            # a new start time is a restart; a series' first value with a known start time is
            # all increase since that start (as a delta point from it would be)
            known = s0 != _NOSTART
            full = known & (np.isnan(prev) | ((prev_s != _NOSTART) & (prev_s != s0)))
            delta = np.where(full, v, np.where(np.isnan(prev), 0.0, np.where(v >= prev, v - prev, v)))
            if self.config.counter_gap_ms is not None:
                delta = self._spread_gaps(win, sid, ts, first, prev, delta)
            inc = np.bincount(oid, weights=delta, minlength=int(st["oid"].max()) + 1 if len(st["oid"]) else 0)
            st = dict(st)
            st["inc"] = st["inc"] + inc[st["oid"]]
            last = np.r_[first[1:], True]
            self.carry_v[sid[last]] = v[last]
            self.carry_has[sid[last]] = True
            self.carry_start[sid[last]] = s0[last]
            if len(self.carry_ts) < len(self.carry_v):
                self.carry_ts = np.concatenate(
                    [self.carry_ts, np.full(len(self.carry_v) - len(self.carry_ts), _NOSTART)]
                )
            self.carry_ts[sid[last]] = ts[last]
        if getattr(win, "cum", None) and res == self.fine:
            st = self._cumulative(win, st)
        sk = win.sketch[0] if win.sketch else None
        hs = win.hist[0] if win.hist else None
        for coarse in self.res[1:]:
            if res == self.fine:
                cw = self._window(coarse, win.start // coarse)
                st_c = dict(st)
                st_c["_merged"] = False
                cw.stats.append(st_c)
                if sk is not None:
                    cw.sketch.append(sk)
                if hs is not None:
                    cw.hist.append(hs)
                cw.pending += len(st["oid"])
        return self._rows(res, win, st, sk, hs)

    def _spread_gaps(self, win: _Window, sid, ts, first, prev, delta) -> np.ndarray:
        """``counter_gap``: an increase between two samples more than ``counter_gap`` apart
        counts only with the share of the gap inside this window, ``(ts - max(prev_ts,
        window_start)) / (ts - prev_ts)`` (a constant rate over the gap); the rest, the
        increase no window in the gap can hold (they have no samples and closed before it was
        known), is counted in ``stats["counter_gap_increase_spread_out"]``. Pairs whose
        previous time is unknown (snapshots from before ``counter_gap``) count in full."""
        if len(self.carry_ts) < len(self.carry_v):
            self.carry_ts = np.concatenate([self.carry_ts, np.full(len(self.carry_v) - len(self.carry_ts), _NOSTART)])
        prev_ts = np.where(first, self.carry_ts[sid], np.r_[_NOSTART, ts[:-1]])
        gap = (prev_ts != _NOSTART) & ~np.isnan(prev) & (ts - prev_ts > self.config.counter_gap_ms)
        if not gap.any():
            return delta
        share = np.ones(len(ts))
        span = (ts - prev_ts)[gap].astype(np.float64)
        share[gap] = (ts[gap] - np.maximum(prev_ts[gap], win.start)) / span
        out = delta * share
        self.stats["counter_gap_increase_spread_out"] = self.stats.get("counter_gap_increase_spread_out", 0.0) + float(
            (delta - out).sum()
        )
        return out

    def _cumulative(self, win: _Window, st: dict) -> dict:
        """Differences of a closing window's cumulative histogram / summary rows to each
        series' previous export (time order; the previous one possibly in an earlier window),
        added to the window's count, sum and buckets. A reset — the start time changed, or
        the count or a bucket went down — counts the new export in full; so does a series'
        first export when its start time is known (all of it happened since that start);
        without a start time the first export only sets the baseline."""
        c = {k: np.concatenate([ch[k] for ch in win.cum]) for k in win.cum[0]}
        win.cum = []
        order = np.lexsort((c["ts"], c["sid"]))
        add_c: dict[int, float] = {}
        add_s: dict[int, float] = {}
        pairs: list[tuple[int, np.ndarray, np.ndarray]] = []
        carry = self.cum_carry
        for i in order.tolist():
            if not c["ok"][i]:
                continue
            s, o = int(c["sid"][i]), int(c["oid"][i])
            start, cnt, tot, b = int(c["start"][i]), float(c["count"][i]), float(c["sum"][i]), c["buckets"][i]
            prev = carry.get(s)
            carry[s] = (start, cnt, tot, b)
            if prev is None:
                if start == _NOSTART:
                    continue
                reset = True
            else:
                p_start, p_cnt, p_tot, p_b = prev
                reset = (
                    (start != _NOSTART and p_start != _NOSTART and start != p_start)
                    or cnt < p_cnt
                    or (b is not None and (p_b is None or len(b) != len(p_b) or bool((b < p_b).any())))
                )
            if reset:
                dc, ds, db = cnt, tot, b
            else:
                dc, ds, db = cnt - p_cnt, tot - p_tot, (b - p_b if b is not None else None)
            add_c[o] = add_c.get(o, 0.0) + dc
            if ds == ds:  # no sum (NaN): nothing to add
                add_s[o] = add_s.get(o, 0.0) + ds
            if db is not None:
                nz = np.flatnonzero(db)
                if len(nz):
                    pairs.append((o, nz, db[nz]))
        st = dict(st)
        if add_c or add_s:
            st["count"] = st["count"].copy()
            st["sum"] = st["sum"].copy()
            for o, v in add_c.items():
                st["count"][np.searchsorted(st["oid"], o)] += v
            for o, v in add_s.items():
                st["sum"][np.searchsorted(st["oid"], o)] += v
        if pairs:
            extra = (
                np.concatenate([np.full(len(p), o, np.int64) for o, p, _ in pairs]),
                np.concatenate([p.astype(np.int64) for _, p, _ in pairs]),
                np.concatenate([v for _, _, v in pairs]),
            )
            win.hist = [_merge_pairs(win.hist + [extra], _HSHIFT)]
        return st

    def _hist_quantiles(self, ho: np.ndarray, hp: np.ndarray, hc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Quantiles of each series' merged histogram (pairs sorted by series), computed
        together for the series that share bucket bounds."""
        starts = np.flatnonzero(np.r_[True, ho[1:] != ho[:-1]])
        seg_oid = ho[starts]
        nseg = len(starts)
        seg_of_pair = np.repeat(np.arange(nseg), np.diff(np.r_[starts, len(ho)]))
        codes: dict[str, int] = {}
        gid = np.fromiter(
            (codes.setdefault(self.hist_bounds[o][0], len(codes)) for o in seg_oid.tolist()), np.int64, nseg
        )
        out = np.full((nseg, len(QUANTILES)), np.nan)
        seg_order = np.argsort(gid, kind="stable")  # segments grouped by bounds
        seg_local = np.empty(nseg, np.int64)  # a segment's index within its group
        g_start = np.searchsorted(gid[seg_order], np.arange(len(codes) + 1))
        for g in range(len(codes)):
            seg_local[seg_order[g_start[g] : g_start[g + 1]]] = np.arange(g_start[g + 1] - g_start[g])
        pair_gid = gid[seg_of_pair]
        pair_order = np.argsort(pair_gid, kind="stable")
        p_start = np.searchsorted(pair_gid[pair_order], np.arange(len(codes) + 1))
        for g in range(len(codes)):
            segs = seg_order[g_start[g] : g_start[g + 1]]
            pairs = pair_order[p_start[g] : p_start[g + 1]]
            bounds = self.hist_bounds[int(seg_oid[segs[0]])][1]
            out[segs] = histogram_quantiles(
                QUANTILES, seg_local[seg_of_pair[pairs]], hp[pairs], hc[pairs], len(segs), bounds
            )
        return seg_oid, out

    def _rows(self, res, win, st, sk, hs) -> pa.Table:
        reg = self.registry
        oid = st["oid"]  # sorted, distinct
        m = len(oid)
        qv = np.full((m, len(QUANTILES)), np.nan)
        if sk is not None and len(sk[0]):
            so, qs = self.sk.quantiles(sk[0], sk[1], sk[2], QUANTILES)
            qv[np.searchsorted(oid, so)] = qs
        if hs is not None and len(hs[0]):
            so, qs = self._hist_quantiles(*hs)
            qv[np.searchsorted(oid, so)] = qs
        # rows in canonical key order (deterministic whatever the arrival order)
        order = pc.sort_indices(reg.out_key.take(pa.array(oid))).to_numpy()
        oid = oid[order]
        qv = qv[order]
        st = {k: (v[order] if isinstance(v, np.ndarray) else v) for k, v in st.items()}
        take = pa.array(oid)
        kinds_a = reg.out_kind.take(take)
        is_c = pc.equal(kinds_a, "counter").to_numpy(zero_copy_only=False)
        is_h = pc.equal(kinds_a, "histogram").to_numpy(zero_copy_only=False)
        ex = st["ex_id"]
        has_ex = np.fromiter((x is not None for x in ex), bool, len(ex)) if ex is not None else np.zeros(m, bool)
        ex_off = np.zeros(m + 1, np.int32)
        np.cumsum(has_ex, out=ex_off[1:])
        exemplars = pa.ListArray.from_arrays(
            pa.array(ex_off), pa.array(ex[has_ex].tolist() if ex is not None else [], pa.string())
        )
        secs = res / 1000.0

        def f(a, mask=None):
            nan = np.isnan(a)
            return pa.array(a, pa.float64(), mask=nan if mask is None else (mask | nan))

        sch = METRICS.arrow_schema()
        tst = sch.field("window_start").type
        cols = {
            "window_start": pa.array(np.full(m, win.start * 1000, np.int64), tst),
            "window_end": pa.array(np.full(m, win.end * 1000, np.int64), tst),
            "resolution": pa.array(np.full(m, format_duration(res), object), pa.string()),
            "name": reg.out_name.take(take),
            "kind": kinds_a,
            "labels": reg.out_labels.take(take),
            "count": pa.array(np.nan_to_num(st["count"]).astype(np.int64)),
            "sum": f(st["sum"], is_c),
            "min": f(st["min"], is_h),
            "max": f(st["max"], is_h),
            "last": f(st["last_v"], is_h),
            "increase": f(st["inc"], ~is_c),
            "rate": f(st["inc"] / secs, ~is_c),
            "p50": f(qv[:, 0]),
            "p75": f(qv[:, 1]),
            "p90": f(qv[:, 2]),
            "p95": f(qv[:, 3]),
            "p99": f(qv[:, 4]),
            "exemplar_trace_ids": exemplars,
            "late_samples": pa.array(st["late"].astype(np.int64)),
        }
        return pa.table([cols[f.name] for f in sch], schema=sch)
