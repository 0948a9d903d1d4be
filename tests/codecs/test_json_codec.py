"""The JSON codec: good records decode to exact wire columns; every malformed kind is
rejected alone, with the right reason and a detail that names the problem, and its good
neighbours survive."""

import json
from datetime import datetime, UTC

import pytest

from schemas.codecs import codec_for
from transforms.batch import RawBatch

EVENT = {
    "event_id": "e1",
    "timestamp": "2026-11-21T10:00:00.250Z",
    "page": "/signup/step-3",
    "session_id": "s1",
    "user": "u1",
    "user_agent": "ua",
    "client_ip": "81.2.69.160",
    "events": [
        {"type": "form_step", "form": "signup", "step": 3, "duration_ms": 1200},
        {"type": "click", "target": "#next"},
    ],
}
LOG = {
    "timestamp": "2026-11-21T10:00:00+01:00",
    "level": "INFO",
    "service": "checkout",
    "message": "ok",
    "attributes": {"http.status_code": 200, "ok": True, "nested": {"a": [1]}, "s": "x"},
}


def raw(values, source="events"):
    return RawBatch(source, source, 0, values, list(range(100, 100 + len(values))), [0] * len(values))


def enc(obj) -> bytes:
    return json.dumps(obj).encode()


def decode(signal, values, max_bytes=4096):
    b = codec_for("json", signal, max_bytes).decode(raw(values))
    rejected = {i: (r, d) for i, r, d in zip(b.rejects.indices, b.rejects.reasons, b.rejects.details)}
    return b, rejected


def test_good_event_decodes_to_exact_wire_columns():
    b, rejected = decode("event", [enc(EVENT)])
    assert rejected == {}
    row = b.table.to_pylist()[0]
    assert row["timestamp"] == datetime(2026, 11, 21, 10, 0, 0, 250000, tzinfo=UTC)
    assert row["page"] == "/signup/step-3" and row["user"] == "u1" and row["location"] is None
    assert row["events"][0] == {
        "type": "form_step",
        "target": None,
        "depth": None,
        "form": "signup",
        "step": 3,
        "duration_ms": 1200,
        "message": None,
        "stackTrace": None,
    }
    assert row["_i"] == 0


def test_log_attributes_become_a_string_map_and_offsets_in_zone_are_utc():
    b, rejected = decode(
        "log", [enc(LOG), enc({**LOG, "attributes": None}), enc({k: v for k, v in LOG.items() if k != "attributes"})]
    )
    assert rejected == {}
    rows = b.table.to_pylist()
    assert rows[0]["timestamp"] == datetime(2026, 11, 21, 9, 0, tzinfo=UTC)
    assert dict(rows[0]["attributes"]) == {"http.status_code": "200", "ok": "true", "nested": '{"a":[1]}', "s": "x"}
    assert rows[1]["attributes"] is None and rows[2]["attributes"] is None


BAD_EVENTS = [
    (b"", "format_violation", "empty payload"),
    (None, "format_violation", "tombstone (null value)"),
    (b"   ", "format_violation", "empty payload"),
    (enc(EVENT)[:40], "format_violation", "invalid JSON: Input data was truncated"),
    (enc(EVENT).replace(b'":', b'" ', 1), "format_violation", "invalid JSON: JSON is malformed: expected ':'"),
    (enc(EVENT).replace(b"/signup", b"/sign\xffup"), "format_violation", "payload is not UTF-8: invalid byte 0xff"),
    (enc(EVENT) + enc(EVENT), "format_violation", "invalid JSON: JSON is malformed: trailing characters"),
    (b"[1, 2]", "schema_violation", "expected a JSON object, got array"),
    (enc({**EVENT, "page": 5}), "schema_violation", "page: expected a string, got number"),
    (
        enc({**EVENT, "events": [{"type": "click", "step": "three"}]}),
        "schema_violation",
        "events[0].step: expected an integer, got string",
    ),
    (
        enc({**EVENT, "events": [{"type": "click", "step": 2**40}]}),
        "schema_violation",
        "events[0].step: integer 1099511627776 out of range for int32",
    ),
    (
        enc({**EVENT, "events": [{"type": "click", "duration_ms": 1.5}]}),
        "schema_violation",
        "events[0].duration_ms: expected an integer, got number",
    ),
    (
        enc({**EVENT, "events": [{"type": "click"}, 7]}),
        "schema_violation",
        "events[1]: expected an object, got number",
    ),
    (
        enc({**EVENT, "timestamp": 1763719200000}),
        "schema_violation",
        "timestamp: expected an ISO-8601 timestamp string with a zone, got number",
    ),
    (
        enc({**EVENT, "timestamp": "2026-11-21 10:00:00"}),
        "schema_violation",
        "timestamp: not an ISO-8601 timestamp with a zone",
    ),
    (
        enc({**EVENT, "timestamp": "2026-02-30T10:00:00Z"}),
        "schema_violation",
        "timestamp: invalid date or time",
    ),
    (enc({**EVENT, "pad": "x" * 5000}), "size_violation", "exceeds the limit of 4096 bytes"),
]


