"""Avro codec: Confluent framing, local and HTTP schema registries, resolution, rejects."""

from __future__ import annotations

import copy
import json
import random
import socket
import threading
from datetime import datetime, UTC
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pyarrow as pa
import pytest

from schemas.codecs import CODECS, codec_for
from schemas.codecs.avro_codec import (
    AvroCodec,
    SchemaRegistryUnavailable,
    encode_confluent,
    local_registry,
    schema_id_for,
)
from schemas.wire import raw_avro_schema
from tests.codecs.helpers import accounted, as_rows, assert_wire_schema, raw_batch
from transforms.batch import INDEX

UTC = UTC


def ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


EVENTS = [
    {
        "event_id": "e-1",
        "timestamp": datetime(2026, 11, 21, 10, 0, 0, 123000, tzinfo=UTC),
        "page": "/checkout",
        "session_id": "s-1",
        "user": "u-42",
        "location": "Berlin, DE",
        "platform": "web",
        "user_agent": "Mozilla/5.0 (X11; Linux x86_64)",
        "client_ip": "203.0.113.7",
        "events": [
            {
                "type": "page_view",
                "target": None,
                "depth": None,
                "form": None,
                "step": None,
                "duration_ms": None,
                "message": None,
                "stackTrace": None,
            },
            {
                "type": "click",
                "target": "#buy",
                "depth": None,
                "form": None,
                "step": None,
                "duration_ms": 120,
                "message": None,
                "stackTrace": None,
            },
            {
                "type": "scroll",
                "target": None,
                "depth": 0.75,
                "form": None,
                "step": None,
                "duration_ms": None,
                "message": None,
                "stackTrace": None,
            },
            {
                "type": "form_step",
                "target": None,
                "depth": None,
                "form": "signup",
                "step": 2,
                "duration_ms": 3400,
                "message": None,
                "stackTrace": None,
            },
            {
                "type": "error",
                "target": None,
                "depth": None,
                "form": None,
                "step": None,
                "duration_ms": None,
                "message": "TypeError: x is undefined",
                "stackTrace": "at f (app.js:1:2)\nat g (app.js:3:4)",
            },
        ],
    },
    {
        "event_id": "e-2 ünïcödé ✓",
        "timestamp": datetime(1999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC),
        "page": "Home",
        "session_id": "s-2",
        "user": None,
        "location": None,
        "platform": "ios",
        "user_agent": None,
        "client_ip": None,
        "events": [],
    },
]

LOGS = [
    {
        "timestamp": datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC),
        "level": "ERROR",
        "service": "checkout",
        "message": "payment failed: card declined",
        "trace_id": "0af7651916cd43dd8448eb211c80319c",
        "span_id": "b7ad6b7169203331",
        "request_id": "req-1",
        "user_id": "u-1",
        "host": "web-1",
        "env": "prod",
        "attributes": {"http.status_code": "502", "retry": "true"},
    },
    {
        "timestamp": datetime(2026, 1, 2, 3, 4, 6, tzinfo=UTC),
        "level": "info",
        "service": "cart",
        "message": "",
        "trace_id": None,
        "span_id": None,
        "request_id": None,
        "user_id": None,
        "host": None,
        "env": None,
        "attributes": None,
    },
    {
        "timestamp": datetime(2026, 1, 2, 3, 4, 7, tzinfo=UTC),
        "level": "DEBUG",
        "service": "cart",
        "message": "empty map",
        "trace_id": None,
        "span_id": None,
        "request_id": None,
        "user_id": None,
        "host": None,
        "env": None,
        "attributes": {},
    },
]


# -- round trips ---------------------------------------------------------------------------


def test_registry_file_ids():
    assert local_registry() == {
        1: "product_event",
        2: "log_record",
        3: "span",
        4: "metric_sample",
        5: "alert_event",
        6: "dead_letter",
        7: "metric_sample_v2",
        8: "dead_letter_v2",
    }
    assert schema_id_for("event") == 1 and schema_id_for("log_record") == 2


def test_confluent_framing():
    payload = encode_confluent("log", LOGS[0])
    assert payload[0] == 0 and payload[1:5] == (2).to_bytes(4, "big")


def test_product_events_round_trip():
    batch = AvroCodec("event").decode(raw_batch([encode_confluent("event", e) for e in EVENTS]))
    assert not batch.rejects.indices
    assert_wire_schema(batch.table, "event")
    assert batch.table.schema.field("timestamp").type == pa.timestamp("ms", tz="UTC")
    got = batch.table.to_pylist()
    assert [r.pop(INDEX) for r in got] == [0, 1]
    assert got == EVENTS


def test_timestamps_as_integers_round_trip_exactly():
    e = dict(EVENTS[1], timestamp=1_763_719_200_123)
    batch = AvroCodec("event").decode(raw_batch([encode_confluent("event", e)]))
    assert batch.table.column("timestamp").cast(pa.int64()).to_pylist() == [1_763_719_200_123]


