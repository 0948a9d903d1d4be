"""Kafka partition reader on confluent-kafka, engine-agnostic (Bytewax and Beam host it).

Same interface as the embedded source: :meth:`KafkaSource.partitions` lists the topic
partitions of the spec's sources (fixed topics and ``topic_pattern`` regexes, matched
against whole topic names), :meth:`KafkaSource.batches` yields :class:`RawBatch` items of
one partition from an explicit offset. Records carry topic, partition, offset, the
Kafka record timestamp (ms), key and headers; a tombstone (``None`` value) is handed to
the codec like any record (the codec dead-letters it).

Positions: each partition reader is a ``Consumer.assign`` at an explicit offset. The
offsets come from the Iceberg tables (:meth:`sinks.iceberg.IcebergSink.resume_offsets`);
a partition no table records starts at the source's ``starting_position`` (``earliest``:
the low watermark, ``latest``: the high watermark when the run starts). The consumer
group (``kafka.group_id``) is only told what was read, for lag reporting; it is never
read back.

Modes:

* bounded (``end`` given, see :meth:`KafkaSource.plan`): read ``[start, end)`` where
  ``end`` is the high watermark observed when the run starts — the DirectRunner, tests,
  ``obsflow run --bounded``;
* unbounded (``end=None``): poll until the run's ``deadline`` (epoch seconds) or
  ``max_records`` budget is reached, or forever.

Bad conditions:

* broker unreachable at start: metadata is retried ``kafka.connect_retries`` times with
  exponential backoff, then :class:`KafkaUnavailableError` (a ``ConnectionError``) says
  what to start;
* a missing topic (or a pattern matching none): :class:`MissingTopicError` names it and
  says how to create it;
* a broker restart mid-run: librdkafka reconnects and fetches on from the position it
  had; transport errors are logged, not raised, so nothing is lost or skipped.
"""

from __future__ import annotations

import itertools
import logging
import re
import threading
import time
from dataclasses import dataclass
from collections.abc import Iterator
from typing import cast

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from core.batch import RawBatch
from core.errors import ConfigurationError, ServiceUnavailable
from core.stats import RunStats
from pipelines.spec import KafkaSpec, PipelineSpec, SourceSpec

log = logging.getLogger(__name__)

#: librdkafka's own log lines go here (quiet unless OBSFLOW_LOG=DEBUG is configured)
client_log = logging.getLogger("obsflow.kafka.client")
client_log.propagate = False
client_log.addHandler(logging.NullHandler())

_INTERNAL = re.compile(r"^(__|_confluent)")

# the message accessors, unbound: ``map(_VALUE, msgs)`` reads a batch's field without a
# Python frame per message (a list comprehension or generator costs one each)
_ERROR, _VALUE, _OFFSET, _TIMESTAMP, _KEY, _HEADERS = (
    Message.error,
    Message.value,
    Message.offset,
    Message.timestamp,
    Message.key,
    Message.headers,
)


class KafkaUnavailableError(ServiceUnavailable, ConnectionError):
    """The broker did not answer at start, after the configured retries."""


class MissingTopicError(ConfigurationError, LookupError):
    """A topic the spec names does not exist (or a pattern matches no topic)."""


@dataclass(frozen=True)
class KafkaPartition:
    """One topic partition of one spec source."""

    source: str
    signal: str
    topic: str
    partition: int
    topic_partitions: int = 0  # how many partitions the topic has (for event-time watermarks)

    @property
    def key(self) -> str:
        return f"{self.topic}:{self.partition}"


@dataclass(frozen=True)
class PartitionRange:
    """What to read of one partition: ``[start, end)``, ``end=None`` for unbounded;
    ``high``: the high watermark when the run was planned (None: not known)."""

    part: KafkaPartition
    start: int
    end: int | None
    high: int | None = None

    @property
    def backlog(self) -> bool:
        """Whether the partition had records to read when the run was planned (True when
        not known). The stages' event time waits for such a partition before it moves;
        one without (an empty or caught-up partition) joins when it delivers."""
        stop = self.end if self.end is not None else self.high
        return stop is None or self.start < stop


