"""Plant personal data in every string field of every signal and codec (JSON, Avro,
OTLP protobuf, OTLP JSON), run the whole pipeline (stateful stages included) into real
Iceberg tables, then scan every table's every string, list element, map key, map value
and raw payload: no planted secret survives, and no string holds an e-mail address, a
Luhn-valid card number, a bearer token or an API key."""

from __future__ import annotations

import json
import re
from datetime import datetime, UTC

import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.metrics.v1.metrics_pb2 import Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from pipelines.loader import parse_spec
from schemas.codecs import encode_confluent, to_otlp_json
from sinks.catalog import open_catalog
from sources.generator import EmbeddedPartition
from tests.helpers import BASE, run
from transforms.batch import RawBatch
from transforms.scrub import luhn_ok

pytestmark = pytest.mark.metrics

# every secret carries a marker no placeholder or pseudonym can contain
MAIL = "jane.plantedmail@example.org"
SECRETS = (
    f"mail {MAIL} or jane.plantedenc%40example.org card 4111 1111 1111 1111 glued card4111111111111111 "
    "4111111111111111USD x_5555555555554444 Bearer eyJplantedtok.eyJzdWIiOiIxIn0.c2ln api_key=PLANTEDapikey123 "
    "sk_live_PLANTEDstripe1234"
)
MARKERS = (
    "plantedmail",
    "plantedenc",
    "4111111111111111",
    "4111 1111 1111 1111",
    "5555555555554444",
    "plantedtok",
    "PLANTEDapikey",
    "PLANTEDstripe",
    "dXNlcjpwYXNzcGxhbnRlZA",
    "plantedcookie",
)
SENSITIVE = {
    "http.request.header.authorization": "Basic dXNlcjpwYXNzcGxhbnRlZA",
    "http.request.header.cookie": "sid=plantedcookie",
}


def secret(field: str) -> str:
    return f"{field}: {SECRETS}"


def attrs(prefix: str) -> dict[str, str]:
    return {
        **SENSITIVE,
        "url.full": f"https://psp.example/v1/customers?email={MAIL}",
        f"{prefix}.{MAIL}": secret(prefix),
    }


# -- records -------------------------------------------------------------------------------

T0 = BASE + 3_600_000


def event_record(k: int, event_type: str = "click", client_ip: str = "81.2.69.160") -> dict:
    return {
        "event_id": f"ev{k}-{MAIL}",
        "timestamp": T0 + k,
        "page": secret("page"),
        "session_id": f"s{k % 2}-{MAIL}",
        "user": MAIL,
        "location": secret("location"),
        "platform": secret("platform"),
        "user_agent": secret("ua"),
        "client_ip": client_ip,
        "events": [
            {"type": "form_start", "form": secret("form")},
            {"type": event_type, "target": secret("target"), "form": secret("form"), "step": 1, "duration_ms": 5},
            {
                "type": "error",
                "message": secret("message"),
                "stackTrace": "TypeError: x\n  at f (" + secret("stack") + ")",
            },
        ],
    }


def log_record(k: int) -> dict:
    return {
        "timestamp": T0 + k,
        "level": "ERROR",
        "service": f"svc-{MAIL}",
        "message": secret("message"),
        "trace_id": f"{k:032x}",
        "span_id": f"{k:016x}",
        "request_id": f"req-{MAIL}",
        "user_id": MAIL,
        "host": f"host-{MAIL}",
        "env": f"env-{MAIL}",
        "attributes": attrs("log"),
    }


def span_record(k: int) -> dict:
    return {
        "trace_id": f"{k + 1:032x}",
        "span_id": f"{k + 1:016x}",
        "parent_span_id": None,
        "service": f"svc-{MAIL}",
        "name": secret("name"),
        "kind": "SERVER",
        "start_time": (T0 + k) * 1000,
        "end_time": (T0 + k) * 1000 + 5000,
        "status_code": "ERROR",
        "status_message": secret("status"),
        "attributes": attrs("span"),
        "resource": attrs("resource"),
    }


def metric_record(k: int) -> dict:
    return {
        "name": f"http.requests.{MAIL}",
        "kind": "COUNTER",
        "timestamp": T0 + k * 1000,
        "value": float(k),
        "labels": {"route": secret("route"), "authorization": "Basic dXNlcjpwYXNzcGxhbnRlZA", f"u.{MAIL}": "1"},
    }


def kv(d: dict[str, str]) -> list[KeyValue]:
    return [KeyValue(key=k, value=AnyValue(string_value=v)) for k, v in d.items()]


