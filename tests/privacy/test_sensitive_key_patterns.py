"""Sensitive-key patterns in dead letters match keys as they do in maps: RE2, searched in
the key, case-insensitive. A pattern anchored on the key (``^code$``) redacts the value
under that key in JSON text, OTLP JSON and framed binary (Avro) dead letters, on both hot
paths; the gate over the whole text never skips a text holding such a key (properties
over random patterns and payloads)."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines.spec import PrivacySpec, ScrubStep
from schemas.codecs import encode_confluent
from transforms.scrub import Scrubber, sensitive_key_regex, without_assertions

KEY = "unit-test-key-0123456789"
SECRET = "zq7hiddenvalue"
MAP = pa.map_(pa.string(), pa.string())


def scrubber(hotpath: str, patterns: list[str] | None = None) -> Scrubber:
    step = ScrubStep(kind="scrub") if patterns is None else ScrubStep(kind="scrub", sensitive_keys=patterns)
    return Scrubber("log", step, PrivacySpec(pseudonym_key=KEY), hotpath=hotpath)


def log_row(attributes: dict[str, str]) -> dict:
    return {
        "timestamp": 1,
        "level": "INFO",
        "service": "svc",
        "message": "m",
        "trace_id": None,
        "span_id": None,
        "request_id": None,
        "user_id": None,
        "host": None,
        "env": None,
        "attributes": attributes,
    }


def payloads(key: str, value: str) -> list[bytes]:
    """A malformed JSON record, malformed OTLP JSON attributes and an Avro log, each with
    ``key: value``."""
    return [
        b'{"' + key.encode() + b'": "' + value.encode() + b'", "n": ',  # cut short: not JSON
        json.dumps({"attributes": [{"key": key, "value": {"stringValue": value}}]})[:-1].encode(),
        encode_confluent("log", log_row({key: value, "other": "kept"})),
    ]


@pytest.mark.parametrize("hotpath", ["python", "native"])
@pytest.mark.parametrize("pattern", ["^code$", r"\Acode\z", r"\bcode\b", "^(?:code|pin)$", "^CODE$"])
def test_anchored_custom_pattern_redacts_dead_letters(hotpath, pattern):
    s = scrubber(hotpath, [pattern])
    out, is_text = s.scrub_raw(payloads("code", SECRET))
    assert is_text == [True, True, False]
    assert [SECRET.encode() in o for o in out] == [False, False, False]
    assert out[0] == b'{"code": "[REDACTED]", "n": '
    assert out[1] == b'{"attributes": [{"key": "code", "value": {"stringValue": "[REDACTED]"}}]'
    assert b"*" * len(SECRET) in out[2] and b"kept" in out[2]
    # a key the pattern does not match keeps its value
    kept, _ = s.scrub_raw(payloads("codec", SECRET))
    assert [SECRET.encode() in o for o in kept] == [True, True, True]


@pytest.mark.parametrize("hotpath", ["python", "native"])
def test_anchored_custom_pattern_redacts_map_values(hotpath):
    s = scrubber(hotpath, ["^code$"])
    col = pa.array([[("code", SECRET), ("codec", "v"), ("CODE", SECRET)]], MAP)
    assert s.scrub_map(col).to_pylist() == [[("code", "[REDACTED]"), ("codec", "v"), ("CODE", "[REDACTED]")]]


@pytest.mark.parametrize("hotpath", ["python", "native"])
@pytest.mark.parametrize("value", [SECRET, "x" * 23, "y" * 24, "w" * 40])
def test_default_token_pattern_in_framed_binary(hotpath, value):
    """The default ``token`` pattern (a word of the key) masks a ``token`` or
    ``x-auth-token`` value in an Avro map and an OTLP protobuf ``KeyValue`` whatever its
    length byte. Before, the pattern was searched in the printable run from the key on,
    where ``^`` never holds (``token`` leaked) and ``[^a-z]`` could take a printable length
    byte after the key (``x-auth-token`` leaked with a value of 23 or 24 bytes in Avro)."""
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
    from opentelemetry.proto.trace.v1.trace_pb2 import Span

    s = scrubber(hotpath)
    for key in ("token", "x-auth-token"):
        avro = encode_confluent("log", log_row({key: value, "other": "kept"}))
        attributes = [KeyValue(key=key, value=AnyValue(string_value=value))]
        otlp = Span(trace_id=b"\x01" * 16, span_id=b"\x02" * 8, name="n", attributes=attributes).SerializeToString()
        out, is_text = s.scrub_raw([avro, otlp])
        assert is_text == [False, False]
        assert [value.encode() in o for o in out] == [False, False], key
        assert [len(o) for o in out] == [len(avro), len(otlp)]
        assert out[0] == avro.replace(value.encode(), b"*" * len(value)), key
        assert out[1] == otlp.replace(value.encode(), b"*" * len(value)), key


@pytest.mark.parametrize("hotpath", ["python", "native"])
def test_escaped_json_keys_are_judged_decoded(hotpath):
    """A JSON key written with escapes (``pass\\u0077ord``) is the key a decoder reads:
    its value is redacted; an invalid escape or a lone surrogate leaves the key as written."""
    s = scrubber(hotpath)
    raw = (
        rb'{"pass\u0077ord": "zq1vvvvvvvv", "Authori\u007Aation": "zq2vvvvvvvv", '
        rb'"to\ken": "zq3vvvvvvvv", "\ud800secret": "zq4vvvvvvvv", "n\u0061me": "zq5vvvvvvvv", "n": '
    )
    out, _ = s.scrub_raw([raw])
    assert out[0] == (
        rb'{"pass\u0077ord": "[REDACTED]", "Authori\u007Aation": "[REDACTED]", '
        rb'"to\ken": "zq3vvvvvvvv", "\ud800secret": "[REDACTED]", "n\u0061me": "zq5vvvvvvvv", "n": '
    )


@pytest.mark.parametrize("hotpath", ["python", "native"])
def test_numbers_under_sensitive_keys_are_redacted(hotpath):
    """A number under a sensitive key (``"pin": 4321``, OTLP JSON's ``intValue`` and
    ``doubleValue``) is a value too; other numbers are kept."""
    s = scrubber(hotpath, ["^pin$"])
    raw = (
        b'{"pin": 4321, "n": -5, "attributes": [{"key": "pin", "value": {"intValue": "9876"}}, '
        b'{"key": "PIN", "value": {"doubleValue": -12.5e3}}, {"key": "pins", "value": {"intValue": "77"}}], "x": '
    )
    out, _ = s.scrub_raw([raw])
    assert out[0] == (
        b'{"pin": "[REDACTED]", "n": -5, "attributes": [{"key": "pin", "value": {"intValue": "[REDACTED]"}}, '
        b'{"key": "PIN", "value": {"doubleValue": "[REDACTED]"}}, {"key": "pins", "value": {"intValue": "77"}}], "x": '
    )


@pytest.mark.parametrize(
    "pattern,expected",
    [
        ("^token$", "(?:)token(?:)"),
        (r"\btok\Bx\Ay\z", "(?:)tok(?:)x(?:)y(?:)"),
        ("(?:^|[^a-z])token(?:$|[^a-z])", "(?:(?:)|[^a-z])token(?:(?:)|[^a-z])"),
        (r"[^]^$]\^\$[[:alpha:]^]", r"[^]^$]\^\$[[:alpha:]^]"),
        (r"\Q^a$\E$", r"\Q^a$\E(?:)"),
    ],
)
def test_without_assertions(pattern, expected):
    assert without_assertions(pattern) == expected


# -- properties ---------------------------------------------------------------------------

_ATOMS = st.sampled_from(["a", "b", "c", "-", "_", ".", "ab", "bc", "[ab]", "[^a]", "[^a-z]", "a*", "b?", ".?"])
_ASSERTIONS = st.sampled_from(["", "^", "$", r"\b", r"\B", r"\A", r"\z"])


@st.composite
def patterns(draw) -> str:
    parts = []
    for _ in range(draw(st.integers(1, 4))):
        parts.append(draw(_ASSERTIONS) + draw(_ATOMS))
    body = "".join(parts) + draw(_ASSERTIONS)
    if draw(st.booleans()):
        body = f"(?:{body}|{draw(_ASSERTIONS)}{draw(_ATOMS)}{draw(_ASSERTIONS)})"
    return body


def escaped(key: str) -> str:
    """``key`` as JSON text with every character written as a ``\\u`` escape."""
    return "".join("\\u" + format(ord(c), "04x") for c in key)


#: the keys of the OTLP JSON wrapping of :func:`payloads`' attributes
WRAPPING = ["attributes", "key", "value", "stringValue"]
KEYS = st.text(alphabet="abcABC-_.", min_size=1, max_size=8)


def sensitive(pattern_list: list[str], keys: list[str]) -> list[bool]:
    arr = pa.array(keys, pa.string())
    return pc.match_substring_regex(arr, sensitive_key_regex(pattern_list)).to_pylist()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    pattern_list=st.lists(patterns(), min_size=1, max_size=3),
    keys=st.lists(KEYS, min_size=1, max_size=6, unique=True),
    cut=st.booleans(),
    escape=st.booleans(),
    hotpath=st.sampled_from(["python", "native"]),
)
def test_no_dead_letter_keeps_a_sensitive_value(pattern_list, keys, cut, escape, hotpath):
    """For random patterns and keys: every value under a key a pattern matches (as
    ``scrub_map`` decides) is gone from the stored JSON, OTLP JSON and Avro dead letter,
    and, in JSON, every other value is kept exactly."""
    s = scrubber(hotpath, pattern_list)
    values = [f"zq{i}vvvvvvvv" for i in range(len(keys))]  # no placeholder pattern matches these
    hide = sensitive(pattern_list, keys)
    assert s.scrub_map(pa.array([list(zip(keys, values))], MAP)).to_pylist() == [
        [(k, "[REDACTED]" if h else v) for k, v, h in zip(keys, values, hide)]
    ]
    text = json.dumps(dict(zip(keys, values)))
    if escape:  # every key letter written as a \\u escape: the key a decoder reads is the same
        text = "{" + ", ".join(f'"{escaped(k)}": "{v}"' for k, v in zip(keys, values)) + "}"
    otlp = json.dumps({"attributes": [{"key": k, "value": {"stringValue": v}} for k, v in zip(keys, values)]})
    avro = encode_confluent("log", log_row(dict(zip(keys, values))))
    raw = [(text[:-1] if cut else text).encode(), otlp.encode(), avro]
    out, _ = s.scrub_raw(raw)
    for v, h in zip(values, hide):
        if h:
            assert [v.encode() in o for o in out] == [False, False, False], (v, out)
    if not cut:
        assert json.loads(out[0]) == {k: "[REDACTED]" if h else v for k, v, h in zip(keys, values, hide)}
    wrapping = dict(zip(WRAPPING, sensitive(pattern_list, WRAPPING)))
    if wrapping["attributes"]:  # the whole list is the value of a sensitive key
        assert json.loads(out[1]) == {"attributes": "[REDACTED]"}
    elif not any(wrapping.values()):  # else the OTLP wrapping's keys are sensitive too
        got = [a["value"]["stringValue"] for a in json.loads(out[1])["attributes"]]
        assert got == ["[REDACTED]" if h else v for v, h in zip(values, hide)]


@settings(max_examples=300, deadline=None)
@given(pattern=patterns(), key=KEYS, before=st.text(max_size=6), after=st.text(max_size=6))
def test_gate_is_a_superset_of_the_key_verdict(pattern, key, before, after):
    """A text holding a key a pattern matches is matched by the pattern without assertions."""
    if sensitive([pattern], [key]) == [True]:
        text = pa.array([before + key + after], pa.string())
        assert pc.match_substring_regex(text, sensitive_key_regex([without_assertions(pattern)])).to_pylist() == [True]


@pytest.mark.parametrize("hotpath", ["python", "native"])
def test_stored_dead_letter_hides_a_value_under_an_anchored_key(tmp_path, monkeypatch, hotpath):
    """Through the pipeline: a flow whose scrub step has ``sensitive_keys: ["^code$"]``
    stores a malformed record holding ``"code": "…"`` in ``obs.dead_letters`` with the
    value redacted (and the record's other text kept)."""
    from core.stats import RunStats
    from pipelines.graph import PipelineGraph, write_plan
    from pipelines.loader import parse_spec
    from sinks.catalog import open_catalog
    from sinks.iceberg import IcebergSink
    from transforms.batch import RawBatch

    monkeypatch.setenv("OBSFLOW_HOTPATH", hotpath)
    spec = parse_spec(
        {
            "name": "v",
            "storage": {"catalog": {"warehouse": str(tmp_path / "wh")}},
            "privacy": {"pseudonym_key": KEY},
            "sources": [{"name": "events", "topic": "events", "signal": "event"}],
            "flows": [
                {
                    "name": "p",
                    "source": "events",
                    "sink": {"table": "events"},
                    "steps": [{"kind": "validate"}, {"kind": "scrub", "sensitive_keys": ["^code$"]}],
                }
            ],
        }
    )
    graph = PipelineGraph(spec, counters=RunStats())
    sink = IcebergSink(spec, graph.table_names, plan=write_plan(spec), counters=RunStats())
    raw = b'{"event_type": "page_view", "code": "' + SECRET.encode() + b'", "page": "/a"'  # cut short
    sink.write(graph.process(RawBatch("events", "events", 0, [raw], [0], [1_763_000_000_000])))
    sink.close()
    rows = open_catalog(spec.storage).load_table("obs.dead_letters").scan().to_arrow().to_pylist()
    assert [(r["reason"], r["raw_text"], r["raw"]) for r in rows] == [
        ("format_violation", True, b'{"event_type": "page_view", "code": "[REDACTED]", "page": "/a"')
    ]
