"""Head sampling consistent with the probabilistic policy; log sampling rules; RED metrics."""

import numpy as np
import pyarrow as pa
import pytest

from tests.tail_sampling.helpers import decide, span, table, tid, trace
from transforms.tail_sampling import HeadSampler, LogSampler, RedMetrics
from transforms.tail_sampling.hashing import fnv1a64, hash_strings, threshold

pytestmark = pytest.mark.traces


@pytest.mark.parametrize("pct,salt", [(10, ""), (37.5, "salty")])
def test_head_sampling_keeps_the_set_the_probabilistic_policy_keeps(pct, salt):
    traces = [trace(k, n=2) for k in range(1, 1001)]
    pol = {"name": "p", "type": "probabilistic", "probabilistic": {"sampling_percentage": pct, "hash_salt": salt}}
    tail_ids, _ = decide([pol], traces)
    head = HeadSampler(pct, salt).sample(table([r for t in traces for r in t]))
    head_ids = list(dict.fromkeys(head.column("trace_id").to_pylist()))
    assert head_ids == tail_ids and len(tail_ids) > 50
    assert head.num_rows == 2 * len(head_ids) and set(head.column("adjusted_count").to_pylist()) == {100 / pct}
    # nested: what is kept at 10% is kept at 20%
    assert set(HeadSampler(pct / 2, salt).sample(head).column("trace_id").to_pylist()) <= set(head_ids)


LOG = pa.schema(
    [
        ("timestamp", pa.timestamp("ms", tz="UTC")),
        ("level", pa.string()),
        ("service", pa.string()),
        ("message", pa.string()),
        ("trace_id", pa.string()),
        ("request_id", pa.string()),
    ]
)


def logs(rows):
    return pa.table({f.name: pa.array([r.get(f.name) for r in rows], f.type) for f in LOG})


def test_log_sampling_rules():
    ids = [tid(k) for k in range(1, 401)]
    rows = [
        {"timestamp": k, "level": lvl, "service": "api", "message": f"m{k}", "trace_id": t}
        for k, t in enumerate(ids)
        for lvl in ("INFO", "DEBUG", "ERROR")
    ]
    rows += [
        {"timestamp": k, "level": "info", "service": "api", "message": f"u{k}", "request_id": f"r{k}"}
        for k in range(400)
    ]
    batch = logs(rows)
    ls = LogSampler({"sampling_percentage": 20, "level_percentages": {"DEBUG": 5}})
    out = ls.decide_logs(batch)
    got = out.to_pylist()
    # every ERROR kept, rate 1
    assert sum(r["level"] == "ERROR" for r in got) == 400
    assert {r["sample_rate"] for r in got if r["level"] == "ERROR"} == {1.0}
    # INFO with a trace id: exactly the traces head sampling keeps at 20% (same hash)
    info = [r["trace_id"] for r in got if r["level"] == "INFO" and r["trace_id"]]
    assert info == [t for t in ids if HeadSampler(20).keep_mask([t])[0]]
    # INFO kept at 20%: sample_rate is the fraction kept, 0.2
    assert {r["sample_rate"] for r in got if r["level"] == "INFO"} == {0.2}
    # DEBUG at 5%: a subset of those traces, sample_rate 0.05
    debug = [r for r in got if r["level"] == "DEBUG"]
    assert {r["trace_id"] for r in debug} <= set(info) and {r["sample_rate"] for r in debug} == {0.05}
    # untraced lines: by the hash of request_id
    untraced = [r["request_id"] for r in got if r["level"] == "info"]
    assert untraced == [f"r{k}" for k in range(400) if fnv1a64(f"r{k}".encode()) <= threshold(20)]
    assert ls.kept_lines + ls.dropped_lines == batch.num_rows
    # tail mode: a kept trace keeps all its logs (sample_rate = 1 / its adjusted count), a dropped one only warnings and errors
    kept = {ids[0]: 1.0, ids[1]: 4.0}
    tail = LogSampler({"sampling_percentage": 0}).decide_logs(batch.slice(0, 12), kept_trace_ids=kept).to_pylist()
    assert [(r["trace_id"], r["level"], r["sample_rate"]) for r in tail] == [
        (ids[0], "INFO", 1.0),
        (ids[0], "DEBUG", 1.0),
        (ids[0], "ERROR", 1.0),
        (ids[1], "INFO", 0.25),
        (ids[1], "DEBUG", 0.25),
        (ids[1], "ERROR", 1.0),
        (ids[2], "ERROR", 1.0),
        (ids[3], "ERROR", 1.0),
    ]