def otlp_spans(k: int) -> ExportTraceServiceRequest:
    r = span_record(k)
    span = Span(
        trace_id=bytes.fromhex(r["trace_id"]),
        span_id=bytes.fromhex(r["span_id"]),
        name=r["name"],
        kind=2,
        start_time_unix_nano=r["start_time"] * 1000,
        end_time_unix_nano=r["end_time"] * 1000,
        status=Status(code=2, message=r["status_message"]),
        attributes=kv(r["attributes"]),
    )
    res = Resource(attributes=kv({"service.name": r["service"], **r["resource"]}))
    return ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(resource=res, scope_spans=[ScopeSpans(spans=[span])])]
    )


def otlp_logs(k: int) -> ExportLogsServiceRequest:
    r = log_record(k)
    rec = LogRecord(
        time_unix_nano=r["timestamp"] * 1_000_000,
        severity_number=17,
        severity_text="ERROR",
        body=AnyValue(string_value=r["message"]),
        trace_id=bytes.fromhex(r["trace_id"]),
        span_id=bytes.fromhex(r["span_id"]),
        attributes=kv({**r["attributes"], "enduser.id": MAIL, "http.request_id": r["request_id"]}),
    )
    res = Resource(
        attributes=kv({"service.name": r["service"], "host.name": r["host"], "deployment.environment.name": r["env"]})
    )
    return ExportLogsServiceRequest(
        resource_logs=[ResourceLogs(resource=res, scope_logs=[ScopeLogs(log_records=[rec])])]
    )


def iso(ms: int, unit: int = 1000) -> str:
    return datetime.fromtimestamp(ms / unit, UTC).isoformat()


def otlp_metrics(k: int) -> ExportMetricsServiceRequest:
    r = metric_record(k)
    point = NumberDataPoint(time_unix_nano=r["timestamp"] * 1_000_000, as_double=r["value"], attributes=kv(r["labels"]))
    metric = Metric(name=r["name"], description=secret("description"), unit="1", gauge=Gauge(data_points=[point]))
    res = Resource(attributes=kv({"service.name": f"svc-{MAIL}", **SENSITIVE}))
    return ExportMetricsServiceRequest(
        resource_metrics=[ResourceMetrics(resource=res, scope_metrics=[ScopeMetrics(metrics=[metric])])]
    )


def js(d: dict) -> bytes:
    """The JSON codec's form of a wire record: timestamps as ISO-8601 strings."""
    d = dict(d)
    for k in ("timestamp",):
        if isinstance(d.get(k), int):
            d[k] = iso(d[k])
    for k in ("start_time", "end_time"):
        if isinstance(d.get(k), int):
            d[k] = iso(d[k], 1_000_000)
    return json.dumps(d).encode()


def payloads() -> dict[tuple[str, str, str], list[bytes]]:
    """(source, signal, codec) → records: good ones of every field, and rejects of every
    kind (bad JSON, unknown type, bad IP, bad Avro, bad protobuf), each full of secrets."""
    bad_text = f"not json {SECRETS}".encode()
    bad_binary = b"\x00\x00\x00\x00\x01\xff\xfe" + SECRETS.encode() + b"\xff"
    ev_bad_type = event_record(50, event_type=f"tap-{MAIL}")
    return {
        ("events", "event", "json"): [js(event_record(k)) for k in range(4)]
        + [js(ev_bad_type), js(event_record(51, client_ip=f"ip-{MAIL}")), bad_text],
        ("events_avro", "event", "avro"): [
            encode_confluent("event", _avro_event(event_record(k))) for k in range(10, 13)
        ]
        + [encode_confluent("event", _avro_event(ev_bad_type)), bad_binary],
        ("logs", "log", "json"): [js(log_record(k)) for k in range(20, 23)]
        + [js({**log_record(24), "level": f"LOUD-{MAIL}"}), bad_text],
        ("logs_avro", "log", "avro"): [encode_confluent("log", log_record(k)) for k in range(25, 27)]
        + [encode_confluent("log", {**log_record(28), "trace_id": f"x-{MAIL}"}), bad_binary],
        ("logs_otlp", "log", "otlp_proto"): [otlp_logs(k).SerializeToString() for k in range(30, 32)] + [bad_binary],
        ("logs_otlpj", "log", "otlp_json"): [to_otlp_json(otlp_logs(k)) for k in range(32, 34)] + [bad_text],
        ("spans", "span", "json"): [js(span_record(k)) for k in range(40, 43)]
        + [js({**span_record(44), "span_id": MAIL}), bad_text],
        ("spans_avro", "span", "avro"): [encode_confluent("span", span_record(k)) for k in range(45, 47)]
        + [bad_binary],
        ("spans_otlp", "span", "otlp_proto"): [otlp_spans(k).SerializeToString() for k in range(47, 49)] + [bad_binary],
        ("spans_otlpj", "span", "otlp_json"): [to_otlp_json(otlp_spans(k)) for k in range(60, 62)] + [bad_text],
        ("metrics", "metric", "json"): [js(metric_record(k)) for k in range(3)]
        + [
            js({**metric_record(4), "kind": f"BAD-{MAIL}"}),
            js({**metric_record(5), "timestamp": T0 - 600_000}),
            bad_text,
        ],
        ("metrics_avro", "metric", "avro"): [
            encode_confluent(
                "metric",
                {
                    **metric_record(k),
                    "bucket_bounds": None,
                    "bucket_counts": None,
                    "count": None,
                    "sum": None,
                    "temporality": None,
                    "start_time": None,
                },
            )
            for k in range(6, 8)
        ]
        + [bad_binary],
        ("metrics_otlp", "metric", "otlp_proto"): [otlp_metrics(k).SerializeToString() for k in range(8, 10)]
        + [bad_binary],
        ("metrics_otlpj", "metric", "otlp_json"): [
            json.dumps(json_format.MessageToDict(otlp_metrics(k))).encode() for k in range(10, 12)
        ]
        + [bad_text],
    }


