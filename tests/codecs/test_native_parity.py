"""Parity of the compiled JSON decoder (native/, ``obsflow_native``) with the Python
reference (:class:`schemas.codecs.json_codec.JsonCodec`): over the generator's traffic,
the fuzz corpus's mutants and crafted edge cases, both give identical rows (values, types,
order, ``_i``) and identical dead letters (record, reason, detail). Also: which decoder
the ``json`` codec picks, the warning when the extension is missing, and that the
extension's buffers reach pyarrow without a copy."""

from __future__ import annotations

import json
import logging
import os
import random

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.codecs import JsonCodec, codec_for, native_json
from schemas.codecs.native_json import NativeJsonCodec
from sources.generator import partition_stream
from tests.fuzz.corpus import corpus_batches, SIGNALS, mutate, seeds
from transforms.batch import INDEX, RawBatch

pytestmark = [
    pytest.mark.native,
    pytest.mark.skipif(not native_json.native_available(), reason="obsflow_native not built (make install)"),
]

START_MS = 1_763_000_000_000


def _raw(values: list) -> RawBatch:
    return RawBatch("src", "topic", 0, list(values), list(range(100, 100 + len(values))), [0] * len(values))


def _rejects(batch) -> list[tuple]:
    r = batch.rejects
    return sorted(zip(r.indices, [i if i is not None else -1 for i in r.items], r.reasons, r.details))


def assert_parity(signal: str, values: list, max_bytes: int = 65536) -> tuple[int, int]:
    """Decode ``values`` with both decoders; assert identical rows and rejects; return
    (rows, rejects)."""
    raw = _raw(values)
    ref = JsonCodec(signal=signal, max_bytes=max_bytes).decode(raw)
    nat = NativeJsonCodec(signal=signal, max_bytes=max_bytes).decode(raw)
    want = ref.table.take(np.argsort(ref.table.column(INDEX).to_numpy(), kind="stable"))
    assert nat.table.schema.equals(want.schema), (nat.table.schema, want.schema)
    assert nat.table.column(INDEX).to_pylist() == want.column(INDEX).to_pylist()
    for name in want.column_names:
        assert nat.table.column(name).equals(want.column(name)), name
    assert _rejects(nat) == _rejects(ref)
    return want.num_rows, len(ref.rejects)


@pytest.mark.parametrize("signal", SIGNALS)
def test_generator_traffic(signal):
    """The generator's traffic with 5% bad records of every kind it makes: identical, and
    every good record is decoded by the extension itself (none deferred)."""
    gen = list(partition_stream(signal, "t", 0, 3000, start_ms=START_MS, bad_fraction=0.05))
    values = [g.value for g in gen]
    rows, bad = assert_parity(signal, values)
    assert rows + bad == len(values) and bad > 0
    verdicts, _ = native_json._native.decode_json(values, 65536, NativeJsonCodec(signal).fields)
    native_rows = np.frombuffer(verdicts, np.uint8).astype(bool)
    assert int(native_rows.sum()) == rows


@pytest.mark.parametrize("signal", SIGNALS)
def test_fuzz_corpus(signal):
    """The fuzz suite's seeds and mutants (truncations, bit flips, splices, inserted NUL /
    BOM / invalid UTF-8 / NaN / huge integers / deep nesting, type confusion at any path),
    mixed with good records in batches of every size, one to 200."""
    total_bad = sum(
        assert_parity(signal, batch)[1] for batch in corpus_batches(signal, "json", f"native-parity/{signal}")
    )
    assert total_bad > 50  # the corpus really was mean


EDGE = [
    None,
    b"",
    b" ",
    b"{}",
    b"[]",
    b"null",
    b"{",
    b"{}}",
    b"\xef\xbb\xbf{}",
    b'{"a":1}\n{"b":2}',
    b' {"page":"/"} ',
    b'{"page":"/","page":"/x"}',
    b'{"page":"\\ud800"}',
    b'{"page":"\\u0000"}',
    b'{"page":"\\ud83d\\ude00 \\u00e9 \\n"}',
    b'{"page":"\xff"}',
    b'{"page":"tab\there"}',
    b'{"page":1}',
    b'{"page":null}',
    b'{"x":NaN}',
    b'{"x":Infinity,"page":"/"}',
    # numbers beyond a double's range: a row where the schema does not read them, else a reject
    b'{"x":1e400}',
    b'{"x":-1e400,"page":"/"}',
    b'{"x":2e308}',
    b'{"x":[1,{"y":1e999}]}',
    b'{"events":[{"type":"a","depth":2e308}]}',
    b'{"events":[{"type":"a","depth":1e400,"extra":1e400}]}',
    b'{"events":[{"type":"a","extra":1e400}]}',
    b'{"page":1e400}',
    b'{"x":123456789012345678901234567890}',
    b'{"x":' + b"[" * 300 + b"]" * 300 + b"}",
    b'{"page":"Info"}',
]
TIMES = [
    "2026-11-21T10:00:00Z",
    "2026-11-21 10:00:00Z",
    "2026-11-21T10:00:00.123456789+01:00",
    "2026-11-21T10:00:00+0100",
    "2026-11-21T10:00:00+23:59",
    "2026-11-21T10:00:00+24:00",
    "2026-11-21T10:00:00+01:60",
    "2026-02-29T10:00:00Z",
    "2024-02-29T10:00:00Z",
    "2026-11-21T24:00:00Z",
    "2026-11-21T23:59:60Z",
    "2026-11-21T10:00:00.1234567891Z",
    "0001-01-01T00:00:00Z",
    "1969-12-31T23:59:59.999Z",
    "1970-01-01T00:30:00+01:00",
    "2262-01-01T00:00:00Z",
    "2026-11-21T10:00:00",
    "2026-11-21t10:00:00z",
    "2026-11-21T10:00:00.Z",
    "yesterday",
    17,
    None,
]


def test_edge_cases_events():
    """Records at the edges of JSON and of the reference's rules, events."""
    base = {
        "event_id": "e",
        "timestamp": "2026-11-21T10:00:00Z",
        "page": "/",
        "session_id": "s",
        "events": [{"type": "click", "step": 2, "depth": 0.5, "duration_ms": 10}],
    }
    values = list(EDGE)
    for ts in TIMES:
        values.append(json.dumps({**base, "timestamp": ts}).encode())
    for step in [0, -1, 2**31 - 1, 2**31, 1.0, "2", True, None]:
        values.append(json.dumps({**base, "events": [{"type": "click", "step": step}]}).encode())
    for depth in [0, 1, -0.0, 1e-320, 1e308, 0.1, 12345678901234567, "x", None]:
        values.append(json.dumps({**base, "events": [{"type": "scroll", "depth": depth}]}).encode())
    for events in [[], None, [None], [{}], {"type": "x"}, [{"type": "a", "extra": [1, {"b": 2}]}]]:
        values.append(json.dumps({**base, "events": events}).encode())
    values.append(json.dumps(base).encode().replace(b'{"type": "click"', b'{"type": "a", "type": "click"'))
    values.append(json.dumps(base, indent=2).encode())
    values.append(
        json.dumps({**base, "unknown": {"deep": [1, 2.5, None, "x"]}, "user": "ü"}, ensure_ascii=False).encode()
    )
    values.append(json.dumps(base).encode().replace(b'"page"', b'"page" ', 1))
    rows, bad = assert_parity("event", values)
    assert rows > 20 and bad > 20


def _native_verdicts(signal: str, values: list) -> np.ndarray:
    """The extension's own verdict per record (1 a row, 2 a dead letter, 0 deferred)."""
    verdicts, _own, _batch = native_json._native.decode_json_batch(values, 65536, NativeJsonCodec(signal).fields)
    return np.frombuffer(verdicts, np.uint8)


@pytest.mark.parametrize("signal", SIGNALS)
def test_generator_dead_letters_decided_natively(signal):
    """Every malformed record the generator makes (5% of 3,000, every kind) gets its dead
    letter from the extension itself, none from the reference decoder, and the dead letters
    equal the reference's (reason and detail)."""
    gen = list(partition_stream(signal, "t", 0, 3000, start_ms=START_MS, bad_fraction=0.05))
    values = [g.value for g in gen]
    verdicts = _native_verdicts(signal, values)
    bad = [k for k, g in enumerate(gen) if g.kind is not None and g.kind in _DECODER_KINDS]
    assert int((verdicts == 0).sum()) == 0
    assert np.flatnonzero(verdicts == 2).tolist() == bad
    assert_parity(signal, values)


#: the generator's malformed kinds that the decoder rejects (the others are rows that a
#: later stage rejects: missing fields, unknown kinds, out-of-range times, bad addresses)
_DECODER_KINDS = {"invalid_json", "truncated", "not_utf8", "empty", "wrong_type", "bad_timestamp", "oversized"}


def test_native_dead_letters_edge_cases():
    """Malformed records at the edges of what the extension decides itself: each either
    gets the reference's exact reason and detail from the extension, or is deferred to the
    reference (exact counts of both)."""
    base = {"event_id": "e", "timestamp": "2026-11-21T10:00:00Z", "page": "/", "session_id": "s"}
    body = json.dumps(base, separators=(",", ":")).encode()
    native = [
        None,
        b"",
        b" \t\x0b\x0c",
        b"x" * 70000,
        b"\xef\xbb\xbf{}",
        b'{"page":"\xc3\x28"}',
        b'{"page" "/"}',
        b'{"page":"/" "user":"u"}',
        b'{"page":"/",}',
        b"{1:2}",
        b'{"page":"/",1:2}',
        b'{"a":1 x}',
        body[:40],
        body[:41],
        b'{"page":"/\\',
        b'{"page":"/","events":[{"type":"a"},',
        b'{"page":12345}',
        b'{"page":true,"user":false}',
        b'{"user":7,"page":8}',
        b'{"events":[{"type":"a","step":"two"}]}',
        b'{"events":[{"type":"a","step":"a\\"b"}]}',  # a string with a quote: the detail names its kind only
        b'{"events":[{"type":"a","step":4294967296}]}',
        b'{"events":"none"}',
        b'{"timestamp":"yesterday at noon"}',
        b'{"timestamp":"2026-11-21T10:00:00.1234567890Z"}',
        b'{"timestamp":"\\u00e9t\\u00e9 2026, a long summer afternoon that never seemed to end at all, truly"}',
    ]
    deferred = [
        b'{"page" "/"\n}',  # a newline: the reference re-serializes it with orjson
        b'{"page":NaN "x"}',  # NaN: msgspec's untyped decoder judges it
        b'{"page":12345,"page" "/"}',  # the typed decode stops at the type error first
        b'{"page":1.5}',  # a float shown as orjson writes it
        b'{"page":[1]}',  # an array shown as orjson writes it
        b'{"timestamp":3,"timestamp":"2026-11-21T10:00:00Z"}',
        b'{"timestamp":"2026-13-21T10:00:00Z"}',  # matches the regex, not a date
        b'{"page":"/","x":1e400 ',
        b'{"page":"/", "x": tru',
        b' {"page":"/"',
    ]
    values = native + deferred
    verdicts = _native_verdicts("event", values)
    assert verdicts.tolist() == [2] * len(native) + [0] * len(deferred)
    rows, bad = assert_parity("event", values)
    assert (rows, bad) == (0, len(values))


