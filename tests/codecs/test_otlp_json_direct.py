"""Parity of the direct OTLP/JSON reader (native/src/otlp_json.rs: the bytes read straight
into the span, log and metric rows, no tree, no protobuf re-encoding) with the Python
reference (schemas/codecs/otlp_codec.py) on the shapes a one-pass reader can get wrong:
keys it skips (with their JSON still checked), escaped keys and values, truncations at
every few bytes, invalid UTF-8, nesting at and beyond the bound, duplicate keys inside
skipped objects, ids in base64 or with non-hex characters, NaN and Infinity as strings,
integers as strings with leading zeros, huge arrays. Every case: identical rows, dead
letters and item bytes to the reference, exact counts, and which messages the extension
reads itself (verdict 1) and which it leaves to the reference (0)."""

from __future__ import annotations

import copy
import json
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.codecs import native_json
from tests.codecs.test_native_parity import (
    _DELETE,
    _DP,
    _HP,
    _LOG_DOC,
    _LR,
    _METRIC_DOC,
    _SP,
    _SPAN_DOC,
    _edit,
    _json_verdicts,
    assert_otlp_parity,
)

pytestmark = [
    pytest.mark.native,
    pytest.mark.skipif(not native_json.native_available(), reason="obsflow_native not built (make install)"),
]

SPAN = json.dumps(_SPAN_DOC).encode()
LOG = json.dumps(_LOG_DOC).encode()
METRIC = json.dumps(_METRIC_DOC).encode()


def _check(values: list[bytes], signal: str, verdicts: bytes, rows_bad: tuple[int, int]) -> None:
    assert assert_otlp_parity(values, signal, encoding="otlp_json") == rows_bad
    assert _json_verdicts(values, signal) == verdicts


def _nested(depth: int) -> dict:
    v: dict = {"x": 1}
    for _ in range(depth):
        v = {"n": [v]}
    return v


def test_skipped_keys_escapes_and_nesting():
    """Keys the reader skips (events, links, scope, dropped counts, unknown keys at every
    level) are read past with their JSON checked; keys and values with escapes read as
    their text; nesting inside a skipped key within the bound is read, beyond it deferred."""
    native = [
        _edit(_SPAN_DOC, _SP + ("links",), [{"traceId": "zz", "attributes": [{"key": "k", "value": None}]}]),
        _edit(_SPAN_DOC, _SP + ("droppedAttributesCount",), "not a number"),
        _edit(_SPAN_DOC, _SP + ("events",), [{"name": "a", "attributes": [], "unknown": {"deep": [1, 2.5e300, None]}}]),
        _edit(_SPAN_DOC, ("resourceSpans", 0, "schemaUrl"), None),
        _edit(_SPAN_DOC, ("resourceSpans", 0, "resource", "droppedAttributesCount"), 3),
        _edit(_SPAN_DOC, ("x-extra",), {"a": [[[]]]}),
        _edit(_SPAN_DOC, _SP + ("status", "extra"), True),
        # escapes in keys and values: read as their text
        SPAN.replace(b'"traceId"', b'"trace\\u0049d"').replace(b'"GET /a"', b'"GET \\"/a\\" \\u00e9\\ud83d\\ude00"'),
        SPAN.replace(b'"stringValue": "api"', b'"stringValue": "a\\/p\\ni"'),
        SPAN.replace(b'"key": "n"', b'"key": "\\u006e2"'),
        # whitespace everywhere JSON allows it
        json.dumps(_SPAN_DOC, indent="\t").encode().replace(b":", b" \r\n:"),
        # deep nesting inside a skipped key, within the reader's bound (64 levels in all)
        _edit(_SPAN_DOC, _SP + ("events",), [_nested(25)]),
        # a key twice inside a skipped object: not read, so not judged
        SPAN.replace(b'"name": "lib"', b'"name": "lib", "name": "lib2"'),
    ]
    deferred = [
        _edit(_SPAN_DOC, _SP + ("events",), [_nested(40)]),  # beyond the nesting bound
        SPAN.replace(b'"name": "lib"', b'"name": "lib",'),  # a trailing comma in a skipped object
        SPAN.replace(b'"scope": {', b'"scope": {"a": tru, '),  # not JSON in a skipped object
        SPAN.replace(b'"scope": {', b'"scope": {"a": "\\ud800", '),  # a lone surrogate in a skipped value
        SPAN.replace(b'"scope": {', b'"scope": {"a": 1e400, '),  # a number beyond a double, skipped
        SPAN.replace(b'"scope": {', b'"scope": {"a": 0123, '),  # not a JSON number
        SPAN.replace(b'"name": "GET /a"', b'"name": "GET \x01"'),  # a control character
        SPAN.replace(b'"traceId"', b'"traceId": "0102030405060708090a0b0c0d0e0f10", "trace\\u0049d"'),  # twice, escaped
    ]
    # rows: the 13 read here, and the reference's own reads of the deep nesting and the
    # escaped key twice (its parser keeps the last); rejects: the 6 that are not JSON to orjson
    _check(native + deferred, "span", b"\x01" * len(native) + b"\x00" * len(deferred), (13 + 2, 6))


