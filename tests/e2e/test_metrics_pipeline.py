"""Metric samples through the pipeline on both engines: counter increases across a
reset, a late sample inside the allowed lateness counted in ``late_samples``, one beyond
it in the dead letters (``late_data``), and the same rows on Bytewax and Beam for the
generated metric stream (plus metrics derived from logs and events)."""

import pytest

from tests.helpers import START_MS, local_spec, read_table
from tests.helpers import BASE, MIN, ListSource, metric_spec, run, sample

pytestmark = pytest.mark.metrics


def counter_source():
    # partition 0: a counter with a reset; partition 1: a gauge that drives event time too
    c = [(1, 10.0), (2, 20.0), (3, 5.0), (4, 15.0), (5, 16.0)]
    p0 = [
        (sample("req", "COUNTER", BASE + (m - 1) * MIN + 30_000, {"svc": "a"}, value=v), BASE + m * MIN) for m, v in c
    ]
    g = [sample("temp", "GAUGE", BASE + (m - 1) * MIN + 30_000, {"svc": "a"}, value=float(m)) for m in range(1, 7)]
    p1 = [(v, BASE + (k + 1) * MIN) for k, v in enumerate(g)]
    # after minute 5's gauge (partition watermark 4m30s): a sample of minute 4, late but within
    # the lateness (window [3m, 4m) closes at 4m45s); after minute 6's: one in time, one of minute 2 far too late
    p1.insert(5, (sample("temp", "GAUGE", BASE + 3 * MIN + 59_000, {"svc": "a"}, value=50.0), BASE + 5 * MIN + 10))
    p1 += [
        (sample("temp", "GAUGE", BASE + 5 * MIN + 40_000, {"svc": "a"}, value=100.0), BASE + 6 * MIN + 10),
        (sample("temp", "GAUGE", BASE + 1 * MIN + 1_000, {"svc": "a"}, value=-1.0), BASE + 6 * MIN + 30),
    ]
    return ListSource("metrics", "metrics", "metric", {0: p0, 1: p1})


@pytest.mark.parametrize("runner", ["bytewax", "beam"])
def test_counter_reset_and_late_samples_end_to_end(runner, tmp_path):
    spec = metric_spec(tmp_path, {"resolutions": ["1m", "1h"], "watermark_delay": "0s", "allowed_lateness": "45s"})
    run(runner, spec, counter_source())
    m = read_table(spec, "metrics").to_pylist()
    minute = lambda r: (int(r["window_start"].timestamp() * 1000) - BASE) // MIN + 1  # noqa: E731
    req = {minute(r): r["increase"] for r in m if r["name"] == "req" and r["resolution"] == "1m"}
    assert req == {1: 0.0, 2: 10.0, 3: 5.0, 4: 10.0, 5: 1.0}  # minute 3: reset, counts the post-reset value
    temp = {
        minute(r): (r["count"], r["max"], r["late_samples"])
        for r in m
        if r["name"] == "temp" and r["resolution"] == "1m"
    }
    assert temp[4] == (2, 50.0, 1) and temp[6] == (2, 100.0, 0) and temp[2] == (1, 2.0, 0)
    hour = [r for r in m if r["resolution"] == "1h" and r["name"] == "req"]
    assert sum(r["increase"] for r in hour) == 26.0
    dl = read_table(spec, "dead_letters").to_pylist()
    assert [(d["reason"], d["source_topic"], d["source_partition"], d["source_offset"]) for d in dl] == [
        ("late_data", "metrics", 1, 8)
    ]
    assert b'"value":-1.0' in dl[0]["raw"]


def generated_spec(path):
    return local_spec(path, metrics=True)


def test_generated_metrics_sessions_and_alerts_same_on_both_engines(tmp_path):
    got = {}
    for runner in ("bytewax", "beam"):
        spec = generated_spec(tmp_path / runner)
        run(runner, spec, count=3000, start_ms=START_MS, rate_per_s=2000.0, batch_size=500)
        got[runner] = {t: read_table(spec, t) for t in ("metrics", "sessions", "alerts", "dead_letters")}

    def norm(t):
        rows = []
        for r in t.to_pylist():
            r = {k: (sorted(v) if isinstance(v, list) and k in ("labels", "annotations") else v) for k, v in r.items()}
            rows.append(repr(sorted(r.items())))
        return sorted(rows)

    a, b = got["bytewax"], got["beam"]
    names = {r["name"] for r in a["metrics"].to_pylist()}
    assert {
        "http.requests",
        "http.errors",
        "http.latency_ms",
        "process.cpu",
        "log.errors",
        "form.step.duration_ms",
        "funnel.step.reached",
        "product.errors",
    } <= names
    assert a["sessions"].num_rows > 0
    for t in a:
        assert norm(a[t]) == norm(b[t]), t


