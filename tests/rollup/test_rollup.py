"""Metric rollups: counters with resets, lateness, sketch accuracy, cardinality overflow,
histograms, derived metrics and snapshot/restore."""

import numpy as np
import pyarrow as pa
import pytest

from transforms.rollup import DeriveRule, MetricDeriver, MetricRollup, RollupConfig

pytestmark = pytest.mark.metrics
MAP = pa.map_(pa.string(), pa.string())


def samples(rows, trace=False):
    """rows: (name, kind, ts_ms, labels dict, value[, extra dict])"""
    cols = {
        "name": [r[0] for r in rows],
        "kind": [r[1] for r in rows],
        "timestamp": pa.array([r[2] for r in rows], pa.timestamp("ms", tz="UTC")),
        "labels": pa.array([list(r[3].items()) for r in rows], MAP),
        "value": pa.array([r[4] for r in rows], pa.float64()),
    }
    ex = [r[5] if len(r) > 5 else {} for r in rows]
    cols["bucket_bounds"] = pa.array([e.get("bounds") for e in ex], pa.list_(pa.float64()))
    cols["bucket_counts"] = pa.array([e.get("counts") for e in ex], pa.list_(pa.int64()))
    cols["count"] = pa.array([e.get("count") for e in ex], pa.int64())
    cols["sum"] = pa.array([e.get("sum") for e in ex], pa.float64())
    return pa.table(cols)


def by(rows: pa.Table, **eq):
    return [r for r in rows.to_pylist() if all(r[k] == v for k, v in eq.items())]


def test_counter_increase_and_rate_with_resets_across_windows():
    r = MetricRollup(RollupConfig(resolutions=["1m", "5m"], watermark_delay="0s", allowed_lateness="0s"))
    lab = {"svc": "a"}
    vals = [
        (0, 100.0),
        (20_000, 130.0),
        (40_000, 10.0),
        (59_000, 25.0),  # reset in window 0: +30, +10, +15
        (70_000, 40.0),
        (100_000, 5.0),
        (130_000, 9.0),
    ]  # w1: +15 (from 25), reset +5; w2: +4
    out = r.process(samples([("req", "counter", t, lab, v) for t, v in vals]))
    out = [out, r.flush()]
    rows = pa.concat_tables([o.metrics for o in out])
    m1 = sorted(by(rows, resolution="1m", name="req"), key=lambda x: x["window_start"])
    assert [x["increase"] for x in m1] == [55.0, 20.0, 4.0]
    assert [x["rate"] for x in m1] == pytest.approx([55 / 60, 20 / 60, 4 / 60])
    assert [x["last"] for x in m1] == [25.0, 5.0, 9.0] and m1[0]["sum"] is None and m1[0]["count"] == 4
    (m5,) = by(rows, resolution="5m", name="req")
    assert m5["increase"] == 79.0 and m5["count"] == 7 and m5["min"] == 5.0 and m5["max"] == 130.0


def test_counter_order_inside_window_does_not_matter():
    lab = {"svc": "a"}
    vals = [(1000, 1.0), (2000, 5.0), (3000, 2.0), (4000, 4.0)]
    a, b = MetricRollup(), MetricRollup()
    a.process(samples([("c", "counter", t, lab, v) for t, v in vals]))
    for t, v in reversed(vals):
        b.process(samples([("c", "counter", t, lab, v)]))
    assert a.flush().metrics.equals(b.flush().metrics)


def test_late_samples_inside_and_beyond_lateness():
    cfg = RollupConfig(resolutions=["1m"], watermark_delay="0s", allowed_lateness="30s")
    r = MetricRollup(cfg)
    g = lambda t, v: ("g", "gauge", t, {}, v)  # noqa: E731
    o1 = r.process(samples([g(10_000, 1.0), g(70_000, 2.0)]))  # watermark -> 70s
    assert o1.metrics.num_rows == 0 and r.watermark == 70_000
    o2 = r.process(samples([g(50_000, 3.0)]))  # late (< 70s), window [0,60) open until 90s
    assert o2.late is None
    o3 = r.process(samples([g(95_000, 4.0)]))  # watermark 95s closes [0,60)
    (w0,) = o3.metrics.to_pylist()
    assert (w0["count"], w0["sum"], w0["late_samples"], w0["last"]) == (2, 4.0, 1, 3.0)
    o4 = r.process(samples([g(59_000, 9.0), g(61_000, 5.0)]))  # 59s: window closed -> late output; 61s: late, taken
    assert o4.late.num_rows == 1 and o4.late.column("reason").to_pylist() == ["too_late"]
    assert o4.late.column("value").to_pylist() == [9.0]
    (w1,) = r.flush().metrics.to_pylist()
    assert (w1["count"], w1["late_samples"]) == (3, 1)
    assert r.stats["too_late"] == 1 and r.stats["late_accepted"] == 2


