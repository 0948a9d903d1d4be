"""Process-local run counters, read by the progress display, the run summary and the
Prometheus endpoint (``runners/metrics.py``).

A :class:`RunStats` is handed down: the runners (the top of the job) give the process's
:data:`STATS` to the sinks and sources they build (``counters=``), so a test or an embedding
program can give a sink or a source counters of its own. Pickled (Beam and Bytewax ship
sources and sinks to their workers), :data:`STATS` stays a reference: each process records
into its own; any other :class:`RunStats` travels with its values.

Engines that run their operators in the driver process (Bytewax ``run_main``, Beam's
in-process DirectRunner) update these directly; distributed runs report through the
engine's own metrics and the tables themselves.

Who records what:
- the runners' process step: :meth:`RunStats.add_output` per :class:`FlowOutput`
  (records in / accepted / dead-lettered / dropped, per source; dead letters and, where a
  flow names one, dropped records by reason: ``duplicate`` from the event dedupe);
- the Iceberg sink, as each commit lands: :meth:`RunStats.record_commit` (rows per
  table, commit latency and size);
- the Kafka partition readers: :meth:`RunStats.set_partition` (position read and high
  watermark → consumer lag);
- the Kafka producer sink: :meth:`RunStats.record_produced` / :meth:`record_delivery_failure`;
- the stage hosts (Bytewax ``StageLogic``, Beam ``StageDoFn``): :meth:`RunStats.record_stage`
  per stage output (the trace stage's tail sampling counts: dropped spans and traces by
  reason, early decisions by reason — ``num_traces_overflow`` included)."""

from __future__ import annotations

import bisect
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

#: commit latency buckets, seconds
COMMIT_SECONDS_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
#: commit size buckets, rows
COMMIT_ROWS_BUCKETS = (0, 10, 100, 1_000, 5_000, 10_000, 50_000, 100_000, 200_000, 500_000, 1_000_000)


@dataclass
class Histogram:
    """Cumulative-bucket histogram in the Prometheus sense (``le`` upper bounds)."""

    bounds: tuple
    counts: list = field(default_factory=list)  # per bound, non-cumulative; last = +Inf
    total: float = 0.0
    n: int = 0

    def __post_init__(self):
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, v: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, v)] += 1
        self.total += v
        self.n += 1

    def buckets(self) -> list[tuple[str, int]]:
        """``[(le, cumulative count)]`` ending with ``+Inf``."""
        out, acc = [], 0
        for b, c in zip([*map(str, self.bounds), "+Inf"], self.counts):
            acc += c
            out.append((b, acc))
        return out


@dataclass
class PartitionProgress:
    topic: str
    partition: int
    position: int  # next offset the job reads (everything below was handed to the pipeline)
    high: int  # the partition's high watermark as last seen
    updated: float  # time.time() of the update

    @property
    def lag(self) -> int:
        return max(0, self.high - self.position)


