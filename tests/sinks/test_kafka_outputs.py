"""Kafka outputs against a real broker: dead letters to a topic when the spec asks (exactly
the obs.dead_letters rows, keyed by source topic:partition, in offset order), a delivery
failure that is surfaced rather than dropped, and alerts keyed by fingerprint (JSON and
Confluent Avro)."""

from __future__ import annotations

import base64
import io
import json
import time
import uuid
from collections import defaultdict

import fastavro
import pytest
import yaml
from confluent_kafka import Consumer, TopicPartition

from pipelines.loader import SpecError, parse_spec
from runners.stats import STATS
from schemas.wire import avro_schema
from tests.helpers import read_table
from tests.e2e.test_kafka_pipeline import PARTITIONS, SIGNALS, TOPIC_CONFIG, Expected, produce, run_inproc, spec_data


def consume_all(bootstrap: str, topic: str, n: int, partitions: int = PARTITIONS, timeout: float = 30) -> list:
    """Every message of ``topic`` from the start, until ``n`` arrived: ``(partition, key, value, headers)``."""
    c = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"check-{uuid.uuid4().hex[:6]}", "enable.auto.commit": False}
    )
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    out, deadline = [], time.monotonic() + timeout
    try:
        while len(out) < n and time.monotonic() < deadline:
            for m in c.consume(500, 0.5):
                if m.error() is None:
                    out.append((m.partition(), m.key(), m.value(), dict(m.headers() or [])))
        time.sleep(0.3)  # and nothing more
        out += [
            (m.partition(), m.key(), m.value(), dict(m.headers() or []))
            for m in c.consume(500, 0.5)
            if m.error() is None
        ]
    finally:
        c.close()
    return out


def two_signal_spec(tmp_path, bootstrap, topics, **outputs) -> dict:
    data = spec_data(tmp_path / "wh", bootstrap, topics, batch=200)
    data["sources"] = [s for s in data["sources"] if s["name"] in SIGNALS]
    data["flows"] = [f for f in data["flows"] if f["source"] in SIGNALS]
    for f in data["flows"]:
        f["steps"] = [s for s in f["steps"] if s["kind"] in ("validate", "scrub", "enrich")]
    data.pop("alerts", None)
    data["outputs"] = outputs
    return data


@pytest.fixture
def topics(kafka_topic_factory) -> dict[str, str]:
    return {name: kafka_topic_factory(partitions=PARTITIONS, config=TOPIC_CONFIG, prefix=name) for name in SIGNALS}


@pytest.mark.kafka
@pytest.mark.parametrize("runner", ["bytewax", "beam"])
def test_dead_letters_to_kafka_match_the_table(runner, kafka_broker, kafka_topic_factory, topics, tmp_path):
    expected = Expected()
    produce(kafka_broker.bootstrap, topics, 150, expected, tombstones=True)
    dlq = kafka_topic_factory(partitions=PARTITIONS, prefix="dlq")
    spec = parse_spec(two_signal_spec(tmp_path, kafka_broker.bootstrap, topics, dead_letters_topic=dlq))
    run_inproc(runner, spec)
    assert STATS.records_dead == len(expected.dead)
    msgs = consume_all(kafka_broker.bootstrap, dlq, len(expected.dead))
    got = [json.loads(v) for _, _, v, _ in msgs]
    coords = [(d["source_topic"], d["source_partition"], d["source_offset"]) for d in got]
    assert len(coords) == len(set(coords)), "a dead letter was produced twice"
    assert {c: d["reason"] for c, d in zip(coords, got)} == expected.dead
    # the same rows as the table: detail, raw bytes (base64; tombstones null), sizes
    table = {
        (r["source_topic"], r["source_partition"], r["source_offset"]): r
        for r in read_table(spec, "dead_letters").to_pylist()
    }
    for c, d in zip(coords, got):
        row = table[c]
        assert (d["detail"], d["source"], d["raw_size"], d["raw_truncated"]) == (
            row["detail"],
            row["source"],
            row["raw_size"],
            row["raw_truncated"],
        )
        assert (base64.b64decode(d["raw"]) if d["raw"] is not None else None) == row["raw"]
        assert d["received_at"] == int(row["received_at"].timestamp() * 1000)
    # keyed by source topic:partition, so each source partition's rejects are in offset order
    per_key = defaultdict(list)
    for (part, key, _, headers), d in zip(msgs, got):
        assert key.decode() == f"{d['source_topic']}:{d['source_partition']}"
        assert headers["reason"].decode() == d["reason"]
        per_key[key].append((part, d["source_offset"]))
    for key, seq in per_key.items():
        assert len({p for p, _ in seq}) == 1 and [o for _, o in seq] == sorted(o for _, o in seq)
    assert STATS.produced[dlq] == len(expected.dead) and not STATS.delivery_failures


