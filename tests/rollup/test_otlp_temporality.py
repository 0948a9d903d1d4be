"""OTLP metric temporality through the codec and the rollups, with input from the
OpenTelemetry Python SDK (its in-memory reader and the OTLP exporter's own encoder):
successive cumulative exports are rolled up as per-export differences (no double
counting), a delta-temporality reader gives the very same rows, a process restart (new
start time) is a reset even when the totals went up, and summaries keep their count, sum
and quantiles."""

import json
import time

import pyarrow as pa
import pytest
from google.protobuf import json_format
from opentelemetry.exporter.otlp.proto.common._internal.metrics_encoder import encode_metrics
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.sdk.metrics import Counter, Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader
from opentelemetry.sdk.resources import Resource

from schemas.codecs import codec_for
from tests.codecs.helpers import raw_batch
from transforms.rollup import MetricRollup, RollupConfig

pytestmark = pytest.mark.metrics
HOUR, MIN = 3_600_000, 60_000
CHECKOUT, SEARCH = {"route": "/checkout", "service": "checkout"}, {"route": "/search", "service": "checkout"}


def at(msg: ExportMetricsServiceRequest, t_ms: int) -> ExportMetricsServiceRequest:
    """The export with every data point's time set to ``t_ms`` (start times as the SDK set them)."""
    for rm in msg.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                for dp in getattr(m, m.WhichOneof("data")).data_points:
                    dp.time_unix_nano = t_ms * 1_000_000
    return msg


def provider(temporality=None):
    pref = {Counter: temporality, Histogram: temporality} if temporality is not None else {}
    reader = InMemoryMetricReader(preferred_temporality=pref)
    p = MeterProvider(resource=Resource.create({"service.name": "checkout"}), metric_readers=[reader])
    meter = p.get_meter("shop")
    return p, reader, meter.create_counter("http.requests"), meter.create_histogram("http.duration_ms")