def test_edge_cases_maps():
    """Map fields (log attributes): strings, integers, booleans, nulls kept as the reference
    writes them; floats, nested values, duplicate keys and non-objects go its way."""
    base = {"timestamp": "2026-11-21T10:00:00.5Z", "level": "INFO", "service": "s", "message": "m"}
    values = []
    for attrs in [
        {},
        None,
        {"a": "x"},
        {"n": 1},
        {"n": -0},
        {"big": 2**63},
        {"huge": 2**64},
        {"b": True, "f": False},
        {"z": None},
        {"f": 1.5},
        {"e": 1e20},
        {"l": [1, 2]},
        {"o": {"p": 1}},
        "text",
        [1],
        3,
    ]:
        values.append(json.dumps({**base, "attributes": attrs}).encode())
    values.append(json.dumps({**base, "attributes": {"k": "1"}}).encode().replace(b'{"k"', b'{"k": "0", "k"'))
    values.append(json.dumps({**base, "attributes": {"k": "1"}}).encode().replace(b'"1"', b"-0"))
    rows, bad = assert_parity("log", values)
    assert rows > 8 and bad > 2


def test_max_bytes_and_sizes():
    """Records over ``max_bytes`` and batches of one, none, and all-bad."""
    good = [s.value for s in seeds("event", "json", 4)]
    assert_parity("event", good, max_bytes=min(map(len, good)) + 1)
    assert_parity("event", [])
    assert_parity("event", [b"not json"] * 3)
    assert_parity("event", good[:1])


def test_codec_choice(monkeypatch):
    """``json`` is the compiled decoder by default; option ``decoder`` or
    ``$OBSFLOW_DECODER`` picks the reference; an unknown value names itself."""
    monkeypatch.delenv("OBSFLOW_DECODER", raising=False)
    assert isinstance(codec_for("json", "event", 100), NativeJsonCodec)
    assert type(codec_for("json", "event", 100, {"decoder": "python"})) is JsonCodec
    monkeypatch.setenv("OBSFLOW_DECODER", "python")
    assert type(codec_for("json", "event", 100)) is JsonCodec
    assert isinstance(codec_for("json", "event", 100, {"decoder": "native"}), NativeJsonCodec)
    with pytest.raises(ValueError, match="decoder: expected one of native, python, got 'rust'"):
        codec_for("json", "event", 100, {"decoder": "rust"})


def test_missing_extension_warns_once(monkeypatch, caplog):
    """Without the extension the reference decodes, after one warning line, never a crash."""
    monkeypatch.delenv("OBSFLOW_DECODER", raising=False)
    monkeypatch.setattr(native_json, "_native", None)
    monkeypatch.setattr(native_json, "_IMPORT_ERROR", "No module named 'obsflow_native'")
    monkeypatch.setattr(native_json, "_warned", False)
    with caplog.at_level(logging.WARNING, logger="schemas.codecs.native_json"):
        codecs = [codec_for("json", s, 100) for s in SIGNALS]
    assert all(type(c) is JsonCodec for c in codecs)
    lines = [r.getMessage() for r in caplog.records if r.name == "schemas.codecs.native_json"]
    assert len(lines) == 1 and "not installed" in lines[0] and "using the Python decoder" in lines[0]


def test_buffers_are_not_copied():
    """The arrays pyarrow gets sit on the extension's own memory (the addresses it exported
    through the Arrow C data interface), and importing them allocates nothing in pyarrow."""
    codec = NativeJsonCodec("event")
    values = [s.value for s in seeds("event", "json", 8)]
    _verdicts, batch = native_json._native.decode_json(values, 65536, codec.fields)
    exported = batch.addresses()
    before = pa.total_allocated_bytes()
    table = native_json.import_batch(batch, codec.schema)
    assert pa.total_allocated_bytes() == before
    arr = table.column("event_id").chunk(0)  # event_id: validity (absent), offsets, data
    assert len(arr) == len(values) == len(batch)
    assert [b.address if b is not None else 0 for b in arr.buffers()] == exported[0]
    assert exported[0][0] == 0 and exported[0][1] != 0 and exported[0][2] != 0
    rows = table.column(INDEX).chunk(0)
    assert rows.buffers()[1].address == exported[-1][1]


def test_reference_detail_names_the_record_not_its_batch_position():
    """Found by the parity run: the reference's detail for a record ``pyarrow.json`` refuses
    (a field given twice) named the record's row in the parse block ("in row 7"), so one
    record got another detail next to other records. The detail is now the record's own."""
    good = [s.value for s in seeds("event", "json", 6)]
    dup = good[0][:-1] + b',"page":"/again"}'
    details = set()
    for before in (0, 1, 5):
        b = JsonCodec("event").decode(_raw(good[:before] + [dup]))
        assert [(i, r) for i, r in zip(b.rejects.indices, b.rejects.reasons)] == [(before, "format_violation")]
        details.add(b.rejects.details[0])
    assert details == {"unparseable record: JSON parse error: Column(/page) was specified twice"}


def test_reference_survives_bad_date_next_to_nanoseconds():
    """Found by the parity run: a batch holding a timestamp Arrow cannot cast (2026-02-29)
    and one with nanosecond digits made the reference raise (it turned each value into a
    Python datetime to find the bad one). Now the bad one is a dead letter, the other a row."""
    base = {"event_id": "e", "page": "/", "session_id": "s", "events": []}
    values = [
        json.dumps({**base, "timestamp": "2026-02-29T10:00:00Z"}).encode(),
        json.dumps({**base, "timestamp": "2026-11-21T10:00:00.123456789Z"}).encode(),
    ]
    b = JsonCodec("event").decode(_raw(values))
    assert list(zip(b.rejects.indices, b.rejects.reasons, b.rejects.details)) == [
        (0, "schema_violation", "timestamp: invalid date or time")
    ]
    assert b.table.column("timestamp").to_pylist()[0].isoformat() == "2026-11-21T10:00:00.123000+00:00"


_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=12,
)
_fields = {
    "event": ["event_id", "timestamp", "page", "session_id", "user", "events"],
    "log": ["timestamp", "level", "service", "message", "attributes"],
    "metric": ["name", "kind", "timestamp", "labels", "value", "bucket_bounds", "bucket_counts", "count"],
}


@st.composite
def _records(draw, signal: str) -> bytes:
    """A JSON object whose known fields hold arbitrary values (often the right type), or
    arbitrary bytes."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=40))
    doc = {}
    for name in draw(st.lists(st.sampled_from(_fields[signal]), max_size=6)):
        doc[name] = draw(
            st.one_of(
                _json_values,
                st.sampled_from(TIMES),
                st.just([{"type": "click", "step": 1}]),
                st.dictionaries(st.text(max_size=4), st.text(max_size=4) | st.integers(), max_size=3),
            )
        )
    return json.dumps(doc, ensure_ascii=draw(st.booleans())).encode()


@pytest.mark.parametrize("signal", sorted(_fields))
def test_hypothesis_records(signal):
    """Hypothesis over the extension (bounded, derandomized in CI like tests/fuzz; OBSFLOW_FUZZ=long
    for more): batches of arbitrary records give the reference's rows and dead letters."""

    @settings(
        max_examples=60 if os.environ.get("OBSFLOW_FUZZ") != "long" else 3000,
        deadline=None,
        database=None,
        derandomize=os.environ.get("OBSFLOW_FUZZ") != "long",
        suppress_health_check=list(HealthCheck),
    )
    @given(st.lists(_records(signal), min_size=1, max_size=12))
    def run(values):
        assert_parity(signal, values)

    run()


# -- OTLP protobuf spans ----------------------------------------------------------------------


def _nan_marked(v):
    """``v`` (a column's Python value) with every float NaN replaced by a marker, so that
    NaN equals NaN (Arrow's ``equals`` says it does not)."""
    if isinstance(v, float) and v != v:
        return "NaN"
    if isinstance(v, list):
        return [_nan_marked(x) for x in v]
    if isinstance(v, tuple):
        return tuple(_nan_marked(x) for x in v)
    return v


def _same_column(a, b) -> bool:
    """Identical columns: Arrow's ``equals``, or, for columns holding NaN (metric values), the
    same values with NaN at the same places."""
    return a.equals(b) or (a.type == b.type and _nan_marked(a.to_pylist()) == _nan_marked(b.to_pylist()))


def assert_otlp_parity(
    values: list, signal: str = "span", max_bytes: int = 1 << 20, encoding: str = "otlp_proto"
) -> tuple[int, int]:
    """Both OTLP decoders of ``signal`` (protobuf, or OTLP/JSON with ``encoding``) over
    ``values``: identical rows (``_i``, ``_item`` order), rejects, ``items_in`` and
    dead-letter item bytes; return (rows, rejects)."""
    from schemas.codecs.otlp_codec import OtlpCodec

    raw = _raw(values)
    ref = OtlpCodec(signal, max_bytes=max_bytes, encoding=encoding).decode(raw)
    nat = native_json.NativeOtlpCodec(signal, max_bytes=max_bytes, encoding=encoding).decode(raw)
    assert nat.table.schema.equals(ref.table.schema)
    for name in ref.table.column_names:
        assert _same_column(nat.table.column(name), ref.table.column(name)), name
    assert _rejects(nat) == _rejects(ref)
    assert nat.items_in == ref.items_in
    for i, k in zip(ref.rejects.indices, ref.rejects.items):
        if k is not None:
            assert nat.item_raw(i, k) == ref.item_raw(i, k)
    return ref.table.num_rows, len(ref.rejects)


