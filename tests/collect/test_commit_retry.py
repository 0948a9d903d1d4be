"""The transactional commit against a paused broker (SIGSTOP, then SIGCONT), with the real
broker and the real ``obsflow collect``: a pause longer than one commit attempt
(``collect.commit_attempt_timeout``) and shorter than the request's ``request_timeout``
is ridden out by retried attempts (2xx, the records in Kafka exactly once, the retries
counted); a pause longer than the request's time is answered 503 + Retry-After within that
time, and nothing of the request is visible to a ``read_committed`` consumer afterwards."""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid

import orjson
import pytest
import requests

from tests.collect.conftest import collect_spec_dict
from tests.collect.test_collect_e2e import iso, read_topic

pytestmark = [pytest.mark.collect, pytest.mark.kafka, pytest.mark.slow]


def _events(n: int, session: str) -> list[dict]:
    ms = int(time.time() * 1000)
    return [
        {
            "event_id": f"{session}-{uuid.uuid4().hex}",
            "page": "/p",
            "timestamp": iso(ms),
            "session_id": session,
            "events": [{"type": "page_view"}],
        }
        for _ in range(n)
    ]


def _metric(url: str, name: str) -> float:
    """The value of the unlabelled sample ``name`` on the door's /metrics."""
    for line in requests.get(url + "/metrics", timeout=10).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not on /metrics")


def _post_in_thread(url: str, body: list[dict]) -> tuple[threading.Thread, dict]:
    """POST ``body`` to /v1/events from a thread; the result dict gets ``response`` and ``seconds``."""
    out: dict = {}

    def post() -> None:
        t0 = time.monotonic()
        try:
            out["response"] = requests.post(url + "/v1/events", json=body, timeout=60)
        except requests.RequestException as e:  # no answer at all is a failure of the test
            out["error"] = repr(e)
        out["seconds"] = time.monotonic() - t0

    th = threading.Thread(target=post, daemon=True)
    th.start()
    return th, out


def _door(broker, tmp_path, start_collector, request_timeout: str):
    topics = {s: f"r{s[:3]}-{uuid.uuid4().hex[:8]}" for s in ("event", "log", "span", "metric", "dead_letters")}
    for t in topics.values():
        broker.create_topic(t, partitions=2)
    c = start_collector(
        collect_spec_dict(
            tmp_path,
            broker.bootstrap,
            topics,
            collect={
                "request_timeout": request_timeout,
                "commit_attempt_timeout": "1s",
                "retry_after": "3s",
                "ready_check_interval": "1s",
                "transaction_writers": 1,
            },
        )
    )
    c.topics = topics
    warm = _events(3, "warm")  # the writer's transactions are initialized and its coordinator known
    r = requests.post(c.url + "/v1/events", json=warm, timeout=30)
    assert r.status_code == 200, r.text
    return c, warm


def _ids(bootstrap: str, topic: str) -> list[str]:
    return sorted(orjson.loads(m.value())["event_id"] for m in read_topic(bootstrap, topic))


def test_a_pause_shorter_than_the_request_is_retried_and_stored_once(private_kafka_broker, tmp_path, start_collector):
    broker = private_kafka_broker
    c, warm = _door(broker, tmp_path, start_collector, request_timeout="12s")
    assert _metric(c.url, "obsflow_collect_commit_retries") == 0
    body = _events(5, "paused")
    os.kill(broker.pid, signal.SIGSTOP)
    try:
        th, out = _post_in_thread(c.url, body)  # sent before the door's check sees the broker gone
        time.sleep(3.5)  # longer than one commit attempt (1s), shorter than the request (12s)
    finally:
        os.kill(broker.pid, signal.SIGCONT)
    th.join(60)
    assert "error" not in out, out
    r = out["response"]
    assert r.status_code == 200, (r.status_code, r.text, out["seconds"])
    assert r.json()["accepted"] == 5
    assert out["seconds"] >= 3.0  # it was answered after the pause, not before
    assert _ids(broker.bootstrap, c.topics["event"]) == sorted(e["event_id"] for e in warm + body)
    assert _metric(c.url, "obsflow_collect_commit_retries") >= 2  # attempts of 1s over a pause of 3.5s
    assert _metric(c.url, "obsflow_collect_transactions_committed") == 2


def test_a_pause_longer_than_the_request_is_503_and_nothing_visible(private_kafka_broker, tmp_path, start_collector):
    broker = private_kafka_broker
    c, warm = _door(broker, tmp_path, start_collector, request_timeout="3s")
    body = _events(5, "paused")
    os.kill(broker.pid, signal.SIGSTOP)
    try:
        th, out = _post_in_thread(c.url, body)
        th.join(30)  # answered while the broker is still paused
        assert "error" not in out, out
        r = out["response"]
        assert r.status_code == 503, (r.status_code, r.text)
        assert r.headers["retry-after"] == "3"
        assert out["seconds"] < 3.0 + 1.0, out["seconds"]  # within the request's time (and the answer's hand-off)
        time.sleep(1.0)
    finally:
        os.kill(broker.pid, signal.SIGCONT)
    assert _metric(c.url, "obsflow_collect_commit_retries") >= 1
    deadline = time.monotonic() + 60
    while requests.get(c.url + "/readyz", timeout=10).status_code != 200:
        assert time.monotonic() < deadline, "the door did not turn ready after the broker resumed"
        time.sleep(0.2)
    after = _events(2, "after")
    deadline = time.monotonic() + 60
    while True:  # the writer's producer may be replaced: its successor's init aborts the paused transaction
        r = requests.post(c.url + "/v1/events", json=after, timeout=30)
        if r.status_code == 200:
            break
        assert r.status_code == 503, (r.status_code, r.text)
        assert time.monotonic() < deadline, r.text
        time.sleep(0.5)
    assert _ids(broker.bootstrap, c.topics["event"]) == sorted(e["event_id"] for e in warm + after)
