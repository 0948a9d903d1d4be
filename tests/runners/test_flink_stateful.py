"""Stateful stages on a real Flink cluster: metric samples from Kafka go through the
metrics stage (event-time rollups) and the global stage (alert rules) of a streaming
Beam job on Flink, and the alert timeline lands exactly in ``obs.alerts`` and on the
Kafka alerts topic — the same timeline the bounded runners give
(``tests/e2e/test_alerts_pipeline.py``), and the same closed rollup windows as the Beam
DirectRunner's bounded read of the same topic.

A streaming job never flushes its stages: a window closes when the event-time
watermark (the smallest over the partitions) passes its end. The input runs to minute 12,
so every window up to the one starting at minute 10 closes, which covers the whole
timeline (the last change is the resolution at 600 s). The job runs at parallelism 2, so
the two rollup shards live on different subtasks."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest

from pipelines.loader import parse_spec
from runners.flink_rest import FlinkRest
from sinks.catalog import open_catalog
from sinks.iceberg import snapshot_offsets
from tests.fixtures.flink import flink_cluster  # noqa: F401 - the session fixture
from tests.helpers import read_table
from tests.helpers import BASE, MIN
from tests.e2e.test_alerts_pipeline import ALERTS, source
from tests.e2e.test_kafka_pipeline import TOPIC_CONFIG

pytestmark = [pytest.mark.flink, pytest.mark.kafka, pytest.mark.alerts, pytest.mark.slow]

# obs.alerts holds every state change (pending too); the Kafka alerts topic only firing / resolved
TIMELINE = [
    (120, "HighErrorRate", "a", "pending", 120, None),
    (240, "HighErrorRate", "a", "firing", 240, None),
    (240, "HighErrorRate", "b", "pending", 240, None),
    (300, "ServiceDown", "b", "firing", 300, None),
    (360, "HighErrorRate", "b", "firing", 360, None),
    (600, "HighErrorRate", "a", "resolved", 240, 600),
]
SENT = [row for row in TIMELINE if row[3] in ("firing", "resolved")]


def _secs(x) -> int | None:
    return (int(x.timestamp() * 1000) - BASE) // 1000 if x is not None else None


def _spec_data(warehouse: Path, bootstrap: str, metrics_topic: str, alerts_topic: str) -> dict:
    return {
        "name": "flink-stateful",
        "storage": {"catalog": {"warehouse": str(warehouse)}, "commit": {"max_rows": 10_000, "max_seconds": "1s"}},
        "kafka": {
            "bootstrap_servers": bootstrap,
            "group_id": f"flink-stateful-{uuid.uuid4().hex[:6]}",
            "poll_batch_size": 1,
            "poll_timeout": "100ms",
        },
        "sources": [{"name": "metrics", "topic": metrics_topic, "signal": "metric"}],
        "flows": [
            {
                "name": "m",
                "source": "metrics",
                "sink": {"table": "metrics"},
                "steps": [
                    {"kind": "validate"},
                    {
                        "kind": "rollup",
                        "shards": 4,
                        "config": {"resolutions": ["1m"], "watermark_delay": "0s", "allowed_lateness": "0s"},
                    },
                ],
            }
        ],
        "outputs": {"alerts_topic": alerts_topic},
        "alerts": ALERTS,
    }


def _produce(bootstrap: str, topic: str) -> int:
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all"})
    n = 0
    for part, records in source().parts.items():
        for value, ts in records:
            p.produce(topic, value=value, partition=part, timestamp=ts)
            n += 1
    assert p.flush(30) == 0
    return n


def _alert_rows(spec) -> list[tuple]:
    try:
        t = read_table(spec, "alerts")
    except Exception:  # noqa: BLE001 - not created yet
        return []
    rows = t.sort_by([("ts", "ascending"), ("rule", "ascending"), ("status", "ascending")]).to_pylist()
    return [
        (
            _secs(r["ts"]),
            r["rule"],
            dict(r["labels"])["service"],
            r["status"],
            _secs(r["starts_at"]),
            _secs(r["ends_at"]),
        )
        for r in rows
    ]


def _topic_alerts(bootstrap: str, topic: str, want: int, timeout: float = 60) -> list[dict]:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"check-{uuid.uuid4().hex[:6]}", "enable.auto.commit": False}
    )
    c.assign([TopicPartition(topic, 0, 0)])
    got: list[dict] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and len(got) < want + 1:
            for m in c.consume(100, 1.0):
                if m.error() is None:
                    rec = json.loads(m.value())
                    assert m.key().decode() == str(rec["fingerprint"])  # keyed by fingerprint, for ordering
                    got.append(rec)
            if len(got) >= want:
                deadline = min(deadline, time.monotonic() + 3)  # a little longer: nothing more may come
    finally:
        c.close()
    return got


def _closed_windows(spec, before_s: int) -> list[tuple]:
    t = read_table(spec, "metrics")
    out = []
    for r in t.to_pylist():
        start = _secs(r["window_start"])
        if start < before_s:
            out.append(
                (start, r["name"], tuple(sorted(dict(r["labels"]).items())), r["resolution"], r["count"], r["last"])
            )
    return sorted(out, key=repr)


def test_metric_rollups_and_alert_timeline_on_flink(flink_cluster, kafka_broker, kafka_topic_factory, tmp_path):  # noqa: F811
    from runners.beam.flink import submit
    from runners.beam.run import run as run_beam
    from runners.job import RunRequest
    from runners.stats import STATS

    metrics_topic = kafka_topic_factory(partitions=2, config=TOPIC_CONFIG, prefix="metrics")
    alerts_topic = kafka_topic_factory(partitions=1, config=TOPIC_CONFIG, prefix="alerts")
    produced = _produce(kafka_broker.bootstrap, metrics_topic)
    assert produced == 36

    # the reference: Beam's DirectRunner, bounded read of the same topic
    ref = parse_spec(
        {
            **_spec_data(tmp_path / "ref", kafka_broker.bootstrap, metrics_topic, alerts_topic),
            "outputs": {"alerts_topic": None},
        }
    )
    STATS.reset()
    run_beam(RunRequest(spec=ref, runner="beam", source="kafka", bounded=True))
    assert _alert_rows(ref) == TIMELINE

    spec = parse_spec(_spec_data(tmp_path / "wh", kafka_broker.bootstrap, metrics_topic, alerts_topic))
    pool = f"127.0.0.1:{flink_cluster.ensure_worker_pool()}"
    rest = FlinkRest(flink_cluster.master)
    sub = submit(
        spec, flink_cluster.master, worker_pool=pool, parallelism=2, job_name=f"obsflow-stateful-{uuid.uuid4().hex[:6]}"
    )
    try:
        assert sub.job.state == "RUNNING"
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and len(_alert_rows(spec)) < len(TIMELINE):
            assert rest.state(sub.job.jid) == "RUNNING"
            time.sleep(1.0)
        time.sleep(3.0)  # anything more would be a duplicate
        assert _alert_rows(spec) == TIMELINE
        on_topic = _topic_alerts(kafka_broker.bootstrap, alerts_topic, len(SENT))
        assert [(r["rule"], r["labels"]["service"], r["status"]) for r in on_topic] == [
            (rule, service, status) for _, rule, service, status, _, _ in SENT
        ]
        # every window that closed on Flink (up to minute 10) equals the DirectRunner's
        closed = _closed_windows(spec, 11 * MIN // 1000)
        assert len(closed) == 11 * 3  # 11 minutes × 3 series (err_rate a, err_rate b, up b)
        assert closed == _closed_windows(ref, 11 * MIN // 1000)
        # at parallelism 2 the two rollup shards run on different subtasks; the stage tables
        # still record positions, because each table has one writer that hears every shard
        cat = open_catalog(spec.storage)
        for name in ("metrics", "alerts"):
            pos = snapshot_offsets(cat.load_table(f"obs.{name}"))
            assert set(pos) == {f"{metrics_topic}:0", f"{metrics_topic}:1"}, (name, pos)
            assert all(0 < v <= len(source().parts[int(k.rsplit(":", 1)[1])]) for k, v in pos.items()), (name, pos)
    finally:
        rest.cancel(sub.job.jid)
        assert rest.wait_for_state(sub.job.jid, {"CANCELED"}, timeout=60) == "CANCELED"


@pytest.mark.traces
def test_idle_advance_decides_slow_traces_on_flink_while_no_input_arrives(
    flink_cluster,  # noqa: F811
    kafka_broker,  # noqa: F811
    kafka_topic_factory,
    tmp_path,
):
    """The streaming job on Flink, input stopped: a slow trace is decided by the idle
    advance (processing-time timers of ``IdleStageDoFn``), ``decision_wait`` (4 s) of
    wall time after its spans arrived and not before; after a further 20 s of idle
    (twenty idle periods of 1 s, the timers re-armed on each) a second slow trace is
    decided the same way, and neither is written twice."""
    from confluent_kafka import Producer

    from runners.beam.flink import submit
    from tests.pipelines.test_idle_advance import _idle_spec, _slow_trace_otlp

    topic = kafka_topic_factory(partitions=1, prefix="idle-spans-flink")
    spec = parse_spec(_idle_spec(tmp_path, kafka_broker.bootstrap, topic))
    pool = f"127.0.0.1:{flink_cluster.ensure_worker_pool()}"
    rest = FlinkRest(flink_cluster.master)
    sub = submit(
        spec, flink_cluster.master, worker_pool=pool, parallelism=1, job_name=f"obsflow-idle-{uuid.uuid4().hex[:6]}"
    )
    producer = Producer({"bootstrap.servers": kafka_broker.bootstrap, "enable.idempotence": True})

    def traces() -> list[dict]:
        try:
            return read_table(spec, "traces").to_pylist()
        except Exception:  # noqa: BLE001 - the job has not created the table yet
            return []

    def decide_one(already: int) -> tuple[str, float, list[dict]]:
        payload, trace_id = _slow_trace_otlp()
        producer.produce(topic, payload, partition=0)  # the trace's spans; then nothing more
        assert producer.flush(30) == 0
        produced_at = time.monotonic()
        got: list[dict] = []
        while time.monotonic() - produced_at < 90 and not got:
            assert rest.state(sub.job.jid) == "RUNNING"
            got = [r for r in traces() if r["trace_id"] == trace_id]
            time.sleep(0.5)
        took = time.monotonic() - produced_at
        assert got, f"trace {already + 1} was not decided while no more input arrived"
        return trace_id, took, got

    try:
        assert sub.job.state == "RUNNING"
        first, took, rows = decide_one(0)
        assert took >= 4.0  # decision_wait of wall time
        assert [(r["sampling_policy"], r["span_count"], r["root_name"]) for r in rows] == [
            ("slow", 2, "POST /checkout")
        ]
        time.sleep(20.0)  # idle, the stage's timers firing and re-arming
        second, took, rows = decide_one(1)
        assert took >= 4.0
        assert [(r["sampling_policy"], r["span_count"]) for r in rows] == [("slow", 2)]
        time.sleep(3.0)  # anything more would be a duplicate
        assert sorted(r["trace_id"] for r in traces()) == sorted([first, second])
        spans = sorted((r["trace_id"] == first, r["name"]) for r in read_table(spec, "spans").to_pylist())
        assert spans == [(False, "POST /checkout"), (False, "charge"), (True, "POST /checkout"), (True, "charge")]
    finally:
        rest.cancel(sub.job.jid)
        assert rest.wait_for_state(sub.job.jid, {"CANCELED"}, timeout=60) == "CANCELED"
