"""The Kafka source reads a batch's record timestamps as one array
(:func:`sources.kafka.record_times`): each message's own timestamp, of either type, and
the time of reading for a message without one. No broker: messages made in memory."""

from __future__ import annotations

import time

from confluent_kafka import TIMESTAMP_CREATE_TIME, TIMESTAMP_LOG_APPEND_TIME, TIMESTAMP_NOT_AVAILABLE, Message

from sources.kafka import record_times


def _msg(offset: int, ts_type: int, ts: int) -> Message:
    return Message(topic="t", partition=0, offset=offset, value=b"{}", timestamp=(ts_type, ts))


def test_each_record_keeps_its_own_timestamp():
    msgs = [_msg(k, TIMESTAMP_CREATE_TIME, 1_763_000_000_000 + k) for k in range(5000)]
    msgs[7] = _msg(7, TIMESTAMP_LOG_APPEND_TIME, 1_700_000_000_123)
    got = record_times(msgs)
    assert len(got) == 5000 and all(type(v) is int for v in got)
    assert got[:3] == [1_763_000_000_000, 1_763_000_000_001, 1_763_000_000_002]
    assert got[7] == 1_700_000_000_123
    assert got[-1] == 1_763_000_004_999


def test_a_record_without_a_timestamp_gets_the_time_it_was_read():
    before = int(time.time() * 1000)
    msgs = [
        _msg(0, TIMESTAMP_CREATE_TIME, 1_763_000_000_000),
        _msg(1, TIMESTAMP_NOT_AVAILABLE, -1),
        _msg(2, TIMESTAMP_CREATE_TIME, -1),
        _msg(3, TIMESTAMP_NOT_AVAILABLE, 1_763_000_000_003),
        _msg(4, TIMESTAMP_LOG_APPEND_TIME, 0),
    ]
    got = record_times(msgs)
    after = int(time.time() * 1000)
    assert got[0] == 1_763_000_000_000 and got[4] == 0
    assert all(before <= v <= after for v in got[1:4])
