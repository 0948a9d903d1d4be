"""The door's Kafka producer: one idempotent producer (acks=all) polled by a thread; a
request's records are produced together and :meth:`DoorProducer.send` resolves only
when Kafka acknowledged every one of them (or says which failed).

Transactional (the default, ``collect.transactions``): requests are written in Kafka
transactions, several requests per transaction (group commit: the requests that arrive
while transactions commit go in the next one), by ``writers`` transactional producers at
once (a producer has one open transaction at a time; several hide the commit's round trips). A request is answered 2xx only when its
transaction committed; when anything of a transaction fails, it is aborted and every
request in it gets 503: none of their records is ever visible to a ``read_committed``
consumer (the pipeline's; librdkafka's default), so a client's retry of a 503 request
leaves no duplicate."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from core.errors import ServiceUnavailable

log = logging.getLogger("obsflow.collect")


class Unavailable(ServiceUnavailable):
    """Kafka cannot take the records now (broker down, local queue full, timed out): retry later."""


#: Kafka record headers as confluent_kafka takes them
Headers = list[tuple[str, str | bytes | None]]

#: how long a client of the door (producers and the readiness check) may go without
#: metadata from any broker it knows before it bootstraps again from ``bootstrap.servers``
#: (librdkafka's default is 5 minutes). A KRaft broker paused longer than its session
#: (SIGSTOP, a VM stall) answers its first metadata request after it resumes with no
#: brokers while it is fenced; librdkafka then drops every broker it knew, the bootstrap
#: ones included, and until it bootstraps again it reaches none.
REBOOTSTRAP_AFTER_MS = 5000

#: where a transactional request's time goes, observed as ``(phase, seconds)``:
#: ``queue`` (per request: queued until its transaction began), ``begin``, ``produce`` and
#: ``commit`` (per transaction), ``handoff`` (per transaction and event loop: committed
#: until that loop ran the answers); see :attr:`DoorProducer.observe`
PHASES = ("queue", "begin", "produce", "commit", "handoff")


def _ignore(phase: str, seconds: float) -> None:
    """The default phase observer: nothing is kept."""


@dataclass
class Record:
    topic: str
    value: bytes
    key: bytes | None = None
    headers: Headers | None = None


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

    def __init__(
        self,
        bootstrap: str,
        extra: dict | None = None,
        message_timeout_s: float = 10.0,
        check_interval_s: float = 1.0,
        name: str = "collect",
        transactional: bool = False,
        writers: int = 1,
        commit_attempt_s: float = 1.0,
        linger_s: float = 0.0,
    ):
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
            "metadata.recovery.rebootstrap.trigger.ms": REBOOTSTRAP_AFTER_MS,
            "error_cb": self._on_error,
            "logger": logging.getLogger("obsflow.collect.kafka"),
        }
        conf.update(extra or {})
        self.transactional = transactional
        self.conf = conf
        self.bootstrap = bootstrap
        self.producer = Producer(conf) if not transactional else None
        self._txn_queue: deque[_TxnRequest] = deque()
        self._txn_cv = threading.Condition()
        self.transactions = 0
        self._counts_lock = threading.Lock()  # the writers' threads add to the counts below
        #: longest wait of one ``commit_transaction`` attempt (``collect.commit_attempt_timeout``)
        self.commit_attempt_s = commit_attempt_s
        #: commit attempts retried (timed out or failed with a retriable error), since start
        self.commit_retries = 0
        #: a writer woken for a request waits until it is this old before the transaction
        #: begins (``collect.transaction_linger``): fewer, larger transactions
        self.linger_s = linger_s
        self.writers: list[_TxnWriter] = []
        if transactional:
            conf.setdefault("transaction.timeout.ms", max(60000, int(str(conf["message.timeout.ms"]))))
            base = (
                conf.pop("transactional.id", None)
                or f"obsflow-{name}-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            )
            # one id per writer of this process: a writer's new producer fences (and so aborts) its predecessor's transaction
            self.writers = [
                _TxnWriter(self, {**conf, "transactional.id": f"{base}-{k}"}) for k in range(max(1, writers))
            ]
        self._admin = self._new_admin()
        self.ready = False
        self.broker_down = False
        self.check_interval_s = check_interval_s
        self._stop = threading.Event()
        self.delivered = 0
        self.failed = 0
        self.latency_sum = 0.0
        self.latency_count = 0
        #: called with ``(phase, seconds)`` for each phase of :data:`PHASES` (from the writer
        #: threads and the event loop; it must be thread-safe and cheap)
        self.observe: Callable[[str, float], None] = _ignore
        self._poller = threading.Thread(target=self._poll_loop, name="collect-kafka-poll", daemon=True)
        self._checker = threading.Thread(target=self._check_loop, name="collect-kafka-check", daemon=True)
        self._poller.start()
        self._checker.start()
        for w in self.writers:
            w.thread.start()

    def count(self, transactions: int = 0, commit_retries: int = 0, delivered: int = 0) -> None:
        """Adds to :attr:`transactions`, :attr:`commit_retries` and :attr:`delivered` under
        a lock: the writer threads count at once (``+=`` alone could lose one)."""
        with self._counts_lock:
            self.transactions += transactions
            self.commit_retries += commit_retries
            self.delivered += delivered

    # -- threads ----------------------------------------------------------------------

    def _poll_loop(self) -> None:
        while not self._stop.is_set():
            if self.producer is not None:
                self.producer.poll(0.5)
            else:
                for w in self.writers:
                    w.producer.poll(0)
                self._stop.wait(0.2)

    def _new_admin(self) -> AdminClient:
        """A fresh client for the readiness check: it knows only ``bootstrap.servers``."""
        return AdminClient(
            {
                "bootstrap.servers": self.bootstrap,
                "socket.timeout.ms": 2000,
                "log_level": 2,
                "metadata.recovery.rebootstrap.trigger.ms": REBOOTSTRAP_AFTER_MS,
            }
        )

    def _check_loop(self) -> None:
        """Every ``check_interval_s``: ``ready`` is whether a metadata request named a broker.

        After a failed check the next one is made by a fresh client (the failed one is
        destroyed on another thread, never on this one): a client that lost every broker
        it knew (a KRaft broker answers "no brokers" while it is fenced after a pause)
        would otherwise fail every check until librdkafka bootstraps it again, so the door
        turns ready again at the first check after Kafka answers."""
        while not self._stop.is_set():
            try:
                md = self._admin.list_topics(timeout=max(0.5, self.check_interval_s * 2))
                ok = bool(md.brokers)
            except KafkaException:
                ok = False
            except Exception:  # noqa: BLE001 - any failure means not reachable now
                ok = False
            if not ok:
                failed: list[Producer | AdminClient] = [self._admin]
                self._admin = self._new_admin()
                dispose(failed)
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

    def note(self, phase: str, seconds: float) -> None:
        """Pass one phase to :attr:`observe`; an observer that fails is logged, never lets a
        writer thread or an answer fail."""
        try:
            self.observe(phase, seconds)
        except Exception:  # noqa: BLE001 - an observer must not break the door
            log.exception("collect: phase observer failed")

    # -- sending ----------------------------------------------------------------------

    def queue_depth(self) -> int:
        return len(self.producer) if self.producer is not None else sum(len(w.producer) for w in self.writers)

    async def send(self, records: list[Record], timeout: float) -> None:
        """Produce ``records``; return once Kafka acknowledged all of them.

        Raises :class:`Unavailable` (with the cause) otherwise. Records that were queued
        before a failure may still reach Kafka later: the caller answers 503, the client
        retries, and the event id lets readers drop the duplicate."""
        if not records:
            return
        if not self.ready or self.broker_down:
            raise Unavailable("Kafka is unreachable")
        if self.transactional:
            await self._send_txn(records, timeout)
            return
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
        producer = self.producer
        assert producer is not None  # not transactional: the one producer exists
        try:
            for r in records:
                producer.produce(r.topic, r.value, r.key, headers=r.headers, on_delivery=on_delivery)
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

    async def _send_txn(self, records: list[Record], timeout: float) -> None:
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        t = _TxnRequest(records, loop, loop.create_future(), time.monotonic() + timeout, started)
        with self._txn_cv:
            self._txn_queue.append(t)
            if len(self._txn_queue) == 1:  # else a writer was woken for the queue and takes this request with it
                self._txn_cv.notify()
        error = await t.future  # the committer answers within the deadline (its commit and abort are bounded by it)
        if error is not None:
            raise Unavailable(f"Kafka did not take the request's records: {error}")
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
        if self.producer is not None:
            return self.producer.flush(timeout)
        return sum(w.producer.flush(timeout) for w in self.writers)

    def close(self, timeout: float = 10.0) -> int:
        if self.transactional:
            deadline = time.monotonic() + timeout
            while self._txn_queue and time.monotonic() < deadline:
                time.sleep(0.02)
        left = self.flush(timeout)
        self._stop.set()
        with self._txn_cv:
            self._txn_cv.notify_all()
        for w in self.writers:
            w.thread.join(timeout + 5)
        self._poller.join(2)
        self._checker.join(5)
        return left


class _TxnWriter:
    """One transactional producer and the thread that commits the door's queued requests
    with it: each transaction takes every request queued when it begins."""

    def __init__(self, door: DoorProducer, conf: dict):
        self.door = door
        self.conf = conf
        self.producer = Producer(conf)
        self._txn_ready = False
        self._abort_pending = False
        self.thread = threading.Thread(target=self._txn_loop, name="collect-kafka-txn", daemon=True)

    def _txn_loop(self) -> None:
        """Commit the queued requests, one transaction at a time, each with every request queued meanwhile."""
        while not self.door._stop.is_set():
            if not self._txn_ready and self.door.ready:
                try:  # ready before the first request (the coordinator's first answer can take a while)
                    self.producer.init_transactions(5.0)
                    self._txn_ready = True
                except KafkaException as e:
                    self._reset(e.args[0])
            with self.door._txn_cv:
                if not self.door._txn_queue:
                    self.door._txn_cv.wait(0.5)
                first = self.door._txn_queue[0].queued if self.door._txn_queue else None
            linger = self.door.linger_s
            if first is not None and linger > 0:
                wait = first + linger - time.perf_counter()
                if wait > 0:  # the requests arriving meanwhile share this transaction
                    time.sleep(wait)
            with self.door._txn_cv:
                batch = list(self.door._txn_queue)
                self.door._txn_queue.clear()
            if not batch:
                continue
            now = time.monotonic()
            live: list[_TxnRequest] = []
            late: list[_TxnRequest] = []
            for t in batch:
                (live if t.deadline > now and not t.future.done() else late).append(t)
            _settle_all(late, "the request's time ran out before its transaction began", self.door.note)
            if not live:
                continue
            _settle_all(live, self._commit(live, min(t.deadline for t in live) - now), self.door.note)
            self._finish_abort()  # after the answers: a broker that does not answer delays no 503

    def _commit(self, batch: list[_TxnRequest], budget_s: float) -> str | None:
        """Write ``batch`` in one transaction; None when it committed, else why not (then it
        was aborted, or the producer that held it is replaced, which aborts it)."""
        observe = self.door.note
        t0 = time.perf_counter()
        for t in batch:
            observe("queue", t0 - t.queued)
        try:
            if not self._txn_ready:
                self.producer.init_transactions(max(0.5, budget_s))
                self._txn_ready = True
            self.producer.begin_transaction()
        except KafkaException as e:
            self._reset(e.args[0])
            return f"transactions unavailable: {e.args[0].str()}"
        deadline = time.monotonic() + budget_s - 0.1  # the answers' hand-off is left the rest
        try:
            t1 = time.perf_counter()
            produce = self.producer.produce
            for t in batch:
                for r in t.records:
                    produce(r.topic, r.value, r.key, headers=r.headers)
            t2 = time.perf_counter()
        except BufferError:
            self._abort("local producer queue full")
            return "local producer queue full"
        except KafkaException as e:
            why = e.args[0].str()
            self._abort(why, e.args[0])
            return why
        why = self._commit_transaction(deadline)
        if why is not None:
            return why
        observe("begin", t1 - t0)
        observe("produce", t2 - t1)
        observe("commit", time.perf_counter() - t2)
        self.door.count(transactions=1, delivered=sum(len(t.records) for t in batch))
        return None

    def _commit_transaction(self, deadline: float) -> str | None:
        """Commit the open transaction by ``deadline`` (``time.monotonic()``); None when it
        committed. Each attempt waits at most :attr:`DoorProducer.commit_attempt_s`; an
        attempt that times out or fails with another retriable error (the coordinator
        moving) is retried while time is left, and counted in
        :attr:`DoorProducer.commit_retries` (librdkafka resumes the commit it began: a
        retry never commits twice, and a commit the broker took before its answer was
        lost is then confirmed rather than answered 503). When time is out, or the error
        requires an abort, the transaction is aborted (:meth:`_finish_abort`, after the
        answers); a fatal error replaces the producer at once (its successor's init aborts
        the transaction). Either way the caller answers every request of it 503."""
        while True:
            left = deadline - time.monotonic()
            try:
                self.producer.commit_transaction(max(0.05, min(self.door.commit_attempt_s, left)))
                return None
            except KafkaException as e:
                err: KafkaError = e.args[0]
                action = commit_failure_action(err)
                if action == RETRY and deadline - time.monotonic() > 0.05:
                    self.door.count(commit_retries=1)
                    log.info("Kafka transactions: commit attempt failed (%s), retrying", err.str())
                    continue
                self._abort(err.str(), err)
                return err.str()

    def _abort(self, why: str, err: KafkaError | None = None) -> None:
        """Give up the open transaction: a fatal ``err`` replaces the producer now; else the
        abort is left to :meth:`_finish_abort`, which the writer runs once the
        transaction's requests were answered."""
        self.door.failed += 1
        if err is not None and err.fatal():
            self._reset(err)
            return
        self._abort_pending = True

    def _finish_abort(self) -> None:
        """Abort the transaction :meth:`_abort` gave up (within 2 s; a broker that does not
        answer by then gets the producer replaced, whose successor's init aborts it)."""
        if not self._abort_pending:
            return
        self._abort_pending = False
        try:
            self.producer.abort_transaction(2.0)
        except KafkaException as e:
            self._reset(e.args[0])

    def _reset(self, err: KafkaError) -> None:
        """A new producer with the same transactional id: its init fences this one and aborts
        any transaction it left open (so nothing of a request answered 503 becomes visible)."""
        log.warning("Kafka transactions: %s; the producer is replaced", err.str())
        old: list[Producer | AdminClient] = [self.producer]
        self.producer = Producer(self.conf)
        self._txn_ready = False
        dispose(old, purge=True)


