"""A retried door request that Kafka had committed writes the same envelopes again; the
events flow stores each ``event_id`` once, on both engines, against a real broker:

- the same batch of envelopes produced twice to the events topic (exactly what a retried
  request writes: the same values, keyed by session, later record timestamps) → each
  event_id's rows once, the ``duplicate`` counter equal to the repeats, in = accepted +
  dead + dropped;
- a restart between the two copies (the second run seeds the ids from obs.events);
- envelopes that differ only in their event_id never merge;
- ``dedupe: {enabled: false}`` keeps both copies (what the tables held before the dedupe)."""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime

import orjson
import pytest
from confluent_kafka import Producer

from pipelines.loader import parse_spec
from runners.stats import STATS
from tests.e2e.test_kafka_pipeline import run_inproc, spec_data
from tests.helpers import read_table

pytestmark = [pytest.mark.kafka]

SESSIONS = 5
PER_SESSION = 6


def envelopes(now_ms: int) -> list[dict]:
    """``SESSIONS`` sessions of ``PER_SESSION`` envelopes, 1-3 interactions each, and two
    twins: envelopes equal but for their event_id."""
    out = []
    for s in range(SESSIONS):
        for k in range(PER_SESSION):
            out.append(
                {
                    "event_id": f"ev-{s}-{k}",
                    "page": f"/p{k}",
                    "session_id": f"sess-{s}",
                    "timestamp": datetime.fromtimestamp((now_ms - 60_000 + k) / 1000, UTC).isoformat(),
                    "client_ip": "203.0.113.7",
                    "events": [{"type": "click", "target": f"#b{j}"} for j in range(1 + k % 3)],
                }
            )
    twin = {**out[0], "session_id": "sess-twin"}
    out += [{**twin, "event_id": "twin-1"}, {**twin, "event_id": "twin-2"}]
    return out


def produce(bootstrap: str, topic: str, envs: list[dict], ts_ms: int) -> None:
    """``envs`` as the door writes them: JSON envelopes keyed by session id, record time = receive time."""
    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all"})
    for e in envs:
        p.produce(
            topic,
            value=orjson.dumps(e),
            key=e["session_id"].encode(),
            timestamp=ts_ms,
            headers=[("received_at", str(ts_ms).encode())],
        )
    assert p.flush(60) == 0


def expected_rows(envs: list[dict]) -> Counter:
    return Counter({e["event_id"]: len(e["events"]) for e in envs})


def event_rows(spec) -> Counter:
    return Counter(read_table(spec, "events").column("event_id").to_pylist())


@pytest.fixture
def setup(kafka_broker, kafka_topic_factory, tmp_path):
    topics = {name: kafka_topic_factory(partitions=4, prefix=f"dd{name}") for name in ("events", "logs")}
    return kafka_broker.bootstrap, topics, tmp_path / "wh"


def _spec(bootstrap, topics, wh, **dedupe):
    data = spec_data(wh, bootstrap, topics, batch=7)  # small batches: copies in other batches than their first
    if dedupe:
        flow = next(f for f in data["flows"] if f["source"] == "events")
        flow["steps"].append({"kind": "dedupe", **dedupe})
    return parse_spec(data)


def _balanced() -> bool:
    return STATS.records_in == STATS.records_accepted + STATS.records_dead + STATS.records_dropped


@pytest.mark.parametrize("runner", ["bytewax", "beam"])
def test_a_batch_written_twice_is_stored_once(runner, setup):
    bootstrap, topics, wh = setup
    now = int(time.time() * 1000)
    envs = envelopes(now)
    produce(bootstrap, topics["events"], envs, now)
    produce(bootstrap, topics["events"], envs, now + 1500)  # the retry, 1.5 s later
    spec = _spec(bootstrap, topics, wh)
    run_inproc(runner, spec)
    assert event_rows(spec) == expected_rows(envs)  # twins included: different ids never merge
    assert STATS.records_in == 2 * len(envs)
    assert STATS.records_accepted == len(envs) and STATS.records_dead == 0
    assert STATS.records_dropped == len(envs) and _balanced()
    assert STATS.dropped_by_source_reason == Counter({("events", "duplicate"): len(envs)})
    assert read_table(spec, "dead_letters").num_rows == 0


@pytest.mark.parametrize("runner", ["bytewax", "beam"])
def test_a_restart_between_the_copies_still_dedupes(runner, setup):
    bootstrap, topics, wh = setup
    now = int(time.time() * 1000)
    envs = envelopes(now)
    produce(bootstrap, topics["events"], envs, now)
    spec = _spec(bootstrap, topics, wh)
    run_inproc(runner, spec)
    assert STATS.records_accepted == len(envs) and STATS.records_dropped == 0
    # the retry lands after the job stopped; the next run seeds the ids from obs.events
    extra = {**envs[1], "event_id": "new-1"}
    produce(bootstrap, topics["events"], [*envs, extra], now + 2000)
    run_inproc(runner, spec)
    assert STATS.records_in == len(envs) + 1
    assert STATS.records_accepted == 1 and STATS.records_dropped == len(envs) and _balanced()
    assert STATS.dropped_by_source_reason == Counter({("events", "duplicate"): len(envs)})
    assert event_rows(spec) == expected_rows([*envs, extra])


def test_beyond_the_window_or_turned_off_a_copy_is_stored_again(setup):
    bootstrap, topics, wh = setup
    now = int(time.time() * 1000)
    envs = envelopes(now)[:4]
    produce(bootstrap, topics["events"], envs, now)
    produce(bootstrap, topics["events"], envs, now + 3000)  # 3 s later: beyond a 2 s window
    spec = _spec(bootstrap, topics, wh, window="2s")
    run_inproc("bytewax", spec)
    assert STATS.records_dropped == 0 and STATS.records_accepted == 2 * len(envs)
    assert event_rows(spec) == Counter({k: 2 * n for k, n in expected_rows(envs).items()})
    off = _spec(bootstrap, topics, wh.parent / "wh-off", enabled=False)
    run_inproc("bytewax", off)
    assert STATS.records_dropped == 0 and STATS.records_accepted == 2 * len(envs)