def test_otlp_spans_generator_and_sdk():
    """The generator's spans as OTLP messages (all decoded by the extension itself) and the
    OpenTelemetry SDK's own output (typed attributes: arrays go the reference's way)."""
    from opentelemetry.exporter.otlp.proto.common._internal.trace_encoder import (
        encode_spans,
    )

    from tests.codecs.test_otlp_codec import make_spans

    good = [s.value for s in seeds("span", "otlp_proto", 40)]
    rows, bad = assert_otlp_parity(good)
    assert rows > 40 and bad == 0
    verdicts, *_ = native_json._native.decode_otlp_spans(good, 1 << 20)
    assert bytes(verdicts) == b"\x01" * len(good)
    sdk = make_spans()
    messages = [
        encode_spans(sdk).SerializeToString(),
        encode_spans(sdk[:1]).SerializeToString(),
        encode_spans([s for s in sdk if "cart.skus" not in (s.attributes or {})]).SerializeToString(),
    ]
    assert assert_otlp_parity(messages + good[:3])[0] == 4 + 1 + 3 + sum(len(OtlpSpans(v)) for v in good[:3])
    verdicts, *_ = native_json._native.decode_otlp_spans(messages, 1 << 20)
    assert bytes(verdicts) == b"\x00\x01\x01"  # the first holds an array attribute


def OtlpSpans(payload: bytes) -> list:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    msg = ExportTraceServiceRequest.FromString(payload)
    return [sp for rs in msg.resource_spans for ss in rs.scope_spans for sp in ss.spans]


def _mutant_batches(signal: str, encoding: str, rng_name: str):
    """Batches of the fuzz corpus's ``signal`` mutants in ``encoding`` mixed with good
    messages: 5 batches each of 1, 3, 20 and 80 messages, seeded by ``rng_name``."""
    good = [s.value for s in seeds(signal, encoding, 24)]
    rng = random.Random(rng_name)
    for size in (1, 3, 20, 80):
        for _ in range(5):
            yield [
                a if rng.random() < 0.4 else mutate(a, rng.choice(good), signal, encoding, rng)
                for a in (rng.choice(good) for _ in range(size))
            ]


def test_otlp_spans_fuzz_corpus():
    """The fuzz corpus's OTLP span mutants (truncations, bit flips, splices, protobuf
    structure, values at their bounds) mixed with good messages."""
    total_bad = sum(
        assert_otlp_parity(values)[1] for values in _mutant_batches("span", "otlp_proto", "native-parity/otlp")
    )
    assert total_bad > 40


def test_otlp_codec_choice(monkeypatch):
    from schemas.codecs.otlp_codec import OtlpCodec

    monkeypatch.delenv("OBSFLOW_DECODER", raising=False)
    assert isinstance(codec_for("otlp_proto", "span", 100), native_json.NativeOtlpSpanCodec)
    assert codec_for("otlp_proto", "span", 100).encoding == "otlp_proto"  # the reference's attributes show through
    assert type(codec_for("otlp_proto", "span", 100, {"decoder": "python"})) is OtlpCodec
    assert isinstance(codec_for("otlp_proto", "log", 100), native_json.NativeOtlpCodec)
    assert type(codec_for("otlp_proto", "log", 100, {"decoder": "python"})) is OtlpCodec
    assert isinstance(codec_for("otlp_proto", "metric", 100), native_json.NativeOtlpCodec)
    assert type(codec_for("otlp_proto", "metric", 100, {"decoder": "python"})) is OtlpCodec
    monkeypatch.setenv("OBSFLOW_DECODER", "python")
    assert type(codec_for("otlp_proto", "span", 100)) is OtlpCodec
    assert type(codec_for("otlp_proto", "log", 100)) is OtlpCodec
    assert type(codec_for("otlp_proto", "metric", 100)) is OtlpCodec


def test_otlp_double_attributes_read_as_python_repr():
    """Double attributes are decoded by the extension with the reference's text (Python's
    ``repr``): random bit patterns, integers, powers of ten at the notation's edges, -0.0,
    inf and nan."""
    import struct

    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

    rng = random.Random("doubles")
    doubles = [
        0.0,
        -0.0,
        1.0,
        100.0,
        1e15,
        1e16,
        1e17,
        1e-4,
        1e-5,
        0.1 + 0.2,
        5e-324,
        1.7976931348623157e308,
        float("inf"),
        float("-inf"),
        float("nan"),
        123456789.125,
        -2.5e-7,
    ]
    doubles += [struct.unpack("<d", struct.pack("<Q", rng.getrandbits(64)))[0] for _ in range(300)]
    doubles += [rng.uniform(-1e6, 1e6) for _ in range(100)] + [float(rng.randint(-(10**17), 10**17)) for _ in range(50)]
    template = ExportTraceServiceRequest.FromString(seeds("span", "otlp_proto", 1)[0].value)
    values = []
    for k in range(0, len(doubles), 10):
        msg = ExportTraceServiceRequest()
        msg.CopyFrom(template)
        sp = msg.resource_spans[0].scope_spans[0].spans[0]
        sp.attributes.extend(
            KeyValue(key=f"d{j}", value=AnyValue(double_value=d)) for j, d in enumerate(doubles[k : k + 10])
        )
        values.append(msg.SerializeToString())
    assert assert_otlp_parity(values)[1] == 0
    verdicts, *_ = native_json._native.decode_otlp_spans(values, 1 << 20)
    assert bytes(verdicts) == b"\x01" * len(values)


# -- OTLP protobuf log records ----------------------------------------------------------------


def _log_request(records: list, resource: dict | None = None) -> bytes:
    """An ExportLogsServiceRequest of ``records`` (LogRecord keyword dicts) under one resource
    with string attributes ``resource``."""
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
        ExportLogsServiceRequest,
    )
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
    from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

    msg = ExportLogsServiceRequest()
    rl = msg.resource_logs.add()
    for k, v in (resource or {}).items():
        rl.resource.attributes.add(key=k, value=v if isinstance(v, AnyValue) else AnyValue(string_value=v))
    sl = rl.scope_logs.add()
    for rec in records:
        rec = dict(rec)
        attrs = rec.pop("attributes", {})
        lr = LogRecord(**rec)
        for k, v in attrs.items() if isinstance(attrs, dict) else attrs:
            lr.attributes.append(KeyValue(key=k, value=v if isinstance(v, AnyValue) else AnyValue(string_value=v)))
        sl.log_records.append(lr)
    return msg.SerializeToString()


def test_otlp_logs_generator_and_sdk():
    """The generator's log records as OTLP messages and the OpenTelemetry SDK's own output:
    identical to the reference, and decoded by the extension itself (a kvlist body defers)."""
    from opentelemetry.exporter.otlp.proto.common._internal._log_encoder import (
        encode_logs,
    )

    from tests.codecs.test_otlp_codec import make_logs

    good = [s.value for s in seeds("log", "otlp_proto", 40)]
    rows, bad = assert_otlp_parity(good, "log")
    assert rows > 40 and bad == 0
    verdicts, *_ = native_json._native.decode_otlp_logs(good, 1 << 20)
    assert bytes(verdicts) == b"\x01" * len(good)
    logs, _ = make_logs()
    messages = [
        encode_logs(logs).SerializeToString(),
        encode_logs(logs[:1]).SerializeToString(),
        encode_logs(logs[2:]).SerializeToString(),
    ]
    assert assert_otlp_parity(messages + good[:3], "log") == (4 + 1 + 2 + sum(_log_count(v) for v in good[:3]), 0)
    verdicts, *_ = native_json._native.decode_otlp_logs(messages, 1 << 20)
    assert bytes(verdicts) == b"\x00\x01\x01"  # the first holds a kvlist body: the reference writes its JSON


def _log_count(payload: bytes) -> int:
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
        ExportLogsServiceRequest,
    )

    msg = ExportLogsServiceRequest.FromString(payload)
    return sum(len(sl.log_records) for rl in msg.resource_logs for sl in rl.scope_logs)


