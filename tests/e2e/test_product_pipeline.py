"""Product analytics end to end: the sessions and the signup funnel the pipeline writes
equal an independent computation from the generator's own records (Beam gives the same
rows: tests/e2e/test_metrics_pipeline.py::test_generated_metrics_sessions_and_alerts_same_on_both_engines)."""

import json
from collections import Counter

import pytest

from tests.helpers import START_MS, embedded, local_spec, read_table
from tests.helpers import run

pytestmark = pytest.mark.metrics

STEPS = [
    ("view", lambda e, p: e["type"] == "page_view" and p == "/signup"),
    ("form_start", lambda e, p: e["type"] == "form_start"),
]
STEPS += [
    (f"step_{i}", (lambda i: lambda e, p: e["type"] == "form_step" and e.get("step") == i)(i)) for i in range(1, 6)
]
STEPS += [
    ("submit", lambda e, p: e["type"] == "form_submit"),
    ("complete", lambda e, p: e["type"] == "signup_complete"),
]


def expected(spec, count):
    """Per session (from the good event records): interactions, funnel steps reached
    (longest prefix of steps that occur), abandoned (form started, not submitted)."""
    sessions: dict[str, list] = {}
    src = embedded(spec, count, batch_size=500)
    for part in src.partitions():
        if part.signal != "event":
            continue
        for g in src.stream(part):
            if g.label is None:
                rec = json.loads(g.value)
                sessions.setdefault(rec["session_id"], []).extend((e, rec["page"]) for e in rec["events"])
    out = {}
    for sid, evs in sessions.items():
        k = 0
        for _, match in STEPS:
            if not any(match(e, p) for e, p in evs):
                break
            k += 1
        started = any(e["type"] == "form_start" for e, _ in evs)
        submitted = any(e["type"] == "form_submit" for e, _ in evs)
        out[sid] = (len(evs), k, started and not submitted)
    return out


def test_sessions_and_funnel_match_the_generator(tmp_path):
    spec = local_spec(tmp_path, metrics=True)
    run("bytewax", spec, count=3000, start_ms=START_MS, rate_per_s=2000.0, batch_size=500)
    want = expected(spec, 3000)
    rows = read_table(spec, "sessions").to_pylist()
    got = {r["session_id"]: (r["events"], r["funnel_steps_reached"] or 0, bool(r["abandoned"])) for r in rows}
    assert got == want
    reached = Counter()
    for _, k, _ in want.values():
        for i in range(k):
            reached[STEPS[i][0]] += 1
    m = read_table(spec, "metrics").to_pylist()
    report = Counter()
    for r in m:
        if r["name"] == "funnel.step.reached":
            report[dict(r["labels"])["step"]] += r["count"]
    assert report == reached
    abandoned = sum(r["count"] for r in m if r["name"] == "funnel.form.abandoned")
    assert abandoned == sum(a for _, _, a in want.values())
    assert reached["form_start"] > reached["complete"] > 0


STACK_A = (
    "TypeError: Cannot read properties of undefined (reading 'value')\n"
    "    at submitForm (https://app.example.com/static/js/main.3f9a1b2c.js:123:45)\n"
    "    at HTMLButtonElement.onClick (https://app.example.com/static/js/vendor.js:77:12)"
)
STACK_A2 = STACK_A.replace("3f9a1b2c", "0badcafe").replace(":123:45", ":9:1")  # same fingerprint
STACK_C = (
    "RangeError: Invalid array length\n    at renderPrice (https://app.example.com/static/js/price.7c1e2d3f.js:5:2)"
)


def _envelope(sid, ts, events, page="/"):
    from tests.helpers import iso

    return json.dumps(
        {"event_id": f"e-{sid}-{ts}", "timestamp": iso(ts), "page": page, "session_id": sid, "events": events}
    ).encode()


def _err(stack, message):
    return {"type": "error", "message": message, "stackTrace": stack}


