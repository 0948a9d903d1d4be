"""OTLP codec: spans and logs made by the OpenTelemetry SDK, encoded by the OTLP
exporter's own encoder exactly as the Collector's Kafka exporter sends them."""

from __future__ import annotations

import base64
import json
import random
from datetime import datetime, UTC

import pyarrow as pa
import pytest
from opentelemetry import trace
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.common._internal._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.common._internal.trace_encoder import encode_spans
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from google.protobuf import json_format
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList
from opentelemetry.proto.resource.v1.resource_pb2 import Resource as PbResource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span as PbSpan
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

from schemas.codecs import CODECS, codec_for
from schemas.codecs.otlp_codec import SPAN_EXTRA, OtlpCodec, to_otlp_json
from tests.codecs.helpers import accounted, as_rows, assert_wire_schema, raw_batch

UTC = UTC
T0 = 1_763_719_200_000_000_000  # 2025-11-21T10:00:00Z in ns


def us_dt(ns: int) -> datetime:
    return datetime.fromtimestamp(ns // 1000 // 1_000_000, UTC).replace(microsecond=ns // 1000 % 1_000_000)


RESOURCE = Resource.create(
    {
        "service.name": "checkout",
        "service.version": "1.4.2",
        "host.name": "web-1",
        "deployment.environment.name": "prod",
        "k8s.pod.name": "checkout-7d9f",
    }
)


def make_spans():
    """A trace: SERVER root → INTERNAL child → CLIENT grandchild that fails, and a slow
    CONSUMER sibling; explicit nanosecond timestamps so durations are exact."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=RESOURCE)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("shop.checkout", "0.1")
    root = tracer.start_span(
        "POST /checkout",
        kind=SpanKind.SERVER,
        start_time=T0,
        attributes={"http.request.method": "POST", "http.route": "/checkout", "http.response.status_code": 502},
    )
    ctx = trace.set_span_in_context(root)
    child = tracer.start_span(
        "price cart",
        context=ctx,
        start_time=T0 + 1_000_123,
        attributes={"cart.items": 3, "cart.total": 59.9, "cart.gift": False, "cart.skus": ["a-1", "b-2"]},
    )
    cctx = trace.set_span_in_context(child)
    err = tracer.start_span("POST payments", kind=SpanKind.CLIENT, context=cctx, start_time=T0 + 2_000_000)
    err.set_status(Status(StatusCode.ERROR, "card declined"))
    err.end(end_time=T0 + 12_345_678)
    child.end(end_time=T0 + 20_000_999)
    slow = tracer.start_span("consume order", kind=SpanKind.CONSUMER, context=ctx, start_time=T0 + 21_000_000)
    slow.set_status(Status(StatusCode.OK))
    slow.end(end_time=T0 + 7_521_000_000)  # 7.5 s
    root.set_status(Status(StatusCode.ERROR, "upstream failed"))
    root.end(end_time=T0 + 7_600_000_000)
    provider.shutdown()
    return exporter.get_finished_spans()


def expected_span_row(s) -> dict:
    ctx = s.get_span_context()
    kind = {
        SpanKind.INTERNAL: "INTERNAL",
        SpanKind.SERVER: "SERVER",
        SpanKind.CLIENT: "CLIENT",
        SpanKind.PRODUCER: "PRODUCER",
        SpanKind.CONSUMER: "CONSUMER",
    }[s.kind]
    return {
        "trace_id": f"{ctx.trace_id:032x}",
        "span_id": f"{ctx.span_id:016x}",
        "parent_span_id": f"{s.parent.span_id:016x}" if s.parent else None,
        "service": "checkout",
        "name": s.name,
        "kind": kind,
        "start_time": us_dt(s.start_time),
        "end_time": us_dt(s.end_time),
        "status_code": s.status.status_code.name,
        "status_message": s.status.description,
    }


#: the resource as text: ours plus what the SDK adds (telemetry.sdk.*, service.instance.id)
RESOURCE_MAP = {k: str(v) for k, v in RESOURCE.attributes.items()}
assert {"telemetry.sdk.version", "service.instance.id"} <= RESOURCE_MAP.keys()


def test_spans_from_sdk_decode_exactly():
    spans = make_spans()
    payload = encode_spans(spans).SerializeToString()
    batch = OtlpCodec("span").decode(raw_batch([payload]))
    assert not batch.rejects.indices
    assert_wire_schema(batch.table, "span", extra=SPAN_EXTRA)
    rows = as_rows(batch.table)
    assert len(rows) == 4 and {r.pop("_i") for r in rows} == {0}
    assert [r.pop("_item") for r in rows] == [0, 1, 2, 3]
    by_name = {r["name"]: r for r in rows}
    for s in spans:
        row = dict(by_name[s.name])
        assert row.pop("resource") == RESOURCE_MAP
        row.pop("attributes")  # checked below, value by value
        # the columns the OTLP codec adds: exact times, W3C fields, value types (checked below)
        assert (row.pop("start_unix_nano"), row.pop("end_unix_nano")) == (s.start_time, s.end_time)
        assert (row.pop("trace_state"), row.pop("flags")) == (
            None,
            0x100,
        )  # this exporter sets only the has-is-remote bit
        assert row.pop("resource_types") is None  # the SDK's resource attributes are all strings
        row.pop("attribute_types")
        assert row == expected_span_row(s)
    root, child, err, slow = (by_name[n] for n in ("POST /checkout", "price cart", "POST payments", "consume order"))
    # the tree
    assert root["parent_span_id"] is None
    assert child["parent_span_id"] == root["span_id"] and slow["parent_span_id"] == root["span_id"]
    assert err["parent_span_id"] == child["span_id"]
    assert (
        len({r["trace_id"] for r in rows}) == 1
        and len(root["trace_id"]) == 32
        and root["trace_id"] == root["trace_id"].lower()
    )
    # kinds, status, durations (µs, nanoseconds truncated)
    assert [root["kind"], child["kind"], err["kind"], slow["kind"]] == ["SERVER", "INTERNAL", "CLIENT", "CONSUMER"]
    assert (err["status_code"], err["status_message"]) == ("ERROR", "card declined")
    assert (slow["status_code"], slow["status_message"]) == ("OK", None)
    assert (child["status_code"], child["status_message"]) == ("UNSET", None)
    t = batch.table
    dur = {
        n: e - s
        for n, s, e in zip(
            t.column("name").to_pylist(),
            t.column("start_time").cast(pa.int64()).to_pylist(),
            t.column("end_time").cast(pa.int64()).to_pylist(),
        )
    }
    assert dur == {
        "POST /checkout": 7_600_000,
        "price cart": 20_000 - 1_000,
        "POST payments": 12_345 - 2_000,
        "consume order": 7_500_000,
    }
    assert t.column("start_time").cast(pa.int64()).to_pylist()[0] % 1000 in (0, 1)
    # attributes flattened to text, with the type of every value that is not a string
    assert root["attributes"] == {
        "http.request.method": "POST",
        "http.route": "/checkout",
        "http.response.status_code": "502",
    }
    assert root["attribute_types"] == {"http.response.status_code": "int"}
    assert child["attributes"] == {
        "cart.items": "3",
        "cart.total": "59.9",
        "cart.gift": "false",
        "cart.skus": '["a-1","b-2"]',
    }
    assert child["attribute_types"] == {
        "cart.items": "int",
        "cart.total": "double",
        "cart.gift": "bool",
        "cart.skus": "array",
    }
    assert err["attributes"] is None and err["attribute_types"] is None


def test_otlp_json_decodes_to_the_same_rows():
    msg = encode_spans(make_spans())
    js = to_otlp_json(msg)
    doc = json.loads(js)
    sp = doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    # OTLP/JSON rules: hex ids, int64 as strings, enums as integers, lowerCamelCase keys
    assert sp["traceId"] == msg.resource_spans[0].scope_spans[0].spans[0].trace_id.hex()
    assert len(sp["spanId"]) == 16 and isinstance(sp["startTimeUnixNano"], str) and isinstance(sp["kind"], int)
    proto = OtlpCodec("span").decode(raw_batch([msg.SerializeToString()]))
    jsonb = codec_for("otlp_json", "span", 1 << 20).decode(raw_batch([js]))
    assert not jsonb.rejects.indices
    assert jsonb.table.equals(proto.table)


def test_otlp_json_with_proto_names_enum_names_and_every_value_kind():
    """Both encodings flatten every AnyValue kind alike; proto field names and enum
    names (which protobuf JSON parsers accept) decode like the canonical form."""
    kv = lambda k, v: KeyValue(key=k, value=v)  # noqa: E731
    attrs = [
        kv("s", AnyValue(string_value="x")),
        kv("b", AnyValue(bool_value=True)),
        kv("i", AnyValue(int_value=-(2**63))),
        kv("d", AnyValue(double_value=0.1)),
        kv("nan", AnyValue(double_value=float("nan"))),
        kv("raw", AnyValue(bytes_value=b"\x00\xff")),
        kv(
            "arr",
            AnyValue(array_value=ArrayValue(values=[AnyValue(int_value=1), AnyValue(string_value="two"), AnyValue()])),
        ),
        kv(
            "kv",
            AnyValue(
                kvlist_value=KeyValueList(
                    values=[kv("a", AnyValue(double_value=1.5)), kv("n", AnyValue(kvlist_value=KeyValueList()))]
                )
            ),
        ),
        kv("empty", AnyValue()),
    ]
    msg = ExportTraceServiceRequest.FromString(
        _span_msg(attributes=attrs, kind=3, parent_span_id=bytes(range(9, 17)), status={"code": 2, "message": "m"})
    )
    proto = OtlpCodec("span").decode(raw_batch([msg.SerializeToString()]))
    assert not proto.rejects.indices
    row = as_rows(proto.table)[0]
    assert row["attributes"] == {
        "s": "x",
        "b": "true",
        "i": str(-(2**63)),
        "d": "0.1",
        "nan": "nan",
        "raw": "AP8=",
        "arr": '[1,"two",null]',
        "kv": '{"a":1.5,"n":{}}',
        "empty": None,
    }
    assert (row["kind"], row["status_code"], row["parent_span_id"]) == ("CLIENT", "ERROR", bytes(range(9, 17)).hex())
    canonical = OtlpCodec("span", encoding="otlp_json").decode(raw_batch([to_otlp_json(msg)]))
    assert not canonical.rejects.indices and canonical.table.equals(proto.table)
    # proto field names, enum names, base64 → hex ids by hand
    doc = json_format.MessageToDict(msg, preserving_proto_field_name=True)
    sp = doc["resource_spans"][0]["scope_spans"][0]["spans"][0]
    assert sp["kind"] == "SPAN_KIND_CLIENT" and sp["status"]["code"] == "STATUS_CODE_ERROR"
    for k in ("trace_id", "span_id", "parent_span_id"):
        sp[k] = base64.b64decode(sp[k]).hex()
    sp["start_time_unix_nano"] = int(sp["start_time_unix_nano"])  # a JSON number is fine too
    variant = OtlpCodec("span", encoding="otlp_json").decode(raw_batch([json.dumps(doc).encode()]))
    assert not variant.rejects.indices and variant.table.equals(proto.table)


def test_several_messages_keep_their_index_and_bad_ones_are_rejected():
    spans = make_spans()
    m1 = encode_spans(spans[:2]).SerializeToString()
    m2 = encode_spans(spans[2:]).SerializeToString()
    values = [m1, b"\xff\xfe garbage \x00\x01", m2, None, m1[:-7]]
    batch = OtlpCodec("span").decode(raw_batch(values))
    accounted(batch, len(values))
    assert batch.table.column("_i").to_pylist() == [0, 0, 2, 2]
    got = dict(zip(batch.rejects.indices, zip(batch.rejects.reasons, batch.rejects.details)))
    assert got[1][0] == "format_violation" and got[1][1].startswith(
        "not an OTLP ExportTraceServiceRequest (protobuf): "
    )
    assert got[3] == ("format_violation", "tombstone (null value)")
    assert got[4][0] == "format_violation" and got[4][1].startswith("not an OTLP ExportTraceServiceRequest")


def test_every_truncation_of_a_message_is_rejected():
    payload = encode_spans(make_spans()).SerializeToString()  # one ResourceSpans: any cut breaks it
    values = [payload[:n] for n in range(1, len(payload))]
    batch = OtlpCodec("span").decode(raw_batch(values))
    accounted(batch, len(values))
    assert batch.table.num_rows == 0
    assert set(batch.rejects.reasons) == {"format_violation"}


def test_random_bytes_and_mutations_never_crash():
    rng = random.Random(11)
    good = encode_spans(make_spans()).SerializeToString()
    goodj = to_otlp_json(encode_spans(make_spans()))
    for encoding, base in (("otlp_proto", good), ("otlp_json", goodj)):
        values = []
        for _ in range(600):
            r = rng.random()
            if r < 0.4:
                values.append(bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 120))))
            elif r < 0.8:
                b = bytearray(base)
                for _ in range(rng.randint(1, 3)):
                    b[rng.randrange(len(b))] = rng.getrandbits(8)
                values.append(bytes(b))
            else:
                values.append(base[: rng.randrange(1, len(base))])
        for signal in ("span", "log"):
            batch = OtlpCodec(signal, encoding=encoding).decode(raw_batch(values))
            accounted(batch, len(values))


def _span_msg(**span_fields) -> bytes:
    fields = {
        "trace_id": bytes(range(1, 17)),
        "span_id": bytes(range(1, 9)),
        "name": "x",
        "start_time_unix_nano": T0,
        "end_time_unix_nano": T0 + 1000,
    }
    fields.update(span_fields)
    return ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                resource=PbResource(attributes=[KeyValue(key="service.name", value=AnyValue(string_value="svc"))]),
                scope_spans=[ScopeSpans(spans=[PbSpan(**fields)])],
            )
        ]
    ).SerializeToString()


def test_invalid_spans_reject_their_message_with_the_span_path():
    values = [
        _span_msg(trace_id=b""),
        _span_msg(span_id=b"\x01\x02"),
        _span_msg(trace_id=bytes(16)),
        _span_msg(kind=9),
        _span_msg(start_time_unix_nano=0),
        ExportTraceServiceRequest(resource_spans=[ResourceSpans(resource=PbResource())]).SerializeToString(),
        _span_msg(),
        b"\x08\x01",  # field 1 as a varint: only unknown fields
    ]
    batch = OtlpCodec("span").decode(raw_batch(values))
    accounted(batch, len(values))
    assert batch.table.column("_i").to_pylist() == [6]
    row = as_rows(batch.table)[0]
    assert row["trace_id"] == bytes(range(1, 17)).hex() and row["service"] == "svc" and row["kind"] == "UNSPECIFIED"
    assert row["resource"] == {"service.name": "svc"} and row["attributes"] is None
    got = dict(zip(batch.rejects.indices, zip(batch.rejects.reasons, batch.rejects.details)))
    where = "resource_spans[0].scope_spans[0].spans[0]"
    assert got[0] == ("schema_violation", f"{where}: no trace id")
    assert got[1] == ("schema_violation", f"{where}: span id has 2 bytes, expected 8")
    assert got[2] == ("schema_violation", f"{where}: trace id is all zeros (invalid)")
    assert got[3] == ("schema_violation", f"{where}: span kind 9 is not an OTLP SpanKind")
    assert got[4] == ("schema_violation", f"{where}: no start_time_unix_nano")
    assert got[5] == ("schema_violation", "OTLP message holds no spans")
    assert got[7] == ("format_violation", "not an OTLP ExportTraceServiceRequest (protobuf): only unknown fields [1]")


def test_json_specific_rejects():
    good = json.loads(to_otlp_json(encode_spans(make_spans())))
    bad_hex = json.loads(json.dumps(good))
    bad_hex["resourceSpans"][0]["scopeSpans"][0]["spans"][1]["traceId"] = "zz" * 16
    wrong_type = json.loads(json.dumps(good))
    wrong_type["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["name"] = {"not": "a string"}
    values = [
        b"{not json",
        b"[1, 2]",
        json.dumps(bad_hex).encode(),
        json.dumps(wrong_type).encode(),
        b"{}",
        json.dumps(good).encode(),
    ]
    batch = OtlpCodec("span", encoding="otlp_json").decode(raw_batch(values))
    accounted(batch, len(values))
    # per item (issue 19 item 3): the bad span is rejected alone, the others of its message go on
    n = len(good["resourceSpans"][0]["scopeSpans"][0]["spans"])
    assert sorted(set(zip(batch.table.column("_i").to_pylist(), batch.table.column("_item").to_pylist()))) == [
        (2, k) for k in range(n) if k != 1
    ] + [(3, k) for k in range(1, n)] + [(5, k) for k in range(n)]
    assert batch.rejects.keys() == [(0, None), (1, None), (2, 1), (3, 0), (4, None)]
    assert json.loads(batch.item_raw(2, 1)) == bad_hex["resourceSpans"][0]["scopeSpans"][0]["spans"][1]
    got = dict(zip(batch.rejects.indices, zip(batch.rejects.reasons, batch.rejects.details)))
    assert got[0][0] == "format_violation" and got[0][1].startswith("not OTLP/JSON: invalid JSON")
    assert got[1] == (
        "format_violation",
        "not an OTLP/JSON ExportTraceServiceRequest: expected a JSON object, got array",
    )
    assert got[2] == (
        "schema_violation",
        "resourceSpans[0].scopeSpans[0].spans[1].traceId: not a hex id: " + repr("zz" * 16),
    )
    assert got[3] == ("schema_violation", "resourceSpans[0].scopeSpans[0].spans[0].name: expected a string, got object")
    assert got[4] == ("schema_violation", "OTLP message holds no spans")


# -- logs ----------------------------------------------------------------------------------


def make_logs():
    exporter = InMemoryLogRecordExporter()
    provider = LoggerProvider(resource=RESOURCE)
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    logger = provider.get_logger("shop.checkout")
    tracer_provider = TracerProvider(resource=RESOURCE)
    span = tracer_provider.get_tracer("t").start_span("req")
    ctx = trace.set_span_in_context(span)
    logger.emit(
        timestamp=T0 + 123_456_789,
        context=ctx,
        severity_number=SeverityNumber.ERROR,
        severity_text="ERROR",
        body="payment failed: card declined",
        attributes={"enduser.id": "u-42", "http.request_id": "req-9", "payment.provider": "acme", "attempt": 2},
    )
    logger.emit(
        timestamp=T0 + 1_000_000_000,
        severity_number=SeverityNumber.WARN2,
        severity_text="WARNING",
        body={"event": "slow_query", "ms": 1234, "tables": ["orders", "users"]},
    )
    logger.emit(observed_timestamp=T0 + 2_000_000_000, severity_text="debug", body="only observed time")
    logger.emit(timestamp=T0 + 3_000_000_000, body="no severity at all", event_name="checkout.started")
    span.end()
    provider.shutdown()
    return exporter.get_finished_logs(), span.get_span_context()


def test_logs_from_sdk_decode_exactly():
    logs, sctx = make_logs()
    msg = encode_logs(logs)
    batch = OtlpCodec("log").decode(raw_batch([b"", msg.SerializeToString()]))
    accounted(batch, 2)
    assert_wire_schema(batch.table, "log")
    rows = as_rows(batch.table)
    assert [r.pop("_i") for r in rows] == [1, 1, 1, 1]
    assert [r.pop("_item") for r in rows] == [0, 1, 2, 3]
    res_rest = {
        k: v for k, v in RESOURCE_MAP.items() if k not in ("service.name", "host.name", "deployment.environment.name")
    }
    assert "k8s.pod.name" in res_rest and "service.version" in res_rest
    common = {"service": "checkout", "host": "web-1", "env": "prod"}
    ms = lambda ns: datetime.fromtimestamp(ns // 1_000_000 / 1000, UTC)  # noqa: E731
    assert rows[0] == dict(
        common,
        timestamp=ms(T0 + 123_456_789),
        level="ERROR",
        message="payment failed: card declined",
        trace_id=f"{sctx.trace_id:032x}",
        span_id=f"{sctx.span_id:016x}",
        request_id="req-9",
        user_id="u-42",
        attributes=dict(res_rest, **{"payment.provider": "acme", "attempt": "2"}),
    )
    assert rows[1] == dict(
        common,
        timestamp=ms(T0 + 1_000_000_000),
        level="WARN",
        message='{"event":"slow_query","ms":1234,"tables":["orders","users"]}',
        trace_id=None,
        span_id=None,
        request_id=None,
        user_id=None,
        attributes=res_rest,
    )
    assert rows[2] == dict(
        common,
        timestamp=ms(T0 + 2_000_000_000),
        level="DEBUG",
        message="only observed time",
        trace_id=None,
        span_id=None,
        request_id=None,
        user_id=None,
        attributes=res_rest,
    )
    assert rows[3] == dict(
        common,
        timestamp=ms(T0 + 3_000_000_000),
        level="INFO",
        message="no severity at all",
        trace_id=None,
        span_id=None,
        request_id=None,
        user_id=None,
        attributes=dict(res_rest, **{"event.name": "checkout.started"}),
    )
    assert batch.table.schema.field("timestamp").type == pa.timestamp("ms", tz="UTC")
    # and the JSON form decodes to the same table
    jb = OtlpCodec("log", encoding="otlp_json").decode(raw_batch([b"", to_otlp_json(msg)]))
    assert jb.table.equals(batch.table) and jb.rejects.indices == [0]


def test_log_rejects():
    logs, _ = make_logs()
    msg = encode_logs(logs)
    no_time = ExportLogsServiceRequest()
    no_time.CopyFrom(msg)
    rec = no_time.resource_logs[0].scope_logs[0].log_records[2]
    rec.time_unix_nano = 0
    rec.observed_time_unix_nano = 0
    empty = ExportLogsServiceRequest(resource_logs=[msg.resource_logs[0]])
    del empty.resource_logs[0].scope_logs[:]
    values = [no_time.SerializeToString(), empty.SerializeToString(), b"\x0a\x05abc", msg.SerializeToString()]
    batch = OtlpCodec("log", max_bytes=1 << 16).decode(raw_batch(values))
    accounted(batch, len(values))
    got = dict(zip(batch.rejects.indices, zip(batch.rejects.reasons, batch.rejects.details)))
    assert got[0] == (
        "schema_violation",
        "resource_logs[0].scope_logs[0].log_records[2]: neither time_unix_nano nor observed_time_unix_nano is set",
    )
    assert got[1] == ("schema_violation", "OTLP message holds no log records")
    assert got[2][0] == "format_violation" and got[2][1].startswith("not an OTLP ExportLogsServiceRequest (protobuf): ")
    # per item (issue 19 item 3): the record without a time is rejected alone, its neighbours go on
    n = len(msg.resource_logs[0].scope_logs[0].log_records)
    assert batch.rejects.keys() == [(0, 2), (1, None), (2, None)]
    assert sorted(zip(batch.table.column("_i").to_pylist(), batch.table.column("_item").to_pylist())) == [
        (0, k) for k in range(n) if k != 2
    ] + [(3, k) for k in range(n)]
    assert batch.item_raw(0, 2) == rec.SerializeToString()
    # the size limit is per log record
    small = OtlpCodec("log", max_bytes=10).decode(raw_batch([msg.SerializeToString()]))
    assert small.rejects.reasons == ["size_violation"] * n and small.rejects.items == list(range(n))
    assert small.rejects.details[0].startswith("resource_logs[0].scope_logs[0].log_records[0]: item of ")


def test_registered_and_validated():
    assert CODECS["otlp_proto"](signal="span", max_bytes=10).encoding == "otlp_proto"
    assert codec_for("otlp_proto", "span", 100).encoding == "otlp_proto"
    assert codec_for("otlp_json", "log", 100).encoding == "otlp_json"
    with pytest.raises(ValueError, match="signals 'span', 'log' and 'metric'"):
        OtlpCodec("event")
    with pytest.raises(ValueError, match="unknown OTLP encoding"):
        OtlpCodec("span", encoding="otlp_xml")
