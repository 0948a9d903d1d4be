"""What the door does when ``commit_transaction`` fails, decided on real
``confluent_kafka.KafkaError`` objects with the flags librdkafka sets (fatal, retriable,
txn_requires_abort): retry the commit, abort the transaction, or replace the producer.
(The broker is not paused here: a pause long enough for one commit attempt to fail with a
retriable error would have to outlast the request's whole budget, which one attempt
waits for.)"""

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
