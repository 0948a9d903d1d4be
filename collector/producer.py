"""The door's Kafka producer: one idempotent producer (acks=all) polled by a thread; a
request's records are produced together and :meth:`DoorProducer.send` resolves only
when Kafka acknowledged every one of them (or says which failed)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from core.errors import ServiceUnavailable

log = logging.getLogger("obsflow.collect")


class Unavailable(ServiceUnavailable):
    """Kafka cannot take the records now (broker down, local queue full, timed out): retry later."""


@dataclass
class Record:
    topic: str
    value: bytes
    key: bytes | None = None
    headers: list[tuple[str, bytes]] | None = None


@dataclass
class _Pending:
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future
    left: int
    failed: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class DoorProducer:
    """Produce a request's records and learn when all were acknowledged.

    Guarantees: :meth:`send` returns normally only after the delivery report of every
    record said "delivered" (acks=all); it raises :class:`Unavailable` when any record
    was not accepted into the local queue or failed delivery or the wait passed
    ``timeout`` seconds. ``ready`` is false until Kafka answered a metadata request and
    while it does not (checked every ``check_interval`` seconds)."""

    def __init__(self, bootstrap: str, extra: dict | None = None, message_timeout_s: float = 10.0,
                 check_interval_s: float = 1.0, name: str = "collect"):
        conf = {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "max.in.flight.requests.per.connection": 5,
            "linger.ms": 5,
            "compression.type": "lz4",
            "message.timeout.ms": max(1000, int(message_timeout_s * 1000)),
            "queue.buffering.max.kbytes": 262144,
            "client.id": f"obsflow-{name}",
            "error_cb": self._on_error,
            "logger": logging.getLogger("obsflow.collect.kafka"),
        }
        conf.update(extra or {})
        self.bootstrap = bootstrap
        self.producer = Producer(conf)
        self._admin = AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 2000, "log_level": 2})
        self.ready = False
        self.broker_down = False
        self.check_interval_s = check_interval_s
        self._stop = threading.Event()
        self.delivered = 0
        self.failed = 0
        self.latency_sum = 0.0
        self.latency_count = 0
        self._poller = threading.Thread(target=self._poll_loop, name="collect-kafka-poll", daemon=True)
        self._checker = threading.Thread(target=self._check_loop, name="collect-kafka-check", daemon=True)
        self._poller.start()
        self._checker.start()

    # -- threads ----------------------------------------------------------------------

    def _poll_loop(self) -> None:
        while not self._stop.is_set():
            self.producer.poll(0.5)

    def _check_loop(self) -> None:
        while not self._stop.is_set():
            try:
                md = self._admin.list_topics(timeout=max(0.5, self.check_interval_s * 2))
                ok = bool(md.brokers)
            except KafkaException:
                ok = False
            except Exception:  # noqa: BLE001 - any failure means not reachable now
                ok = False
            if ok != self.ready:
                log.warning("Kafka %s", "reachable: ready" if ok else "unreachable: not ready (503 until it is back)")
            self.ready = ok
            if ok:
                self.broker_down = False
            self._stop.wait(self.check_interval_s)

    def _on_error(self, err: KafkaError) -> None:
        """Mark Kafka down when every broker is down (logged once per outage, not per retry)."""
        if err.code() == KafkaError._ALL_BROKERS_DOWN:  # one lost connection is not an outage: the checker decides
            if not self.broker_down:
                log.warning("Kafka producer: %s", err)
            self.broker_down = True
            self.ready = False
        else:
            log.warning("Kafka producer: %s", err)

    # -- sending ----------------------------------------------------------------------

    def queue_depth(self) -> int:
        return len(self.producer)

    async def send(self, records: list[Record], timeout: float) -> None:
        """Produce ``records``; return once Kafka acknowledged all of them.

        Raises :class:`Unavailable` (with the cause) otherwise. Records that were queued
        before a failure may still reach Kafka later: the caller answers 503, the client
        retries, and the event id lets readers drop the duplicate."""
        if not records:
            return
        if not self.ready or self.broker_down:
            raise Unavailable("Kafka is unreachable")
        loop = asyncio.get_running_loop()
        pending = _Pending(loop, loop.create_future(), len(records))
        started = time.perf_counter()

        def on_delivery(err, msg, p=pending):
            with p.lock:
                p.left -= 1
                if err is not None:
                    p.failed.append(str(err))
                done = p.left == 0
            if err is None:
                self.delivered += 1
            else:
                self.failed += 1
            if done:
                p.loop.call_soon_threadsafe(_resolve, p)

        queued = 0
        try:
            for r in records:
                self.producer.produce(r.topic, r.value, r.key, headers=r.headers, on_delivery=on_delivery)
                queued += 1
        except BufferError:
            self._abandon(pending, len(records) - queued, "local producer queue full")
        except KafkaException as e:
            self._abandon(pending, len(records) - queued, f"produce failed: {e}")
        try:
            await asyncio.wait_for(asyncio.shield(pending.future), timeout)
        except TimeoutError:
            raise Unavailable(f"Kafka did not acknowledge within {timeout:g}s") from None
        if pending.failed:
            raise Unavailable(f"{len(pending.failed)} of {len(records)} records not acknowledged: {pending.failed[0]}")
        self.latency_sum += time.perf_counter() - started
        self.latency_count += 1

    @staticmethod
    def _abandon(p: _Pending, n: int, why: str) -> None:
        with p.lock:
            p.left -= n
            p.failed.extend([why] * n)
            done = p.left == 0
        if done:
            _resolve(p)

    def flush(self, timeout: float) -> int:
        """Wait up to ``timeout`` seconds for queued records; the number still queued."""
        return self.producer.flush(timeout)

    def close(self, timeout: float = 10.0) -> int:
        left = self.flush(timeout)
        self._stop.set()
        self._poller.join(2)
        self._checker.join(5)
        return left


def _resolve(p: _Pending) -> None:
    if not p.future.done():
        p.future.set_result(None)
