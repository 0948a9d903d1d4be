"""The door's fast path (:meth:`collector.events.EventJudge.plainly_valid`) accepts plainly
valid envelopes without the codec + validator pass; everything else takes the full pass.
Its verdicts must be the full pass's, exactly: the same outcome, reason and detail for
every envelope, over the generator's traffic (with its bad records), the fuzz corpus's
seeds and mutants, and crafted edges (timestamps, numeric ranges, the time window and the
public key's window to the millisecond, clock skew). No services needed."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime

import orjson
import pytest

from collector.events import EventJudge, _Unparsable
from pipelines.spec import ValidateStep
from sources.generator import partition_stream
from tests.fuzz.corpus import mutate, seeds

pytestmark = pytest.mark.collect

START_MS = 1_763_000_000_000
MAX_EVENT_BYTES = 4096
PUBLIC_MAX_PAST_S = 3600.0


def _items(values: list[bytes | None]) -> list:
    """As the door's body parser gives them: a dict per JSON object, other JSON as is, bad JSON unparsable."""
    out: list = []
    for v in values:
        if v is None:
            continue
        try:
            out.append(orjson.loads(v))
        except orjson.JSONDecodeError as e:
            out.append(_Unparsable(v, str(e)))
    return out


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _judge_both(requests: list[tuple[list, dict]]) -> tuple[int, int]:
    """Judge ``requests`` with and without the fast path; assert identical outcomes.
    Returns (envelopes accepted by the fast path, envelopes rejected)."""
    step = ValidateStep(kind="validate")
    fast = EventJudge(step, MAX_EVENT_BYTES, PUBLIC_MAX_PAST_S, fast_path=True)
    full = EventJudge(step, MAX_EVENT_BYTES, PUBLIC_MAX_PAST_S, fast_path=False)
    a = fast.judge_many(requests, "t")
    b = full.judge_many(requests, "t")
    rejected = 0
    for ra, rb in zip(a, b, strict=True):
        assert ra.payloads == rb.payloads
        assert ra.keys == rb.keys and ra.sent_at == rb.sent_at
        for i, (x, y) in enumerate(zip(ra.reasons, rb.reasons, strict=True)):
            assert (x, ra.details[i]) == (y, rb.details[i]), ra.payloads[i][:300]
        rejected += sum(r is not None for r in ra.reasons)
    assert full.fast_accepted == 0
    return fast.fast_accepted, rejected


def _kw(received_ms: int, public: bool = False, sent_at: str | None = None) -> dict:
    return {
        "key_name": "k",
        "public": public,
        "client_ip": "203.0.113.9",
        "user_agent": "ua",
        "sent_at": sent_at,
        "received_ms": received_ms,
    }


@pytest.mark.parametrize("public", [False, True])
def test_generator_traffic_same_verdicts(public):
    gen = list(partition_stream("event", "t", 0, 3000, start_ms=START_MS, bad_fraction=0.05))
    items = _items([g.value for g in gen])
    # requests of 1, 7 and 50 envelopes; received at the start (some events in the future), an hour and 8 days later
    requests = []
    pos = 0
    rng = random.Random(5)
    while pos < len(items):
        n = rng.choice((1, 7, 50))
        requests.append((items[pos : pos + n], _kw(START_MS + rng.choice((0, 3_600_000, 8 * 86_400_000)), public)))
        pos += n
    fast, rejected = _judge_both(requests)
    assert fast > 1000 and rejected > 150, (fast, rejected)


