"""The door end to end, with real parts: the OpenTelemetry Python SDK's OTLP/HTTP
exporters (traces, logs, metrics; protobuf, gzip) and plain HTTP product events (JSON
array in the compact shape, NDJSON, the sendBeacon route, the GIF pixel) → ``obsflow
collect`` → the real broker → ``obsflow run --source kafka --bounded`` → the tables, exact."""

from __future__ import annotations

import gzip
import json
import time
import urllib.parse

import orjson
import pytest
import requests
from confluent_kafka import Consumer, TopicPartition
from opentelemetry import trace
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, LogRecordExportResult, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricExportResult
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

from pipelines.loader import parse_spec
from runners.job import RunRequest
from tests.collect.conftest import collect_spec_dict
from tests.helpers import read_table

pytestmark = [pytest.mark.collect, pytest.mark.kafka]


def sdk_telemetry():
    """Two traces of checkout (one failing, 3 spans; one quick, 1 span), 3 log records, a counter and a histogram."""
    now = time.time_ns()
    resource = Resource.create({"service.name": "checkout", "host.name": "web-1"})
    spans_out = InMemorySpanExporter()
    tp = TracerProvider(resource=resource)
    tp.add_span_processor(SimpleSpanProcessor(spans_out))
    tracer = tp.get_tracer("shop")
    logs_out = InMemoryLogRecordExporter()
    lp = LoggerProvider(resource=resource)
    lp.add_log_record_processor(SimpleLogRecordProcessor(logs_out))
    logger = lp.get_logger("shop")
    root = tracer.start_span("POST /checkout", kind=SpanKind.SERVER, start_time=now - 3_000_000_000)
    ctx = trace.set_span_in_context(root)
    pay = tracer.start_span("POST payments", kind=SpanKind.CLIENT, context=ctx, start_time=now - 2_900_000_000)
    for i in range(20):
        pay.set_attribute(f"attr.{i}", f"value-{i}")
    pay.set_status(Status(StatusCode.ERROR, "card declined"))
    logger.emit(
        timestamp=now - 2_800_000_000,
        context=trace.set_span_in_context(pay),
        severity_number=SeverityNumber.ERROR,
        severity_text="ERROR",
        body="card declined for jane@example.org",
    )
    pay.end(end_time=now - 2_700_000_000)
    db = tracer.start_span("SELECT orders", kind=SpanKind.CLIENT, context=ctx, start_time=now - 2_600_000_000)
    db.end(end_time=now - 2_500_000_000)
    root.set_status(Status(StatusCode.ERROR))
    root.end(end_time=now - 2_000_000_000)
    quick = tracer.start_span("GET /health", kind=SpanKind.SERVER, start_time=now - 1_000_000_000)
    quick.end(end_time=now - 999_000_000)
    logger.emit(
        timestamp=now - 900_000_000, severity_number=SeverityNumber.WARN, severity_text="WARN", body="pool at 90%"
    )
    logger.emit(timestamp=now - 800_000_000, severity_number=SeverityNumber.INFO, severity_text="INFO", body="started")
    tp.shutdown()
    lp.shutdown()
    reader = InMemoryMetricReader()
    mp = MeterProvider(resource=Resource.create({"service.name": "checkout"}), metric_readers=[reader])
    meter = mp.get_meter("shop")
    meter.create_counter("http.requests").add(5, {"route": "/checkout"})
    hist = meter.create_histogram("http.latency_ms")
    for v in (12.0, 80.0, 250.0):
        hist.record(v, {"route": "/checkout"})
    metrics = reader.get_metrics_data()
    mp.shutdown()
    return spans_out.get_finished_spans(), logs_out.get_finished_logs(), metrics


def iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"


