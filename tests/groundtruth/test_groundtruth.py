"""Ground truth on traffic we did not generate with the pipeline's own generator
(issue 12 item 5): the user-side model of tests/groundtruth/traffic.py, produced to a real
broker on all four topics, read back by a bounded run on Bytewax and on Beam with forced
read orders (each topic fully, spans last; all partitions interleaved), and every answer
compared with the model's own:

- RED: calls and errors per service and minute, exactly; one row per series and minute
  whose p50 / p95 / p99 are within the sketch's relative accuracy (1%) of the exact ones;
  the error rate per service and minute;
- kept traces: exactly the traces with an error and the slow ones, by policy;
- logs: every WARN / ERROR line and every line of a kept trace (sample_rate 1); the
  untraced heartbeats sampled per line at 20% (binomially plausible; sum(1/sample_rate)
  estimates their count);
- funnel step times and time to convert (count, sum, min, max, p50..p99) per report hour,
  exactly, with a session whose step 1 is stamped before the view it followed; and what
  ``obsflow ui``'s API shows for them (time between steps: median, p75, p95);
- every saved query (pipelines/queries/) answers what the model says.

Runtime: one production, two bounded runs (Bytewax reading each topic fully, spans last;
Beam reading every partition in turn) of ~2,100 records in batches of 8 (small batches:
many of them, as a long replay has); ``OBSFLOW_GROUNDTRUTH_ALL=1`` (``make groundtruth``)
adds the other two engine / order pairs."""

from __future__ import annotations

import math
import os
import time
from collections import Counter, defaultdict
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest
import yaml
from confluent_kafka import Producer

from pipelines import DEFAULT_SPEC
from pipelines.loader import parse_spec
from runners.job import RunRequest
from runners.stats import STATS
from tests.groundtruth import traffic
from tests.groundtruth.ordered import OrderedKafkaSource
from tests.helpers import read_table

pytestmark = [pytest.mark.kafka, pytest.mark.traces]

QUERIES = Path(__file__).resolve().parents[2] / "pipelines" / "queries"
ACCURACY = 0.01  # the spec's red.relative_accuracy


