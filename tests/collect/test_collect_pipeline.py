"""What the pipeline does with what the door wrote, through the real door, the real broker
and ``obsflow run --source kafka --bounded`` (Bytewax), exact:

- device clock skew: event time + (the door's receive time - the client's ``sent_at``),
  applied within the events flow's ``validate.max_clock_skew``, never past the receive time;
- door rejects reach ``obs.dead_letters`` with the door's reason (no dead-letter topic needed).
"""

from __future__ import annotations

import random
from collections import Counter
import time
from datetime import UTC, datetime, timedelta

import orjson
import pytest
import requests

from pipelines.loader import parse_spec
from runners.job import RunRequest
from tests.collect.conftest import collect_spec_dict
from tests.collect.test_collect_e2e import iso, read_topic
from tests.helpers import read_table

pytestmark = [pytest.mark.collect, pytest.mark.kafka]

HOUR = 3_600_000
DAY = 24 * HOUR


def _run(d: dict):
    spec = parse_spec(d)
    from runners.bytewax.run import run

    run(RunRequest(spec=spec, runner="bytewax", source="kafka", bounded=True))
    return spec


def _ms(ts: datetime) -> int:
    return (ts - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


def _events_validate(d: dict) -> dict:
    flow = next(f for f in d["flows"] if f["source"] == "events")
    step = next(s for s in flow["steps"] if s["kind"] == "validate")
    return step


def test_clock_skew_corrected_through_door_and_pipeline(kafka_broker, collect_topics, tmp_path, start_collector):
    d = collect_spec_dict(tmp_path, kafka_broker.bootstrap, collect_topics)
    _events_validate(d)["max_clock_skew"] = "30d"
    c = start_collector(d)
    now = int(time.time() * 1000)

    def env(eid: str, ts: int, **extra) -> dict:
        return {
            "event_id": eid,
            "page": "/p",
            "session_id": "s-" + eid,
            "timestamp": iso(ts),
            "events": [{"type": "page_view"}],
            **extra,
        }

    # a device 3 h behind, sent_at in the header
    slow = now - 3 * HOUR
    r = requests.post(
        c.url + "/v1/events", json=[env("behind", slow - 10_000)], headers={"X-Obsflow-Sent-At": iso(slow)}
    )
    assert r.status_code == 200, r.text
    # a device 2 h ahead, sent_at in the batch
    fast = now + 2 * HOUR
    r = requests.post(
        c.url + "/v1/beacon",
        data=orjson.dumps({"batch": [env("ahead", fast - 20_000)], "sent_at": iso(fast)}),
        headers={"Content-Type": "text/plain"},
    )
    assert r.status_code == 200, r.text
    # a device 10 days behind: without the correction older than max_past (7d), rejected; with it, accepted
    old = now - 10 * DAY
    r = requests.post(c.url + "/v1/events", json=[env("ten-days", old - 5_000, sent_at=old)])
    assert r.status_code == 200 and r.json()["accepted"] == 1, r.text
    # skew over max_clock_skew (40 days): not applied
    r = requests.post(c.url + "/v1/events", json=[env("too-far", now - 2 * DAY, sent_at=now - 40 * DAY)])
    assert r.status_code == 200, r.text
    # no sent_at, and an unreadable one: not corrected
    r = requests.post(
        c.url + "/v1/events", json=[env("none", now - 7_000), env("garbage", now - 8_000, sent_at="yesterday")]
    )
    assert r.status_code == 200 and r.json()["accepted"] == 2, r.text
    # an event "after" its own send (a client bug): corrected, but never after the receive time
    r = requests.post(
        c.url + "/v1/events", json=[env("after-send", slow + 60_000)], headers={"X-Obsflow-Sent-At": iso(slow)}
    )
    assert r.status_code == 200, r.text

    received = {}
    for m in read_topic(kafka_broker.bootstrap, collect_topics["event"]):
        received[orjson.loads(m.value())["event_id"]] = int(dict(m.headers())["received_at"])
    assert len(received) == 7

    spec = _run(d)
    got = {r["event_id"]: _ms(r["ts"]) for r in read_table(spec, "events").to_pylist()}
    assert got == {
        "behind": slow - 10_000 + (received["behind"] - slow),
        "ahead": fast - 20_000 + (received["ahead"] - fast),
        "ten-days": old - 5_000 + (received["ten-days"] - old),
        "too-far": now - 2 * DAY,
        "none": now - 7_000,
        "garbage": now - 8_000,
        "after-send": received["after-send"],
    }
    assert read_table(spec, "dead_letters").num_rows == 0


def test_door_rejects_reach_dead_letters_table(kafka_broker, collect_topics, tmp_path, start_collector):
    keys = {
        "keys": [
            {"name": "web", "kind": "public", "env": "COLLECT_TEST_PUBLIC_KEY"},
            {"name": "backend", "kind": "secret", "env": "COLLECT_TEST_SECRET_KEY"},
        ]
    }
    d = collect_spec_dict(tmp_path, kafka_broker.bootstrap, collect_topics, collect=keys)
    d["outputs"]["dead_letters_topic"] = None  # no dead-letter topic at all: door rejects are still kept
    c = start_collector(d, env={"COLLECT_TEST_PUBLIC_KEY": "pk-1", "COLLECT_TEST_SECRET_KEY": "sk-1"})
    secret, public = {"X-Obsflow-Key": "sk-1"}, {"X-Obsflow-Key": "pk-1"}
    now = int(time.time() * 1000)

    def env(eid: str, ts: int, **extra) -> dict:
        return {
            "event_id": eid,
            "page": "/p",
            "session_id": "s-" + eid,
            "timestamp": iso(ts),
            "events": [{"type": "page_view"}],
            **extra,
        }

    answers = []  # (reason, detail) the door answered, per reject
    r = requests.post(
        c.url + "/v1/events",
        headers=secret,
        json=[
            env("ok-1", now - 1000),
            {**env("bad-page", now - 1000), "page": 7, "user": "jane@example.org"},
            "not an object",
        ],
    )
    assert r.status_code == 200 and r.json()["accepted"] == 1, r.text
    answers += [(x["reason"], x["detail"]) for x in r.json()["results"] if x["status"] == "rejected"]
    ndjson = orjson.dumps(env("ok-2", now - 2000)) + b'\n{"event_id": "cut-off", "page\n'
    r = requests.post(c.url + "/v1/events", headers={**secret, "Content-Type": "application/x-ndjson"}, data=ndjson)
    assert r.status_code == 200 and r.json()["rejected"] == 1, r.text
    answers += [(x["reason"], x["detail"]) for x in r.json()["results"] if x["status"] == "rejected"]
    r = requests.post(c.url + "/v1/events", headers=public, json=[env("too-old", now - 3 * DAY)])
    assert r.status_code == 400, r.text
    answers += [(x["reason"], x["detail"]) for x in r.json()["results"]]
    r = requests.post(c.url + "/v1/events", headers=secret, json=[env("huge", now - 1000, page="/" + "x" * 70_000)])
    assert r.status_code == 400, r.text
    answers += [(x["reason"], x["detail"]) for x in r.json()["results"]]
    # bodies that are not the format at all (400) are kept too, as one format_violation each
    r = requests.post(
        c.url + "/v1/events", headers={**secret, "Content-Type": "application/json"}, data=b'[{"page": "/a", '
    )
    assert r.status_code == 400, r.text
    answers.append(("format_violation", r.json()["error"]))
    r = requests.post(
        c.url + "/v1/traces", headers={**secret, "Content-Type": "application/x-protobuf"}, data=b"\x0a\xff\xff\xff"
    )
    assert r.status_code == 400, r.text
    answers.append(("format_violation", r.json()["error"]))
    assert [a[0] for a in answers] == [
        "schema_violation",
        "schema_violation",
        "format_violation",
        "timestamp_out_of_range",
        "size_violation",
        "format_violation",
        "format_violation",
    ]

    marked = []
    for signal, n_msgs in (("event", 8), ("span", 1)):
        msgs = read_topic(kafka_broker.bootstrap, collect_topics[signal])
        assert len(msgs) == n_msgs
        marked += [(m.topic(), m.partition(), m.offset()) for m in msgs if "obsflow_reject" in dict(m.headers() or [])]
    assert len(marked) == 7

    spec = _run(d)
    rows = read_table(spec, "dead_letters").to_pylist()
    # each reject once, where it is in Kafka
    assert sorted((r["source_topic"], r["source_partition"], r["source_offset"]) for r in rows) == sorted(marked)
    assert sorted((r["reason"], r["detail"]) for r in rows) == sorted(answers)  # the door's reasons and details
    assert all(b"jane@example.org" not in (r["raw"] or b"") for r in rows)  # personal data scrubbed from the raw bytes
    by_reason = {r["reason"]: r for r in rows}
    assert b"too-old" in by_reason["timestamp_out_of_range"]["raw"]
    assert by_reason["size_violation"]["raw_size"] == 65536  # cut to the flow's validate.max_bytes
    assert sorted(r["event_id"] for r in read_table(spec, "events").to_pylist()) == ["ok-1", "ok-2"]


def test_retry_after_a_partial_write_leaves_no_duplicate(
    kafka_broker, kafka_topic_factory, collect_topics, tmp_path, start_collector
):
    """One record of a request fails in Kafka while the others would land (the event topic
    takes at most 4 KiB per message; one event is larger and its partition differs): the
    door answers 503 and nothing of the request is visible; once the topic takes it, the
    client's retry of the same body is stored once, exactly."""
    topics = {
        **collect_topics,
        "event": kafka_topic_factory(partitions=2, config={"max.message.bytes": "4096"}, prefix="cev"),
    }
    d = collect_spec_dict(tmp_path, kafka_broker.bootstrap, topics, collect={"request_timeout": "5s"})
    c = start_collector(d)
    now = int(time.time() * 1000)
    noise = "".join(
        random.Random(7).choices("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", k=12_000)
    )
    body = orjson.dumps(
        [
            {
                "event_id": f"small-{i}",
                "page": "/p",
                "session_id": "s-a",
                "timestamp": iso(now - 1000),
                "events": [{"type": "click"}],
            }
            for i in range(3)
        ]
        + [
            {
                "event_id": "big",
                "page": "/" + noise,
                "session_id": "s-d",
                "timestamp": iso(now - 1000),
                "events": [{"type": "click"}],
            }
        ]
    )
    r = requests.post(c.url + "/v1/events", data=body, headers={"Content-Type": "application/json"}, timeout=30)
    assert r.status_code == 503 and r.headers["retry-after"] == "2", r.text
    assert read_topic(kafka_broker.bootstrap, topics["event"]) == []  # nothing of a 503 request is visible

    from confluent_kafka.admin import (
        AlterConfigOpType,
        ConfigEntry,
        ConfigResource,
        ResourceType,
    )

    res = ConfigResource(
        ResourceType.TOPIC,
        topics["event"],
        incremental_configs=[ConfigEntry("max.message.bytes", "1048576", incremental_operation=AlterConfigOpType.SET)],
    )
    admin = kafka_broker.admin()
    for f in admin.incremental_alter_configs([res]).values():
        f.result(30)
    deadline = time.monotonic() + 60
    while True:  # the client retries the same body (Retry-After) until it is taken
        r = requests.post(c.url + "/v1/events", data=body, headers={"Content-Type": "application/json"}, timeout=30)
        if r.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert r.status_code == 200 and r.json()["accepted"] == 4, r.text
    msgs = read_topic(kafka_broker.bootstrap, topics["event"])
    assert sorted(orjson.loads(m.value())["event_id"] for m in msgs) == ["big", "small-0", "small-1", "small-2"]
    assert len({m.partition() for m in msgs}) == 2  # the failing record was on another partition than the others

    spec = _run(d)
    assert sorted(r["event_id"] for r in read_table(spec, "events").to_pylist()) == [
        "big",
        "small-0",
        "small-1",
        "small-2",
    ]
    assert read_table(spec, "dead_letters").num_rows == 0


def test_a_retried_request_whose_answer_was_lost_is_stored_once(
    kafka_broker, collect_topics, tmp_path, start_collector
):
    """The client sends a request and does not wait for the answer (it closes the
    connection); the door commits it anyway and is then killed (SIGKILL). The client
    retries the same body on a new door: the topic holds every envelope twice (the door
    derived the same event_ids for the envelopes that had none), obs.events once, and the
    run counts each second copy as a ``duplicate``."""
    import socket
    from urllib.parse import urlsplit

    from runners.stats import STATS

    d = collect_spec_dict(tmp_path, kafka_broker.bootstrap, collect_topics)
    c = start_collector(d)
    now = int(time.time() * 1000)
    envs = [
        {
            **({"event_id": f"own-{i}"} if i % 2 else {}),  # the even ones get the door's derived id
            "page": f"/p{i}",
            "session_id": f"s-{i % 3}",
            "timestamp": iso(now - 5000 + i),
            "events": [{"type": "click", "target": f"#b{j}"} for j in range(1 + i % 2)],
        }
        for i in range(8)
    ]
    body = orjson.dumps(envs)
    u = urlsplit(c.url)
    with socket.create_connection((u.hostname, u.port), timeout=10) as s:  # send, never read the answer
        s.sendall(
            b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nUser-Agent: app/1.0\r\n"
            + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        time.sleep(0.05)
    deadline = time.monotonic() + 30
    while len(read_topic(kafka_broker.bootstrap, collect_topics["event"])) < len(envs):
        assert time.monotonic() < deadline, "the door did not commit the request"
        time.sleep(0.2)
    c.proc.kill()  # the collector dies right after the commit
    c.proc.wait(10)
    c2 = start_collector(d)
    r = requests.post(  # the same client and body (the derived ids cover the body)
        c2.url + "/v1/events",
        data=body,
        headers={"Content-Type": "application/json", "User-Agent": "app/1.0"},
        timeout=30,
    )
    assert r.status_code == 200 and r.json()["accepted"] == len(envs), r.text
    msgs = read_topic(kafka_broker.bootstrap, collect_topics["event"])
    ids = [orjson.loads(m.value())["event_id"] for m in msgs]
    assert len(ids) == 2 * len(envs) and all(n == 2 for n in Counter(ids).values())

    STATS.reset()
    spec = _run(d)
    rows = Counter(read_table(spec, "events").column("event_id").to_pylist())
    docs = [orjson.loads(m.value()) for m in msgs]
    assert rows == Counter({e["event_id"]: len(e["events"]) for e in docs})  # each envelope's interactions, once
    assert sum(rows.values()) == sum(1 + i % 2 for i in range(8))
    assert STATS.dropped_by_source_reason[("events", "duplicate")] == len(envs)
    assert STATS.by_source[("events", "in")] == 2 * len(envs)
    assert STATS.by_source[("events", "dropped")] == len(envs)
    assert STATS.records_in == STATS.records_accepted + STATS.records_dead + STATS.records_dropped
