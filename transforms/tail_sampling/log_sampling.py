"""Log sampling that follows the trace decision.

``sample_rate`` on a kept row is **the fraction of such lines kept** (in (0, 1]), as the
obs.logs table contract says: ``1 / sample_rate`` is how many lines the row stands for, so
``sum(1 / sample_rate)`` extrapolates counts (``queries/error_rate_by_service.sql``).

Rules, per log line (``level`` upper-case as the validator normalizes it):

1. ``always_keep_levels`` (default WARN, ERROR, FATAL) are always kept, ``sample_rate`` 1.
2. Other levels (INFO, DEBUG, TRACE, ...) with a ``trace_id`` follow their trace:

   - **tail mode** — ``decide_logs(batch, kept_trace_ids=...)``: the line is kept exactly
     when its trace was kept by the tail sampler, so a kept trace keeps all its logs and a
     dropped trace keeps only its warnings and errors. ``kept_trace_ids`` is a mapping
     ``trace_id -> adjusted_count`` (the line's ``sample_rate`` is ``1 / adjusted_count``,
     the probability its trace was kept; an adjusted count of 0 or less reads as 1) or any
     collection of ids (``sample_rate`` 1). Logs arrive before their trace is decided, so
     the caller holds them until the trace's decision (``decision_wait``) or uses head mode;
   - **head mode** — no ``kept_trace_ids``: kept when the trace id's sampling hash (the
     same FNV-1a 64 with ``hash_salt`` as the tail sampler's ``probabilistic`` policy and
     the head sampler) is within the level's percentage, so at the same percentage and
     salt a line is kept exactly when its trace is kept by head sampling / the
     probabilistic policy. ``sample_rate`` = percentage / 100.
3. Other levels without a trace id are kept when the FNV-1a 64 hash (same salt) of a
   stable key is within the level's percentage: the first present of ``key_columns``
   (default ``request_id``), else the line's own key (:func:`line_keys`: time, source
   record, service, message; first 256 bytes), so every line has its own fate and
   identical lines (a heartbeat) are kept at the level's rate. ``sample_rate`` =
   percentage / 100.

Percentages: ``level_percentages[level]`` when given, else ``sampling_percentage``. Lower
percentages keep subsets of higher ones (same hash), so DEBUG at 1% and INFO at 10% keep
the DEBUG lines of a subset of the traces whose INFO lines are kept."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field

from .hashing import hash_strings, hash_trace_ids, threshold


class LogSamplingConfig(BaseModel):
    """The ``log_sample`` step's config (see the module doc for the rules)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    sampling_percentage: float = Field(
        10.0,
        ge=0,
        le=100,
        description="percent of lines of the other levels kept (when not following a trace decision)",
    )
    level_percentages: dict[str, Annotated[float, Field(ge=0, le=100)]] = Field(
        default_factory=dict, description="per-level override, e.g. `{DEBUG: 1}`"
    )
    always_keep_levels: list[str] = Field(
        default_factory=lambda: ["WARN", "ERROR", "FATAL"], description="always kept, `sample_rate` 1"
    )
    hash_salt: str = Field("", description='salt of the line / trace-id hash ("": default-hash-seed)')
    key_columns: list[str] = Field(
        default_factory=lambda: ["request_id"],
        description="hash key of lines without a trace id (else the line's own key "
        "`ts|topic:partition:offset|rank|service|message`, so each line has its own fate)",
    )


