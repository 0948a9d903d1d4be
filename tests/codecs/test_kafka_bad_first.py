"""Issue 19 item 1 through a real broker: a topic whose first message is ``null`` (which
made pyarrow.json segfault: ``obsflow run --source kafka --bounded`` exited -11 with an
empty stderr, every time) is processed, that record dead-lettered with its reason, the
others written; the run exits 0 and reconciles. Also a first message that is a BOM-led
record, a ``NaN`` literal and JSON nested 5,000 deep, on the second topic."""

from __future__ import annotations


import pytest
from confluent_kafka import Producer

from pipelines.loader import parse_spec
from sources.generator import partition_stream
from tests.helpers import START_MS, read_table, run_bounded_from_kafka
from tests.e2e.test_kafka_pipeline import spec_data, write_spec

GOOD = 30


@pytest.mark.kafka
@pytest.mark.parametrize("runner", ["bytewax", "beam"])
def test_topic_whose_first_message_is_null(runner, kafka_broker, kafka_topic_factory, tmp_path):
    topics = {
        name: kafka_topic_factory(partitions=1, config={"retention.ms": "-1"}, prefix=name)
        for name in ("events", "logs")
    }
    bad = {
        "events": [b"null"],
        "logs": [b"null", b'\xef\xbb\xbf{"level":"INFO"}', b'{"level":NaN}', b"[" * 5000 + b"]" * 5000],
    }
    p = Producer({"bootstrap.servers": kafka_broker.bootstrap, "enable.idempotence": True, "acks": "all"})
    for name, topic in topics.items():
        for v in bad[name]:
            p.produce(topic, value=v, partition=0, timestamp=START_MS)
        for g in partition_stream(
            name[:-1] if name == "events" else "log", topic, 0, GOOD, start_ms=START_MS, bad_fraction=0.0
        ):
            p.produce(topic, value=g.value, partition=0, timestamp=g.timestamp_ms)
    assert p.flush(30) == 0
    data = spec_data(tmp_path / "wh", kafka_broker.bootstrap, topics)
    path = write_spec(tmp_path / "spec.yaml", data)
    proc = run_bounded_from_kafka(path, runner)
    assert "reconciliation: in = accepted + dead-lettered + dropped: yes" in proc.stdout
    spec = parse_spec(data)
    dead = {
        (r["source_topic"], r["source_offset"]): (r["reason"], r["detail"])
        for r in read_table(spec, "dead_letters").to_pylist()
    }
    assert dead == {
        (topics["events"], 0): ("schema_violation", "expected a JSON object, got null"),
        (topics["logs"], 0): ("schema_violation", "expected a JSON object, got null"),
        (topics["logs"], 1): (
            "format_violation",
            "payload starts with a UTF-8 byte order mark (not allowed in JSON, RFC 8259 section 8.1)",
        ),
        (topics["logs"], 2): ("format_violation", "invalid JSON: JSON is malformed: invalid character (byte 9)"),
        (topics["logs"], 3): ("format_violation", "record: JSON nested too deep (more than 255 levels)"),
    }
    ev = {r["source_offset"] for r in read_table(spec, "events").select(["source_offset"]).to_pylist()}
    logs = {r["source_offset"] for r in read_table(spec, "logs").select(["source_offset"]).to_pylist()}
    assert ev == set(range(1, 1 + GOOD)) and logs == set(range(4, 4 + GOOD))