def test_sketch_quantiles_within_relative_accuracy():
    rng = np.random.default_rng(7)
    n = 20_000
    vals = np.concatenate([rng.lognormal(5, 1.2, n), rng.pareto(1.5, n) * 10 + 0.5])
    series = np.repeat(["a", "b"], n)
    r = MetricRollup(RollupConfig(resolutions=["1m"]))
    t = pa.table(
        {
            "name": ["lat"] * (2 * n),
            "kind": ["gauge"] * (2 * n),
            "timestamp": pa.array(rng.integers(0, 60_000, 2 * n), pa.timestamp("ms", tz="UTC")),
            "labels": pa.array([[("s", s)] for s in series], MAP),
            "value": vals,
        }
    )
    for part in (t.slice(0, 15_000), t.slice(15_000, 10_000), t.slice(25_000)):  # merged partial sketches
        r.process(part)
    rows = r.flush().metrics.to_pylist()
    for row in rows:
        s = dict(row["labels"])["s"]
        x = np.sort(vals[series == s])
        for q in (0.5, 0.75, 0.9, 0.95, 0.99):
            exact = x[int(np.floor(q * (len(x) - 1)))]
            assert abs(row[f"p{int(q * 100)}"] - exact) <= 0.01 * exact + 1e-12
        assert row["count"] == n and row["min"] == x[0] and row["max"] == x[-1]


def test_cardinality_overflow_series():
    r = MetricRollup(RollupConfig(resolutions=["1m"], max_series_per_metric=3))
    rows = [("g", "gauge", 1000 + i, {"id": str(i)}, float(i)) for i in range(10)] + [
        ("h", "gauge", 1000, {"id": "x"}, 1.0)
    ]
    r.process(samples(rows))
    out = r.flush().metrics
    g = by(out, name="g")
    assert len(g) == 4
    (ovf,) = [x for x in g if x["labels"] == [("__overflow__", "true")]]
    assert ovf["count"] == 7 and ovf["sum"] == sum(range(3, 10)) and ovf["max"] == 9.0
    assert r.registry.overflowed == {"g": 7} and len(by(out, name="h")) == 1


def test_histograms_merge_bucketwise_with_quantiles():
    r = MetricRollup(RollupConfig(resolutions=["1m"]))
    b = [0.1, 0.5, 1.0]
    rows = [
        ("http", "histogram", 1000, {}, None, {"bounds": b, "counts": [10, 20, 10, 0], "count": 40, "sum": 15.0}),
        ("http", "histogram", 2000, {}, None, {"bounds": b, "counts": [10, 0, 30, 0], "count": 40, "sum": 30.0}),
    ]
    r.process(samples(rows))
    (row,) = r.flush().metrics.to_pylist()
    assert (row["count"], row["sum"]) == (80, 45.0)
    # merged buckets [20, 20, 40, 0]: median rank 40 -> top of bucket (0.1, 0.5]; p90 rank 72 in (0.5, 1.0]
    assert row["p50"] == pytest.approx(0.5) and row["p90"] == pytest.approx(0.5 + 0.5 * 32 / 40)
    # p75 rank 60: 20 of the 40 observations into (0.5, 1.0]
    assert row["p75"] == pytest.approx(0.5 + 0.5 * 20 / 40)


def test_derived_metrics_from_logs_and_events():
    logs = pa.table(
        {
            "ts": pa.array([1000, 2000, 3000, 4000], pa.timestamp("ms", tz="UTC")),
            "level": ["ERROR", "INFO", "ERROR", "FATAL"],
            "service": ["a", "a", "b", "a"],
        }
    )
    d = MetricDeriver(
        [DeriveRule(name="log.errors", source="logs", filter={"level": ["ERROR", "FATAL"]}, labels=["service"])], "logs"
    )
    ev = pa.table(
        {
            "ts": pa.array([1000, 2000], pa.timestamp("ms", tz="UTC")),
            "event_type": ["form_step", "form_step"],
            "form": ["signup", "signup"],
            "form_step": pa.array([3, 3], pa.int32()),
            "duration_ms": pa.array([100, 300], pa.int64()),
        }
    )
    de = MetricDeriver(
        [
            {
                "name": "form.step.duration_ms",
                "source": "events",
                "filter": {"event_type": "form_step"},
                "labels": ["form", "form_step"],
                "value": "duration_ms",
            }
        ],
        "events",
    )
    r = MetricRollup(RollupConfig(resolutions=["1m"]))
    r.process(d(logs))
    r.process(de(ev))
    out = r.flush().metrics
    errs = {dict(x["labels"])["service"]: x["count"] for x in by(out, name="log.errors")}
    assert errs == {"a": 2, "b": 1}
    (dur,) = by(out, name="form.step.duration_ms")
    assert dur["labels"] == [("form", "signup"), ("form_step", "3")] and (dur["count"], dur["sum"], dur["max"]) == (
        2,
        400.0,
        300.0,
    )


