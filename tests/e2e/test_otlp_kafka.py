"""Real OpenTelemetry data through a real Kafka broker: spans and logs made with the
OpenTelemetry Python SDK (nested spans, an error, a slow trace without errors, a quick
one; logs inside and outside a trace), encoded with the OTLP exporter's own encoder exactly as the Collector's Kafka
exporter writes them (otlp_proto), produced to Kafka, and found in obs.spans, obs.traces,
obs.logs and the RED rows of obs.metrics — on both runners."""

import time

import pytest
import yaml
from confluent_kafka import Producer
from opentelemetry import trace
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.common._internal._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.common._internal.trace_encoder import encode_spans
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

from pipelines import DEFAULT_SPEC
from pipelines.loader import parse_spec
from runners.job import RunRequest
from runners.stats import STATS
from tests.helpers import read_table

pytestmark = [pytest.mark.kafka, pytest.mark.traces]


def make_telemetry():
    """Three traces from a checkout service: one with a failing payment call and a slow
    consumer, one slow without errors (6.1 s, nested), one quick; plus log records inside
    the first trace and outside any trace."""
    now = time.time_ns()
    resource = Resource.create(
        {"service.name": "checkout", "host.name": "web-1", "deployment.environment.name": "prod", "deploy.replicas": 3}
    )
    spans_out = InMemorySpanExporter()
    tp = TracerProvider(resource=resource)
    tp.add_span_processor(SimpleSpanProcessor(spans_out))
    tracer = tp.get_tracer("shop.checkout")
    logs_out = InMemoryLogRecordExporter()
    lp = LoggerProvider(resource=resource)
    lp.add_log_record_processor(SimpleLogRecordProcessor(logs_out))
    logger = lp.get_logger("shop.checkout")

    root = tracer.start_span("POST /checkout", kind=SpanKind.SERVER, start_time=now - 9_000_000_000)
    ctx = trace.set_span_in_context(root)
    pay = tracer.start_span("POST payments", kind=SpanKind.CLIENT, context=ctx, start_time=now - 8_900_000_000)
    pay.set_status(Status(StatusCode.ERROR, "card declined"))
    pay.set_attributes(
        {
            "http.response.status_code": 402,
            "payment.retry": True,
            "payment.amount": 12.5,
            "payment.id": "p-17",
            "payment.big": 2**53 + 3,
        }
    )
    logger.emit(
        timestamp=now - 8_800_000_000,
        context=trace.set_span_in_context(pay),
        severity_number=SeverityNumber.INFO,
        severity_text="INFO",
        body="charging card for user jane@example.org",
    )
    pay.end(end_time=now - 8_700_000_000)
    slow = tracer.start_span("consume order", kind=SpanKind.CONSUMER, context=ctx, start_time=now - 8_600_000_000)
    slow.end(end_time=now - 1_100_000_000)  # 7.5 s
    root.set_status(Status(StatusCode.ERROR, "upstream failed"))
    root.end(end_time=now - 1_000_000_000)
    export = tracer.start_span("GET /export", kind=SpanKind.SERVER, start_time=now - 7_000_000_000)
    query = tracer.start_span(
        "query warehouse",
        kind=SpanKind.CLIENT,
        context=trace.set_span_in_context(export),
        start_time=now - 6_900_000_000,
    )
    query.set_status(Status(StatusCode.OK))
    query.end(end_time=now - 1_000_000_000)
    export.end(end_time=now - 900_000_000)  # trace duration 6.1 s, over the 5 s latency threshold, no error
    quick = tracer.start_span("GET /health", kind=SpanKind.SERVER, start_time=now - 500_000_000)
    quick.end(end_time=now - 499_000_000)
    logger.emit(
        timestamp=now - 400_000_000, severity_number=SeverityNumber.WARN, severity_text="WARN", body="pool at 90%"
    )
    tp.shutdown()
    lp.shutdown()
    return spans_out.get_finished_spans(), logs_out.get_finished_logs()


@pytest.fixture(scope="module")
def produced(kafka_broker):
    spans, logs = make_telemetry()
    topics = {}
    for name in ("otlp_spans", "otlp_logs"):
        topics[name] = f"{name}-{time.time_ns() % 10**9}"
        kafka_broker.create_topic(topics[name], partitions=2)
    p = Producer({"bootstrap.servers": kafka_broker.bootstrap, "enable.idempotence": True})
    # as the Collector's Kafka exporter: one Export*ServiceRequest per message
    p.produce(topics["otlp_spans"], encode_spans(spans[:2]).SerializeToString(), partition=0)
    p.produce(topics["otlp_spans"], encode_spans(spans[2:]).SerializeToString(), partition=1)
    p.produce(topics["otlp_spans"], b"\x0a\xff\x01 not protobuf", partition=1)
    p.produce(topics["otlp_logs"], encode_logs(logs).SerializeToString(), partition=0)
    assert p.flush(30) == 0
    return kafka_broker.bootstrap, topics, spans, logs


