"""Issue 19 items 3 and 7: OTLP is accepted per item, as OTLP's partial_success does.

Through ``PipelineGraph.process`` with the default spec's stages: good spans, log records
and data points go on; a bad item is dead-lettered alone with its message's coordinates,
``item_index`` and its own bytes as ``raw``; no message is both accepted and dead; the
size limit applies per item (messages only at the Collector's 1,000,000-byte bound); the
counts hold at both levels; a histogram count >= 2^63 (a valid fixed64) rejects its data
point instead of raising OverflowError."""

from __future__ import annotations

import json

import pytest
import yaml
from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    Gauge,
    Histogram,
    HistogramDataPoint,
    Metric,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from core.stats import RunStats
from pipelines import DEFAULT_SPEC
from pipelines.graph import PipelineGraph
from pipelines.loader import parse_spec
from schemas.codecs import codec_for
from schemas.codecs.otlp_codec import to_otlp_json
from tests.codecs.helpers import accounted, raw_batch
from transforms.batch import RawBatch

NOW_MS = 1_763_719_200_000
T0 = (NOW_MS - 1000) * 1_000_000  # one second before ingest, in ns
MAX_MESSAGE_BYTES = 1_000_000  # the Collector Kafka exporter's default producer.max_message_bytes
RES = Resource(attributes=[KeyValue(key="service.name", value=AnyValue(string_value="checkout"))])


def span(k: int, trace: int = 1, **fields) -> Span:
    f = {
        "trace_id": bytes([trace] * 16),
        "span_id": (k + 1).to_bytes(8, "big"),
        "name": f"op {k}",
        "kind": 2,
        "start_time_unix_nano": T0,
        "end_time_unix_nano": T0 + 1_000_000,
    }
    f.update(fields)
    return Span(**f)


def trace_msg(spans: list[Span]) -> ExportTraceServiceRequest:
    return ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(resource=RES, scope_spans=[ScopeSpans(spans=spans)])]
    )


def log_msg(records: list[LogRecord]) -> ExportLogsServiceRequest:
    return ExportLogsServiceRequest(
        resource_logs=[ResourceLogs(resource=RES, scope_logs=[ScopeLogs(log_records=records)])]
    )


def metric_msg(metrics: list[Metric]) -> ExportMetricsServiceRequest:
    return ExportMetricsServiceRequest(
        resource_metrics=[ResourceMetrics(resource=RES, scope_metrics=[ScopeMetrics(metrics=metrics)])]
    )


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    d = yaml.safe_load(DEFAULT_SPEC.read_text())
    d["storage"]["catalog"]["warehouse"] = str(tmp_path_factory.mktemp("wh"))
    codecs = {"span": "otlp_proto", "log": "otlp_json", "metric": "otlp_proto"}
    for s in d["sources"]:
        s["codec"] = codecs.get(s["signal"], s["codec"])
    return PipelineGraph(parse_spec(d), counters=RunStats())


def run(graph, source: str, values: list[bytes | None]):
    raw = RawBatch(source, source, 0, values, list(range(100, 100 + len(values))), [NOW_MS] * len(values))
    out = graph.process(raw)
    assert out.per_item
    assert out.records_in == out.records_accepted + out.records_dead + out.records_dropped
    assert out.items_in == out.items_accepted + out.items_dead + out.items_dropped
    dead = out.rows[graph.flows[source].dead_table]
    assert out.items_dead == dead.num_rows == out.dead_rows
    assert dead.column("detail").null_count == 0 and dead.column("reason").null_count == 0
    return out, dead.to_pylist()


def staged_rows(out) -> int:
    return sum(si.table.num_rows for si in out.stage_inputs if si.table is not None)


def test_one_bad_span_of_fifty_is_dead_lettered_alone(graph):
    """A span with no start time (codec), one whose end precedes its start (validation),
    one with a bad kind and one with an empty span id: those four are dead letters, the
    46 others go on; the message counts once, as accepted."""
    spans = [span(k) for k in range(50)]
    spans[7] = span(7, start_time_unix_nano=0)
    spans[20] = span(20, end_time_unix_nano=T0 - 5)
    spans[33] = span(33, kind=9)
    spans[41] = span(41, span_id=b"")
    msg = trace_msg(spans)
    out, dead = run(graph, "spans", [msg.SerializeToString()])
    assert (out.records_in, out.records_accepted, out.records_dead) == (1, 1, 0)
    assert (out.items_in, out.items_accepted, out.items_dead) == (50, 46, 4)
    assert staged_rows(out) == 46
    assert [(r["item_index"], r["reason"], r["source_offset"], r["source_topic"]) for r in dead] == [
        (7, "schema_violation", 100, "spans"),
        (20, "schema_violation", 100, "spans"),
        (33, "schema_violation", 100, "spans"),
        (41, "schema_violation", 100, "spans"),
    ]
    where = "resource_spans[0].scope_spans[0].spans"
    assert [r["detail"] for r in dead] == [
        f"{where}[7]: no start_time_unix_nano",
        "end_time: before start_time",
        f"{where}[33]: span kind 9 is not an OTLP SpanKind",
        f"{where}[41]: no span id",
    ]
    for r in dead:
        assert r["raw"] == spans[r["item_index"]].SerializeToString()
        assert r["raw_size"] == len(r["raw"]) and r["raw_truncated"] is False