def test_ids_numbers_and_strings_at_the_edges():
    """Ids in base64 (the proto3 JSON form of bytes), with non-hex characters or of the
    wrong length; NaN, Infinity and out-of-range numbers; integers as strings with leading
    zeros or signs; invalid UTF-8 inside and outside strings; empty requests."""
    span_native = [
        _edit(_SPAN_DOC, _SP + ("endTimeUnixNano",), "18446744073709551615"),
        _edit(_SPAN_DOC, _SP + ("attributes", 0, "value"), {"intValue": "-9223372036854775808"}),
        _edit(_SPAN_DOC, _SP + ("attributes", 0, "value"), {"intValue": "007"}),
        _edit(_SPAN_DOC, _SP + ("attributes", 1, "value"), {"doubleValue": 1.7976931348623157e308}),
        _edit(_SPAN_DOC, _SP + ("attributes", 1, "value"), {"doubleValue": 5e-324}),
        _edit(_SPAN_DOC, _SP + ("spanId",), "AABBCCDDEEFF0011"),
    ]
    span_deferred = [
        _edit(_SPAN_DOC, _SP + ("startTimeUnixNano",), "0001765000000123456789"),  # 22 digits
        _edit(_SPAN_DOC, _SP + ("traceId",), "AQIDBAUGBwgJCgsMDQ4PEA=="),  # base64 of the same id
        _edit(_SPAN_DOC, _SP + ("spanId",), "ERITFBUWFxg="),
        _edit(_SPAN_DOC, _SP + ("spanId",), "111213141516171g"),
        _edit(_SPAN_DOC, _SP + ("traceId",), "0102030405060708090a0b0c0d0e0f1011"),
        _edit(_SPAN_DOC, _SP + ("attributes", 1, "value"), {"doubleValue": "NaN"}),
        _edit(_SPAN_DOC, _SP + ("attributes", 1, "value"), {"doubleValue": "Infinity"}),
        _edit(_SPAN_DOC, _SP + ("attributes", 1, "value"), {"doubleValue": "-Infinity"}),
        SPAN.replace(b'"doubleValue": 0.1', b'"doubleValue": 1e400'),
        _edit(_SPAN_DOC, _SP + ("attributes", 0, "value"), {"intValue": "9223372036854775808"}),
        _edit(_SPAN_DOC, _SP + ("attributes", 0, "value"), {"intValue": "1e3"}),
        _edit(_SPAN_DOC, _SP + ("attributes", 0, "value"), {"intValue": " 7"}),
        _edit(_SPAN_DOC, _SP + ("startTimeUnixNano",), "-1"),
        _edit(_SPAN_DOC, _SP + ("kind",), "SPAN_KIND_server"),
        SPAN.replace(b'"GET /a"', b'"GET \xff"'),  # invalid UTF-8 in a string
        SPAN.replace(b'"GET /a"', b'"GET \xed\xa0\x80"'),  # a surrogate encoded in UTF-8
        SPAN.replace(b'"GET /a"', b'"GET \xc0\xaf"'),  # an overlong encoding
        SPAN + b"\xff",
        b"{}",
        b'{"resourceSpans": [{}]}',
        b'{"resourceSpans": [{"scopeSpans": [{}]}]}',
        b'{"resourceSpans": [{"scopeSpans": [{"spans": []}]}]}',
        b"null",
        b'"x"',
    ]
    # rows: 6 read here; the reference reads the 22-digit time and NaN, Infinity, -Infinity as
    # strings (4); it rejects the other 20 (ids, 1e400, integers, kind, UTF-8, 6 whole messages)
    _check(span_native + span_deferred, "span", b"\x01" * len(span_native) + b"\x00" * len(span_deferred), (10, 20))

    log_native = [
        _edit(_LOG_DOC, _LR + ("severityNumber",), "SEVERITY_NUMBER_FATAL4"),
        _edit(_LOG_DOC, _LR + ("severityNumber",), 2147483647),
        _edit(_LOG_DOC, _LR + ("traceId",), "", more=((_LR + ("spanId",), "0000000000000000"),)),
        _edit(_LOG_DOC, _LR + ("body",), {"stringValue": "tab\there \u00e9"}),
        _edit(_LOG_DOC, _LR + ("severityText",), "  warn  ", more=((_LR + ("severityNumber",), 0),)),
        _edit(_LOG_DOC, _LR + ("observedTimeUnixNano",), 12, more=((_LR + ("timeUnixNano",), "0"),)),
        _edit(_LOG_DOC, _LR + ("severityText",), "\u00e9"),  # the level is the number's
    ]
    log_deferred = [
        _edit(_LOG_DOC, _LR + ("severityNumber",), "17"),
        _edit(_LOG_DOC, _LR + ("severityNumber",), 2147483648),
        _edit(_LOG_DOC, _LR + ("spanId",), "ERITFBUWFxg="),
        _edit(_LOG_DOC, _LR + ("body",), {"arrayValue": {"values": [{"kvlistValue": {"values": []}}]}}),
        _edit(_LOG_DOC, _LR + ("body",), {"bytesValue": "AAE="}),
        _edit(_LOG_DOC, _LR + ("body",), {"stringValue": "a", "stringValue ": "b"}),
        _edit(_LOG_DOC, _LR + ("timeUnixNano",), 1.5),
    ]
    # rows: 7 read here, 4 read by the reference ("17", the array, bytes, the two keys); 3 rejects
    _check(log_native + log_deferred, "log", b"\x01" * len(log_native) + b"\x00" * len(log_deferred), (11, 3))

    metric_native = [
        _edit(_METRIC_DOC, _DP + ("asDouble",), -0.0),
        _edit(_METRIC_DOC, _DP + ("asDouble",), 1e-300),
        _edit(_METRIC_DOC, _HP + ("bucketCounts",), [0, "0", 9223372036854775807]),
        _edit(_METRIC_DOC, _HP + ("explicitBounds",), []),
        _edit(_METRIC_DOC, _HP + ("min",), -1, more=((_HP + ("max",), 1e10),)),
        _edit(_METRIC_DOC, _DP + ("exemplars",), [{"asDouble": "NaN", "x": [None]}]),
    ]
    metric_deferred = [
        _edit(_METRIC_DOC, _DP + ("asDouble",), "NaN"),
        _edit(_METRIC_DOC, _DP + ("asDouble",), "Infinity"),
        _edit(_METRIC_DOC, _DP + ("asDouble",), "-Infinity"),
        _edit(_METRIC_DOC, _HP + ("explicitBounds",), ["Infinity"]),
        _edit(_METRIC_DOC, _HP + ("sum",), "1.5"),
        _edit(_METRIC_DOC, _HP + ("bucketCounts",), [-1]),
        _edit(_METRIC_DOC, _HP + ("bucketCounts",), ["18446744073709551616"]),
        _edit(_METRIC_DOC, _DP + ("asInt",), "9223372036854775808", more=((_DP + ("asDouble",), _DELETE),)),
        _edit(_METRIC_DOC, _DP + ("attributes", 0, "value"), {"kvlistValue": {"values": [_nested_kv(5)]}}),
        _edit(_METRIC_DOC, ("resourceMetrics", 0, "scopeMetrics", 0, "metrics", 0, "metadata"), []),
        _edit(_METRIC_DOC, ("resourceMetrics", 0, "scopeMetrics", 0, "metrics", 0, "gauge", "x"), 1),
        b'{"resourceMetrics": [{"scopeMetrics": [{"metrics": [{"name": "g", "gauge": {}}]}]}]}',
    ]
    _check(
        metric_native + metric_deferred,
        "metric",
        b"\x01" * len(metric_native) + b"\x00" * len(metric_deferred),
        # rows: 4 a message (gauge, histogram, summary and its quantile) for the 17 with
        # points, less the rejected point of two bad counts and asInt 2**63; rejects: those
        # 3 and the message without points
        (4 * 17 - 3, 4),
    )


