"""Rollup benchmark: samples/s through MetricRollup (1m and 1h) with 100,000 active series,
peak memory — the Python heap (tracemalloc, numpy arrays included) and, separately, the
Arrow memory pool (pyarrow buffers are not seen by tracemalloc) — next to a plain pyarrow group_by of the same batches (baseline,
same run), and alert latency: wall time from handing the rollup the batch with the
violating sample to the alert event, when the caller then advances the watermark.

Run: ``.venv/bin/python bench/rollups.py [--batches 30] [--series 100000]``; ends with one JSON line."""

from __future__ import annotations

import argparse
import json
import time
import tracemalloc

import numpy as np
import pyarrow as pa

from transforms.alerting import AlertEngine
from transforms.rollup import MetricRollup, RollupConfig

MAP = pa.map_(pa.string(), pa.string())


#: explicit bounds of the histogram samples (the OpenTelemetry SDK's default boundaries)
BOUNDS = [0.0, 5.0, 10.0, 25.0, 50.0, 75.0, 100.0, 250.0, 500.0, 750.0, 1000.0, 2500.0, 5000.0, 7500.0, 10000.0]


def make_batches(series: int, batches: int, size: int, seed: int = 1, kind: str = "mixed"):
    """``kind`` ``mixed``: half gauges, half counters; ``histogram``: delta histograms with
    the SDK's 15 default bounds (16 buckets), 1-20 observations a sample."""
    rng = np.random.default_rng(seed)
    names = np.array([f"metric_{i % 50}" for i in range(series)], object)
    labels = pa.array([[("host", f"host-{i}"), ("service", f"svc-{i % 13}")] for i in range(series)], MAP)
    kinds = np.where(np.arange(series) % 2 == 0, "gauge", "counter")
    out = []
    per_batch_ms = 6_000
    nb = len(BOUNDS) + 1
    for k in range(batches):
        idx = rng.integers(0, series, size)
        ts = k * per_batch_ms + np.sort(rng.integers(0, per_batch_ms, size))
        cols = {
            "name": pa.array(names[idx].tolist(), pa.string()),
            "timestamp": pa.array(ts, pa.timestamp("ms", tz="UTC")),
            "labels": labels.take(pa.array(idx)),
        }
        if kind == "histogram":
            counts = rng.integers(0, 3, (size, nb))
            offsets = pa.array(np.arange(size + 1, dtype=np.int32) * nb)
            cols.update(
                kind=pa.array(["histogram"] * size, pa.string()),
                value=pa.nulls(size, pa.float64()),
                bucket_bounds=pa.ListArray.from_arrays(
                    pa.array(np.arange(size + 1, dtype=np.int32) * len(BOUNDS)), pa.array(np.tile(BOUNDS, size))
                ),
                bucket_counts=pa.ListArray.from_arrays(offsets, pa.array(counts.ravel())),
                count=pa.array(counts.sum(axis=1)),
                sum=pa.array(rng.random(size) * 1000),
            )
        else:
            cols.update(kind=pa.array(kinds[idx].tolist(), pa.string()), value=rng.random(size) * 100 + k)
        out.append(pa.table(cols))
    return out


def baseline(batches) -> float:
    """Plain pyarrow group_by (name, labels flattened to a string, minute) with count/sum/min/max."""
    import pyarrow.compute as pc

    t0 = time.perf_counter()
    for b in batches:
        labels = b.column("labels").combine_chunks()
        lab = pc.binary_join(pa.ListArray.from_arrays(labels.offsets, labels.items), ",")
        minute = pc.divide(pc.cast(b.column("timestamp"), pa.int64()), 60_000)
        v = b.column("value") if b.column("value").null_count < b.num_rows else b.column("sum")
        pa.table({"n": b.column("name"), "l": lab, "w": minute, "v": v}).group_by(["n", "l", "w"]).aggregate(
            [("v", "count"), ("v", "sum"), ("v", "min"), ("v", "max")]
        )
    return time.perf_counter() - t0


