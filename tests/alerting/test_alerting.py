"""Alert rules and Alertmanager semantics: an exact timeline, anomaly and absence rules,
snapshot/restore, and a real Alertmanager reading back what we post."""

import contextlib
import json
import time

import pyarrow as pa
import pytest

from schemas.tables import METRICS
from schemas.wire import raw_avro_schema
from tests.helpers import ALERT_CHANGES, alert_rules, alert_timeline
from transforms.alerting import AlertEngine, AlertingConfig, AlertmanagerClient, alert_rows

pytestmark = pytest.mark.alerts
MIN = 60_000


def window_rows(m, series):
    """METRICS rows of the 1m window ending at minute m: series = [(name, labels, {field: value})]."""
    base = {c: None for c in METRICS.arrow_schema().names}
    rows = []
    for name, labels, vals in series:
        rows.append(
            {
                **base,
                "window_start": (m - 1) * MIN * 1000,
                "window_end": m * MIN * 1000,
                "resolution": "1m",
                "name": name,
                "kind": "summary",
                "labels": sorted(labels.items()),
                "exemplar_trace_ids": [],
                "late_samples": 0,
                **vals,
            }
        )
    t = pa.Table.from_pylist(
        rows,
        schema=METRICS.arrow_schema()
        .set(0, pa.field("window_start", pa.int64()))
        .set(1, pa.field("window_end", pa.int64())),
    )
    return t.set_column(0, "window_start", t.column(0).cast(pa.timestamp("us", tz="UTC"))).set_column(
        1, "window_end", t.column(1).cast(pa.timestamp("us", tz="UTC"))
    )


CONFIG = alert_rules(
    select={"metric": "http.errors", "value": "count"},
    ratio_of={"metric": "http.calls", "value": "count"},
    on=["service"],
)


def minute(m):
    rate_a, rate_b, up_b = alert_timeline(m)
    return window_rows(
        m,
        [
            ("http.calls", {"service": "a"}, {"count": 100}),
            ("http.errors", {"service": "a"}, {"count": int(100 * rate_a)}),
            ("http.calls", {"service": "b"}, {"count": 100}),
            ("http.errors", {"service": "b"}, {"count": int(100 * rate_b)}),
            ("up", {"service": "b"}, {"last": up_b}),
        ],
    )


def run(engine, minutes, restart_at=None, changes=None):
    events, notes = [], []
    for m in minutes:
        if m == restart_at:
            fresh = AlertEngine(CONFIG)
            fresh.restore(engine.snapshot())
            engine = fresh
        out = engine.process(minute(m))
        events += out.events
        notes += out.notifications
        if changes is not None:
            changes += out.changes
    return engine, events, notes


