"""Parity of the compiled Avro decoder (``native/src/avro.rs``, behind
:class:`schemas.codecs.native_avro.NativeAvroCodec`) with the Python reference
(:class:`schemas.codecs.avro_codec.AvroCodec`, fastavro): over the generator's traffic as
the Avro producers write it, the fuzz corpus's Avro mutants and crafted bodies, both give
identical rows (values, types, order, ``_i``) and identical dead letters (record, reason,
detail); the extension itself reads every good record (and exactly the crafted records it
should). Also: which decoder the ``avro`` codec picks."""

from __future__ import annotations

import os
import random
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.codecs import AvroCodec, NativeAvroCodec, codec_for, encode_confluent, native_avro
from schemas.codecs.avro_codec import schema_id_for
from sources.generator import partition_stream
from tests.fuzz.corpus import corpus_batches, SIGNALS, _wire_rows, mutate
from transforms.batch import INDEX, RawBatch

pytestmark = [
    pytest.mark.native,
    pytest.mark.skipif(
        not native_avro.native_avro_available(), reason="obsflow_native without decode_avro (make install)"
    ),
]

START_MS = 1_763_000_000_000


def _raw(values: list) -> RawBatch:
    return RawBatch("src", "topic", 0, list(values), list(range(100, 100 + len(values))), [0] * len(values))


def _rejects(batch) -> list[tuple]:
    r = batch.rejects
    return sorted(zip(r.indices, r.reasons, r.details))


def _native_verdicts(codec: NativeAvroCodec, values: list) -> list[int]:
    """The extension's own verdicts (1: read there, 0: deferred to the reference)."""
    assert codec.columns is not None
    verdicts, _cols = native_avro._native.decode_avro(values, codec.max_bytes, codec.columns, list(codec.plans.items()))
    return np.frombuffer(verdicts, np.uint8).tolist()


def _marked(v):
    """A column's Python value with every float NaN replaced by a marker, at any depth
    (lists, map entries, struct fields), so that NaN equals NaN."""
    if isinstance(v, float) and v != v:
        return "NaN"
    if isinstance(v, (list, tuple)):
        return [_marked(x) for x in v]
    if isinstance(v, dict):
        return {k: _marked(x) for k, x in v.items()}
    return v


def _same_column(a, b) -> bool:
    """Identical columns: Arrow's ``equals``, or the same type and values with NaN at the
    same places."""
    return a.equals(b) or (a.type == b.type and _marked(a.to_pylist()) == _marked(b.to_pylist()))


def assert_parity(signal: str, values: list, max_bytes: int = 65536) -> tuple[int, int]:
    """Decode ``values`` with both decoders; assert identical rows and rejects; return
    (rows, rejects)."""
    raw = _raw(values)
    ref = AvroCodec(signal, max_bytes=max_bytes).decode(raw)
    nat = NativeAvroCodec(signal, max_bytes=max_bytes).decode(raw)
    want = ref.table.take(np.argsort(ref.table.column(INDEX).to_numpy(), kind="stable"))
    assert nat.table.schema.equals(want.schema), (nat.table.schema, want.schema)
    assert nat.table.column(INDEX).to_pylist() == want.column(INDEX).to_pylist()
    for name in want.column_names:
        assert _same_column(nat.table.column(name), want.column(name)), name
    assert _rejects(nat) == _rejects(ref)
    return want.num_rows, len(ref.rejects)


def _producer_traffic(signal: str, n: int, seed: int = 11) -> list[bytes]:
    """The generator's good records as the Avro producers write them (encode_confluent)."""
    gen = [g.value for g in partition_stream(signal, "t", 0, n, seed=seed, start_ms=START_MS, bad_fraction=0.0)]
    return [encode_confluent(signal, r) for r in _wire_rows(signal, gen)]