@pytest.mark.kafka
def test_undeliverable_dead_letters_fail_the_run_clearly(kafka_broker, kafka_topic_factory, topics, tmp_path, capsys):
    """A dead-letter topic that refuses the messages (``max.message.bytes`` below their
    size; a missing topic is now caught before the run starts): the run stops with a
    clear error, and the positions of those dead letters are not committed (a restart
    re-reads them) — nothing is dropped silently."""
    from runners.cli import main
    from sinks.catalog import open_catalog
    from sinks.iceberg import snapshot_offsets

    expected = Expected()
    produce(kafka_broker.bootstrap, topics, 60, expected)
    missing = kafka_topic_factory(partitions=PARTITIONS, config={"max.message.bytes": "64"}, prefix="dlq")
    data = two_signal_spec(tmp_path, kafka_broker.bootstrap, topics, dead_letters_topic=missing, delivery_timeout="2s")
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data))
    rc = main(["run", "--source", "kafka", "--runner", "bytewax", "--spec", str(path), "--bounded", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 3, err[-2000:]
    assert "Kafka output failed" in err and "were not delivered" in err and repr(missing) in err
    assert STATS.delivery_failures[missing] > 0
    spec = parse_spec(data)
    assert snapshot_offsets(open_catalog(spec.storage).load_table("obs.dead_letters")) == {}


@pytest.mark.kafka
def test_producer_delivery_failure_raises_and_counts(kafka_broker):
    from sinks.kafka import DeliveryError, KafkaProducerSink

    spec = parse_spec(
        {
            "name": "x",
            "sources": [],
            "flows": [],
            "kafka": {"bootstrap_servers": kafka_broker.bootstrap},
            "outputs": {"delivery_timeout": "1500ms"},
        }
    )
    sink = KafkaProducerSink.for_spec(spec, STATS)
    STATS.reset()
    for i in range(3):
        sink.produce("missing-topic-xyz", b"v", key=str(i).encode())
    with pytest.raises(DeliveryError) as e:
        sink.flush(10)
    assert "3 Kafka message(s) to missing-topic-xyz were not delivered" in str(e.value)
    assert len(e.value.failures) == 3 and sink.failed["missing-topic-xyz"] == 3
    assert STATS.delivery_failures["missing-topic-xyz"] == 3
    sink.flush(5)  # reported once; the producer is usable again


@pytest.mark.kafka
def test_publish_alerts_keyed_by_fingerprint_in_order(kafka_broker, kafka_topic_factory):
    from sinks.kafka import publish_alerts
    from transforms.alerting.events import AlertEvent

    topic, avro_topic = (
        kafka_topic_factory(partitions=PARTITIONS, prefix="alerts"),
        kafka_topic_factory(partitions=PARTITIONS, prefix="alerts"),
    )
    events = []
    for step in range(4):
        for svc in ("checkout", "auth", "search"):
            status = "firing" if step % 2 == 0 else "resolved"
            events.append(
                AlertEvent(
                    status=status,
                    rule="HighErrorRate",
                    severity="page",
                    labels={"service": svc, "alertname": "HighErrorRate"},
                    annotations={"summary": f"{svc} step {step}"},
                    value=float(step) if status == "firing" else None,
                    starts_at=1_763_000_000_000 + step * 60_000,
                    ends_at=None if status == "firing" else 1_763_000_030_000 + step * 60_000,
                    at=1_763_000_000_000 + step * 60_000,
                )
            )
    base = {"name": "x", "sources": [], "flows": [], "kafka": {"bootstrap_servers": kafka_broker.bootstrap}}
    assert publish_alerts(events, parse_spec({**base, "outputs": {"alerts_topic": topic}}), counters=STATS) == len(
        events
    )
    assert publish_alerts(
        events, parse_spec({**base, "outputs": {"alerts_topic": avro_topic, "codec": "avro"}}), counters=STATS
    ) == len(events)
    assert publish_alerts(events, parse_spec({**base, "outputs": {"alerts_topic": None}}), counters=STATS) == 0
    want = defaultdict(list)
    for e in events:
        want[e.fingerprint.encode()].append(e)
    for t, decode in ((topic, lambda v: v), (avro_topic, None)):
        got = defaultdict(list)
        for part, key, value, _ in consume_all(kafka_broker.bootstrap, t, len(events)):
            got[key].append((part, value))
        assert set(got) == set(want)
        for key, seq in got.items():
            assert len({p for p, _ in seq}) == 1  # one partition per alert: its changes stay in order
            if decode is not None:
                assert [v for _, v in seq] == [e.to_kafka() for e in want[key]]
            else:
                recs = []
                for _, v in seq:
                    assert v[0] == 0 and int.from_bytes(v[1:5], "big") == 5  # Confluent header, alert_event id
                    r = fastavro.schemaless_reader(io.BytesIO(v[5:]), avro_schema("alert_event"))
                    recs.append({k: int(x.timestamp() * 1000) if hasattr(x, "timestamp") else x for k, x in r.items()})
                assert recs == [json.loads(e.to_kafka()) for e in want[key]]


def test_outputs_spec_errors_name_the_key():
    with pytest.raises(SpecError) as e:
        parse_spec({"name": "x", "sources": [], "flows": [], "outputs": {"codec": "protobuf"}})
    assert e.value.problems[0][0] == "outputs.codec"
    with pytest.raises(SpecError) as e:
        parse_spec({"name": "x", "sources": [], "flows": [], "outputs": {"delivery_timeout": "soon"}})
    assert e.value.problems[0][0] == "outputs.delivery_timeout"
    spec = parse_spec({"name": "x", "sources": [], "flows": []})
    assert spec.outputs.alerts_topic == "alerts" and spec.outputs.dead_letters_topic is None