def test_alert_timeline_exact():
    changes = []
    engine, events, notes = run(AlertEngine(CONFIG), range(1, 13), changes=changes)
    ev = [
        (e.at // 1000, e.rule, e.labels["service"], e.status, e.starts_at // 1000, e.ends_at and e.ends_at // 1000)
        for e in events
    ]
    assert ev == [
        (240, "HighErrorRate", "a", "firing", 240, None),
        (300, "ServiceDown", "b", "firing", 300, None),
        (360, "HighErrorRate", "b", "firing", 360, None),
        (600, "HighErrorRate", "a", "resolved", 240, 600),
    ]
    # every state change (obs.alerts): pending when the condition first holds (startsAt = activeAt),
    # none for ServiceDown (for: 0 fires in the same evaluation)
    ch = [
        (e.at // 1000, e.rule, e.labels["service"], e.status, e.starts_at // 1000, e.ends_at and e.ends_at // 1000)
        for e in changes
    ]
    assert ch == ALERT_CHANGES
    assert [c.value for c in changes if c.status == "pending"] == [0.2, 0.5]
    got = [
        (n.at // 1000, n.receiver, n.status, [(a.rule, a.labels["service"], a.status) for a in n.alerts], n.repeat)
        for n in notes
    ]
    assert got == [
        (270, "ticket", "firing", [("HighErrorRate", "a", "firing")], False),  # group_wait after 4m
        (330, "pager", "firing", [("ServiceDown", "b", "firing")], False),
        (450, "ticket", "firing", [("HighErrorRate", "a", "firing")], True),  # repeat_interval (b is inhibited)
        (510, "pager", "firing", [("ServiceDown", "b", "firing")], True),
        (630, "ticket", "resolved", [("HighErrorRate", "a", "resolved")], False),
        (690, "pager", "firing", [("ServiceDown", "b", "firing")], True),
    ]
    b_fp = events[2].fingerprint
    assert [t // 1000 for t, fp in engine.dispatcher.inhibited if fp == b_fp] == [390, 450, 510, 570, 630, 690]
    # pending is visible in the rule state: b's rate crossed at 4m, fired at 6m
    e2 = AlertEngine(CONFIG)
    run(e2, range(1, 5))
    assert sorted(e2.rules.state().values()) == ["firing", "pending"]
    assert events[0].annotations == {"summary": "a error rate 0.2", "runbook_url": "https://runbooks/errors"}


def test_snapshot_restore_mid_timeline():
    _, ev1, n1 = run(AlertEngine(CONFIG), range(1, 13))
    _, ev2, n2 = run(AlertEngine(CONFIG), range(1, 13), restart_at=7)
    assert [e.to_kafka() for e in ev1] == [e.to_kafka() for e in ev2]
    assert [(n.at, n.group_key, n.status, n.repeat, [a.fingerprint for a in n.alerts]) for n in n1] == [
        (n.at, n.group_key, n.status, n.repeat, [a.fingerprint for a in n.alerts]) for n in n2
    ]


def test_anomaly_and_absence_rules():
    cfg = {
        "rules": [
            {
                "name": "LatencyAnomaly",
                "type": "anomaly",
                "select": {"metric": "lat", "value": "p99"},
                "k": 3,
                "baseline_windows": 5,
                "severity": "P1",
            },
            {
                "name": "NoHeartbeat",
                "type": "absence",
                "select": {"metric": "hb", "value": "count"},
                "absent_for": "3m",
                "severity": "P1",
            },
        ]
    }
    e = AlertEngine(cfg)
    seq = [100, 102, 98, 101, 99, 100, 180, 100]
    events = []
    for m, v in enumerate(seq, start=1):
        series = [("lat", {"s": "x"}, {"p99": float(v)})] + ([("hb", {"h": "1"}, {"count": 1})] if m <= 2 else [])
        events += e.process(window_rows(m, series)).events
    got = [(x.at // MIN, x.rule, x.status) for x in events]
    # 180 deviates > 3 sd from the previous five; heartbeat last seen at 2m, absent for 3m at 5m
    assert got == [(5, "NoHeartbeat", "firing"), (7, "LatencyAnomaly", "firing"), (8, "LatencyAnomaly", "resolved")]


def test_alert_rows_and_kafka_payload():
    _, events, _ = run(AlertEngine(CONFIG), range(1, 11))
    rows = alert_rows(events)
    assert rows.schema.equals(alert_rows([]).schema) and rows.num_rows == 4
    assert rows.column("status").to_pylist() == ["firing", "firing", "firing", "resolved"]
    doc = json.loads(events[-1].to_kafka())
    assert set(doc) == {f["name"] for f in raw_avro_schema("alert_event")["fields"]}
    assert doc["endsAt"] == 600_000 and doc["annotations"]["runbook_url"] == "https://runbooks/errors"


@contextlib.contextmanager
def real_alertmanager(alerting):
    """A real Alertmanager (Debian package) whose alertmanager.yml is generated from
    ``alerting`` (route tree, receivers, inhibit rules); stopped on exit."""
    from infra import alertmanager

    try:
        alertmanager.binary()
    except FileNotFoundError as e:
        pytest.skip(str(e))
    server = alertmanager.start(alerting=alerting)
    try:
        yield server
    finally:
        server.stop(remove_data=True)


@pytest.fixture(scope="module")
def config_alertmanager():
    """A real Alertmanager whose alertmanager.yml is generated from CONFIG's route tree,
    receivers and inhibit rules."""
    with real_alertmanager(CONFIG) as server:
        yield server


def test_real_alertmanager_reads_back_alerts(config_alertmanager):
    alertmanager_server = config_alertmanager
    client = AlertmanagerClient(alertmanager_server.url)
    now = int(time.time() * 1000)
    _, events, _ = run(AlertEngine(CONFIG), range(1, 8))
    for e in events:  # alertmanager rejects alerts that ended long ago: move the timeline to now
        e.starts_at = now - 600_000 + e.starts_at
    client.post_alerts(events)
    deadline = time.time() + 15
    while time.time() < deadline:
        got = {a["fingerprint"]: a for a in client.get_alerts()}
        if len(got) == 3 and any(a["status"]["inhibitedBy"] for a in got.values()):
            break
        time.sleep(0.3)
    assert set(got) == {e.fingerprint for e in events}  # our fingerprint is Alertmanager's
    by_name = {(a["labels"]["alertname"], a["labels"]["service"]): a for a in got.values()}
    her_b = by_name[("HighErrorRate", "b")]
    assert her_b["status"]["state"] == "suppressed"
    assert her_b["status"]["inhibitedBy"] == [by_name[("ServiceDown", "b")]["fingerprint"]]
    assert by_name[("HighErrorRate", "a")]["receivers"][0]["name"] == "ticket"
    # routed by the generated route tree: the P0 alert to pager, P2 ones to ticket, as our dispatcher routes them
    assert {k: [r["name"] for r in a["receivers"]] for k, a in by_name.items()} == {
        ("HighErrorRate", "a"): ["ticket"],
        ("HighErrorRate", "b"): ["ticket"],
        ("ServiceDown", "b"): ["pager"],
    }
    d = AlertEngine(CONFIG).dispatcher
    assert {k: d.receivers(a["labels"]) for k, a in by_name.items()} == {
        k: [r["name"] for r in a["receivers"]] for k, a in by_name.items()
    }
    assert by_name[("ServiceDown", "b")]["annotations"]["runbook_url"] == "https://runbooks/down"
    # resolve a: it leaves the active alerts
    a = next(e for e in events if e.labels["service"] == "a")
    a.status, a.ends_at = "resolved", now - 1000
    client.post_alerts([a])
    deadline = time.time() + 15
    while time.time() < deadline and a.fingerprint in {x["fingerprint"] for x in client.get_alerts()}:
        time.sleep(0.3)
    assert a.fingerprint not in {x["fingerprint"] for x in client.get_alerts()}


TREE = {
    "route": {
        "receiver": "default",
        "group_by": ["alertname"],
        "group_wait": "10s",
        "group_interval": "1m",
        "repeat_interval": "1h",
        "routes": [
            {"matchers": ['severity="P0"'], "receiver": "pager", "continue": True, "group_wait": "0s"},
            {
                "matchers": ['team="payments"'],
                "receiver": "payments",
                "group_by": ["alertname", "service"],
                "routes": [
                    {
                        "matchers": ['severity=~"P1|P2"', 'service!="legacy"'],
                        "receiver": "payments-ticket",
                        "repeat_interval": "2h",
                    }
                ],
            },
            {"matchers": ['severity=~"P.*"'], "receiver": "ticket"},
        ],
    },
    "receivers": [{"name": n} for n in ("default", "pager", "payments", "payments-ticket", "ticket")],
}
TREE_CASES = {  # labels -> receivers, in Alertmanager's order
    "p0-payments": ({"alertname": "A", "severity": "P0", "team": "payments", "service": "pay"}, ["pager", "payments"]),
    "p0-other": ({"alertname": "A", "severity": "P0", "team": "web", "service": "fe"}, ["pager", "ticket"]),
    "p1-payments": ({"alertname": "A", "severity": "P1", "team": "payments", "service": "pay"}, ["payments-ticket"]),
    "p1-legacy": ({"alertname": "A", "severity": "P1", "team": "payments", "service": "legacy"}, ["payments"]),
    "p2-web": ({"alertname": "A", "severity": "P2", "team": "web", "service": "fe"}, ["ticket"]),
    "none": ({"alertname": "A", "team": "web"}, ["default"]),
}


def test_route_tree_matchers_continue_and_inheritance():
    from transforms.alerting import AlertEvent

    d = AlertEngine(TREE).dispatcher
    assert {k: d.receivers(lab) for k, (lab, _) in TREE_CASES.items()} == {
        k: want for k, (_, want) in TREE_CASES.items()
    }
    # inherited settings: payments-ticket inherits group_by from payments, group_wait/interval from the root
    ((r, key, glabels),) = d.routes(TREE_CASES["p1-payments"][0])
    assert (r.receiver, r.group_by, r.wait, r.interval, r.repeat) == (
        "payments-ticket",
        ["alertname", "service"],
        10_000,
        60_000,
        7_200_000,
    )
    assert glabels == {"alertname": "A", "service": "pay"}
    # a P0 alert lands in two groups (continue): pager's group_wait is 0s, payments' the root's 10s
    e = AlertEvent("firing", "A", "P0", TREE_CASES["p0-payments"][0], {}, 1.0, 1000, None, 1000)
    notes = d.add([e]) + d.advance(1000) + d.advance(11_000)
    assert [(n.at, n.receiver) for n in notes] == [(1000, "pager"), (11_000, "payments")]


def test_generated_alertmanager_config_and_removed_severity_receivers():

    assert AlertingConfig(**TREE).alertmanager_config()["route"] == {
        "receiver": "default",
        "group_by": ["alertname"],
        "group_wait": "10s",
        "group_interval": "1m",
        "repeat_interval": "1h",
        "routes": [
            {"receiver": "pager", "group_wait": "0s", "matchers": ['severity="P0"'], "continue": True},
            {
                "receiver": "payments",
                "group_by": ["alertname", "service"],
                "matchers": ['team="payments"'],
                "routes": [
                    {
                        "receiver": "payments-ticket",
                        "repeat_interval": "2h",
                        "matchers": ['severity=~"P1|P2"', 'service!="legacy"'],
                    }
                ],
            },
            {"receiver": "ticket", "matchers": ['severity=~"P.*"']},
        ],
    }
    assert [r["name"] for r in AlertingConfig().alertmanager_config()["receivers"]] == ["default", "pager", "ticket"]
    with pytest.raises(ValueError, match="severity_receivers was removed"):
        AlertingConfig(route={"severity_receivers": {"P0": "pager"}})
    with pytest.raises(ValueError, match="undefined receiver"):
        AlertingConfig(route={"receiver": "x"}, receivers=[{"name": "y"}])


def test_real_alertmanager_routes_as_the_tree():
    """The generated config in a real Alertmanager gives each alert the receivers our
    dispatcher computes (GET /api/v2/alerts lists them)."""
    from transforms.alerting import AlertEvent

    with real_alertmanager(TREE) as server:
        client = AlertmanagerClient(server.url)
        now = int(time.time() * 1000)
        client.post_alerts(
            [
                AlertEvent("firing", "A", lab.get("severity", ""), {**lab, "case": k}, {}, 1.0, now - 1000, None, now)
                for k, (lab, _) in TREE_CASES.items()
            ]
        )
        deadline = time.time() + 15
        while time.time() < deadline and len(got := client.get_alerts()) < len(TREE_CASES):
            time.sleep(0.2)
    assert {a["labels"]["case"]: [r["name"] for r in a["receivers"]] for a in got} == {
        k: want for k, (_, want) in TREE_CASES.items()
    }


def test_pending_that_clears_before_for_becomes_inactive():
    """Condition true at 2m and 3m, false at 4m with for: 3m: pending, then inactive, never
    firing; only firing / resolved are notifications (events), every change is a row."""
    cfg = {
        "rules": [
            {
                "name": "Hot",
                "select": {"metric": "temp", "value": "last"},
                "op": ">",
                "threshold": 50,
                "for": "3m",
                "severity": "P1",
            }
        ]
    }
    e = AlertEngine(cfg)
    outs = [
        e.process(window_rows(m, [("temp", {"room": "r1"}, {"last": v})]))
        for m, v in enumerate([10.0, 60.0, 70.0, 20.0], 1)
    ]
    changes = [c for o in outs for c in o.changes]
    assert [(c.at // MIN, c.status, c.starts_at // MIN, c.ends_at and c.ends_at // MIN, c.value) for c in changes] == [
        (2, "pending", 2, None, 60.0),
        (4, "inactive", 2, 4, 70.0),
    ]
    assert [ev for o in outs for ev in o.events] == [] and [n for o in outs for n in o.notifications] == []
    assert alert_rows(changes).column("status").to_pylist() == ["pending", "inactive"]
