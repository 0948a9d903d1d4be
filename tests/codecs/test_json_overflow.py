"""Numbers beyond a double's range (``1e400``, ``2e308``) in the Python reference JSON codec:
one verdict per record whatever its neighbours in the batch (alone, after a good record, next
to a bad one, after a dirty batch). Where the wire schema does not read the number (an
unknown field, at any depth) the record is a row, as the compiled decoder has it; where it
reads it (a number field, a string field, a map value) the record is a ``format_violation``
with orjson's detail. ``pyarrow.json`` alone gave a row for ``2e308`` in a number field (read
as inf) and refused ``1e400`` even in an ignored field, so the verdict depended on which of
its paths the batch took."""

from __future__ import annotations

import json

import pytest

from schemas.codecs import JsonCodec
from transforms.batch import INDEX, RawBatch

EVENT = {
    "event_id": "e1",
    "timestamp": "2026-11-21T10:00:00Z",
    "page": "/",
    "session_id": "s1",
    "events": [{"type": "scroll", "depth": 0.5}],
}
LOG = {"timestamp": "2026-11-21T10:00:00Z", "level": "INFO", "service": "s", "message": "m", "attributes": {"k": "v"}}
METRIC = {"name": "m", "kind": "GAUGE", "value": 1.5, "timestamp": "2026-11-21T10:00:00Z", "labels": {"env": "prod"}}
GOOD = {"event": EVENT, "log": LOG, "metric": METRIC}
BAD = {"event": b'{"page":1}', "log": b'{"level":[1]}', "metric": b'{"value":"x"}'}


def _record(base: dict, replace: str, literal: str) -> bytes:
    """``base`` as JSON with the string ``"@"`` (placed at ``replace``) swapped for ``literal``."""
    text = json.dumps(base, separators=(",", ":"))
    assert text.count('"@"') == 1
    return text.replace('"@"', literal).encode()


def _with(base: dict, path: tuple, value="@") -> dict:
    out = json.loads(json.dumps(base))
    node = out
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    return out


INF_DETAIL = "invalid JSON: number is infinity when parsed as double: line 1 column {} (char {})"


def _fv(rec: bytes) -> tuple[str, str]:
    col = rec.index(b"1e400") if b"1e400" in rec else rec.index(b"2e308")
    return "format_violation", INF_DETAIL.format(col + 1, col)


# (signal, where the number is, literal, read by the wire schema?)
CASES = [
    ("event", ("x",), "1e400", False),
    ("event", ("x",), "-1e400", False),
    ("event", ("x",), "2e308", False),
    ("event", ("events", 0, "extra"), "1e400", False),
    ("event", ("x",), '[1,{"y":1e999}]', False),
    ("event", ("events", 0, "depth"), "2e308", True),
    ("event", ("events", 0, "depth"), "1e400", True),
    ("event", ("page",), "1e400", True),
    ("log", ("extra",), "1e400", False),
    ("log", ("attributes", "n"), "1e400", True),
    ("metric", ("value",), "2e308", True),
    ("metric", ("value",), "1e400", True),
    ("metric", ("bucket_bounds",), "[1.0,2e308]", True),
    ("metric", ("unit_scale",), "1e400", False),
]


def _verdicts(signal: str, rec: bytes) -> dict[str, object]:
    """The record's verdict (``"row"`` or ``(reason, detail)``) in each neighbourhood."""
    good = json.dumps(GOOD[signal]).encode()
    batches = {
        "alone": [rec],
        "after a good record": [good, rec],
        "before a good record": [rec, good],
        "next to a bad record": [BAD[signal], rec, good],
        "among 50 good": [good] * 25 + [rec] + [good] * 25,
    }
    out: dict[str, object] = {}
    for name, values in batches.items():
        for dirty_before in (False, True):
            codec = JsonCodec(signal=signal)
            if dirty_before:
                codec.decode(RawBatch("src", "t", 0, [BAD[signal], good], [0, 1], [0, 0]))
            raw = RawBatch("src", "t", 0, list(values), list(range(len(values))), [0] * len(values))
            batch = codec.decode(raw)
            at = values.index(rec)
            rows = batch.table.column(INDEX).to_pylist()
            mine = [
                (r, d)
                for i, r, d in zip(batch.rejects.indices, batch.rejects.reasons, batch.rejects.details)
                if i == at
            ]
            assert (at in rows) + len(mine) == 1, (name, rows, mine)
            good_rows = [i for i, v in enumerate(values) if v == good]
            assert set(good_rows) <= set(rows), name  # no good neighbour lost
            out[f"{name}{' (after a dirty batch)' if dirty_before else ''}"] = "row" if at in rows else mine[0]
    return out


@pytest.mark.parametrize(
    "signal,path,literal,read", CASES, ids=[f"{c[0]}-{'.'.join(map(str, c[1]))}-{c[2]}" for c in CASES]
)
def test_overflowing_number_has_one_verdict(signal, path, literal, read):
    rec = _record(_with(GOOD[signal], path), "@", literal)
    verdicts = _verdicts(signal, rec)
    want = _fv(rec) if read else "row"
    assert verdicts == {k: want for k in verdicts}


def test_row_keeps_what_the_schema_reads():
    """A row whose ignored field overflowed holds the same values as without that field."""
    plain = json.dumps(EVENT, separators=(",", ":")).encode()
    rec = plain[:-1] + b',"x":1e400}'
    codec = JsonCodec(signal="event")
    got = codec.decode(RawBatch("src", "t", 0, [rec, b'{"page":1}'], [0, 1], [0, 0])).table
    want = JsonCodec(signal="event").decode(RawBatch("src", "t", 0, [plain], [0], [0])).table
    assert got.to_pylist() == want.to_pylist()
