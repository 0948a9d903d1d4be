"""Seeds and mutators for the fuzz suite: good records of every signal x codec (the
embedded generator's records, re-encoded for Avro and OTLP) and mutators at least as
mean as issue 19's campaign: truncation at any position, bit flips, splices, inserted
bytes (NUL, BOM, invalid UTF-8, newlines, NaN / Infinity, huge integers, deep nesting),
JSON type confusion at any path, Avro framing, protobuf structure and OTLP values at
their bounds (fixed64 >= 2^63, zero and maximal times, bad enums, wrong id lengths)."""

from __future__ import annotations

import json
import random
import struct
from dataclasses import dataclass
from datetime import datetime

import pyarrow as pa
from google.protobuf import json_format
from google.protobuf.message import Message
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
    Sum,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from schemas.codecs import codec_for
from schemas.codecs.avro_codec import encode_confluent
from schemas.codecs.otlp_codec import SPAN_KINDS, STATUS_CODES, to_otlp_json
from sources.generator import partition_stream
from transforms.batch import RawBatch

SIGNALS = ("event", "log", "span", "metric")
#: every signal x codec pair the project decodes (events have no OTLP form)
PAIRS = [(s, c) for c in ("json", "avro") for s in SIGNALS] + [
    (s, c) for c in ("otlp_proto", "otlp_json") for s in ("log", "span", "metric")
]
START_MS = 1_763_000_000_000


@dataclass(frozen=True)
class Seed:
    """A good record: its payload and the time it entered the source."""

    value: bytes
    arrival_ms: int


def _kv(d: dict | None) -> list[KeyValue]:
    return [KeyValue(key=k, value=AnyValue(string_value=str(v))) for k, v in (d or {}).items() if v is not None]


def _ns(t: datetime) -> int:
    return int(t.timestamp()) * 1_000_000_000 + t.microsecond * 1000


def _wire_rows(signal: str, values: list[bytes]) -> list[dict]:
    b = codec_for("json", signal, 1 << 20).decode(
        RawBatch("g", "g", 0, values, list(range(len(values))), [0] * len(values))
    )
    assert len(b.rejects) == 0, b.rejects.details
    rows = b.table.drop_columns(["_i"]).to_pylist()
    maps = [f.name for f in b.table.schema if pa.types.is_map(f.type)]
    for r in rows:
        for k in maps:
            if r[k] is not None:
                r[k] = dict(r[k])
    return rows


def _otlp_spans(rows: list[dict]) -> Message:
    spans = [
        Span(
            trace_id=bytes.fromhex(r["trace_id"]),
            span_id=bytes.fromhex(r["span_id"]),
            parent_span_id=bytes.fromhex(r["parent_span_id"]) if r["parent_span_id"] else b"",
            name=r["name"],
            kind=SPAN_KINDS.index(r["kind"]),
            start_time_unix_nano=_ns(r["start_time"]),
            end_time_unix_nano=_ns(r["end_time"]),
            status=Status(code=STATUS_CODES.index(r["status_code"]), message=r["status_message"] or ""),
            attributes=_kv(r["attributes"]),
        )
        for r in rows
    ]
    res = Resource(attributes=_kv({**(rows[0]["resource"] or {}), "service.name": rows[0]["service"]}))
    return ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(resource=res, scope_spans=[ScopeSpans(spans=spans)])]
    )


def _otlp_logs(rows: list[dict]) -> Message:
    recs = [
        LogRecord(
            time_unix_nano=_ns(r["timestamp"]),
            severity_text=r["level"],
            body=AnyValue(string_value=r["message"] or ""),
            trace_id=bytes.fromhex(r["trace_id"]) if r["trace_id"] else b"",
            span_id=bytes.fromhex(r["span_id"]) if r["span_id"] else b"",
            attributes=_kv(r["attributes"]),
        )
        for r in rows
    ]
    res = Resource(
        attributes=_kv(
            {
                "service.name": rows[0]["service"],
                "host.name": rows[0]["host"],
                "deployment.environment.name": rows[0]["env"],
            }
        )
    )
    return ExportLogsServiceRequest(
        resource_logs=[ResourceLogs(resource=res, scope_logs=[ScopeLogs(log_records=recs)])]
    )


