"""Issue 19: dead letters published to the dead-letter topic in Avro (``outputs.codec:
avro``) carry what the JSON ones and ``obs.dead_letters`` carry: ``item_index`` for an OTLP
item rejected alone, ``raw_truncated``, a null ``raw`` for a tombstone, and every reason
the table documents (``late_data``, ``internal_error``), in schema ``dead_letter_v2``."""

from __future__ import annotations

import base64
import io
import json

import fastavro

from schemas.codecs.avro_codec import HEADER, MAGIC, local_registry
from schemas.wire import avro_schema
from sinks.dead_letters import dead_letter_rows
from sinks.kafka import dead_letter_messages
from transforms.batch import RawBatch, Rejects


def decode(value: bytes) -> tuple[int, dict]:
    """``(schema id, record)`` of a Confluent-framed Avro message, read with the schema its id names."""
    magic, sid = HEADER.unpack(value[:5])
    assert magic == MAGIC
    return sid, fastavro.schemaless_reader(io.BytesIO(value[5:]), avro_schema(local_registry()[sid]))


def test_avro_dead_letters_carry_what_the_json_ones_carry():
    values = [b'{"whole": "record"}', b"otlp message", None, b"x" * 50, b"late"]
    raw = RawBatch("spans", "spans", 3, values, [10, 11, 12, 13, 14], [1_763_719_200_000] * 5)
    rejects = Rejects()
    rejects.add(0, "schema_violation", "event_type: required")
    rejects.add(1, "schema_violation", "spans[2]: no span id", 2)
    rejects.add(1, "size_violation", "spans[5]: too big", 5)
    rejects.add(2, "format_violation", "tombstone (null value)")
    rejects.add(3, "internal_error", "ValueError: boom")
    rejects.add(4, "late_data", "late by 2m")
    rows = dead_letter_rows(raw, rejects, max_raw_bytes=20, item_raw=lambda i, k: f"item {k}".encode())
    as_json = [json.loads(v) for _, v, _ in dead_letter_messages(rows, "json")]
    as_avro = [decode(v) for _, v, _ in dead_letter_messages(rows, "avro")]
    assert {sid for sid, _ in as_avro} == {8} and local_registry()[8] == "dead_letter_v2"
    assert [r["item_index"] for _, r in as_avro] == [None, 2, 5, None, None, None]
    assert [r["reason"] for _, r in as_avro] == [
        "schema_violation",
        "schema_violation",
        "size_violation",
        "format_violation",
        "internal_error",
        "late_data",
    ]
    assert [r["raw"] for _, r in as_avro] == [b'{"whole": "record"}', b"item 2", b"item 5", None, b"x" * 20, b"late"]
    assert [r["raw_truncated"] for _, r in as_avro] == [False, False, False, False, True, False]
    for j, (_, a) in zip(as_json, as_avro):
        j = dict(j, raw=None if j["raw"] is None else base64.b64decode(j["raw"]))
        j.setdefault("item_index", None)
        a = dict(a, received_at=int(a["received_at"].timestamp() * 1000))
        assert a == j