class LogSampler:
    """Decides which log lines are kept and writes their ``sample_rate`` (fraction kept)."""

    def __init__(self, config: LogSamplingConfig | dict | None = None):
        self.config = (
            config if isinstance(config, LogSamplingConfig) else LogSamplingConfig.model_validate(config or {})
        )
        self.kept_lines = 0
        self.dropped_lines = 0

    def _pct(self, levels: np.ndarray) -> np.ndarray:
        pct = np.full(len(levels), self.config.sampling_percentage, dtype=np.float64)
        for lvl, p in self.config.level_percentages.items():
            pct[levels == lvl.upper()] = p
        return pct

    def decide_logs(self, batch: pa.Table, kept_trace_ids=None) -> pa.Table:
        """The kept rows of ``batch`` with a ``sample_rate`` column (see the module doc)."""
        n = batch.num_rows
        if n == 0:
            return batch.append_column("sample_rate", pa.array([], pa.float64()))
        levels = np.asarray(
            pc.fill_null(pc.utf8_upper(batch.column("level").cast(pa.string())), "").to_numpy(zero_copy_only=False),
            dtype=object,
        )
        always = np.isin(levels, [lv.upper() for lv in self.config.always_keep_levels])
        pct = self._pct(levels)
        thr = np.array([threshold(p) for p in pct.tolist()], dtype=np.uint64) if n < 64 else _thresholds(pct)
        keep = always.copy()
        rate = np.ones(n, dtype=np.float64)
        tid = batch.column("trace_id") if "trace_id" in batch.column_names else pa.nulls(n, pa.string())
        tid = tid.combine_chunks() if isinstance(tid, pa.ChunkedArray) else tid
        has_tid = np.asarray(
            pc.fill_null(pc.not_equal(tid.cast(pa.string()), ""), False).to_numpy(zero_copy_only=False), dtype=bool
        )
        traced = ~always & has_tid
        untraced = ~always & ~has_tid
        frac = pct / 100.0  # fraction kept (a row kept at 0% cannot exist)
        if traced.any():
            rows = np.flatnonzero(traced)
            ids = tid.take(pa.array(rows))
            if kept_trace_ids is not None:
                id_list = ids.to_pylist()
                if isinstance(kept_trace_ids, Mapping):
                    got = [kept_trace_ids.get(t) for t in id_list]
                    keep[rows] = [g is not None for g in got]
                    rate[rows] = [kept_fraction(g) if g is not None else 1.0 for g in got]
                else:
                    s = kept_trace_ids if isinstance(kept_trace_ids, (set, frozenset)) else set(kept_trace_ids)
                    keep[rows] = [t in s for t in id_list]
            else:
                keep[rows] = hash_trace_ids(ids, self.config.hash_salt) <= thr[rows]
                rate[rows] = frac[rows]
        if untraced.any():
            rows = np.flatnonzero(untraced)
            sub = batch.take(pa.array(rows))
            key = None
            for c in self.config.key_columns:
                if c in sub.column_names:
                    col = sub.column(c).cast(pa.string())
                    key = col if key is None else pc.coalesce(key, col)
            fallback = line_keys(sub)
            key = fallback if key is None else pc.coalesce(pc.if_else(pc.equal(key, ""), None, key), fallback)
            keep[rows] = hash_strings(key, self.config.hash_salt) <= thr[rows]
            rate[rows] = frac[rows]
        out = batch.filter(pa.array(keep)).append_column("sample_rate", pa.array(rate[keep], pa.float64()))
        self.kept_lines += out.num_rows
        self.dropped_lines += n - out.num_rows
        return out


def line_keys(rows: pa.Table) -> pa.Array:
    """A key per line that differs between lines: ``ts|topic:partition:offset|k|service|message``
    (``ts`` in epoch microseconds, or ``timestamp`` on wire-shaped rows; the source
    coordinates when the rows carry them; ``k`` the line's rank among the lines of the
    same record in ``rows``, for a record holding several lines). Deterministic for a
    record, whatever batch it is in. The parts that differ between lines come first: an
    FNV-1a difference spreads into the high bits (which the threshold compares) only
    through the bytes that follow it."""
    n = rows.num_rows
    names = rows.column_names

    def text(c: str) -> pa.Array:
        col = rows.column(c)
        col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
        if pa.types.is_timestamp(col.type):
            col = pc.cast(col.cast(pa.timestamp("us", tz="UTC")), pa.int64())
        return pc.fill_null(col.cast(pa.string()), "")

    empty = pa.array([""] * n, pa.string())
    time_col = "ts" if "ts" in names else "timestamp" if "timestamp" in names else None
    parts = [text(time_col) if time_col else empty]
    if "source_offset" in names:
        pos = pc.binary_join_element_wise(
            *(text(c) if c in names else empty for c in ("source_topic", "source_partition", "source_offset")), ":"
        )
        rank: dict[str, int] = {}
        ranks = []
        for p in pos.to_pylist():
            ranks.append(rank.get(p, 0))
            rank[p] = ranks[-1] + 1
        parts += [pos, pa.array([str(r) for r in ranks], pa.string())]
    parts += [text(c) if c in names else empty for c in ("service", "message")]
    return pc.binary_join_element_wise(*parts, "|")


def kept_fraction(adjusted_count) -> float:
    """The ``sample_rate`` of a line that follows a kept trace: ``1 / adjusted_count`` (the
    probability the trace was kept); 1 when the count is missing, 0 or negative."""
    if adjusted_count is None or not adjusted_count > 0:
        return 1.0
    return 1.0 / float(adjusted_count)


def _thresholds(pct: np.ndarray) -> np.ndarray:
    u, inv = np.unique(pct, return_inverse=True)
    return np.array([threshold(p) for p in u.tolist()], dtype=np.uint64)[inv]
