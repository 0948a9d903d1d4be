"""Kafka topics a spec reads and writes, against a real broker: every missing one named at
once before a run starts (the alerts topic too), `obsflow topics list|create`, and a
delivery failure to the alerts topic mid-run that ends with exit 3 and obsflow's one-line
reason last (issue 19 item 14, issue 13 items 5 and 9)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from pipelines import DEFAULT_SPEC

pytestmark = pytest.mark.kafka

ALERT_RULES = {
    "rules": [
        {
            "name": "SlowCheckout",
            "select": {"metric": "http.latency_ms", "value": "p99"},
            "op": ">",
            "threshold": 1000,
            "severity": "P2",
        }
    ],
    "route": {"group_by": ["alertname"], "group_wait": "0s"},
}


def obsflow(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "runners.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=600,
    )


def metrics_spec(tmp_path: Path, bootstrap: str, sources: list[dict], alerts_topic: str | None) -> Path:
    """The default spec's metric flow (no derive rules) over the metric ``sources``, a plain
    log flow over the log ones, one alert rule."""
    d = yaml.safe_load(DEFAULT_SPEC.read_text())
    d["storage"]["catalog"]["warehouse"] = str(tmp_path / "wh")
    d["kafka"].update(
        {
            "bootstrap_servers": bootstrap,
            "group_id": f"topics-{tmp_path.name}",
            "poll_timeout": "200ms",
            "connect_retries": 0,
        }
    )
    d["sources"] = sources
    flow = next(f for f in d["flows"] if f["source"] == "metrics")
    for st in flow["steps"]:
        st.pop("derive", None)
    d["flows"] = [
        {**flow, "name": f"m{i}", "source": s["name"]}
        if s["signal"] == "metric"
        else {
            "name": f"l{i}",
            "source": s["name"],
            "steps": [{"kind": "validate"}, {"kind": "scrub"}],
            "sink": {"table": "logs"},
        }
        for i, s in enumerate(sources)
    ]
    d["alerts"] = ALERT_RULES
    d["outputs"] = {"alerts_topic": alerts_topic, "delivery_timeout": "3s", "flush_timeout": "10s"}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(d))
    return path


def _delete(broker, names) -> None:
    existing = broker.topics()
    for n in names:
        if n in existing:
            broker.delete_topic(n)


def test_run_names_every_missing_topic_at_once(kafka_broker, kafka_topic_factory, tmp_path):
    """Two missing source topics and the alerts topic: one line names all three with their
    key paths and the command that creates them (the old code named only the first
    source topic, and the alerts topic failed only when the first alert fired)."""
    have = kafka_topic_factory(partitions=1)
    tag = uuid.uuid4().hex[:6]
    m1, m2, alerts = f"nosuch-a-{tag}", f"nosuch-b-{tag}", f"nosuch-alerts-{tag}"
    spec = metrics_spec(
        tmp_path,
        kafka_broker.bootstrap,
        [
            {"name": "metrics", "topic": have, "signal": "metric", "codec": "otlp_proto"},
            {"name": "logs_a", "topic": m1, "signal": "log"},
            {"name": "logs_b", "topic": m2, "signal": "log"},
        ],
        alerts,
    )
    r = obsflow("run", "--source", "kafka", "--bounded", "--runner", "bytewax", "--spec", str(spec), "--no-progress")
    assert r.returncode == 2, r.stderr[-3000:]
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert lines[0] == (
        f"obsflow: Kafka topic '{m1}' (sources[1].topic) does not exist on {kafka_broker.bootstrap}, "
        f"nor do '{m2}' (sources[2].topic) and '{alerts}' (outputs.alerts_topic): create them with `obsflow topics create --spec {spec}` (or Kafka's own tools, e.g. "
        f"`kafka-topics.sh --bootstrap-server {kafka_broker.bootstrap} --create --topic {m1} --partitions 4`); "
        f"or point the spec at existing topics."
    )
    assert not (tmp_path / "wh").exists()  # nothing started


def test_topics_create_and_list_from_the_spec(kafka_broker, tmp_path):
    """`obsflow topics list` shows what is missing; `create` makes every topic the spec
    names with the spec's partitions (sources) and the largest for outputs; a second
    `create` changes nothing; then the run's start check passes."""
    tag = uuid.uuid4().hex[:6]
    a, b, alerts, dlq = f"tc-a-{tag}", f"tc-b-{tag}", f"tc-alerts-{tag}", f"tc-dlq-{tag}"
    spec = metrics_spec(
        tmp_path,
        kafka_broker.bootstrap,
        [
            {"name": "metrics", "topic": a, "signal": "metric", "partitions": 3},
            {"name": "more", "topic": b, "signal": "log", "partitions": 2},
        ],
        alerts,
    )
    data = yaml.safe_load(spec.read_text())
    data["outputs"]["dead_letters_topic"] = dlq
    spec.write_text(yaml.safe_dump(data))
    try:
        before = obsflow("topics", "list", "--spec", str(spec))
        assert before.returncode == 0, before.stderr
        rows = [line.split() for line in before.stdout.splitlines()[2:] if line.strip()]
        assert rows[:4] == [
            [a, "sources[0].topic", "source", "metrics", "missing", "-"],
            [b, "sources[1].topic", "source", "more", "missing", "-"],
            [alerts, "outputs.alerts_topic", "alerts", "output", "missing", "-"],
            [dlq, "outputs.dead_letters_topic", "dead", "letters", "output", "missing", "-"],
        ]
        assert before.stdout.splitlines()[-1] == f"4 missing: create with `obsflow topics create --spec {spec}`"

        made = obsflow("topics", "create", "--spec", str(spec))
        assert made.returncode == 0, made.stderr
        assert made.stdout.splitlines() == [
            f"{a}  (sources[0].topic, source metrics): created",
            f"{b}  (sources[1].topic, source more): created",
            f"{alerts}  (outputs.alerts_topic, alerts output): created",
            f"{dlq}  (outputs.dead_letters_topic, dead letters output): created",
            f"4 topics created on {kafka_broker.bootstrap}",
        ]
        md = kafka_broker.admin().list_topics(timeout=10).topics
        assert {n: len(md[n].partitions) for n in (a, b, alerts, dlq)} == {a: 3, b: 2, alerts: 3, dlq: 3}

        again = obsflow("topics", "create", "--spec", str(spec))
        assert (
            again.returncode == 0 and again.stdout.splitlines()[-1] == f"0 topics created on {kafka_broker.bootstrap}"
        )
        after = obsflow("topics", "list", "--spec", str(spec))
        rows = [line.split() for line in after.stdout.splitlines()[2:] if line.strip()]
        assert [(r[0], r[-2], r[-1]) for r in rows] == [
            (a, "3", "1"),
            (b, "2", "1"),
            (alerts, "3", "1"),
            (dlq, "3", "1"),
        ]

        from pipelines.loader import load_spec
        from runners.topics import check_topics

        check_topics(load_spec(spec))  # nothing missing now
    finally:
        _delete(kafka_broker, [a, b, alerts, dlq])