def test_otlp_logs_edge_cases():
    """Levels from numbers and text, times, ids, the resource's service / host / env, user and
    request ids from either side, attribute clashes (the record wins, in the resource's
    place), event names, typed and unset values, bodies of every kind: identical rows and
    dead letters, and the extension decodes every message it can read exactly."""
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue

    t = 1_765_000_000_123_456_789
    tid, sid = bytes(range(1, 17)), bytes(range(1, 9))
    res = {
        "service.name": "shop",
        "host.name": "web-1",
        "deployment.environment.name": "prod",
        "region": "eu",
        "enduser.id": "u-res",
        "tier": "gold",
    }
    native_ok = [
        _log_request(
            [
                {
                    "time_unix_nano": t,
                    "severity_number": n,
                    "severity_text": "whatever",
                    "body": AnyValue(string_value="m"),
                }
                for n in range(0, 27)
            ],
            res,
        ),
        _log_request(
            [{"time_unix_nano": t, "severity_text": txt} for txt in ["warning", "  Error ", "   ", "x", "info"]]
        ),
        _log_request(
            [
                {"observed_time_unix_nano": t},
                {"time_unix_nano": 1, "observed_time_unix_nano": t},
                {"time_unix_nano": 2**64 - 1},
            ],
            {"service.name": ""},
        ),
        _log_request(
            [
                {"time_unix_nano": t, "trace_id": tid, "span_id": sid},
                {"time_unix_nano": t, "trace_id": bytes(16), "span_id": bytes(8)},
            ],
            {"deployment.environment.name": "", "deployment.environment": "staging"},
        ),
        _log_request(
            [
                {
                    "time_unix_nano": t,
                    "attributes": {
                        "tier": "silver",
                        "enduser.id": "u-7",
                        "http.request_id": "r-1",
                        "a": "1",
                        "event.name": "mine",
                    },
                    "event_name": "checkout.done",
                },
                {
                    "time_unix_nano": t,
                    "attributes": {
                        "n": AnyValue(int_value=-(2**63)),
                        "b": AnyValue(bool_value=True),
                        "d": AnyValue(double_value=0.1),
                        "u": AnyValue(),
                    },
                },
            ],
            res,
        ),
        _log_request(
            [
                {"time_unix_nano": t, "body": AnyValue(bool_value=False)},
                {"time_unix_nano": t, "body": AnyValue(int_value=-5)},
                {"time_unix_nano": t, "body": AnyValue()},
                {"time_unix_nano": t},
            ],
            {"host.name": AnyValue(int_value=3), "deployment.environment": AnyValue()},
        ),
    ]
    deferred = [
        _log_request([{"time_unix_nano": t, "body": AnyValue(double_value=1e16)}]),  # orjson's float text
        _log_request([{"time_unix_nano": t, "body": AnyValue(array_value=ArrayValue(values=[AnyValue(int_value=1)]))}]),
        _log_request([{"time_unix_nano": t, "severity_text": "érreur"}]),  # Unicode upper-casing
        _log_request([{"time_unix_nano": t, "severity_number": -3, "severity_text": "warn"}]),  # a negative enum
        _log_request([{"time_unix_nano": t}, {"severity_text": "no time"}]),  # one record rejected
        _log_request([{"time_unix_nano": t, "trace_id": b"\x01" * 5}]),  # a short trace id
        _log_request([{"time_unix_nano": t, "span_id": b"\x01" * 9}]),
        _log_request([]),  # no records
        _log_request([{"time_unix_nano": t, "attributes": [("dup", "1"), ("x", "2"), ("dup", "3")]}]),  # a key twice
    ]
    rows, bad = assert_otlp_parity(native_ok + deferred, "log")
    # rejected: the record without a time, the two bad ids, the empty message; deferred rows: 1+1+1+1+1+1
    assert (rows, bad) == (27 + 5 + 3 + 2 + 2 + 4 + 6, 4)
    verdicts, *_ = native_json._native.decode_otlp_logs(native_ok + deferred, 1 << 20)
    assert bytes(verdicts) == b"\x01" * len(native_ok) + b"\x00" * len(deferred)
    # an item over the size limit: the message is deferred and the reference rejects that record alone
    assert assert_otlp_parity(native_ok[:2], "log", max_bytes=20) == (5, 27)


def test_otlp_logs_fuzz_corpus():
    """The fuzz corpus's OTLP log mutants mixed with good messages."""
    batches = _mutant_batches("log", "otlp_proto", "native-parity/otlp-logs")
    total_bad = sum(assert_otlp_parity(values, "log")[1] for values in batches)
    assert total_bad > 40


_LOG_KEYS = [
    "service.name",
    "host.name",
    "deployment.environment.name",
    "deployment.environment",
    "enduser.id",
    "http.request_id",
    "event.name",
    "tier",
    "a",
]


@st.composite
def _any_values(draw):
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue

    kind = draw(st.sampled_from(["s", "s", "b", "i", "d", "unset"]))
    return {
        "s": lambda: AnyValue(string_value=draw(st.sampled_from(["", "x", "prod", " a b ", "é"]))),
        "b": lambda: AnyValue(bool_value=draw(st.booleans())),
        "i": lambda: AnyValue(int_value=draw(st.integers(-(2**63), 2**63 - 1))),
        "d": lambda: AnyValue(double_value=draw(st.floats())),
        "unset": AnyValue,
    }[kind]()


@st.composite
def _log_messages(draw) -> bytes:
    """An ExportLogsServiceRequest whose records draw every field the row reads from values at
    and beyond the edges, resource and record attributes sharing keys."""
    records = []
    for _ in range(draw(st.integers(0, 4))):
        rec: dict = {}
        if draw(st.booleans()):
            rec["time_unix_nano"] = draw(st.sampled_from([0, 1, 999_999, 1_765_000_000_123_456_789, 2**64 - 1]))
        if draw(st.booleans()):
            rec["observed_time_unix_nano"] = draw(st.sampled_from([0, 1_765_000_000_000_000_001]))
        rec["severity_number"] = draw(st.sampled_from([0, 1, 4, 5, 9, 13, 17, 21, 24, 25, 255]))
        rec["severity_text"] = draw(
            st.sampled_from(["", "warn", " Error ", "   ", "\tinfo", "fatal\n", "ÉRROR", "x y"])
        )
        if draw(st.booleans()):
            rec["body"] = draw(_any_values())
        for f, size in (("trace_id", 16), ("span_id", 8)):
            if draw(st.booleans()):
                rec[f] = draw(st.sampled_from([b"", bytes(size), b"\x01" * size, b"\x02" * (size - 1)]))
        if draw(st.booleans()):
            rec["event_name"] = draw(st.sampled_from(["", "done", "é"]))
        rec["attributes"] = [(k, draw(_any_values())) for k in draw(st.lists(st.sampled_from(_LOG_KEYS), max_size=4))]
        records.append(rec)
    resource = {k: draw(_any_values()) for k in draw(st.lists(st.sampled_from(_LOG_KEYS), max_size=5, unique=True))}
    return _log_request(records, resource)


def test_hypothesis_otlp_logs():
    """Hypothesis over the log decoder (bounded and derandomized in CI; OBSFLOW_FUZZ=long for
    more): the reference's rows and dead letters for every drawn message."""

    @settings(
        max_examples=80 if os.environ.get("OBSFLOW_FUZZ") != "long" else 3000,
        deadline=None,
        database=None,
        derandomize=os.environ.get("OBSFLOW_FUZZ") != "long",
        suppress_health_check=list(HealthCheck),
    )
    @given(st.lists(_log_messages(), min_size=1, max_size=6))
    def run(values):
        assert_otlp_parity(values, "log")

    run()


# -- OTLP protobuf metrics ----------------------------------------------------------------------


def _sdk_metrics() -> list[bytes]:
    """The OpenTelemetry SDK's own exports: a monotonic counter, an up-down counter (a
    cumulative non-monotonic sum: a level), a histogram, an observable gauge with an int
    and a double point, cumulative and then delta temporality."""
    from opentelemetry.exporter.otlp.proto.common._internal.metrics_encoder import (
        encode_metrics,
    )
    from opentelemetry.metrics import CallbackOptions, Observation
    from opentelemetry.sdk.metrics import Counter, Histogram, MeterProvider, UpDownCounter
    from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader
    from opentelemetry.sdk.resources import Resource

    out = []
    for temporality in (None, AggregationTemporality.DELTA):
        pref = {} if temporality is None else {Counter: temporality, Histogram: temporality, UpDownCounter: temporality}
        reader = InMemoryMetricReader(preferred_temporality=pref)
        provider = MeterProvider(
            resource=Resource.create({"service.name": "checkout", "host.name": "web-1"}), metric_readers=[reader]
        )
        meter = provider.get_meter("shop")
        requests = meter.create_counter("http.requests")
        active = meter.create_up_down_counter("http.active")
        latency = meter.create_histogram("http.duration_ms")

        def temperature(options: CallbackOptions):
            return [Observation(21, {"room": "a"}), Observation(19.5, {"room": "b", "floor": 2})]

        meter.create_observable_gauge("temperature", callbacks=[temperature])
        requests.add(3, {"route": "/checkout", "ok": True})
        requests.add(7, {"route": "/search"})
        active.add(5)
        active.add(-2)
        for v in (12.0, 80.0, 250.0, 3000.0):
            latency.record(v, {"route": "/checkout"})
        out.append(encode_metrics(reader.get_metrics_data()).SerializeToString())
        provider.shutdown()
    return out


def test_otlp_metrics_generator_and_sdk():
    """The generator's metric samples as OTLP messages and the OpenTelemetry SDK's own
    exports: identical rows and dead letters, all decoded by the extension itself."""
    good = [s.value for s in seeds("metric", "otlp_proto", 40)]
    rows, bad = assert_otlp_parity(good, "metric")
    assert rows > 40 and bad == 0
    verdicts, *_ = native_json._native.decode_otlp_metrics(good, 1 << 20)
    assert bytes(verdicts) == b"\x01" * len(good)
    sdk = _sdk_metrics()
    # per export: 2 counter points, 1 up-down, 1 histogram, 2 gauge points
    assert assert_otlp_parity(sdk, "metric") == (12, 0)
    verdicts, *_ = native_json._native.decode_otlp_metrics(sdk, 1 << 20)
    assert bytes(verdicts) == b"\x01\x01"


def _metric_request(metrics: list, resource: dict | None = None) -> bytes:
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
    from opentelemetry.proto.metrics.v1.metrics_pb2 import ResourceMetrics, ScopeMetrics
    from opentelemetry.proto.resource.v1.resource_pb2 import Resource

    attrs = [KeyValue(key=k, value=AnyValue(string_value=v)) for k, v in (resource or {"service.name": "shop"}).items()]
    return ExportMetricsServiceRequest(
        resource_metrics=[
            ResourceMetrics(resource=Resource(attributes=attrs), scope_metrics=[ScopeMetrics(metrics=metrics)])
        ]
    ).SerializeToString()


