"""Product analytics end to end: the sessions and the signup funnel the pipeline writes
equal an independent computation from the generator's own records (Beam gives the same
rows: tests/test_metrics_pipeline.py::test_generated_metrics_sessions_and_alerts_same_on_both_engines)."""

import json
from collections import Counter

import pytest

from tests.helpers import START_MS, embedded, local_spec, read_table
from tests.stage_helpers import run

pytestmark = pytest.mark.metrics

STEPS = [("view", lambda e, p: e["type"] == "page_view" and p == "/signup"),
         ("form_start", lambda e, p: e["type"] == "form_start")]
STEPS += [(f"step_{i}", (lambda i: lambda e, p: e["type"] == "form_step" and e.get("step") == i)(i)) for i in range(1, 6)]
STEPS += [("submit", lambda e, p: e["type"] == "form_submit"), ("complete", lambda e, p: e["type"] == "signup_complete")]


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
