"""The TailSampler's timing, buffering, bounds, decision cache and state."""

import random

import pyarrow as pa
import pytest

from tests.tail_sampling.helpers import kept_numbers, sampler, span, table, tid, trace
from transforms.tail_sampling import TailSampler

pytestmark = pytest.mark.traces

ALWAYS = {"name": "all", "type": "always_sample"}
ERR = {"name": "err", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}}


def accounted(ts: TailSampler, outs) -> bool:
    kept = sum(d.spans.num_rows for d in outs)
    dropped = sum(sum(d.dropped_spans.values()) for d in outs)
    return ts.spans_in == kept + dropped + ts.buffered_spans


def test_decision_wait_and_early_decision_after_root():
    ts = sampler(ALWAYS, decision_wait="10s", decision_wait_after_root_received="2s")
    ts.add(table([span(1, 1, 0)]), 0)  # child first, no root yet
    ts.add(table([span(2, 0)]), 1000)  # trace 2: root arrives at 1 s
    assert ts.advance(2999).traces.num_rows == 0
    d = ts.advance(3000)  # 1 s + 2 s after trace 2's root
    assert kept_numbers(d.traces.column("trace_id").to_pylist()) == [2]
    ts.add(table([span(1, 0)]), 8500)  # trace 1's root at 8.5 s: decision_wait (10 s) comes first
    assert ts.advance(9999).traces.num_rows == 0
    d = ts.advance(10_000)
    assert kept_numbers(d.traces.column("trace_id").to_pylist()) == [1]
    assert d.traces.column("root_name").to_pylist() == ["GET /"] and d.traces.column("span_count").to_pylist() == [2]


def test_one_trace_over_several_batches_like_kafka_partitions():
    # spans of one trace spread over three "partitions", interleaved with other traces, out of order
    rows = [span(7, i, None if i == 0 else 0, start_ms=i * 10, dur_ms=5, service=f"svc{i % 3}") for i in range(9)]
    rows[4]["status_code"] = "ERROR"
    parts = [rows[2::3] + trace(8, n=2), rows[1::3], rows[0::3] + trace(9, n=2)]
    ts = sampler(ERR)
    for k, p in enumerate(parts):
        ts.add(table(p), k * 100)
    d = ts.advance(10_200)  # 10 s after trace 9's first span
    assert kept_numbers(d.traces.column("trace_id").to_pylist()) == [7]
    assert d.spans.num_rows == 9 and sorted(d.spans.column("span_id").to_pylist()) == sorted(r["span_id"] for r in rows)
    row = d.traces.to_pylist()[0]
    assert row["services"] == ["svc0", "svc1", "svc2"] and row["root_service"] == "svc0"
    assert row["error_count"] == 1 and row["trace_duration_ms"] == 85.0
    assert d.dropped_traces == {"not_sampled": 2}


def test_late_and_out_of_order_spans_follow_the_cached_decision():
    ts = sampler(ERR, decision_cache={"sampled_cache_size": 10, "non_sampled_cache_size": 10})
    ts.add(table(trace(1, status="ERROR") + trace(2)), 0)
    outs = [ts.advance(10_000)]
    assert kept_numbers(outs[0].traces.column("trace_id").to_pylist()) == [1]
    # late spans, one per trace, the late one of trace 2 an ERROR: it follows the drop
    ts.add(table([span(1, 50, 0), span(2, 50, 0, status="ERROR")]), 20_000)
    outs.append(ts.advance(20_000))
    d = outs[-1]
    assert d.late_spans_kept == 1 and d.spans.column("sampling_policy").to_pylist() == ["err"]
    assert d.dropped_spans == {"late_after_drop": 1} and d.traces.num_rows == 0
    assert accounted(ts, outs)
    # a cache of size 0 forgets: a late span starts a new trace
    ts = sampler(ALWAYS, decision_cache={"sampled_cache_size": 0, "non_sampled_cache_size": 0})
    ts.add(table(trace(1)), 0)
    ts.advance(10_000)
    ts.add(table([span(1, 50, 0)]), 11_000)
    assert ts.buffered_traces == 1


def test_decision_cache_is_bounded_lru():
    ts = sampler(ALWAYS, decision_cache={"sampled_cache_size": 2, "non_sampled_cache_size": 0})
    ts.add(table(trace(1) + trace(2) + trace(3)), 0)
    ts.advance(10_000)
    assert list(ts._sampled_cache) == [tid(2), tid(3)]


def test_num_traces_overflow_decides_oldest_early_and_counts():
    ts = sampler(ERR, num_traces=3)
    for k in range(1, 6):  # five traces, one batch each; traces 1 and 4 have errors
        ts.add(table(trace(k, status="ERROR" if k in (1, 4) else "UNSET")), k * 100)
    assert ts.buffered_traces == 3
    d = ts.advance(500)
    assert kept_numbers(d.traces.column("trace_id").to_pylist()) == [1]  # decided early, with its spans
    assert d.early_decisions == {"num_traces_overflow": 2}
    assert d.dropped_traces == {"num_traces_overflow": 1} and d.dropped_spans == {"num_traces_overflow": 3}
    d2 = ts.flush_all(1000)
    assert kept_numbers(d2.traces.column("trace_id").to_pylist()) == [4]
    assert accounted(ts, [d, d2])
    # drop_oldest: the collector's behaviour, no decision at all
    ts = sampler(ALWAYS, num_traces=3, num_traces_overflow="drop_oldest")
    for k in range(1, 6):
        ts.add(table(trace(k)), k)
    d = ts.advance(10)
    assert d.traces.num_rows == 0 and d.dropped_traces == {"num_traces_overflow": 2}