def test_otlp_metrics_edge_cases():
    """Every kind the reference maps (gauge, monotonic and not, cumulative / delta /
    unspecified sums, histograms with and without a sum, summaries with quantiles, a NaN
    quantile value skipped), int and double values and none, typed labels and a ``service``
    attribute, start times: identical rows and dead letters; the extension decodes every
    message it can read exactly and defers the others (exponential histograms, points the
    reference rejects, a oneof given twice)."""
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
    from opentelemetry.proto.metrics.v1.metrics_pb2 import (
        ExponentialHistogram,
        ExponentialHistogramDataPoint,
        Gauge,
        Histogram,
        HistogramDataPoint,
        Metric,
        NumberDataPoint,
        Sum,
        Summary,
        SummaryDataPoint,
    )

    t, st = 1_765_000_000_123_456_789, 1_764_999_000_000_000_000
    kv = [
        KeyValue(key="route", value=AnyValue(string_value="/a")),
        KeyValue(key="n", value=AnyValue(int_value=-4)),
        KeyValue(key="d", value=AnyValue(double_value=0.25)),
        KeyValue(key="b", value=AnyValue(bool_value=True)),
        KeyValue(key="service", value=AnyValue(string_value="mine")),
        KeyValue(key="u", value=AnyValue()),
    ]
    num = [
        NumberDataPoint(time_unix_nano=t, as_double=1.5, attributes=kv),
        NumberDataPoint(time_unix_nano=t, as_int=-(2**63)),
        NumberDataPoint(time_unix_nano=t, start_time_unix_nano=st),
        NumberDataPoint(time_unix_nano=t, as_int=2**53 + 1),
    ]
    Q = SummaryDataPoint.ValueAtQuantile
    native_ok = [
        _metric_request(
            [
                Metric(name="g", gauge=Gauge(data_points=num)),
                Metric(name="c", sum=Sum(is_monotonic=True, aggregation_temporality=2, data_points=num[:2])),
                Metric(name="cd", sum=Sum(is_monotonic=True, aggregation_temporality=1, data_points=num[:1])),
                Metric(name="level", sum=Sum(is_monotonic=False, aggregation_temporality=2, data_points=num[:1])),
                Metric(name="net", sum=Sum(is_monotonic=False, aggregation_temporality=1, data_points=num[:1])),
                Metric(name="unspec", sum=Sum(aggregation_temporality=0, data_points=num[2:3])),
                Metric(name="empty", gauge=Gauge()),
            ]
        ),
        _metric_request(
            [
                Metric(
                    name="h",
                    description="d",
                    unit="ms",
                    histogram=Histogram(
                        aggregation_temporality=1,
                        data_points=[
                            HistogramDataPoint(
                                time_unix_nano=t,
                                start_time_unix_nano=st,
                                count=10,
                                sum=12.5,
                                explicit_bounds=[1, 2.5],
                                bucket_counts=[3, 0, 7],
                                attributes=kv[:2],
                                min=0.5,
                                max=9,
                            ),
                            HistogramDataPoint(time_unix_nano=t, count=2**63 - 1),
                            HistogramDataPoint(time_unix_nano=t),
                        ],
                    ),
                )
            ],
            {"host.name": "x"},
        ),
        _metric_request(
            [
                Metric(
                    name="s",
                    summary=Summary(
                        data_points=[
                            SummaryDataPoint(
                                time_unix_nano=t,
                                count=4,
                                sum=9.0,
                                attributes=kv[:1],
                                quantile_values=[
                                    Q(quantile=0.5, value=2.0),
                                    Q(quantile=0.999, value=float("nan")),
                                    Q(quantile=1 / 3, value=3.0),
                                    Q(quantile=1.0, value=8.0),
                                    Q(quantile=1e-5, value=0.0),
                                ],
                            ),
                            SummaryDataPoint(
                                time_unix_nano=t,
                                attributes=[KeyValue(key="quantile", value=AnyValue(string_value="q"))],
                                quantile_values=[Q(quantile=0.0, value=1.0)],
                            ),
                        ]
                    ),
                )
            ],
            {"service.name": ""},
        ),
    ]
    deferred = [
        _metric_request(
            [
                Metric(
                    name="e",
                    exponential_histogram=ExponentialHistogram(
                        data_points=[ExponentialHistogramDataPoint(time_unix_nano=t, count=1)]
                    ),
                )
            ]
        ),  # rejected: no place for it
        _metric_request([Metric(name="", gauge=Gauge(data_points=num[:1]))]),  # no name
        _metric_request([Metric(name="g", gauge=Gauge(data_points=[NumberDataPoint(as_double=1.0)]))]),  # no time
        _metric_request(
            [Metric(name="h", histogram=Histogram(data_points=[HistogramDataPoint(time_unix_nano=t, count=2**63)]))]
        ),
        _metric_request(
            [
                Metric(
                    name="h",
                    histogram=Histogram(
                        data_points=[HistogramDataPoint(time_unix_nano=t, bucket_counts=[1, 2**64 - 1])]
                    ),
                )
            ]
        ),
        _metric_request(
            [
                Metric(
                    name="s",
                    summary=Summary(
                        data_points=[
                            SummaryDataPoint(time_unix_nano=t, quantile_values=[Q(quantile=float("inf"), value=1.0)])
                        ]
                    ),
                )
            ]
        ),
        _metric_request([Metric(name="nodata")]),  # unsupported: no data
        _metric_request(
            [
                Metric(
                    name="g",
                    gauge=Gauge(
                        data_points=[
                            NumberDataPoint(
                                time_unix_nano=t,
                                attributes=[
                                    KeyValue(key="k", value=AnyValue(string_value="1")),
                                    KeyValue(key="k", value=AnyValue(string_value="2")),
                                ],
                            )
                        ]
                    ),
                )
            ]
        ),
        _metric_request([]),  # no data points
        _metric_request([Metric(name="g", gauge=Gauge(data_points=num[:1]))])
        + bytes.fromhex("0a00"),  # a second resource: fine
    ]
    # the last one is in fact read by the extension too (an empty ResourceMetrics)
    native_ok.append(deferred.pop())
    rows, bad = assert_otlp_parity(native_ok + deferred, "metric")
    # rows: gauge 4, sums 2+1+1+1+1, histograms 3, summaries 1+4 (one NaN skipped) and 1+1, the last 1;
    # deferred and still rows: the quantile-inf summary 1+1, the duplicate key 1; rejects: 6 items and 1 message
    assert (rows, bad) == (4 + 6 + 3 + 5 + 2 + 1 + 2 + 1, 7)
    verdicts, *_ = native_json._native.decode_otlp_metrics(native_ok + deferred, 1 << 20)
    assert bytes(verdicts) == b"\x01" * len(native_ok) + b"\x00" * len(deferred)


def test_otlp_metrics_fuzz_corpus():
    """The fuzz corpus's OTLP metric mutants mixed with good messages."""
    batches = _mutant_batches("metric", "otlp_proto", "native-parity/otlp-metrics")
    total_bad = sum(assert_otlp_parity(values, "metric")[1] for values in batches)
    assert total_bad > 40


_METRIC_KEYS = ["route", "service", "quantile", "service.name", "n"]
_DOUBLES = [0.0, -0.0, 1.5, -2.25, 1e-300, 1e300, float("nan"), float("inf"), 2.0**63, 0.1 + 0.2]


@st.composite
def _metric_messages(draw) -> bytes:
    """An ExportMetricsServiceRequest of drawn metrics of every kind, with values, counts,
    times and quantiles at and beyond the edges and attribute keys the labels also use."""
    from opentelemetry.proto.common.v1.common_pb2 import KeyValue
    from opentelemetry.proto.metrics.v1.metrics_pb2 import (
        ExponentialHistogram,
        ExponentialHistogramDataPoint,
        Gauge,
        Histogram,
        HistogramDataPoint,
        Metric,
        NumberDataPoint,
        Sum,
        Summary,
        SummaryDataPoint,
    )

    def common() -> dict:
        return {
            "time_unix_nano": draw(st.sampled_from([0, 1, 1_765_000_000_123_456_789, 2**64 - 1])),
            "start_time_unix_nano": draw(st.sampled_from([0, 999_999, 1_764_999_000_000_000_000])),
            "attributes": [
                KeyValue(key=k, value=draw(_any_values()))
                for k in draw(st.lists(st.sampled_from(_METRIC_KEYS), max_size=3))
            ],
        }

    def number() -> NumberDataPoint:
        value = draw(st.sampled_from(["none", "double", "int"]))
        extra = (
            {"as_double": draw(st.sampled_from(_DOUBLES))}
            if value == "double"
            else {"as_int": draw(st.sampled_from([0, -1, 2**53 + 1, -(2**63), 2**63 - 1]))}
            if value == "int"
            else {}
        )
        return NumberDataPoint(**common(), **extra)

    counts = st.sampled_from([0, 1, 2**63 - 1, 2**63, 2**64 - 1])
    metrics = []
    for _ in range(draw(st.integers(0, 4))):
        name = draw(st.sampled_from(["m", "", "http.duration_ms", "é"]))
        kind = draw(st.sampled_from(["gauge", "sum", "histogram", "summary", "exp", "none"]))
        points = draw(st.integers(0, 3))
        temporality = draw(st.sampled_from([0, 1, 2, 3]))
        if kind == "gauge":
            metrics.append(Metric(name=name, gauge=Gauge(data_points=[number() for _ in range(points)])))
        elif kind == "sum":
            metrics.append(
                Metric(
                    name=name,
                    sum=Sum(
                        aggregation_temporality=temporality,
                        is_monotonic=draw(st.booleans()),
                        data_points=[number() for _ in range(points)],
                    ),
                )
            )
        elif kind == "histogram":
            dps = []
            for _ in range(points):
                extra = {"sum": draw(st.sampled_from(_DOUBLES))} if draw(st.booleans()) else {}
                dps.append(
                    HistogramDataPoint(
                        **common(),
                        count=draw(counts),
                        explicit_bounds=draw(st.lists(st.sampled_from(_DOUBLES), max_size=3)),
                        bucket_counts=draw(st.lists(counts, max_size=4)),
                        **extra,
                    )
                )
            metrics.append(Metric(name=name, histogram=Histogram(aggregation_temporality=temporality, data_points=dps)))
        elif kind == "summary":
            Q = SummaryDataPoint.ValueAtQuantile
            dps = [
                SummaryDataPoint(
                    **common(),
                    count=draw(counts),
                    sum=draw(st.sampled_from(_DOUBLES)),
                    quantile_values=[
                        Q(
                            quantile=draw(
                                st.sampled_from([0.0, 0.5, 0.99, 1 / 3, 1e-20, 1e20, 123456789012345.67, float("nan")])
                            ),
                            value=draw(st.sampled_from(_DOUBLES)),
                        )
                        for _ in range(draw(st.integers(0, 3)))
                    ],
                )
                for _ in range(points)
            ]
            metrics.append(Metric(name=name, summary=Summary(data_points=dps)))
        elif kind == "exp":
            metrics.append(
                Metric(
                    name=name,
                    exponential_histogram=ExponentialHistogram(
                        data_points=[ExponentialHistogramDataPoint(time_unix_nano=1, count=1) for _ in range(points)]
                    ),
                )
            )
        else:
            metrics.append(Metric(name=name))
    resource = dict.fromkeys(
        draw(st.lists(st.sampled_from(["service.name", "host.name"]), max_size=2, unique=True)), "svc"
    )
    return _metric_request(metrics, resource)