def _otlp_metrics(rows: list[dict]) -> Message:
    metrics = []
    for r in rows:
        labels = dict(r["labels"] or {})
        labels.pop("service", None)
        t = _ns(r["timestamp"])
        if r["kind"] == "HISTOGRAM":
            dp = HistogramDataPoint(
                time_unix_nano=t,
                attributes=_kv(labels),
                count=r["count"],
                sum=r["sum"],
                explicit_bounds=r["bucket_bounds"],
                bucket_counts=r["bucket_counts"],
            )
            metrics.append(Metric(name=r["name"], histogram=Histogram(aggregation_temporality=1, data_points=[dp])))
        elif r["kind"] == "COUNTER":
            dp = NumberDataPoint(time_unix_nano=t, attributes=_kv(labels), as_double=r["value"])
            metrics.append(
                Metric(name=r["name"], sum=Sum(aggregation_temporality=2, is_monotonic=True, data_points=[dp]))
            )
        else:
            dp = NumberDataPoint(time_unix_nano=t, attributes=_kv(labels), as_double=r["value"])
            metrics.append(Metric(name=r["name"], gauge=Gauge(data_points=[dp])))
    res = Resource(attributes=_kv({"service.name": (rows[0]["labels"] or {}).get("service", "svc")}))
    return ExportMetricsServiceRequest(
        resource_metrics=[ResourceMetrics(resource=res, scope_metrics=[ScopeMetrics(metrics=metrics)])]
    )


_OTLP = {"span": _otlp_spans, "log": _otlp_logs, "metric": _otlp_metrics}


def seeds(signal: str, codec: str, n: int = 24) -> list[Seed]:
    """``n`` good records of ``signal`` in ``codec`` (OTLP: messages of 1 to 4 items)."""
    gen = list(partition_stream(signal, signal, 0, n * 3, seed=7, start_ms=START_MS, bad_fraction=0.0))
    if codec == "json":
        return [Seed(g.value, g.timestamp_ms) for g in gen[:n]]
    rows = _wire_rows(signal, [g.value for g in gen])
    if codec == "avro":
        return [Seed(encode_confluent(signal, r), g.timestamp_ms) for r, g in zip(rows[:n], gen)]
    out, k, rng = [], 0, random.Random(5)
    while len(out) < n and k < len(rows):
        m = rng.randint(1, 4)
        group, arrival = rows[k : k + m], max(g.timestamp_ms for g in gen[k : k + m])
        if signal == "span":  # one trace per message, as an SDK batch often is
            group = [r for r in group if r["trace_id"] == group[0]["trace_id"]]
        k += m
        msg = _OTLP[signal](group)
        out.append(
            Seed(
                msg.SerializeToString()
                if codec == "otlp_proto"
                else to_otlp_json(msg)
                if signal != "metric"
                else json.dumps(json_format.MessageToDict(msg)).encode(),
                arrival,
            )
        )
    return out


# -- mutators -------------------------------------------------------------------------------

INSERTS = [
    b"\x00",
    b"\xef\xbb\xbf",
    b"\xff",
    b"\xc3",
    b"\xed\xa0\x80",
    b"\n",
    b"\r\n",
    b"null",
    b"NaN",
    b"Infinity",
    b"-Infinity",
    b"Inf",
    b"-Inf",
    b"{",
    b"}",
    b"[",
    b"]",
    b'"',
    b"\\",
    b",",
    b":",
    b"18446744073709551616",
    b"-9223372036854775809",
    b"1e999",
    b"1" * 400,
    b"[" * 300,
    b"[" * 1100 + b"]" * 1100,
    b'{"a":' * 300,
    b"\xf0\x9f\x98",
]
WHOLE = [
    None,
    b"",
    b" ",
    b"\n",
    b"null",
    b"[]",
    b"{}",
    b"0",
    b'"x"',
    b"true",
    b"NaN",
    b"[" * 5000,
    b"\x00" * 8,
    b"\x00\x00\x00\x00\x01",
    b"\x0a\xff\x01 not protobuf",
]
CONFUSIONS = [
    None,
    True,
    False,
    0,
    -1,
    1.5,
    2**63,
    2**64,
    -(2**63) - 1,
    10**30,
    "",
    "x" * 300,
    "\u0000\u001f",
    "2025-13-45T99:99:99Z",
    [],
    {},
    [None],
    [[[]]],
    {"a": {"b": [1, "2", None]}},
    float("nan"),
    float("inf"),
]


