"""Sessions, funnels, abandonment and stack fingerprints."""

import json

import pyarrow as pa
import pytest

from sources.generator import partition_stream
from transforms.product import ErrorGrouper, ProductAnalytics, ProductConfig, normalize_stack
from transforms.product.fingerprint import fingerprint

pytestmark = pytest.mark.metrics
COLS = ("session_id", "ts", "event_type", "page", "form", "form_step")


def events(rows):
    t = {c: [r.get(c) for r in rows] for c in COLS}
    t["ts"] = pa.array(t["ts"], pa.timestamp("ms", tz="UTC"))
    t["form_step"] = pa.array(t["form_step"], pa.int32())
    return pa.table(t)


def walk(sid, t0, steps, submit=False, complete=False):
    rows = [
        {"session_id": sid, "ts": t0, "event_type": "page_view", "page": "/"},
        {"session_id": sid, "ts": t0 + 1000, "event_type": "page_view", "page": "/signup"},
        {"session_id": sid, "ts": t0 + 1500, "event_type": "form_start", "page": "/signup", "form": "signup"},
    ]
    for i in range(1, steps + 1):
        rows.append(
            {
                "session_id": sid,
                "ts": t0 + 2000 + 1000 * i,
                "event_type": "form_step",
                "page": f"/signup/step-{i}",
                "form": "signup",
                "form_step": i,
            }
        )
    if submit:
        rows.append(
            {"session_id": sid, "ts": t0 + 9000, "event_type": "form_submit", "page": "/signup", "form": "signup"}
        )
    if complete:
        rows.append(
            {"session_id": sid, "ts": t0 + 9500, "event_type": "signup_complete", "page": "/welcome", "form": "signup"}
        )
    return rows


def test_sessions_funnel_and_report_known_answers():
    rows = (
        walk("s1", 0, 5, True, True)
        + walk("s2", 100, 3)
        + walk("s3", 200, 5, True)
        + [{"session_id": "s4", "ts": 300, "event_type": "page_view", "page": "/pricing"}]
        + walk("s1", 40 * 60_000, 1)
    )  # same id after the 30m gap: a second session
    rows.sort(key=lambda r: r["ts"])
    pa_ = ProductAnalytics(ProductConfig(session_gap="30m", watermark_delay="0s", report_resolution="1h"))
    out1 = pa_.process(events(rows))
    # the first s1 session closed when its id reappeared; s2..s4 closed by the watermark (40m > last + 30m)
    assert sorted(out1.sessions.column("session_id").to_pylist()) == ["s1", "s2", "s3", "s4"]
    out2 = pa_.flush()
    sess = {
        (r["session_id"], r["start"].timestamp() > 60): r for r in out1.sessions.to_pylist() + out2.sessions.to_pylist()
    }
    s1 = sess[("s1", False)]
    assert (s1["funnel"], s1["funnel_steps_reached"], s1["funnel_last_step"], s1["abandoned"]) == (
        "signup",
        9,
        "complete",
        False,
    )
    assert (
        s1["pages"]
        == [
            "/",
            "/signup",
            "/signup/step-1",
            "/signup/step-2",
            "/signup/step-3",
            "/signup/step-4",
            "/signup/step-5",
            "/signup",
            "/welcome",
        ]
        and s1["events"] == 10
        and s1["duration_ms"] == 9500
    )
    s2 = sess[("s2", False)]
    assert (s2["funnel_steps_reached"], s2["funnel_last_step"], s2["abandoned"]) == (5, "step_3", True)
    s3 = sess[("s3", False)]
    assert (s3["funnel_steps_reached"], s3["funnel_last_step"], s3["abandoned"]) == (8, "submit", False)
    s4 = sess[("s4", False)]
    assert (s4["funnel"], s4["funnel_steps_reached"], s4["abandoned"]) == (None, 0, False)
    s1b = sess[("s1", True)]
    assert (s1b["funnel_steps_reached"], s1b["abandoned"]) == (3, True)
    assert pa_.stats["reopened"] == 1
    rep = pa.concat_tables([out1.funnel_report, out2.funnel_report]).to_pylist()

    def val(name, step, field="count", ws_hour=0):
        (r,) = [
            r
            for r in rep
            if r["name"] == name and dict(r["labels"]).get("step") == step and r["window_start"].hour == ws_hour
        ]
        return r[field]

    assert [val("funnel.step.reached", s) for s in ("view", "step_1", "step_3", "step_4", "submit", "complete")] == [
        4,
        4,
        3,
        2,
        2,
        1,
    ]
    assert (
        val("funnel.step.dropoff", "step_1") == 1
        and val("funnel.step.dropoff", "step_3") == 1
        and val("funnel.step.dropoff", "submit") == 1
    )
    assert val("funnel.step.conversion", "step_4", "last") == pytest.approx(2 / 3)
    assert val("funnel.step.time_ms", "step_2", "count") == 3 and val("funnel.step.time_ms", "step_2", "max") == 1000.0
    (ab,) = [r for r in rep if r["name"] == "funnel.form.abandoned" and r["window_start"].hour == 0]
    assert ab["count"] == 2  # s2 and the second s1 session (both end in hour 0)