def test_snapshot_restore_mid_stream_gives_same_output():
    rng = np.random.default_rng(3)
    n = 6000
    t = pa.table(
        {
            "name": [f"m{i % 3}" for i in range(n)],
            "kind": ["counter" if i % 2 else "gauge" for i in range(n)],
            "timestamp": pa.array(
                np.sort(rng.integers(0, 300_000, n)) - rng.integers(0, 60_000, n), pa.timestamp("ms", tz="UTC")
            ),
            "labels": pa.array([[("k", str(i % 50))] for i in range(n)], MAP),
            "value": np.cumsum(rng.random(n)),
        }
    )
    cfg = RollupConfig(resolutions=["1m", "2m"], watermark_delay="5s", allowed_lateness="10s")
    parts = [t.slice(i, 1000) for i in range(0, n, 1000)]

    def run(restart_at=None):
        r, outs = MetricRollup(cfg), []
        for i, p in enumerate(parts):
            if i == restart_at:
                r = MetricRollup.from_snapshot(r.snapshot())
            outs.append(r.process(p))
        outs.append(r.flush())
        return outs

    a, b = run(), run(restart_at=3)
    for x, y in zip(a, b):
        assert x.metrics.equals(y.metrics)
        assert (x.late is None) == (y.late is None) and (x.late is None or x.late.equals(y.late))
    assert sum(o.metrics.num_rows for o in a) > 0 and any(o.late is not None for o in a)


def test_batch_histogram_quantiles_equal_the_scalar_function_bit_for_bit():
    """``histogram_quantiles`` (all series of a window at once) gives exactly the floats
    ``histogram_quantile`` gives per series: random sparse histograms with empty buckets,
    counts in the +Inf bucket, all-zero histograms, negative bounds and large counts."""
    import numpy as np

    from transforms.rollup import QUANTILES, histogram_quantile, histogram_quantiles

    rng = np.random.default_rng(7)
    for bounds in (np.array([0.0, 5, 10, 25, 50, 100, 250, 1000]), np.array([-10.0, -1, 0, 1, 10]), np.array([3.0])):
        nseg = 500
        seg, pos, cnt = [], [], []
        dense = []
        for s in range(nseg):
            width = int(rng.integers(1, len(bounds) + 2))
            c = rng.integers(0, 4, width).astype(float) * (10 ** int(rng.integers(0, 7)))
            if s % 50 == 0:
                c[:] = 0
            used = np.flatnonzero(rng.random(width) < 0.8)
            used = used if len(used) else np.array([0])
            d = np.zeros(int(used.max()) + 1)
            d[used] = c[used]
            dense.append(d)
            seg += [s] * len(used)
            pos += used.tolist()
            cnt += c[used].tolist()
        order = rng.permutation(len(seg))  # pairs in any order
        got = histogram_quantiles(
            QUANTILES, np.array(seg)[order], np.array(pos)[order], np.array(cnt)[order], nseg, bounds
        )
        want = np.array(
            [[np.nan if (x := histogram_quantile(q, bounds, d)) is None else x for q in QUANTILES] for d in dense]
        )
        assert np.array_equal(got, want, equal_nan=True)
        assert np.isnan(got).any() and (~np.isnan(got)).sum() > 1000


def test_bucket_bounds_check_registers_and_counts_as_a_row_by_row_check_does():
    """``_bounds_ok`` groups rows by their exact bounds before making text keys; its
    verdicts, registrations and mismatch count equal a plain row-by-row check over two
    batches of random rows (four bounds variants, null and empty lists, 300 series)."""
    import numpy as np

    from transforms.rollup import MetricRollup, RollupConfig

    variants = [[0.0, 5.0, 10.0], [0.0, 5.0, 25.0], [1.0], [], None, [0.0, 5.0, 10.0, 20.0]]
    rng = np.random.default_rng(3)

    def reference(reg, stats, bb, ro):
        keys = [None if b is None else ",".join(format_bound(x) for x in b) for b in bb]
        keys = ["" if k is None else k for k in keys]
        for o, k, b in zip(ro, keys, bb):
            if o not in reg:
                reg[o] = (k, list(b or []))
        ok = [reg[o][0] == k for o, k in zip(ro, keys)]
        stats["m"] = stats.get("m", 0) + ok.count(False)
        return ok

    def format_bound(x):
        return pa.array([x]).cast(pa.string())[0].as_py()

    r = MetricRollup(RollupConfig(resolutions=["1m"]))
    reg, stats = {}, {}
    for _ in range(2):
        ro = rng.integers(0, 300, 4000)
        # mostly each series' own variant, sometimes another one
        choice = np.where(rng.random(4000) < 0.9, ro % len(variants), rng.integers(0, len(variants), 4000))
        bb = [variants[c] for c in choice.tolist()]
        got = r._bounds_ok(pa.array(bb, pa.list_(pa.float64())), ro)
        want = reference(reg, stats, bb, ro.tolist())
        assert got.tolist() == want
    assert r.stats["histogram_bounds_mismatch"] == stats["m"] > 100
    assert {o: (k, b.tolist()) for o, (k, b) in r.hist_bounds.items()} == reg