@pytest.mark.parametrize("signal", SIGNALS)
def test_generator_traffic(signal):
    """The generator's records in Avro, 5% of them mutated: identical results, and every
    unmutated record is read by the extension itself."""
    good = _producer_traffic(signal, 2000)
    rng = random.Random(f"avro-traffic/{signal}")
    values, mutated = [], []
    for k, v in enumerate(good):
        if rng.random() < 0.05:
            values.append(mutate(v, good[(k + 1) % len(good)], signal, "avro", rng))
            mutated.append(k)
        else:
            values.append(v)
    rows, bad = assert_parity(signal, values)
    assert rows + bad == len(values) and bad > 20
    verdicts = _native_verdicts(NativeAvroCodec(signal), values)
    assert all(verdicts[k] == 1 for k in range(len(values)) if k not in set(mutated))
    assert _native_verdicts(NativeAvroCodec(signal), good) == [1] * len(good)


@pytest.mark.parametrize("signal", SIGNALS)
def test_fuzz_corpus(signal):
    """The fuzz suite's Avro seeds and mutants (truncations, bit flips, splices, inserted
    bytes, wrong magic bytes, other schema ids, cut headers, trailing bytes, huge varints),
    mixed with good records in batches of every size, one to 200."""
    total_bad = sum(
        assert_parity(signal, batch)[1] for batch in corpus_batches(signal, "avro", f"native-avro-parity/{signal}")
    )
    assert total_bad > 50  # the corpus really was mean


def _zz(v: int) -> bytes:
    """A zig-zag varint."""
    n = (v << 1) ^ (v >> 63)
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        if not n:
            out.append(b)
            return bytes(out)
        out.append(b | 0x80)


def _s(text: str | bytes) -> bytes:
    b = text.encode() if isinstance(text, str) else text
    return _zz(len(b)) + b


def _log(
    *,
    ts: bytes = _zz(1_763_000_000_000),
    level: bytes = _s("INFO"),
    service: bytes = _s("api"),
    message: bytes = _s("hello"),
    attributes: bytes = b"\x00",
    sid: int = 2,
) -> bytes:
    """A log_record body, field by field (the optional strings null unless given)."""
    nulls = b"\x00" * 6  # trace_id, span_id, request_id, user_id, host, env
    return b"\x00" + struct.pack(">I", sid) + ts + level + service + message + nulls + attributes


def test_crafted_log_bodies():
    """Bodies the extension reads (first list) and bodies it leaves to the reference
    (second), each with the reference's row or dead letter."""
    read_here = [
        _log(),
        _log(ts=_zz(2**63 - 1)),  # any long is a timestamp to Arrow
        _log(ts=_zz(-(2**63))),
        _log(ts=b"\x80\x00"),  # a non-canonical varint: zero, as fastavro reads it
        _log(message=_s("\x00 é 😀")),
        _log(attributes=b"\x02" + _zz(2) + _s("a") + _s("1") + _s("b") + _s("") + b"\x00"),
        _log(attributes=b"\x02" + _zz(1) + _s("a") + _s("1") + _zz(1) + _s("b") + _s("2") + b"\x00"),  # two blocks
        _log(attributes=b"\x02\x00"),  # an empty map, not null
    ]
    deferred = [
        _log(sid=77),  # unknown schema id: schema_violation
        _log(sid=1),  # another schema's id: schema_violation
        b"\x01" + _log()[1:],  # wrong magic byte
        _log()[:4],  # cut header
        _log() + b"\x00",  # a trailing byte
        _log()[:-1],  # truncated
        _log(message=_zz(40) + b"hello"),  # a length past the end: fastavro reads it short
        _log(message=_zz(-1) + b"hello"),  # a negative length: fastavro reads to the end
        _log(message=_s(b"\xff\xfe")),  # invalid UTF-8
        _log(message=_s(b"\xed\xa0\x80")),  # a surrogate
        _log(ts=b"\xff" * 10 + b"\x01"),  # eleven varint bytes
        _log(ts=b"\xff" * 9 + b"\x7f"),  # a tenth byte beyond bit 63
        _log(attributes=_zz(2) + b"\x00"),  # union branch 2
        _log(attributes=_zz(-1) + b"\x00"),  # union branch -1 (fastavro picks the last one)
        _log(attributes=b"\x02" + _zz(2) + _s("a") + _s("1") + _s("a") + _s("2") + b"\x00"),  # a key twice
        _log(attributes=b"\x02" + _zz(-1) + _zz(4) + _s("a") + _s("1") + b"\x00"),  # a sized (negative) block
        _log(attributes=b"\x02" + _zz(1000) + _s("a") + _s("1") + b"\x00"),  # a count past the end
        None,
        b"",
    ]
    values = read_here + deferred
    rows, bad = assert_parity("log", values)
    # the reference makes rows of five deferred bodies, its own way: both long varints (it
    # wraps them), branch -1, the key given twice (the last value) and the sized block
    assert (rows, bad) == (len(read_here) + 5, len(deferred) - 5)
    assert _native_verdicts(NativeAvroCodec("log"), values) == [1] * len(read_here) + [0] * len(deferred)