def test_hypothesis_otlp_metrics():
    """Hypothesis over the metrics decoder (bounded and derandomized in CI; OBSFLOW_FUZZ=long
    for more): the reference's rows, dead letters and item counts for every drawn message."""

    @settings(
        max_examples=80 if os.environ.get("OBSFLOW_FUZZ") != "long" else 3000,
        deadline=None,
        database=None,
        derandomize=os.environ.get("OBSFLOW_FUZZ") != "long",
        suppress_health_check=list(HealthCheck),
    )
    @given(st.lists(_metric_messages(), min_size=1, max_size=6))
    def run(values):
        assert_otlp_parity(values, "metric")

    run()


# -- OTLP/JSON (spans, logs, metrics) -----------------------------------------------------------

_ID_KEYS = {"traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id"}
_INT64_KEYS = {
    "timeUnixNano",
    "startTimeUnixNano",
    "endTimeUnixNano",
    "observedTimeUnixNano",
    "count",
    "asInt",
    "intValue",
    "bucketCounts",
    "time_unix_nano",
    "start_time_unix_nano",
    "end_time_unix_nano",
    "observed_time_unix_nano",
    "as_int",
    "int_value",
    "bucket_counts",
}
_REQUESTS = {
    "span": "opentelemetry.proto.collector.trace.v1.trace_service_pb2.ExportTraceServiceRequest",
    "log": "opentelemetry.proto.collector.logs.v1.logs_service_pb2.ExportLogsServiceRequest",
    "metric": "opentelemetry.proto.collector.metrics.v1.metrics_service_pb2.ExportMetricsServiceRequest",
}


def _request_type(signal: str):
    import importlib

    module, name = _REQUESTS[signal].rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


def _as_otlp_json(payload: bytes, signal: str, style: str = "collector") -> bytes:
    """A protobuf export request in the OTLP/JSON mapping (protobuf's json_format, ids as
    hex): ``collector`` (lowerCamelCase, enums as integers, int64 as strings, as the
    Collector writes it), ``names`` (enum names), ``snake`` (proto field names) or
    ``numbers`` (int64 as JSON numbers)."""
    import base64

    from google.protobuf import json_format

    msg = _request_type(signal).FromString(payload)
    doc = json_format.MessageToDict(
        msg, use_integers_for_enums=style != "names", preserving_proto_field_name=style == "snake"
    )

    def fix(o):
        if isinstance(o, dict):
            return {
                k: (
                    base64.b64decode(v).hex()
                    if k in _ID_KEYS and isinstance(v, str)
                    else _number(fix(v))
                    if style == "numbers" and k in _INT64_KEYS
                    else fix(v)
                )
                for k, v in o.items()
            }
        if isinstance(o, list):
            return [fix(v) for v in o]
        return o

    return json.dumps(fix(doc)).encode()


def _number(v):
    if isinstance(v, list):
        return [_number(x) for x in v]
    return int(v) if isinstance(v, str) and v.lstrip("-").isdigit() else v


def _json_verdicts(values: list, signal: str) -> bytes:
    verdicts, *_ = native_json._native.decode_otlp_json(values, 1 << 20, signal)
    return bytes(verdicts)


def _same_as_protobuf(protos: list, signal: str, style: str = "collector") -> None:
    """The OTLP/JSON decode of ``protos`` (as ``style``) gives the protobuf decode's rows."""
    jsons = [_as_otlp_json(p, signal, style) for p in protos]
    a = native_json.NativeOtlpCodec(signal, encoding="otlp_json").decode(_raw(jsons)).table
    b = native_json.NativeOtlpCodec(signal).decode(_raw(protos)).table
    assert a.num_rows == b.num_rows
    for name in b.column_names:
        assert _same_column(a.column(name), b.column(name)), name


def _sdk_messages(signal: str) -> list[bytes]:
    """The OpenTelemetry SDK's own exports of ``signal`` (protobuf), as the protobuf tests use them."""
    if signal == "metric":
        return _sdk_metrics()
    if signal == "span":
        from opentelemetry.exporter.otlp.proto.common._internal.trace_encoder import encode_spans

        from tests.codecs.test_otlp_codec import make_spans

        sdk = make_spans()
        return [
            encode_spans(sdk).SerializeToString(),
            encode_spans(sdk[:1]).SerializeToString(),
            encode_spans([s for s in sdk if "cart.skus" not in (s.attributes or {})]).SerializeToString(),
        ]
    from opentelemetry.exporter.otlp.proto.common._internal._log_encoder import encode_logs

    from tests.codecs.test_otlp_codec import make_logs

    logs, _ = make_logs()
    return [
        encode_logs(logs).SerializeToString(),
        encode_logs(logs[:1]).SerializeToString(),
        encode_logs(logs[2:]).SerializeToString(),
    ]


@pytest.mark.parametrize("signal", ["span", "log", "metric"])
def test_otlp_json_generator_and_sdk(signal):
    """The generator's OTLP/JSON traffic (the fuzz corpus's seeds) and its protobuf traffic
    and the OpenTelemetry SDK's exports rendered as OTLP/JSON in four styles (the Collector's,
    enum names, proto field names, int64 as numbers): identical rows, dead letters and item
    bytes to the reference; every generator message is decoded by the extension itself, and
    the rows equal the protobuf decode's."""
    good = [s.value for s in seeds(signal, "otlp_json", 40)]
    rows, bad = assert_otlp_parity(good, signal, encoding="otlp_json")
    assert rows > 40 and bad == 0
    assert _json_verdicts(good, signal) == b"\x01" * len(good)
    protos = [s.value for s in seeds(signal, "otlp_proto", 40)]
    proto_rows = assert_otlp_parity(protos, signal)[0]
    for style in ("collector", "names", "snake", "numbers"):
        jsons = [_as_otlp_json(p, signal, style) for p in protos]
        assert assert_otlp_parity(jsons, signal, encoding="otlp_json") == (proto_rows, 0), style
        assert _json_verdicts(jsons, signal) == b"\x01" * len(jsons), style
        _same_as_protobuf(protos, signal, style)
    sdk = _sdk_messages(signal)
    sdk_rows = assert_otlp_parity(sdk, signal)
    proto_verdicts = bytes(
        {
            "span": native_json._native.decode_otlp_spans,
            "log": native_json._native.decode_otlp_logs,
            "metric": native_json._native.decode_otlp_metrics,
        }[signal](sdk, 1 << 20)[0]
    )
    expected = {"span": (8, 0), "log": (7, 0), "metric": (12, 0)}[signal]
    assert sdk_rows == expected
    for style in ("collector", "names", "snake", "numbers"):
        jsons = [_as_otlp_json(p, signal, style) for p in sdk]
        assert assert_otlp_parity(jsons, signal, encoding="otlp_json") == expected, style
        # the same messages as the protobuf decoder decodes itself (an array attribute or a
        # kvlist body defers in both)
        assert _json_verdicts(jsons, signal) == proto_verdicts, style


@pytest.mark.parametrize("signal", ["span", "log", "metric"])
def test_otlp_json_fuzz_corpus(signal):
    """The fuzz corpus's OTLP/JSON mutants (truncations, bit flips, splices, inserted bytes,
    type confusion, values at their bounds) mixed with good messages."""
    total_bad = native = 0
    for values in _mutant_batches(signal, "otlp_json", f"native-parity/otlp-json-{signal}"):
        total_bad += assert_otlp_parity(values, signal, encoding="otlp_json")[1]
        native += _json_verdicts(values, signal).count(1)
    assert total_bad > 40
    assert native > 40  # the good ones (and harmless mutants) are the extension's


_T = "1765000000123456789"
_SPAN_DOC = {
    "resourceSpans": [
        {
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "api"}}]},
            "scopeSpans": [
                {
                    "scope": {"name": "lib"},
                    "spans": [
                        {
                            "traceId": "0102030405060708090a0b0c0d0e0f10",
                            "spanId": "1112131415161718",
                            "parentSpanId": "2122232425262728",
                            "name": "GET /a",
                            "kind": 2,
                            "startTimeUnixNano": _T,
                            "endTimeUnixNano": "1765000000223456789",
                            "attributes": [
                                {"key": "n", "value": {"intValue": "-7"}},
                                {"key": "d", "value": {"doubleValue": 0.1}},
                                {"key": "b", "value": {"boolValue": False}},
                                {"key": "u", "value": {}},
                            ],
                            "status": {"code": 2, "message": "boom"},
                            "flags": 257,
                            "traceState": "k=v",
                        }
                    ],
                }
            ],
        }
    ]
}
_LOG_DOC = {
    "resourceLogs": [
        {
            "resource": {
                "attributes": [
                    {"key": "service.name", "value": {"stringValue": "api"}},
                    {"key": "host.name", "value": {"stringValue": "h1"}},
                ]
            },
            "scopeLogs": [
                {
                    "logRecords": [
                        {
                            "timeUnixNano": _T,
                            "severityNumber": 17,
                            "severityText": "oops",
                            "body": {"stringValue": "hello"},
                            "attributes": [{"key": "enduser.id", "value": {"stringValue": "u1"}}],
                            "traceId": "0102030405060708090a0b0c0d0e0f10",
                            "spanId": "1112131415161718",
                            "eventName": "done",
                        }
                    ]
                }
            ],
        }
    ]
}
_METRIC_DOC = {
    "resourceMetrics": [
        {
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "api"}}]},
            "scopeMetrics": [
                {
                    "metrics": [
                        {
                            "name": "g",
                            "unit": "1",
                            "gauge": {
                                "dataPoints": [
                                    {
                                        "timeUnixNano": _T,
                                        "asDouble": 1.5,
                                        "attributes": [{"key": "r", "value": {"stringValue": "/a"}}],
                                    }
                                ]
                            },
                        },
                        {
                            "name": "h",
                            "histogram": {
                                "aggregationTemporality": 1,
                                "dataPoints": [
                                    {
                                        "timeUnixNano": _T,
                                        "count": "10",
                                        "sum": 0,
                                        "bucketCounts": ["3", "7"],
                                        "explicitBounds": [2.5],
                                    }
                                ],
                            },
                        },
                        {
                            "name": "s",
                            "summary": {
                                "dataPoints": [
                                    {
                                        "timeUnixNano": _T,
                                        "count": 4,
                                        "sum": 9.0,
                                        "quantileValues": [{"quantile": 0.5, "value": 2.0}],
                                    }
                                ]
                            },
                        },
                    ]
                }
            ],
        }
    ]
}