@pytest.mark.parametrize("runner", ["bytewax", "beam"])
def test_error_groups_first_last_seen_and_sessionless_events(runner, tmp_path):
    """Hand-made events through validate → scrub → product on both engines: per report
    window and stack fingerprint, ``product.errors`` rows carry count, first seen (min) and
    last seen (max); events with an empty session id are in no session and are counted
    (``product.events_without_session``), so events = session events + sessionless ones."""
    from pipelines.loader import parse_spec
    from tests.helpers import BASE, ListSource
    from transforms.product import ErrorGrouper, normalize_stack
    from transforms.product.fingerprint import fingerprint

    H = 3_600_000
    t0 = (BASE // H + 1) * H  # an hour boundary: report windows [t0, t0+1h), [t0+1h, t0+2h)
    recs = {
        0: [
            (_envelope("s1", t0 + 1_000, [{"type": "page_view"}]), t0 + 1_000),
            (_envelope("s1", t0 + 10_000, [_err(STACK_A, "m1")]), t0 + 10_000),
            (_envelope("", t0 + 15_000, [{"type": "page_view"}, {"type": "click", "target": "#x"}]), t0 + 15_000),
            (_envelope("", t0 + 40_000, [_err(STACK_A, "m4")]), t0 + 40_000),
            (_envelope("s4", t0 + H + 5_000, [_err(STACK_C, "m6")]), t0 + H + 5_000),
        ],
        1: [
            (_envelope("s2", t0 + 20_000, [_err(STACK_A2, "m2")]), t0 + 20_000),
            (_envelope("s2", t0 + 30_000, [_err(STACK_C, "m3")]), t0 + 30_000),
            (_envelope("s3", t0 + H + 1_000, [_err(STACK_A, "m5")]), t0 + H + 1_000),
            (_envelope("", t0 + H + 2_000, [{"type": "page_view"}]), t0 + H + 2_000),
        ],
    }
    parts = {p: [(v, ts + 100) for v, ts in r] for p, r in recs.items()}  # ingest time: event time + 100 ms
    spec = parse_spec(
        {
            "name": "t",
            "storage": {"catalog": {"warehouse": str(tmp_path / "wh")}},
            "sources": [{"name": "events", "topic": "events", "signal": "event", "partitions": 2}],
            "flows": [
                {
                    "name": "p",
                    "source": "events",
                    "sink": {"table": "events"},
                    "steps": [
                        {"kind": "validate"},
                        {"kind": "scrub"},
                        {
                            "kind": "product",
                            "shards": 2,
                            "config": {"session_gap": "30m", "watermark_delay": "0s", "report_resolution": "1h"},
                        },
                    ],
                }
            ],
        }
    )
    run(runner, spec, ListSource("events", "events", "event", parts))

    fa, fc = fingerprint(normalize_stack(STACK_A)), fingerprint(normalize_stack(STACK_C))
    assert fingerprint(normalize_stack(STACK_A2)) == fa != fc
    m = read_table(spec, "metrics").to_pylist()
    got = sorted(
        (
            int(r["window_start"].timestamp() * 1000) - t0,
            dict(r["labels"])["fingerprint"],
            dict(r["labels"])["error_type"],
            r["count"],
            r["min"] - t0,
            r["max"] - t0,
        )
        for r in m
        if r["name"] == "product.errors"
    )
    assert got == sorted(
        [
            (0, fa, "TypeError", 3, 10_000, 40_000),
            (0, fc, "RangeError", 1, 30_000, 30_000),
            (H, fa, "TypeError", 1, H + 1_000, H + 1_000),
            (H, fc, "RangeError", 1, H + 5_000, H + 5_000),
        ]
    )
    # over all windows, per fingerprint: what the library ErrorGrouper gives on the events the pipeline wrote
    ev = read_table(spec, "events")
    grouper = ErrorGrouper()
    grouper.process(ev)
    lib = {r["fingerprint"]: (r["count"], r["first_seen"], r["last_seen"]) for r in grouper.groups().to_pylist()}
    agg = {}
    for r in m:
        if r["name"] == "product.errors":
            fp = dict(r["labels"])["fingerprint"]
            c, lo, hi = agg.get(fp, (0, float("inf"), float("-inf")))
            agg[fp] = (c + r["count"], min(lo, r["min"]), max(hi, r["max"]))
    assert {fp: (c, lo, hi) for fp, (c, lo, hi) in agg.items()} == {
        fp: (c, first.timestamp() * 1000, last.timestamp() * 1000) for fp, (c, first, last) in lib.items()
    }
    assert {fp: c for fp, (c, _, _) in agg.items()} == {fa: 4, fc: 2}
    # sessionless events: counted per report window, and everything reconciles with obs.events
    nos = sorted(
        (int(r["window_start"].timestamp() * 1000) - t0, r["count"])
        for r in m
        if r["name"] == "product.events_without_session"
    )
    assert nos == [(0, 3), (H, 1)]
    sessions = read_table(spec, "sessions").to_pylist()
    assert sorted((r["session_id"], r["events"], r["errors"]) for r in sessions) == [
        ("s1", 2, 1),
        ("s2", 2, 2),
        ("s3", 1, 1),
        ("s4", 1, 1),
    ]
    assert ev.num_rows == 10 == sum(r["events"] for r in sessions) + sum(c for _, c in nos)
