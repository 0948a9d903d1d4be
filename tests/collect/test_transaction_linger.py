"""``collect.transaction_linger``: a writer woken for a request waits until that request is
the linger old before it begins the transaction, so the requests arriving meanwhile share
it (one writer, the real broker, exact counts)."""

from __future__ import annotations

import asyncio
import time

import pytest

from collector.producer import DoorProducer, Record
from tests.collect.test_collect_e2e import read_topic

pytestmark = [pytest.mark.collect, pytest.mark.kafka]


def _ready(door: DoorProducer) -> None:
    deadline = time.monotonic() + 30
    while not (door.ready and all(w._txn_ready for w in door.writers)):
        assert time.monotonic() < deadline, "the door's writers did not initialize"
        time.sleep(0.1)


def test_requests_within_the_linger_share_one_transaction(kafka_broker, kafka_topic_factory):
    topic = kafka_topic_factory(partitions=1, prefix="linger")
    door = DoorProducer(kafka_broker.bootstrap, transactional=True, name="linger-test", writers=1, linger_s=0.4)
    try:
        _ready(door)

        async def five() -> list[float]:
            async def one(k: int) -> float:
                await asyncio.sleep(0.02 * k)  # 0, 20, ..., 80 ms: all within the 400 ms linger of the first
                t0 = time.perf_counter()
                await door.send([Record(topic, f"r{k}".encode(), b"k")], timeout=20)
                return time.perf_counter() - t0

            return await asyncio.gather(*(one(k) for k in range(5)))

        waited = asyncio.run(five())
        assert door.transactions == 1  # one transaction for the five requests
        assert waited[0] >= 0.4  # the first request waited out the linger
        assert sorted(m.value() for m in read_topic(kafka_broker.bootstrap, topic)) == [
            b"r0",
            b"r1",
            b"r2",
            b"r3",
            b"r4",
        ]
    finally:
        door.close(5)


def test_the_collector_process_gets_the_spec_switch_interval_and_linger():
    """The defaults the latency bench chose (bench/README.md): the collector process's GIL
    switch interval 0.5 ms (Python's own is 5 ms) and a 5 ms linger, applied by the server."""
    import sys

    from collector.server import process_settings
    from pipelines.collect_spec import CollectSpec

    cfg = CollectSpec()
    assert cfg.transaction_linger.total_seconds() == 0.005
    before = sys.getswitchinterval()
    try:
        process_settings(cfg)
        assert sys.getswitchinterval() == pytest.approx(0.0005)
        process_settings(CollectSpec(switch_interval="2ms"))
        assert sys.getswitchinterval() == pytest.approx(0.002)
    finally:
        sys.setswitchinterval(before)
