"""The tail sampler: buffers spans by trace id, decides each trace with the configured
policies once its wait has elapsed, and returns the kept spans, one row per kept trace,
and counts of everything it did not keep.

Engine-agnostic and deterministic: time is what the caller passes (``now_ms``: event time
/ watermark, or processing time), so the same sequence of ``add`` / ``advance`` calls gives
the same output on every engine and after a ``snapshot`` / ``restore``.

How it holds spans (the memory budget is about 1 KiB per buffered span): every batch
given to :meth:`TailSampler.add` is kept as it came, an Arrow table (a *segment*), with one
int32 trace slot and one alive flag per row; per-trace aggregates (first arrival, root
arrival, earliest start, latest end in nanoseconds, span / error counts, size) live in
numpy arrays indexed by slot. Deciding takes the rows of the decided traces out of the
segments; segments that are mostly dead are compacted and small ones merged, so each row
is copied a bounded number of times.

When a trace is decided (see README.md for the settings):

- ``decision_wait`` after its first span arrived, or ``decision_wait_after_root_received``
  (when set) after its root span (no parent) arrived, whichever comes first — at the first
  :meth:`~TailSampler.advance` whose ``now_ms`` reaches it;
- early, in :meth:`~TailSampler.add`, once it holds ``max_trace_size`` spans or more
  (``early_decisions["max_trace_size"]``);
- early, in :meth:`~TailSampler.add`, when more than ``num_traces`` traces are buffered: the
  oldest (by first arrival) are decided at once with the spans they have
  (``num_traces_overflow: decide_early``, the default) or dropped undecided
  (``drop_oldest``, as the collector does) — ``early_decisions["num_traces_overflow"]``.

A trace decided early and not kept has its spans counted under the early reason
(``num_traces_overflow`` / ``max_trace_size``) rather than ``not_sampled``: that is what the
capacity bound cost. Results of decisions made inside ``add`` are returned by the next
``advance``.

After a decision, the trace id goes into the sampled or non-sampled decision cache (LRU,
``decision_cache`` sizes). A later span of a cached trace follows the decision: kept
(emitted by the next ``advance``, with the trace's policy and adjusted count) or counted
as ``late_after_drop``. The trace row in obs.traces is not re-emitted for late spans. A
late span whose trace fell out of the cache starts a new trace, as in the collector.

Every span given to ``add`` ends in exactly one place: a kept span, a dropped-span count
(by reason) or the buffer (``buffered_spans``)."""

from __future__ import annotations

import io
import pickle
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .config import TailSamplingConfig, load_config
from .decision import DROP, S, final
from .policies import build_policy
from .view import TraceView

REASONS = (
    "not_sampled",
    "policy_drop",
    "num_traces_overflow",
    "max_trace_size",
    "maximum_trace_size_bytes",
    "shutdown",
    "late_after_drop",
    "no_trace_id",
)
_I64_MAX = np.iinfo(np.int64).max
_I64_MIN = np.iinfo(np.int64).min
_MERGE_ROWS = 8192
_MERGE_SEGMENTS = 32

TRACE_SCHEMA = pa.schema(
    [
        ("trace_id", pa.string()),
        ("root_service", pa.string()),
        ("root_name", pa.string()),
        ("start", pa.timestamp("us", tz="UTC")),
        ("end", pa.timestamp("us", tz="UTC")),
        ("trace_duration_ms", pa.float64()),
        ("span_count", pa.int32()),
        ("error_count", pa.int32()),
        ("services", pa.list_(pa.string())),
        ("sampling_policy", pa.string()),
        ("adjusted_count", pa.float64()),
        ("decided_at", pa.timestamp("ms", tz="UTC")),
    ]
)


@dataclass
class Decisions:
    """What one :meth:`TailSampler.advance` released.

    ``spans``: kept spans, the input columns plus ``sampling_policy`` and ``adjusted_count``;
    ``traces``: one row per kept trace (:data:`TRACE_SCHEMA`); ``dropped_spans`` /
    ``dropped_traces``: counts by reason (:data:`REASONS`; ``late_after_drop`` and
    ``no_trace_id`` count spans only); ``early_decisions``: traces decided before their wait
    by reason; ``late_spans_kept``: spans kept by a cached decision."""

    spans: pa.Table
    traces: pa.Table
    dropped_spans: dict[str, int] = field(default_factory=dict)
    dropped_traces: dict[str, int] = field(default_factory=dict)
    early_decisions: dict[str, int] = field(default_factory=dict)
    late_spans_kept: int = 0
    sampled_traces: int = 0
    not_sampled_traces: int = 0