_DELETE = object()


def _edit(doc: dict, path: tuple, value=None, delete: bool = False, more: tuple = ()) -> bytes:
    """``doc`` (a copy) with the value at ``path`` replaced (or the key deleted), then each
    ``(path, value)`` of ``more`` (``_DELETE`` deletes)."""
    import copy

    d = copy.deepcopy(doc)
    for p, v in ((path, _DELETE if delete else value), *more):
        o = d
        for k in p[:-1]:
            o = o[k]
        if v is _DELETE:
            del o[p[-1]]
        else:
            o[p[-1]] = v
    return json.dumps(d).encode()


_SP = ("resourceSpans", 0, "scopeSpans", 0, "spans", 0)
_LR = ("resourceLogs", 0, "scopeLogs", 0, "logRecords", 0)
_DP = ("resourceMetrics", 0, "scopeMetrics", 0, "metrics", 0, "gauge", "dataPoints", 0)
_HP = ("resourceMetrics", 0, "scopeMetrics", 0, "metrics", 1, "histogram", "dataPoints", 0)


def test_otlp_json_edge_cases():
    """Shapes the extension reads itself (enum names, upper-case hex, int64 as numbers or
    strings, snake_case keys, unknown keys the reference ignores, an unset value, a zero
    histogram sum) and shapes it defers (nulls, a key twice or in both spellings, ids with
    spaces, "+7", a double as a string, bytes / array values, floats for integers, values
    beyond their range, underflowing doubles, a BOM, trailing bytes, over max_bytes,
    unknown metric keys): identical rows, dead letters and item bytes, exact counts."""
    span = json.dumps(_SPAN_DOC).encode()
    log = json.dumps(_LOG_DOC).encode()
    metric = json.dumps(_METRIC_DOC).encode()
    native_spans = [
        span,
        _edit(_SPAN_DOC, _SP + ("kind",), "SPAN_KIND_CLIENT"),
        _edit(_SPAN_DOC, _SP + ("status",), {"code": "STATUS_CODE_OK"}),
        _edit(_SPAN_DOC, _SP + ("traceId",), "0102030405060708090A0B0C0D0E0F10"),
        _edit(_SPAN_DOC, _SP + ("startTimeUnixNano",), int(_T)),
        _edit(_SPAN_DOC, _SP + ("parentSpanId",), ""),
        _edit(_SPAN_DOC, _SP + ("parentSpanId",), "0000000000000000"),
        _edit(_SPAN_DOC, _SP + ("events",), [{"name": "e", "whatever": None}]),
        _edit(_SPAN_DOC, _SP + ("attributes", 0, "value"), {"int_value": 9007199254740993}),
        _edit(_SPAN_DOC, _SP + ("attributes", 1, "value"), {"doubleValue": -0}),
        _edit(_SPAN_DOC, _SP + ("attributes", 1, "value"), {"doubleValue": 1e300}),
        json.dumps(
            {
                "resource_spans": [
                    {
                        "scope_spans": [
                            {
                                "spans": [
                                    {
                                        "trace_id": "0102030405060708090a0b0c0d0e0f10",
                                        "span_id": "1112131415161718",
                                        "start_time_unix_nano": 1,
                                        "end_time_unix_nano": "2",
                                        "trace_state": "x",
                                    }
                                ]
                            }
                        ]
                    }
                ]
            }
        ).encode(),
        b"  " + span + b"\n",
    ]
    deferred_spans = [
        _edit(_SPAN_DOC, _SP + ("kind",), None),  # null: the reference's
        _edit(_SPAN_DOC, _SP + ("kind",), 2.0),
        _edit(_SPAN_DOC, _SP + ("kind",), 6),  # rejected: no such kind
        _edit(_SPAN_DOC, _SP + ("kind",), "2"),
        span.replace(b'"name": "GET /a"', b'"name": "GET /a", "name": "x"'),  # a key twice
        _edit(_SPAN_DOC, _SP + ("span_id",), "1112131415161718"),  # both spellings
        _edit(_SPAN_DOC, _SP + ("spanId",), "11121314 15161718"),  # fromhex takes spaces
        _edit(_SPAN_DOC, _SP + ("spanId",), "111213141516171"),  # odd length: rejected
        _edit(_SPAN_DOC, _SP + ("spanId",), "11121314151617"),  # 7 bytes: rejected
        _edit(_SPAN_DOC, _SP + ("traceId",), "00000000000000000000000000000000"),  # all zero: rejected
        _edit(_SPAN_DOC, _SP + ("startTimeUnixNano",), "+1"),
        _edit(_SPAN_DOC, _SP + ("startTimeUnixNano",), 1.7e18),
        _edit(_SPAN_DOC, _SP + ("startTimeUnixNano",), "18446744073709551616"),  # beyond uint64: rejected
        _edit(_SPAN_DOC, _SP + ("startTimeUnixNano",), "0"),  # no start: rejected
        _edit(_SPAN_DOC, _SP + ("attributes", 0, "value"), {"intValue": "+7"}),
        _edit(_SPAN_DOC, _SP + ("attributes", 1, "value"), {"doubleValue": "0.5"}),
        span.replace(b'"doubleValue": 0.1', b'"doubleValue": 1e-400'),  # underflow
        _edit(_SPAN_DOC, _SP + ("attributes", 1, "value"), {"doubleValue": 12345678901234567}),
        _edit(_SPAN_DOC, _SP + ("attributes", 2, "value"), {"bytesValue": "AAE="}),
        _edit(_SPAN_DOC, _SP + ("attributes", 2, "value"), {"arrayValue": {"values": [{"intValue": 1}]}}),
        _edit(_SPAN_DOC, _SP + ("attributes", 2, "value"), {"stringValue": "a", "intValue": 1}),
        _edit(_SPAN_DOC, _SP + ("attributes", 2, "value"), {"boolValue": "true"}),  # rejected
        _edit(_SPAN_DOC, _SP + ("attributes", 2), {"key": "k", "value": {"stringValue": "a"}, "x": 1}),
        _edit(_SPAN_DOC, _SP + ("flags",), 2**32),  # rejected
        _edit(_SPAN_DOC, _SP + ("name",), 5),  # rejected
        _edit(_SPAN_DOC, ("resourceSpans", 0, "scopeSpans", 0, "spans"), {}),  # rejected whole
        json.dumps({"resourceSpans": []}).encode(),  # no spans
        b"\xef\xbb\xbf" + span,
        span + b" x",
        b"[]",
        b"",
        b"{",
        '{"resourceSpans": "\u00e9"}'.encode(),
    ]
    rows, bad = assert_otlp_parity(native_spans + deferred_spans, "span", encoding="otlp_json")
    # rows: 13 native + the deferred ones the reference accepts (null kind, 2.0, "2", the key
    # twice, both spellings, spaces, 1.7e18, "0.5", 1e-400, the long integer, bytes, array, two
    # kinds in one value, the extra kv key: 14); rejects: the other 19 (kind 6, three bad ids,
    # "+1", 2**64, "0", "+7", "true", flags, name 5, and 8 whole messages)
    assert (rows, bad) == (13 + 14, 19)
    assert _json_verdicts(native_spans + deferred_spans, "span") == b"\x01" * len(native_spans) + b"\x00" * len(
        deferred_spans
    )

    native_logs = [
        log,
        _edit(_LOG_DOC, _LR + ("severityNumber",), "SEVERITY_NUMBER_WARN3"),
        _edit(_LOG_DOC, _LR + ("severityNumber",), 100),
        _edit(_LOG_DOC, _LR + ("body",), {"intValue": 5}),
        _edit(_LOG_DOC, _LR + ("body",), {"boolValue": True}),
        _edit(_LOG_DOC, _LR + ("body",), {}),
        _edit(_LOG_DOC, _LR + ("timeUnixNano",), delete=True, more=((_LR + ("observedTimeUnixNano",), 5),)),
        _edit(_LOG_DOC, _LR + ("flags",), "not read"),
    ]
    deferred_logs = [
        _edit(_LOG_DOC, _LR + ("body",), {"doubleValue": 1.0}),  # orjson writes it
        _edit(_LOG_DOC, _LR + ("body",), {"kvlistValue": {"values": []}}),
        _edit(_LOG_DOC, _LR + ("severityNumber",), "SEVERITY_NUMBER_INFO5"),  # rejected
        _edit(_LOG_DOC, _LR + ("severityNumber",), -1),
        _edit(_LOG_DOC, _LR + ("timeUnixNano",), delete=True),  # rejected: no time
        _edit(_LOG_DOC, _LR + ("traceId",), "01"),  # rejected
        _edit(_LOG_DOC, _LR + ("severityText",), None),
    ]
    rows, bad = assert_otlp_parity(native_logs + deferred_logs, "log", encoding="otlp_json")
    assert (rows, bad) == (8 + 4, 3)
    assert _json_verdicts(native_logs + deferred_logs, "log") == b"\x01" * len(native_logs) + b"\x00" * len(
        deferred_logs
    )

    native_metrics = [
        metric,
        _edit(_METRIC_DOC, _DP + ("asInt",), "-9223372036854775808", more=((_DP + ("asDouble",), _DELETE),)),
        _edit(_METRIC_DOC, _DP + ("flags",), 1),
        _edit(_METRIC_DOC, _DP + ("exemplars",), [{"spanId": None}]),  # stripped by the reference
        _edit(
            _METRIC_DOC,
            ("resourceMetrics", 0, "scopeMetrics", 0, "metrics", 1, "histogram", "aggregationTemporality"),
            "AGGREGATION_TEMPORALITY_CUMULATIVE",
        ),
        _edit(_METRIC_DOC, _HP + ("sum",), delete=True),
        _edit(_METRIC_DOC, ("resourceMetrics", 0, "scopeMetrics", 0, "scope"), {"name": "x", "junk": None}),
    ]
    deferred_metrics = [
        _edit(_METRIC_DOC, _DP + ("asInt",), 1),  # the oneof twice: rejected
        _edit(_METRIC_DOC, _DP + ("asDouble",), "NaN"),
        _edit(_METRIC_DOC, _DP + ("timeUnixNano",), 0),  # rejected
        _edit(_METRIC_DOC, _DP + ("droppedAttributesCount",), 1),  # unknown to ParseDict: ignored
        _edit(_METRIC_DOC, _HP + ("count",), "9223372036854775808"),  # rejected
        _edit(_METRIC_DOC, _HP + ("bucketCounts",), ["3", 7.5]),  # rejected
        _edit(_METRIC_DOC, ("resourceMetrics", 0, "scopeMetrics", 0, "metrics", 0, "description"), 5),  # rejected
        _edit(_METRIC_DOC, ("resourceMetrics", 0, "scopeMetrics", 0, "metrics", 0, "sum"), {"dataPoints": []}),
        _edit(_METRIC_DOC, ("resourceMetrics", 0, "scopeMetrics", 0, "metrics", 0, "exponentialHistogram"), {}),
        _edit(_METRIC_DOC, ("resourceMetrics", 0, "resource", "droppedAttributesCount"), 0),
    ]
    rows, bad = assert_otlp_parity(native_metrics + deferred_metrics, "metric", encoding="otlp_json")
    assert _json_verdicts(native_metrics + deferred_metrics, "metric") == b"\x01" * len(native_metrics) + b"\x00" * len(
        deferred_metrics
    )
    # rows: 4 a message (gauge, histogram, summary and its quantile) less one a rejected item:
    # the oneof twice, time 0, count 2**63, 7.5 in bucketCounts, description 5, two data kinds
    # in one metric (twice): 7 rejects, 17 * 4 - 7 rows
    assert (rows, bad) == (17 * 4 - 7, 7)


