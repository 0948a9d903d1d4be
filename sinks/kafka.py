"""Kafka outputs: alert events and (when the spec asks) dead letters, through an
idempotent producer (``enable.idempotence=true``, ``acks=all``) keyed for ordering.

- Alerts (``outputs.alerts_topic``, default ``alerts``): one message per
  :class:`transforms.alerting.events.AlertEvent`, key = the alert's fingerprint, so every
  state change of one alert lands in one partition, in order. Value: the fields of
  ``schemas/avro/alert_event.avsc`` as JSON (``AlertEvent.to_kafka()``), or that schema
  in the Confluent Avro wire format with ``outputs.codec: avro``.
- Dead letters (``outputs.dead_letters_topic``, default none): one message per row of the
  ``dead_letters`` table, key = ``source_topic:source_partition`` (so a partition's
  rejects stay in offset order). Value: the fields of ``schemas/avro/dead_letter.avsc``
  as JSON with ``raw`` in base64 (``null`` for a tombstone) plus ``raw_truncated``; or
  Avro (a tombstone's ``raw`` is then empty bytes, ``raw_size`` 0). Header ``reason``.
  The Iceberg sink produces them as it buffers the table's rows (rows it already
  committed before a restart are not produced again) and waits for their delivery
  before each commit of positions: at-least-once relative to the table (a crash between
  delivery and commit re-sends those rows).

Delivery: librdkafka retries each message for ``outputs.delivery_timeout``
(``message.timeout.ms``). A message still undelivered after that is a delivery failure:
counted (the ``counters`` the sink was given, in a job ``core.stats.STATS.delivery_failures`` →
``obsflow_kafka_delivery_failures_total``), logged, and raised as :class:`DeliveryError`
by the next :meth:`KafkaProducerSink.check` / :meth:`flush` — never dropped silently.
:meth:`KafkaProducerSink.flush` (at each Iceberg commit and on close) waits at most
``outputs.flush_timeout`` and raises :class:`DeliveryError` saying how many messages
were still in flight. Nothing here imports an engine."""

from __future__ import annotations

import base64
import json
import logging
import threading
from collections import Counter
from collections.abc import Iterable

from confluent_kafka import KafkaError, Producer

from core.errors import ServiceUnavailable
from core.stats import RunStats
from pipelines.spec import KafkaSpec, OutputsSpec, PipelineSpec

log = logging.getLogger(__name__)
client_log = logging.getLogger("obsflow.kafka.client")

#: the reasons the Avro dead-letter schema (schemas/avro/dead_letter_v2.avsc) can carry
DEAD_LETTER_REASONS = (
    "format_violation",
    "schema_violation",
    "size_violation",
    "timestamp_out_of_range",
    "enrichment_failure",
    "late_data",
    "internal_error",
)


class DeliveryError(ServiceUnavailable, RuntimeError):
    """Messages that librdkafka could not deliver after its retries (or a flush that timed
    out). ``failures`` holds ``(topic, key, error string)`` of the first few."""

    what = "Kafka output failed: "

    def __init__(self, message: str, failures: list | None = None):
        super().__init__(message)
        self.failures = failures or []


def producer_config(kspec: KafkaSpec, outputs: OutputsSpec, name: str = "obsflow") -> dict:
    conf = {
        "bootstrap.servers": kspec.bootstrap,
        "enable.idempotence": True,  # no duplicates or reordering from librdkafka's own retries
        "acks": "all",
        "max.in.flight.requests.per.connection": 5,
        "linger.ms": 20,
        "compression.type": "lz4",
        "message.timeout.ms": max(1, int(outputs.delivery_timeout.total_seconds() * 1000)),
        "client.id": f"obsflow-{name}-producer",
        "logger": client_log,
    }
    conf.update({k: v for k, v in kspec.config.items() if k.startswith(("security.", "sasl.", "ssl."))})
    conf.update(outputs.producer)
    return conf