def test_hash_strings_matches_reference():
    vals = ["", "a", "request-123", "x" * 300, None]
    got = hash_strings(pa.array(vals), "s").tolist()
    assert got == [fnv1a64((v or "").encode()[:256], "s") for v in vals]


def test_red_metrics_exact_counts_and_quantiles_within_1pct():
    rng = np.random.default_rng(3)
    n = 20_000
    durs = np.round(rng.lognormal(3, 1.2, n), 3)  # ms
    rows = []
    for i in range(n):
        svc = "api" if i % 4 else "db"
        status = "ERROR" if i % 50 == 0 else "OK"
        rows.append(
            span(
                i + 1,
                0,
                None,
                start_ms=(i % 120) * 1000,
                dur_ms=float(durs[i]),
                status=status,
                service=svc,
                name="GET /x",
            )
        )
    spans = table(rows)
    red = RedMetrics(window_ms=60_000, exemplar_delay_ms=10_000)
    for k in range(0, n, 5000):
        red.add(spans.slice(k, 5000))
    red.add_exemplars(spans.slice(0, 5))
    assert red.flush(69_999).num_rows == 0
    first = red.flush(130_000).to_pylist()
    out = first + red.flush_all().to_pylist()
    start_s = np.array([(i % 120) for i in range(n)])
    for svc in ("api", "db"):
        for status in ("OK", "ERROR"):
            for w in (0, 1):
                sel = np.array(
                    [
                        (("api" if i % 4 else "db") == svc) and (("ERROR" if i % 50 == 0 else "OK") == status)
                        for i in range(n)
                    ]
                ) & (start_s // 60 == w)

                def row(name, _w=w, _svc=svc, _st=status):
                    return [
                        r
                        for r in out
                        if r["name"] == name
                        and r["window_start"].timestamp() == _w * 60
                        and dict(r["labels"]).get("service") == _svc
                        and dict(r["labels"])["status"] == _st
                    ]

                if not sel.any():
                    assert not row("span.calls")
                    continue
                (calls,) = row("span.calls")
                (errors,) = row("span.errors")
                (hist,) = row("span.duration_ms")
                assert calls["count"] == sel.sum() and calls["rate"] == sel.sum() / 60
                assert errors["count"] == (sel.sum() if status == "ERROR" else 0)
                d = np.sort(durs[sel])
                assert (
                    hist["count"] == len(d)
                    and hist["min"] == pytest.approx(d[0])
                    and hist["max"] == pytest.approx(d[-1])
                )
                assert hist["sum"] == pytest.approx(d.sum())
                for name, q in (("p50", 0.5), ("p75", 0.75), ("p90", 0.9), ("p95", 0.95), ("p99", 0.99)):
                    exact = d[int(q * (len(d) - 1))]
                    assert abs(hist[name] - exact) <= 0.01 * exact + 1e-9, (name, hist[name], exact)
                buckets = row("span.duration_ms.bucket")
                le = {dict(b["labels"])["le"]: b["count"] for b in buckets}
                assert le["+Inf"] == len(d) and le["50"] == (d <= 50).sum() and le["1"] == (d <= 1).sum()
    ex = [r["exemplar_trace_ids"] for r in out if r["name"] == "span.duration_ms" and r["exemplar_trace_ids"]]
    assert sorted(sum(ex, [])) == sorted(tid(k) for k in range(1, 6))
    # a span for an emitted window is counted, not silently dropped
    red.add(table([span(99_999, 0, None, start_ms=1000)]))
    assert red.late_dropped == 1