class _Segment:
    __slots__ = ("table", "slots", "alive", "n_alive", "uslots")

    def __init__(self, table: pa.Table, slots: np.ndarray, uslots: np.ndarray):
        self.table = table
        self.slots = slots
        self.alive = np.ones(len(slots), dtype=bool)
        self.n_alive = len(slots)
        self.uslots = uslots


def _ts_us(col) -> np.ndarray:
    """A timestamp (any unit) or integer column as int64 microseconds."""
    t = col.type
    if pa.types.is_timestamp(t):
        factor = {"s": 1_000_000, "ms": 1000, "us": 1, "ns": None}[t.unit]
        v = pc.cast(col, pa.int64()).to_numpy() if isinstance(col, pa.Array) else pc.cast(col, pa.int64()).to_numpy()
        return v // 1000 if factor is None else v * factor
    return np.asarray(col.to_numpy(), dtype=np.int64)


def _ts_ns(batch: pa.Table, column: str, nanos: str) -> np.ndarray:
    """Span start or end as int64 nanoseconds: the exact ``nanos`` column (``start_unix_nano``
    / ``end_unix_nano``, which the OTLP codec adds) where it is set, else ``column`` (a
    microsecond timestamp) x 1000."""
    out = _ts_us(batch.column(column)) * 1000
    if nanos in batch.column_names:
        col = batch.column(nanos)
        if col.null_count < len(col):
            exact = np.asarray(
                pc.fill_null(pc.cast(col, pa.int64()), -1).to_numpy(zero_copy_only=False), dtype=np.int64
            )
            out = np.where(exact >= 0, exact, out)
    return out


def _utf8_len_rows(arr) -> np.ndarray:
    arr = arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
    return np.asarray(pc.fill_null(pc.binary_length(arr), 0).to_numpy(zero_copy_only=False), dtype=np.int64)