def _nested_kv(depth: int) -> dict:
    v: dict = {"key": "leaf", "value": {"intValue": "1"}}
    for k in range(depth):
        v = {"key": f"k{k}", "value": {"kvlistValue": {"values": [v]}}}
    return v


def test_truncations_and_huge_arrays():
    """Every fifth cut of a span, log and metric message (the reference rejects each whole);
    a message of 1000 spans, one of 4000 attributes and one of 20000 bucket counts: read
    in full, the same rows."""
    for doc, signal in ((SPAN, "span"), (LOG, "log"), (METRIC, "metric")):
        cuts = [doc[:n] for n in range(1, len(doc), 5)]
        _check(cuts, signal, b"\x00" * len(cuts), (0, len(cuts)))

    d = copy.deepcopy(_SPAN_DOC)
    sp = d["resourceSpans"][0]["scopeSpans"][0]["spans"]
    sp *= 1000
    many_spans = json.dumps(d).encode()
    attrs = [{"key": f"a{k}", "value": {"intValue": k}} for k in range(4000)]
    many_attrs = _edit(_SPAN_DOC, _SP + ("attributes",), attrs)
    _check([many_spans, many_attrs], "span", b"\x01\x01", (1001, 0))
    buckets = _edit(
        _METRIC_DOC,
        _HP + ("bucketCounts",),
        [str(k) for k in range(20000)],
        more=((_HP + ("explicitBounds",), [0.5] * 19999),),
    )
    _check([buckets], "metric", b"\x01", (4, 0))