class KafkaProducerSink:
    """One idempotent producer; :meth:`produce` is asynchronous, failures surface in
    :meth:`check` / :meth:`flush` as :class:`DeliveryError`."""

    def __init__(self, kspec: KafkaSpec, outputs: OutputsSpec, name: str = "obsflow", *, counters: RunStats):
        self.kspec, self.outputs = kspec, outputs
        self.counters = counters  # messages delivered and not delivered, per topic
        self.bootstrap = kspec.bootstrap
        self.flush_timeout = outputs.flush_timeout.total_seconds()
        conf = producer_config(kspec, outputs, name)
        conf["error_cb"] = self._on_error
        self.producer = Producer(conf)
        self.produced: Counter = Counter()  # delivered, per topic
        self.failed: Counter = Counter()  # not delivered, per topic
        self._failures: list[tuple[str, str | None, str]] = []
        self._fatal: str | None = None
        self._lock = threading.Lock()

    @classmethod
    def for_spec(cls, spec: PipelineSpec, counters: RunStats) -> KafkaProducerSink:
        return cls(spec.kafka, spec.outputs, spec.name, counters=counters)

    # -- callbacks (run inside poll/flush) ---------------------------------------------------

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():
            self._fatal = err.str()
            log.error("Kafka producer fatal error: %s", err.str())
        else:
            log.debug("Kafka producer: %s (the client keeps retrying)", err.str())

    def _on_delivery(self, err, msg) -> None:
        topic = msg.topic()
        if err is None:
            self.produced[topic] += 1
            self.counters.record_produced(topic)
            return
        self.failed[topic] += 1
        self.counters.record_delivery_failure(topic)
        key = msg.key().decode(errors="replace") if msg.key() is not None else None
        with self._lock:
            if len(self._failures) < 20:
                self._failures.append((topic, key, self._explain(err, topic)))
        if self.failed[topic] == 1:
            log.error("Kafka delivery to %s failed after retries: %s", topic, self._explain(err, topic))

    def _explain(self, err: KafkaError, topic: str) -> str:
        code = err.code()
        if code in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC, KafkaError._UNKNOWN_PARTITION):
            return (
                f"topic {topic!r} does not exist on {self.bootstrap} (and the broker does not create topics): "
                f"create it with `obsflow topics create`, or e.g. `kafka-topics.sh --bootstrap-server {self.bootstrap} "
                f"--create --topic {topic}` ({err.str()})"
            )
        if code == KafkaError._MSG_TIMED_OUT:
            return (
                f"not delivered within outputs.delivery_timeout "
                f"({self.outputs.delivery_timeout.total_seconds():g}s; is the broker at {self.bootstrap} up and "
                f"does {topic!r} exist?) ({err.str()})"
            )
        return f"topic {topic!r}: {err.str()}"

    # -- producing -------------------------------------------------------------------------

    def produce(self, topic: str, value: bytes | None, key: bytes | None = None, headers: list | None = None) -> None:
        if self._fatal:
            raise DeliveryError(f"the Kafka producer hit a fatal error: {self._fatal}")
        while True:
            try:
                self.producer.produce(topic, value=value, key=key, headers=headers, on_delivery=self._on_delivery)
                break
            except BufferError:  # local queue full: let deliveries drain
                self.producer.poll(0.1)
        self.producer.poll(0)

    def check(self) -> None:
        """Serve delivery reports; raise :class:`DeliveryError` if any message failed."""
        self.producer.poll(0)
        self._raise_failures()

    def _raise_failures(self) -> None:
        if self._fatal:
            raise DeliveryError(f"the Kafka producer hit a fatal error: {self._fatal}")
        with self._lock:
            failures, self._failures = self._failures, []
        if failures:
            n = sum(self.failed.values())
            topics = sorted({t for t, _, _ in failures})
            raise DeliveryError(
                f"{n} Kafka message(s) to {', '.join(topics)} were not delivered: {failures[0][2]}", failures
            )

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every produced message is delivered or failed; raise
        :class:`DeliveryError` on failures or when ``timeout`` (default
        ``outputs.flush_timeout``) passes with messages still in flight."""
        timeout = self.flush_timeout if timeout is None else timeout
        remaining = self.producer.flush(timeout)
        self._raise_failures()
        if remaining:
            raise DeliveryError(
                f"{remaining} Kafka message(s) still not delivered after waiting {timeout:g}s "
                f"(outputs.flush_timeout) for {self.bootstrap}: is the broker up?"
            )

    def close(self, timeout: float | None = None) -> None:
        self.flush(timeout)

    # -- typed outputs -----------------------------------------------------------------------

    def publish_alerts(self, events: Iterable, topic: str | None = None) -> int:
        topic = topic or self.outputs.alerts_topic
        if not topic:
            return 0
        n = 0
        for e in events:
            key, value = alert_message(e, self.outputs.codec)
            self.produce(topic, value, key=key)
            n += 1
        return n

    def publish_dead_letters(self, rows, topic: str | None = None) -> int:
        """One message per row of a ``dead_letters`` Arrow table."""
        topic = topic or self.outputs.dead_letters_topic
        if not topic or rows is None or rows.num_rows == 0:
            return 0
        for key, value, reason in dead_letter_messages(rows, self.outputs.codec):
            self.produce(topic, value, key=key, headers=[("reason", reason.encode())])
        return rows.num_rows


# -- wire shapes ---------------------------------------------------------------------------


def alert_record(event) -> dict:
    """An alert as a dict of ``alert_event.avsc`` fields (from an AlertEvent or a dict)."""
    if hasattr(event, "to_kafka"):
        return json.loads(event.to_kafka())
    return dict(event)


def alert_message(event, codec: str = "json") -> tuple[bytes, bytes]:
    """``(key, value)`` of one alert: key = its fingerprint."""
    rec = alert_record(event)
    key = str(rec["fingerprint"]).encode()
    if codec == "avro":
        from schemas.codecs.avro_codec import encode_confluent

        return key, encode_confluent("alert_event", rec)
    if hasattr(event, "to_kafka"):
        return key, event.to_kafka()
    return key, json.dumps(rec, sort_keys=True, separators=(",", ":")).encode()


def dead_letter_messages(rows, codec: str = "json"):
    """``(key, value, reason)`` per row of a ``dead_letters`` table; key = ``topic:partition``."""
    import pyarrow as pa

    ms = rows.column("received_at").cast(pa.timestamp("ms", tz="UTC")).cast(pa.int64()).to_pylist()
    cols = {
        c: rows.column(c).to_pylist()
        for c in (
            "reason",
            "detail",
            "source",
            "source_topic",
            "source_partition",
            "source_offset",
            "raw",
            "raw_size",
            "raw_truncated",
        )
    }
    items = rows.column("item_index").to_pylist() if "item_index" in rows.column_names else None
    if codec == "avro":
        from schemas.codecs.avro_codec import encode_confluent
    for i in range(rows.num_rows):
        topic, part, reason = cols["source_topic"][i], cols["source_partition"][i], cols["reason"][i]
        raw = cols["raw"][i]
        rec = {
            "received_at": ms[i],
            "reason": reason,
            "detail": cols["detail"][i] or "",
            "source": cols["source"][i],
            "source_topic": topic,
            "source_partition": part,
            "source_offset": cols["source_offset"][i],
            "raw_size": cols["raw_size"][i],
        }
        if codec == "avro":
            if reason not in DEAD_LETTER_REASONS:
                raise ValueError(
                    f"dead-letter reason {reason!r} is not in schemas/avro/dead_letter_v2.avsc (add it, with a new schema id)"
                )
            value = encode_confluent(
                "dead_letter",
                {
                    **rec,
                    "raw": raw,
                    "raw_truncated": bool(cols["raw_truncated"][i]),
                    "item_index": items[i] if items is not None else None,
                },
            )
        else:
            rec["raw"] = base64.b64encode(raw).decode() if raw is not None else None
            rec["raw_truncated"] = bool(cols["raw_truncated"][i])
            if items is not None and items[i] is not None:
                rec["item_index"] = items[i]  # one item of an OTLP message
            value = json.dumps(rec, separators=(",", ":")).encode()
        yield f"{topic}:{part}".encode(), value, reason


# -- the process-wide producer the alerting stage uses -------------------------------------

_DEFAULT: dict[str, KafkaProducerSink] = {}
_DEFAULT_LOCK = threading.Lock()
_CONFIGURED: list[PipelineSpec] = []


def configure(spec: PipelineSpec) -> None:
    """Set the spec whose ``kafka:`` / ``outputs:`` :func:`publish_alerts` uses by default."""
    _CONFIGURED[:] = [spec]


def producer_for(spec: PipelineSpec, counters: RunStats) -> KafkaProducerSink:
    """One shared producer per (brokers, outputs, counters) in this process, recording
    its deliveries into ``counters``."""
    key = json.dumps(
        [spec.kafka.bootstrap, spec.outputs.model_dump(mode="json"), spec.name, id(counters)],
        sort_keys=True,
        default=str,
    )
    with _DEFAULT_LOCK:
        p = _DEFAULT.get(key)
        if p is None:
            p = _DEFAULT[key] = KafkaProducerSink.for_spec(spec, counters)
        return p


def publish_alerts(
    events: Iterable,
    spec: PipelineSpec | None = None,
    *,
    producer: KafkaProducerSink | None = None,
    counters: RunStats | None = None,
    wait: bool = True,
) -> int:
    """Push alert events (objects with ``.to_kafka()`` and ``.fingerprint``, or dicts of
    ``alert_event.avsc`` fields) to ``outputs.alerts_topic``, keyed by fingerprint.

    The producer: ``producer``, else the shared one of ``spec`` (else of the spec given
    to :func:`configure`) recording into ``counters`` (required then). With ``wait`` (default), returns once every message is
    delivered, raising :class:`DeliveryError` if one could not be; otherwise delivery
    failures surface on the next call or flush. Returns how many were sent (0 when
    ``alerts_topic`` is null)."""
    events = list(events)
    if not events:
        return 0
    if producer is None:
        spec = spec or (_CONFIGURED[0] if _CONFIGURED else None)
        if spec is None:
            raise RuntimeError("publish_alerts needs a spec: pass spec=..., or call sinks.kafka.configure(spec) first")
        if not spec.outputs.alerts_topic:
            return 0
        if counters is None:
            raise TypeError(
                "publish_alerts needs producer=..., or counters=... (the run's RunStats) for the shared producer"
            )
        producer = producer_for(spec, counters)
    n = producer.publish_alerts(events)
    if wait:
        producer.flush()
    else:
        producer.check()
    return n


def flush_all(timeout: float | None = None) -> None:
    """Flush the shared producers (at the end of a run)."""
    with _DEFAULT_LOCK:
        producers = list(_DEFAULT.values())
    for p in producers:
        p.flush(timeout)