def test_funnel_numbers_on_generated_stream():
    rows, expect = [], {}
    for g in partition_stream("event", "events", 0, 4000, seed=7, start_ms=1_700_000_000_000, bad_fraction=0.0):
        env = json.loads(g.value)
        import datetime as dt

        ts = int(dt.datetime.fromisoformat(env["timestamp"].replace("Z", "+00:00")).timestamp() * 1000)
        for e in env["events"]:
            rows.append(
                {
                    "session_id": env["session_id"],
                    "ts": ts,
                    "event_type": e["type"],
                    "page": env["page"],
                    "form": e.get("form"),
                    "form_step": e.get("step"),
                }
            )
    # independent answer: the generator's sessions walk view → start → steps → submit → complete, stopping when abandoning
    by_s = {}
    for r in rows:
        by_s.setdefault(r["session_id"], []).append(r)
    for sid, evs in by_s.items():
        kinds = {(e["event_type"], e["page"] if e["event_type"] == "page_view" else None, e["form_step"]) for e in evs}
        chain = (
            [("page_view", "/signup", None), ("form_start", None, None)]
            + [("form_step", None, i) for i in range(1, 6)]
            + [("form_submit", None, None), ("signup_complete", None, None)]
        )
        k = 0
        while k < len(chain) and chain[k] in kinds:
            k += 1
        started = ("form_start", None, None) in kinds
        expect[sid] = (k, started and ("form_submit", None, None) not in kinds)
    p = ProductAnalytics(ProductConfig(session_gap="30m"))
    got = [p.process(events(rows[i : i + 1000])).sessions for i in range(0, len(rows), 1000)] + [p.flush().sessions]
    got = {r["session_id"]: (r["funnel_steps_reached"], r["abandoned"]) for t in got for r in t.to_pylist()}
    assert got == expect
    assert sum(1 for k, ab in expect.values() if ab) > 10 and sum(1 for k, _ in expect.values() if k == 9) > 10


def test_snapshot_restore_mid_stream():
    rows = sorted(walk("a", 0, 5, True, True) + walk("b", 500, 2) + walk("c", 31 * 60_000, 4), key=lambda r: r["ts"])
    cfg = ProductConfig(watermark_delay="0s")

    def run(restart):
        p, outs = ProductAnalytics(cfg), []
        for i in range(0, len(rows), 5):
            if restart and i == 10:
                q = ProductAnalytics(cfg)
                q.restore(p.snapshot())
                p = q
            outs.append(p.process(events(rows[i : i + 5])))
        outs.append(p.flush())
        return outs

    for x, y in zip(run(False), run(True)):
        assert x.sessions.equals(y.sessions) and x.funnel_report.equals(y.funnel_report)


def test_stack_fingerprints():
    a = (
        "TypeError: Cannot read properties of undefined (reading 'value') for [EMAIL]\n"
        "    at submitForm (https://app.example.com/static/js/main.3f9a1b2c.js:123:45)\n"
        "    at HTMLButtonElement.onClick (https://app.example.com/static/js/vendor.js:77:12)\n"
        "    at invokeGuardedCallback (react-dom.production.min.js:52:10)"
    )
    b = (
        a.replace("3f9a1b2c", "0badcafe")
        .replace(":123:45", ":9:1")
        .replace(":77:12", ":78:2")
        .replace("for [EMAIL]", "x")
    )
    c = a.replace("submitForm", "renderPrice")
    assert normalize_stack(a) == (
        "TypeError\nat submitForm (main.js)\nat HTMLButtonElement.onClick (vendor.js)\n"
        "at invokeGuardedCallback (react-dom.production.min.js)"
    )
    assert normalize_stack("Error: x\n  at f (/srv/app/lib.js:1:2) 0x7ffee3b1c9a0") == "Error\nat f (lib.js) 0x?"
    assert fingerprint(normalize_stack(a)) == fingerprint(normalize_stack(b)) != fingerprint(normalize_stack(c))
    g = ErrorGrouper()
    ev = pa.table(
        {
            "event_type": ["error", "error", "click", "error"],
            "ts": pa.array([5000, 1000, 2000, 3000], pa.timestamp("ms", tz="UTC")),
            "error_message": ["m1", "m2", None, "m3"],
            "error_stack": [a, b, None, c],
        }
    )
    g.process(ev)
    rows = g.groups().to_pylist()
    assert [(r["count"], r["error_type"]) for r in rows] == [(2, "TypeError"), (1, "TypeError")]
    assert (
        rows[0]["first_seen"].timestamp() == 1.0
        and rows[0]["last_seen"].timestamp() == 5.0
        and rows[0]["sample_message"] == "m2"
    )


def test_events_without_session_id_are_counted_and_reconcile():
    rows = (
        walk("a", 0, 2)
        + [
            {"session_id": None, "ts": 500, "event_type": "page_view", "page": "/"},
            {"session_id": "", "ts": 600, "event_type": "click", "page": "/"},
            {"session_id": "b", "ts": None, "event_type": "click", "page": "/"},
        ]
        + walk("c", 700, 1)
    )
    p = ProductAnalytics(ProductConfig(watermark_delay="0s"))
    out = p.process(events(rows))
    assert out.sessions.num_rows == 0
    assert (p.stats["events"], p.stats["no_session_id"], p.stats["no_ts"]) == (12, 2, 1) and p.reconcile()
    closed = p.flush().sessions
    assert (
        sorted(closed.column("session_id").to_pylist()) == ["a", "c"] and sum(closed.column("events").to_pylist()) == 9
    )
    assert p.stats["session_events"] == 9 and p.reconcile()
