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
    payload = (
        msg.SerializeToString() if encoding == "otlp_proto" else json.dumps(json_format.MessageToDict(msg)).encode()
    )
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


def _points(msg):
    """(metric name, data point) of every data point of an export."""
    for rm in msg.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                for dp in getattr(m, m.WhichOneof("data")).data_points:
                    yield m.name, dp


@pytest.mark.parametrize("encoding", ["otlp_proto", "otlp_json"])
@pytest.mark.parametrize("delta", [False, True])
def test_temporality_and_start_time_are_carried(encoding, delta):
    from opentelemetry.metrics import Observation
    from opentelemetry.sdk.metrics import Counter, Histogram, UpDownCounter
    from opentelemetry.sdk.metrics.export import AggregationTemporality

    d = AggregationTemporality.DELTA
    reader = InMemoryMetricReader(preferred_temporality={Counter: d, Histogram: d, UpDownCounter: d} if delta else {})
    provider = MeterProvider(resource=Resource.create({"service.name": "checkout"}), metric_readers=[reader])
    meter = provider.get_meter("shop")
    meter.create_counter("http.requests").add(3, {"route": "/checkout"})
    meter.create_up_down_counter("http.inflight").add(-2)
    meter.create_histogram("http.duration_ms").record(12.0)
    meter.create_observable_gauge("cpu", callbacks=[lambda _o: [Observation(0.5)]])
    msg = encode_metrics(reader.get_metrics_data())
    provider.shutdown()
    starts = {name: dp.start_time_unix_nano // 1_000_000 for name, dp in _points(msg)}
    assert all(starts[n] > 0 for n in ("http.requests", "http.inflight", "http.duration_ms"))
    payload = (
        msg.SerializeToString() if encoding == "otlp_proto" else json.dumps(json_format.MessageToDict(msg)).encode()
    )
    b = codec_for(encoding, "metric", 1 << 20).decode(raw_batch([payload]))
    assert b.table.column_names[-4:] == ["temporality", "start_time", "_i", "_item"]
    got = {
        r["name"]: (
            r["kind"],
            r["value"],
            r["count"],
            r["temporality"],
            int(r["start_time"].timestamp() * 1000) if r["start_time"] is not None else None,
        )
        for r in b.table.to_pylist()
    }
    t = "delta" if delta else "cumulative"
    assert got == {
        "http.requests": ("COUNTER", 3.0, None, t, starts["http.requests"]),
        # cumulative up-down sum: the level (a gauge); a delta one: the net change (a delta counter)
        "http.inflight": ("COUNTER", -2.0, None, "delta", starts["http.inflight"])
        if delta
        else ("GAUGE", -2.0, None, None, starts["http.inflight"]),
        "http.duration_ms": ("HISTOGRAM", None, 1, t, starts["http.duration_ms"]),
        "cpu": ("GAUGE", 0.5, None, None, starts["cpu"] or None),
    }


@pytest.mark.parametrize("encoding", ["otlp_proto", "otlp_json"])
def test_summary_keeps_count_sum_and_quantiles(encoding):
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
    from opentelemetry.proto.metrics.v1 import metrics_pb2

    vq = metrics_pb2.SummaryDataPoint.ValueAtQuantile
    dp = metrics_pb2.SummaryDataPoint(
        start_time_unix_nano=1_763_000_000_123_456_789,
        time_unix_nano=1_763_000_060_000_000_000,
        count=12,
        sum=130.5,
        attributes=[KeyValue(key="route", value=AnyValue(string_value="/a"))],
        quantile_values=[
            vq(quantile=0.0, value=1.0),
            vq(quantile=0.5, value=9.0),
            vq(quantile=0.999, value=25.0),
            vq(quantile=1.0, value=float("nan")),
        ],
    )
    msg = ExportMetricsServiceRequest(
        resource_metrics=[
            metrics_pb2.ResourceMetrics(
                scope_metrics=[
                    metrics_pb2.ScopeMetrics(
                        metrics=[metrics_pb2.Metric(name="rpc.ms", summary=metrics_pb2.Summary(data_points=[dp]))]
                    )
                ]
            )
        ]
    )
    payload = (
        msg.SerializeToString() if encoding == "otlp_proto" else json.dumps(json_format.MessageToDict(msg)).encode()
    )
    b = codec_for(encoding, "metric", 1 << 20).decode(raw_batch([payload]))
    assert len(b.rejects) == 0
    got = [
        (
            r["name"],
            r["kind"],
            dict(r["labels"]),
            r["value"],
            r["count"],
            r["sum"],
            r["temporality"],
            int(r["timestamp"].timestamp() * 1000),
            int(r["start_time"].timestamp() * 1000),
        )
        for r in b.table.to_pylist()
    ]
    base = {"route": "/a", "service": "unknown_service"}
    assert got == [
        ("rpc.ms", "SUMMARY", base, None, 12, 130.5, "cumulative", 1_763_000_060_000, 1_763_000_000_123),
        ("rpc.ms", "GAUGE", {**base, "quantile": "0"}, 1.0, None, None, None, 1_763_000_060_000, 1_763_000_000_123),
        ("rpc.ms", "GAUGE", {**base, "quantile": "0.5"}, 9.0, None, None, None, 1_763_000_060_000, 1_763_000_000_123),
        (
            "rpc.ms",
            "GAUGE",
            {**base, "quantile": "0.999"},
            25.0,
            None,
            None,
            None,
            1_763_000_060_000,
            1_763_000_000_123,
        ),
    ]  # the NaN quantile (no observations) is skipped
    assert b.table.column("_i").to_pylist() == [0, 0, 0, 0]