def _avro_event(r: dict) -> dict:
    events = [
        {
            "type": e["type"],
            "target": e.get("target"),
            "depth": None,
            "form": e.get("form"),
            "step": e.get("step"),
            "duration_ms": e.get("duration_ms"),
            "message": e.get("message"),
            "stackTrace": e.get("stackTrace"),
        }
        for e in r["events"]
    ]
    return {**r, "events": events}


class PlantedSource:
    """Every (source, signal, codec) stream as one partition; one raw batch of all its records."""

    def __init__(self, streams: dict[tuple[str, str, str], list[bytes]]):
        self.streams = {src: (sig, values) for (src, sig, _), values in streams.items()}

    def partitions(self):
        return [EmbeddedPartition(src, sig, src, 0, len(v)) for src, (sig, v) in self.streams.items()]

    def batches(self, part, start_offset: int = 0):
        values = self.streams[part.source][1][start_offset:]
        if values:
            offsets = list(range(start_offset, start_offset + len(values)))
            yield RawBatch(part.source, part.topic, 0, values, offsets, [T0 + 100] * len(values), topic_partitions=1)


def streams_for(metric_codec: str) -> dict[tuple[str, str, str], list[bytes]]:
    """Every stream, with the metric one of ``metric_codec`` (a spec has one rollup step,
    so one metric flow)."""
    return {k: v for k, v in payloads().items() if k[1] != "metric" or k[2] == metric_codec}


def spec_for(warehouse, streams) -> object:
    sources, flows = [], []
    steps = {
        "event": [
            {"kind": "validate"},
            {"kind": "scrub"},
            {"kind": "enrich"},
            {
                "kind": "product",
                "shards": 1,
                "config": {"session_gap": "30m", "watermark_delay": "0s", "report_resolution": "1h"},
            },
        ],
        "log": [{"kind": "validate"}, {"kind": "scrub"}, {"kind": "enrich"}],
        "span": [
            {"kind": "validate"},
            {"kind": "scrub"},
            {
                "kind": "tail_sample",
                "shards": 1,
                "sampler": {"decision_wait": "1s", "policies": [{"name": "all", "type": "always_sample"}]},
            },
        ],
        "metric": [
            {"kind": "validate"},  # no scrub step: the implicit one still scrubs
            {
                "kind": "rollup",
                "shards": 1,
                "config": {"resolutions": ["1m"], "watermark_delay": "0s", "allowed_lateness": "1m"},
                "derive": [
                    {
                        "name": "log.errors",
                        "source": "logs",
                        "filter": {"level": ["ERROR"]},
                        "labels": ["service", "host"],
                    }
                ],
            },
        ],
    }
    sinks = {"event": "events", "log": "logs", "span": "spans", "metric": "metrics"}
    for src, sig, codec in streams:
        sources.append({"name": src, "topic": src, "signal": sig, "codec": codec, "partitions": 1})
        flows.append({"name": f"f_{src}", "source": src, "sink": {"table": sinks[sig]}, "steps": steps[sig]})

    return parse_spec(
        {
            "name": "pii",
            "storage": {"catalog": {"warehouse": str(warehouse)}},
            "privacy": {"pseudonym_key": "pii-scan-key-0123456789"},
            "sources": sources,
            "flows": flows,
        }
    )


# -- the scan ---------------------------------------------------------------------------------

EMAIL_RE = re.compile(r"[A-Za-z0-9._%+\-]+(?:@|%40)[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}")
TOKEN_RE = re.compile(r"(?i)bearer\s+(?!\[TOKEN\])\S+|eyJ[A-Za-z0-9_\-]{4,}\.|sk_live_|api_key=(?!\[API_KEY\]|\*)")
HEX_ID = re.compile(r"^[0-9a-f]{16}$|^[0-9a-f]{32}$")  # trace / span ids and pseudonyms: random hex, not text


