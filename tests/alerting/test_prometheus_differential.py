"""Differential test of the rollups against a real Prometheus (Debian package ``prometheus``):
the same samples through :class:`MetricRollup` and into Prometheus' TSDB (``promtool tsdb
create-blocks-from openmetrics``), then instant queries at each window's ``end - 1 ms``.

Where the semantics are meant to agree they are equal, exactly: a ``[1m]`` range evaluated
at ``end - 1 ms`` covers the same samples as our window ``[start, end)`` (samples on window
starts included), so a gauge's count / sum / min / max / last equal ``*_over_time``; a
counter's ``count`` / ``last`` equal ``count_over_time`` / ``last_over_time``, its increase
in a window without a reset equals ``x - x offset 1m`` (the last sample before the window
is the baseline, also across a scrape gap), and Prometheus' ``resets`` sees the reset in the
same window. The documented differences hold: Prometheus' ``increase`` extrapolates, so its
per-minute values do not add up to the true count while ours do, and after a scrape gap our
first window holds the whole gap's increase where Prometheus' ``increase`` shows a fraction
(with ``counter_gap`` ours is spread over the gap and comes close to it)."""

from __future__ import annotations

import itertools

import pyarrow as pa
import pytest

from tests.rollup.test_rollup import samples
from transforms.rollup import MetricRollup, RollupConfig

pytestmark = [pytest.mark.alerts, pytest.mark.metrics]

BASE = 1_763_000_040_000  # a whole minute
MIN = 60_000
WINDOWS = 10
GAP = range(16, 28)  # counter samples left out: no sample in minutes 4, 5 and 6 (a scrape gap)
RESET_AT = 10  # the counter restarts from 0 at sample 10 (minute 2)


def gauge_points() -> list[tuple[int, float]]:
    """Every 15 s from BASE (so on every window start), values multiples of 0.25 (exact sums)."""
    return [(BASE + i * 15_000, ((i * 37) % 23) * 0.25) for i in range(40)]


def counter_points() -> list[tuple[int, float]]:
    """Every 15 s from BASE + 5 s, +1..+5 per sample, a reset at sample RESET_AT, a gap."""
    out, v = [], 100.0
    for i in range(40):
        v = (i % 5) + 1.0 if i == RESET_AT else v + (i % 5) + 1
        if i not in GAP:
            out.append((BASE + 5_000 + i * 15_000, v))
    return out


def true_increase(points: list[tuple[int, float]]) -> float:
    """The counter's exact increase from its first sample: deltas, a drop counting its new value."""
    return sum((b - a) if b >= a else b for (_, a), (_, b) in itertools.pairwise(points))


@pytest.fixture(scope="module")
def prometheus():
    from infra import prometheus as prom

    try:
        prom.binaries()
    except FileNotFoundError as e:
        pytest.skip(str(e))
    server = prom.start(
        prom.openmetrics(
            {
                ("temp", "gauge", (("room", "r1"),)): gauge_points(),
                ("req", "counter", (("svc", "a"),)): counter_points(),
            }
        )
    )
    try:
        yield server
    finally:
        server.stop(remove_data=True)


def ours(**cfg) -> dict[tuple[str, int], dict]:
    r = MetricRollup(RollupConfig(resolutions=["1m"], watermark_delay="0s", allowed_lateness="0s", **cfg))
    rows = [("temp", "gauge", t, {"room": "r1"}, v) for t, v in gauge_points()]
    rows += [("req", "counter", t, {"svc": "a"}, v) for t, v in counter_points()]
    out = [r.process(samples(rows)), r.flush()]
    table = pa.concat_tables([o.metrics for o in out])
    return {(x["name"], (int(x["window_start"].timestamp() * 1000) - BASE) // MIN): x for x in table.to_pylist()}


def prom_value(server, expr: str, at: int) -> float | None:
    res = server.query(expr, at)
    assert len(res) <= 1, res
    return res[0][1] if res else None


def test_gauge_windows_equal_prometheus_over_time_at_end_minus_1ms(prometheus):
    got = ours()
    for k in range(WINDOWS):
        at = BASE + (k + 1) * MIN - 1
        row = got[("temp", k)]
        mine = (row["count"], row["sum"], row["min"], row["max"], row["last"])
        theirs = tuple(
            prom_value(prometheus, f"{f}_over_time(temp[1m])", at) for f in ("count", "sum", "min", "max", "last")
        )
        assert mine == theirs, (k, mine, theirs)
        assert row["count"] == 4  # the sample on the window start is in [start, end) and in Prometheus' range


def test_counter_agrees_where_meant_to_and_differs_as_documented(prometheus):
    got = ours()
    pts = counter_points()
    reset_window = (pts[[i for i in range(40) if i not in GAP].index(RESET_AT)][0] - BASE) // MIN
    first_after_gap = (pts[GAP.start][0] - BASE) // MIN
    assert (reset_window, first_after_gap) == (2, 7)
    prom_inc = {}
    for k in range(WINDOWS):
        at = BASE + (k + 1) * MIN - 1
        row = got.get(("req", k))
        if row is None:  # the gap: no samples, no row; Prometheus has nothing in the range either
            assert k in (4, 5, 6) and prom_value(prometheus, "count_over_time(req_total[1m])", at) is None
            continue
        assert (row["count"], row["last"]) == (
            prom_value(prometheus, "count_over_time(req_total[1m])", at),
            prom_value(prometheus, "last_over_time(req_total[1m])", at),
        )
        assert prom_value(prometheus, "resets(req_total[1m])", at) == (1.0 if k == reset_window else 0.0)
        if k > 0 and k != reset_window:  # the last sample before the window is the baseline (across the gap too)
            assert row["increase"] == prom_value(prometheus, "req_total - req_total offset 1m", at), k
        prom_inc[k] = prom_value(prometheus, "increase(req_total[1m])", at)
    # ours add up to the exact count; Prometheus' extrapolated per-minute increases do not
    assert (
        sum(got[("req", k)]["increase"] for k in prom_inc) == true_increase(pts) == 119.0
    )  # sum of (i % 5) + 1 for i = 1..39
    assert sum(prom_inc.values()) != pytest.approx(true_increase(pts), rel=0.01)
    # after the gap: our first window holds the whole gap's increase, Prometheus' a fraction of it
    before, after = pts[GAP.start - 1][1], [v for t, v in pts if (t - BASE) // MIN == first_after_gap][-1]
    assert got[("req", first_after_gap)]["increase"] == after - before == 47.0  # samples 16..31: (i % 5) + 1 each
    assert prom_inc[first_after_gap] < got[("req", first_after_gap)]["increase"] / 2
    # counter_gap spreads the gap's increase (39 over the 195 s from sample 15 to 28; 5 s of it in
    # the window) and adds the window's own +8: close to what Prometheus' increase() shows
    spread = ours(counter_gap="1m")[("req", first_after_gap)]["increase"]
    assert spread == 39 * 5 / 195 + 8 == 9.0
    assert abs(spread - prom_inc[first_after_gap]) < 3 < abs(47.0 - prom_inc[first_after_gap])
