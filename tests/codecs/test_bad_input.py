"""Issue 19 items 1, 4, 5, 6: JSON that used to crash the decoder (a segfault in
pyarrow.json, TypeError, RecursionError, msgspec.DecodeError) is now a dead letter of its
own record, with a reason and a detail, and its good neighbours decode unchanged."""

import json
import subprocess
import sys
import textwrap

import pytest

from schemas.codecs import codec_for
from transforms.batch import RawBatch

T = "2025-11-13T02:13:59.000Z"
GOOD = {
    "event": {
        "event_id": "e1",
        "timestamp": T,
        "page": "/p",
        "session_id": "s1",
        "events": [{"type": "click", "target": "#a"}],
    },
    "log": {"timestamp": T, "level": "INFO", "service": "checkout", "message": "ok", "attributes": {"k": "v"}},
    "span": {
        "trace_id": "0af7651916cd43dd8448eb211c80319c",
        "span_id": "b7ad6b7169203331",
        "service": "checkout",
        "name": "GET /",
        "kind": "SERVER",
        "start_time": T,
        "end_time": T,
        "status_code": "OK",
        "attributes": {"k": "v"},
        "resource": {"host.name": "h"},
    },
    "metric": {
        "name": "http.requests",
        "kind": "COUNTER",
        "timestamp": T,
        "labels": {"service": "checkout"},
        "value": 5.0,
    },
}
MAP_FIELD = {"log": "attributes", "span": "attributes", "metric": "labels"}


def enc(obj) -> bytes:
    return json.dumps(obj).encode()


def raw(values, source="src"):
    return RawBatch(source, source, 0, values, list(range(100, 100 + len(values))), [0] * len(values))


def decode(codec, values):
    b = codec.decode(raw(values))
    return b, {i: (r, d) for i, r, d in zip(b.rejects.indices, b.rejects.reasons, b.rejects.details)}


def with_field(signal: str, text: bytes) -> bytes:
    """The good record of ``signal`` with one more field whose JSON text is ``text``."""
    return enc(GOOD[signal])[:-1] + b', "x": ' + text + b"}"


