"""Stateful stages: engine-agnostic objects that a runner hosts in its keyed state
(a Bytewax ``stateful`` operator, a Beam stateful ``DoFn``), one instance per shard.

Every stage has the same shape (:class:`Stage`): ``process(item) -> StageOutput``,
``flush() -> StageOutput`` (end of a bounded input), ``snapshot() -> bytes``; a stage is
built or restored by name with :func:`make_stage` from a :class:`StageDef` (what
:func:`pipelines.graph.plan_stages` derives from the spec). The engines host any stage
kind by name: items are keyed ``"<stage>:<shard>"``.

Stages: :class:`TraceStage` (``trace``), :class:`MetricsStage` (``metrics``, rollups),
:class:`ProductStage` (``product``, sessions and funnels) — all fed by the flows'
:class:`StageInput` s — and :class:`GlobalStage` (``global``, one shard), fed by the
metrics and product stages' outputs: it evaluates alert rules over the rollup rows and
merges the product shards' funnel tallies into report rows.

:class:`TraceStage` (shard = hash of the trace id) consumes every span and the log lines
of the spec's log flows, and emits
- ``spans`` / ``traces``: what the tail sampler keeps (``transforms.tail_sampling``);
- RED metrics computed from *all* spans before sampling, with exemplar trace ids of kept
  traces: a window closes when the span partitions' event time (largest span start per
  partition, smallest over the partitions) passed its end + ``allowed_lateness``; closed
  windows leave as partial aggregates (``extra["red"]``, ``extra["red_through"]``) that
  the global stage merges into one ``metrics`` row per series and window; a span whose
  window had closed is a ``late_data`` dead letter (``counters["red_late_spans"]``);
- ``logs``: WARN/ERROR/FATAL always; other lines follow their trace's decision (a kept
  trace keeps all its logs), lines without a trace id are sampled by hash at once, and a
  line whose trace never shows up is sampled by hash after ``log_wait``; ``sample_rate``
  is the fraction of such lines kept (1 / the trace's adjusted count for a followed trace);
- ``spans`` of the ``head_sampling`` sources (input kind ``head_spans``): decided on arrival by
  the head sampler (same hash and salt as the ``probabilistic`` policy), never buffered,
  no obs.traces row; RED metrics still count them all;
- ``counters`` (on every output): the tail sampler's counts since the previous output.

Time is the data's: ``now`` is the ingest-time watermark over the stage's partitions
(:class:`PartitionClock`: the partitions with records to read are known from the topic
metadata at start, and one not read yet holds it), so a run's answers do not depend on
the order topics and partitions are read in, and a bounded run decides everything on
:meth:`TraceStage.flush`. A trace's ``decision_wait`` starts at its batch's ingest time.

Idle advance (``stages.idle_advance_after``, unbounded runs): a :class:`StageTick` (wall
time) reaches every shard while input is idle; once a shard has had no input for the
tick's ``idle_ms``, its clock (trace: ``now``; metrics / product: the stage watermark)
becomes the clock at its last input plus the wall time elapsed since — never backwards,
and real input resumes at max(clock, partition watermark) — and the stage does what an
advance does (decisions, closed windows and sessions, released positions). The global
stage follows the metrics shards' advanced watermarks, so alert rules (absence
included) evaluate when all input stopped. A tick that moves nothing returns None. No
idle advance while a backlog waits: an input's ``lag`` (records its partition still held
when the batch was read) above 0 holds the shard's clock until a later input from that
partition reached the end, for at most :data:`BACKLOG_HOLD` idle periods.

Positions: a stage reports, per source partition, the offset below which everything it
received has been emitted (the first offset of the oldest batch it may still hold rows
of). The sink records the smallest over shards, so a restart after a crash re-reads what
a stage still held; rows already written from those offsets are filtered by offset for
``spans`` and ``logs``; ``traces`` and RED ``metrics`` rows can be written again after a
crash (at-least-once for those two tables; exact on clean stops, which flush)."""

from __future__ import annotations

import pickle
import time
import zlib
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core.durations import MAX_DURATION
from schemas.tables import table_def
from transforms.shape import conform
from transforms.tail_sampling import HeadSampler, LogSampler, RedMetrics, TailSampler

TRACE = "trace"
METRICS = "metrics"
PRODUCT = "product"
GLOBAL = "global"


