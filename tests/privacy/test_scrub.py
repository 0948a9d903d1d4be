"""Scrubbing, unit level: free text (glued card numbers, encoded e-mails, JWTs),
identifiers that hold personal data (pseudonym, joins keep working), map keys and values
(sensitive keys redacted whole), and dead-letter payloads (text and binary)."""

from __future__ import annotations

import hashlib
import hmac
import json

import pyarrow as pa
import pytest

from pipelines.spec import PrivacySpec, ScrubStep
from transforms.scrub import Scrubber, _card_spans

KEY = "unit-test-key-0123456789"


def scrubber(signal: str = "log", **step) -> Scrubber:
    return Scrubber(signal, ScrubStep(kind="scrub", **step), PrivacySpec(pseudonym_key=KEY))


def pseudonym(v: str) -> str:
    return hmac.new(KEY.encode(), v.encode(), hashlib.sha256).hexdigest()[:32]


@pytest.mark.parametrize(
    "text,expected",
    [
        ("card4111111111111111", "card[CARD]"),
        ("4111111111111111USD", "[CARD]USD"),
        ("x_4111111111111111", "x_[CARD]"),
        ("id 4111111111111111_x and 5555-5555-5555-4444!", "id [CARD]_x and [CARD]!"),
        ("ref 1234 4111 1111 1111 1111 end", "ref 1234 [CARD] end"),  # a card inside a longer digit run
        ("41111111111111110", "41111111111111110"),  # 17 digits, not Luhn: kept
        (
            "got number 1763003640002 at 1763003640002001",
            "got number 1763003640002 at 1763003640002001",
        ),  # epoch ms, µs (Luhn-valid): kept
        ("uatp 122000000000003", "uatp [CARD]"),
        (
            "https://psp.example/v1/customers?email=jane%40example.org&x=1",
            "https://psp.example/v1/customers?email=[EMAIL]&x=1",
        ),
        ("jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl in a query", "jwt [TOKEN] in a query"),
        ("?access_token=abcdef123456&q=1", "?access_token=[API_KEY]&q=1"),
        ('{"api key": "k3y-Value-123456"}', '{"api key": "[API_KEY]"}'),
    ],
)
def test_free_text_placeholders(text, expected):
    assert scrubber().scrub_text(pa.array([text])).to_pylist() == [expected]


def test_card_spans_need_13_to_19_luhn_digits():
    assert _card_spans("a4111111111111111b") == [(1, 17)]
    assert _card_spans("411111111111") == []  # 12 digits


def test_random_hex_ids_are_not_card_numbers():
    # 8378364144282 is a Luhn-valid run inside a random 32-hex id: an id, not a card
    hex_id = "416c859b8f8378364144282c8142c118"
    assert _card_spans(f"trace {hex_id} failed") == [] and _card_spans("4111111111111111") == [(0, 16)]
    s = scrubber()
    t = s.scrub_table(
        pa.table({"event_id": [hex_id, "4111111111111111"], "message": [f"id {hex_id}", "c4111111111111111"]})
    )
    assert t.column("event_id").to_pylist() == [hex_id, pseudonym("4111111111111111")]
    assert t.column("message").to_pylist() == [f"id {hex_id}", "c[CARD]"]


def test_identifiers_holding_personal_data_become_their_pseudonym():
    s = scrubber()
    host = "jane@example.org-laptop"
    t = pa.table(
        {
            "service": ["checkout", "svc-4111111111111111"],
            "request_id": ["req-1", "Bearer abc.def.ghi"],
            "host": [host, host],
            "env": ["prod", None],
            "trace_id": ["4111111111111111" * 2, None],
        }
    )
    out = s.scrub_table(t)
    assert out.column("service").to_pylist() == ["checkout", pseudonym("svc-4111111111111111")]
    assert out.column("request_id").to_pylist() == ["req-1", pseudonym("Bearer abc.def.ghi")]
    assert out.column("host").to_pylist() == [pseudonym(host)] * 2  # same value, same pseudonym: joins still work
    assert out.column("env").to_pylist() == ["prod", None]
    assert out.column("trace_id").to_pylist() == ["4111111111111111" * 2, None]  # validated hex ids are left alone


def test_maps_redact_sensitive_keys_and_scrub_every_key_and_value():
    s = scrubber()
    typ = pa.map_(pa.string(), pa.string())
    attrs = pa.array(
        [
            [
                ("http.request.header.authorization", "Basic dXNlcjpwYXNz"),
                ("url.full", "https://x.example/?email=jane@example.org"),
                ("Set-Cookie", "sid=abc"),
                ("gen_ai.usage.input_tokens", "42"),
                ("x-auth-token", "t0k"),
                ("user jane@example.org", "1"),
            ],
            None,
            [],
            [("db.password", None), ("note", "card 4111 1111 1111 1111")],
        ],
        typ,
    ).slice(0)
    t = pa.table({"attributes": attrs, "level": ["INFO"] * 4})
    out = s.scrub_table(t).column("attributes").to_pylist()
    assert out == [
        [
            ("http.request.header.authorization", "[REDACTED]"),
            ("url.full", "https://x.example/?email=[EMAIL]"),
            ("Set-Cookie", "[REDACTED]"),
            ("gen_ai.usage.input_tokens", "42"),
            ("x-auth-token", "[REDACTED]"),
            ("user [EMAIL]", "1"),
        ],
        None,
        [],
        [("db.password", None), ("note", "card [CARD]")],
    ]
    # a sliced map column (as a batch's rows after a filter) keeps its rows
    sliced = s.scrub_map(attrs.slice(3))
    assert sliced.to_pylist() == [[("db.password", None), ("note", "card [CARD]")]]