def test_messages_wholly_bad_count_as_dead_never_also_accepted(graph):
    good = trace_msg([span(k) for k in range(3)]).SerializeToString()
    all_bad = trace_msg([span(0, start_time_unix_nano=0), span(1, kind=7)]).SerializeToString()
    values = [good, all_bad, b"\x0a\xff\x01 not protobuf", None, good]
    out, dead = run(graph, "spans", values)
    assert (out.records_in, out.records_accepted, out.records_dead, out.records_dropped) == (5, 2, 3, 0)
    assert (out.items_in, out.items_accepted, out.items_dead) == (2 * 3 + 2 + 1 + 1, 6, 4)
    assert [(r["source_offset"], r["item_index"]) for r in dead] == [(101, 0), (101, 1), (102, None), (103, None)]
    assert dead[2]["raw"] == values[2] and dead[3]["raw"] is None


def test_size_limit_applies_per_item_not_per_message(graph):
    """A Collector batch of 802 spans (~234 kB) is accepted whole under the default
    max_bytes of 65,536; one span over it is rejected alone; a message over the
    Collector's own bound of 1,000,000 bytes is rejected whole."""
    attrs = [KeyValue(key=f"attr.{j}", value=AnyValue(string_value="v" * 200)) for j in range(1)]
    spans = [span(k, trace=1 + k % 50, attributes=attrs) for k in range(802)]
    big = trace_msg(spans).SerializeToString()
    assert 200_000 < len(big) < MAX_MESSAGE_BYTES
    out, dead = run(graph, "spans", [big])
    assert (out.items_in, out.items_accepted, out.items_dead, out.records_accepted) == (802, 802, 0, 1)
    huge_attr = [KeyValue(key="blob", value=AnyValue(string_value="x" * 70_000))]
    mixed = trace_msg([span(0), span(1, attributes=huge_attr), span(2)]).SerializeToString()
    over = trace_msg(
        [span(k, attributes=[KeyValue(key="b", value=AnyValue(string_value="y" * 60_000))]) for k in range(17)]
    ).SerializeToString()
    assert len(over) > MAX_MESSAGE_BYTES
    out, dead = run(graph, "spans", [mixed, over])
    assert (out.records_accepted, out.records_dead, out.items_in, out.items_accepted, out.items_dead) == (1, 1, 4, 2, 2)
    assert [(r["source_offset"], r["item_index"], r["reason"]) for r in dead] == [
        (100, 1, "size_violation"),
        (101, None, "size_violation"),
    ]
    assert dead[0]["detail"].startswith("resource_spans[0].scope_spans[0].spans[1]: item of 700")
    assert dead[0]["detail"].endswith("bytes exceeds the limit of 65536 bytes")
    assert dead[1]["detail"] == f"message of {len(over)} bytes exceeds the limit of 1000000 bytes"


def test_otlp_json_log_records_are_accepted_per_item(graph):
    records = [
        LogRecord(time_unix_nano=T0 + k, severity_number=9, body=AnyValue(string_value=f"line {k}")) for k in range(5)
    ]
    records[3] = LogRecord(severity_number=9, body=AnyValue(string_value="no time at all"))
    msg = log_msg(records)
    doc = json.loads(to_otlp_json(msg))
    doc["resourceLogs"][0]["scopeLogs"][0]["logRecords"][1]["traceId"] = "not hex"
    out, dead = run(graph, "logs", [json.dumps(doc).encode()])
    assert (out.records_accepted, out.records_dead, out.items_in, out.items_dead) == (1, 0, 5, 2)
    assert out.items_accepted + out.items_dropped == 3
    assert [(r["item_index"], r["detail"]) for r in dead] == [
        (1, "resourceLogs[0].scopeLogs[0].logRecords[1].traceId: not a hex id: 'not hex'"),
        (3, "resourceLogs[0].scopeLogs[0].logRecords[3]: neither time_unix_nano nor observed_time_unix_nano is set"),
    ]
    assert json.loads(dead[0]["raw"]) == doc["resourceLogs"][0]["scopeLogs"][0]["logRecords"][1]