def test_null_first_record_is_dead_lettered_not_a_segfault():
    """Item 1: pyarrow.json segfaults on a first line ``null``; run in a child process so
    a crash is reported as a failure, not the death of the test run."""
    code = textwrap.dedent("""
        from schemas.codecs import codec_for
        from transforms.batch import RawBatch
        for signal in ("event", "log", "span", "metric"):
            c = codec_for("json", signal, 65536)
            b = c.decode(RawBatch("s", "s", 0, [b"null", b'{"event_id":"e1"}'], [0, 1], [0, 0]))
            print(signal, b.rejects.indices, b.rejects.reasons, b.rejects.details, sorted(b.table.column("_i").to_pylist()))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr[-2000:]}"
    lines = proc.stdout.splitlines()
    assert lines == [
        f"{s} [0] ['schema_violation'] ['expected a JSON object, got null'] [1]"
        for s in ("event", "log", "span", "metric")
    ]


@pytest.mark.parametrize("signal", ["event", "log", "span", "metric"])
@pytest.mark.parametrize(
    "bad,reason,detail",
    [
        (b"null", "schema_violation", "expected a JSON object, got null"),
        (b"[1]", "schema_violation", "expected a JSON object, got array"),
        (b'"x"', "schema_violation", "expected a JSON object, got string"),
        (b"7", "schema_violation", "expected a JSON object, got number"),
        (b'{"a":1} {"b":2}', "format_violation", "invalid JSON: JSON is malformed: trailing characters"),
    ],
)
@pytest.mark.parametrize("where", [0, 1, 2])
def test_a_record_that_is_not_one_object_is_rejected_alone(signal, bad, reason, detail, where):
    good = enc(GOOD[signal])
    values = [good, good]
    values.insert(where, bad)
    b, rejected = decode(codec_for("json", signal, 65536), values)
    assert list(rejected) == [where]
    assert rejected[where][0] == reason and rejected[where][1].startswith(detail), rejected
    assert sorted(b.table.column("_i").to_pylist()) == [i for i in range(3) if i != where]


@pytest.mark.parametrize("signal", ["log", "span", "metric"])
@pytest.mark.parametrize("big", ["18446744073709551616", "-9223372036854775809", "1" + "0" * 40])
def test_integer_beyond_64_bits_in_a_map_field_rejects_its_record(signal, big):
    """Item 4: ``"attributes":{"n":18446744073709551616}`` (metric ``labels``) raised TypeError."""
    bad = dict(GOOD[signal])
    bad[MAP_FIELD[signal]] = {**bad[MAP_FIELD[signal]], "n": "BIG"}
    payload = enc(bad).replace(b'"BIG"', big.encode())
    nested = enc({**GOOD[signal], MAP_FIELD[signal]: {"n": {"deep": ["BIG"]}}}).replace(b'"BIG"', big.encode())
    good = enc(GOOD[signal])
    b, rejected = decode(codec_for("json", signal, 65536), [good, payload, good, nested])
    assert rejected == {
        1: ("schema_violation", f"{MAP_FIELD[signal]}.n: integer {big[:40]} beyond 64 bits"),
        3: ("schema_violation", f"{MAP_FIELD[signal]}.n: integer beyond 64 bits"),
    }
    assert sorted(b.table.column("_i").to_pylist()) == [0, 2]


DEEP_DETAIL = "JSON nested too deep (more than 255 levels)"


@pytest.mark.parametrize("signal", ["event", "log", "span", "metric"])
@pytest.mark.parametrize("depth", [300, 1100, 5000])
def test_deep_nesting_anywhere_rejects_its_record(signal, depth):
    """Item 5: nesting >= ~1000 raised RecursionError anywhere; 255-1023 in a typed field
    raised "TypeError: Recursion limit reached"."""
    good = enc(GOOD[signal])
    deep = b"[" * depth + b"]" * depth
    in_unknown = with_field(signal, deep)
    typed = {"event": "page", "log": "message", "span": "name", "metric": "name"}[signal]
    in_typed = enc({**GOOD[signal], typed: "DEEP"}).replace(b'"DEEP"', deep)
    codec = codec_for("json", signal, 65536)
    b, rejected = decode(codec, [good, in_typed, good, in_unknown, good])
    assert rejected.get(1, (None, ""))[0] == "format_violation" and rejected[1][1].endswith(DEEP_DETAIL), rejected
    if signal != "event" and depth >= 1000:  # map-typed signals read the whole record (msgspec bounds it near 1000)
        assert rejected[3][0] == "format_violation" and rejected[3][1].endswith(DEEP_DETAIL), rejected
    accepted = sorted(b.table.column("_i").to_pylist())
    assert accepted == sorted(set(range(5)) - set(rejected))
    assert {0, 2, 4} <= set(accepted)


@pytest.mark.parametrize("signal", ["event", "log", "span", "metric"])
@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity", b"Inf", b"-Inf"])
def test_nan_and_infinity_literals_reject_their_record_after_a_clean_batch(signal, literal):
    """Item 6: a NaN / Infinity literal raised msgspec.DecodeError from _add_maps."""
    codec = codec_for("json", signal, 65536)
    good = enc(GOOD[signal])
    b, rejected = decode(codec, [good, good])
    assert rejected == {} and b.table.num_rows == 2
    b, rejected = decode(codec, [good, with_field(signal, literal), good])
    assert list(rejected) == [1] and rejected[1][0] == "format_violation"
    assert rejected[1][1].startswith("invalid JSON: JSON is malformed: invalid character"), rejected
    assert sorted(b.table.column("_i").to_pylist()) == [0, 2]
    # the words themselves inside strings are fine
    b, rejected = decode(codec, [good, with_field(signal, b'"NaN Inf Infinity"')])
    assert rejected == {} and b.table.num_rows == 2


@pytest.mark.parametrize("signal", ["event", "log", "span", "metric"])
@pytest.mark.parametrize("where", [0, 1])
def test_byte_order_mark_rejects_its_record_after_a_clean_batch(signal, where):
    """Item 6: a UTF-8 BOM on the first record raised msgspec.DecodeError."""
    codec = codec_for("json", signal, 65536)
    good = enc(GOOD[signal])
    assert decode(codec, [good])[1] == {}
    values = [good, good]
    values[where] = b"\xef\xbb\xbf" + good
    b, rejected = decode(codec, values)
    bom = "payload starts with a UTF-8 byte order mark (not allowed in JSON, RFC 8259 section 8.1)"
    assert rejected == {where: ("format_violation", bom)}
    assert b.table.column("_i").to_pylist() == [1 - where]
    # U+FEFF inside a string value is text like any other
    b, rejected = decode(codec, [with_field(signal, '"a\ufeffb"'.encode())])
    assert rejected == {}


@pytest.mark.parametrize("signal", ["event", "log", "span", "metric"])
def test_reference_path_builds_what_pyarrow_json_builds(signal):
    """A conforming record that pyarrow.json refuses or reads into an invalid array
    (apache/arrow#51305) is built from its orjson parse instead: for the generator's good
    records that path gives exactly pyarrow.json's row."""
    from sources.generator import partition_stream

    codec = codec_for("json", signal, 65536)
    for k, g in enumerate(partition_stream(signal, signal, 0, 60, start_ms=1_763_000_000_000, bad_fraction=0.0)):
        ref = codec._from_python(g.value, k)
        assert ref.drop_columns(["_i"]).equals(codec._read([g.value])), g.value
        assert ref.column("_i").to_pylist() == [k]
