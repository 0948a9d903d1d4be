"""The ``trace`` stage: tail sampling, RED metrics and trace-consistent log sampling for
one shard (shard = hash of the trace id).

Guarantees: every span is counted in RED or, when its window had closed, is a
``late_data`` dead letter; the kept traces' spans and their logs leave together; a bounded
run decides everything on :meth:`TraceStage.flush`; the positions it reports never pass a
batch it may still hold rows of."""

from __future__ import annotations

import pickle
import zlib
from collections import deque
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.stages.clock import PartitionClock, _behind, _idle_elapsed, _input_wall, _note_lag
from pipelines.stages.contract import _MAX, TRACE, Stage, StageDef, StageInput, StageOutput, StageTick, TraceConfig
from pipelines.stages.positions import held_positions, hold_batch
from schemas.tables import table_def
from transforms.shape import conform
from transforms.tail_sampling import HeadSampler, LogSampler, RedMetrics, TailSampler


def _new_counts() -> dict[str, Any]:
    """Zeroed trace-stage counters (the layout of ``StageOutput.counters`` for ``trace``):
    ``dropped_spans`` / ``dropped_traces`` / ``early_decisions``: reason -> count, as the
    tail sampler's :class:`~transforms.tail_sampling.sampler.Decisions` (reasons in
    ``sampler.REASONS``; ``num_traces_overflow`` is the num_traces bound's cost);
    ``sampled_traces`` / ``not_sampled_traces`` / ``late_spans_kept``: counts."""
    return {
        "dropped_spans": {},
        "dropped_traces": {},
        "early_decisions": {},
        "sampled_traces": 0,
        "not_sampled_traces": 0,
        "late_spans_kept": 0,
    }