def test_fuzz_corpus_same_verdicts():
    good = [s.value for s in seeds("event", "json", 24)]
    times = sorted(orjson.loads(v)["timestamp"] for v in good)
    SEED_MS = int(datetime.fromisoformat(times[len(times) // 2]).timestamp() * 1000)  # noqa: N806
    rng = random.Random("door-fast-path")
    requests = []
    for size in (1, 2, 7, 50):
        for _ in range(12):
            values = []
            for _ in range(size):
                a, b = rng.choice(good), rng.choice(good)
                values.append(a if rng.random() < 0.5 else mutate(a, b, "event", "json", rng))
            requests.append(
                (_items(values), _kw(SEED_MS + rng.randrange(-600_000, 10 * 86_400_000), rng.random() < 0.3))
            )
    fast, rejected = _judge_both(requests)
    assert fast > 0 and rejected > 50, (fast, rejected)


TIMES = [
    "2026-11-21T10:00:00Z",
    "2026-11-21 10:00:00Z",
    "2026-11-21T10:00:00.123456789+01:00",
    "2026-11-21T10:00:00+0100",
    "2026-11-21T10:00:00+00:00",
    "2026-11-21T10:00:00.5Z",
    "2026-11-21T10:00:00.123456Z",
    "2026-11-21T10:00:00.1234567Z",
    "2026-02-29T10:00:00Z",
    "2024-02-29T10:00:00Z",
    "2026-11-21T24:00:00Z",
    "2026-11-21T23:59:60Z",
    "0001-01-01T00:00:00Z",
    "1969-12-31T23:59:59.999Z",
    "2262-01-01T00:00:00Z",
    "2026-11-21T10:00:00",
    "2026-11-21t10:00:00z",
    "2026-11-21T10:00:00.Z",
    "yesterday",
    17,
    None,
    "２０２６-11-21T10:00:00Z",
]


def test_edges_same_verdicts():
    received = int(datetime(2026, 11, 21, 10, 0, tzinfo=UTC).timestamp() * 1000)
    base = {
        "event_id": "e",
        "timestamp": "2026-11-21T09:59:00Z",
        "page": "/",
        "session_id": "s",
        "events": [{"type": "click", "step": 2, "depth": 0.5, "duration_ms": 10}],
    }
    envs: list = [dict(base, timestamp=ts) for ts in TIMES]
    for step in [0, -1, 2**31 - 1, 2**31, -(2**31), -(2**31) - 1, 1.0, "2", True, None]:
        envs.append({**base, "events": [{"type": "click", "step": step}]})
    for depth in [0, 1, -0.0, 1e-320, 1e308, 0.1, 12345678901234567, 2**53, "x", None, False]:
        envs.append({**base, "events": [{"type": "scroll", "depth": depth}]})
    for dur in [0, -1, 2**63 - 1, 2**63, -(2**63), 1.5, "9"]:
        envs.append({**base, "events": [{"type": "click", "duration_ms": dur}]})
    for events in [
        [],
        None,
        [None],
        [{}],
        {"type": "x"},
        [{"type": "a"}],
        [{"type": "click", "extra": 1}],
        [{"type": 7}],
        [{"type": "click", "target": 5}],
        [{"type": "click"}, {"type": "nope"}],
    ]:
        envs.append({**base, "events": events})
    for name in ("event_id", "page", "session_id", "user", "location", "platform", "user_agent"):
        envs += [{**base, name: None}, {**base, name: 1}, {**base, name: ""}, {**base, name: ["x"]}]
        envs.append({k: v for k, v in base.items() if k != name})
    envs += [
        {**base, "unknown": 1},
        {**base, "timeStamp": "x"},
        {**base, "page": "/" + "x" * (MAX_EVENT_BYTES - 300)},
        {**base, "page": "/" + "x" * MAX_EVENT_BYTES},
        {**base, "page": "\u0000 \ud7ff é 😀"},
    ]
    for n in range(230, 270):  # around max_event_bytes, byte by byte
        envs.append({**base, "page": "/" + "y" * (MAX_EVENT_BYTES - n)})
    # the time window, to the millisecond: max_future 5 min, max_past 7 days, public 1 hour
    for delta in (5 * 60_000, 5 * 60_000 + 1, -7 * 86_400_000, -7 * 86_400_000 - 1, -3_600_000, -3_600_000 - 1, 0, 1):
        envs.append({**base, "timestamp": _iso(received + delta)})
    requests = []
    for public in (False, True):
        requests.append((json.loads(json.dumps(envs)), _kw(received, public)))
        # clock skew: the device is 2 hours behind (corrected), 2 days behind (over max_clock_skew: not corrected), ahead
        for sent in (
            _iso(received - 2 * 3_600_000),
            _iso(received - 2 * 86_400_000),
            _iso(received + 600_000),
            str(received - 3_600_000),
            "garbage",
            _iso(received),
        ):
            requests.append((json.loads(json.dumps(envs)), _kw(received, public, sent_at=sent)))
    fast, rejected = _judge_both(requests)
    assert fast > 100 and rejected > 300, (fast, rejected)


def test_fast_path_really_skips_the_full_pass():
    """A request of plainly valid envelopes is accepted without the codec + validator pass."""
    judge = EventJudge(ValidateStep(kind="validate"), MAX_EVENT_BYTES, PUBLIC_MAX_PAST_S)
    now = int(datetime.now(UTC).timestamp() * 1000)
    env = {
        "event_id": "e1",
        "timestamp": _iso(now - 1000),
        "page": "/",
        "session_id": "s",
        "events": [{"click": "#next"}],
    }
    calls = []
    judge.codec.decode = lambda raw: calls.append(raw)  # type: ignore[method-assign]
    out = judge.judge([env, dict(env, event_id="e2")], topic="t", **{k: v for k, v in _kw(now).items()})
    assert out.reasons == [None, None] and judge.fast_accepted == 2 and calls == []
    assert orjson.loads(out.payloads[0])["events"] == [{"type": "click", "target": "#next"}]


def test_fast_path_reads_the_wire_schema():
    """The fast path's field table is the wire schema's (a schema change must change it too)."""
    import pyarrow as pa

    from collector import events as ev
    from schemas.wire import arrow_schema

    def kind(f: pa.Field) -> int:
        if pa.types.is_string(f.type):
            return ev._OPT if f.nullable else ev._REQ
        return {pa.float64(): ev._FLOAT, pa.int32(): ev._INT32, pa.int64(): ev._INT64}.get(f.type, ev._OTHER)

    wire = arrow_schema("event")
    assert ev._ENVELOPE_KIND == {f.name: kind(f) for f in wire}
    assert ev._INTERACTION_KIND == {f.name: kind(f) for f in wire.field("events").type.value_type}
    assert set(ev._REQUIRED_STR) == {n for n, k in ev._ENVELOPE_KIND.items() if k == ev._REQ}


def _normalize_edges(received: int) -> list:
    """Envelopes around every rule of :func:`collector.events.normalize`: the compact shape,
    ``timeStamp``, an envelope's own ``sent_at``, a missing or empty ``event_id``,
    ``client_ip`` and ``user_agent`` given or not, interactions that are and are not the
    compact one-key form, odd ``events`` values, key order."""
    ts = _iso(received - 60_000)
    base = {
        "event_id": "e",
        "timestamp": ts,
        "page": "/",
        "session_id": "s",
        "events": [{"type": "click", "target": "#a"}],
    }
    envs: list = [dict(base)]
    for events in (
        [{"click": "#next"}],
        [{"scroll": "50%"}],
        [{"scroll": 75}],
        [{"error": {"stackTrace": "at x", "message": "m"}}],
        [{"error": "boom"}],
        [{"form_step": {"form": "signup", "step": 2, "type": "ignored"}}],
        [{"page_view": None}],
        [{"type": "click"}, {"click": "#b"}],
        [{"click": "#a", "target": "#b"}],
        [{}],
        [None, 1, "x"],
        [[{"click": 1}]],
        [{"scroll": {"depth": "25%"}}],
        [{"type": "scroll", "depth": "50%"}],
        None,
        "click",
        {"click": "#a"},
        [],
    ):
        envs.append({**base, "events": events})
    envs += [
        {k: v for k, v in base.items() if k != "timestamp"} | {"timeStamp": received - 1000},
        {**base, "timeStamp": received - 1000},
        {**base, "timestamp": received - 1000},
        {**base, "timestamp": float(received)},
        {**base, "timestamp": True},
        {**base, "timestamp": -1},
        {**base, "timestamp": 1e14},
        {**base, "timestamp": None},
        {k: v for k, v in base.items() if k != "timestamp"},
    ]
    for sent in (_iso(received - 3_600_000), received - 3_600_000, "garbage", None, 5, True):
        envs.append({**base, "sent_at": sent})
        envs.append({"sent_at": sent, **base})
    for ev_id in (None, "", 0, "x"):
        envs.append({**base, "event_id": ev_id})
    envs.append({k: v for k, v in base.items() if k != "event_id"})
    envs.append({"page": "/", "events": [{"click": "#n"}], "session_id": "s", "timestamp": ts})  # key order, no id
    for ip in ("198.51.100.7", "", None, 7):
        envs.append({**base, "client_ip": ip})
        envs.append({"client_ip": ip, **base})
    for ua in ("Mozilla/5.0", "", None, 3):
        envs.append({**base, "user_agent": ua})
    envs.append({"user_agent": "ua", "client_ip": "198.51.100.8", **{k: v for k, v in base.items() if k != "event_id"}})
    deep: dict = {"x": 1}
    for _ in range(300):
        deep = {"x": deep}
    envs.append({**base, "extra": deep})
    return envs


def test_normalization_fast_path_same_payloads():
    """The fast normalization (:func:`collector.events._normalize_plain`, for envelopes
    already in the envelope's shape) gives the payload bytes, key and ``sent_at`` of
    :func:`collector.events.normalize` (the full path's) for every envelope it takes, and
    declines the others; the whole judge agrees with and without it (payloads, keys,
    ``sent_at``, verdicts), for public and secret keys, with and without the batch's
    ``sent_at``, and over the generator's traffic."""
    from collector.events import _normalize_plain, normalize

    received = int(datetime(2026, 11, 21, 10, 0, tzinfo=UTC).timestamp() * 1000)
    envs = _normalize_edges(received)
    gen = [
        g
        for g in _items([g.value for g in partition_stream("event", "t", 0, 400, start_ms=START_MS, bad_fraction=0.05)])
        if not isinstance(g, _Unparsable)
    ]
    taken = declined = 0
    for doc in envs + [g for g in gen if isinstance(g, dict)]:
        for trust in (False, True):
            before = orjson.dumps(doc) if doc.get("extra") is None else None
            try:
                plain = _normalize_plain(doc, "k", "203.0.113.9", "ua", trust)
            except TypeError:  # nested too deep: the caller takes the reference path
                continue
            if before is not None:
                assert orjson.dumps(doc) == before  # the input is not changed
            if plain is None:
                declined += 1
                continue
            taken += 1
            env, sent = normalize(doc, "k", "203.0.113.9", "ua", trust)
            assert sent is None
            assert list(plain.items()) == list(env.items())
            if before is not None:  # (too deep for orjson: the judge takes the reference path, checked below)
                assert orjson.dumps(plain) == orjson.dumps(env)
    assert taken > 400 and declined > 60, (taken, declined)
    requests = []
    for public in (False, True):
        for sent in (None, _iso(received - 3_600_000)):
            requests.append((json.loads(json.dumps(envs[:-1])) + [envs[-1]], _kw(received, public, sent_at=sent)))
            requests.append((gen[:50], _kw(START_MS + 60_000, public, sent_at=sent)))
    fast, rejected = _judge_both(requests)
    assert fast > 100 and rejected > 40, (fast, rejected)


def _whole_time_ms(ts: str) -> int | None:
    """The reference reading of a fast-path timestamp: the whole string at once."""
    from collector.events import _EPOCH, _MS, _PLAIN_TS

    m = _PLAIN_TS.fullmatch(ts)
    if m is None or not 1971 <= int(m.group(1)) <= 2261:
        return None
    try:
        return (datetime.fromisoformat(ts) - _EPOCH) // _MS
    except ValueError:
        return None


def test_plain_time_read_in_two_parts_as_whole():
    """:func:`collector.events.plain_time_ms` (the seconds part and the rest read apart,
    each cached) gives the whole string's reading for every edge: the edge times above,
    every fraction length 0-7 with either zone, odd heads (Unicode digits, leap days,
    24:00, years at the bounds), odd tails, and random mixtures of them, each asked twice
    (the second from the caches)."""
    from collector.events import plain_time_ms

    heads = [
        "2026-11-21T10:00:00",
        "2024-02-29T23:59:59",
        "2026-02-29T10:00:00",
        "2026-11-21T24:00:00",
        "2026-11-21T23:59:60",
        "1970-12-31T23:59:59",
        "1971-01-01T00:00:00",
        "2261-12-31T23:59:59",
        "2262-01-01T00:00:00",
        "２０２６-11-21T10:00:00",
        "2026-11-21T10:00:0٣",
        "2026-11-21 10:00:00",
        "2026-11-21t10:00:00",
        "2026-13-01T10:00:00",
        "2026-11-21T10:00",
        "",
    ]
    tails = ["Z", "+00:00", "z", "+01:00", "", ".Z", "-00:00", ".5Z", "+0000", ".٣Z", ".123456789Z", " Z"]
    tails += [f".{'7' * n}{z}" for n in range(1, 8) for z in ("Z", "+00:00")]
    rng = random.Random(19)
    stamps = [t for t in TIMES if isinstance(t, str)] + [h + t for h in heads for t in tails]
    stamps += [rng.choice(heads) + rng.choice(tails) for _ in range(500)]
    stamps += [_iso(START_MS + rng.randrange(-(10**12), 10**12)) for _ in range(500)]
    plain = 0
    for ts in stamps + stamps:
        assert plain_time_ms(ts) == _whole_time_ms(ts), ts
        plain += plain_time_ms(ts) is not None
    assert plain > 1000


def test_all_accepted_answer_same_bytes():
    """The cached answer of a request whose envelopes were all accepted is the bytes the
    general answer gives (per-event results in request order), for sizes in and past the cache."""
    from collector.app import _accepted_results, _all_accepted_answer

    for n in (1, 2, 49, 50, 51, 1000, 1024, 1025, 3000):
        general = orjson.dumps(
            {"accepted": n, "rejected": 0, "results": [{"index": i, "status": "accepted"} for i in range(n)]}
        )
        assert _all_accepted_answer(n) == general and _all_accepted_answer(n) == general
        assert len(_accepted_results(n)) >= n
