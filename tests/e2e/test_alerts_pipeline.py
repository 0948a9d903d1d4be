"""Alert rules end to end on both engines: gauge samples through the metrics stage and
the global stage give exactly the alert timeline (pending → firing, repeat,
resolved, inhibited) the library gives on the same windows."""

import pytest

from sinks import alerts as delivered
from tests.helpers import read_table
from tests.helpers import ALERT_CHANGES, BASE, MIN, ListSource, alert_rules, alert_timeline, metric_spec, run, sample

pytestmark = pytest.mark.alerts

ALERTS = alert_rules(select={"metric": "err_rate", "value": "last"})


def source():
    parts = {0: [], 1: []}
    for m in range(1, 13):
        ts = BASE + (m - 1) * MIN + 30_000
        rate_a, rate_b, up_b = alert_timeline(m)
        parts[0].append((sample("err_rate", "GAUGE", ts, {"service": "a"}, value=rate_a), ts + 100))
        parts[1].append((sample("err_rate", "GAUGE", ts, {"service": "b"}, value=rate_b), ts + 100))
        parts[1].append((sample("up", "GAUGE", ts, {"service": "b"}, value=up_b), ts + 100))
    return ListSource("metrics", "metrics", "metric", parts)


@pytest.mark.parametrize("runner", ["bytewax", "beam"])
def test_alert_timeline_end_to_end(runner, tmp_path):
    spec = metric_spec(tmp_path, {"resolutions": ["1m"], "watermark_delay": "0s", "allowed_lateness": "0s"}, ALERTS)
    delivered.reset()
    run(runner, spec, source())
    rows = (
        read_table(spec, "alerts")
        .sort_by([("ts", "ascending"), ("rule", "ascending"), ("status", "ascending")])
        .to_pylist()
    )
    t = lambda x: (int(x.timestamp() * 1000) - BASE) // 1000 if x is not None else None  # noqa: E731
    got = [
        (t(r["ts"]), r["rule"], dict(r["labels"])["service"], r["status"], t(r["starts_at"]), t(r["ends_at"]))
        for r in rows
    ]
    # pending rows when the condition first holds (starts_at = activeAt); ServiceDown (for: 0) fires at once
    assert got == ALERT_CHANGES
    assert [r["value"] for r in rows if r["status"] == "pending"] == [0.2, 0.5]
    assert dict(rows[1]["annotations"]) == {"summary": "a error rate 0.2", "runbook_url": "https://runbooks/errors"}
    # only firing / resolved are sent on (Prometheus sends Alertmanager nothing while pending)
    sent = [e for kind, e in delivered.RECORD if kind == "event"]
    assert [((e.at - BASE) // 1000, e.rule, e.labels["service"], e.status) for e in sent] == [
        (240, "HighErrorRate", "a", "firing"),
        (300, "ServiceDown", "b", "firing"),
        (360, "HighErrorRate", "b", "firing"),
        (600, "HighErrorRate", "a", "resolved"),
    ]
    notes = [n for kind, n in delivered.RECORD if kind == "notification"]
    assert [
        (
            (n.at - BASE) // 1000,
            n.receiver,
            n.status,
            [(a.rule, a.labels["service"], a.status) for a in n.alerts],
            n.repeat,
        )
        for n in notes
    ] == [
        (270, "ticket", "firing", [("HighErrorRate", "a", "firing")], False),  # group_wait after 4m
        (330, "pager", "firing", [("ServiceDown", "b", "firing")], False),
        (450, "ticket", "firing", [("HighErrorRate", "a", "firing")], True),  # repeat_interval; b is inhibited
        (510, "pager", "firing", [("ServiceDown", "b", "firing")], True),
        (630, "ticket", "resolved", [("HighErrorRate", "a", "resolved")], False),
        (690, "pager", "firing", [("ServiceDown", "b", "firing")], True),
    ]


@pytest.mark.parametrize("runner", ["bytewax", "beam"])
def test_pipeline_alerts_reach_a_real_alertmanager(runner, tmp_path):
    """The same timeline with ``alerts.alertmanager_url`` set: the still-firing alerts are
    active in a real Alertmanager (v2 API, a fresh server per engine); the resolved one is not."""
    import json
    import urllib.request

    from infra import alertmanager

    server = alertmanager.start(
        alerting=ALERTS
    )  # config generated from the spec's route tree; needs the Debian package
    try:
        spec = metric_spec(
            tmp_path,
            {"resolutions": ["1m"], "watermark_delay": "0s", "allowed_lateness": "0s"},
            {**ALERTS, "alertmanager_url": server.url},
        )
        delivered.reset()
        run(runner, spec, source())
        with urllib.request.urlopen(f"{server.url}/api/v2/alerts?active=true&silenced=false&inhibited=true") as r:
            got = json.loads(r.read())
    finally:
        server.stop(remove_data=True)
    active = sorted(
        (a["labels"]["alertname"], a["labels"]["service"])
        for a in got
        if a["status"]["state"] in ("active", "suppressed")
    )
    assert ("ServiceDown", "b") in active and ("HighErrorRate", "b") in active
    assert ("HighErrorRate", "a") not in active  # resolved at 600 s
    # routed by the spec's route tree in the real Alertmanager: P0 → pager, P2 → ticket
    receivers = {(a["labels"]["alertname"], a["labels"]["service"]): [r["name"] for r in a["receivers"]] for a in got}
    assert receivers[("ServiceDown", "b")] == ["pager"] and receivers[("HighErrorRate", "b")] == ["ticket"]
    assert not any(a["labels"].get("alertstate") == "pending" for a in got)
    for a in got:
        if a["labels"]["alertname"] == "HighErrorRate":
            assert a["annotations"]["runbook_url"] == "https://runbooks/errors"


@pytest.mark.parametrize("runner", ["bytewax", "beam"])
def test_still_firing_alerts_are_resent_from_the_global_stage(runner, tmp_path):
    """The global stage's re-sends (resend_delay 1m, the default: every other 1m evaluation,
    as Prometheus) reach the sink as ``resend`` records with ``endsAt`` 4m ahead; they are
    not state changes (not in obs.alerts, not ``event`` records)."""
    spec = metric_spec(tmp_path, {"resolutions": ["1m"], "watermark_delay": "0s", "allowed_lateness": "0s"}, ALERTS)
    delivered.reset()
    run(runner, spec, source())
    resent = [e for kind, e in delivered.RECORD if kind == "resend"]
    assert [((e.at - BASE) // 1000, e.rule, e.labels["service"], (e.valid_until - e.at) // 1000) for e in resent] == [
        (360, "HighErrorRate", "a", 240),
        (420, "ServiceDown", "b", 240),
        (480, "HighErrorRate", "a", 240),
        (480, "HighErrorRate", "b", 240),
        (540, "ServiceDown", "b", 240),
        (600, "HighErrorRate", "b", 240),
        (660, "ServiceDown", "b", 240),
        (720, "HighErrorRate", "b", 240),
    ]
    assert all(e.status == "firing" and e.resend for e in resent)
    assert read_table(spec, "alerts").num_rows == 6 and len([k for k, _ in delivered.RECORD if k == "event"]) == 4