@dataclass
class StageInput:
    """Rows for one shard from one raw batch (possibly none: every shard hears of every
    batch, so that each can report positions)."""

    stage: str
    shard: int
    kind: str              # "spans" or "logs"
    table: pa.Table | None
    topic: str
    partition: int
    first_offset: int
    next_offset: int
    now_ms: int
    topic_partitions: int | None = None
    event_ms: int = -1     # largest event time of the whole raw batch (every shard: the same watermark)
    source: str = ""       # source name in the spec (dead letters)
    wall_ms: int = -1      # wall time the shard received it (idle advance); -1: read the clock when processed
    lag: int = -1          # records the source partition still held past this batch when it was read (-1: not known)

    @property
    def key(self) -> str:
        return f"{self.stage}:{self.shard}"


@dataclass
class StageTick:
    """Wall time reaching a stage shard while input may be idle (Bytewax: the Kafka
    partitions' idle ticks; Beam: a processing-time timer). When the shard has had no
    input for ``idle_ms`` (``stages.idle_advance_after``; 0: never), its clock advances by
    the wall time elapsed since its last input and the stage does what a normal advance
    does; else the tick is a no-op (``process`` returns None)."""

    stage: str
    shard: int
    wall_ms: int
    idle_ms: int

    @property
    def key(self) -> str:
        return f"{self.stage}:{self.shard}"


def _input_wall(item: StageInput) -> int:
    return item.wall_ms if item.wall_ms >= 0 else int(time.time() * 1000)


def _note_lag(stage, item: StageInput) -> None:
    """Remember how far behind its partition's end the shard's latest input from that
    partition was (:func:`_behind`)."""
    if item.lag >= 0:
        lags = getattr(stage, "_lags", None)
        if lags is None:
            lags = stage._lags = {}
        lags[f"{item.topic}:{item.partition}"] = item.lag


def _behind(stage) -> bool:
    """Whether the latest input from some partition left records unread behind it: a
    backlog waits (a broker restart or a slow fetch in the middle of a replay), so input
    stopping is not the stream going quiet and must not move event time."""
    return any(lag > 0 for lag in getattr(stage, "_lags", {}).values())


#: how long a backlog mark holds the idle advance, in idle periods (``stages.idle_advance_after``)
BACKLOG_HOLD = 12


def _idle_elapsed(last_wall: int | None, tick: StageTick, behind: bool = False) -> int | None:
    """Wall time since the last input when it is at least the tick's idle period, else
    None. While a backlog waits (``behind``) the stream is not idle for
    :data:`BACKLOG_HOLD` idle periods (a minute at the default 5 s): enough for a broker
    restart, and bounded, so that a lag that never drains (records the consumer cannot
    see, such as a transaction still open) delays the idle advance but does not stop it."""
    if tick.idle_ms <= 0 or last_wall is None:
        return None
    elapsed = tick.wall_ms - last_wall
    if behind and elapsed < BACKLOG_HOLD * tick.idle_ms:
        return None
    return elapsed if elapsed >= tick.idle_ms else None


@dataclass
class StageOutput:
    """Rows a shard emits, per table, and the positions that are safe to record."""

    stage: str
    shard: int
    rows: dict[str, pa.Table]
    positions: dict[str, int]
    shards: int = 1
    dropped: dict[str, int] = field(default_factory=dict)
    watermark: int | None = None          # event-time horizon this shard has closed through
    extra: dict = field(default_factory=dict)  # stage-specific payload for a downstream stage (funnel tallies)
    alerts: list = field(default_factory=list)         # AlertEvents (→ Kafka alerts topic, Alertmanager)
    notifications: list = field(default_factory=list)  # Alertmanager-style notifications, for the record
    resends: list = field(default_factory=list)        # still-firing AlertEvents re-sent (→ Alertmanager only)
    counters: dict = field(default_factory=dict)       # counts since the previous output, for the run stats
    # (trace stage: TraceStage.counters' layout; recorded by runners.stats.RunStats.record_stage)

    @property
    def key(self) -> str:
        return f"{GLOBAL}:0"


def trace_shards(trace_ids: pa.Array, shards: int, fallback: int) -> np.ndarray:
    """Shard of each row: from the trace id's first 32 bits; rows without one go to ``fallback``."""
    ids = trace_ids.to_pylist()
    out = np.full(len(ids), fallback % shards, dtype=np.int64)
    for i, t in enumerate(ids):
        if t:
            out[i] = int(t[:8], 16) % shards
    return out


def split_by_shard(table: pa.Table, shard_of: np.ndarray, shards: int) -> list[pa.Table]:
    if table.num_rows == 0:
        return [table] * shards
    order = np.argsort(shard_of, kind="stable")
    counts = np.bincount(shard_of, minlength=shards)
    sorted_t = table.take(pa.array(order))
    out, start = [], 0
    for c in counts:
        out.append(sorted_t.slice(start, int(c)))
        start += int(c)
    return out