def coded_spec(warehouse, codec: str):
    from pipelines.loader import parse_spec

    return parse_spec(
        {
            "name": "t",
            "storage": {"catalog": {"warehouse": str(warehouse)}},
            "sources": [{"name": "metrics", "topic": "metrics", "signal": "metric", "partitions": 1, "codec": codec}],
            "flows": [
                {
                    "name": "m",
                    "source": "metrics",
                    "sink": {"table": "metrics"},
                    "steps": [
                        {"kind": "validate", "max_past": "3650d", "max_future": "3650d"},
                        {
                            "kind": "rollup",
                            "shards": 2,
                            "config": {"resolutions": ["1m", "1h"], "watermark_delay": "0s", "allowed_lateness": "0s"},
                        },
                    ],
                }
            ],
        }
    )


@pytest.mark.parametrize("runner", ["bytewax", "beam"])
def test_otlp_cumulative_exports_end_to_end(runner, tmp_path):
    """Two successive cumulative SDK exports (one Kafka message each): the temporality and
    start time survive validation and sharding, and the rollups are per-export differences."""
    from tests.rollup.test_otlp_temporality import check_two_exports, two_exports

    exports, w0 = two_exports()
    spec = coded_spec(tmp_path, "otlp_proto")
    run(
        runner,
        spec,
        ListSource(
            "metrics", "metrics", "metric", {0: [(e.SerializeToString(), w0 + k * MIN) for k, e in enumerate(exports)]}
        ),
    )
    check_two_exports(read_table(spec, "metrics"), w0)
    assert read_table(spec, "dead_letters").num_rows == 0


@pytest.mark.parametrize("runner", ["bytewax", "beam"])
def test_avro_samples_end_to_end(runner, tmp_path):
    """Confluent-framed Avro samples (fastavro) through the pipeline into exact rollup rows."""
    from tests.rollup.test_avro_samples import BASE as T0, SAMPLES, confluent

    spec = coded_spec(tmp_path, "avro")
    in_time = sorted(SAMPLES, key=lambda r: r["timestamp"])  # one partition: event time moves sample by sample
    run(
        runner,
        spec,
        ListSource(
            "metrics",
            "metrics",
            "metric",
            {0: [(confluent(r), T0 + k) for k, r in enumerate(in_time)] + [(b"\x00\x00", T0 + 99)]},
        ),
    )
    rows = read_table(spec, "metrics").to_pylist()
    got = {
        (x["resolution"], (int(x["window_start"].timestamp() * 1000) - T0) // MIN, x["name"]): (
            x["count"],
            x["sum"],
            x["min"],
            x["max"],
            x["last"],
            x["increase"],
        )
        for x in rows
        if x["resolution"] == "1m"
    }
    assert got == {
        (("1m", 0, "req")): (2, None, 100.0, 130.0, 130.0, 30.0),
        ("1m", 1, "req"): (2, None, 20.0, 50.0, 50.0, 50.0),
        ("1m", 0, "temp"): (3, 8.75, -1.5, 7.25, 7.25, None),
        ("1m", 1, "temp"): (1, 2.0, 2.0, 2.0, 2.0, None),
        ("1m", 0, "lat"): (3, 60.0, None, None, None, None),
        ("1m", 1, "lat"): (3, 450.0, None, None, None, None),
        ("1m", 0, "jobs"): (4, 10.0, None, None, None, None),
        ("1m", 1, "jobs"): (1, 2.5, None, None, None, None),
    }
    hour = {x["name"]: (x["count"], x["increase"], x["p50"]) for x in rows if x["resolution"] == "1h"}
    assert hour["req"][:2] == (4, 80.0) and hour["lat"] == (6, None, 40.0) and hour["jobs"][:2] == (5, None)
    dl = read_table(spec, "dead_letters").to_pylist()
    assert [(d["reason"], d["source_offset"]) for d in dl] == [("format_violation", 12)]
