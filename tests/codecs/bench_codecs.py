"""Decode rates of the Avro and OTLP codecs, with the JSON codec on the same records as
the baseline measured in the same run (a shared machine: compare within one run only).

    .venv/bin/python -m tests.codecs.bench_codecs [records]
"""

from __future__ import annotations

import sys
import time
from datetime import datetime, timedelta, UTC

import orjson
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.common._internal._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.common._internal.trace_encoder import encode_spans
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from schemas.codecs import codec_for
from schemas.codecs.avro_codec import encode_confluent
from schemas.codecs.otlp_codec import to_otlp_json
from transforms.batch import RawBatch

UTC = UTC
T0 = datetime(2026, 11, 21, 10, tzinfo=UTC)


def event(k: int) -> dict:
    return {
        "event_id": f"e-{k}",
        "timestamp": T0 + timedelta(milliseconds=k),
        "page": f"/products/{k % 50}",
        "session_id": f"s-{k // 7}",
        "user": f"u-{k % 1000}",
        "location": "Berlin, DE",
        "platform": "web",
        "user_agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36",
        "client_ip": "203.0.113.7",
        "events": [{"type": "page_view"}, {"type": "click", "target": "#buy", "duration_ms": 120}],
    }


def log(k: int) -> dict:
    return {
        "timestamp": T0 + timedelta(milliseconds=k),
        "level": "INFO",
        "service": "checkout",
        "message": f"order {k} placed",
        "trace_id": f"{k:032x}",
        "span_id": f"{k:016x}",
        "request_id": f"r-{k}",
        "user_id": f"u-{k % 1000}",
        "host": "web-1",
        "env": "prod",
        "attributes": {"order": str(k), "items": "3"},
    }


def json_of(rec: dict) -> bytes:
    return orjson.dumps({k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in rec.items()})


def rate(codec, values: list[bytes], repeat: int = 7) -> tuple[float, float]:
    raw = RawBatch("bench", "t", 0, values, list(range(len(values))), [0] * len(values))
    codec.decode(raw)  # warm up (schema resolution, caches)
    best = float("inf")
    rows = 0
    for _ in range(repeat):
        t = time.perf_counter()
        b = codec.decode(raw)
        best = min(best, time.perf_counter() - t)
        rows = b.table.num_rows
        assert not b.rejects.indices, b.rejects.details[:3]
    return len(values) / best, rows / best


def otlp_messages(n_spans: int, per_msg: int):
    res = Resource.create({"service.name": "checkout", "host.name": "web-1"})
    exp = InMemorySpanExporter()
    tp = TracerProvider(resource=res)
    tp.add_span_processor(SimpleSpanProcessor(exp))
    tracer = tp.get_tracer("bench")
    for k in range(n_spans // 4):
        with tracer.start_as_current_span(
            "GET /cart", kind=SpanKind.SERVER, attributes={"http.route": "/cart", "http.response.status_code": 200}
        ):
            with tracer.start_as_current_span("load cart", attributes={"cart.items": k % 9}):
                with tracer.start_as_current_span(
                    "SELECT carts", kind=SpanKind.CLIENT, attributes={"db.system": "postgresql"}
                ):
                    pass
            with tracer.start_as_current_span("render"):
                pass
    spans = exp.get_finished_spans()
    span_msgs = [encode_spans(spans[i : i + per_msg]) for i in range(0, len(spans), per_msg)]
    lexp = InMemoryLogRecordExporter()
    lp = LoggerProvider(resource=res)
    lp.add_log_record_processor(SimpleLogRecordProcessor(lexp))
    logger = lp.get_logger("bench")
    for k in range(n_spans):
        logger.emit(
            severity_number=SeverityNumber.INFO,
            body=f"order {k} placed",
            attributes={"enduser.id": f"u-{k % 100}", "order": k},
        )
    logs = lexp.get_finished_logs()
    log_msgs = [encode_logs(logs[i : i + per_msg]) for i in range(0, len(logs), per_msg)]
    return span_msgs, log_msgs


def main(n: int = 5000) -> None:
    print(f"decode rates, {n} records (best of 7, one thread)")
    print(f"{'case':44} {'records/s':>12} {'rows/s':>12}")

    def show(name, r):
        print(f"{name:44} {r[0]:12,.0f} {r[1]:12,.0f}")

    events = [event(k) for k in range(n)]
    show("json  event (baseline)", rate(codec_for("json", "event", 1 << 20), [json_of(e) for e in events]))
    show("avro  event", rate(codec_for("avro", "event", 1 << 20), [encode_confluent("event", e) for e in events]))
    logs = [log(k) for k in range(n)]
    show("json  log (baseline)", rate(codec_for("json", "log", 1 << 20), [json_of(r) for r in logs]))
    show("avro  log", rate(codec_for("avro", "log", 1 << 20), [encode_confluent("log", r) for r in logs]))
    for per_msg in (1, 50):
        span_msgs, log_msgs = otlp_messages(n, per_msg)
        show(
            f"otlp_proto span, {per_msg} spans/message",
            rate(codec_for("otlp_proto", "span", 1 << 22), [m.SerializeToString() for m in span_msgs]),
        )
        show(
            f"otlp_json  span, {per_msg} spans/message",
            rate(codec_for("otlp_json", "span", 1 << 22), [to_otlp_json(m) for m in span_msgs]),
        )
        show(
            f"otlp_proto log, {per_msg} records/message",
            rate(codec_for("otlp_proto", "log", 1 << 22), [m.SerializeToString() for m in log_msgs]),
        )
        show(
            f"otlp_json  log, {per_msg} records/message",
            rate(codec_for("otlp_json", "log", 1 << 22), [to_otlp_json(m) for m in log_msgs]),
        )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5000)
