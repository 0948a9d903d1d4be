"""What the door does when ``commit_transaction`` fails, decided on real
``confluent_kafka.KafkaError`` objects with the flags librdkafka sets (fatal, retriable,
txn_requires_abort): retry the commit, abort the transaction, or replace the producer;
and the fatal case end to end on the real broker (a writer fenced by another producer with
its transactional id). The retry on the real broker (paused with SIGSTOP: each bounded
commit attempt times out, a retriable error, and is retried) is in test_commit_retry.py."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError

from collector.producer import ABORT, REPLACE, RETRY, commit_failure_action


@pytest.mark.parametrize(
    ("code", "flags", "action"),
    [
        (KafkaError._TIMED_OUT, {"retriable": True}, RETRY),
        (KafkaError.COORDINATOR_NOT_AVAILABLE, {"retriable": True}, RETRY),
        (KafkaError._STATE, {"txn_requires_abort": True}, ABORT),
        (KafkaError.INVALID_PRODUCER_EPOCH, {"txn_requires_abort": True, "retriable": True}, ABORT),
        (KafkaError._FENCED, {"fatal": True}, REPLACE),
        (KafkaError.PRODUCER_FENCED, {"fatal": True, "retriable": True, "txn_requires_abort": True}, REPLACE),
        (KafkaError._STATE, {}, ABORT),  # says nothing more: abort (the request gets 503)
    ],
)
def test_commit_failure_action(code, flags, action):
    err = KafkaError(code, "commit failed", **flags)
    assert (err.fatal(), err.retriable(), err.txn_requires_abort()) == (
        flags.get("fatal", False),
        flags.get("retriable", False),
        flags.get("txn_requires_abort", False),
    )
    assert commit_failure_action(err) == action


@pytest.mark.kafka
def test_a_fenced_writer_answers_503_and_is_replaced(kafka_broker, kafka_topic_factory):
    """The fatal case on the real broker: another producer takes the door writer's
    transactional id (fencing it). The next request is answered 503 (nothing of it is
    visible), the writer's producer is replaced, and the request after that is stored once."""
    import asyncio
    import time

    from confluent_kafka import Producer

    from collector.producer import DoorProducer, Record, Unavailable
    from tests.collect.test_collect_e2e import read_topic

    topic = kafka_topic_factory(partitions=1, prefix="fence")
    door = DoorProducer(kafka_broker.bootstrap, transactional=True, name="fence-test")
    try:
        writer = door.writers[0]
        deadline = time.monotonic() + 30
        while not (door.ready and writer._txn_ready):
            assert time.monotonic() < deadline, "the door's writer did not initialize"
            time.sleep(0.1)
        fenced = writer.producer
        fencer = Producer(
            {"bootstrap.servers": kafka_broker.bootstrap, "transactional.id": writer.conf["transactional.id"]}
        )
        fencer.init_transactions(30)  # the door's producer is fenced from now on
        with pytest.raises(Unavailable):
            asyncio.run(door.send([Record(topic, b"first", b"k")], timeout=10))
        assert writer.producer is not fenced  # replaced
        asyncio.run(door.send([Record(topic, b"second", b"k")], timeout=20))
        assert [m.value() for m in read_topic(kafka_broker.bootstrap, topic)] == [b"second"]
    finally:
        door.close(5)