def _map_bytes(col) -> np.ndarray:
    """Per row: sum over entries of len(key) + len(value) + 4."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    n = len(arr)
    if n == 0:
        return np.zeros(0, np.int64)
    offs = np.asarray(arr.offsets.to_numpy(zero_copy_only=False), dtype=np.int64)
    keys, items = arr.keys, arr.items
    per = _utf8_len_rows(keys) + _utf8_len_rows(items) + 4
    cum = np.concatenate([[0], np.cumsum(per)])
    out = cum[offs[1:]] - cum[offs[:-1]]
    if arr.null_count:
        out[np.asarray(arr.is_null().to_numpy(zero_copy_only=False), dtype=bool)] = 0
    return out


def span_bytes(table: pa.Table) -> np.ndarray:
    """Estimated size of each span (see policies/bytes_limiting.py)."""
    n = table.num_rows
    size = np.full(n, 16 + 8 + 16 + 2, dtype=np.int64)
    if "parent_span_id" in table.column_names:
        size += 8 * np.asarray(
            pc.is_valid(table.column("parent_span_id")).to_numpy(zero_copy_only=False), dtype=np.int64
        )
    for c in ("name", "status_message"):
        if c in table.column_names:
            size += _utf8_len_rows(table.column(c))
    if "attributes" in table.column_names:
        size += _map_bytes(table.column("attributes"))
    return size


class TailSampler:
    """Tail-based trace sampling with the OpenTelemetry Collector's policies (see module doc)."""

    def __init__(self, config: TailSamplingConfig | dict):
        cfg = load_config(config)
        self.config = cfg
        self._wait = cfg.decision_wait_ms
        self._wait_root = cfg.decision_wait_after_root_ms
        pols = [build_policy(p) for p in cfg.policies]
        for q in (q for p in pols for q in p.walk()):
            if hasattr(q, "legacy_invert"):
                q.legacy_invert = cfg.legacy_invert_decisions
        self._policies = [p for p in pols if p.kind == "drop"] + [p for p in pols if p.kind != "drop"]
        self._names = pa.array([p.name for p in self._policies], pa.string())
        self._probs = np.array([p.probability for p in self._policies], dtype=np.float64)
        self._needs_bytes = bool(cfg.maximum_trace_size_bytes) or any(
            q.needs_bytes for p in self._policies for q in p.walk()
        )
        cap = 1024
        if cfg.expected_new_traces_per_sec:
            cap = max(cap, min(cfg.num_traces + 1, cfg.expected_new_traces_per_sec * max(1, self._wait // 1000)))
        self._alloc(cap)
        self._ids: dict[str, int] = {}
        self._slot_tid: list = [None] * cap
        self._free: list[int] = []
        self._hi = 0
        self._seq = 0
        self._n_active = 0
        self._segments: list[_Segment] = []
        self._staging: list[_Segment] = []
        self._sampled_cache: dict[str, tuple[str, float]] = {}
        self._nonsampled_cache: dict[str, str] = {}
        self._schema: pa.Schema | None = None
        self._reset_pending()
        self.spans_in = 0

    # -- slots --------------------------------------------------------------------------------

    def _alloc(self, cap: int) -> None:
        self._cap = cap
        self._first = np.zeros(cap, np.int64)
        self._root = np.full(cap, -1, np.int64)
        self._start = np.full(cap, _I64_MAX, np.int64)
        self._end = np.full(cap, _I64_MIN, np.int64)
        self._count = np.zeros(cap, np.int64)
        self._errors = np.zeros(cap, np.int64)
        self._bytes = np.zeros(cap, np.int64)
        self._seqs = np.zeros(cap, np.int64)
        self._active = np.zeros(cap, bool)

    def _grow(self) -> None:
        old = (
            self._first,
            self._root,
            self._start,
            self._end,
            self._count,
            self._errors,
            self._bytes,
            self._seqs,
            self._active,
        )
        n = self._cap
        self._alloc(n * 2)
        for dst, src in zip(
            (
                self._first,
                self._root,
                self._start,
                self._end,
                self._count,
                self._errors,
                self._bytes,
                self._seqs,
                self._active,
            ),
            old,
        ):
            dst[:n] = src
        self._slot_tid.extend([None] * n)

    def _release(self, slots: np.ndarray) -> None:
        for s in slots.tolist():
            del self._ids[self._slot_tid[s]]
            self._slot_tid[s] = None
        self._active[slots] = False
        self._root[slots] = -1
        self._start[slots] = _I64_MAX
        self._end[slots] = _I64_MIN
        self._count[slots] = 0
        self._errors[slots] = 0
        self._bytes[slots] = 0
        self._free.extend(slots.tolist())
        self._n_active -= len(slots)

    # -- pending output -----------------------------------------------------------------------

    def _reset_pending(self) -> None:
        self._p_spans: list[pa.Table] = []
        self._p_traces: list[pa.Table] = []
        self._p_dropped_spans = dict.fromkeys(REASONS, 0)
        self._p_dropped_traces = dict.fromkeys(REASONS, 0)
        self._p_early = {"num_traces_overflow": 0, "max_trace_size": 0}
        self._p_late_kept = 0
        self._p_sampled = 0
        self._p_not_sampled = 0

    @property
    def buffered_traces(self) -> int:
        return self._n_active

    @property
    def buffered_spans(self) -> int:
        return int(sum(s.n_alive for s in self._segments) + sum(s.n_alive for s in self._staging))

    # -- input --------------------------------------------------------------------------------

    def add(self, batch: pa.Table | pa.RecordBatch, now_ms: int) -> None:
        """Buffer a batch of span rows that arrived at ``now_ms``."""
        if isinstance(batch, pa.RecordBatch):
            batch = pa.Table.from_batches([batch])
        n = batch.num_rows
        if n == 0:
            return
        if self._schema is None:
            self._schema = batch.schema
        self.spans_in += n
        tid = batch.column("trace_id")
        enc = pc.dictionary_encode(tid.combine_chunks() if isinstance(tid, pa.ChunkedArray) else tid)
        if enc.null_count:
            bad = np.asarray(enc.is_null().to_numpy(zero_copy_only=False), dtype=bool)
            self._p_dropped_spans["no_trace_id"] += int(bad.sum())
            batch = batch.filter(pa.array(~bad))
            enc = enc.filter(pa.array(~bad))
            if batch.num_rows == 0:
                return
        codes = enc.indices.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
        uniq = enc.dictionary.to_pylist()
        nu = len(uniq)
        slot_u = np.empty(nu, np.int64)
        ids, sc, nsc = self._ids, self._sampled_cache, self._nonsampled_cache
        cached = False
        seq = self._seq
        for k, t in enumerate(uniq):
            s = ids.get(t)
            if s is None:
                if sc and t in sc:
                    slot_u[k] = -1
                    cached = True
                    continue
                if nsc and t in nsc:
                    slot_u[k] = -2
                    cached = True
                    continue
                if self._free:
                    s = self._free.pop()
                else:
                    if self._hi == self._cap:
                        self._grow()
                    s = self._hi
                    self._hi += 1
                ids[t] = s
                self._slot_tid[s] = t
                self._first[s] = now_ms
                self._seqs[s] = seq
                self._active[s] = True
                seq += 1
                self._n_active += 1
            slot_u[k] = s
        self._seq = seq
        rs = slot_u[codes]
        if cached:
            self._late(batch, rs, uniq, slot_u, codes)
            keep = rs >= 0
            batch = batch.filter(pa.array(keep))
            rs = rs[keep]
            if not len(rs):
                return
        # aggregates
        start = _ts_ns(batch, "start_time", "start_unix_nano")
        end = _ts_ns(batch, "end_time", "end_unix_nano")
        np.minimum.at(self._start, rs, start)
        np.maximum.at(self._end, rs, end)
        np.add.at(self._count, rs, 1)
        if "status_code" in batch.column_names:
            err = np.asarray(
                pc.fill_null(pc.equal(batch.column("status_code").cast(pa.string()), "ERROR"), False).to_numpy(
                    zero_copy_only=False
                ),
                dtype=bool,
            )
            if err.any():
                np.add.at(self._errors, rs[err], 1)
        if "parent_span_id" in batch.column_names:
            col = batch.column("parent_span_id")
            if col.null_count:
                root = np.asarray(col.is_null().to_numpy(zero_copy_only=False), dtype=bool)
                rslots = rs[root]
                self._root[rslots] = np.where(self._root[rslots] < 0, now_ms, self._root[rslots])
        if self._needs_bytes:
            np.add.at(self._bytes, rs, span_bytes(batch))
        us = slot_u[slot_u >= 0]
        self._append(_Segment(batch, rs.astype(np.int32), us))
        # early decisions
        limit = self.config.maximum_trace_size_bytes
        if limit:
            big = us[self._bytes[us] > limit]
            if len(big):
                self._not_sampled_at_once(big[np.argsort(self._seqs[big], kind="stable")], "maximum_trace_size_bytes")
                us = us[self._active[us]]
        if self.config.max_trace_size:
            over = us[self._count[us] >= self.config.max_trace_size]
            if len(over):
                over = over[np.argsort(self._seqs[over], kind="stable")]
                self._p_early["max_trace_size"] += len(over)
                self._decide(over, now_ms, "max_trace_size")
        excess = self._n_active - self.config.num_traces
        if excess > 0 and not self.config.block_on_overflow:
            act = np.flatnonzero(self._active[: self._hi])
            oldest = act[np.argsort(self._seqs[act], kind="stable")[:excess]]
            self._p_early["num_traces_overflow"] += len(oldest)
            if self.config.num_traces_overflow == "drop_oldest":
                self._drop_undecided(oldest, "num_traces_overflow")
            else:
                self._decide(oldest, now_ms, "num_traces_overflow")

    def _late(self, batch, rs, uniq, slot_u, codes) -> None:
        """Rows of traces already decided (in a decision cache)."""
        kept_rows = np.flatnonzero(rs == -1)
        if len(kept_rows):
            ucodes = codes[kept_rows]
            names, adj = [], []
            cache = self._sampled_cache
            per_u: dict[int, tuple[str, float]] = {}
            for k in np.unique(ucodes).tolist():
                t = uniq[k]
                v = cache.pop(t)
                cache[t] = v  # LRU: refresh
                per_u[k] = v
            for k in ucodes.tolist():
                v = per_u[k]
                names.append(v[0])
                adj.append(v[1])
            t = batch.take(pa.array(kept_rows))
            t = t.append_column("sampling_policy", pa.array(names, pa.string())).append_column(
                "adjusted_count", pa.array(adj, pa.float64())
            )
            self._p_spans.append(t)
            self._p_late_kept += len(kept_rows)
        dropped = int((rs == -2).sum())
        if dropped:
            self._p_dropped_spans["late_after_drop"] += dropped
            for k in np.unique(codes[rs == -2]).tolist():
                t = uniq[k]
                why = self._nonsampled_cache.pop(t)
                self._nonsampled_cache[t] = why

    def _append(self, seg: _Segment) -> None:
        if seg.n_alive >= _MERGE_ROWS:
            self._segments.append(seg)
            return
        self._staging.append(seg)
        rows = sum(s.n_alive for s in self._staging)
        if rows >= _MERGE_ROWS or len(self._staging) >= _MERGE_SEGMENTS:
            self._segments.append(self._merge(self._staging))
            self._staging = []

    @staticmethod
    def _merge(segs: list[_Segment]) -> _Segment:
        tables, slots = [], []
        for s in segs:
            if s.n_alive == len(s.slots):
                tables.append(s.table)
                slots.append(s.slots)
            elif s.n_alive:
                tables.append(s.table.filter(pa.array(s.alive)))
                slots.append(s.slots[s.alive])
        if not tables:
            return _Segment(segs[0].table.slice(0, 0), np.zeros(0, np.int32), np.zeros(0, np.int64))
        table = pa.concat_tables(tables, promote_options="default").combine_chunks()
        sl = np.concatenate(slots)
        return _Segment(table, sl, np.unique(sl).astype(np.int64))

    # -- deciding -----------------------------------------------------------------------------

    def advance(self, now_ms: int) -> Decisions:
        """Decide every trace whose wait has elapsed at ``now_ms``; return all released output."""
        hi = self._hi
        act = np.flatnonzero(self._active[:hi])
        if len(act):
            due = self._first[act] + self._wait
            if self._wait_root:
                r = self._root[act]
                due = np.where(r >= 0, np.minimum(due, r + self._wait_root), due)
            sel = due <= now_ms
            if sel.any():
                slots, d = act[sel], due[sel]
                order = np.lexsort((self._seqs[slots], d))
                self._decide(slots[order], now_ms, None)
        return self._flush()

    def flush_all(self, now_ms: int) -> Decisions:
        """Decide every buffered trace now (end of input); with
        ``drop_pending_traces_on_shutdown`` drop them undecided instead (reason ``shutdown``)."""
        act = np.flatnonzero(self._active[: self._hi])
        if len(act):
            order = act[np.argsort(self._seqs[act], kind="stable")]
            if self.config.drop_pending_traces_on_shutdown:
                self._drop_undecided(order, "shutdown")
            else:
                self._decide(order, now_ms, None)
        return self._flush()

    def _not_sampled_at_once(self, slots: np.ndarray, reason: str) -> None:
        """Not sampled without evaluating the policies (the Collector's
        ``maximum_trace_size_bytes``): spans counted under ``reason``, the id goes into the
        non-sampled cache, so later spans are dropped too."""
        tids = [self._slot_tid[s] for s in slots.tolist()]
        self._drop_undecided(slots, reason)
        self._p_not_sampled += len(slots)
        if self.config.decision_cache.non_sampled_cache_size:
            for t in tids:
                self._nonsampled_cache[t] = reason
            _trim(self._nonsampled_cache, self.config.decision_cache.non_sampled_cache_size)

    def _take_rows(self, slots: np.ndarray) -> tuple[list[pa.Table], list[np.ndarray]]:
        pos = np.full(self._cap, -1, np.int64)
        pos[slots] = np.arange(len(slots))
        parts, groups = [], []
        for lst in (self._segments, self._staging):
            for seg in lst:
                if not seg.n_alive or not (pos[seg.uslots] >= 0).any():
                    continue
                p = pos[seg.slots]
                m = (p >= 0) & seg.alive
                idx = np.flatnonzero(m)
                if not len(idx):
                    continue
                parts.append(seg.table.take(pa.array(idx)))
                groups.append(p[idx])
                seg.alive[idx] = False
                seg.n_alive -= len(idx)
        self._gc()
        return parts, groups

    def _gc(self) -> None:
        segs = []
        for seg in self._segments:
            if seg.n_alive == 0:
                continue
            if seg.n_alive * 2 < len(seg.slots):
                seg = self._merge([seg])
            segs.append(seg)
        self._segments = segs
        self._staging = [s for s in self._staging if s.n_alive]

    def _drop_undecided(self, slots: np.ndarray, reason: str) -> None:
        self._take_rows(slots)
        self._p_dropped_spans[reason] += int(self._count[slots].sum())
        self._p_dropped_traces[reason] += len(slots)
        self._release(slots)

    def _decide(self, slots: np.ndarray, now_ms: int, reason: str | None) -> None:
        n = len(slots)
        if n == 0:
            return
        parts, groups = self._take_rows(slots)
        table = pa.concat_tables(parts, promote_options="default") if len(parts) > 1 else parts[0]
        group = np.concatenate(groups) if len(groups) > 1 else groups[0]
        tids = [self._slot_tid[s] for s in slots.tolist()]
        counts = self._count[slots]
        view = TraceView(
            table,
            group,
            tids,
            self._start[slots],
            self._end[slots],
            counts,
            self._errors[slots],
            self._bytes[slots],
            now_ms,
        )
        dec = np.zeros((len(self._policies), n), np.int8)
        live = np.arange(n)
        first_match = self.config.sample_on_first_match
        for j, pol in enumerate(self._policies):
            if not len(live):
                break
            d = pol.evaluate(view, live)
            dec[j, live] = d
            stop = d == DROP
            if first_match:
                stop |= d == S
            if stop.any():
                live = live[~stop]
        sampled, dropped, pidx = final(dec)
        self._emit(view, slots, sampled, pidx, now_ms)
        ns = ~sampled
        if ns.any():
            if reason is not None:
                self._p_dropped_spans[reason] += int(counts[ns].sum())
                self._p_dropped_traces[reason] += int(ns.sum())
            else:
                pd = ns & dropped
                nd = ns & ~dropped
                self._p_dropped_spans["policy_drop"] += int(counts[pd].sum())
                self._p_dropped_traces["policy_drop"] += int(pd.sum())
                self._p_dropped_spans["not_sampled"] += int(counts[nd].sum())
                self._p_dropped_traces["not_sampled"] += int(nd.sum())
        self._p_sampled += int(sampled.sum())
        self._p_not_sampled += int(ns.sum())
        # decision caches
        names = self._names.to_pylist()
        if self.config.decision_cache.sampled_cache_size:
            cache, size = self._sampled_cache, self.config.decision_cache.sampled_cache_size
            for k in np.flatnonzero(sampled).tolist():
                p = int(pidx[k])
                cache[tids[k]] = (names[p], 1.0 / self._probs[p])
            _trim(cache, size)
        if self.config.decision_cache.non_sampled_cache_size and ns.any():
            ns_cache, size = self._nonsampled_cache, self.config.decision_cache.non_sampled_cache_size
            why = reason or "not_sampled"
            for k in np.flatnonzero(ns).tolist():
                ns_cache[tids[k]] = "policy_drop" if dropped[k] and reason is None else why
            _trim(ns_cache, size)
        self._release(slots)

    def _emit(self, view: TraceView, slots, sampled, pidx, now_ms) -> None:
        k = np.flatnonzero(sampled)
        if not len(k):
            return
        table, group = view.table, view.group
        rows = sampled[group]
        kept = table.filter(pa.array(rows))
        g = group[rows]
        row_pol = pidx[g]
        adj = 1.0 / self._probs
        pol_col = pa.DictionaryArray.from_arrays(pa.array(row_pol, pa.int32()), self._names).cast(pa.string())
        kept = kept.append_column("sampling_policy", pol_col).append_column(
            "adjusted_count", pa.array(adj[row_pol], pa.float64())
        )
        self._p_spans.append(kept)
        # trace rows
        n = view.n
        root_service = [None] * n
        root_name = [None] * n
        if "parent_span_id" in table.column_names:
            root_rows = np.flatnonzero(
                np.asarray(table.column("parent_span_id").is_null().to_numpy(zero_copy_only=False), dtype=bool) & rows
            )
            if len(root_rows):
                rg, first = np.unique(group[root_rows], return_index=True)
                rr = pa.array(root_rows[first])
                svc = (
                    table.column("service").take(rr).to_pylist()
                    if "service" in table.column_names
                    else [None] * len(rr)
                )
                nm = table.column("name").take(rr).to_pylist() if "name" in table.column_names else [None] * len(rr)
                for j, gi in enumerate(rg.tolist()):
                    root_service[gi], root_name[gi] = svc[j], nm[j]
        services: list = [[] for _ in range(n)]
        if "service" in kept.column_names:
            gt = (
                pa.table({"g": pa.array(g, pa.int64()), "s": kept.column("service")})
                .group_by("g")
                .aggregate([("s", "distinct")])
            )
            for gi, ss in zip(gt.column("g").to_pylist(), gt.column("s_distinct").to_pylist()):
                services[gi] = sorted(x for x in ss if x is not None)
        start_ns, end_ns = view.start_ns[k], view.end_ns[k]
        start, end = start_ns // 1000, end_ns // 1000
        traces = pa.table(
            [
                pa.array([view.trace_ids[i] for i in k.tolist()], pa.string()),
                pa.array([root_service[i] for i in k.tolist()], pa.string()),
                pa.array([root_name[i] for i in k.tolist()], pa.string()),
                pa.array(start, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
                pa.array(end, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
                pa.array((end_ns - start_ns) / 1e6, pa.float64()),
                pa.array(view.span_count[k], pa.int32()),
                pa.array(view.error_count[k], pa.int32()),
                pa.array([services[i] for i in k.tolist()], pa.list_(pa.string())),
                pa.DictionaryArray.from_arrays(pa.array(pidx[k], pa.int32()), self._names).cast(pa.string()),
                pa.array(adj[pidx[k]], pa.float64()),
                pa.array(np.full(len(k), now_ms, np.int64), pa.int64()).cast(pa.timestamp("ms", tz="UTC")),
            ],
            schema=TRACE_SCHEMA,
        )
        self._p_traces.append(traces)

    def _flush(self) -> Decisions:
        spans = self._p_spans
        if spans:
            out_spans = pa.concat_tables(spans, promote_options="default") if len(spans) > 1 else spans[0]
        else:
            base = self._schema or pa.schema([])
            out_spans = (
                base.empty_table()
                .append_column("sampling_policy", pa.array([], pa.string()))
                .append_column("adjusted_count", pa.array([], pa.float64()))
            )
        traces = pa.concat_tables(self._p_traces) if self._p_traces else TRACE_SCHEMA.empty_table()
        d = Decisions(
            out_spans,
            traces,
            {k: v for k, v in self._p_dropped_spans.items() if v},
            {k: v for k, v in self._p_dropped_traces.items() if v},
            {k: v for k, v in self._p_early.items() if v},
            self._p_late_kept,
            self._p_sampled,
            self._p_not_sampled,
        )
        self._reset_pending()
        return d

    # -- state --------------------------------------------------------------------------------

    def snapshot(self) -> bytes:
        """The full state (buffers, caches, limiter state, undelivered output) as bytes."""
        segs = [s for s in self._segments + self._staging if s.n_alive]
        tables, slots = [], []
        for s in segs:
            tables.append(s.table.filter(pa.array(s.alive)) if s.n_alive != len(s.slots) else s.table)
            slots.append(s.slots[s.alive])
        state = {
            "version": 2,
            "policies": [p.name for p in self._policies],
            "hi": self._hi,
            "seq": self._seq,
            "n_active": self._n_active,
            "spans_in": self.spans_in,
            "arrays": {k: getattr(self, k)[: self._hi].copy() for k in _ARRAYS},
            "slot_tid": self._slot_tid[: self._hi],
            "free": list(self._free),
            "buffer": _ipc(pa.concat_tables(tables, promote_options="default")) if tables else None,
            "buffer_slots": np.concatenate(slots) if slots else np.zeros(0, np.int32),
            "sampled_cache": list(self._sampled_cache.items()),
            "nonsampled_cache": list(self._nonsampled_cache.items()),
            "policy_state": [q.get_state() for p in self._policies for q in p.walk()],
            "schema": self._schema.serialize().to_pybytes() if self._schema is not None else None,
            "pending": {
                "spans": [_ipc(t) for t in self._p_spans],
                "traces": [_ipc(t) for t in self._p_traces],
                "dropped_spans": self._p_dropped_spans,
                "dropped_traces": self._p_dropped_traces,
                "early": self._p_early,
                "late_kept": self._p_late_kept,
                "sampled": self._p_sampled,
                "not_sampled": self._p_not_sampled,
            },
        }
        return pickle.dumps(state, protocol=5)

    @classmethod
    def restore(cls, config: TailSamplingConfig | dict, data: bytes) -> TailSampler:
        """A sampler in the state :meth:`snapshot` captured (with the same policies)."""
        st = pickle.loads(data)
        if st.get("version") not in (1, 2):
            raise ValueError(f"unknown tail sampler snapshot version {st.get('version')!r}")
        if st["version"] == 1:  # span start / end were kept in microseconds
            for k, sentinel in (("_start", _I64_MAX), ("_end", _I64_MIN)):
                a = st["arrays"][k]
                st["arrays"][k] = np.where(a == sentinel, a, a * 1000)
        self = cls(config)
        if [p.name for p in self._policies] != st["policies"]:
            raise ValueError(
                f"snapshot was taken with policies {st['policies']}, config has {[p.name for p in self._policies]}"
            )
        hi = st["hi"]
        while self._cap < hi:
            self._grow()
        for k in _ARRAYS:
            getattr(self, k)[:hi] = st["arrays"][k]
        self._hi, self._seq, self._n_active, self.spans_in = hi, st["seq"], st["n_active"], st["spans_in"]
        self._slot_tid[:hi] = st["slot_tid"]
        self._ids = {t: s for s, t in enumerate(st["slot_tid"]) if t is not None}
        self._free = list(st["free"])
        if st["buffer"] is not None:
            table = _from_ipc(st["buffer"])
            sl = st["buffer_slots"]
            self._segments = [_Segment(table, sl, np.unique(sl).astype(np.int64))]
        self._sampled_cache = dict(st["sampled_cache"])
        self._nonsampled_cache = dict(st["nonsampled_cache"])
        for q, s in zip([q for p in self._policies for q in p.walk()], st["policy_state"]):
            if s is not None:
                q.set_state(s)
        if st["schema"] is not None:
            self._schema = pa.ipc.read_schema(pa.py_buffer(st["schema"]))
        p = st["pending"]
        self._p_spans = [_from_ipc(b) for b in p["spans"]]
        self._p_traces = [_from_ipc(b) for b in p["traces"]]
        self._p_dropped_spans, self._p_dropped_traces, self._p_early = (
            p["dropped_spans"],
            p["dropped_traces"],
            p["early"],
        )
        self._p_late_kept, self._p_sampled, self._p_not_sampled = p["late_kept"], p["sampled"], p["not_sampled"]
        return self


_ARRAYS = ("_first", "_root", "_start", "_end", "_count", "_errors", "_bytes", "_seqs", "_active")


def _trim(cache: dict, size: int) -> None:
    extra = len(cache) - size
    if extra > 0:
        it = iter(cache)
        for k in [next(it) for _ in range(extra)]:
            del cache[k]


def _ipc(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return sink.getvalue()


def _from_ipc(data: bytes) -> pa.Table:
    return pa.ipc.open_stream(pa.py_buffer(data)).read_all()