def test_sensitive_keys_are_configurable():
    s = scrubber(sensitive_keys=["^x-internal$"])
    out = s.scrub_map(pa.array([[("x-internal", "v"), ("authorization", "plain")]], pa.map_(pa.string(), pa.string())))
    assert out.to_pylist() == [[("x-internal", "[REDACTED]"), ("authorization", "plain")]]


def test_dead_letter_payloads_text_and_binary():
    s = scrubber()
    text = json.dumps(
        {
            "user": "jane@example.org",
            "note": "mail jane@example.org",
            "authorization": "Basic dXNlcjpwYXNz",
            "n": 1,
            "attributes": [{"key": "http.request.header.cookie", "value": {"stringValue": "sid=s3cr3t"}}],
        }
    ).encode()
    binary = b"\x00\xff\x10jane@example.org\x02card4111111111111111\x04Bearer abcdefgh\xfe"
    out, is_text = s.scrub_raw([text, binary, None])
    assert is_text == [True, False, None]
    doc = json.loads(out[0])
    # user: a person's identifier (redacted whole); note: free text (placeholders)
    assert doc["user"] == "[REDACTED]" and doc["note"] == "mail [EMAIL]"
    assert doc["authorization"] == "[REDACTED]" and doc["n"] == 1
    assert doc["attributes"][0]["value"]["stringValue"] == "[REDACTED]"
    assert len(out[1]) == len(binary)  # masked byte for byte: a framed payload still decodes
    assert out[1] == b"\x00\xff\x10" + b"*" * 16 + b"\x02card" + b"*" * 16 + b"\x04" + b"*" * 15 + b"\xfe"
    assert out[2] is None


def test_binary_payload_with_long_letter_runs_is_masked_exactly():
    """A 1 MB binary dead letter of one letter (the OTLP size-limit reject) with an address
    after a long run: the address is masked (its local part up to RFC 5321's 64 characters),
    nothing else. With unbounded runs Python's re took minutes on this payload."""
    s = scrubber()
    run = b"y" * 1_000_000
    local = b"j" * 70  # longer than an address may be: its last 64 characters are masked
    binary = b"\x00" + run + b" " + local + b"@example.org\x01" + run + b"@" + run + b"\x02"
    out, is_text = s.scrub_raw([binary])
    assert is_text == [False]
    masked = len(b"@example.org") + 64
    assert out[0] == b"\x00" + run + b" " + b"j" * 6 + b"*" * masked + b"\x01" + run + b"@" + run + b"\x02"


def test_binary_payloads_keep_their_framing_and_lose_sensitive_values():
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
    from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

    from schemas.codecs import codec_for, encode_confluent
    from transforms.batch import RawBatch

    s = scrubber()
    log = {
        "timestamp": 1,
        "level": "INFO",
        "service": "svc",
        "message": "to jane@example.org",
        "trace_id": None,
        "span_id": None,
        "request_id": None,
        "user_id": None,
        "host": None,
        "env": None,
        "attributes": {"http.request.header.authorization": "Basic dXNlcjpwYXNz", "x": "y", "Cookie": "sid=abc"},
    }
    span = Span(
        trace_id=b"\x01" * 16,
        span_id=b"\x02" * 8,
        name="n",
        attributes=[
            KeyValue(key="http.request.header.authorization", value=AnyValue(string_value="Basic dXNlcjpwYXNz")),
            KeyValue(key="a", value=AnyValue(string_value="b")),
        ],
    )
    otlp = ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=[span])])]
    ).SerializeToString()
    (avro_out, otlp_out), is_text = s.scrub_raw([encode_confluent("log", log), otlp])
    assert is_text == [False, False]  # all ASCII, but framed binary
    back = codec_for("avro", "log", 65536).decode(RawBatch("s", "t", 0, [avro_out], [0], [0])).table.to_pylist()[0]
    assert back["message"] == "to " + "*" * 16
    assert back["attributes"] == [("http.request.header.authorization", "*" * 18), ("x", "y"), ("Cookie", "*" * 7)]
    attrs = ExportTraceServiceRequest.FromString(otlp_out).resource_spans[0].scope_spans[0].spans[0].attributes
    assert [(a.key, a.value.string_value) for a in attrs] == [
        ("http.request.header.authorization", "*" * 18),
        ("a", "b"),
    ]