def _event(step: bytes, kind: int = 0) -> bytes:
    """A product event with one interaction whose ``type`` and ``step`` are given."""
    head = b"".join(_s(x) for x in ("e1",)) + _zz(1_763_000_000_000) + _s("/") + _s("s1") + b"\x00" * 5
    interaction = _s("form_step") + b"\x00" * 3 + step + b"\x00" * 3
    return b"\x00" + struct.pack(">I", 1) + head + _zz(1) + interaction + b"\x00"


def test_crafted_event_and_span_bodies():
    """An ``int`` beyond 32 bits is the reference's schema_violation; enum indices outside
    the symbols are its to read (fastavro takes -1 as the last symbol)."""
    values = [_event(b"\x02" + _zz(2**31 - 1)), _event(b"\x02" + _zz(-(2**31))), _event(b"\x02" + _zz(2**31))]
    assert assert_parity("event", values) == (2, 1)
    assert _native_verdicts(NativeAvroCodec("event"), values) == [1, 1, 0]
    one = _wire_rows("span", [g.value for g in partition_stream("span", "t", 0, 1, start_ms=START_MS)])[0]
    span = encode_confluent("span", one)
    spans = [encode_confluent("span", dict(one, kind=kind)) for kind in ("UNSPECIFIED", "CONSUMER")]
    # the two encodings differ in the kind's index byte only: set it to 6 (past the end) and -1
    at = next(k for k in range(len(spans[0])) if spans[0][k] != spans[1][k])
    bad = [spans[0][:at] + _zz(i) + spans[0][at + 1 :] for i in (6, -1)]
    values = [span, *spans, *bad]
    assert assert_parity("span", values) == (4, 1)
    assert _native_verdicts(NativeAvroCodec("span"), values) == [1, 1, 1, 0, 0]


def test_metric_samples_written_with_the_v1_schema():
    """Records written with ``metric_sample`` (id 4) resolve against the v2 wire schema:
    the extension reads them too, temporality and start time null."""
    rows = _wire_rows("metric", [g.value for g in partition_stream("metric", "t", 0, 200, start_ms=START_MS)])
    v1 = [
        encode_confluent("metric_sample", {k: v for k, v in r.items() if k not in ("temporality", "start_time")})
        for r in rows
    ]
    assert v1[0][1:5] == struct.pack(">I", schema_id_for("metric_sample"))
    values = v1 + [encode_confluent("metric", r) for r in rows]
    assert assert_parity("metric", values) == (400, 0)
    codec = NativeAvroCodec("metric")
    assert set(codec.plans) == {4, 7}
    assert _native_verdicts(codec, values) == [1] * 400
    table = codec.decode(_raw(v1)).table
    assert table.column("temporality").null_count == table.column("start_time").null_count == 200


def test_every_local_schema_id_is_planned_or_left_to_the_reference():
    """Which local schema ids the extension reads for each signal: its own wire schema's
    (and, for metrics, v1's); every other id is the reference's (a schema_violation)."""
    expected = {"event": {1}, "log": {2}, "span": {3}, "metric": {4, 7}}
    for signal, ids in expected.items():
        assert set(NativeAvroCodec(signal).plans) == ids, signal


