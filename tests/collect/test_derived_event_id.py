"""The ``event_id`` the door derives for an envelope without one (issue 14's privacy fix):
a retry of the same body gets the same id whatever address, user agent or user it comes
with, and the id is no function of them (it was a SHA-256 over the envelope *with* the raw
``client_ip``: over the small IPv4 space, brute-forceable back to the address)."""

from __future__ import annotations

import hashlib
import time

import orjson
import pytest
import requests

from collector import events
from collector.events import EventJudge
from pipelines.spec import ValidateStep
from tests.collect.conftest import collect_spec_dict
from tests.collect.test_collect_e2e import iso, read_topic

pytestmark = pytest.mark.collect


def _expected(key_name: str, env: dict) -> str:
    """The documented rule, written out: SHA-256 over the key's name, NUL and the sorted
    JSON of the envelope without client_ip, user_agent and user; "d-" + 32 hex digits.
    ``env`` is the stored envelope of a body that had no ``event_id`` key (so it is left
    out too: the id was derived before it was set)."""
    kept = {k: v for k, v in env.items() if k not in ("client_ip", "user_agent", "user", "event_id")}
    return (
        "d-"
        + hashlib.sha256(key_name.encode() + b"\0" + orjson.dumps(kept, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]
    )


def _body(now: int) -> list[dict]:
    return [
        {  # already in the envelope's shape (the fast normalization)
            "page": "/signup",
            "session_id": "s-1",
            "timestamp": iso(now - 2000),
            "events": [{"type": "click", "target": "#next"}],
        },
        {  # the compact shape (the reference normalization), with a user id
            "page": "/signup",
            "session_id": "s-1",
            "user": "u-42",
            "timeStamp": now - 1000,
            "events": [{"scroll": "50%"}],
        },
        {"page": "/own", "session_id": "s-2", "timestamp": iso(now - 500), "events": [{"type": "page_view"}]},
    ]


@pytest.mark.parametrize("fast_path", [True, False])
def test_same_body_from_other_addresses_gets_the_same_id(fast_path):
    now = int(time.time() * 1000)
    judge = EventJudge(ValidateStep(kind="validate"), 65536, 3600.0, fast_path=fast_path)
    body = _body(now)
    ids, stored = [], []
    for ip, ua in (("198.51.100.7", "Mozilla/5.0 (X11)"), ("203.0.113.200", "curl/8.0"), (None, None)):
        out = judge.judge(
            body,
            topic="t",
            key_name="web",
            public=True,
            client_ip=ip,
            user_agent=ua,
            sent_at=None,
            received_ms=now,
        )
        assert out.reasons == [None, None, None]
        envs = [orjson.loads(p) for p in out.payloads]
        assert [e.get("client_ip") for e in envs] == [ip] * 3  # still carried for geo enrichment
        ids.append([e["event_id"] for e in envs])
        stored.extend(envs)
    assert ids[0] == ids[1] == ids[2]
    for e in stored:
        assert e["event_id"] == _expected("web", e)
    assert len(set(ids[0])) == 3


def test_derived_id_covers_the_key_and_the_body_but_no_personal_field():
    derived_event_id = events.derived_event_id
    # a different write key or a different body field is a different event
    assert derived_event_id("other", {"page": "/"}) != derived_event_id("web", {"page": "/"})
    assert derived_event_id("web", {"page": "/a"}) != derived_event_id("web", {"page": "/b"})
    # only the personal fields are left out
    base = {"page": "/", "session_id": "s", "timestamp": "2026-11-21T10:00:00Z", "events": []}
    assert derived_event_id("web", {**base, "client_ip": "10.0.0.1", "user_agent": "a", "user": "x"}) == (
        derived_event_id("web", base)
    )


def test_retry_from_another_address_through_the_door_keeps_the_id(
    kafka_broker, collect_topics, tmp_path, start_collector
):
    """Through ``obsflow collect`` and the real broker: the same body sent twice through a
    trusted proxy, from two client addresses and user agents, is stored twice with the
    same derived ids and each copy with its own ``client_ip``."""
    d = collect_spec_dict(tmp_path, kafka_broker.bootstrap, collect_topics, {"trusted_proxies": ["127.0.0.0/8"]})
    c = start_collector(d)
    now = int(time.time() * 1000)
    body = orjson.dumps(_body(now))
    for ip, ua in (("198.51.100.7", "Mozilla/5.0 (X11)"), ("203.0.113.200", "curl/8.0")):
        r = requests.post(
            c.url + "/v1/events",
            data=body,
            headers={"Content-Type": "application/json", "X-Forwarded-For": ip, "User-Agent": ua},
            timeout=30,
        )
        assert r.status_code == 200 and r.json()["accepted"] == 3, r.text
    docs = [orjson.loads(m.value()) for m in read_topic(kafka_broker.bootstrap, collect_topics["event"])]
    assert len(docs) == 6
    by_ip: dict[str, list[str]] = {}
    for doc in docs:
        by_ip.setdefault(doc["client_ip"], []).append(doc["event_id"])
    assert sorted(by_ip) == ["198.51.100.7", "203.0.113.200"]
    assert sorted(by_ip["198.51.100.7"]) == sorted(by_ip["203.0.113.200"])
    assert len(set(by_ip["198.51.100.7"])) == 3
    for doc in docs:
        assert doc["event_id"] == _expected("anonymous", doc)
