"""The pipeline's side of what the door writes, without services: door verdicts in Kafka
headers become whole-record dead letters, and the clock-skew rule of the events flow's
validate step (exact values; the end-to-end versions are in test_collect_pipeline.py)."""

from __future__ import annotations

import orjson

from pipelines.spec import ValidateStep
from schemas.codecs import codec_for
from sinks.dead_letters import dead_letter_rows
from transforms.batch import RawBatch
from transforms.door_verdicts import DETAIL_HEADER, REJECT_HEADER, apply_door_verdicts
from transforms.validate import Validator, clock_skew_ms

RECV = 1_765_051_200_000  # 2025-12-06T20:00:00Z


def _event(eid: str, ts: str = "2025-12-06T19:59:00.000Z") -> bytes:
    return orjson.dumps(
        {"event_id": eid, "page": "/p", "session_id": "s", "timestamp": ts, "events": [{"type": "page_view"}]}
    )


def _raw(values, headers) -> RawBatch:
    n = len(values)
    return RawBatch("events", "ev", 0, values, list(range(10, 10 + n)), [RECV] * n, headers=headers)


def test_door_verdict_rejects_the_whole_record_with_its_reason():
    verdict = [(REJECT_HEADER, b"timestamp_out_of_range"), (DETAIL_HEADER, b"too old for a public key")]
    raw = _raw(
        [_event("ok"), _event("old"), b"{not json", b'{"x": 1}'],
        [
            None,
            verdict,
            [(REJECT_HEADER, b"format_violation"), (DETAIL_HEADER, b"invalid JSON: cut off")],
            [(REJECT_HEADER, b"made_up"), (DETAIL_HEADER, b"d")],
        ],
    )
    batch = apply_door_verdicts(codec_for("json", "event", 65536).decode(raw))
    assert batch.table.column("event_id").to_pylist() == ["ok"]  # the decoded row of "old" is gone
    assert list(zip(batch.rejects.indices, batch.rejects.reasons, batch.rejects.details)) == [
        (1, "timestamp_out_of_range", "too old for a public key"),
        (2, "format_violation", "invalid JSON: cut off"),  # replaces the codec's own reject of the record
        (3, "format_violation", "door verdict with an unknown reason 'made_up': d"),
    ]
    dead = dead_letter_rows(raw, batch.rejects, 1024)
    assert dead.column("source_offset").to_pylist() == [11, 12, 13]
    assert dead.column("item_index").to_pylist() == [None, None, None]


def test_no_headers_no_change():
    raw = _raw([_event("a"), b"{bad"], None)
    batch = apply_door_verdicts(codec_for("json", "event", 65536).decode(raw))
    assert batch.table.column("event_id").to_pylist() == ["a"] and batch.rejects.reasons == ["format_violation"]


def test_clock_skew_rule():
    assert clock_skew_ms([("received_at", str(RECV).encode()), ("sent_at", b"2025-12-06T19:00:00Z")]) == (
        3_600_000,
        RECV,
    )
    assert clock_skew_ms([("received_at", str(RECV).encode()), ("sent_at", b"2025-12-06T21:00:00+01:00")]) == (0, RECV)
    assert clock_skew_ms([("received_at", str(RECV).encode()), ("sent_at", str(RECV - 5).encode())]) == (5, RECV)
    assert clock_skew_ms([("received_at", str(RECV).encode()), ("sent_at", b"yesterday")]) is None
    assert clock_skew_ms([("sent_at", b"2025-12-06T19:00:00Z")]) is None

    def h(sent: str) -> list:
        return [("received_at", str(RECV).encode()), ("sent_at", sent.encode())]

    raw = _raw(
        [
            _event("behind", "2025-12-06T18:59:00.000Z"),
            _event("after-send", "2025-12-06T19:01:00.000Z"),
            _event("too-far"),
            _event("plain"),
        ],
        [h("2025-12-06T19:00:00.000Z"), h("2025-12-06T19:00:00.000Z"), h("2025-12-04T19:59:00.000Z"), None],
    )
    batch = Validator("event", ValidateStep(kind="validate", max_clock_skew="1d"))(
        codec_for("json", "event", 65536).decode(raw)
    )
    got = {
        e: t.isoformat()
        for e, t in zip(batch.table.column("event_id").to_pylist(), batch.table.column("timestamp").to_pylist())
    }
    assert got == {
        "behind": "2025-12-06T19:59:00+00:00",  # 18:59 on a clock 1 h behind
        "after-send": "2025-12-06T20:00:00+00:00",  # 19:01 + 1 h is after the receipt: the receive time
        "too-far": "2025-12-06T19:59:00+00:00",  # 2 days of skew > max_clock_skew: kept
        "plain": "2025-12-06T19:59:00+00:00",
    }