def _otlp_metrics_payload() -> bytes:
    """One OTLP export whose http.latency_ms p99 (3000 ms) fires the SlowCheckout rule."""
    from opentelemetry.exporter.otlp.proto.common._internal.metrics_encoder import (
        encode_metrics,
    )
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.resources import Resource

    reader = InMemoryMetricReader()
    provider = MeterProvider(resource=Resource.create({"service.name": "checkout"}), metric_readers=[reader])
    hist = provider.get_meter("shop").create_histogram("http.latency_ms")
    for v in (12.0, 80.0, 250.0, 3000.0):
        hist.record(v, {"route": "/checkout"})
    payload = encode_metrics(reader.get_metrics_data()).SerializeToString()
    provider.shutdown()
    return payload


@pytest.mark.parametrize("runner", ["bytewax", "beam"])
def test_alert_delivery_failure_mid_run_ends_with_one_line(runner, kafka_broker, kafka_topic_factory, tmp_path):
    """The alerts topic exists (the start check passes) but refuses the alert when it fires
    (``max.message.bytes`` below the message): the run ends with exit 3 and obsflow's
    one-line reason is the last thing printed, even with RUST_BACKTRACE set (the old code
    ended in a Rust panic and an abort, exit 134, on Bytewax)."""
    from confluent_kafka import Producer

    metrics = kafka_topic_factory(partitions=1)
    alerts = kafka_topic_factory(partitions=1, config={"max.message.bytes": "64"}, prefix="alerts")
    p = Producer({"bootstrap.servers": kafka_broker.bootstrap})
    p.produce(metrics, _otlp_metrics_payload(), partition=0)
    assert p.flush(30) == 0
    spec = metrics_spec(
        tmp_path,
        kafka_broker.bootstrap,
        [{"name": "metrics", "topic": metrics, "signal": "metric", "codec": "otlp_proto"}],
        alerts,
    )
    r = obsflow(
        "run",
        "--source",
        "kafka",
        "--bounded",
        "--runner",
        runner,
        "--spec",
        str(spec),
        "--no-progress",
        env={"RUST_BACKTRACE": "1"},
    )
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 3, (r.returncode, r.stderr[-3000:])
    assert lines[-1].startswith(f"obsflow: Kafka output failed: 1 Kafka message(s) to {alerts} were not delivered: "), (
        lines[-1]
    )
    assert "apitools" not in r.stderr
