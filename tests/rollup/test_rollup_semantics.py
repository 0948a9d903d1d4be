"""Rollup semantics users trip on (issue 18 item 6): the layout of histogram bucket_counts
(per bucket, or Prometheus' cumulative ``le`` counts with a key; a cumulative layout fed as
per-bucket is rejected, not rolled up into wrong quantiles), the increase after a scrape gap
(whole in the first window, or spread with ``counter_gap``), and window alignment."""

import pickle

import pytest

from tests.rollup.test_rollup import by, samples
from transforms.rollup import MetricRollup, RollupConfig

pytestmark = pytest.mark.metrics
BOUNDS = [0.25, 0.5, 1.0, 2.5]
PER = [10, 20, 5, 3, 2]  # observations per bucket, the last one +Inf
CUM = [10, 30, 35, 38, 40]  # the same as Prometheus' cumulative le buckets


def hist(ts, counts, count=40, total=20.0):
    return ("lat", "histogram", ts, {}, None, {"bounds": BOUNDS, "counts": counts, "count": count, "sum": total})


def rolled(cfg: dict, rows):
    r = MetricRollup(RollupConfig(resolutions=["1m"], **cfg))
    out = r.process(samples(rows))
    return r, out, out.metrics.to_pylist() + r.flush().metrics.to_pylist()


def test_cumulative_bucket_layout_is_rejected_as_per_bucket_and_accepted_with_the_key():
    _, out, rows = rolled({}, [hist(1000, PER)])
    assert [(x["count"], x["p50"], x["p99"]) for x in rows] == [(40, 0.375, 2.5)]
    # the same histogram with cumulative counts, per-bucket layout (the default): rejected, with the reason
    _, out, rows = rolled({}, [hist(1000, CUM), hist(2000, PER)])
    assert out.invalid.select(["bucket_counts", "reason"]).to_pylist() == [
        {"bucket_counts": CUM, "reason": "cumulative_buckets"}
    ]
    assert [(x["count"], x["p50"]) for x in rows] == [(40, 0.375)]
    # histogram_buckets: cumulative takes them as Prometheus writes them: the same row as per-bucket input
    _, out, rows = rolled({"histogram_buckets": "cumulative"}, [hist(1000, CUM)])
    assert out.invalid is None and [(x["count"], x["sum"], x["p50"], x["p99"]) for x in rows] == [
        (40, 20.0, 0.375, 2.5)
    ]


def test_bucket_layout_errors_name_the_cause():
    _, out, _ = rolled({}, [hist(1000, [10, 20, 5, 3, 1])])  # sums to 39, count 40
    assert out.invalid.column("reason").to_pylist() == ["bucket_count_mismatch"]
    _, out, rows = rolled(
        {"histogram_buckets": "cumulative"},
        [hist(1000, [10, 30, 25, 38, 40]), hist(2000, [10, 30, 35, 38, 39]), hist(3000, CUM)],
    )
    assert out.invalid.select(["bucket_counts", "reason"]).to_pylist() == [
        {"bucket_counts": [10, 30, 25, 38, 40], "reason": "non_monotonic_buckets"},
        {"bucket_counts": [10, 30, 35, 38, 39], "reason": "bucket_count_mismatch"},
    ]  # raw counts kept
    assert [x["count"] for x in rows] == [40]
    # without a count nothing can be checked: per-bucket input is taken as it is
    _, out, rows = rolled({}, [("lat", "histogram", 1000, {}, None, {"bounds": BOUNDS, "counts": PER})])
    assert out.invalid is None and [x["count"] for x in rows] == [40]


GAP_POINTS = [
    (5_000, 100.0),
    (20_000, 110.0),
    (50_000, 120.0),  # window 0
    (245_000, 180.0),
    (260_000, 186.0),
]  # window 4, after a 195 s gap


def test_increase_after_a_scrape_gap_whole_by_default_spread_with_counter_gap():
    rows = [("req", "counter", t, {"svc": "a"}, v) for t, v in GAP_POINTS]
    _, _, got = rolled({}, rows)
    assert [(x["window_start"].minute, x["increase"]) for x in by_name(got)] == [(0, 20.0), (4, 66.0)]
    r, _, got = rolled({"counter_gap": "2m"}, rows)
    # 60 over the 195 s gap, 5 s of it inside window 4 ([240 s, 300 s)): 60 * 5 / 195, then +6 inside the window
    assert [(x["window_start"].minute, x["increase"]) for x in by_name(got)] == [(0, 20.0), (4, 60 * 5 / 195 + 6.0)]
    assert r.stats["counter_gap_increase_spread_out"] == pytest.approx(60 * 190 / 195)
    # a gap shorter than counter_gap counts in full
    _, _, got = rolled({"counter_gap": "4m"}, rows)
    assert [x["increase"] for x in by_name(got)] == [20.0, 66.0]


def by_name(rows):
    return sorted((x for x in rows if x["name"] == "req"), key=lambda x: x["window_start"])


def test_counter_gap_survives_snapshot_restore_and_old_snapshots_restore():
    rows = [("req", "counter", t, {"svc": "a"}, v) for t, v in GAP_POINTS]
    cfg = RollupConfig(resolutions=["1m"], counter_gap="2m", watermark_delay="0s", allowed_lateness="0s")
    a = MetricRollup(cfg)
    a.process(samples(rows[:3]))
    b = MetricRollup.from_snapshot(a.snapshot())
    assert by(b.process(samples(rows[3:])).metrics, name="req") == by(a.process(samples(rows[3:])).metrics, name="req")
    # a snapshot taken before histogram_buckets / counter_gap existed restores with their defaults
    doc = pickle.loads(MetricRollup(RollupConfig(resolutions=["1m"])).snapshot())
    for k in ("histogram_buckets", "counter_gap"):
        del doc["config"][k]
    del doc["state"]["carry_ts"]
    old = MetricRollup(RollupConfig(resolutions=["1m"]))
    old.restore(pickle.dumps(doc))
    got = old.process(samples(rows)).metrics.to_pylist() + old.flush().metrics.to_pylist()
    assert [x["increase"] for x in by_name(got)] == [20.0, 66.0]
    with pytest.raises(ValueError, match="counter_gap"):
        RollupConfig(counter_gap="0s")


def test_window_alignment_is_start_inclusive_end_exclusive():
    """Windows are [start, end): a sample on a window's start is in it, one on its end is in
    the next (a PromQL [1m] range evaluated at end - 1 ms selects the same samples)."""
    rows = [("temp", "gauge", t, {}, v) for t, v in ((60_000, 1.0), (119_999, 2.0), (120_000, 3.0))]
    _, _, got = rolled({}, rows)
    assert [(x["window_start"].minute, x["count"], x["last"]) for x in got] == [(1, 2, 2.0), (2, 1, 3.0)]