def strings(value, path: str):
    """(path, text) for every string inside ``value``: list elements, map keys and values,
    struct fields; binary as Latin-1 (one character per byte)."""
    if value is None:
        return
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, bytes):
        yield path, value.decode("latin-1")
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from strings(v, f"{path}.{k}")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            if isinstance(v, tuple) and len(v) == 2:  # a map entry
                yield from strings(v[0], f"{path}{{key}}")
                yield from strings(v[1], f"{path}[{v[0]}]")
            else:
                yield from strings(v, f"{path}[{i}]")


def findings(text: str) -> list[str]:
    found = [m for m in MARKERS if m in text]
    found += EMAIL_RE.findall(text) + TOKEN_RE.findall(text)
    if not HEX_ID.match(text):
        for run in re.findall(r"\d(?:[ \-]?\d)*", text):
            digits = re.sub(r"[ \-]", "", run)
            for n in range(13, 20):
                found += [
                    digits[i : i + n]
                    for i in range(len(digits) - n + 1)
                    if luhn_ok(digits[i : i + n]) and digits[i : i + n] in ("4111111111111111", "5555555555554444")
                ]
            # a payment card: 13-19 digits, Luhn-valid, issuer prefix 2-6 (or 1 for 15-digit UATP)
            if (
                13 <= len(digits) <= 19
                and luhn_ok(digits)
                and (digits[0] in "23456" or (digits[0] == "1" and len(digits) == 15))
            ):
                found.append(run)
    return found


@pytest.mark.parametrize("metric_codec", ["json", "avro", "otlp_proto", "otlp_json"])
def test_no_planted_secret_survives_in_any_table(tmp_path, metric_codec):
    streams = streams_for(metric_codec)
    spec = spec_for(tmp_path / "wh", streams)
    run("bytewax", spec, PlantedSource(streams))
    catalog = open_catalog(spec.storage)
    tables = {name: catalog.load_table(f"obs.{name}").scan().to_arrow() for (_, name) in catalog.list_tables("obs")}
    rows = {name: t.num_rows for name, t in tables.items()}
    # the pipeline really carried the planted records into every table they feed
    assert rows["events"] == (4 + 3) * 3 and rows["logs"] == 3 + 2 + 2 + 2 and rows["spans"] == 3 + 2 + 2 + 2
    assert rows["traces"] == 9 and rows["sessions"] == 2 and rows["metrics"] > 0
    dead = tables["dead_letters"].to_pylist()
    metric_dead = 2 if metric_codec == "json" else 1
    assert len(dead) == 3 + 2 + 2 + 2 + 1 + 1 + 2 + 1 + 1 + 1 + metric_dead, sorted(
        (d["source_topic"], d["reason"]) for d in dead
    )
    # Avro and protobuf payloads are binary (masked byte for byte), the others text
    binary_metrics = {"avro": [("metrics_avro", 2)], "otlp_proto": [("metrics_otlp", 2)]}.get(metric_codec, [])
    assert sorted((d["source_topic"], d["source_offset"]) for d in dead if d["raw_text"] is False) == sorted(
        [
            ("events_avro", 3),
            ("events_avro", 4),
            ("logs_avro", 2),
            ("logs_avro", 3),
            ("logs_otlp", 2),
            ("spans_avro", 2),
            ("spans_otlp", 2),
            *binary_metrics,
        ]
    )
    assert all(d["raw_text"] is not None for d in dead)
    leaks = []
    for name, t in tables.items():
        for k, row in enumerate(t.to_pylist()):
            for col, value in row.items():
                for path, text in strings(value, f"{name}[{k}].{col}"):
                    if f := findings(text):
                        leaks.append((path, f, text[:160]))
    assert leaks == []
    # identifiers that held personal data are pseudonyms, the same in every table (joins work)
    sessions = {r["session_id"] for r in tables["sessions"].to_pylist()}
    assert sessions == {r["session_id"] for r in tables["events"].to_pylist()} and all(
        HEX_ID.match(s) for s in sessions
    )
    assert {r["service"] for r in tables["spans"].to_pylist()} == {
        r["root_service"] for r in tables["traces"].to_pylist()
    }
    # sensitive attribute values redacted whole, other values scrubbed in place
    a = dict(tables["spans"].to_pylist()[0]["attributes"])
    assert a["http.request.header.authorization"] == "[REDACTED]" and a["http.request.header.cookie"] == "[REDACTED]"
    assert a["url.full"] == "https://psp.example/v1/customers?email=[EMAIL]"