# -- run-wide record budget (``max_records``), shared by the readers of one process ----------

_BUDGETS: dict[int, list] = {}
_BUDGET_IDS = itertools.count(1)
_BUDGET_LOCK = threading.Lock()


def _take(budget_id: int | None, n: int) -> bool:
    """Count ``n`` records against the budget; False once it is used up."""
    if budget_id is None:
        return True
    with _BUDGET_LOCK:
        b = _BUDGETS.get(budget_id)
        if b is None:
            return True
        b[0] -= n
        return b[0] > 0


def _budget_left(budget_id: int | None) -> bool:
    if budget_id is None:
        return True
    with _BUDGET_LOCK:
        b = _BUDGETS.get(budget_id)
        return b is None or b[0] > 0


class KafkaSource:
    """The Kafka topics of a spec's sources (all of them, or ``sources``).

    ``deadline`` (epoch seconds) and ``max_records`` (records over all partitions of
    this process) end unbounded reads; bounded reads end at their range's end too.
    Picklable: consumers are created by the readers, where they run."""

    def __init__(
        self,
        spec: PipelineSpec,
        sources: list[SourceSpec] | None = None,
        *,
        counters: RunStats,
        deadline: float | None = None,
        max_records: int | None = None,
        batch_size: int | None = None,
    ):
        self.spec = spec
        self.counters = counters  # the readers' positions and high watermarks (consumer lag)
        self.kspec: KafkaSpec = spec.kafka
        self.sources = list(sources if sources is not None else spec.sources)
        self.bootstrap = self.kspec.bootstrap
        self.deadline = deadline
        self.batch_size = batch_size or self.kspec.poll_batch_size
        self.budget_id = None
        if max_records is not None:
            with _BUDGET_LOCK:
                self.budget_id = next(_BUDGET_IDS)
                _BUDGETS[self.budget_id] = [max_records]
        self._parts: list[KafkaPartition] | None = None

    # -- configuration ---------------------------------------------------------------------

    def consumer_config(self, **extra) -> dict:
        conf = {
            "bootstrap.servers": self.bootstrap,
            "group.id": self.kspec.group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",  # a recorded position below the low watermark (retention) restarts there
            "allow.auto.create.topics": False,
            "logger": client_log,
            "error_cb": _error_cb,
            "client.id": f"obsflow-{self.spec.name}",
        }
        conf.update(self.kspec.config)
        conf.update(extra)
        return conf

    # -- discovery ---------------------------------------------------------------------------

    def _metadata(self):
        """Cluster metadata, retried with backoff while the broker does not answer."""
        from confluent_kafka.admin import AdminClient

        k = self.kspec
        admin = AdminClient(
            {
                "bootstrap.servers": self.bootstrap,
                "logger": client_log,
                **{key: v for key, v in k.config.items() if key.startswith(("security.", "sasl.", "ssl."))},
            }
        )
        attempts = k.connect_retries + 1
        delay = k.connect_backoff.total_seconds()
        started = time.monotonic()
        err: object = None
        for attempt in range(1, attempts + 1):
            try:
                md = admin.list_topics(timeout=k.connect_timeout.total_seconds())
                if md.brokers:
                    return md
                err = "no brokers in the metadata answer"
            except KafkaException as e:
                err = e.args[0].str() if e.args and isinstance(e.args[0], KafkaError) else e
            if attempt < attempts:
                log.warning(
                    "Kafka at %s did not answer (%s); attempt %d of %d, retrying in %.1fs",
                    self.bootstrap,
                    err,
                    attempt,
                    attempts,
                    delay,
                )
                time.sleep(delay)
                delay = min(delay * 2, k.connect_backoff_max.total_seconds())
        raise KafkaUnavailableError(
            f"Kafka is not reachable at {self.bootstrap} ({err}; {attempts} attempt{'s' if attempts > 1 else ''} "
            f"over {time.monotonic() - started:.0f}s). Start a local broker with `python -m infra.kafka start` "
            f"(it prints its bootstrap address), or point kafka.bootstrap_servers in the spec "
            f"(or $OBSFLOW_KAFKA_BOOTSTRAP) at a running one."
        )

    def partitions(self) -> list[KafkaPartition]:
        """Every partition of every source topic, discovered from the cluster metadata."""
        if self._parts is not None:
            return self._parts
        md = self._metadata()
        existing = {name: t for name, t in md.topics.items() if t.error is None}
        out: list[KafkaPartition] = []
        for i, src in enumerate(self.sources):
            if src.topic is not None:
                if src.topic not in existing:
                    raise MissingTopicError(
                        f"Kafka topic {src.topic!r} (sources[{i}] {src.name!r}) does not exist on {self.bootstrap}. "
                        f"Create it with `obsflow topics create`, or e.g. `kafka-topics.sh --bootstrap-server {self.bootstrap} --create --topic {src.topic} "
                        f"--partitions 4`, or from Python `infra.kafka.KafkaEndpoint({self.bootstrap!r}).create_topic("
                        f"{src.topic!r}, partitions=4)`; or set sources[{i}].topic to an existing topic."
                    )
                topics = [src.topic]
            else:
                rx = re.compile(cast(str, src.topic_pattern))  # a source has a topic or a pattern
                topics = sorted(t for t in existing if rx.fullmatch(t) and not _INTERNAL.match(t))
                if not topics:
                    shown = ", ".join(sorted(t for t in existing if not _INTERNAL.match(t))[:20]) or "none"
                    raise MissingTopicError(
                        f"no Kafka topic on {self.bootstrap} matches sources[{i}].topic_pattern {src.topic_pattern!r} "
                        f"(source {src.name!r}; the pattern must match a whole name; topics there: {shown}). "
                        f"Create one (`kafka-topics.sh --create --topic ...`) or fix the pattern."
                    )
            for t in topics:
                for p in sorted(existing[t].partitions):
                    out.append(KafkaPartition(src.name, src.signal, t, p, len(existing[t].partitions)))
        self._parts = out
        return out

    def tables_by_topic(self) -> dict[str, list[str]]:
        """Tables each discovered topic feeds (its flow's sink table and the dead letters)."""
        sink_of = {f.source: f.sink.table for f in self.spec.flows}
        out: dict[str, list[str]] = {}
        for part in self.partitions():
            tables = out.setdefault(part.topic, [])
            for t in (sink_of.get(part.source), self.spec.dead_letters.table):
                if t and t not in tables:
                    tables.append(t)
        return out

    def watermarks(self) -> dict[str, tuple[int, int]]:
        """``{"topic:partition": (low, high)}`` for every partition, read now."""
        c = Consumer(self.consumer_config())
        try:
            return {part.key: self._watermark(c, part) for part in self.partitions()}
        finally:
            c.close()

    def _watermark(self, c: Consumer, part: KafkaPartition) -> tuple[int, int]:
        """One partition's (low, high), retried like the metadata (a broker may be restarting)."""
        k = self.kspec
        delay = k.connect_backoff.total_seconds()
        for attempt in range(k.connect_retries + 1):
            try:
                return c.get_watermark_offsets(
                    TopicPartition(part.topic, part.partition),
                    timeout=k.connect_timeout.total_seconds() * 2,
                    cached=False,
                )
            except KafkaException as e:
                if attempt == k.connect_retries:
                    raise KafkaUnavailableError(
                        f"Kafka at {self.bootstrap} did not give the offsets of {part.key} ({e}); is the broker up? "
                        f"(`python -m infra.kafka start`, or kafka.bootstrap_servers)"
                    ) from None
                log.warning("offsets of %s not available (%s); retrying in %.1fs", part.key, e, delay)
                time.sleep(delay)
                delay = min(delay * 2, k.connect_backoff_max.total_seconds())
        raise AssertionError("unreachable")

    def plan(self, resume: dict[str, int], bounded: bool) -> list[PartitionRange]:
        """Where each partition starts (``resume``, else the source's starting position)
        and, when ``bounded``, where it ends (the high watermark now)."""
        marks = self.watermarks()
        by_name = {s.name: s for s in self.sources}
        out = []
        for part in self.partitions():
            low, high = marks[part.key]
            if part.key in resume:
                start = resume[part.key]
            else:
                start = low if by_name[part.source].starting_position == "earliest" else high
            out.append(PartitionRange(part, start, high if bounded else None, high))
        return out

    # -- reading ----------------------------------------------------------------------------

    def reader(self, rng: PartitionRange) -> PartitionReader:
        return PartitionReader(self, rng)

    def batches(
        self, part: KafkaPartition, start_offset: int, bounded: bool = True, end_offset: int | None = None
    ) -> Iterator[RawBatch]:
        """Raw batches of ``part`` from ``start_offset``. ``bounded``: up to ``end_offset``
        or, if not given, the high watermark now; otherwise until the deadline/budget."""
        if bounded and end_offset is None:
            c = Consumer(self.consumer_config())
            try:
                end_offset = self._watermark(c, part)[1]
            finally:
                c.close()
        yield from self.range_batches(PartitionRange(part, start_offset, end_offset if bounded else None))

    def range_batches(self, rng: PartitionRange, reader: PartitionReader | None = None) -> Iterator[RawBatch]:
        """Raw batches of one partition range, read by ``reader`` (default: :meth:`reader`)
        until it is done; the reader is closed when the iteration ends or is abandoned."""
        reader = reader if reader is not None else self.reader(rng)
        try:
            while not reader.done:
                b = reader.poll(self.kspec.poll_timeout.total_seconds())
                if b is not None:
                    yield b
        finally:
            reader.close()


