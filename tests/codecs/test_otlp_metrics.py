"""OTLP metrics as the OpenTelemetry SDK exports them (the OTLP exporter's own encoder),
protobuf and JSON, decoded into metric sample rows exactly; unsupported data and
garbage rejected with reasons."""

import json

import pytest
from google.protobuf import json_format
from opentelemetry.exporter.otlp.proto.common._internal.metrics_encoder import encode_metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.resources import Resource

from schemas.codecs import codec_for
from tests.codecs.helpers import raw_batch


def export():
    reader = InMemoryMetricReader()
    provider = MeterProvider(resource=Resource.create({"service.name": "checkout"}), metric_readers=[reader])
    meter = provider.get_meter("shop")
    requests = meter.create_counter("http.requests")
    inflight = meter.create_up_down_counter("http.inflight")
    latency = meter.create_histogram("http.duration_ms")
    requests.add(3, {"route": "/checkout"})
    requests.add(2, {"route": "/checkout"})
    requests.add(7, {"route": "/search"})
    inflight.add(5)
    inflight.add(-2)
    for v in (12.0, 80.0, 250.0, 3000.0):
        latency.record(v, {"route": "/checkout"})
    data = reader.get_metrics_data()
    provider.shutdown()
    return encode_metrics(data)


def rows_of(codec, payloads):
    b = codec.decode(raw_batch(payloads))
    return b, sorted(b.table.drop_columns(["_i"]).to_pylist(), key=lambda r: (r["name"], str(r["labels"])))


@pytest.mark.parametrize("encoding", ["otlp_proto", "otlp_json"])
def test_sdk_metrics_decode_exactly(encoding):
    msg = export()
    payload = msg.SerializeToString() if encoding == "otlp_proto" else json.dumps(json_format.MessageToDict(msg)).encode()
    b, rows = rows_of(codec_for(encoding, "metric", 1 << 20), [payload])
    assert len(b.rejects) == 0
    by = {(r["name"], tuple(sorted(dict(r["labels"]).items()))): r for r in rows}
    c = by[("http.requests", (("route", "/checkout"), ("service", "checkout")))]
    assert (c["kind"], c["value"]) == ("COUNTER", 5.0)
    assert by[("http.requests", (("route", "/search"), ("service", "checkout")))]["value"] == 7.0
    g = by[("http.inflight", (("service", "checkout"),))]
    assert (g["kind"], g["value"]) == ("GAUGE", 3.0)  # a non-monotonic sum is a gauge
    h = by[("http.duration_ms", (("route", "/checkout"), ("service", "checkout")))]
    assert h["kind"] == "HISTOGRAM" and h["count"] == 4 and h["sum"] == 3342.0
    assert len(h["bucket_counts"]) == len(h["bucket_bounds"]) + 1 and sum(h["bucket_counts"]) == 4
    assert all(r["timestamp"] is not None for r in rows)


def test_garbage_and_empty_messages_are_rejected():
    codec = codec_for("otlp_proto", "metric", 1 << 20)
    b, _ = rows_of(codec, [b"\x0a\x05garbage-not-protobuf", b"", export().SerializeToString()[:7]])
    got = sorted(zip(b.rejects.indices, b.rejects.reasons, b.rejects.details))
    assert [(i, r) for i, r, _ in got] == [(0, "format_violation"), (1, "format_violation"), (2, "format_violation")]
    assert got[0][2].startswith("not an OTLP ExportMetricsServiceRequest (protobuf)")
    assert got[1][2] == "empty payload"
    assert got[2][2].startswith("not an OTLP ExportMetricsServiceRequest (protobuf)")  # truncated
    assert b.table.num_rows == 0