def test_logs_round_trip():
    batch = AvroCodec("log").decode(raw_batch([encode_confluent("log", r) for r in LOGS]))
    assert not batch.rejects.indices
    assert_wire_schema(batch.table, "log")
    assert batch.table.schema.field("attributes").type == pa.map_(pa.string(), pa.string())
    got = as_rows(batch.table)
    assert [r.pop(INDEX) for r in got] == [0, 1, 2]
    assert got == LOGS


def test_spans_round_trip_micros():
    span = {
        "trace_id": "0af7651916cd43dd8448eb211c80319c",
        "span_id": "b7ad6b7169203331",
        "parent_span_id": None,
        "service": "api",
        "name": "GET /",
        "kind": "SERVER",
        "start_time": 1_763_719_200_123_456,
        "end_time": 1_763_719_200_456_789,
        "status_code": "ERROR",
        "status_message": "boom",
        "attributes": {"http.route": "/"},
        "resource": {"service.name": "api"},
    }
    batch = AvroCodec("span").decode(raw_batch([encode_confluent("span", span)]))
    assert not batch.rejects.indices
    assert_wire_schema(batch.table, "span")
    t = batch.table
    assert t.schema.field("start_time").type == pa.timestamp("us", tz="UTC")
    assert t.column("start_time").cast(pa.int64()).to_pylist() == [1_763_719_200_123_456]
    assert t.column("end_time").cast(pa.int64()).to_pylist() == [1_763_719_200_456_789]
    row = as_rows(t)[0]
    assert row["kind"] == "SERVER" and row["status_code"] == "ERROR" and row["attributes"] == {"http.route": "/"}


# -- rejects -------------------------------------------------------------------------------


def test_every_malformed_kind_rejected_precisely():
    good = encode_confluent("log", LOGS[0])
    values = [
        good,  # 0 ok
        None,  # 1 tombstone
        b"",  # 2 empty
        b"\x00\x00\x00",  # 3 short frame
        b"\x01" + good[1:],  # 4 wrong magic
        b"\x00" + (77).to_bytes(4, "big") + good[5:],  # 5 unknown id
        good[:-4],  # 6 truncated
        good + b"\x00\x01",  # 7 trailing bytes
        encode_confluent("event", EVENTS[1]),  # 8 an event on the log topic
        b"\x00" * 5000,  # 9 over the size limit
        good,  # 10 ok
        b"\x00\x00\x00\x00\x02\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01",  # 11 malformed varint
    ]
    batch = AvroCodec("log", max_bytes=4096).decode(raw_batch(values))
    accounted(batch, len(values))
    assert batch.table.column(INDEX).to_pylist() == [0, 10]
    got = {i: (r, d) for i, r, d in zip(batch.rejects.indices, batch.rejects.reasons, batch.rejects.details)}
    assert got[1] == ("format_violation", "tombstone (null value)")
    assert got[2] == ("format_violation", "empty payload")
    assert got[3] == (
        "format_violation",
        "Confluent frame needs 5 header bytes (magic byte 0x00 + 4-byte schema id), got 3 bytes",
    )
    assert got[4] == ("format_violation", "wrong magic byte 0x01: the Confluent wire format starts with 0x00")
    assert got[5][0] == "schema_violation"
    assert got[5][1].startswith("unknown schema id 77: not in avro/registry.json")
    assert got[6][0] == "format_violation" and got[6][1].startswith("truncated Avro body")
    assert "schema id 2" in got[6][1]
    assert got[7] == (
        "format_violation",
        f"2 trailing bytes after the Avro record (schema id 2, log_record): the record ends at byte {len(good)} of {len(good) + 2}",
    )
    assert got[8] == (
        "schema_violation",
        "writer schema id 1 (product_event) is obsflow.wire.ProductEvent, which does not resolve against the log_record wire schema (obsflow.wire.LogRecord)",
    )
    assert got[9] == ("size_violation", "payload of 5000 bytes exceeds the limit of 4096 bytes")
    assert got[11][0] == "format_violation" and "schema id 2" in got[11][1]


def test_every_truncation_is_rejected():
    good = encode_confluent("event", EVENTS[0])
    values = [good[:n] for n in range(len(good))]
    batch = AvroCodec("event").decode(raw_batch(values))
    accounted(batch, len(values))
    assert batch.table.num_rows == 0
    assert set(batch.rejects.reasons) == {"format_violation"}
    for i, d in zip(batch.rejects.indices, batch.rejects.details):
        if i >= 6:  # a header and at least one body byte
            assert d.startswith("truncated Avro body") or d.startswith("malformed Avro body"), (i, d)


def test_fuzz_never_crashes_and_accounts_for_everything():
    rng = random.Random(7)
    goods = [encode_confluent("event", e) for e in EVENTS]
    values: list[bytes | None] = []
    for _ in range(1500):
        kind = rng.random()
        if kind < 0.3:
            values.append(bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 80))))
        elif kind < 0.6:  # a valid header, random body
            values.append(b"\x00\x00\x00\x00\x01" + bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 200))))
        elif kind < 0.9:  # bit flips in a valid record
            b = bytearray(rng.choice(goods))
            for _ in range(rng.randint(1, 4)):
                b[rng.randrange(5, len(b))] ^= 1 << rng.randrange(8)
            values.append(bytes(b))
        else:
            values.append(rng.choice(goods))
    batch = AvroCodec("event").decode(raw_batch(values))
    accounted(batch, len(values))
    assert batch.table.num_rows >= sum(1 for v in values if v in goods)