@pytest.mark.parametrize("payload,reason,detail", BAD_EVENTS, ids=[d[:30] for _, _, d in BAD_EVENTS])
def test_each_malformed_kind_is_rejected_alone_with_reason(payload, reason, detail):
    good = enc(EVENT)
    b, rejected = decode("event", [good, payload, good])
    assert list(rejected) == [1]
    assert rejected[1][0] == reason
    assert detail in rejected[1][1]
    assert b.table.column("_i").to_pylist() == [0, 2]


def test_many_bad_records_in_one_batch_keep_every_good_one():
    good = enc(EVENT)
    values, bad_at = [], set()
    for i in range(3000):
        if i % 37 == 5:
            values.append(BAD_EVENTS[i % len(BAD_EVENTS)][0])
            bad_at.add(i)
        else:
            values.append(good)
    b, rejected = decode("event", values)
    assert set(rejected) == bad_at
    assert b.table.column("_i").to_pylist() == [i for i in range(3000) if i not in bad_at]


def test_two_objects_on_one_line_and_a_blank_record_in_one_batch_do_not_shift_rows():
    """``pyarrow.json`` reads two rows from a line holding two objects and skips a blank
    line: together they would keep the row count equal to the record count with every
    row between them attributed to the wrong record. Both are rejected, the good records
    keep their own rows."""
    good = enc(EVENT)
    other = enc({**EVENT, "page": "/other"})
    values = [good, good + b" " + other, other, b"   ", good]
    for dirty_before in (False, True):
        codec = codec_for("json", "event", 4096)
        if dirty_before:
            codec.decode(RawBatch("events", "events", 0, [b"{"], [0], [0]))
        b = codec.decode(RawBatch("events", "events", 0, values, list(range(5)), [0] * 5))
        rejected = dict(zip(b.rejects.indices, zip(b.rejects.reasons, b.rejects.details)))
        assert {i: r for i, (r, _) in rejected.items()} == {1: "format_violation", 3: "format_violation"}
        assert "trailing characters" in rejected[1][1] and "empty payload" in rejected[3][1]
        assert b.table.column("_i").to_pylist() == [0, 2, 4]
        assert b.table.column("page").to_pylist() == ["/signup/step-3", "/other", "/signup/step-3"]


def test_pretty_printed_json_with_newlines_is_accepted():
    b, rejected = decode("event", [json.dumps(EVENT, indent=2).encode()])
    assert rejected == {} and b.table.num_rows == 1


def test_unknown_fields_are_ignored_and_log_map_type_errors_are_schema_violations():
    b, rejected = decode("log", [enc({**LOG, "extra": {"deep": 1}}), enc({**LOG, "attributes": "not-a-map"})])
    assert b.table.column("_i").to_pylist() == [0]
    assert rejected[1][0] == "schema_violation" and "attributes" in rejected[1][1]


def test_screen_finds_each_odd_record_by_position_in_a_mixed_batch():
    """Valid non-ASCII UTF-8, multi-line (LF and CRLF) records and bad ones side by side:
    each odd record is looked at where it is, the good ones keep their order and content."""
    good = enc(EVENT)
    cafe = json.dumps({**EVENT, "page": "/café/ß"}, ensure_ascii=False).encode()
    pretty = json.dumps({**EVENT, "page": "/pretty"}, indent=2).encode()
    crlf = json.dumps({**EVENT, "page": "/crlf"}, indent=1).encode().replace(b"\n", b"\r\n")
    values = [
        good,
        cafe,
        None,
        pretty,
        b"",
        enc(EVENT).replace(b"/signup", b"/sign\xe9up"),
        crlf,
        enc({**EVENT, "pad": "y" * 5000}),
        b"{\n",
        good,
    ]
    b, rejected = decode("event", values)
    assert {i: r for i, (r, _) in rejected.items()} == {
        2: "format_violation",
        4: "format_violation",
        5: "format_violation",
        7: "size_violation",
        8: "format_violation",
    }
    assert "invalid byte 0xe9" in rejected[5][1] and "invalid JSON" in rejected[8][1]
    assert b.table.column("_i").to_pylist() == [0, 1, 3, 6, 9]
    assert b.table.column("page").to_pylist() == ["/signup/step-3", "/café/ß", "/pretty", "/crlf", "/signup/step-3"]
