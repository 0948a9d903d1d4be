"""The real Kafka broker: exact idempotent round trips, transactions, missing topics are
errors (auto-creation off), and a killed broker comes back on the same address with its data."""

from __future__ import annotations

import time
import uuid
from collections import defaultdict

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import ConfigResource

from infra import kafka
from infra.service import port_open

pytestmark = pytest.mark.kafka


def _produce(
    bootstrap: str,
    topic: str,
    items: list[tuple[str, str]],
    producer: Producer | None = None,
) -> list[tuple[int, int, str]]:
    """Produce ``(key, value)`` pairs idempotently; return ``(partition, offset, value)`` per delivery."""
    p = producer or Producer(
        {"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all", "linger.ms": 5}
    )
    delivered: list[tuple[int, int, str]] = []
    errors: list[KafkaError] = []

    def on_delivery(err, msg) -> None:
        if err is not None:
            errors.append(err)
        else:
            delivered.append((msg.partition(), msg.offset(), msg.value().decode()))

    for key, value in items:
        while True:
            try:
                p.produce(topic, key=key.encode(), value=value.encode(), on_delivery=on_delivery)
                break
            except BufferError:
                p.poll(0.1)
    remaining = p.flush(60)
    assert remaining == 0, f"{remaining} messages not delivered"
    assert not errors, errors[:5]
    assert len(delivered) == len(items)
    return delivered


def _consume_all(
    bootstrap: str, topic: str, partitions: int, expected: int, *, read_committed: bool = False, timeout: float = 60.0
) -> list[tuple[int, int, str, str]]:
    """Read every message of ``topic`` from the beginning: ``(partition, offset, key, value)``.

    Stops after ``expected`` messages, then keeps polling briefly so extra messages would show up.
    """
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"g-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed" if read_committed else "read_uncommitted",
        }
    )
    try:
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        out: list[tuple[int, int, str, str]] = []
        deadline = time.monotonic() + timeout
        grace_until: float | None = None
        while time.monotonic() < deadline:
            if len(out) >= expected and grace_until is None:
                grace_until = time.monotonic() + 1.5
            if grace_until is not None and time.monotonic() > grace_until:
                break
            for msg in c.consume(500, timeout=0.5):
                if msg.error():
                    if msg.error().code() == KafkaError._PARTITION_EOF:
                        continue
                    raise KafkaException(msg.error())
                out.append((msg.partition(), msg.offset(), msg.key().decode(), msg.value().decode()))
        return out
    finally:
        c.close()


def test_bootstrap_is_loopback_and_serving(kafka_broker: kafka.KafkaEndpoint) -> None:
    assert kafka_broker.ping(timeout=10)
    if isinstance(kafka_broker, kafka.KafkaBroker):
        assert kafka_broker.bootstrap == f"127.0.0.1:{kafka_broker.port}"
        assert kafka_broker.alive()
        assert 0 < kafka_broker.rss_bytes() < 1.5e9


def test_idempotent_1000_keyed_messages_round_trip_exactly(kafka_broker, kafka_topic_factory) -> None:
    topic = kafka_topic_factory(partitions=4)
    items = [(f"key-{i % 50}", f"value-{i}") for i in range(1000)]
    delivered = _produce(kafka_broker.bootstrap, topic, items)

    got = _consume_all(kafka_broker.bootstrap, topic, 4, expected=1000)
    assert len(got) == 1000
    assert sorted(v for *_, v in got) == sorted(v for _, v in items)

    by_partition: dict[int, list[int]] = defaultdict(list)
    for partition, offset, _, _ in got:
        by_partition[partition].append(offset)
    assert set(by_partition) == {0, 1, 2, 3}  # 50 keys spread over all 4 partitions
    for partition, offsets in by_partition.items():
        assert offsets == list(range(len(offsets))), f"partition {partition} offsets not 0..n-1"

    # What the producer was told matches what is stored.
    assert sorted(delivered) == sorted((p, o, v) for p, o, _, v in got)
    # One key, one partition; within a key, production order is kept.
    key_partition: dict[str, set[int]] = defaultdict(set)
    key_values: dict[str, list[int]] = defaultdict(list)
    for partition, _, key, value in sorted(got):
        key_partition[key].add(partition)
        key_values[key].append(int(value.split("-")[1]))
    assert all(len(ps) == 1 for ps in key_partition.values())
    assert all(vs == sorted(vs) and len(vs) == 20 for vs in key_values.values())


