"""Step times and time to convert of an unordered funnel when client clocks jitter: a step
is reached when every step up to it has occurred, so its time is the latest of those first
occurrences and no time between steps (nor a time to convert) is negative."""

import pyarrow as pa
import pytest

from transforms.product import ProductAnalytics, ProductConfig

pytestmark = pytest.mark.metrics
COLS = ("session_id", "ts", "event_type", "page", "form", "form_step")


def _events(rows):
    t = {c: [r.get(c) for r in rows] for c in COLS}
    t["ts"] = pa.array(t["ts"], pa.timestamp("ms", tz="UTC"))
    t["form_step"] = pa.array(t["form_step"], pa.int32())
    return pa.table(t)


def _session(sid: str, t0: int, jitter_ms: int) -> list[dict]:
    """The default signup funnel walked in order, except that step_1's client clock runs
    ``jitter_ms`` behind: its event time is before the /signup view (step 1)."""
    rows = [
        {"session_id": sid, "ts": t0, "event_type": "page_view", "page": "/signup"},
        {"session_id": sid, "ts": t0 + 500, "event_type": "form_start", "page": "/signup", "form": "signup"},
        {
            "session_id": sid,
            "ts": t0 - jitter_ms,
            "event_type": "form_step",
            "page": "/signup",
            "form": "signup",
            "form_step": 1,
        },
    ]
    for i in range(2, 6):
        rows.append(
            {
                "session_id": sid,
                "ts": t0 + 1000 * i,
                "event_type": "form_step",
                "page": "/signup",
                "form": "signup",
                "form_step": i,
            }
        )
    rows.append({"session_id": sid, "ts": t0 + 7000, "event_type": "form_submit", "page": "/signup", "form": "signup"})
    return rows


def test_jittered_step_before_the_first_never_gives_negative_times():
    # s1: step_1 stamped 1,140 ms before the view (the demo's -1140 ms minimum); s2: the whole
    # funnel within 60 ms, its completion stamped before the view
    s2 = [
        {"session_id": "s2", "ts": 1000, "event_type": "signup_complete", "page": "/welcome", "form": "signup"},
        {"session_id": "s2", "ts": 2140, "event_type": "page_view", "page": "/signup"},
        {"session_id": "s2", "ts": 2150, "event_type": "form_start", "page": "/signup", "form": "signup"},
    ]
    s2 += [
        {
            "session_id": "s2",
            "ts": 2160 + i,
            "event_type": "form_step",
            "page": "/signup",
            "form": "signup",
            "form_step": i,
        }
        for i in range(1, 6)
    ]
    s2.append({"session_id": "s2", "ts": 2200, "event_type": "form_submit", "page": "/signup", "form": "signup"})
    rows = (
        _session("s1", 10_000, 1140)
        + [{"session_id": "s1", "ts": 18_000, "event_type": "signup_complete", "page": "/welcome", "form": "signup"}]
        + s2
    )
    pa_ = ProductAnalytics(ProductConfig(session_gap="30m", watermark_delay="0s", report_resolution="1h"))
    rep = pa.concat_tables([pa_.process(_events(rows)).funnel_report, pa_.flush().funnel_report]).to_pylist()
    (conv,) = [r for r in rep if r["name"] == "funnel.time_to_convert_ms"]
    # s1: view at 10,000, complete at 18,000 -> 8,000; s2: view at 2,140 reached first, complete (stamped
    # 1,000) counts when every step before it has occurred: at submit, 2,200 -> 60
    assert (conv["count"], conv["min"], conv["max"], conv["sum"]) == (2, 60.0, 8000.0, 8060.0)
    times = {dict(r["labels"])["step"]: r for r in rep if r["name"] == "funnel.step.time_ms"}
    # step_1 (stamped 8,860 in s1) is reached at form_start (10,500): 0 ms after it, not -1,640
    assert (times["step_1"]["min"], times["step_1"]["max"]) == (0.0, 11.0)  # s1: 0; s2: 2,161 - 2,150
    assert (times["step_2"]["min"], times["step_2"]["max"]) == (1.0, 1500.0)  # s2: 1; s1: 12,000 - 10,500
    assert (times["complete"]["min"], times["complete"]["max"]) == (0.0, 1000.0)  # s2: 0; s1: 18,000 - 17,000
    assert all(r["min"] >= 0 for r in times.values())


def _lower(values: list[float], q: float) -> float:
    """The lower order statistic at rank floor(q * (n - 1)) of ``values`` (plain Python)."""
    s = sorted(values)
    return s[int(q * (len(s) - 1) // 1)]


def test_step_time_and_time_to_convert_quantiles_p50_p75_p95_exact():
    """p50 / p75 / p95 of the time between steps and of the time to convert are the lower
    order statistics of the sessions' own times (the funnel report's quantile method),
    computed here in plain Python from the events this test makes."""
    rows, form_start_gap, convert = [], [], []
    for k in range(37):  # 37 sessions, each its own gap view -> form_start; 3 of 4 convert
        sid, t0 = f"q{k}", 100_000 * k
        gap = (k * 7919) % 1000 + 1  # distinct, unordered gaps
        rows.append({"session_id": sid, "ts": t0, "event_type": "page_view", "page": "/signup"})
        rows.append(
            {"session_id": sid, "ts": t0 + gap, "event_type": "form_start", "page": "/signup", "form": "signup"}
        )
        form_start_gap.append(float(gap))
        if k % 4:
            end = t0 + gap + 10 * k
            for i in range(1, 6):
                rows.append(
                    {
                        "session_id": sid,
                        "ts": end,
                        "event_type": "form_step",
                        "page": "/signup",
                        "form": "signup",
                        "form_step": i,
                    }
                )
            rows.append(
                {"session_id": sid, "ts": end, "event_type": "form_submit", "page": "/signup", "form": "signup"}
            )
            rows.append(
                {"session_id": sid, "ts": end, "event_type": "signup_complete", "page": "/welcome", "form": "signup"}
            )
            convert.append(float(end - t0))
    pa_ = ProductAnalytics(ProductConfig(session_gap="30m", watermark_delay="0s", report_resolution="24h"))
    rep = pa.concat_tables([pa_.process(_events(rows)).funnel_report, pa_.flush().funnel_report]).to_pylist()
    (step,) = [r for r in rep if r["name"] == "funnel.step.time_ms" and dict(r["labels"])["step"] == "form_start"]
    (conv,) = [r for r in rep if r["name"] == "funnel.time_to_convert_ms"]
    for row, want in ((step, form_start_gap), (conv, convert)):
        assert row["count"] == len(want)
        assert [row[c] for c in ("p50", "p75", "p90", "p95")] == [_lower(want, q) for q in (0.5, 0.75, 0.9, 0.95)]
    assert (len(form_start_gap), len(convert)) == (37, 27)
