"""Log sampling of lines without a trace id (issue 12 item 3): each line has its own fate.

The hash key of an untraced line must differ per line. On the old code it read a
``timestamp`` column that is named ``ts`` at that point, so every line with the same
service and message shared one fate (500 identical "heartbeat ok" lines at 20% kept 0
or 500). Counts are asserted exactly where the hash makes them deterministic, and with
binomial bounds (4.5 standard deviations: the hash is fixed, so a pass is not luck that
can change between runs) where they stand for a sampling rate."""

from __future__ import annotations

import datetime as dt
import math

import pyarrow as pa

from transforms.tail_sampling import LogSampler

T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)


def _lines(n: int, *, same_ts: bool = False, message: str = "heartbeat ok", offset0: int = 0) -> pa.Table:
    """``n`` INFO lines without a trace id, as the trace stage sees them (column ``ts``,
    source coordinates), one second apart unless ``same_ts``."""
    ts = [T0 if same_ts else T0 + dt.timedelta(seconds=i) for i in range(n)]
    return pa.table(
        {
            "ts": pa.array(ts, pa.timestamp("us", tz="UTC")),
            "level": ["INFO"] * n,
            "service": ["checkout"] * n,
            "message": [message] * n,
            "trace_id": pa.nulls(n, pa.string()),
            "request_id": pa.nulls(n, pa.string()),
            "source_topic": ["logs"] * n,
            "source_partition": pa.array([0] * n, pa.int32()),
            "source_offset": pa.array(range(offset0, offset0 + n), pa.int64()),
        }
    )


def _assert_binomial(kept: int, n: int, p: float) -> None:
    sd = math.sqrt(n * p * (1 - p))
    assert abs(kept - n * p) <= 4.5 * sd, f"kept {kept} of {n} at {p:.0%}: expected {n * p:.0f} +- {4.5 * sd:.0f}"


def test_identical_heartbeat_lines_are_sampled_per_line():
    out = LogSampler({"sampling_percentage": 20}).decide_logs(_lines(500))
    _assert_binomial(out.num_rows, 500, 0.2)
    assert 0 < out.num_rows < 500


def test_identical_lines_at_the_same_instant_differ_by_their_record():
    """Same service, message and timestamp: the source record still tells them apart."""
    out = LogSampler({"sampling_percentage": 20}).decide_logs(_lines(2000, same_ts=True))
    _assert_binomial(out.num_rows, 2000, 0.2)


def test_sample_rate_estimates_the_line_count():
    n = 20_000
    sampler = LogSampler({"sampling_percentage": 10, "level_percentages": {"DEBUG": 1}})
    t = _lines(n)
    levels = pa.array(["DEBUG" if i % 4 == 0 else "INFO" for i in range(n)])
    t = t.set_column(t.column_names.index("level"), "level", levels)
    out = sampler.decide_logs(t)
    rates = out.column("sample_rate").to_pylist()
    assert set(rates) == {0.01, 0.1}
    kept_debug = sum(1 for r in rates if r == 0.01)
    kept_info = sum(1 for r in rates if r == 0.1)
    _assert_binomial(kept_debug, n // 4, 0.01)
    _assert_binomial(kept_info, n - n // 4, 0.1)
    est = sum(1 / r for r in rates)
    # the estimate's standard deviation: sqrt(sum n_l (1 - p_l) / p_l)
    sd = math.sqrt((n // 4) * 0.99 / 0.01 + (n - n // 4) * 0.9 / 0.1)
    assert abs(est - n) <= 4.5 * sd, f"sum(1/sample_rate) = {est:.0f} for {n} lines (+- {4.5 * sd:.0f})"
    assert sampler.kept_lines + sampler.dropped_lines == n


def test_decision_of_a_line_does_not_depend_on_its_batch():
    """A replay cut into other batches keeps the same lines."""
    t = _lines(1000)
    s = LogSampler({"sampling_percentage": 30})
    whole = s.decide_logs(t).column("source_offset").to_pylist()
    parts = []
    for k in range(0, 1000, 137):
        parts += s.decide_logs(t.slice(k, 137)).column("source_offset").to_pylist()
    assert parts == whole


def test_request_id_still_keys_the_line():
    """A line with a ``request_id`` is keyed by it: every line of one request shares its fate."""
    t = _lines(300)
    t = t.set_column(t.column_names.index("request_id"), "request_id", pa.array([f"req-{i // 3}" for i in range(300)]))
    kept = LogSampler({"sampling_percentage": 50}).decide_logs(t).column("request_id").to_pylist()
    counts = {}
    for r in kept:
        counts[r] = counts.get(r, 0) + 1
    assert set(counts.values()) == {3}
