"""The trace stage's event time (issue 12 items 1 and 2), engine-agnostic: raw batches in
forced read orders through the graph and the stages (tests/groundtruth/sim.py).

Item 1: RED metrics count every span whatever order topics and partitions are read in
(on the old code the stage learnt a topic's partitions only once it had read from them:
reading the logs topic first moved its clock to the logs' latest time, the first span
batch closed every older window and later spans of those windows were dropped). A span
later than ``allowed_lateness`` (an unbounded run's late data) is dead-lettered as
``late_data`` and counted in the run stats and on /metrics.

Item 2: obs.metrics holds one row per series and window (not one per trace shard), with
quantiles within the sketch's relative accuracy of the exact ones."""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict

import pytest
from prometheus_client import generate_latest

from runners.metrics import registry
from runners.stats import RunStats
from tests.groundtruth.sim import StageHost, batches_of, log_json, span_json, spans_logs_spec, trace_id

BASE_US = 1_763_000_040_000 * 1000  # a whole minute
MIN_US = 60_000_000
PARTS = 4
SERVICES = ("checkout", "search", "auth")


def model(minutes: int = 20, per_minute: int = 20, seed: int = 7):
    """Traces (a SERVER root and a CLIENT child) and their log lines, plus untraced
    heartbeats; record timestamps are the spans' end (an exporter sends a span when it
    ends) and the lines' time. Returns the records per (topic, partition) and the spans."""
    rnd = random.Random(seed)
    spans, parts = [], defaultdict(list)
    k = 0
    for m in range(minutes):
        for i in range(per_minute):
            k += 1
            tid = trace_id(k)
            svc = SERVICES[k % len(SERVICES)]
            start = BASE_US + m * MIN_US + rnd.randrange(0, MIN_US - 3_000_000)
            dur = int(rnd.lognormvariate(3.0, 1.0) * 1000) + 1000  # us
            status = "ERROR" if rnd.random() < 0.1 else "UNSET"
            child_start, child_dur = start + 100, max(1, dur // 2)
            p = int(tid[:8], 16) % PARTS
            for sid, parent, service, name, kind, s, d, st in (
                (f"{k:012x}0001", None, svc, "GET /", "SERVER", start, dur, status),
                (f"{k:012x}0002", f"{k:012x}0001", svc, "db.query", "CLIENT", child_start, child_dur, "UNSET"),
            ):
                spans.append((service, name, kind, st, s, d))
                parts[("spans", p)].append(
                    (span_json(tid, sid, parent, service, name, kind, s, s + d, st), (s + d) // 1000)
                )
            parts[("logs", p)].append((log_json(start + 50, "INFO", svc, f"handled {k}", tid), (start + 50) // 1000))
        for i in range(5):
            ts = BASE_US + m * MIN_US + i * 10_000_000
            parts[("logs", i % PARTS)].append((log_json(ts, "INFO", "search", "heartbeat ok", None), ts // 1000))
    for recs in parts.values():
        recs.sort(key=lambda r: r[1])  # a partition is in record-timestamp order, as a live producer writes it
    return parts, spans


def ordered(parts, order: str, size: int = 5):
    """Raw batches in a forced read order."""
    per = {tp: batches_of(tp[0], tp[0], tp[1], recs, PARTS, size) for tp, recs in sorted(parts.items())}
    spans = [per[("spans", p)] for p in range(PARTS)]
    logs = [per[("logs", p)] for p in range(PARTS)]
    if order == "logs_first":
        return [b for bs in logs + spans for b in bs]
    if order == "spans_first":
        return [b for bs in spans + logs for b in bs]
    if order == "partitions_reversed":
        return [b for bs in reversed(spans + logs) for b in bs]
    assert order == "interleaved"
    out, live = [], [list(bs) for bs in logs + spans]
    while any(live):
        for bs in live:
            if bs:
                out.append(bs.pop(0))
    return out


def keys():
    return [f"{t}:{p}" for t in ("logs", "spans") for p in range(PARTS)]


def red_rows(host: StageHost, name: str) -> list[dict]:
    t = host.rows("metrics")
    return [r for r in t.to_pylist() if r["name"] == name] if t is not None else []


def exact_quantile(values: list[float], q: float) -> float:
    """The value at rank floor(q * (n - 1)) of the sorted values (the rank DDSketch reads)."""
    s = sorted(values)
    return s[int(math.floor(q * (len(s) - 1)))]


@pytest.mark.parametrize("order", ["logs_first", "spans_first", "interleaved", "partitions_reversed"])
def test_red_counts_every_span_whatever_the_read_order(tmp_path, order):
    parts, spans = model()
    host = StageHost(spans_logs_spec(tmp_path, shards=2), keys())
    for raw in ordered(parts, order):
        host.feed(raw)
    host.flush()
    want = Counter()
    for service, name, kind, status, s, _ in spans:
        want[(service, name, kind, status, (s - BASE_US) // MIN_US)] += 1
    got = Counter()
    for r in red_rows(host, "span.calls"):
        lab = dict(r["labels"])
        m = (int(r["window_start"].timestamp() * 1_000_000) - BASE_US) // MIN_US
        got[(lab["service"], lab["operation"], lab["kind"], lab["status"], m)] += r["count"]
    assert sum(got.values()) == len(spans)
    assert got == want
    dead = host.rows("dead_letters")
    assert dead is None or "late_data" not in dead.column("reason").to_pylist()


def test_one_row_per_series_and_window_with_the_series_quantiles(tmp_path, order="logs_first"):
    parts, spans = model()
    host = StageHost(spans_logs_spec(tmp_path, shards=2), keys())
    for raw in ordered(parts, order):
        host.feed(raw)
    host.flush()
    durations = defaultdict(list)
    for service, name, kind, status, s, d in spans:
        durations[(service, name, kind, status, (s - BASE_US) // MIN_US)].append(d / 1000.0)
    rows = red_rows(host, "span.duration_ms")
    seen = Counter()
    for r in rows:
        lab = dict(r["labels"])
        m = (int(r["window_start"].timestamp() * 1_000_000) - BASE_US) // MIN_US
        key = (lab["service"], lab["operation"], lab["kind"], lab["status"], m)
        seen[key] += 1
        vals = durations[key]
        assert r["count"] == len(vals), key
        assert r["min"] == pytest.approx(min(vals)) and r["max"] == pytest.approx(max(vals))
        for col, q in (("p50", 0.5), ("p75", 0.75), ("p90", 0.9), ("p95", 0.95), ("p99", 0.99)):
            exact = exact_quantile(vals, q)
            assert abs(r[col] - exact) <= 0.01 * exact + 1e-9, (key, col, r[col], exact)
    assert set(seen) == set(durations)
    assert set(seen.values()) == {1}, "a series-window written more than once"
    calls = Counter()
    for r in red_rows(host, "span.calls"):
        lab = dict(r["labels"])
        calls[(lab["service"], lab["operation"], lab["kind"], lab["status"], r["window_start"])] += 1
    assert set(calls.values()) == {1}


def test_spans_later_than_allowed_lateness_are_dead_lettered_and_counted(tmp_path):
    """An unbounded run: 20 minutes of traffic, then spans of minute 1 on partition 0 (14
    minutes behind every partition's event time, allowed_lateness 5m): their RED window
    had closed, so each is a ``late_data`` dead letter, counted in the run stats and on
    /metrics; the windows already written are not changed."""
    parts, spans = model(minutes=20, per_minute=20)
    host = StageHost(spans_logs_spec(tmp_path, shards=2), keys())
    for raw in ordered(parts, "interleaved"):
        host.feed(raw)
    before = Counter()
    for r in red_rows(host, "span.calls"):
        before[r["window_start"]] += r["count"]
    assert before, "windows closed while the run went on"
    late = []
    for k in range(7):
        s = BASE_US + MIN_US + k * 1000
        late.append(
            (
                span_json(trace_id(10_000 + k), f"{k:016x}", None, "checkout", "GET /", "SERVER", s, s + 5000, "UNSET"),
                s // 1000 + 5,
            )
        )
    next_offset = len(parts[("spans", 0)])
    for raw in batches_of("spans", "spans", 0, late, PARTS, 25, first_offset=next_offset):
        host.feed(raw)
    dead = host.rows("dead_letters").to_pylist()
    late_dead = [d for d in dead if d["reason"] == "late_data"]
    assert len(late_dead) == 7
    assert sorted(d["source_offset"] for d in late_dead) == list(range(next_offset, next_offset + 7))
    assert {(d["source"], d["source_topic"], d["source_partition"]) for d in late_dead} == {("spans", "spans", 0)}
    assert all(d["detail"] and "allowed_lateness" in d["detail"] for d in late_dead)
    stats = RunStats()
    for o in host.outputs:
        if hasattr(o, "counters"):
            stats.record_stage(o)
    assert stats.dead_by_reason["late_data"] == 7
    metrics = generate_latest(registry(stats)).decode()
    assert 'obsflow_dead_letters_total{reason="late_data",source="spans"} 7.0' in metrics
    after = Counter()
    for r in red_rows(host, "span.calls"):
        after[r["window_start"]] += r["count"]
    assert after == before