def _walk(doc, rng: random.Random):
    """A random (container, key) inside a parsed JSON document, or None for the root."""
    node, slot = doc, None
    for _ in range(rng.randint(1, 8)):
        if isinstance(node, dict) and node:
            key = rng.choice(list(node))
        elif isinstance(node, list) and node:
            key = rng.randrange(len(node))
        else:
            break
        slot = (node, key)
        node = node[key]
    return slot


def type_confusion(value: bytes, rng: random.Random) -> bytes:
    """The JSON document with one value somewhere replaced by a value of another type
    (huge integers, NaN and Infinity literals, deep arrays and objects included)."""
    doc = json.loads(value)
    slot = _walk(doc, rng)
    deep = rng.choice([40, 300, 1100])
    new = rng.choice(CONFUSIONS + ["__DEEP__"])
    if slot is None:
        doc = new
    else:
        slot[0][slot[1]] = new
    return json.dumps(doc).encode().replace(b'"__DEEP__"', b"[" * deep + b"]" * deep)


def avro_framing(value: bytes, rng: random.Random) -> bytes:
    r = rng.randrange(5)
    if r == 0:
        return bytes([rng.choice([1, 0xFF, 0x7B])]) + value[1:]  # wrong magic byte
    if r == 1:
        return (
            value[:1] + struct.pack(">I", rng.choice([0, 2, 3, 4, 5, 6, 7, 99, 2**31])) + value[5:]
        )  # another schema id
    if r == 2:
        return value[: rng.randrange(0, 6)]  # header cut
    if r == 3:
        return value + bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 9)))  # trailing bytes
    k = rng.randrange(5, max(6, len(value)))
    return (
        value[:k] + bytes([0xFF, 0xFF, 0xFF, 0xFF, 0x0F]) + value[k:]
    )  # a huge varint (length / count) inside the body


def protobuf_structure(value: bytes, rng: random.Random) -> bytes:
    """Wire-level damage: a field's tag or length byte changed, unknown fields, a length
    prefix that runs past the end, a nested message cut."""
    b = bytearray(value)
    r = rng.randrange(4)
    if r == 0 and b:
        k = rng.randrange(len(b))
        b[k] = (b[k] & ~0x07) | rng.choice([1, 3, 4, 5, 6, 7])  # another wire type
    elif r == 1:
        k = rng.randrange(len(b) + 1)
        b[k:k] = rng.choice([b"\x08\x01", b"\xf8\xff\xff\xff\x0f\x00", b"\x0a\x80\x80\x80\x80\x10", b"\x12\x05ab"])
    elif r == 2 and len(b) > 2:
        k = rng.randrange(1, len(b))
        b[k] = rng.choice([0x00, 0x7F, 0xFF])
    else:
        b = b[: rng.randrange(len(b) + 1)]
    return bytes(b)


def otlp_bounds(value: bytes, signal: str, encoding: str, rng: random.Random) -> bytes:
    """One item's field set to a value at or past its bound."""
    mtype = {"span": ExportTraceServiceRequest, "log": ExportLogsServiceRequest, "metric": ExportMetricsServiceRequest}[
        signal
    ]
    msg = (
        mtype.FromString(value)
        if encoding == "otlp_proto"
        else json_format.Parse(_hex_to_b64(value, signal), mtype(), ignore_unknown_fields=True)
    )
    big = rng.choice([0, 2**63 - 1, 2**63, 2**64 - 1])
    if signal == "span":
        sp = rng.choice(msg.resource_spans[0].scope_spans[0].spans)
        r = rng.randrange(5)
        if r == 0:
            sp.start_time_unix_nano = big
        elif r == 1:
            sp.end_time_unix_nano = big
        elif r == 2:
            sp.kind = rng.choice([-1, 6, 2**31 - 1])
        elif r == 3:
            sp.span_id = bytes(rng.choice([0, 7, 9, 16]))
        else:
            sp.status.code = rng.choice([3, -5, 2**31 - 1])
    elif signal == "log":
        lr = rng.choice(msg.resource_logs[0].scope_logs[0].log_records)
        r = rng.randrange(4)
        if r == 0:
            lr.time_unix_nano = big
            lr.observed_time_unix_nano = rng.choice([0, big])
        elif r == 1:
            lr.severity_number = rng.choice([-1, 25, 2**31 - 1])
        elif r == 2:
            lr.trace_id = bytes(rng.choice([1, 15, 17]))
        else:
            lr.body.kvlist_value.values.add(key="k").value.double_value = float("nan")
    else:
        m = rng.choice(msg.resource_metrics[0].scope_metrics[0].metrics)
        which = m.WhichOneof("data")
        dp = getattr(m, which).data_points[0]
        if which == "histogram":
            if rng.random() < 0.5:
                dp.count = big
            elif len(dp.bucket_counts):
                dp.bucket_counts[rng.randrange(len(dp.bucket_counts))] = big
        elif rng.random() < 0.5:
            dp.as_double = rng.choice([float("nan"), float("inf"), -float("inf"), 1e308])
        else:
            dp.time_unix_nano = big
    if encoding == "otlp_proto":
        return msg.SerializeToString()
    return to_otlp_json(msg) if signal != "metric" else json.dumps(json_format.MessageToDict(msg)).encode()