def test_max_trace_size_decides_early():
    ts = sampler(ALWAYS, max_trace_size=5)
    ts.add(table(trace(1, n=3) + trace(2, n=2)), 0)
    ts.add(table([span(1, i, 0) for i in range(3, 6)]), 100)  # trace 1 reaches 6 >= 5 spans
    d = ts.advance(200)
    assert kept_numbers(d.traces.column("trace_id").to_pylist()) == [1]
    assert d.traces.column("span_count").to_pylist() == [6] and d.early_decisions == {"max_trace_size": 1}
    ts.add(table([span(1, 9, 0)]), 300)  # later spans follow the decision
    assert ts.advance(300).late_spans_kept == 1


def _stream(seed=7, n_traces=300):
    rnd = random.Random(seed)
    rows = []
    for k in range(1, n_traces + 1):
        t0 = rnd.randrange(0, 60_000)
        n = rnd.randint(1, 6)
        status = "ERROR" if rnd.random() < 0.1 else "UNSET"
        for i in range(n):
            rows.append(
                (
                    t0 + rnd.randrange(0, 3000),
                    span(
                        k,
                        i,
                        None if i == 0 else 0,
                        t0 + i,
                        rnd.randint(1, 400),
                        status if i == n - 1 else "UNSET",
                        {"tier": rnd.choice("ab")},
                    ),
                )
            )
    rows.sort(key=lambda r: r[0])
    batches, cur, edge = [], [], 500
    for at, r in rows:
        while at >= edge:
            batches.append((edge, cur))
            cur, edge = [], edge + 500
        cur.append(r)
    batches.append((edge, cur))
    return batches


CFG = {
    "decision_wait": "5s",
    "decision_wait_after_root_received": "2s",
    "num_traces": 15,
    "max_trace_size": 5,
    "decision_cache": {"sampled_cache_size": 50, "non_sampled_cache_size": 50},
    "policies": [
        ERR,
        {"name": "slow", "type": "latency", "latency": {"threshold_ms": 350}},
        {"name": "p", "type": "probabilistic", "probabilistic": {"sampling_percentage": 20}},
        {"name": "rl", "type": "rate_limiting", "rate_limiting": {"spans_per_second": 15}},
        {
            "name": "c",
            "type": "composite",
            "composite": {
                "max_total_spans_per_second": 8,
                "composite_sub_policy": [
                    {"name": "a", "type": "string_attribute", "string_attribute": {"key": "tier", "values": ["a"]}}
                ],
            },
        },
    ],
}


def _run(batches, snap_at=None):
    ts = TailSampler(CFG)
    outs = []
    for k, (now, rows) in enumerate(batches):
        if rows:
            ts.add(table(rows), now)
        if k == snap_at:
            ts = TailSampler.restore(CFG, ts.snapshot())
        if k % 3 == 0:
            outs.append(ts.advance(now))
    outs.append(ts.flush_all(10**6))
    return ts, outs


def _summary(outs):
    spans = pa.concat_tables([d.spans for d in outs])
    traces = pa.concat_tables([d.traces for d in outs])
    counts = {}
    for d in outs:
        for k, v in d.dropped_spans.items():
            counts[k] = counts.get(k, 0) + v
    return spans.to_pylist(), traces.to_pylist(), counts


def test_snapshot_restore_mid_stream_gives_the_same_output():
    batches = _stream()
    ts, plain = _run(batches)
    assert accounted(ts, plain)
    spans, traces, counts = _summary(plain)
    assert traces and counts.get("not_sampled") and counts.get("num_traces_overflow") and counts.get("max_trace_size")
    for at in (31, 100):  # mid-stream: buffered traces, caches, limiter state, pending output
        _, resumed = _run(batches, snap_at=at)
        assert _summary(resumed) == (spans, traces, counts)


def test_otel_sdk_spans_through_the_codec():
    from opentelemetry.exporter.otlp.proto.common._internal.trace_encoder import encode_spans
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import Status, StatusCode

    from schemas.codecs.otlp_codec import OtlpCodec
    from transforms.batch import RawBatch

    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "checkout"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("t")
    t0 = 1_700_000_000_000_000_000
    for k in range(3):  # a fast ok trace, a trace with an error, a slow trace
        with tracer.start_as_current_span("POST /pay", start_time=t0, end_on_exit=False) as root:
            with tracer.start_as_current_span("db.query", start_time=t0 + 1_000_000, end_on_exit=False) as child:
                child.set_attribute("db.system", "postgresql")
                if k == 1:
                    child.set_status(Status(StatusCode.ERROR, "boom"))
                child.end(end_time=t0 + 3_000_000)
            root.end(end_time=t0 + (900_000_000 if k == 2 else 5_000_000))
    payload = encode_spans(exporter.get_finished_spans()).SerializeToString()
    batch = OtlpCodec("span").decode(RawBatch("s", "otlp_spans", 0, [payload], [0], [0])).table
    assert batch.num_rows == 6
    ts = sampler(ERR, {"name": "slow", "type": "latency", "latency": {"threshold_ms": 500}})
    ts.add(batch, 0)
    d = ts.advance(10_000)
    rows = sorted(d.traces.to_pylist(), key=lambda r: r["trace_duration_ms"])
    assert [r["sampling_policy"] for r in rows] == ["err", "slow"]
    assert rows[1]["trace_duration_ms"] == 900.0 and rows[0]["root_name"] == "POST /pay"
    assert rows[0]["services"] == ["checkout"] and d.spans.num_rows == 4 and "_i" in d.spans.column_names