@pytest.fixture(scope="module")
def produced(kafka_broker):
    """The model's records on four fresh 4-partition topics, with their record timestamps."""
    base = (int(time.time() * 1000) // traffic.MIN_MS - traffic.MINUTES - 10) * traffic.MIN_MS
    model = traffic.build(base)
    suffix = time.time_ns() % 10**9
    topics = {t: f"gt-{t}-{suffix}" for t in ("spans", "logs", "events", "metrics")}
    for name in topics.values():
        kafka_broker.create_topic(name, partitions=traffic.PARTITIONS)
    p = Producer({"bootstrap.servers": kafka_broker.bootstrap, "enable.idempotence": True, "linger.ms": 5})
    for r in model.records:
        p.produce(topics[r.topic], r.value, partition=r.partition, timestamp=r.ts_ms)
    assert p.flush(60) == 0
    yield kafka_broker.bootstrap, topics, model
    for name in topics.values():
        try:
            kafka_broker.delete_topic(name)
        except Exception:  # noqa: BLE001 - cleanup only
            pass


def spec_for(warehouse, bootstrap: str, topics: dict[str, str]):
    """The default spec on the model's topics: spans as OTLP, tail sampling by the
    deterministic policies (errors, then slow above 1 s), logs at the default 20%."""
    d = yaml.safe_load(DEFAULT_SPEC.read_text())
    d["storage"]["catalog"]["warehouse"] = str(warehouse)
    d["kafka"].update(
        {"bootstrap_servers": bootstrap, "group_id": f"gt-{Path(warehouse).name}", "poll_timeout": "100ms"}
    )
    for s in d["sources"]:
        s["topic"] = topics[s["name"]]
        if s["name"] == "spans":
            s["codec"] = "otlp_proto"
    d.pop("alerts", None)
    for f in d["flows"]:
        for st in f["steps"]:
            if st["kind"] == "tail_sample":
                st["sampler"]["policies"] = [
                    {"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}},
                    {"name": "slow", "type": "latency", "latency": {"threshold_ms": traffic.SLOW_MS}},
                ]
            if st["kind"] == "log_sample":
                st["config"] = {"sampling_percentage": traffic.LOG_PERCENT}
    return parse_spec(d)


# CI: both engines, both orders between them (about 3 min); OBSFLOW_GROUNDTRUTH_ALL=1 (make
# groundtruth) adds the other two pairs
RUNS = [("bytewax", "topics"), ("beam", "interleaved")]
if os.environ.get("OBSFLOW_GROUNDTRUTH_ALL"):
    RUNS += [("bytewax", "interleaved"), ("beam", "topics")]


@pytest.fixture(scope="module", params=RUNS, ids=[f"{e}-{o}" for e, o in RUNS])
def landed(request, produced, tmp_path_factory):
    engine, order = request.param
    bootstrap, topics, model = produced
    spec = spec_for(tmp_path_factory.mktemp(f"gt-{engine}-{order}") / "wh", bootstrap, topics)
    # each topic fully, spans last (the order that lost spans), or every partition in turn
    source = OrderedKafkaSource(spec, order, [topics[t] for t in ("logs", "events", "metrics", "spans")], batch_size=8)
    STATS.reset()
    req = RunRequest(spec=spec, runner=engine, source="kafka", bounded=True, source_override=source)
    if engine == "bytewax":
        from runners.bytewax.run import run
    else:
        from runners.beam.run import run
    run(req)
    return spec, model, STATS.snapshot()


def _minute(model, ts) -> int:
    return (int(ts.timestamp() * 1000) - model.base_ms) // traffic.MIN_MS


def _red(spec, model, name: str) -> list[dict]:
    m = read_table(spec, "metrics").to_pylist()
    return [
        r | {"labels": dict(r["labels"]), "minute": _minute(model, r["window_start"])} for r in m if r["name"] == name
    ]


def test_nothing_is_lost_or_dead_lettered(landed):
    spec, model, stats = landed
    assert stats["records_in"] == len(model.records)
    assert stats["records_dead"] == 0
    dead = read_table(spec, "dead_letters")
    assert dead.num_rows == 0, Counter(dead.column("reason").to_pylist())


def test_red_calls_and_errors_per_service_and_minute(landed):
    spec, model, _ = landed
    got = defaultdict(lambda: [0, 0])
    for r in _red(spec, model, "span.calls"):
        got[(r["labels"]["service"], r["minute"])][0] += r["count"]
    for r in _red(spec, model, "span.errors"):
        got[(r["labels"]["service"], r["minute"])][1] += r["count"]
    want = model.calls_errors()
    assert {k: tuple(v) for k, v in got.items()} == want
    assert sum(c for c, _ in want.values()) == len(model.spans)
    # the spikes are where the model put them
    rate = {k: e / c for k, (c, e) in want.items()}
    assert max(rate, key=rate.get) == traffic.ERROR_SPIKE  # the spike is where the model put it


def test_red_quantiles_one_row_per_series_and_minute(landed):
    spec, model, _ = landed
    want = model.red_series()
    rows = _red(spec, model, "span.duration_ms")
    keys = [
        (r["labels"]["service"], r["labels"]["operation"], r["labels"]["kind"], r["labels"]["status"], r["minute"])
        for r in rows
    ]
    assert sorted(keys) == sorted(want), "one row per series and minute"
    for key, r in zip(keys, rows):
        vals = want[key]
        assert r["count"] == len(vals)
        assert r["min"] == pytest.approx(min(vals), abs=1e-3) and r["max"] == pytest.approx(max(vals), abs=1e-3)
        for col, q in (("p50", 0.5), ("p75", 0.75), ("p95", 0.95), ("p99", 0.99)):
            exact = traffic.exact_quantile(vals, q)
            assert abs(r[col] - exact) <= ACCURACY * exact + 1e-3, (key, col, r[col], exact)
    svc, minute = traffic.LATENCY_SPIKE
    spike = [r for k, r in zip(keys, rows) if k[0] == svc and k[4] == minute and k[2] == "SERVER"]
    assert spike and min(r["p50"] for r in spike) > traffic.SLOW_MS


def test_kept_traces_are_the_error_and_slow_ones(landed):
    spec, model, _ = landed
    kept = model.kept_traces()
    traces = {t["trace_id"]: t for t in read_table(spec, "traces").to_pylist()}
    assert {t: r["sampling_policy"] for t, r in traces.items()} == kept
    assert Counter(kept.values())["slow"] > 0 and Counter(kept.values())["errors"] > 0
    spans = read_table(spec, "spans")
    per_trace = Counter(s.context.trace_id for s in model.spans)
    assert spans.num_rows == sum(n for t, n in per_trace.items() if format(t, "032x") in kept)


def test_logs_kept_and_estimated(landed):
    spec, model, _ = landed
    exact, heartbeats, errors = model.kept_logs()
    logs = read_table(spec, "logs").to_pylist()
    hb = [r for r in logs if r["message"] == "heartbeat ok"]
    others = Counter(r["service"] for r in logs if r["message"] != "heartbeat ok")
    assert others == +exact
    assert all(r["sample_rate"] == 1.0 for r in logs if r["message"] != "heartbeat ok")
    # heartbeats: each line has its own fate (issue 12 item 3): kept ~ Binomial(n, 20%), each
    # standing for 1 / 0.2 lines; asserted within 4.5 standard deviations
    n, p = sum(heartbeats.values()), traffic.LOG_PERCENT / 100
    assert {r["sample_rate"] for r in hb} == {p}
    assert abs(len(hb) - n * p) <= 4.5 * math.sqrt(n * p * (1 - p)), (len(hb), n)
    est = sum(1 / r["sample_rate"] for r in hb)
    assert abs(est - n) <= 4.5 * math.sqrt(n * (1 - p) / p), (est, n)
    for svc in traffic.SERVICES:
        k = sum(1 for r in hb if r["service"] == svc)
        assert 0 < k < heartbeats[svc], svc


def _summary(values: list[int]) -> tuple:
    """count, sum, min, max, p50, p75, p90, p95, p99 of ``values``: the quantiles as the lower
    order statistic (the funnel report's documented definition), in plain Python."""
    return (
        len(values),
        float(sum(values)),
        float(min(values)),
        float(max(values)),
        *(float(traffic.exact_quantile(values, q)) for q in (0.5, 0.75, 0.9, 0.95, 0.99)),
    )


SUMMARY = ("count", "sum", "min", "max", "p50", "p75", "p90", "p95", "p99")


def test_funnel_step_times_and_time_to_convert(landed):
    """Time between steps and time to convert per report hour, exactly as the model says: a
    step is reached at the latest first occurrence among steps 1..k, so the session whose
    step 1 is stamped before the view adds 0 there, never a negative time."""
    spec, model, _ = landed
    want_steps, want_convert = model.step_timings()
    assert set(model.stamped) == set(model.sessions) and all(min(v) >= 0 for v in want_steps.values())
    assert sum(len(v) for v in want_convert.values()) == len(model.conversions)
    rows = [r | {"labels": dict(r["labels"])} for r in read_table(spec, "metrics").to_pylist()]
    hour = lambda r: int(r["window_start"].timestamp() * 1000)  # noqa: E731
    got_steps = {
        (hour(r), int(r["labels"]["step_index"])): tuple(r[c] for c in SUMMARY)
        for r in rows
        if r["name"] == "funnel.step.time_ms" and r["labels"]["funnel"] == "signup"
    }
    assert got_steps == {k: _summary(v) for k, v in want_steps.items()}
    got_convert = {hour(r): tuple(r[c] for c in SUMMARY) for r in rows if r["name"] == "funnel.time_to_convert_ms"}
    assert got_convert == {k: _summary(v) for k, v in want_convert.items()}
    jit = [r for r in rows if r["name"] == "funnel.step.time_ms" and r["labels"]["step"] == "step_1"]
    assert jit and all(r["min"] == 0 for r in jit)  # step_1 stamped 300+ ms before the view: 0, not negative


def test_ui_funnel_time_panels_answer_what_the_model_says(landed):
    """What ``obsflow ui``'s API returns (its own process over the landed warehouse) for the
    time-between-steps and time-to-convert panels, against the model's answer."""
    from tests.ui.conftest import start_ui, stop_ui

    spec, model, _ = landed
    want_steps, want_convert = model.step_timings()
    server = start_ui(Path(spec.storage.catalog.warehouse))
    try:
        page = server.api("/product", range="all")
    finally:
        stop_ui(server)
    panels = {p["id"]: p for p in page["panels"]}
    step_time = panels["step_time"]
    assert step_time["columns"] == [
        "funnel",
        "step_index",
        "step",
        "sessions",
        "avg_ms",
        "worst_window_p50_ms",
        "worst_window_p75_ms",
        "worst_window_p95_ms",
    ]
    want = []
    for k in sorted({k for _, k in want_steps}):
        per_hour = [v for (_, kk), v in sorted(want_steps.items()) if kk == k]
        n, total = sum(len(v) for v in per_hour), sum(sum(v) for v in per_hour)
        want.append(
            [
                "signup",
                k,
                traffic.FUNNEL_STEPS[k],
                n,
                sql_round(total / n, 1),
                *(float(max(traffic.exact_quantile(v, q) for v in per_hour)) for q in (0.5, 0.75, 0.95)),
            ]
        )
    assert step_time["rows"] == want
    ttc = panels["time_to_convert"]
    assert ttc["columns"] == [
        "funnel",
        "window_start",
        "conversions",
        "avg_ms",
        "p50_ms",
        "p75_ms",
        "p90_ms",
        "p95_ms",
        "min_ms",
        "max_ms",
    ]
    got = [[r[0], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9]] for r in ttc["rows"]]
    assert got == [
        [
            "signup",
            len(v),
            sql_round(sum(v) / len(v), 1),
            *(float(traffic.exact_quantile(v, q)) for q in (0.5, 0.75, 0.9, 0.95)),
            float(min(v)),
            float(max(v)),
        ]
        for _, v in sorted(want_convert.items())
    ]


def _saved(spec, name: str):
    from runners.query import query, saved_query

    return query(spec, saved_query(name))


def test_every_saved_query_answers_what_the_model_says(landed):
    spec, model, _ = landed
    names = sorted(p.stem for p in QUERIES.glob("*.sql"))
    checks = {
        "funnel_dropoff": _check_funnel,
        "error_rate_by_service": _check_error_rate,
        "p99_latency_by_service": _check_p99,
        "time_to_convert": _check_time_to_convert,
    }
    assert set(names) <= set(checks), f"saved queries without a model answer: {sorted(set(names) - set(checks))}"
    for name in names:
        cols, rows = _saved(spec, name)
        checks[name](model, cols, rows, spec)


def _check_funnel(model, cols, rows, spec):
    assert cols == ["step_index", "step", "sessions", "dropped_after_step", "pct_of_first_step"]
    assert [(int(a), b, int(c), int(d), float(e)) for a, b, c, d, e in rows] == model.funnel()


def _check_time_to_convert(model, cols, rows, spec):
    assert cols == ["funnel", "window_start", "conversions", "avg_ms", "p50_ms", "p75_ms", "p90_ms", "min_ms", "max_ms"]
    want = model.time_to_convert()
    assert len(want) >= 1 and sum(w[1] for w in want) == len(model.conversions)
    got = [
        (f, int(ws.timestamp() * 1000), int(n), float(avg), int(p50), int(p75), int(p90), int(lo), int(hi))
        for f, ws, n, avg, p50, p75, p90, lo, hi in rows
    ]
    assert got == [("signup", *w) for w in want]


def _check_p99(model, cols, rows, spec):
    assert cols == ["service", "worst_minute_p99_ms", "worst_minute_p50_ms", "calls"]
    want = model.p99_by_service()
    assert [r[0] for r in rows] == sorted(want, key=lambda s: (-want[s][0], s)) or {r[0] for r in rows} == set(want)
    for svc, p99, p50, calls in rows:
        w99, w50, wcalls = want[svc]
        assert int(calls) == wcalls, svc
        assert abs(float(p99) - w99) <= ACCURACY * w99 + 1e-3, (svc, p99, w99)
        assert abs(float(p50) - w50) <= ACCURACY * w50 + 1e-3, (svc, p50, w50)


def sql_round(x: float, digits: int) -> float:
    """``round(x, digits)`` as DuckDB and Trino compute it: half away from zero (Python's
    ``round`` is half to even, so 6 / 192 = 0.03125 would give 0.0312 where SQL gives 0.0313)."""
    return float(Decimal(repr(x)).quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP))


def _check_error_rate(model, cols, rows, spec):
    assert cols == ["service", "errors", "lines", "error_rate"]
    exact, heartbeats, errors = model.kept_logs()
    got = {r[0]: (float(r[1]), float(r[2]), float(r[3])) for r in rows}
    assert set(got) == set(traffic.SERVICES)
    logs = read_table(spec, "logs").to_pylist()
    for svc in traffic.SERVICES:
        e, lines, rate = got[svc]
        assert e == errors[svc]
        # lines: the exactly kept ones, plus the heartbeats' estimate (5 per kept heartbeat)
        hb_kept = sum(1 for r in logs if r["service"] == svc and r["message"] == "heartbeat ok")
        assert lines == pytest.approx(exact[svc] + hb_kept / (traffic.LOG_PERCENT / 100), abs=0.05)
        n, p = heartbeats[svc], traffic.LOG_PERCENT / 100
        assert abs(lines - exact[svc] - n) <= 4.5 * math.sqrt(n * (1 - p) / p)
        assert rate == pytest.approx(sql_round(e / lines, 4), abs=1e-9)
