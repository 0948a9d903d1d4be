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
- ``metrics``: RED metrics computed from *all* spans before sampling, with exemplar trace
  ids of kept traces;
- ``logs``: WARN/ERROR/FATAL always; other lines follow their trace's decision (a kept
  trace keeps all its logs), lines without a trace id are sampled by hash at once, and a
  line whose trace never shows up is sampled by hash after ``log_wait``.

Time is the data's: ``now`` is the largest ingest time a shard has seen, so a run is
deterministic for a given input order, and a bounded run decides everything on
:meth:`TraceStage.flush`.

Positions: a stage reports, per source partition, the offset below which everything it
received has been emitted (the first offset of the oldest batch it may still hold rows
of). The sink records the smallest over shards, so a restart after a crash re-reads what
a stage still held; rows already written from those offsets are filtered by offset for
``spans`` and ``logs``; ``traces`` and RED ``metrics`` rows can be written again after a
crash (at-least-once for those two tables; exact on clean stops, which flush)."""

from __future__ import annotations

import pickle
import zlib
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas.tables import table_def
from transforms.shape import conform
from transforms.tail_sampling import LogSampler, RedMetrics, TailSampler

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

    @property
    def key(self) -> str:
        return f"{self.stage}:{self.shard}"


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

    Each partition's progress is the largest ingest time seen from it; the watermark is
    the smallest progress over every partition of the topics seen (all of a topic's
    partitions when the source says how many there are), so a partition that has not
    been read yet holds time back. A partition from which no batch came while
    ``idle_batches`` batches came from others is idle and stops holding time back (a
    partition read to its end, or one without traffic)."""

    def __init__(self, idle_batches: int = 16):
        self.progress: dict[str, int] = {}
        self.last_seen: dict[str, int] = {}
        self.expected: dict[str, int] = {}
        self.batches = 0
        self.idle_batches = idle_batches

    def observe(self, topic: str, partition: int, ingest_ms: int, topic_partitions: int | None) -> int:
        self.batches += 1
        tp = f"{topic}:{partition}"
        self.progress[tp] = max(self.progress.get(tp, 0), ingest_ms)
        self.last_seen[tp] = self.batches
        if topic_partitions:
            self.expected[topic] = max(self.expected.get(topic, 0), topic_partitions)
        return self.watermark()

    def watermark(self) -> int:
        wm = None
        keys = set(self.progress)
        for topic, n in self.expected.items():
            keys.update(f"{topic}:{p}" for p in range(n))
        for tp in keys:
            seen = self.last_seen.get(tp)
            if seen is not None and self.batches - seen > self.idle_batches:
                continue  # idle
            if tp not in self.progress:
                if self.batches > self.idle_batches * max(1, len(keys)):
                    continue  # never showed up while all others kept coming: treat as idle
                return 0  # not read yet: hold time
            wm = self.progress[tp] if wm is None else min(wm, self.progress[tp])
        return wm if wm is not None else max(self.progress.values(), default=0)


class TraceStage:
    """Tail sampling, RED metrics and trace-consistent log sampling for one shard."""

    def __init__(self, step, log_config=None, shard: int = 0):
        self.step = step
        self.shard = shard
        self.sampler = TailSampler(step.sampler)
        red = step.red
        self.red = RedMetrics(window_ms=int(red.window.total_seconds() * 1000), relative_accuracy=red.relative_accuracy,
                              allowed_lateness_ms=int(red.allowed_lateness.total_seconds() * 1000),
                              max_exemplars=red.max_exemplars) if red else None
        self.logs = LogSampler(log_config) if log_config is not None else None
        self.log_wait_ms = int(step.log_wait.total_seconds() * 1000)
        self.hold_ms = int(step.sampler.decision_wait_ms) + self.log_wait_ms
        self.now = 0
        self._clock = PartitionClock()
        self._pending_logs: list[tuple[int, pa.Table]] = []  # (arrival now, rows waiting for their trace)
        self._kept: dict[str, float] = {}     # decided and kept trace id -> adjusted count (bounded)
        self._batches: dict[str, deque] = {}  # tp -> (first_offset, next_offset, arrival now)
        self._latest: dict[str, int] = {}

    # -- processing -----------------------------------------------------------------

    def process(self, item: StageInput) -> StageOutput:
        tp = f"{item.topic}:{item.partition}"
        self.now = max(self.now, self._clock.observe(item.topic, item.partition, item.now_ms, item.topic_partitions))
        self._batches.setdefault(tp, deque()).append((item.first_offset, item.next_offset, self.now))
        self._latest[tp] = max(self._latest.get(tp, 0), item.next_offset)
        rows: dict[str, list[pa.Table]] = {"spans": [], "traces": [], "metrics": [], "logs": []}
        if item.table is not None and item.table.num_rows:
            if item.kind == "spans":
                if self.red is not None:
                    self.red.add(item.table)
                self.sampler.add(item.table, self.now)
            elif item.kind == "logs":
                self._add_logs(item.table, rows, item.now_ms)
        self._decide(self.sampler.advance(self.now), rows, final=False)
        return self._output(rows, final=False)

    def flush(self) -> StageOutput:
        """End of input: decide everything still held."""
        rows: dict[str, list[pa.Table]] = {"spans": [], "traces": [], "metrics": [], "logs": []}
        self._decide(self.sampler.flush_all(self.now), rows, final=True)
        return self._output(rows, final=True)

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

    def _decide(self, d, rows, final: bool) -> None:
        if d.spans.num_rows:
            rows["spans"].append(d.spans)
            if self.red is not None:
                self.red.add_exemplars(d.spans)
        if d.traces.num_rows:
            rows["traces"].append(d.traces)
            for t, a in zip(d.traces.column("trace_id").to_pylist(), d.traces.column("adjusted_count").to_pylist()):
                self._kept[t] = a
            if len(self._kept) > 200_000:  # bounded: keep the newest half
                for t in list(self._kept)[: len(self._kept) // 2]:
                    del self._kept[t]
        if self.red is not None:
            m = self.red.flush_all() if final else self.red.flush(self.now - int(self.step.red.allowed_lateness.total_seconds() * 1000))
            if m.num_rows:
                rows["metrics"].append(m)
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
            dropped = np.array([(i in not_sampled) and not k for i, k in zip(ids, kept)])
            expired = final or self.now - arrived >= self.log_wait_ms
            unknown = ~kept & ~waiting & ~dropped
            if kept.any():
                sub = t.filter(pa.array(kept))
                rows["logs"].append(sub.append_column("sample_rate", pa.array(
                    [1.0 / self._kept[i] if self._kept[i] else 1.0 for i in sub.column("trace_id").to_pylist()], pa.float64())))
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
        for name, parts in rows.items():
            if parts:
                tdef = table_def(name)
                out[name] = pa.concat_tables([conform(t, tdef) for t in parts]) if len(parts) > 1 else conform(parts[0], tdef)
        return StageOutput(stage=TRACE, shard=self.shard, rows=out, positions=self.positions(final), shards=self.step.shards)

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
                 "log_counts": (self.logs.kept_lines, self.logs.dropped_lines) if self.logs else None}
        return zlib.compress(pickle.dumps(state, protocol=5), 1)

    @classmethod
    def restore(cls, step, log_config, shard: int, data: bytes) -> "TraceStage":
        st = pickle.loads(zlib.decompress(data))
        self = cls(step, log_config, shard)
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
        return self