def _bound(ids: dict, limit: int = 200_000) -> None:
    """Keep a decided-trace-id dict bounded: past ``limit`` entries, drop the oldest half."""
    if len(ids) > limit:
        for t in list(ids)[: len(ids) // 2]:
            del ids[t]


class TraceStage(Stage):
    """Tail sampling, RED metrics and trace-consistent log sampling for one shard.

    Each output's ``counters`` carry what the tail sampler counted since the previous
    output (:func:`_new_counts`), which the runners add to the run stats."""

    kind = TRACE

    @classmethod
    def create(cls, defn: StageDef[TraceConfig], shard: int, blob: bytes | None = None) -> TraceStage:
        """Shard ``shard`` of the trace stage ``defn`` describes (``defn.options["head"]``:
        head sampling settings), restored from ``blob`` when given."""
        cfg = TraceConfig(*defn.config)
        head = defn.options.get("head")
        args = (defn.expected, getattr(defn, "red_topics", None), getattr(defn, "dead_letters", "dead_letters"))
        if blob:
            return cls.restore(cfg.step, cfg.logs, shard, blob, head, *args)
        return cls(cfg.step, cfg.logs, shard, head, *args)

    def __init__(
        self,
        step,
        log_config=None,
        shard: int = 0,
        head: tuple | None = None,
        expected=(),
        red_topics=None,
        dead_letters: str = "dead_letters",
    ):
        self.step = step
        self.shard = shard
        self.dead_table = dead_letters
        # head sampling (``head_spans`` inputs): (percentage, salt, policy name) — see pipelines.spec.HeadSamplingSpec
        self.head = HeadSampler(head[0], head[1], head[2]) if head is not None else None
        self._head_dropped: dict[str, None] = {}  # trace ids head sampling did not keep (bounded, as _kept)
        self.sampler = TailSampler(step.sampler)
        red = step.red
        self.red = (
            RedMetrics(
                window_ms=int(red.window.total_seconds() * 1000),
                relative_accuracy=red.relative_accuracy,
                allowed_lateness_ms=int(red.allowed_lateness.total_seconds() * 1000),
                max_exemplars=red.max_exemplars,
            )
            if red
            else None
        )
        self.logs = LogSampler(log_config) if log_config is not None else None
        self.log_wait_ms = int(step.log_wait.total_seconds() * 1000)
        self.hold_ms = int(step.sampler.decision_wait_ms) + self.log_wait_ms
        self.now = 0
        self._clock = PartitionClock(expected=expected)
        # RED windows close on the spans' event time (start_time), over the span partitions only
        span_parts = [k for k in expected if red_topics is None or k.rsplit(":", 1)[0] in red_topics]
        self._red_clock = PartitionClock(expected=span_parts)
        self._red_now = 0  # the RED watermark (event time of the span partitions)
        self._red_idle_from = 0  # where an idle advance of the RED watermark starts
        self._red_through: int | None = None  # the RED windows closed through (extra["red_through"]), last reported
        self._red_parts: dict = {}  # closed RED windows' aggregates not yet handed on (extra["red"])
        self._red_late = 0  # spans not counted in RED (window closed) since the last output
        self._pending_logs: list[tuple[int, pa.Table]] = []  # (arrival now, rows waiting for their trace)
        self._kept: dict[str, float] = {}  # decided and kept trace id -> adjusted count (bounded)
        self._batches: dict[str, deque] = {}  # tp -> (first_offset, next_offset, arrival now)
        self._latest: dict[str, int] = {}
        self._counts = _new_counts()  # since the last output (StageOutput.counters)
        self._idle_wall: int | None = None  # wall time of the last input (idle advance)
        self._idle_from = 0  # the clock an idle advance starts from
        self._reported: dict | None = None  # positions of the last output
        self._lags: dict[str, int] = {}  # partition -> records left behind its latest input (clock._behind)

    # -- processing -----------------------------------------------------------------

    def process(self, item: StageInput | StageTick) -> StageOutput | None:
        if isinstance(item, StageTick):
            return self.tick(item)
        tp = f"{item.topic}:{item.partition}"
        self.now = max(
            self.now, self._clock.observe(item.topic, item.partition, item.now_ms, item.topic_partitions, item.lag)
        )
        if item.kind in ("spans", "head_spans"):
            red_wm = self._red_clock.observe(item.topic, item.partition, item.event_ms, item.topic_partitions, item.lag)
            self._red_now = max(self._red_now, red_wm)
            self._red_idle_from = max(self._red_now, self._red_clock.idle_base())
        self._idle_wall = _input_wall(item)
        self._idle_from = max(self.now, self._clock.idle_base())
        _note_lag(self, item)
        # held until its rows can no longer be waiting: spans wait from their batch's ingest time (below)
        hold_batch(self._batches, self._latest, tp, item.first_offset, item.next_offset, max(self.now, item.now_ms))
        rows: dict[str, list[pa.Table]] = {"spans": [], "traces": [], "metrics": [], "logs": []}
        if item.table is not None and item.table.num_rows:
            if item.kind == "spans":
                self._red_add(item, rows)
                # a trace's wait starts at its batch's own ingest time: while an unread partition holds the
                # clock, spans must not count as arrived at the held time (all decided at once when it moves)
                self.sampler.add(item.table, max(self.now, item.now_ms))
            elif item.kind == "head_spans":
                self._red_add(item, rows)
                self._head_sample(item.table, rows)
            elif item.kind == "logs":
                self._add_logs(item.table, rows, item.now_ms)
        self._decide(self.sampler.advance(self.now), rows, final=False)
        return self._output(rows, final=False)

    def restart_idle_clock(self, wall_ms: int) -> None:
        """After a process restart (a stage restored from a recovery snapshot), idle time
        counts from the restart: the downtime is not idle time of the stream (a backlog
        may be waiting), so it must not move the clock."""
        if self._idle_wall is not None:
            self._idle_wall = wall_ms

    def tick(self, tick: StageTick) -> StageOutput | None:
        """Idle advance (:class:`StageTick`): after ``tick.idle_ms`` without input, the clock
        is the one at the last input plus the wall time elapsed since (never backwards);
        then traces are decided, RED windows closed and logs resolved as on any advance.
        None when the tick brought nothing new (no rows, counts or positions)."""
        elapsed = _idle_elapsed(self._idle_wall, tick, _behind(self))
        if elapsed is None or self._idle_from + elapsed <= self.now:
            return None
        self.now = self._idle_from + elapsed
        self._red_now = max(self._red_now, getattr(self, "_red_idle_from", 0) + elapsed)
        rows: dict[str, list[pa.Table]] = {"spans": [], "traces": [], "metrics": [], "logs": []}
        self._decide(self.sampler.advance(self.now), rows, final=False)
        before = self._reported
        out = self._output(rows, final=False)
        return (
            out if out.rows or out.counters or out.extra or out.positions != before else None
        )  # nothing new: no output

    def flush(self) -> StageOutput:
        """End of input: decide everything still held."""
        rows: dict[str, list[pa.Table]] = {"spans": [], "traces": [], "metrics": [], "logs": []}
        self._decide(self.sampler.flush_all(self.now), rows, final=True)
        return self._output(rows, final=True)

    def _red_add(self, item: StageInput, rows) -> None:
        """Count the input's spans in RED; a span whose window was already closed (later
        than ``allowed_lateness`` behind the span partitions' event time) is not counted:
        it becomes a ``late_data`` dead letter (the span itself goes on to sampling)."""
        if self.red is None or item.table is None:
            return
        late = self.red.add(item.table)
        if late.any():
            rows.setdefault("dead_letters", []).append(
                _late_span_dead_letters(
                    item.table.filter(pa.array(late)),
                    item.source or item.topic,
                    int(self.step.red.allowed_lateness.total_seconds() * 1000),
                )
            )
            self._red_late += int(late.sum())

    def _add_logs(self, table: pa.Table, rows, ingest_ms: int) -> None:
        if self.logs is None:
            rows["logs"].append(table.append_column("sample_rate", pa.array(np.ones(table.num_rows), pa.float64())))
            return
        tid = table.column("trace_id")
        has = pc.fill_null(pc.is_valid(tid), False)
        untraced = table.filter(pc.invert(has))
        if untraced.num_rows:
            rows["logs"].append(self.logs.decide_logs(untraced))
        traced = table.filter(has)
        if traced.num_rows:
            self._pending_logs.append((ingest_ms, traced))  # waits log_wait of watermark time past its ingest

    def _head_sample(self, table: pa.Table, rows) -> None:
        """Spans of a ``head_sampling`` source: RED from all of them, the kept ones out at once
        (``sampling_policy`` / ``adjusted_count`` from the head sampler), the decision
        remembered per trace id so that the trace's log lines follow it."""
        if self.head is None:
            raise ValueError("head_spans input but the trace stage has no head sampling settings")
        tid = table.column("trace_id")
        if tid.null_count:  # as the tail sampler: spans without a trace id are counted, not kept
            valid = pc.is_valid(tid)
            c = self._counts["dropped_spans"]
            c["no_trace_id"] = c.get("no_trace_id", 0) + tid.null_count
            table = table.filter(valid)
        keep = self.head.keep_mask(table.column("trace_id"))
        kept = self.head.sample(table)
        if kept.num_rows:
            rows["spans"].append(kept)
            if self.red is not None:
                self.red.add_exemplars(kept)
            adj = 100.0 / self.head.percentage if self.head.percentage else 0.0
            for t in set(kept.column("trace_id").to_pylist()):
                self._kept[t] = adj
            _bound(self._kept)
        dropped = table.filter(pa.array(~keep))
        if dropped.num_rows:
            for t in set(dropped.column("trace_id").to_pylist()):
                self._head_dropped[t] = None
            _bound(self._head_dropped)
            c = self._counts["dropped_spans"]
            c["head_not_sampled"] = c.get("head_not_sampled", 0) + dropped.num_rows

    def _count(self, d) -> None:
        """Add what a :class:`~transforms.tail_sampling.sampler.Decisions` counted to the
        counts of the next output (dropped spans / traces by reason, early decisions)."""
        c = self._counts
        for key in ("dropped_spans", "dropped_traces", "early_decisions"):
            for reason, n in getattr(d, key).items():
                c[key][reason] = c[key].get(reason, 0) + int(n)
        c["sampled_traces"] += int(d.sampled_traces)
        c["not_sampled_traces"] += int(d.not_sampled_traces)
        c["late_spans_kept"] += int(d.late_spans_kept)

    def _decide(self, d, rows, final: bool) -> None:
        self._count(d)
        if d.spans.num_rows:
            rows["spans"].append(d.spans)
            if self.red is not None:
                self.red.add_exemplars(d.spans)
        if d.traces.num_rows:
            rows["traces"].append(d.traces)
            for t, a in zip(d.traces.column("trace_id").to_pylist(), d.traces.column("adjusted_count").to_pylist()):
                self._kept[t] = a
            _bound(self._kept)
        if self.red is not None:
            # closed windows leave as partial aggregates, merged over the shards by the global stage
            parts = self.red.partials(None if final else getattr(self, "_red_now", 0))
            if parts:
                from transforms.tail_sampling.red import merge_partials

                merge_partials(self.__dict__.setdefault("_red_parts", {}), parts, self.red.max_exemplars)
        self._resolve_logs(rows, final)

    def _resolve_logs(self, rows, final: bool) -> None:
        """Logs whose trace is decided follow it; logs of traces never seen wait ``log_wait``."""
        if not self._pending_logs or self.logs is None:  # (no log sampler: no log waits, _add_logs)
            return
        still: list[tuple[int, pa.Table]] = []
        buffered = self.sampler._ids  # trace ids the sampler still holds
        not_sampled = self.sampler._nonsampled_cache
        for arrived, t in self._pending_logs:
            ids = t.column("trace_id").to_pylist()
            kept = np.array([i in self._kept for i in ids])
            waiting = np.array([(i in buffered) and not final for i in ids])
            head_dropped = self._head_dropped
            dropped = np.array([((i in not_sampled) or (i in head_dropped)) and not k for i, k in zip(ids, kept)])
            expired = final or self.now - arrived >= self.log_wait_ms
            unknown = ~kept & ~waiting & ~dropped
            if kept.any():
                # the trace was kept: every line is kept; sample_rate (the fraction kept, obs.logs
                # contract) is 1 for the always-kept levels, else 1 / the trace's adjusted count
                sub = t.filter(pa.array(kept))
                rows["logs"].append(
                    self.logs.decide_logs(
                        sub, kept_trace_ids={i: self._kept[i] for i in set(sub.column("trace_id").to_pylist())}
                    )
                )
            if dropped.any():
                # the trace was not kept: only the always-kept levels survive
                sub = t.filter(pa.array(dropped))
                rows["logs"].append(self.logs.decide_logs(sub, kept_trace_ids=set()))
            hold = waiting | (unknown & (not expired))
            if (unknown & expired).any():
                rows["logs"].append(self.logs.decide_logs(t.filter(pa.array(unknown & expired))))
            if hold.any():
                still.append((arrived, t.filter(pa.array(hold))))
        self._pending_logs = still

    def _output(self, rows, final: bool) -> StageOutput:
        out = {}
        if rows.get("dead_letters"):
            rows[self.dead_table] = rows.pop("dead_letters")
        for name, parts in rows.items():
            if parts:
                tdef = table_def("dead_letters" if name == self.dead_table else name)
                out[name] = (
                    pa.concat_tables([conform(t, tdef) for t in parts]) if len(parts) > 1 else conform(parts[0], tdef)
                )
        counts, self._counts = self._counts, _new_counts()
        if getattr(self, "_red_late", 0):
            counts["red_late_spans"], self._red_late = self._red_late, 0
        self._reported = self.positions(final)  # the last positions reported (an idle tick reports only news)
        extra: dict[str, Any] = {}
        if self.red is not None:
            through = _MAX if final else self.red.closed_through(getattr(self, "_red_now", 0))
            if self.__dict__.get("_red_parts"):
                extra["red"], self._red_parts = self._red_parts, {}
            if through != getattr(self, "_red_through", None) or extra:
                extra["red_through"] = self._red_through = through
        return StageOutput(
            stage=TRACE,
            shard=self.shard,
            rows=out,
            positions=dict(self._reported),
            shards=self.step.shards,
            counters={k: v for k, v in counts.items() if v},
            extra=extra,
        )

    def positions(self, final: bool = False) -> dict[str, int]:
        """Per partition: everything below this offset has been emitted by this shard."""
        horizon = self.now - self.hold_ms
        holding = bool(self._pending_logs or self.sampler.buffered_spans)
        return held_positions(self._batches, self._latest, lambda at: final or at < horizon, holding)

    # -- state ----------------------------------------------------------------------

    def snapshot(self) -> bytes:
        state = {
            "sampler": self.sampler.snapshot(),
            "red": self.red.snapshot() if self.red else None,
            "now": self.now,
            "pending_logs": self._pending_logs,
            "kept": self._kept,
            "clock": self._clock,
            "batches": self._batches,
            "latest": self._latest,
            "log_counts": (self.logs.kept_lines, self.logs.dropped_lines) if self.logs else None,
            "counts": self._counts,
            "head_dropped": self._head_dropped,
            "idle": (self._idle_wall, self._idle_from, self._reported),
            "lags": getattr(self, "_lags", {}),
            "red_clock": (
                self._red_clock,
                self._red_now,
                self._red_idle_from,
                self._red_through,
                self._red_parts,
                self._red_late,
            ),
        }
        return zlib.compress(pickle.dumps(state, protocol=5), 1)

    @classmethod
    def restore(
        cls,
        step,
        log_config,
        shard: int,
        data: bytes,
        head: tuple | None = None,
        expected=(),
        red_topics=None,
        dead_letters: str = "dead_letters",
    ) -> TraceStage:
        """A stage in the state :meth:`snapshot` captured."""
        st = pickle.loads(zlib.decompress(data))
        self = cls(step, log_config, shard, head, expected, red_topics, dead_letters)
        self._head_dropped = st.get("head_dropped", {})
        self.sampler = TailSampler.restore(step.sampler, st["sampler"])
        if self.red is not None and st["red"] is not None:
            self.red.restore(st["red"])
        self.now = st["now"]
        self._pending_logs = st["pending_logs"]
        self._kept = st["kept"]
        self._clock = st["clock"]
        self._batches = st["batches"]
        self._latest = st["latest"]
        if self.logs is not None and st["log_counts"]:
            self.logs.kept_lines, self.logs.dropped_lines = st["log_counts"]
        self._counts = st.get("counts") or _new_counts()
        self._idle_wall, self._idle_from, self._reported = st.get("idle", (None, self.now, None))
        self._lags = st.get("lags", {})
        if "red_clock" in st:
            (
                self._red_clock,
                self._red_now,
                self._red_idle_from,
                self._red_through,
                self._red_parts,
                self._red_late,
            ) = st["red_clock"]
        return self


def _late_span_dead_letters(late: pa.Table, source: str, lateness_ms: int) -> pa.Table:
    """Dead-letter rows (reason ``late_data``) for spans that RED metrics did not count
    because their window had closed; ``raw`` is the span's identity and timing re-encoded
    (no attributes)."""
    import json as _json

    from schemas.tables import DEAD_LETTERS

    rows = []
    for r in late.to_pylist():
        doc = {k: r.get(k) for k in ("trace_id", "span_id", "parent_span_id", "service", "name", "kind", "status_code")}
        for k in ("start_time", "end_time"):
            doc[k] = r[k].isoformat() if r.get(k) is not None else None
        raw = _json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()
        rows.append(
            {
                "received_at": r.get("ingested_at"),
                "reason": "late_data",
                "detail": f"span start_time {doc['start_time']}: its RED window had closed (later than allowed_lateness "
                f"{lateness_ms // 1000}s behind the span partitions' event time), so span.calls / span.errors / "
                f"span.duration_ms do not count it; the span itself went on to tail sampling; raw is the span "
                f"re-encoded without attributes",
                "source": source or r.get("source_topic"),
                "source_topic": r.get("source_topic"),
                "source_partition": r.get("source_partition"),
                "source_offset": r.get("source_offset"),
                "raw": raw,
                "raw_size": len(raw),
                "raw_truncated": False,
            }
        )
    return pa.Table.from_pylist(rows, schema=DEAD_LETTERS.arrow_schema())