def test_codec_choice(monkeypatch):
    """``avro`` is the compiled decoder by default; option ``decoder`` or
    ``$OBSFLOW_DECODER`` picks the reference."""
    monkeypatch.delenv("OBSFLOW_DECODER", raising=False)
    assert isinstance(codec_for("avro", "event", 100), NativeAvroCodec)
    assert type(codec_for("avro", "event", 100, {"decoder": "python"})) is AvroCodec
    monkeypatch.setenv("OBSFLOW_DECODER", "python")
    assert type(codec_for("avro", "event", 100)) is AvroCodec
    assert isinstance(codec_for("avro", "event", 100, {"decoder": "native"}), NativeAvroCodec)
    with pytest.raises(ValueError, match="decoder: expected one of native, python, got 'rust'"):
        codec_for("avro", "event", 100, {"decoder": "rust"})
    monkeypatch.setattr(native_avro, "_native", None)
    assert type(codec_for("avro", "event", 100, {"decoder": "native"})) is AvroCodec


_LONG = st.integers(-(2**63), 2**63 - 1)
_TEXT = st.text(max_size=12)


@st.composite
def _log_rows(draw) -> dict:
    opt = st.none() | _TEXT
    return {
        "timestamp": draw(_LONG),
        "level": draw(_TEXT),
        "service": draw(_TEXT),
        "message": draw(_TEXT),
        **{k: draw(opt) for k in ("trace_id", "span_id", "request_id", "user_id", "host", "env")},
        "attributes": draw(st.none() | st.dictionaries(_TEXT, _TEXT, max_size=4)),
    }


@st.composite
def _event_rows(draw) -> dict:
    opt = st.none() | _TEXT
    interaction = st.fixed_dictionaries(
        {
            "type": _TEXT,
            "target": opt,
            "depth": st.none() | st.floats(allow_nan=True),
            "form": opt,
            "step": st.none() | st.integers(-(2**31), 2**31 - 1),  # the writer refuses more
            "duration_ms": st.none() | _LONG,
            "message": opt,
            "stackTrace": opt,
        }
    )
    return {
        "event_id": draw(_TEXT),
        "timestamp": draw(_LONG),
        "page": draw(_TEXT),
        "session_id": draw(_TEXT),
        **{k: draw(opt) for k in ("user", "location", "platform", "user_agent", "client_ip")},
        "events": draw(st.lists(interaction, max_size=3)),
    }


@st.composite
def _avro_records(draw, signal: str) -> bytes:
    """A drawn row in Avro, sometimes with bytes changed, inserted or cut at a drawn place."""
    value = encode_confluent(signal, draw(_log_rows() if signal == "log" else _event_rows()))
    edit = draw(st.integers(0, 4))
    if edit:
        at = draw(st.integers(0, len(value)))
        junk = draw(st.binary(min_size=1, max_size=4))
        value = [value[:at] + junk + value[at:], value[:at], value[:at] + junk + value[at + len(junk) :], value][
            edit - 1
        ]
    return value


@pytest.mark.parametrize("signal", ["event", "log"])
def test_hypothesis_records(signal):
    """Hypothesis over the extension (bounded and derandomized unless OBSFLOW_FUZZ=long):
    drawn rows (any text, any long, ints up to the 32-bit bounds, NaN, empty and null maps)
    in Avro, some edited at the byte level, give the reference's rows and dead letters."""

    @settings(
        max_examples=80 if os.environ.get("OBSFLOW_FUZZ") != "long" else 3000,
        deadline=None,
        database=None,
        derandomize=os.environ.get("OBSFLOW_FUZZ") != "long",
        suppress_health_check=list(HealthCheck),
    )
    @given(st.lists(_avro_records(signal), min_size=1, max_size=10))
    def run(values):
        assert_parity(signal, values)

    run()