def dispose(clients: list[Producer | AdminClient], purge: bool = False) -> None:
    """Destroy ``clients`` on a daemon thread of their own: a producer's ``purge()`` (when
    ``purge``) and each client's destruction (``rd_kafka_destroy``, which can wait for the
    client's threads) never delay the caller. ``clients`` must hold the only references
    (the caller keeps the list, never a client): the thread empties it, and the last
    reference goes there."""

    def drop() -> None:
        for c in clients:
            if purge and isinstance(c, Producer):
                c.purge()
        clients.clear()  # the last references go on this thread: the clients are destroyed here

    threading.Thread(target=drop, name="collect-kafka-dispose", daemon=True).start()


#: what a failed ``commit_transaction`` leads to (:func:`commit_failure_action`)
RETRY, ABORT, REPLACE = "retry", "abort", "replace"


def commit_failure_action(err: KafkaError) -> str:
    """The door's answer to a :class:`KafkaError` from ``commit_transaction``:
    :data:`REPLACE` when it is fatal (the producer cannot go on: a new one with the same
    transactional id fences it), :data:`ABORT` when the transaction must be aborted (or the
    error says nothing more), :data:`RETRY` when the commit may be retried (librdkafka's
    ``retriable``: a timeout, a coordinator not available yet)."""
    if err.fatal():
        return REPLACE
    if err.txn_requires_abort():
        return ABORT
    if err.retriable():
        return RETRY
    return ABORT


@dataclass(eq=False)
class _TxnRequest:
    records: list[Record]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future
    deadline: float  # time.monotonic()
    queued: float  # time.perf_counter() when it was queued


def _settle_all(requests: list[_TxnRequest], error: str | None, observe: Callable[[str, float], None]) -> None:
    """Answer ``requests`` with ``error`` (None: committed): one wake-up of each event loop,
    not one per request; that wake-up's delay is observed as the ``handoff`` phase."""
    by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future]] = {}
    for t in requests:
        by_loop.setdefault(t.loop, []).append(t.future)
    now = time.perf_counter()
    for loop, futures in by_loop.items():
        loop.call_soon_threadsafe(_settle, futures, error, now, observe)


def _settle(
    futures: list[asyncio.Future], error: str | None, handed: float, observe: Callable[[str, float], None]
) -> None:
    for fut in futures:
        if not fut.done():
            fut.set_result(error)
    observe("handoff", time.perf_counter() - handed)


def _resolve(p: _Pending) -> None:
    if not p.future.done():
        p.future.set_result(None)
