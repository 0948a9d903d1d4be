"""Issue 19 item 3 through a real broker and the real Iceberg sink: OTLP messages as the
Collector's Kafka exporter writes them, some with bad spans or log records and one of
~95 kB (over validate.max_bytes, under the Collector's 1,000,000-byte bound). The run
exits 0 and reconciles at both levels; the bad items are dead letters of their own with
``item_index`` and their bytes; every good span and log record is in its table."""

from __future__ import annotations

import time

import pytest
import yaml
from confluent_kafka import Producer
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from pipelines import DEFAULT_SPEC
from pipelines.loader import parse_spec
from tests.helpers import read_table, run_bounded_from_kafka

RES = Resource(attributes=[KeyValue(key="service.name", value=AnyValue(string_value="checkout"))])
pytestmark = [pytest.mark.kafka, pytest.mark.traces]


def spans_msg(spans):
    return ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(resource=RES, scope_spans=[ScopeSpans(spans=spans)])]
    )


def make_span(trace: int, k: int, t0: int, **fields) -> Span:
    f = {
        "trace_id": trace.to_bytes(16, "big"),
        "span_id": (trace * 1000 + k + 1).to_bytes(8, "big"),
        "name": f"op {k}",
        "kind": 2,
        "start_time_unix_nano": t0,
        "end_time_unix_nano": t0 + 5_000_000,
        "status": Status(code=2, message="boom"),
    }
    f.update(fields)
    return Span(**f)


@pytest.mark.parametrize("runner", ["bytewax", "beam"])
def test_otlp_items_accepted_alone_through_kafka(runner, kafka_broker, kafka_topic_factory, tmp_path):
    t0 = time.time_ns() - 5_000_000_000
    spans_topic = kafka_topic_factory(partitions=1, prefix="otlp_spans")
    logs_topic = kafka_topic_factory(partitions=1, prefix="otlp_logs")
    a = [make_span(1, k, t0) for k in range(20)]
    a[5] = make_span(1, 5, t0, start_time_unix_nano=0)
    a[9] = make_span(1, 9, t0, end_time_unix_nano=t0 - 1_000_000)
    a[12] = make_span(1, 12, t0, span_id=b"")
    pad = [KeyValue(key="payload", value=AnyValue(string_value="p" * 250))]
    big = [make_span(2 + k // 100, k % 100, t0, attributes=pad) for k in range(300)]
    big_msg = spans_msg(big).SerializeToString()
    assert 65_536 < len(big_msg) < 1_000_000
    logs = [
        LogRecord(time_unix_nano=t0 + k, severity_number=17, body=AnyValue(string_value=f"line {k}")) for k in range(5)
    ]
    logs[2] = LogRecord(severity_number=17, body=AnyValue(string_value="no time"))
    log_msg = ExportLogsServiceRequest(
        resource_logs=[ResourceLogs(resource=RES, scope_logs=[ScopeLogs(log_records=logs)])]
    )
    p = Producer(
        {
            "bootstrap.servers": kafka_broker.bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "message.max.bytes": 1_000_000,
        }
    )
    for v in (spans_msg(a).SerializeToString(), b"\x0a\xff\x01 not protobuf", big_msg):
        p.produce(spans_topic, v, partition=0)
    p.produce(logs_topic, log_msg.SerializeToString(), partition=0)
    assert p.flush(30) == 0

    d = yaml.safe_load(DEFAULT_SPEC.read_text())
    d["storage"]["catalog"]["warehouse"] = str(tmp_path / "wh")
    d["kafka"].update(
        {"bootstrap_servers": kafka_broker.bootstrap, "group_id": f"items-{tmp_path.name}", "poll_timeout": "200ms"}
    )
    d["sources"] = [
        {"name": "logs", "topic": logs_topic, "signal": "log", "codec": "otlp_proto"},
        {"name": "spans", "topic": spans_topic, "signal": "span", "codec": "otlp_proto"},
    ]
    d["flows"] = [f for f in d["flows"] if f["source"] in ("logs", "spans")]
    d.pop("alerts", None)
    for f in d["flows"]:
        for st in f["steps"]:
            if st["kind"] == "tail_sample":
                st["sampler"]["policies"] = [
                    {"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}}
                ]
            if st["kind"] == "log_sample":
                st["config"] = {"sampling_percentage": 100}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(d))
    proc = run_bounded_from_kafka(path, runner)
    out = proc.stdout
    assert "4 records in" in out and "3 accepted, 1 dead-lettered, 0 dropped" in out, out
    # items: 20 + 1 (unreadable message) + 300 spans, 5 log records; dead: 3 spans, the message, 1 log record
    assert "OTLP items (spans, log records, data points): 326 in, 321 accepted, 5 dead-lettered, 0 dropped" in out, out
    assert "reconciliation: in = accepted + dead-lettered + dropped: yes" in out, out

    spec = parse_spec(d)
    dead = sorted(
        read_table(spec, "dead_letters").to_pylist(),
        key=lambda r: (r["source_topic"], r["source_offset"], r["item_index"] or -1),
    )
    assert [(r["source_topic"], r["source_offset"], r["item_index"], r["reason"]) for r in dead] == [
        (logs_topic, 0, 2, "schema_violation"),
        (spans_topic, 0, 5, "schema_violation"),
        (spans_topic, 0, 9, "schema_violation"),
        (spans_topic, 0, 12, "schema_violation"),
        (spans_topic, 1, None, "format_violation"),
    ]
    assert dead[0]["raw"] == logs[2].SerializeToString()
    assert [r["raw"] for r in dead[1:4]] == [
        a[5].SerializeToString(),
        a[9].SerializeToString(),
        a[12].SerializeToString(),
    ]
    assert all(r["detail"] for r in dead)
    spans = read_table(spec, "spans").select(["span_id", "source_offset"]).to_pylist()
    want = {s.span_id.hex() for k, s in enumerate(a) if k not in (5, 9, 12)} | {s.span_id.hex() for s in big}
    assert sorted(r["span_id"] for r in spans) == sorted(want)
    got_logs = read_table(spec, "logs").select(["message"]).to_pylist()
    assert sorted(r["message"] for r in got_logs) == ["line 0", "line 1", "line 3", "line 4"]