def alert_latency(rounds: int = 20) -> dict:
    cfg = {
        "rules": [
            {
                "name": "HighLatency",
                "select": {"metric": "lat", "value": "p99"},
                "op": ">",
                "threshold": 500,
                "severity": "P1",
            }
        ]
    }
    lat = []
    for r in range(rounds):
        roll = MetricRollup(RollupConfig(resolutions=["1m"], watermark_delay="0s", allowed_lateness="0s"))
        eng = AlertEngine(cfg)
        t0 = 60_000 * (r + 1)
        ok = pa.table(
            {
                "name": ["lat"] * 100,
                "kind": ["gauge"] * 100,
                "timestamp": pa.array(np.arange(100) + t0, pa.timestamp("ms", tz="UTC")),
                "labels": pa.array([[("svc", "a")]] * 100, MAP),
                "value": np.full(100, 100.0),
            }
        )
        eng.process(roll.process(ok).metrics)
        bad = ok.set_column(4, "value", pa.array(np.full(100, 900.0)))
        bad = bad.set_column(2, "timestamp", pa.array(np.arange(100) + t0 + 1000, pa.timestamp("ms", tz="UTC")))
        start = time.perf_counter()
        roll.process(bad)
        events = eng.process(roll.advance_watermark(t0 + 60_000).metrics).events
        lat.append(time.perf_counter() - start)
        assert events and events[0].status == "firing"
    lat.sort()
    return {
        "alert_latency_ms_p50": round(1000 * lat[len(lat) // 2], 3),
        "alert_latency_ms_max": round(1000 * lat[-1], 3),
        "alert_event_time_delay": "window end + allowed_lateness + watermark_delay after the sample (here the window remainder)",
    }


def memory_run(batches) -> dict:
    """One rollup run over the batches measuring peak memory: the Python heap with
    tracemalloc, and the Arrow default pool above what the input batches hold. The pool's
    ``max_memory()`` is a process-lifetime peak that cannot be reset, so this run comes
    first (before the timed runs) and the pool is also sampled after every batch; when the
    run did not raise the lifetime peak (an earlier allocation was higher), only the
    sampled peak is exact and ``arrow_pool_peak_exact`` is false."""
    pool = pa.default_memory_pool()
    pool.release_unused()
    before = pa.total_allocated_bytes()
    max_before = pool.max_memory()
    sampled = before
    tracemalloc.start()
    roll = MetricRollup(RollupConfig(resolutions=["1m", "1h"]))
    for b in batches:
        roll.process(b)
        sampled = max(sampled, pa.total_allocated_bytes())
    roll.flush()
    sampled = max(sampled, pa.total_allocated_bytes())
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    max_after = pool.max_memory()
    raised = max_after is not None and max_before is not None and max_after > max_before
    arrow_peak = (max(max_after, sampled) if raised else sampled) - before
    held = pa.total_allocated_bytes() - before
    del roll
    return {
        "peak_memory_mb_tracemalloc": round(peak / 2**20, 1),
        "arrow_pool_peak_mb": round(arrow_peak / 2**20, 1),
        "arrow_pool_peak_exact": bool(raised),
        "arrow_pool_held_after_flush_mb": round(held / 2**20, 1),
        "arrow_pool_input_batches_mb": round(before / 2**20, 1),
        "arrow_pool_backend": pool.backend_name,
    }


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--series", type=int, default=100_000)
    ap.add_argument("--batches", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=100_000)
    ap.add_argument(
        "--kind",
        choices=["mixed", "histogram"],
        default="mixed",
        help="mixed: gauges and counters; histogram: delta histograms with 16 buckets",
    )
    a = ap.parse_args(argv)
    batches = make_batches(a.series, a.batches, a.batch_size, kind=a.kind)
    n = a.batches * a.batch_size
    mem = memory_run(batches)  # first: the Arrow pool's lifetime peak is then this run's
    # warm-up registers the series (first-sight cost is reported separately)
    roll = MetricRollup(RollupConfig(resolutions=["1m", "1h"]))
    t0 = time.perf_counter()
    roll.process(batches[0])
    first_batch_s = time.perf_counter() - t0
    best = None
    for _ in range(2):
        roll = MetricRollup(RollupConfig(resolutions=["1m", "1h"]))
        t0 = time.perf_counter()
        rows = 0
        for b in batches:
            rows += roll.process(b).metrics.num_rows
        rows += roll.flush().metrics.num_rows
        dt = time.perf_counter() - t0
        best = dt if best is None else min(best, dt)
    base = min(baseline(batches) for _ in range(2))
    res = {
        "bench": "rollups",
        "kind": a.kind,
        "series": a.series,
        "samples": n,
        "rows_out": rows,
        "samples_per_s": round(n / best),
        "baseline_pyarrow_group_by_samples_per_s": round(n / base),
        "first_batch_with_new_series_s": round(first_batch_s, 3),
        **mem,
        "arrow_pool_peak_mb_whole_process": round(pa.default_memory_pool().max_memory() / 2**20, 1),
        **alert_latency(),
    }
    print(
        f"rollups ({a.kind}): {res['samples_per_s']:,} samples/s ({a.series:,} series, 1m+1h); baseline pyarrow group_by "
        f"{res['baseline_pyarrow_group_by_samples_per_s']:,} samples/s; peak memory: Python heap "
        f"{res['peak_memory_mb_tracemalloc']} MB + Arrow pool {res['arrow_pool_peak_mb']} MB; "
        f"alert latency p50 {res['alert_latency_ms_p50']} ms"
    )
    print(json.dumps(res))
    return res


if __name__ == "__main__":
    main()