_last_error_log: dict[int, float] = {}


def _error_cb(err: KafkaError) -> None:
    """librdkafka client-level errors: broker down/up is normal during a restart; fatal ones are logged loudly."""
    now = time.monotonic()
    if err.fatal():
        log.error("Kafka client fatal error: %s", err.str())
        return
    if now - _last_error_log.get(err.code(), 0) > 30:
        _last_error_log[err.code()] = now
        log.warning("Kafka: %s (the client keeps retrying)", err.str())


class PartitionReader:
    """Reads one partition range with its own assigned consumer; :meth:`poll` returns a
    :class:`RawBatch` of up to ``batch_size`` records (or ``None``), :attr:`done` tells
    when the range (or the run's deadline / budget) is finished."""

    GROUP_COMMIT_EVERY_S = 5.0

    def __init__(self, source: KafkaSource, rng: PartitionRange):
        self.source = source
        self.part = rng.part
        self.start = rng.start
        self.end = rng.end
        self.position = rng.start  # next offset to hand out
        self.done = self.end is not None and self.start >= self.end
        self._consumer: Consumer | None = None
        self._buf: list = []
        self._buf_since = 0.0
        self._last_group_commit = time.monotonic()
        self._committed_group = -1

    def _open(self) -> Consumer:
        c = Consumer(self.source.consumer_config())
        c.assign([TopicPartition(self.part.topic, self.part.partition, self.position)])
        self._consumer = c
        return c

    def _expired(self) -> bool:
        dl = self.source.deadline
        return (dl is not None and time.time() >= dl) or not _budget_left(self.source.budget_id)

    def poll(self, timeout: float = 0.0) -> RawBatch | None:
        """Fetch what is available (waiting up to ``timeout`` seconds for a full batch)
        and return a batch when it is full, old enough (``kafka.poll_timeout``) or the
        range ends; ``None`` otherwise."""
        if self.done:
            return None
        if self.end is None and self._expired():
            self.done = True
            return self._flush()
        c = self._consumer or self._open()
        want = self.source.batch_size - len(self._buf)
        msgs = c.consume(num_messages=want, timeout=timeout) if want > 0 else []
        eof = False
        if msgs and not self._buf:
            self._buf_since = time.monotonic()
        if msgs and not any(map(_ERROR, msgs)) and (self.end is None or cast(int, msgs[-1].offset()) < self.end):
            self._buf.extend(msgs)  # the common case: all records, none at or past the range's end
            msgs = []
        for m in msgs:
            err = m.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    eof = True
                    continue
                if err.fatal():
                    raise KafkaException(err)
                log.warning("Kafka %s: %s (continuing)", self.part.key, err.str())
                continue
            off = cast(int, m.offset())  # a record (not an error) has an offset
            if self.end is not None and off >= self.end:
                self.done = True
                break
            self._buf.append(m)
        if self.end is not None and (eof or (self._buf and self._buf[-1].offset() + 1 >= self.end)):
            self.done = True
        self._report_progress(c)
        if self._buf and (
            self.done
            or len(self._buf) >= self.source.batch_size
            or time.monotonic() - self._buf_since >= self.source.kspec.poll_timeout.total_seconds()
        ):
            return self._flush()
        self._maybe_commit_group()
        return None

    def _flush(self) -> RawBatch | None:
        if not self._buf:
            return None
        msgs, self._buf = self._buf, []
        now_ms = int(time.time() * 1000)
        values = list(map(_VALUE, msgs))
        offsets = cast("list[int]", list(map(_OFFSET, msgs)))  # records (not errors) have offsets
        stamps = [ts if ts_type != 0 and ts >= 0 else now_ms for ts_type, ts in map(_TIMESTAMP, msgs)]
        keys = list(map(_KEY, msgs))
        headers: list = list(map(_HEADERS, msgs))
        self.position = offsets[-1] + 1
        high = self._report_progress(self._consumer, force=True) if self._consumer is not None else None
        if not _take(self.source.budget_id, len(values)) and self.end is None:
            self.done = True
        self._maybe_commit_group()
        p = self.part
        return RawBatch(
            p.source,
            p.topic,
            p.partition,
            values,
            offsets,
            stamps,
            keys,
            headers,
            p.topic_partitions or None,
            lag=self._lag(high),
        )

    def _lag(self, high: int | None) -> int:
        """Records between this reader's position and ``high`` (-1: not known). The
        position is librdkafka's when it is further: it steps over transaction markers,
        which hold offsets but are never delivered."""
        if high is None or high < 0:
            return -1
        pos = self.position
        if self._consumer is not None:
            try:
                at = self._consumer.position([TopicPartition(self.part.topic, self.part.partition)])[0].offset
                pos = max(pos, at)
            except KafkaException:
                pass
        return max(0, high - pos)

    PROGRESS_EVERY_S = 0.5

    def _report_progress(self, c: Consumer, force: bool = False) -> int | None:
        """Position and high watermark (librdkafka's cached value from its fetches) for the
        consumer-lag metric (the source's ``counters.partitions``); returns the high
        watermark when it was read now (``force``, or the report was due), else None."""
        now = time.monotonic()
        if not force and now - getattr(self, "_progress_at", 0.0) < self.PROGRESS_EVERY_S:
            return None
        self._progress_at = now
        try:
            high = c.get_watermark_offsets(TopicPartition(self.part.topic, self.part.partition), cached=True)[1]
        except KafkaException:
            high = None
        self.source.counters.set_partition(self.part.topic, self.part.partition, self.position, high)
        return high

    def _maybe_commit_group(self, force: bool = False) -> None:
        """Tell the consumer group what was read (lag reporting only; never read back)."""
        if not self.source.kspec.commit_group_offsets or self._consumer is None:
            return
        if self.position == self._committed_group:
            return
        if not force and time.monotonic() - self._last_group_commit < self.GROUP_COMMIT_EVERY_S:
            return
        self._last_group_commit = time.monotonic()
        try:
            self._consumer.commit(
                offsets=[TopicPartition(self.part.topic, self.part.partition, self.position)], asynchronous=True
            )
            self._committed_group = self.position
        except KafkaException as e:  # lag reporting is best effort
            log.debug("group commit for %s failed: %s", self.part.key, e)

    def close(self) -> None:
        if self._consumer is not None:
            self._maybe_commit_group(force=True)
            try:
                self._consumer.close()
            finally:
                self._consumer = None