def two_exports(temporality=None, w0: int | None = None) -> tuple[list, int]:
    """Two successive exports of one process: export 1 after requests /checkout +3 +2, /search +7
    and latencies 12, 80, 250, 3000; export 2 after /checkout +4, /search +1, latencies 40, 700.
    Times: export k at ``w0 + (k-1) min + 30 s`` (w0 an hour boundary after the start times)."""
    p, reader, requests, latency = provider(temporality)
    requests.add(3, {"route": "/checkout"})
    requests.add(2, {"route": "/checkout"})
    requests.add(7, {"route": "/search"})
    for v in (12.0, 80.0, 250.0, 3000.0):
        latency.record(v, {"route": "/checkout"})
    w0 = w0 or (time.time_ns() // 1_000_000 // HOUR + 1) * HOUR
    e1 = at(encode_metrics(reader.get_metrics_data()), w0 + 30_000)
    requests.add(4, {"route": "/checkout"})
    requests.add(1, {"route": "/search"})
    for v in (40.0, 700.0):
        latency.record(v, {"route": "/checkout"})
    e2 = at(encode_metrics(reader.get_metrics_data()), w0 + MIN + 30_000)
    p.shutdown()
    return [e1, e2], w0


def payload(msg, encoding):
    return msg.SerializeToString() if encoding == "otlp_proto" else json.dumps(json_format.MessageToDict(msg)).encode()


def rollup(exports, encoding="otlp_proto") -> tuple[pa.Table, MetricRollup]:
    codec = codec_for(encoding, "metric", 1 << 20)
    r = MetricRollup(RollupConfig(resolutions=["1m", "1h"], watermark_delay="0s", allowed_lateness="0s"))
    outs = []
    for e in exports:  # one Kafka message per export, as the exporter sends them
        b = codec.decode(raw_batch([payload(e, encoding)]))
        assert len(b.rejects) == 0
        outs.append(r.process(b.table.drop_columns(["_i"])).metrics)
    outs.append(r.flush().metrics)
    return pa.concat_tables(outs), r


def table(rows: pa.Table, w0: int) -> dict:
    """(resolution, window index, name, labels) -> the row's values."""
    out = {}
    for r in rows.to_pylist():
        k = (int(r["window_start"].timestamp() * 1000) - w0) // (MIN if r["resolution"] == "1m" else HOUR)
        lab = tuple(sorted(dict(r["labels"]).items()))
        out[(r["resolution"], k, r["name"], lab)] = r
    return out


def key(res, k, name, labels):
    return (res, k, name, tuple(sorted(labels.items())))


def check_two_exports(got, w0):
    t = table(got, w0)
    ctr = lambda res, k, lab: (
        t[key(res, k, "http.requests", lab)]["increase"],
        t[key(res, k, "http.requests", lab)]["rate"],
    )  # noqa: E731
    assert ctr("1m", 0, CHECKOUT) == (5.0, 5.0 / 60) and ctr("1m", 1, CHECKOUT) == (4.0, 4.0 / 60)
    assert ctr("1m", 0, SEARCH) == (7.0, 7.0 / 60) and ctr("1m", 1, SEARCH) == (1.0, 1.0 / 60)
    assert ctr("1h", 0, CHECKOUT) == (9.0, 9.0 / 3600) and ctr("1h", 0, SEARCH) == (8.0, 8.0 / 3600)
    hist = lambda res, k: tuple(
        t[key(res, k, "http.duration_ms", CHECKOUT)][c] for c in ("count", "sum", "p50", "p90", "p95", "p99")
    )  # noqa: E731
    # SDK default bounds 0 5 10 25 50 75 100 250 500 750 1000 2500 5000 7500 10000, quantiles interpolated in buckets
    exact = lambda *v: pytest.approx(v, rel=1e-12)  # noqa: E731  (interpolation rounding only)
    assert hist("1m", 0) == exact(4, 3342.0, 100.0, 4000.0, 4500.0, 4900.0)
    assert hist("1m", 1) == exact(2, 740.0, 50.0, 700.0, 725.0, 745.0)  # export 2 minus export 1
    assert hist("1h", 0) == exact(6, 4082.0, 100.0, 3500.0, 4250.0, 4850.0)
    assert {k[:3] for k in t} == {
        (res, k, n) for res, k in (("1m", 0), ("1m", 1), ("1h", 0)) for n in ("http.requests", "http.duration_ms")
    }
    assert len(t) == 9


@pytest.mark.parametrize("encoding", ["otlp_proto", "otlp_json"])
def test_cumulative_exports_roll_up_as_differences(encoding):
    exports, w0 = two_exports()
    assert exports[1].resource_metrics[0].scope_metrics[0].metrics[1].histogram.data_points[0].count == 6  # cumulative
    got, r = rollup(exports, encoding)
    check_two_exports(got, w0)
    assert r.stats["histogram_bounds_mismatch"] == 0


def test_delta_reader_gives_the_same_rows_as_cumulative():
    delta, w0 = two_exports(AggregationTemporality.DELTA)
    assert delta[1].resource_metrics[0].scope_metrics[0].metrics[1].histogram.data_points[0].count == 2  # delta
    assert delta[1].resource_metrics[0].scope_metrics[0].metrics[0].sum.aggregation_temporality == 1
    got, _ = rollup(delta)
    check_two_exports(got, w0)
    # a delta counter has no cumulative value: min / max / last are null, everything else is equal
    assert {(r["min"], r["max"], r["last"]) for r in got.to_pylist() if r["kind"] == "counter"} == {(None, None, None)}
    cumulative, _ = two_exports(w0=w0)
    same, _ = rollup(cumulative)
    assert same.drop_columns(["min", "max", "last"]).equals(got.drop_columns(["min", "max", "last"]))


def test_restart_with_a_new_start_time_is_a_reset_even_when_totals_went_up():
    exports, w0 = two_exports()
    time.sleep(0.01)  # the restarted process's start time differs (start times are compared in ms)
    p, reader, requests, latency = provider()
    requests.add(20, {"route": "/checkout"})  # 20 > 9: a drop-based reset check alone would count 11
    for v in (12.0, 40.0, 80.0, 250.0, 700.0, 3000.0, 3000.0):  # every bucket >= export 2's
        latency.record(v, {"route": "/checkout"})
    exports.append(at(encode_metrics(reader.get_metrics_data()), w0 + 2 * MIN + 30_000))
    p.shutdown()
    got, _ = rollup(exports)
    t = table(got, w0)
    assert t[key("1m", 2, "http.requests", CHECKOUT)]["increase"] == 20.0
    h = t[key("1m", 2, "http.duration_ms", CHECKOUT)]
    assert (h["count"], h["sum"], h["p50"]) == (7, 7082.0, 175.0)  # (100, 250]: 100 + 150 * 0.5
    assert t[key("1h", 0, "http.requests", CHECKOUT)]["increase"] == 29.0
    assert t[key("1h", 0, "http.duration_ms", CHECKOUT)]["count"] == 13
    assert key("1m", 2, "http.requests", SEARCH) not in t  # the restarted process has not seen /search


def test_cumulative_export_without_new_data_adds_nothing():
    exports, w0 = two_exports()
    again = ExportMetricsServiceRequest()
    again.CopyFrom(exports[1])
    exports.append(at(again, w0 + 2 * MIN + 30_000))  # the next export, no recordings in between
    got, _ = rollup(exports)
    t = table(got, w0)
    h = t[key("1m", 2, "http.duration_ms", CHECKOUT)]
    assert (h["count"], h["sum"], h["p50"], h["p99"]) == (0, 0.0, None, None)
    assert t[key("1m", 2, "http.requests", CHECKOUT)]["increase"] == 0.0
    assert t[key("1h", 0, "http.duration_ms", CHECKOUT)]["count"] == 6
    assert t[key("1h", 0, "http.requests", CHECKOUT)]["increase"] == 9.0


def summary_export(t_ms: int, start_ms: int, count: int, total: float, quantiles: dict) -> ExportMetricsServiceRequest:
    dp = metrics_pb2.SummaryDataPoint(
        start_time_unix_nano=start_ms * 1_000_000,
        time_unix_nano=t_ms * 1_000_000,
        count=count,
        sum=total,
        attributes=[KeyValue(key="route", value=AnyValue(string_value="/checkout"))],
        quantile_values=[
            metrics_pb2.SummaryDataPoint.ValueAtQuantile(quantile=q, value=v) for q, v in quantiles.items()
        ],
    )
    m = metrics_pb2.Metric(name="rpc.duration_ms", summary=metrics_pb2.Summary(data_points=[dp]))
    rm = metrics_pb2.ResourceMetrics(
        resource={"attributes": [KeyValue(key="service.name", value=AnyValue(string_value="checkout"))]},
        scope_metrics=[metrics_pb2.ScopeMetrics(metrics=[m])],
    )
    return ExportMetricsServiceRequest(resource_metrics=[rm])


@pytest.mark.parametrize("encoding", ["otlp_proto", "otlp_json"])
def test_summary_count_sum_are_cumulative_and_quantiles_are_kept(encoding):
    w0 = 1_763_002_800_000  # an hour boundary
    nan = float("nan")
    exports = [
        summary_export(w0 + 30_000, w0 - HOUR, 10, 100.0, {0.5: 8.0, 0.99: 30.0}),
        summary_export(w0 + 50_000, w0 - HOUR, 12, 130.0, {0.5: 9.0, 0.99: 25.0}),
        summary_export(w0 + 90_000, w0 - HOUR, 15, 160.0, {0.5: 7.0, 0.99: 40.0, 1.0: nan}),
        summary_export(w0 + 150_000, w0 + 140_000, 2, 11.0, {0.5: 5.0, 0.99: 6.0}),
    ]  # restarted
    got, _ = rollup(exports, encoding)
    t = table(got, w0)
    s = {
        (res, k): (r["count"], r["sum"])
        for (res, k, n, _), r in t.items()
        if n == "rpc.duration_ms" and r["kind"] == "summary"
    }
    assert s == {("1m", 0): (12, 130.0), ("1m", 1): (3, 30.0), ("1m", 2): (2, 11.0), ("1h", 0): (17, 171.0)}
    q = {
        (res, k, dict(lab)["quantile"]): (r["kind"], r["last"], r["min"], r["max"], r["count"])
        for (res, k, n, lab), r in t.items()
        if n == "rpc.duration_ms" and r["kind"] == "gauge"
    }
    assert q == {
        ("1m", 0, "0.5"): ("gauge", 9.0, 8.0, 9.0, 2),
        ("1m", 0, "0.99"): ("gauge", 25.0, 25.0, 30.0, 2),
        ("1m", 1, "0.5"): ("gauge", 7.0, 7.0, 7.0, 1),
        ("1m", 1, "0.99"): ("gauge", 40.0, 40.0, 40.0, 1),
        ("1m", 2, "0.5"): ("gauge", 5.0, 5.0, 5.0, 1),
        ("1m", 2, "0.99"): ("gauge", 6.0, 6.0, 6.0, 1),
        ("1h", 0, "0.5"): ("gauge", 5.0, 5.0, 9.0, 4),
        ("1h", 0, "0.99"): ("gauge", 6.0, 6.0, 40.0, 4),
    }
    labels = {tuple(sorted(dict(r["labels"]).items())) for r in got.to_pylist() if r["kind"] == "gauge"}
    assert labels == {
        (("quantile", "0.5"), ("route", "/checkout"), ("service", "checkout")),
        (("quantile", "0.99"), ("route", "/checkout"), ("service", "checkout")),
    }


def test_snapshot_restore_keeps_the_cumulative_baselines():
    exports, w0 = two_exports()
    codec = codec_for("otlp_proto", "metric", 1 << 20)
    cfg = RollupConfig(resolutions=["1m", "1h"], watermark_delay="0s", allowed_lateness="0s")
    a = MetricRollup(cfg)
    first = a.process(codec.decode(raw_batch([exports[0].SerializeToString()])).table.drop_columns(["_i"])).metrics
    b = MetricRollup.from_snapshot(a.snapshot())
    rest = b.process(codec.decode(raw_batch([exports[1].SerializeToString()])).table.drop_columns(["_i"])).metrics
    check_two_exports(pa.concat_tables([first, rest, b.flush().metrics]), w0)