@dataclass
class RunStats:
    records_in: int = 0
    records_accepted: int = 0
    records_dead: int = 0
    records_dropped: int = 0
    # items of the sources accepted per item (OTLP: spans, log records, data points);
    # a message rejected whole counts as one item
    items_in: int = 0
    items_accepted: int = 0
    items_dead: int = 0
    items_dropped: int = 0
    dead_rows: int = 0  # dead-letter rows the flows wrote (per record, or per item)
    dead_by_reason: Counter = field(default_factory=Counter)
    rows_by_table: Counter = field(default_factory=Counter)
    commits: int = 0
    commit_seconds: float = 0.0
    # per source: Counter of "in", "accepted", "dead", "dropped" keyed by (source, what); for a
    # source accepted per item also "items_in", "items_accepted", "items_dead", "items_dropped"
    by_source: Counter = field(default_factory=Counter)
    dead_by_source_reason: Counter = field(default_factory=Counter)  # (source, reason)
    # records_dropped by reason where a flow names one: (source, reason) -> n; "duplicate": a
    # product event envelope whose event_id its partition already carried (transforms.dedupe)
    dropped_by_source_reason: Counter = field(default_factory=Counter)
    commits_by_table: Counter = field(default_factory=Counter)
    commit_latency: dict = field(default_factory=dict)  # table -> Histogram (seconds)
    commit_size: dict = field(default_factory=dict)  # table -> Histogram (rows)
    commit_retries: Counter = field(default_factory=Counter)  # (table, cause) -> retried attempts
    partitions: dict = field(default_factory=dict)  # "topic:partition" -> PartitionProgress
    produced: Counter = field(default_factory=Counter)  # topic -> messages delivered
    delivery_failures: Counter = field(default_factory=Counter)  # topic -> messages not delivered
    # tail sampling, from the trace stage's outputs: (counter, reason) -> n, counter one of
    # dropped_spans, dropped_traces, early_decisions (reason: sampler.REASONS) or
    # traces (reason: sampled / not_sampled), late_spans_kept (reason "")
    tail_sampling: Counter = field(default_factory=Counter)
    # records isolated because a step raised on them (pipelines.isolate): where -> n, where
    # "flow:<source>" (also in dead_by_reason as internal_error), "stage:<stage>" (accepted
    # rows a stage dead-lettered), "stage:<stage>:input" / ":flush" (skipped, no record)
    internal_errors: Counter = field(default_factory=Counter)
    started: float = field(default_factory=time.time)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add_output(self, out) -> None:
        with self._lock:
            self.records_in += out.records_in
            self.records_accepted += out.records_accepted
            self.records_dead += out.records_dead
            self.records_dropped += out.records_dropped
            self.dead_rows += getattr(out, "dead_rows", out.records_dead)
            src = getattr(out, "source", "") or ""
            if getattr(out, "per_item", False):
                self.items_in += out.items_in
                self.items_accepted += out.items_accepted
                self.items_dead += out.items_dead
                self.items_dropped += out.items_dropped
                for what in ("in", "accepted", "dead", "dropped"):
                    self.by_source[(src, f"items_{what}")] += getattr(out, f"items_{what}")
            self.dead_by_reason.update(out.dead_by_reason)
            self.by_source[(src, "in")] += out.records_in
            self.by_source[(src, "accepted")] += out.records_accepted
            self.by_source[(src, "dead")] += out.records_dead
            self.by_source[(src, "dropped")] += out.records_dropped
            for reason, n in out.dead_by_reason.items():
                self.dead_by_source_reason[(src, reason)] += n
            for reason, n in getattr(out, "dropped_by_reason", {}).items():
                self.dropped_by_source_reason[(src, reason)] += n

    def record_commit(self, table: str, rows: int, seconds: float) -> None:
        """One Iceberg commit that landed (called by ``sinks.iceberg.IcebergSink``)."""
        with self._lock:
            self.commits += 1
            self.commit_seconds += seconds
            self.rows_by_table[table] += rows
            self.commits_by_table[table] += 1
            self.commit_latency.setdefault(table, Histogram(COMMIT_SECONDS_BUCKETS)).observe(seconds)
            self.commit_size.setdefault(table, Histogram(COMMIT_ROWS_BUCKETS)).observe(rows)

    def record_commit_retry(self, table: str, cause: str) -> None:
        """A commit attempt that failed and is retried: ``cause`` is ``conflict`` (another
        writer committed first) or ``outage`` (storage or catalog unreachable)."""
        with self._lock:
            self.commit_retries[(table, cause)] += 1

    def add_commits(self, sink_stats) -> None:
        """Kept for callers of the earlier API: commits are now recorded as they land
        (:meth:`record_commit`), so a sink's totals are not added a second time."""
        return None

    def set_partition(self, topic: str, partition: int, position: int, high: int | None) -> None:
        """A Kafka reader's progress: ``position`` read, ``high`` watermark (None: unknown yet)."""
        key = f"{topic}:{partition}"
        with self._lock:
            prev = self.partitions.get(key)
            if high is None or high < 0:
                high = prev.high if prev is not None else position
            self.partitions[key] = PartitionProgress(topic, partition, position, max(high, position), time.time())

    def record_produced(self, topic: str, n: int = 1) -> None:
        with self._lock:
            self.produced[topic] += n

    def record_delivery_failure(self, topic: str, n: int = 1) -> None:
        with self._lock:
            self.delivery_failures[topic] += n

    def record_stage(self, out) -> None:
        """Add a stage output's dead letters (records a stage dead-lettered after they were
        accepted: ``late_data`` metric samples and spans) to the dead letters by reason and
        by source (not to ``records_dead``, which counts records the flows rejected), and
        its ``counters`` (:class:`pipelines.stages.StageOutput`; only the trace stage's are
        recorded, see :func:`pipelines.stages._new_counts`)."""
        for t in getattr(out, "rows", {}).values():
            if t.num_rows and "reason" in t.column_names and "raw" in t.column_names:
                with self._lock:
                    for src, reason in zip(t.column("source").to_pylist(), t.column("reason").to_pylist()):
                        self.dead_by_reason[reason] += 1
                        self.dead_by_source_reason[(src, reason)] += 1
        c = getattr(out, "counters", None)
        if not c or getattr(out, "stage", None) != "trace":
            return
        with self._lock:
            for key in ("dropped_spans", "dropped_traces", "early_decisions"):
                for reason, n in c.get(key, {}).items():
                    self.tail_sampling[(key, reason)] += n
            for key, reason in (("sampled_traces", "sampled"), ("not_sampled_traces", "not_sampled")):
                if c.get(key):
                    self.tail_sampling[("traces", reason)] += c[key]
            if c.get("late_spans_kept"):
                self.tail_sampling[("late_spans_kept", "")] += c["late_spans_kept"]

    def record_internal_errors(self, where: str, n: int) -> None:
        """``n`` records (or inputs) isolated at ``where`` because a step raised on them."""
        with self._lock:
            self.internal_errors[where] += n

    def snapshot(self) -> dict:
        """A consistent copy of everything, for the metrics endpoint."""
        import copy

        with self._lock:
            return {k: copy.deepcopy(v) for k, v in self.__dict__.items() if k != "_lock"}

    def __reduce__(self) -> str | tuple:
        """Pickle :data:`STATS` by name (it unpickles as the receiving process's own), any
        other instance by value (a fresh lock on the other side)."""
        if self is STATS:
            return "STATS"
        return _restore, (self.snapshot(),)

    def reset(self) -> None:
        with self._lock:
            self.records_in = self.records_accepted = self.records_dead = self.records_dropped = 0
            self.items_in = self.items_accepted = self.items_dead = self.items_dropped = self.dead_rows = 0
            self.commits = 0
            self.commit_seconds = 0.0
            for c in (
                self.dead_by_reason,
                self.rows_by_table,
                self.by_source,
                self.dead_by_source_reason,
                self.dropped_by_source_reason,
                self.commits_by_table,
                self.commit_latency,
                self.commit_size,
                self.commit_retries,
                self.partitions,
                self.produced,
                self.delivery_failures,
                self.tail_sampling,
                self.internal_errors,
            ):
                c.clear()
            self.started = time.time()


def _restore(values: dict) -> RunStats:
    """A :class:`RunStats` holding ``values`` (:meth:`RunStats.snapshot`), for unpickling."""
    return RunStats(**values)


#: the process's counters: what the runners hand to the sinks and sources they build
STATS = RunStats()