def read_topic(bootstrap: str, topic: str) -> list:
    """Every committed message of ``topic`` (all partitions, to the high watermark)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"read-{time.time_ns()}", "enable.auto.commit": False})
    md = c.list_topics(topic, timeout=10).topics[topic]
    out = []
    for p in md.partitions:
        lo, hi = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
        if hi <= lo:
            continue
        c.assign([TopicPartition(topic, p, lo)])
        # committed records only (read_committed): transaction markers and aborted records take offsets too
        deadline = time.monotonic() + 30
        while c.position([TopicPartition(topic, p)])[0].offset < hi:
            assert time.monotonic() < deadline, f"{topic}[{p}]: timed out at {len(out)} records, below offset {hi}"
            m = c.poll(0.5)
            if m is None or m.error():
                continue
            out.append(m)
        c.unassign()
    c.close()
    return out


def door_rejected(msg) -> tuple[str, str] | None:
    """``(reason, detail)`` of a message the door wrote as a reject (its verdict headers), else None."""
    h = dict(msg.headers() or [])
    return (h["obsflow_reject"].decode(), h["obsflow_reject_detail"].decode()) if "obsflow_reject" in h else None


def test_sdk_exporters_and_http_events_reach_the_tables(kafka_broker, collect_topics, tmp_path, start_collector):
    d = collect_spec_dict(tmp_path, kafka_broker.bootstrap, collect_topics)
    c = start_collector(d)
    spans, logs, metrics = sdk_telemetry()
    # the SDK's own OTLP/HTTP exporters, unchanged but for the endpoint (gzip for traces)
    assert (
        OTLPSpanExporter(endpoint=c.url + "/v1/traces", compression=Compression.Gzip).export(spans)
        == SpanExportResult.SUCCESS
    )
    assert OTLPLogExporter(endpoint=c.url + "/v1/logs").export(logs) == LogRecordExportResult.SUCCESS
    assert OTLPMetricExporter(endpoint=c.url + "/v1/metrics").export(metrics) == MetricExportResult.SUCCESS

    now = int(time.time() * 1000)
    compact = [  # the design's compact shape, a JSON array
        {
            "page": "/signup",
            "timeStamp": now - 5000,
            "session_id": "s-a",
            "user": "u-1",
            "events": [
                {"page_view": {}},
                {"click": "#next"},
                {"scroll": "50%"},
                {"error": {"stackTrace": "at f (app.js:1)", "message": "boom"}},
            ],
        },
        {
            "page": "/pricing",
            "timestamp": iso(now - 4000),
            "session_id": "s-b",
            "event_id": "e-b",
            "events": [{"type": "page_view"}],
        },
        {"page": 7, "session_id": "s-c", "events": []},  # rejected at the door: page not a string
    ]
    # no trusted proxies: X-Forwarded-For is not believed, whoever sends it (loopback too)
    r = requests.post(
        c.url + "/v1/events", json=compact, headers={"X-Obsflow-Sent-At": iso(now), "X-Forwarded-For": "198.51.100.9"}
    )
    body = r.json()
    assert r.status_code == 200 and (body["accepted"], body["rejected"]) == (2, 1)
    assert body["results"][2]["reason"] == "schema_violation"
    ndjson = b"\n".join(
        orjson.dumps(
            {
                "page": "/docs",
                "timestamp": iso(now - 3000),
                "session_id": "s-d",
                "event_id": f"n-{i}",
                "events": [{"type": "click", "target": f"#b{i}"}],
            }
        )
        for i in range(3)
    )
    r = requests.post(
        c.url + "/v1/events",
        data=gzip.compress(ndjson),
        headers={"Content-Type": "application/x-ndjson", "Content-Encoding": "gzip"},
    )
    assert r.status_code == 200 and r.json()["accepted"] == 3
    beacon = json.dumps(
        {
            "batch": [
                {
                    "page": "/bye",
                    "timestamp": iso(now - 2000),
                    "session_id": "s-e",
                    "event_id": "bcn",
                    "events": [{"type": "form_step", "form": "signup", "step": 2, "duration_ms": 1500}],
                }
            ],
            "sent_at": iso(now - 1000),
        }
    )
    r = requests.post(c.url + "/v1/beacon", data=beacon, headers={"Content-Type": "text/plain;charset=UTF-8"})
    assert r.status_code == 200
    q = urllib.parse.urlencode({"page": "/nojs", "session_id": "s-f", "event_id": "px", "ts": str(now - 1500)})
    r = requests.get(c.url + "/v1/pixel.gif?" + q)
    assert r.status_code == 200 and r.headers["content-type"] == "image/gif" and r.content.startswith(b"GIF89a")

    # what Kafka holds: spans keyed by trace id, events by session, stamps in headers
    span_msgs = read_topic(kafka_broker.bootstrap, collect_topics["span"])
    tids = {format(s.context.trace_id, "032x") for s in spans}
    assert sorted(m.key().decode() for m in span_msgs) == sorted(tids)  # one message per trace
    ev_msgs = read_topic(kafka_broker.bootstrap, collect_topics["event"])
    rejected = [m for m in ev_msgs if door_rejected(m)]  # the door's reject travels on the topic with its verdict
    assert [(door_rejected(m)[0], m.key()) for m in rejected] == [("schema_violation", b"s-c")]
    ev_msgs = [m for m in ev_msgs if not door_rejected(m)]
    assert sorted(m.key().decode() for m in ev_msgs) == ["s-a", "s-b", "s-d", "s-d", "s-d", "s-e", "s-f"]
    by_id = {orjson.loads(m.value())["event_id"]: m for m in ev_msgs}
    heads = dict(by_id["bcn"].headers())
    assert heads["sent_at"].decode() == iso(now - 1000) and abs(int(heads["received_at"]) - now) < 600_000
    assert dict(by_id["e-b"].headers())["sent_at"].decode() == iso(now)
    assigned = [k for k in by_id if k.startswith("d-")]
    assert len(assigned) == 1 and len(assigned[0]) == 34
    env_a = orjson.loads(by_id[assigned[0]].value())
    assert env_a["events"] == [
        {"type": "page_view"},
        {"type": "click", "target": "#next"},
        {"type": "scroll", "depth": 0.5},
        {"type": "error", "stackTrace": "at f (app.js:1)", "message": "boom"},
    ]
    assert env_a["client_ip"] == "127.0.0.1" and env_a["timestamp"] == iso(now - 5000)

    spec = parse_spec(d)
    from runners.bytewax.run import run

    run(RunRequest(spec=spec, runner="bytewax", source="kafka", bounded=True))

    got_spans = {r["span_id"]: r for r in read_table(spec, "spans").to_pylist()}
    assert set(got_spans) == {format(s.context.span_id, "016x") for s in spans}
    for s in spans:
        row = got_spans[format(s.context.span_id, "016x")]
        assert (row["trace_id"], row["name"], row["service"], row["status_code"]) == (
            format(s.context.trace_id, "032x"),
            s.name,
            "checkout",
            s.status.status_code.name,
        )
    log_rows = sorted((r["level"], r["message"]) for r in read_table(spec, "logs").to_pylist())
    assert log_rows == [("ERROR", "card declined for [EMAIL]"), ("INFO", "started"), ("WARN", "pool at 90%")]
    mrows = read_table(spec, "metrics").to_pylist()
    assert sum(r["count"] for r in mrows if r["name"] == "span.calls") == len(spans)
    by_name = {r["name"]: r for r in mrows if r["resolution"] == "1m" and r["name"].startswith("http.")}
    assert dict(by_name["http.requests"]["labels"]) == {"route": "/checkout", "service": "checkout"}
    assert by_name["http.requests"]["last"] == 5.0
    assert (by_name["http.latency_ms"]["count"], by_name["http.latency_ms"]["sum"]) == (3, 342.0)
    ev = sorted((r["session_id"], r["event_type"], r["target"]) for r in read_table(spec, "events").to_pylist())
    assert ev == sorted(
        [
            ("s-a", "page_view", None),
            ("s-a", "click", "#next"),
            ("s-a", "scroll", None),
            ("s-a", "error", None),
            ("s-b", "page_view", None),
            ("s-d", "click", "#b0"),
            ("s-d", "click", "#b1"),
            ("s-d", "click", "#b2"),
            ("s-e", "form_step", None),
            ("s-f", "page_view", None),
        ]
    )
    # the pipeline accepted all the door accepted; the door's reject is its one dead letter, at its offset in the topic
    dead = [
        (r["reason"], r["source_topic"], r["source_partition"], r["source_offset"])
        for r in read_table(spec, "dead_letters").to_pylist()
    ]
    assert dead == [("schema_violation", collect_topics["event"], rejected[0].partition(), rejected[0].offset())]