def test_otlp_json_codec_choice(monkeypatch):
    """``otlp_json`` is the compiled decoder by default for every signal; the option or
    ``OBSFLOW_DECODER=python`` picks the reference."""
    from schemas.codecs.otlp_codec import OtlpCodec

    monkeypatch.delenv("OBSFLOW_DECODER", raising=False)
    for signal in ("span", "log", "metric"):
        codec = codec_for("otlp_json", signal, 100)
        assert isinstance(codec, native_json.NativeOtlpCodec) and codec.encoding == "otlp_json"
        assert type(codec_for("otlp_json", signal, 100, {"decoder": "python"})) is OtlpCodec
    monkeypatch.setenv("OBSFLOW_DECODER", "python")
    for signal in ("span", "log", "metric"):
        codec = codec_for("otlp_json", signal, 100)
        assert type(codec) is OtlpCodec and codec.encoding == "otlp_json"


@st.composite
def _json_messages(draw, signal: str) -> bytes:
    """A drawn log or metric request (the protobuf strategies above) as OTLP/JSON in a drawn style."""
    proto = draw(_log_messages() if signal == "log" else _metric_messages())
    return _as_otlp_json(proto, signal, draw(st.sampled_from(["collector", "names", "snake", "numbers"])))


@pytest.mark.parametrize("signal", ["log", "metric"])
def test_hypothesis_otlp_json(signal):
    """Hypothesis over the OTLP/JSON decoder (bounded and derandomized in CI;
    OBSFLOW_FUZZ=long for more): drawn log and metric requests with values at and beyond the
    edges, in every style: the reference's rows, dead letters and item bytes."""

    @settings(
        max_examples=60 if os.environ.get("OBSFLOW_FUZZ") != "long" else 3000,
        deadline=None,
        database=None,
        derandomize=os.environ.get("OBSFLOW_FUZZ") != "long",
        suppress_health_check=list(HealthCheck),
    )
    @given(st.lists(_json_messages(signal), min_size=1, max_size=6))
    def run(values):
        assert_otlp_parity(values, signal, encoding="otlp_json")

    run()


_JSON_ODD = [None, True, 0, -1, 1.5, 2.0, "", "x", [], {}]


@st.composite
def _json_any_value(draw, clean: bool = False):
    """An OTLP/JSON AnyValue of a drawn kind and a drawn (possibly wrong-typed) value
    (``clean``: a string, bool, int or double of a good type)."""
    kinds = ["stringValue", "string_value", "boolValue", "intValue", "int_value", "doubleValue"]
    key = draw(st.sampled_from(kinds if clean else [*kinds, "bytesValue", "arrayValue", "kvlistValue", None]))
    if key is None:
        return draw(st.sampled_from([{}, None, "s", {"stringValue": "a", "intValue": "1"}]))
    good = {
        "stringValue": st.sampled_from(["", "a", "é", "x y"]),
        "string_value": st.just("b"),
        "boolValue": st.booleans(),
        "intValue": st.sampled_from([0, -7, "42", "-0", "+1", "9223372036854775807", "9223372036854775808", 2**53 + 1]),
        "int_value": st.integers(-(2**63), 2**63 - 1),
        "doubleValue": st.sampled_from([0.0, -0.0, 0.1, 1e300, 12345678901234567, -3, "0.5", "NaN", 1e-7]),
        "bytesValue": st.sampled_from(["", "AAE=", "!!"]),
        "arrayValue": st.just({"values": [{"intValue": 1}]}),
        "kvlistValue": st.just({"values": [{"key": "k", "value": {"boolValue": True}}]}),
    }[key]
    return {key: draw(st.sampled_from(_JSON_ODD) if not clean and draw(st.integers(0, 5)) == 0 else good)}


@st.composite
def _json_span_messages(draw) -> bytes:
    """An OTLP/JSON span request drawn at the JSON level: every field the row reads in either
    spelling (or both), with good values, values at the edges and values of the wrong type."""
    clean = draw(st.booleans())  # half the messages: good values in one spelling (mostly the extension's)

    def field(camel: str, snake: str, good, odd=()):
        spelling = draw(
            st.sampled_from(["camel", "camel", "snake"] if clean else ["camel", "camel", "snake", "both", "none"])
        )
        bad = not clean and draw(st.integers(0, 6)) == 0
        pick = (lambda: draw(st.sampled_from([*odd, *_JSON_ODD]))) if bad else (lambda: draw(good))
        if spelling == "none":
            return {}
        if spelling == "both":
            return {camel: pick(), snake: pick()}
        return {camel if spelling == "camel" else snake: pick()}

    ids = st.sampled_from(["0102030405060708090a0b0c0d0e0f10", "0102030405060708090A0B0C0D0E0F10"])
    times = st.sampled_from(["1765000000123456789", 1765000000123456789, "1", 1])
    spans = []
    for _ in range(draw(st.integers(0, 3))):
        sp: dict = {}
        sp |= field(
            "traceId",
            "trace_id",
            ids,
            ["00000000000000000000000000000000", "0102", "01 02030405060708090a0b0c0d0e0f10"],
        )
        sp |= field(
            "spanId",
            "span_id",
            st.sampled_from(["1112131415161718", "aabbccddeeff0011"]),
            ["111213141516171", "0000000000000000"],
        )
        sp |= field(
            "parentSpanId", "parent_span_id", st.sampled_from(["", "2122232425262728", "0000000000000000"]), ["21"]
        )
        sp |= field(
            "startTimeUnixNano",
            "start_time_unix_nano",
            times,
            ["+1", "-1", 1.7e18, "18446744073709551615", "18446744073709551616"],
        )
        sp |= field("endTimeUnixNano", "end_time_unix_nano", times, ["0", 0])
        sp |= field("traceState", "trace_state", st.sampled_from(["", "k=v"]))
        sp |= field("name", "name", st.sampled_from(["", "GET /a", "é"]))
        sp |= field(
            "kind",
            "kind",
            st.sampled_from([0, 1, 2, 5, "SPAN_KIND_SERVER", "SPAN_KIND_CONSUMER"]),
            [6, -1, "2", "SPAN_KIND_X"],
        )
        sp |= field("flags", "flags", st.sampled_from([0, 1, 257, 2**32 - 1]), [2**32, "1"])
        if draw(st.booleans()):
            good_status = [{}, {"code": 2, "message": "boom"}, {"code": "STATUS_CODE_OK"}]
            sp["status"] = draw(
                st.sampled_from(good_status if clean else [*good_status, {"code": 3}, {"message": 5}, None, []])
            )
        if draw(st.booleans()):
            sp["attributes"] = [
                {"key": k, "value": draw(_json_any_value(clean))}
                for k in draw(st.lists(st.sampled_from(["a", "b", "service.name", ""]), max_size=3, unique=clean))
            ]
        if draw(st.booleans()):
            sp["events"] = [{"name": "e", "x": None}]
        spans.append(sp)
    resource = {
        "attributes": [
            {"key": k, "value": draw(_json_any_value(clean))}
            for k in draw(st.lists(st.sampled_from(["service.name", "host.name", "a"]), max_size=3, unique=clean))
        ]
    }
    return json.dumps({"resourceSpans": [{"resource": resource, "scopeSpans": [{"spans": spans}]}]}).encode()


def test_hypothesis_otlp_json_spans():
    """Hypothesis over the OTLP/JSON span decoder at the JSON level (bounded and derandomized
    in CI; OBSFLOW_FUZZ=long for more): both spellings, enum names and numbers, integers as
    strings, numbers, floats and signed strings, ids with upper case, spaces, wrong lengths,
    attribute values of every kind and wrong types, nulls: the reference's rows, dead letters
    and item bytes for every drawn message."""

    @settings(
        max_examples=100 if os.environ.get("OBSFLOW_FUZZ") != "long" else 3000,
        deadline=None,
        database=None,
        derandomize=os.environ.get("OBSFLOW_FUZZ") != "long",
        suppress_health_check=list(HealthCheck),
    )
    @given(st.lists(_json_span_messages(), min_size=1, max_size=6))
    def run(values):
        assert_otlp_parity(values, "span", encoding="otlp_json")

    run()
