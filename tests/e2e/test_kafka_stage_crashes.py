"""Issue 19 items 9-11 through a real broker (tests/pipelines/test_stage_crashes.py drives them in
process): a metric count past 2**53 (item 9), a span name holding U+001F, the RED key
separator (item 10), and a form step lasting 2**60 ms (item 11), produced to real topics
and read by ``obsflow run --source kafka --bounded`` with the default spec (traces, rollups,
RED, sessions): the run exits 0 and reconciles; the metric is a dead letter with its
reason, the span names are RED series of their own, the form step's duration is kept."""

from __future__ import annotations

import json

import pytest
import yaml
from confluent_kafka import Producer

from pipelines import DEFAULT_SPEC
from pipelines.loader import parse_spec
from tests.helpers import START_MS, read_table, run_bounded_from_kafka
from tests.helpers import iso
from tests.e2e.test_kafka_pipeline import write_spec

T = iso(START_MS - 1000)  # one second before ingest
BIG = 2**60


def span(k: int, name: str) -> dict:
    return {
        "trace_id": f"{k + 1:032x}",
        "span_id": f"{k + 1:016x}",
        "parent_span_id": None,
        "service": "checkout",
        "name": name,
        "kind": "SERVER",
        "start_time": T,
        "end_time": T,
        "status_code": "ERROR",
    }


def histogram(count: int) -> dict:
    return {
        "name": "h",
        "kind": "HISTOGRAM",
        "timestamp": T,
        "labels": {"service": "checkout"},
        "bucket_bounds": [1.0],
        "bucket_counts": [count - 1, 1],
        "count": count,
        "sum": 5.0,
    }


RECORDS = {
    "events": [
        {
            "event_id": "e1",
            "timestamp": T,
            "page": "/signup",
            "session_id": "s1",
            "user": "u",
            "events": [{"type": "form_step", "form": "signup", "step": 2, "duration_ms": BIG}],
        }
    ],
    "logs": [{"timestamp": T, "level": "ERROR", "service": "checkout", "message": "boom"}],
    "spans": [span(0, "GET \x1f/x"), span(1, "GET /x"), span(2, "a\x1fb\x1fc")],
    "metrics": [histogram(BIG + 1), histogram(3)],
}


@pytest.mark.kafka
@pytest.mark.traces
def test_stage_crash_records_through_a_real_broker(kafka_broker, kafka_topic_factory, tmp_path):
    topics = {name: kafka_topic_factory(partitions=1, config={"retention.ms": "-1"}, prefix=name) for name in RECORDS}
    p = Producer({"bootstrap.servers": kafka_broker.bootstrap, "enable.idempotence": True, "acks": "all"})
    for name, recs in RECORDS.items():
        for r in recs:
            p.produce(topics[name], value=json.dumps(r).encode(), partition=0, timestamp=START_MS)
    assert p.flush(30) == 0
    data = yaml.safe_load(DEFAULT_SPEC.read_text())
    data["storage"]["catalog"]["warehouse"] = str(tmp_path / "wh")
    data["kafka"].update(
        {
            "bootstrap_servers": kafka_broker.bootstrap,
            "poll_timeout": "200ms",
            "group_id": f"obsflow-test-{tmp_path.name}",
        }
    )
    data["outputs"] = {"alerts_topic": None, "dead_letters_topic": None}
    for s in data["sources"]:
        s["topic"] = topics[s["name"]]
        s["partitions"] = 1
    path = write_spec(tmp_path / "spec.yaml", data)
    proc = run_bounded_from_kafka(path, "bytewax")
    assert "reconciliation: in = accepted + dead-lettered + dropped: yes" in proc.stdout
    spec = parse_spec(data)
    dead = [
        (r["source_topic"], r["source_offset"], r["reason"], r["detail"])
        for r in read_table(spec, "dead_letters").to_pylist()
    ]
    detail = (
        f"count: {BIG + 1} is 2**53 or more, beyond what a rollup adds exactly; "
        "bucket_counts: a bucket count is 2**53 or more, beyond what a rollup adds exactly"
    )
    assert dead == [(topics["metrics"], 0, "schema_violation", detail)]
    assert read_table(spec, "events").column("duration_ms").to_pylist() == [BIG]
    metrics = read_table(spec, "metrics").to_pylist()
    calls = {
        dict(r["labels"])["operation"]: r["count"]
        for r in metrics
        if r["name"] == "span.calls" and r["resolution"] == "1m"
    }
    assert calls == {"GET \x1f/x": 1, "GET /x": 1, "a\x1fb\x1fc": 1}
    steps = [
        (r["count"], r["max"]) for r in metrics if r["name"] == "form.step.duration_ms" and r["resolution"] == "1m"
    ]
    assert steps == [(1, float(BIG))]
    assert [r["count"] for r in metrics if r["name"] == "h" and r["resolution"] == "1m"] == [3]