# -- Schema Registry over HTTP -------------------------------------------------------------


def _writer_log_v2() -> dict:
    """A newer producer's log schema: drops the optional ``env``, adds ``pod`` with a default."""
    doc = copy.deepcopy(raw_avro_schema("log_record"))
    doc["fields"] = [f for f in doc["fields"] if f["name"] != "env"]
    doc["fields"].insert(3, {"name": "pod", "type": "string", "default": "none"})
    return doc


def _writer_log_micros() -> dict:
    """A producer writing the log timestamp in microseconds."""
    doc = copy.deepcopy(raw_avro_schema("log_record"))
    doc["fields"][0] = {"name": "timestamp", "type": {"type": "long", "logicalType": "timestamp-micros"}}
    return doc


def _writer_missing_required() -> dict:
    """Lacks ``service``, which the wire schema requires and has no default for."""
    doc = copy.deepcopy(raw_avro_schema("log_record"))
    doc["fields"] = [f for f in doc["fields"] if f["name"] != "service"]
    return doc


@pytest.fixture()
def registry():
    """A tiny Schema Registry (``GET /schemas/ids/{id}``) on 127.0.0.1 in a thread."""
    schemas = {
        2: raw_avro_schema("log_record"),
        10: _writer_log_v2(),
        11: _writer_log_micros(),
        12: _writer_missing_required(),
    }
    hits: dict[int, int] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            parts = self.path.strip("/").split("/")
            sid = int(parts[2]) if len(parts) == 3 and parts[:2] == ["schemas", "ids"] and parts[2].isdigit() else -1
            hits[sid] = hits.get(sid, 0) + 1
            if sid in schemas:
                code, body = 200, {"schema": json.dumps(schemas[sid])}
            else:
                code, body = 404, {"error_code": 40403, "message": f"Schema {sid} not found"}
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", hits
    finally:
        server.shutdown()
        server.server_close()


def test_registry_resolves_writer_schemas(registry):
    url, hits = registry
    rec = LOGS[0]
    v2 = {k: v for k, v in rec.items() if k != "env"} | {"pod": "web-1-abc"}
    micros = dict(rec, timestamp=ms(rec["timestamp"]) * 1000 + 999)
    values = [
        encode_confluent("log", rec),  # id 2, same as the reader
        encode_confluent(_writer_log_v2(), v2, schema_id=10),  # added + removed fields
        encode_confluent(_writer_log_micros(), micros, schema_id=11),
        encode_confluent(_writer_missing_required(), {k: v for k, v in rec.items() if k != "service"}, schema_id=12),
        b"\x00" + (404).to_bytes(4, "big") + b"\x00",  # unknown to the registry
    ]
    codec = codec_for("avro", "log", 65536, {"schema_registry_url": url})
    batch = codec.decode(raw_batch(values))
    accounted(batch, len(values))
    rows = as_rows(batch.table)
    assert [r.pop(INDEX) for r in rows] == [0, 1, 2]
    assert rows[0] == rec
    assert rows[1] == dict(rec, env=None)  # env dropped by the writer: the reader default
    assert "pod" not in rows[1]  # pod added by the writer: ignored
    assert rows[2] == rec  # micros written, millis read (truncated)
    got = {i: (r, d) for i, r, d in zip(batch.rejects.indices, batch.rejects.reasons, batch.rejects.details)}
    assert got[3] == (
        "schema_violation",
        "writer schema id 12 (obsflow.wire.LogRecord) does not resolve against the log_record wire schema: No default value for field service in obsflow.wire.LogRecord",
    )
    assert got[4][0] == "schema_violation"
    assert got[4][1] == f"unknown schema id 404: schema registry {url} answered 404 (Schema 404 not found)"
    # cached: a second batch asks the registry nothing new
    before = dict(hits)
    again = codec.decode(raw_batch(values))
    assert again.table.num_rows == 3 and hits == before
    assert all(n == 1 for n in hits.values())


def test_registry_unreachable_raises_rather_than_dead_lettering():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    codec = AvroCodec("log", schema_registry_url=f"http://127.0.0.1:{port}", registry_timeout_s=2)
    with pytest.raises(SchemaRegistryUnavailable, match=f"127.0.0.1:{port}/schemas/ids/2"):
        codec.decode(raw_batch([encode_confluent("log", LOGS[0])]))


def test_registered():
    """``avro`` is the compiled decoder when it is installed (its reference inside),
    else the reference itself; ``decoder: python`` always picks the reference."""
    from schemas.codecs import NativeAvroCodec, avro_codec, native_avro

    assert CODECS["avro"] is avro_codec
    codec = codec_for("avro", "event", 1024)
    want = NativeAvroCodec if native_avro.native_avro_available() else AvroCodec
    assert type(codec) is want
    assert isinstance(codec if want is AvroCodec else codec.reference, AvroCodec)
    assert type(codec_for("avro", "event", 1024, {"decoder": "python"})) is AvroCodec