class PartitionClock:
    """The stage's clock: an event-time watermark over source partitions.

    Each partition's progress is the largest time seen from it; the watermark is the
    smallest progress over the partitions the stage reads. Which partitions:

    - ``expected`` (``topic:partition`` keys known at start, from the topic metadata: every
      partition of every topic the stage reads that has records to read): one not read
      yet holds the watermark, whatever the read order, until it delivers;
    - partitions of a topic the stage was not told of at start are learnt from the inputs
      (all of a topic's partitions when the source says how many there are); one of them
      that never shows up while ``idle_batches`` batches per partition came from others
      stops holding time (a stage restored from an old snapshot, a source without metadata).

    A partition that delivered and then sent no batch while ``idle_batches`` batches came
    from others is idle and stops holding time back — unless its latest batch left records
    behind it (``lag`` > 0: it has a backlog, so its data is still to come)."""

    def __init__(self, idle_batches: int = 16, expected=()):
        self.progress: dict[str, int] = {}
        self.last_seen: dict[str, int] = {}
        self.expected: dict[str, int] = {}
        self.batches = 0
        self.idle_batches = idle_batches
        self.known: set[str] = set(expected)
        self.lags: dict[str, int] = {}

    def observe(self, topic: str, partition: int, ingest_ms: int | None, topic_partitions: int | None,
                lag: int = -1) -> int:
        """Note a batch of ``topic:partition`` whose largest time is ``ingest_ms`` (None or
        negative: the batch had no time, the partition is seen but does not progress)."""
        self.batches += 1
        tp = f"{topic}:{partition}"
        if ingest_ms is not None and ingest_ms >= 0:
            self.progress[tp] = max(self.progress.get(tp, 0), ingest_ms)
        self.last_seen[tp] = self.batches
        self.__dict__.setdefault("lags", {})[tp] = lag
        if topic_partitions:
            self.expected[topic] = max(self.expected.get(topic, 0), topic_partitions)
        return self.watermark()

    def watermark(self) -> int:
        wm = None
        known = getattr(self, "known", set())
        lags = getattr(self, "lags", {})
        keys = set(self.progress) | known
        for topic, n in self.expected.items():
            keys.update(f"{topic}:{p}" for p in range(n))
        for tp in keys:
            seen = self.last_seen.get(tp)
            if seen is not None and self.batches - seen > self.idle_batches and lags.get(tp, -1) <= 0:
                continue  # idle: delivered, caught up (or not known to be behind), and silent since
            if tp not in self.progress:
                if tp in known:
                    return 0  # known at start, not read yet: hold time
                if seen is None and self.batches > self.idle_batches * max(1, len(keys)):
                    continue  # learnt, never showed up while all others kept coming: treat as idle
                return 0  # not read yet: hold time
            wm = self.progress[tp] if wm is None else min(wm, self.progress[tp])
        return wm if wm is not None else max(self.progress.values(), default=0)

    def idle_base(self) -> int:
        """Where an idle advance starts from: the watermark over the partitions that have
        delivered (a partition never read does not hold an idle clock at 0; an idle one
        is skipped as in :meth:`watermark`)."""
        live = [v for tp, v in self.progress.items() if self.batches - self.last_seen.get(tp, 0) <= self.idle_batches]
        return min(live) if live else max(self.progress.values(), default=0)


def _new_counts() -> dict:
    """Zeroed trace-stage counters (the layout of ``StageOutput.counters`` for ``trace``):
    ``dropped_spans`` / ``dropped_traces`` / ``early_decisions``: reason -> count, as the
    tail sampler's :class:`~transforms.tail_sampling.sampler.Decisions` (reasons in
    ``sampler.REASONS``; ``num_traces_overflow`` is the num_traces bound's cost);
    ``sampled_traces`` / ``not_sampled_traces`` / ``late_spans_kept``: counts."""
    return {"dropped_spans": {}, "dropped_traces": {}, "early_decisions": {}, "sampled_traces": 0,
            "not_sampled_traces": 0, "late_spans_kept": 0}