def _hex_to_b64(value: bytes, signal: str) -> str:
    """OTLP/JSON (hex ids) as protobuf JSON (base64 ids), for json_format.Parse."""
    import base64

    doc = json.loads(value)
    if signal != "metric":
        top, scope, recs = {
            "span": ("resourceSpans", "scopeSpans", "spans"),
            "log": ("resourceLogs", "scopeLogs", "logRecords"),
        }[signal]
        for rs in doc.get(top, []):
            for ss in rs.get(scope, []):
                for rec in ss.get(recs, []):
                    for key in ("traceId", "spanId", "parentSpanId"):
                        if key in rec:
                            rec[key] = base64.b64encode(bytes.fromhex(rec[key])).decode()
    return json.dumps(doc)


def mutate(value: bytes, other: bytes, signal: str, codec: str, rng: random.Random) -> bytes | None:
    """One mutant of ``value`` (``other``: a second good record, for splices)."""
    kinds = ["truncate", "flip", "splice", "insert", "whole", "duplicate"]
    if codec in ("json", "otlp_json"):
        kinds += ["confuse", "confuse"]
    if codec == "avro":
        kinds += ["avro", "avro"]
    if codec == "otlp_proto":
        kinds += ["proto", "proto"]
    if codec.startswith("otlp"):
        kinds += ["bounds", "bounds"]
    kind = rng.choice(kinds)
    n = len(value)
    if kind == "truncate":
        return value[: rng.randrange(n)]
    if kind == "flip":
        b = bytearray(value)
        for _ in range(rng.randint(1, 3)):
            b[rng.randrange(n)] ^= 1 << rng.randrange(8)
        return bytes(b)
    if kind == "splice":
        return value[: rng.randrange(n + 1)] + other[rng.randrange(len(other) + 1) :]
    if kind == "insert":
        k = rng.randrange(n + 1)
        return value[:k] + rng.choice(INSERTS) + value[k:]
    if kind == "whole":
        w = rng.choice(WHOLE + [b"\xef\xbb\xbf" + value, value + b"\n" + other, b" " + value + b" ", value + b"\x00"])
        return w
    if kind == "duplicate":
        a = rng.randrange(n)
        b = rng.randrange(a, n + 1)
        return value[:b] + value[a:b] + value[b:]
    if kind == "confuse":
        return type_confusion(value, rng)
    if kind == "avro":
        return avro_framing(value, rng)
    if kind == "proto":
        return protobuf_structure(value, rng)
    return otlp_bounds(value, signal, codec, rng)


def corpus_batches(signal: str, codec: str, rng_name: str):
    """Batches of the corpus's ``signal`` seeds in ``codec``, about half of them mutated
    (:func:`mutate`), 4 batches each of 1, 2, 7, 60 and 200 records, seeded by ``rng_name``:
    what the compiled decoders' parity tests replay against their Python references."""
    good = [s.value for s in seeds(signal, codec, 24)]
    rng = random.Random(rng_name)
    for size in (1, 2, 7, 60, 200):
        for _ in range(4):
            batch = []
            for _ in range(size):
                a, b = rng.choice(good), rng.choice(good)
                batch.append(a if rng.random() < 0.5 else mutate(a, b, signal, codec, rng))
            yield batch