_ODD = [None, True, 1, -1, 1.5, "", "x", "NaN", [], {}, "0x1"]


@st.composite
def _json_mutants(draw, signal: str) -> bytes:
    """A span, log or metric message with a drawn key at a drawn object replaced, deleted,
    duplicated (in the other spelling too), or given an odd value, and maybe a key added."""
    doc = copy.deepcopy({"span": _SPAN_DOC, "log": _LOG_DOC, "metric": _METRIC_DOC}[signal])
    objects: list[dict] = []

    def walk(o):
        if isinstance(o, dict):
            objects.append(o)
            for v in o.values():
                walk(v)
        elif isinstance(o, list):
            for v in o:
                walk(v)

    walk(doc)
    for _ in range(draw(st.integers(1, 3))):
        o = draw(st.sampled_from(objects))
        if not o:
            continue
        k = draw(st.sampled_from(sorted(o)))
        action = draw(st.sampled_from(["odd", "delete", "add", "swap"]))
        if action == "odd":
            o[k] = draw(st.sampled_from(_ODD))
        elif action == "delete":
            del o[k]
        elif action == "add":
            o[draw(st.sampled_from(["x", "droppedAttributesCount", "flags", "schemaUrl"]))] = draw(
                st.sampled_from(_ODD)
            )
        else:
            snake = "".join("_" + c.lower() if c.isupper() else c for c in k)
            o[snake] = o.pop(k)
    text = json.dumps(doc)
    if draw(st.booleans()):  # a key given twice (json.dumps cannot write it)
        key = draw(st.sampled_from(["name", "timeUnixNano", "key", "asDouble", "count", "traceId", "scope"]))
        text = text.replace(f'"{key}": ', f'"{key}": 1, "{key}": ', 1)
    return text.encode()


@pytest.mark.parametrize("signal", ["span", "log", "metric"])
def test_hypothesis_json_mutants(signal):
    """Hypothesis (bounded and derandomized in CI; OBSFLOW_FUZZ=long for more) over
    messages with keys replaced, deleted, added, re-spelled and duplicated at every level:
    the reference's rows, dead letters and item bytes."""

    @settings(
        max_examples=80 if os.environ.get("OBSFLOW_FUZZ") != "long" else 3000,
        deadline=None,
        database=None,
        derandomize=os.environ.get("OBSFLOW_FUZZ") != "long",
        suppress_health_check=list(HealthCheck),
    )
    @given(st.lists(_json_mutants(signal), min_size=1, max_size=5))
    def run(values):
        assert_otlp_parity(values, signal, encoding="otlp_json")

    run()