def test_transactions_commit_and_abort(kafka_broker, kafka_topic_factory) -> None:
    topic = kafka_topic_factory(partitions=4)
    p = Producer({"bootstrap.servers": kafka_broker.bootstrap, "transactional.id": f"tx-{uuid.uuid4().hex[:8]}"})
    p.init_transactions(60)
    p.begin_transaction()
    for i in range(10):
        p.produce(topic, key=f"k{i}".encode(), value=f"committed-{i}".encode())
    p.commit_transaction(60)
    p.begin_transaction()
    for i in range(5):
        p.produce(topic, key=f"k{i}".encode(), value=f"aborted-{i}".encode())
    p.flush(30)
    p.abort_transaction(60)

    committed = _consume_all(kafka_broker.bootstrap, topic, 4, expected=10, read_committed=True)
    assert sorted(v for *_, v in committed) == sorted(f"committed-{i}" for i in range(10))
    everything = _consume_all(kafka_broker.bootstrap, topic, 4, expected=15)
    assert len(everything) == 15  # aborted records are stored, just not visible to read_committed


def test_create_topic_options(kafka_broker, kafka_topic_factory) -> None:
    topic = kafka_topic_factory(partitions=3, config={"cleanup.policy": "compact"})
    md = kafka_broker.admin().list_topics(topic=topic, timeout=10).topics[topic]
    assert len(md.partitions) == 3
    res = ConfigResource(ConfigResource.Type.TOPIC, topic)
    admin = kafka_broker.admin()  # keep the client alive while its future is pending
    configs = admin.describe_configs([res])[res].result(30)
    assert configs["cleanup.policy"].value == "compact"
    with pytest.raises(KafkaException) as exc:
        kafka_broker.create_topic(topic, partitions=3)
    assert exc.value.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS


def test_missing_topic_is_an_error_and_is_not_auto_created(kafka_broker) -> None:
    missing = f"missing-{uuid.uuid4().hex[:10]}"

    md = kafka_broker.admin().list_topics(topic=missing, timeout=10).topics[missing]
    assert md.error is not None and md.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART

    errors: list[KafkaError] = []
    p = Producer(
        {
            "bootstrap.servers": kafka_broker.bootstrap,
            "enable.idempotence": True,
            "topic.metadata.propagation.max.ms": 1000,
            "message.timeout.ms": 15000,
        }
    )
    p.produce(missing, value=b"x", on_delivery=lambda err, msg: errors.append(err))
    assert p.flush(30) == 0
    assert len(errors) == 1 and errors[0] is not None
    assert errors[0].code() in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC), errors[0]

    c = Consumer(
        {
            "bootstrap.servers": kafka_broker.bootstrap,
            "group.id": f"g-{uuid.uuid4().hex[:8]}",
            "allow.auto.create.topics": True,
        }
    )  # the broker must still refuse
    try:
        c.subscribe([missing])
        seen: KafkaError | None = None
        deadline = time.monotonic() + 30
        while seen is None and time.monotonic() < deadline:
            msg = c.poll(0.5)
            if msg is not None and msg.error():
                seen = msg.error()
        assert seen is not None, "consumer reported no error for a missing topic"
        assert seen.code() == KafkaError.UNKNOWN_TOPIC_OR_PART, seen
    finally:
        c.close()

    assert missing not in kafka_broker.topics()


def test_kill_then_restart_keeps_data_and_clients_reconnect(private_kafka_broker: kafka.KafkaBroker) -> None:
    broker = private_kafka_broker
    bootstrap, home, old_pid = broker.bootstrap, broker.home, broker.pid
    topic = broker.create_topic(f"crash-{uuid.uuid4().hex[:8]}", partitions=4)
    producer = Producer(
        {"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all", "message.timeout.ms": 120000}
    )
    _produce(bootstrap, topic, [(f"k{i % 7}", f"before-{i}") for i in range(500)], producer)

    broker.kill()
    assert not broker.alive()
    assert not port_open(broker.port)

    broker.restart()
    assert broker.alive() and broker.pid != old_pid
    assert (broker.bootstrap, broker.home) == (bootstrap, home)

    # The producer created before the crash reconnects to the same address.
    _produce(bootstrap, topic, [(f"k{i % 7}", f"after-{i}") for i in range(100)], producer)
    got = _consume_all(bootstrap, topic, 4, expected=600)
    values = sorted(v for *_, v in got)
    assert values == sorted([f"before-{i}" for i in range(500)] + [f"after-{i}" for i in range(100)])

    broker.stop()
    assert not broker.alive()
    broker.restart()
    assert len(_consume_all(bootstrap, topic, 4, expected=600)) == 600