def spec_for(tmp_path, bootstrap, topics):
    d = yaml.safe_load(DEFAULT_SPEC.read_text())
    d["storage"]["catalog"]["warehouse"] = str(tmp_path / "wh")
    d["kafka"].update({"bootstrap_servers": bootstrap, "group_id": f"otlp-{tmp_path.name}", "poll_timeout": "200ms"})
    d["sources"] = [
        {"name": "logs", "topic": topics["otlp_logs"], "signal": "log", "codec": "otlp_proto"},
        {"name": "spans", "topic": topics["otlp_spans"], "signal": "span", "codec": "otlp_proto"},
    ]
    d["flows"] = [f for f in d["flows"] if f["source"] in ("logs", "spans")]
    d.pop("alerts", None)
    for f in d["flows"]:
        for st in f["steps"]:
            if st["kind"] == "tail_sample":
                st["sampler"]["policies"] = [
                    {"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}},
                    {"name": "slow", "type": "latency", "latency": {"threshold_ms": 5000}},
                ]
            if st["kind"] == "log_sample":
                st["config"] = {"sampling_percentage": 0}
    return parse_spec(d)


@pytest.mark.parametrize("runner", ["bytewax", "beam"])
def test_sdk_telemetry_lands_in_the_tables(produced, tmp_path, runner):
    bootstrap, topics, spans, logs = produced
    spec = spec_for(tmp_path, bootstrap, topics)
    STATS.reset()
    req = RunRequest(spec=spec, runner=runner, source="kafka", bounded=True)
    if runner == "bytewax":
        from runners.bytewax.run import run
    else:
        from runners.beam.run import run
    run(req)

    tid_of = {s.name: format(s.context.trace_id, "032x") for s in spans}
    failing, slow, healthy = tid_of["POST /checkout"], tid_of["GET /export"], tid_of["GET /health"]
    assert len({failing, slow, healthy}) == 3 and len(spans) == 6
    got = {r["span_id"]: r for r in read_table(spec, "spans").to_pylist()}
    # the error trace (3 spans) is kept by the 'errors' policy (listed first, though it is slow
    # too), the slow trace without errors (2 spans) by the 'slow' latency policy; the quick
    # health check by neither: dropped
    policy = {failing: "errors", slow: "slow"}
    want = {format(s.context.span_id, "016x"): s for s in spans if format(s.context.trace_id, "032x") in policy}
    assert set(got) == set(want) and len(want) == 5
    for sid, s in want.items():
        r = got[sid]
        tid = format(s.context.trace_id, "032x")
        assert r["trace_id"] == tid and r["name"] == s.name and r["service"] == "checkout"
        assert r["duration_ms"] == pytest.approx((s.end_time - s.start_time) / 1e6, abs=0.001)
        assert (r["sampling_policy"], r["adjusted_count"]) == (policy[tid], 1.0)
        assert r["status_code"] == s.status.status_code.name
        assert r["kind"] == s.kind.name
        # attribute types survive into obs.spans: text in `attributes`, the OTLP type of each
        # non-string value in `attribute_types` (int64 exact)
        assert dict(r["resource_types"]) == {"deploy.replicas": "int"} and dict(r["resource"])["deploy.replicas"] == "3"
        if s.name == "POST payments":
            assert dict(r["attributes"]) == {
                "http.response.status_code": "402",
                "payment.retry": "true",
                "payment.amount": "12.5",
                "payment.id": "p-17",
                "payment.big": "9007199254740995",
            }
            assert dict(r["attribute_types"]) == {
                "http.response.status_code": "int",
                "payment.retry": "bool",
                "payment.amount": "double",
                "payment.big": "int",
            }
        else:
            assert r["attribute_types"] is None
    traces = {t["trace_id"]: t for t in read_table(spec, "traces").to_pylist()}
    assert {
        k: (t["root_name"], t["span_count"], t["error_count"], t["sampling_policy"]) for k, t in traces.items()
    } == {failing: ("POST /checkout", 3, 2, "errors"), slow: ("GET /export", 2, 0, "slow")}
    assert traces[failing]["trace_duration_ms"] == pytest.approx(8000.0, abs=0.01)
    assert traces[slow]["trace_duration_ms"] == pytest.approx(6100.0, abs=0.01)

    logs_rows = {r["message"]: r for r in read_table(spec, "logs").to_pylist()}
    # the INFO line of the kept trace is kept (and scrubbed); the WARN line outside any trace is always kept
    assert set(logs_rows) == {"charging card for user [EMAIL]", "pool at 90%"}
    assert logs_rows["charging card for user [EMAIL]"]["trace_id"] == failing
    assert logs_rows["pool at 90%"]["level"] == "WARN"

    calls = sum(r["count"] for r in read_table(spec, "metrics").to_pylist() if r["name"] == "span.calls")
    assert calls == len(spans)  # RED counts every span, kept or not
    dl = read_table(spec, "dead_letters").to_pylist()
    assert [(d["source_topic"], d["reason"]) for d in dl] == [(topics["otlp_spans"], "format_violation")]
    assert healthy not in traces and healthy not in {r["trace_id"] for r in got.values()}
    # the quick trace is the one trace (one span) the sampler did not keep, and the run stats say so
    assert dict(STATS.tail_sampling) == {
        ("dropped_spans", "not_sampled"): 1,
        ("dropped_traces", "not_sampled"): 1,
        ("traces", "sampled"): 2,
        ("traces", "not_sampled"): 1,
    }


@pytest.mark.metrics
@pytest.mark.parametrize("runner", ["bytewax", "beam"])
def test_sdk_metrics_through_kafka_into_rollups(kafka_broker, tmp_path, runner):
    """OTLP metrics (the SDK's counter and histogram, the exporter's encoder) → Kafka → rollups."""
    from opentelemetry.exporter.otlp.proto.common._internal.metrics_encoder import encode_metrics
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    provider = MeterProvider(resource=Resource.create({"service.name": "checkout"}), metric_readers=[reader])
    meter = provider.get_meter("shop")
    meter.create_counter("http.requests").add(5, {"route": "/checkout"})
    hist = meter.create_histogram("http.latency_ms")
    for v in (12.0, 80.0, 250.0, 3000.0):
        hist.record(v, {"route": "/checkout"})
    payload = encode_metrics(reader.get_metrics_data()).SerializeToString()
    provider.shutdown()
    topic = f"otlp_metrics-{time.time_ns() % 10**9}"
    alerts_topic = f"alerts-{time.time_ns() % 10**9}"
    kafka_broker.create_topic(topic, partitions=1)
    kafka_broker.create_topic(alerts_topic, partitions=1)
    p = Producer({"bootstrap.servers": kafka_broker.bootstrap})
    p.produce(topic, payload, partition=0)
    p.produce(topic, b"garbage", partition=0)
    assert p.flush(30) == 0

    d = yaml.safe_load(DEFAULT_SPEC.read_text())
    d["storage"]["catalog"]["warehouse"] = str(tmp_path / "wh")
    d["kafka"].update(
        {"bootstrap_servers": kafka_broker.bootstrap, "group_id": f"otlpm-{tmp_path.name}", "poll_timeout": "200ms"}
    )
    d["sources"] = [{"name": "metrics", "topic": topic, "signal": "metric", "codec": "otlp_proto"}]
    d["flows"] = [f for f in d["flows"] if f["source"] == "metrics"]
    for st in d["flows"][0]["steps"]:
        st.pop("derive", None)
    d["alerts"] = {
        "rules": [
            {
                "name": "SlowCheckout",
                "select": {"metric": "http.latency_ms", "value": "p99"},
                "op": ">",
                "threshold": 1000,
                "severity": "P2",
                "annotations": {"runbook_url": "https://runbooks/slow"},
            }
        ],
        "route": {"group_by": ["alertname"], "group_wait": "0s"},
    }
    d["outputs"] = {"alerts_topic": alerts_topic}
    spec = parse_spec(d)
    STATS.reset()
    if runner == "bytewax":
        from runners.bytewax.run import run
    else:
        from runners.beam.run import run
    run(RunRequest(spec=spec, runner=runner, source="kafka", bounded=True))

    rows = [r for r in read_table(spec, "metrics").to_pylist() if r["resolution"] == "1m"]
    by_name = {r["name"]: r for r in rows}
    assert set(by_name) == {"http.requests", "http.latency_ms"}
    assert dict(by_name["http.requests"]["labels"]) == {"route": "/checkout", "service": "checkout"}
    assert by_name["http.requests"]["last"] == 5.0 and by_name["http.requests"]["kind"].lower() == "counter"
    h = by_name["http.latency_ms"]
    assert h["count"] == 4 and h["sum"] == 3342.0
    dl = read_table(spec, "dead_letters").to_pylist()
    assert [(r["source_offset"], r["reason"]) for r in dl] == [(1, "format_violation")]

    # the p99 of 3000 ms fires the rule: one firing row in obs.alerts and the same event on the alerts topic
    alerts = read_table(spec, "alerts").to_pylist()
    assert [(a["rule"], a["status"], dict(a["labels"])["route"]) for a in alerts] == [
        ("SlowCheckout", "firing", "/checkout")
    ]
    from confluent_kafka import Consumer

    c = Consumer(
        {
            "bootstrap.servers": kafka_broker.bootstrap,
            "group.id": f"read-{tmp_path.name}",
            "auto.offset.reset": "earliest",
        }
    )
    c.subscribe([alerts_topic])
    msgs, deadline = [], time.time() + 20
    while time.time() < deadline and not msgs:
        m = c.poll(0.5)
        if m is not None and not m.error():
            msgs.append(m)
    c.close()
    import json as _json

    assert len(msgs) == 1
    event = _json.loads(msgs[0].value())
    assert event["fingerprint"] == alerts[0]["fingerprint"] and msgs[0].key().decode() == alerts[0]["fingerprint"]
    assert (event["rule"], event["status"], event["annotations"]["runbook_url"]) == (
        "SlowCheckout",
        "firing",
        "https://runbooks/slow",
    )