def _histogram(count: int, buckets: list[int]) -> Metric:
    return Metric(
        name="http.duration_ms",
        histogram=Histogram(
            aggregation_temporality=1,
            data_points=[
                HistogramDataPoint(
                    time_unix_nano=T0, count=count, sum=1.0, explicit_bounds=[10.0], bucket_counts=buckets
                )
            ],
        ),
    )


def _gauge(v: float) -> Metric:
    return Metric(name="queue.depth", gauge=Gauge(data_points=[NumberDataPoint(time_unix_nano=T0, as_double=v)]))


@pytest.mark.parametrize("encoding", ["otlp_proto", "otlp_json"])
@pytest.mark.parametrize(
    "count,buckets,detail",
    [
        (2**63, [1, 2], "count 9223372036854775808 exceeds the metrics table's int64 range"),
        (2**64 - 1, [1, 2], "count 18446744073709551615 exceeds the metrics table's int64 range"),
        (3, [1, 2**63], "bucket_counts[1] 9223372036854775808 exceeds the metrics table's int64 range"),
    ],
)
def test_histogram_count_beyond_int64_rejects_its_data_point(encoding, count, buckets, detail):
    """Item 7: a valid fixed64 count or bucket count >= 2^63 raised OverflowError."""
    msg = metric_msg([_gauge(1.0), _histogram(count, buckets), _gauge(2.0)])
    payload = (
        msg.SerializeToString() if encoding == "otlp_proto" else json.dumps(json_format.MessageToDict(msg)).encode()
    )
    b = codec_for(encoding, "metric", 65536).decode(raw_batch([payload]))
    accounted(b, 1)
    assert b.rejects.keys() == [(0, 1)]
    assert b.rejects.details == [f"resource_metrics[0].scope_metrics[0].metrics[1].histogram.data_points[0]: {detail}"]
    assert sorted(b.table.column("value").to_pylist()) == [1.0, 2.0]


def test_histogram_count_beyond_int64_through_the_graph(graph):
    out, dead = run(graph, "metrics", [metric_msg([_gauge(1.0), _histogram(2**63, [1, 2])]).SerializeToString()])
    assert (out.records_accepted, out.items_in, out.items_accepted, out.items_dead) == (1, 2, 1, 1)
    assert [(r["item_index"], r["reason"]) for r in dead] == [(1, "schema_violation")]
    assert dead[0]["raw"] == _histogram(2**63, [1, 2]).histogram.data_points[0].SerializeToString()


def test_dead_letters_table_of_an_earlier_version_gains_item_index(tmp_path):
    """A dead_letters table created before item_index existed gets the column (optional,
    documented) when the job opens it, and item dead letters are then written to it."""
    from pyiceberg.schema import Schema

    from schemas.tables import DEAD_LETTERS
    from sinks.catalog import ensure_table, open_catalog
    from sinks.dead_letters import dead_letter_rows
    from transforms.batch import Rejects

    d = yaml.safe_load(DEFAULT_SPEC.read_text())
    d["storage"]["catalog"]["warehouse"] = str(tmp_path / "wh")
    spec = parse_spec(d)
    catalog = open_catalog(spec.storage)
    catalog.create_namespace(spec.storage.namespace)
    old = Schema(*[f for f in DEAD_LETTERS.schema.fields if f.name != "item_index"])
    catalog.create_table(
        f"{spec.storage.namespace}.dead_letters", schema=old, partition_spec=DEAD_LETTERS.partition_spec()
    )
    table = ensure_table(catalog, spec.storage.namespace, DEAD_LETTERS)
    field = table.schema().find_field("item_index")
    assert not field.required and "OTLP message" in field.doc
    rejects = Rejects()
    rejects.add(0, "schema_violation", "resource_spans[0].scope_spans[0].spans[3]: no span id", 3)
    rows = dead_letter_rows(
        RawBatch("spans", "spans", 0, [b"msg"], [41], [NOW_MS]), rejects, 16384, item_raw=lambda i, k: b"span3"
    )
    table.append(rows)
    got = table.scan().to_arrow().to_pylist()
    assert [(r["source_offset"], r["item_index"], r["raw"]) for r in got] == [(41, 3, b"span3")]
    assert (
        ensure_table(catalog, spec.storage.namespace, DEAD_LETTERS).schema() == table.refresh().schema()
    )  # idempotent
