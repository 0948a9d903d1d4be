"""The door's readiness check recovers from a client that lost every broker it knew (the
real broker): after a failed check the next one is made by a fresh client, so ``ready``
comes back at the first check after Kafka answers. (A KRaft broker paused past its session
answers "no brokers" while it is fenced; librdkafka then drops every broker it knew, and
the old check failed until its client bootstrapped again, minutes later.) Here the
check's client is made to reach no broker: a real client whose only broker is a closed
port, while ``bootstrap.servers`` stays the live broker."""

from __future__ import annotations

import logging
import socket
import time

import pytest
from confluent_kafka.admin import AdminClient

from collector.producer import DoorProducer

pytestmark = [pytest.mark.collect, pytest.mark.kafka]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _transitions(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == "obsflow.collect" and r.getMessage().startswith("Kafka ")
    ]


def test_the_check_turns_ready_again_when_its_client_reaches_no_broker(kafka_broker, caplog):
    caplog.set_level(logging.WARNING, logger="obsflow.collect")
    door = DoorProducer(kafka_broker.bootstrap, check_interval_s=0.2, name="readiness-test")
    try:
        deadline = time.monotonic() + 30
        while not door.ready:
            assert time.monotonic() < deadline, "the door did not turn ready"
            time.sleep(0.05)
        lost = AdminClient({"bootstrap.servers": f"127.0.0.1:{_closed_port()}", "log_level": 0})
        door._admin = lost  # the check's client now knows no broker that answers
        del lost
        deadline = time.monotonic() + 15
        while len(_transitions(caplog)) < 3:
            assert time.monotonic() < deadline, _transitions(caplog)
            time.sleep(0.05)
        assert _transitions(caplog) == [
            "Kafka reachable: ready",
            "Kafka unreachable: not ready (503 until it is back)",
            "Kafka reachable: ready",
        ]
        assert door.ready
    finally:
        door.close(5)