def _bound(ids: dict, limit: int = 200_000) -> None:
    """Keep a decided-trace-id dict bounded: past ``limit`` entries, drop the oldest half."""
    if len(ids) > limit:
        for t in list(ids)[: len(ids) // 2]:
            del ids[t]


class TraceStage:
    """Tail sampling, RED metrics and trace-consistent log sampling for one shard.

    Each output's ``counters`` carry what the tail sampler counted since the previous
    output (:func:`_new_counts`), which the runners add to the run stats."""

    def __init__(self, step, log_config=None, shard: int = 0, head: tuple | None = None, expected=(),
                 red_topics=None, dead_letters: str = "dead_letters"):
        self.step = step
        self.shard = shard
        self.dead_table = dead_letters
        # head sampling (``head_spans`` inputs): (percentage, salt, policy name) — see pipelines.spec.HeadSamplingSpec
        self.head = HeadSampler(head[0], head[1], head[2]) if head is not None else None
        self._head_dropped: dict[str, None] = {}  # trace ids head sampling did not keep (bounded, as _kept)
        self.sampler = TailSampler(step.sampler)
        red = step.red
        self.red = RedMetrics(window_ms=int(red.window.total_seconds() * 1000), relative_accuracy=red.relative_accuracy,
                              allowed_lateness_ms=int(red.allowed_lateness.total_seconds() * 1000),
                              max_exemplars=red.max_exemplars) if red else None
        self.logs = LogSampler(log_config) if log_config is not None else None
        self.log_wait_ms = int(step.log_wait.total_seconds() * 1000)
        self.hold_ms = int(step.sampler.decision_wait_ms) + self.log_wait_ms
        self.now = 0
        self._clock = PartitionClock(expected=expected)
        # RED windows close on the spans' event time (start_time), over the span partitions only
        span_parts = [k for k in expected if red_topics is None or k.rsplit(":", 1)[0] in red_topics]
        self._red_clock = PartitionClock(expected=span_parts)
        self._red_now = 0                     # the RED watermark (event time of the span partitions)
        self._red_idle_from = 0               # where an idle advance of the RED watermark starts
        self._red_through: int | None = None  # the RED windows closed through (extra["red_through"]), last reported
        self._red_parts: dict = {}            # closed RED windows' aggregates not yet handed on (extra["red"])
        self._red_late = 0                    # spans not counted in RED (window closed) since the last output
        self._pending_logs: list[tuple[int, pa.Table]] = []  # (arrival now, rows waiting for their trace)
        self._kept: dict[str, float] = {}     # decided and kept trace id -> adjusted count (bounded)
        self._batches: dict[str, deque] = {}  # tp -> (first_offset, next_offset, arrival now)
        self._latest: dict[str, int] = {}
        self._counts = _new_counts()          # since the last output (StageOutput.counters)
        self._idle_wall: int | None = None    # wall time of the last input (idle advance)
        self._idle_from = 0                   # the clock an idle advance starts from
        self._reported: dict | None = None    # positions of the last output

    # -- processing -----------------------------------------------------------------

    def process(self, item: StageInput | StageTick) -> StageOutput | None:
        if isinstance(item, StageTick):
            return self.tick(item)
        tp = f"{item.topic}:{item.partition}"
        self.now = max(self.now, self._clock.observe(item.topic, item.partition, item.now_ms, item.topic_partitions, item.lag))
        if item.kind in ("spans", "head_spans"):
            red_wm = self._red_clock.observe(item.topic, item.partition, item.event_ms, item.topic_partitions, item.lag)
            self._red_now = max(self._red_now, red_wm)
            self._red_idle_from = max(self._red_now, self._red_clock.idle_base())
        self._idle_wall = _input_wall(item)
        self._idle_from = max(self.now, self._clock.idle_base())
        _note_lag(self, item)
        # held until its rows can no longer be waiting: spans wait from their batch's ingest time (below)
        self._batches.setdefault(tp, deque()).append((item.first_offset, item.next_offset, max(self.now, item.now_ms)))
        self._latest[tp] = max(self._latest.get(tp, 0), item.next_offset)
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
        return out if out.rows or out.counters or out.extra or out.positions != before else None  # nothing new: no output

    def flush(self) -> StageOutput:
        """End of input: decide everything still held."""
        rows: dict[str, list[pa.Table]] = {"spans": [], "traces": [], "metrics": [], "logs": []}
        self._decide(self.sampler.flush_all(self.now), rows, final=True)
        return self._output(rows, final=True)

    def _red_add(self, item: StageInput, rows) -> None:
        """Count the input's spans in RED; a span whose window was already closed (later
        than ``allowed_lateness`` behind the span partitions' event time) is not counted:
        it becomes a ``late_data`` dead letter (the span itself goes on to sampling)."""
        if self.red is None:
            return
        late = self.red.add(item.table)
        if late.any():
            rows.setdefault("dead_letters", []).append(
                _late_span_dead_letters(item.table.filter(pa.array(late)), item.source or item.topic,
                                        int(self.step.red.allowed_lateness.total_seconds() * 1000)))
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
        if not self._pending_logs:
            return
        still: list[tuple[int, pa.Table]] = []
        buffered = self.sampler._ids          # trace ids the sampler still holds
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
                rows["logs"].append(self.logs.decide_logs(
                    sub, kept_trace_ids={i: self._kept[i] for i in set(sub.column("trace_id").to_pylist())}))
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
                out[name] = pa.concat_tables([conform(t, tdef) for t in parts]) if len(parts) > 1 else conform(parts[0], tdef)
        counts, self._counts = self._counts, _new_counts()
        if getattr(self, "_red_late", 0):
            counts["red_late_spans"], self._red_late = self._red_late, 0
        self._reported = self.positions(final)  # the last positions reported (an idle tick reports only news)
        extra = {}
        if self.red is not None:
            through = _MAX if final else self.red.closed_through(getattr(self, "_red_now", 0))
            if self.__dict__.get("_red_parts"):
                extra["red"], self._red_parts = self._red_parts, {}
            if through != getattr(self, "_red_through", None) or extra:
                extra["red_through"] = self._red_through = through
        return StageOutput(stage=TRACE, shard=self.shard, rows=out, positions=dict(self._reported), shards=self.step.shards,
                           counters={k: v for k, v in counts.items() if v}, extra=extra)

    def positions(self, final: bool = False) -> dict[str, int]:
        """Per partition: everything below this offset has been emitted by this shard."""
        out = {}
        horizon = self.now - self.hold_ms
        for tp, q in self._batches.items():
            while q and (final or q[0][2] < horizon):
                q.popleft()
            if self._pending_logs or self.sampler.buffered_spans:
                out[tp] = q[0][0] if q else self._latest[tp]
            else:
                q.clear()
                out[tp] = self._latest[tp]
        return out

    # -- state ----------------------------------------------------------------------

    def snapshot(self) -> bytes:
        state = {"sampler": self.sampler.snapshot(), "red": self.red.snapshot() if self.red else None, "now": self.now,
                 "pending_logs": self._pending_logs, "kept": self._kept, "clock": self._clock, "batches": self._batches, "latest": self._latest,
                 "log_counts": (self.logs.kept_lines, self.logs.dropped_lines) if self.logs else None,
                 "counts": self._counts, "head_dropped": self._head_dropped, "idle": (self._idle_wall, self._idle_from, self._reported),
                 "lags": getattr(self, "_lags", {}),
                 "red_clock": (self._red_clock, self._red_now, self._red_idle_from, self._red_through, self._red_parts,
                               self._red_late)}
        return zlib.compress(pickle.dumps(state, protocol=5), 1)

    @classmethod
    def restore(cls, step, log_config, shard: int, data: bytes, head: tuple | None = None, expected=(), red_topics=None,
                dead_letters: str = "dead_letters") -> "TraceStage":
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
            (self._red_clock, self._red_now, self._red_idle_from, self._red_through, self._red_parts,
             self._red_late) = st["red_clock"]
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
        rows.append({"received_at": r.get("ingested_at"), "reason": "late_data",
                     "detail": f"span start_time {doc['start_time']}: its RED window had closed (later than allowed_lateness "
                               f"{lateness_ms // 1000}s behind the span partitions' event time), so span.calls / span.errors / "
                               f"span.duration_ms do not count it; the span itself went on to tail sampling; raw is the span "
                               f"re-encoded without attributes",
                     "source": source or r.get("source_topic"), "source_topic": r.get("source_topic"),
                     "source_partition": r.get("source_partition"), "source_offset": r.get("source_offset"),
                     "raw": raw, "raw_size": len(raw), "raw_truncated": False})
    return pa.Table.from_pylist(rows, schema=DEAD_LETTERS.arrow_schema())


# -- the stage protocol and registry ----------------------------------------------------

_MIN = -(1 << 62)
_MAX = 1 << 62
_NEVER = MAX_DURATION  # a watermark delay that keeps a library's own watermark out of the way: the stage drives it


class Stage:
    """What an engine hosts per key ``"<stage>:<shard>"`` (duck-typed; the classes below)."""

    def process(self, item) -> StageOutput | None: ...  # None only for a StageTick that moved nothing

    def flush(self) -> StageOutput: ...

    def snapshot(self) -> bytes: ...


@dataclass
class StageDef:
    """One stateful stage of a spec (see :func:`pipelines.graph.plan_stages`): its kind and
    shards, the tables it writes, the topics it consumes, the topic partitions it must
    hear of before its event-time watermark moves (``expected``), the step/config it
    runs, and (for ``global``) the stages it is fed by."""

    name: str
    shards: int
    tables: tuple
    topics: tuple
    config: object = None
    expected: tuple = ()
    upstream: dict = field(default_factory=dict)  # stage name -> (shards, topics)
    options: dict = field(default_factory=dict)
    red_topics: tuple | None = None  # trace: the topics whose event time closes RED windows (None: every topic)
    dead_letters: str = "dead_letters"  # the dead-letter table's name (stages that dead-letter late data)


def make_stage(defn: StageDef, shard: int, blob: bytes | None = None):
    """Build (or, with ``blob``, restore) shard ``shard`` of the stage ``defn`` describes."""
    if defn.name == TRACE:
        step, log_config = defn.config
        head = defn.options.get("head")
        args = (defn.expected, getattr(defn, "red_topics", None), getattr(defn, "dead_letters", "dead_letters"))
        return TraceStage.restore(step, log_config, shard, blob, head, *args) if blob else TraceStage(step, log_config, shard, head, *args)
    if blob:
        return pickle.loads(zlib.decompress(blob))
    kind = STAGE_KINDS[defn.name]
    return kind(defn, shard)


class _Pickled:
    def snapshot(self) -> bytes:
        return zlib.compress(pickle.dumps(self, protocol=5), 1)


class _Tracked(_Pickled):
    """Event time and positions for stages that hold rows until a horizon passes.

    Each source partition has its own watermark (largest event time it delivered −
    delay), so whether a record is late does not depend on how an engine interleaves
    partitions; the stage's watermark (what closes windows and sessions) is the smallest
    over the partitions it expects, so no partition's on-time data finds its window
    closed. A batch's first offset is held (positions) until the horizon passes the
    windows its rows went into."""

    def _init_tracking(self, defn: StageDef, delay_ms: int):
        self.expected = tuple(defn.expected)
        self.delay = delay_ms
        self._batches: dict[str, deque] = {}
        self._latest: dict[str, int] = {}
        self.wm: dict[str, int] = {}
        self.close_wm: int | None = None
        self._idle_wall: int | None = None   # wall time of the last input (idle advance)
        self._idle_from: int | None = None   # the watermark an idle advance starts from
        self._lags: dict[str, int] = {}      # partition -> records left behind its latest input (_behind)

    def restart_idle_clock(self, wall_ms: int) -> None:
        """After a process restart, idle time counts from the restart (see
        :meth:`TraceStage.restart_idle_clock`)."""
        if getattr(self, "_idle_wall", None) is not None:
            self._idle_wall = wall_ms

    def _idle_advance(self, tick: StageTick) -> int | None:
        """Idle advance: after ``tick.idle_ms`` without input, the stage watermark is the one
        at the last input (over the partitions that delivered: a partition never read does
        not hold it) plus the wall time elapsed since; it only moves forward. The new
        ``close_wm`` if it moved, else None."""
        elapsed = _idle_elapsed(getattr(self, "_idle_wall", None), tick, _behind(self))
        base = getattr(self, "_idle_from", None)
        if elapsed is None or base is None:
            return None
        g = base + elapsed
        if self.close_wm is not None and g <= self.close_wm:
            return None
        self.close_wm = g
        return g

    def _own_watermark(self, tp: str) -> int | None:
        w = max(self.wm.get(tp, _MIN), self.close_wm if self.close_wm is not None else _MIN)
        return None if w == _MIN else w

    def _track(self, item: StageInput, release_at: int) -> str:
        tp = f"{item.topic}:{item.partition}"
        self._batches.setdefault(tp, deque()).append((item.first_offset, item.next_offset, release_at))
        self._latest[tp] = max(self._latest.get(tp, 0), item.next_offset)
        if item.event_ms >= 0:
            self.wm[tp] = max(self.wm.get(tp, _MIN), item.event_ms - self.delay)
        self._idle_wall = _input_wall(item)
        _note_lag(self, item)
        if self.wm:  # the watermark once this input is through (_horizon), where an idle advance starts
            self._idle_from = max(min(self.wm.values()), self.close_wm if self.close_wm is not None else _MIN)
        return tp

    def _horizon(self) -> int | None:
        """The stage watermark if it moved, else None."""
        keys = set(self.expected) | set(self.wm)
        if not keys or any(k not in self.wm for k in keys):
            return None
        g = min(self.wm[k] for k in keys)
        if self.close_wm is None or g > self.close_wm:
            self.close_wm = g
            return g
        return None

    def positions(self, final: bool = False) -> dict[str, int]:
        out = {}
        for tp, q in self._batches.items():
            while q and (final or (self.close_wm is not None and q[0][2] <= self.close_wm)):
                q.popleft()
            out[tp] = q[0][0] if q else self._latest[tp]
        return out


def _concat(parts: list, name: str) -> pa.Table | None:
    parts = [p for p in parts if p is not None and p.num_rows]
    if not parts:
        return None
    tdef = table_def(name)
    parts = [conform(p, tdef) for p in parts]
    return pa.concat_tables(parts) if len(parts) > 1 else parts[0]


# -- metrics -------------------------------------------------------------------------------

from transforms.rollup import MetricRollup  # noqa: E402


class _StageRollup(MetricRollup):
    """A :class:`MetricRollup` whose windows close at the stage's watermark (``close_wm``)
    while each batch is judged late or too late against its own partition's watermark
    (set on ``watermark`` before each batch)."""

    close_wm: int | None = None

    def _close(self, wm, everything: bool = False):
        return super()._close(self.close_wm, everything)


def _late_dead_letters(late: pa.Table, source: str, lateness_ms: int) -> pa.Table:
    """Dead-letter rows (reason ``late_data``) for metric samples whose window had closed."""
    import json as _json

    from schemas.tables import DEAD_LETTERS

    rows = []
    for r in late.to_pylist():
        ts = r.get("timestamp")
        doc = {k: r.get(k) for k in ("name", "kind", "labels", "value", "bucket_bounds", "bucket_counts", "count", "sum")}
        doc["labels"] = dict(doc["labels"] or [])
        doc["timestamp"] = ts.isoformat() if ts is not None else None
        if r.get("temporality") is not None:  # wire schema version 2: how a cumulative sample is meant
            doc["temporality"] = r["temporality"]
        if r.get("start_time") is not None:
            doc["start_time"] = r["start_time"].isoformat()
        raw = _json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()
        rows.append({"received_at": r.get("ingested_at"), "reason": "late_data",
                     "detail": f"timestamp {doc['timestamp']}: its window closed (later than allowed_lateness "
                               f"{lateness_ms // 1000}s behind the partition's watermark); raw is the decoded sample re-encoded",
                     "source": source or r.get("source_topic"), "source_topic": r.get("source_topic"),
                     "source_partition": r.get("source_partition"), "source_offset": r.get("source_offset"),
                     "raw": raw, "raw_size": len(raw), "raw_truncated": False})
    from sinks.dead_letters import require_reasons

    return require_reasons(pa.Table.from_pylist(rows, schema=DEAD_LETTERS.arrow_schema()))


class MetricsStage(_Tracked):
    """Metric rollups for one shard (metric name hash): samples of ``signal: metric``
    flows (kind ``samples``) and samples derived from log / event rows (kind ``derived``).
    Emits closed-window ``metrics`` rows; a sample whose window had closed (beyond
    ``allowed_lateness``) goes to ``dead_letters`` with reason ``late_data`` (a derived
    one is counted in ``dropped["late_derived"]``: its log line or event is in its table)."""

    def __init__(self, defn: StageDef, shard: int = 0):
        step = defn.config
        cfg = step.config
        self.shard, self.shards = shard, defn.shards
        self.lateness = cfg.lateness_ms
        self.coarse = max(cfg.resolutions_ms)
        self.rollup = _StageRollup(cfg.model_copy(update={"watermark_delay": _NEVER}))
        self._init_tracking(defn, cfg.delay_ms)
        self.late = {"late_data": 0, "late_derived": 0, "invalid": 0}

    def process(self, item: StageInput | StageTick) -> StageOutput | None:
        rows: dict[str, list] = {"metrics": [], "dead_letters": []}
        dropped: dict[str, int] = {}
        if isinstance(item, StageTick):  # idle advance: close what the wall time allows
            g = self._idle_advance(item)
            if g is None:
                return None
            self.rollup.close_wm = g
            self._collect(self.rollup.advance_watermark(g), rows, None, dropped)
            return self._output(rows, dropped, final=False)
        t = item.table
        release = _MIN
        tp = f"{item.topic}:{item.partition}"
        if t is not None and t.num_rows:
            self.rollup.watermark = self._own_watermark(tp)
            out = self.rollup.process(t)
            self._collect(out, rows, item, dropped)
            mx = pc.max(t.column("timestamp")).cast(pa.timestamp("ms", tz="UTC")).value
            release = (mx // self.coarse + 1) * self.coarse + self.lateness
        self._track(item, release)
        g = self._horizon()
        if g is not None:
            self.rollup.close_wm = g
            self._collect(self.rollup.advance_watermark(g), rows, item, dropped)
        return self._output(rows, dropped, final=False)

    def _collect(self, out, rows, item=None, dropped=None) -> None:
        rows["metrics"].append(out.metrics)
        if out.late is not None and out.late.num_rows:
            if item is not None and item.kind == "samples":
                rows["dead_letters"].append(_late_dead_letters(out.late, item.source, self.lateness))
                self.late["late_data"] += out.late.num_rows
            else:
                self.late["late_derived"] += out.late.num_rows
                dropped["late_derived"] = dropped.get("late_derived", 0) + out.late.num_rows
        if out.invalid is not None and out.invalid.num_rows:
            self.late["invalid"] += out.invalid.num_rows
            dropped["invalid_sample"] = dropped.get("invalid_sample", 0) + out.invalid.num_rows

    def flush(self) -> StageOutput:
        rows: dict[str, list] = {"metrics": [], "dead_letters": []}
        self.rollup.close_wm = None
        self._collect(self.rollup.flush(), rows)
        self.close_wm = _MAX
        return self._output(rows, {}, final=True)

    def _output(self, rows, dropped, final: bool) -> StageOutput:
        out = {n: t for n in rows if (t := _concat(rows[n], n)) is not None}
        return StageOutput(stage=METRICS, shard=self.shard, rows=out, positions=self.positions(final), shards=self.shards,
                           dropped=dropped, watermark=_MAX if final else self.close_wm)


# -- product -------------------------------------------------------------------------------

from transforms.product import ProductAnalytics  # noqa: E402
from transforms.product.fingerprint import fingerprint as _fingerprint, normalize_stacks  # noqa: E402
from transforms.product.funnels import FunnelReport  # noqa: E402


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

    def __init__(self, defn: StageDef, shard: int = 0):
        step = defn.config
        cfg = step.config
        self.shard, self.shards = shard, defn.shards
        self.gap, self.res = cfg.gap_ms, cfg.report_ms
        self.analytics = ProductAnalytics(cfg.model_copy(update={"watermark_delay": _NEVER}))
        self.analytics.report = _TallyReport(cfg.funnels, cfg.report_ms)
        self.error_groups = step.error_groups
        self.errors: dict[tuple[int, str], list] = {}   # (window, fingerprint) -> [error type, count, first ms, last ms]
        self.sessionless: dict[int, int] = {}            # window -> events without a session id
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
        extra = {"funnels": self.analytics.report.take(), "errors": errors, "sessionless": sessionless, "through": through}
        out = {"sessions": t} if (t := _concat(sessions, "sessions")) is not None else {}
        return StageOutput(stage=PRODUCT, shard=self.shard, rows=out, positions=self.positions(final), shards=self.shards,
                           watermark=_MAX if final else self.close_wm, extra=extra, dropped=dropped or {})


# -- global: alerts over the rollups, funnel reports over the product shards --------------------

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

    def __init__(self, defn: StageDef, shard: int = 0):
        from transforms.alerting import AlertEngine

        self.upstream = dict(defn.upstream)
        alerts, product, rollup = defn.config
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
        out: dict[str, int] = {}
        tps = {tp for rep in self.reports.values() for tp in rep}
        for tp in tps:
            topic = tp.rsplit(":", 1)[0]
            vals = []
            for stage, (shards, topics) in self.upstream.items():
                if topic in topics:
                    vals += [self.reports.get((stage, k), {}).get(tp) for k in range(shards)]
            if vals and all(v is not None for v in vals):
                out[tp] = min(vals)
        return out

    def _output(self, rows, events, notes) -> StageOutput:
        out = {n: t for n in rows if (t := _concat(rows[n], n)) is not None}
        return StageOutput(stage=GLOBAL, shard=0, rows=out, positions=self.positions(), shards=1, notifications=notes,
                           alerts=[e for e in events if not e.resend], resends=[e for e in events if e.resend])


def _fmt(ms: int) -> str:
    from transforms.rollup.config import format_duration

    return format_duration(ms)


STAGE_KINDS = {METRICS: MetricsStage, PRODUCT: ProductStage, GLOBAL: GlobalStage}
