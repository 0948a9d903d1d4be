"""Issue 18 items 1-4: what Prometheus sends (re-sends with endsAt) and what Alertmanager
notifies (no empty notification, no duplicate after an inhibition ends, inhibition by an
alert matching both sides, muted resolutions), in event time."""

import pytest

from tests.alerting.test_alerting import CONFIG, AlertEngine, minute
from transforms.alerting import AlertEvent, AlertingConfig
from transforms.alerting.dispatch import Dispatcher

pytestmark = pytest.mark.alerts


def firing(name, at, **labels):
    return AlertEvent("firing", name, labels.get("severity", ""), {"alertname": name, **labels}, {}, 1.0, at, None, at)


def resolved(e, at):
    return AlertEvent("resolved", e.rule, e.severity, dict(e.labels), {}, 1.0, e.starts_at, at, at)


def notes_of(cfg, events, until):
    d = Dispatcher(AlertingConfig(**cfg))
    out = d.add(events) + d.advance(until)
    return d, [
        (n.at, n.group_labels["alertname"], n.status, [(a.labels["alertname"], a.status) for a in n.alerts])
        for n in out
    ]


INHIBIT = {
    "route": {
        "receiver": "hook",
        "group_by": ["alertname", "service"],
        "group_wait": "1s",
        "group_interval": "3s",
        "repeat_interval": "1h",
    },
    "receivers": [{"name": "hook"}],
    "inhibit_rules": [
        {"source_matchers": ['severity="P0"'], "target_matchers": ['severity="P2"'], "equal": ["service"]},
        {"source_matchers": ['kind=~"src|both"'], "target_matchers": ['kind=~"tgt|both"'], "equal": ["service"]},
    ],
}


def test_firing_alerts_are_resent_with_ends_at_ahead():
    """Item 1: a firing alert carries endsAt = t + 4 x max(resend_delay, resolution) and is
    re-sent (Alertmanager only) at each evaluation more than resend_delay after its last send;
    the resolution carries its own endsAt. The state changes (rows, Kafka) are unchanged."""
    engine = AlertEngine(CONFIG)  # resolution 1m, resend_delay 1m (default): validity 4m
    resends, events = [], []
    for m in range(1, 13):
        out = engine.process(minute(m))
        resends += out.resends
        events += out.events
    assert [(e.at // 1000, e.rule, e.labels["service"], e.valid_until and e.valid_until // 1000) for e in events] == [
        (240, "HighErrorRate", "a", 480),
        (300, "ServiceDown", "b", 540),
        (360, "HighErrorRate", "b", 600),
        (600, "HighErrorRate", "a", None),
    ]
    # Prometheus' needsSending: last send + resend_delay strictly before t, so every other 1m evaluation
    assert [(e.at // 1000, e.rule, e.labels["service"], e.status, e.valid_until // 1000) for e in resends] == [
        (360, "HighErrorRate", "a", "firing", 600),
        (420, "ServiceDown", "b", "firing", 660),
        (480, "HighErrorRate", "a", "firing", 720),
        (480, "HighErrorRate", "b", "firing", 720),
        (540, "ServiceDown", "b", "firing", 780),
        (600, "HighErrorRate", "b", "firing", 840),
        (660, "ServiceDown", "b", "firing", 900),
        (720, "HighErrorRate", "b", "firing", 960),
    ]
    assert all(e.resend for e in resends) and {e.starts_at // 1000 for e in resends} == {240, 300, 360}
    body = events[0].to_alertmanager()
    assert (body["startsAt"], body["endsAt"]) == ("1970-01-01T00:04:00.000Z", "1970-01-01T00:08:00.000Z")
    # counted from the wall clock when the pipeline runs behind it (or replays)
    assert events[0].to_alertmanager(now=1_000_000)["endsAt"] == "1970-01-01T00:20:40.000Z"
    assert (
        events[-1].to_alertmanager(now=1_000_000)["endsAt"] == "1970-01-01T00:10:00.000Z"
    )  # a resolution keeps its endsAt
    assert b'endsAt":null' in events[0].to_kafka()  # the topic and obs.alerts still carry the state change only
    # exposed in the generated alertmanager.yml: resolve_timeout = the validity
    assert AlertingConfig(**CONFIG).alertmanager_config()["global"] == {"resolve_timeout": "4m"}
    assert AlertingConfig(**{**CONFIG, "resend_delay": "2m"}).alertmanager_config()["global"] == {
        "resolve_timeout": "8m"
    }
    with pytest.raises(ValueError, match="resend_delay"):
        AlertingConfig(resend_delay="0s")


def test_resends_survive_snapshot_restore():
    a = AlertEngine(CONFIG)
    b = AlertEngine(CONFIG)
    ra, rb = [], []
    for m in range(1, 13):
        if m == 7:
            fresh = AlertEngine(CONFIG)
            fresh.restore(b.snapshot())
            b = fresh
        ra += a.process(minute(m)).resends
        rb += b.process(minute(m)).resends
    assert [(e.at, e.fingerprint, e.valid_until) for e in ra] == [(e.at, e.fingerprint, e.valid_until) for e in rb]


def test_inhibited_after_notification_sends_nothing_and_no_duplicate_when_released():
    """Items 2 and 3: T (P2) notified at 1 s; S (P0, same service) fires at 2 s, so T is
    muted at its 4 s flush; S resolves at 5 s. Alertmanager sends T once (at 1 s): no empty
    'resolved' notification at 4 s, no second notification of the same firing T at 7 s."""
    t = firing("TA", 0, service="a", severity="P2")
    s = firing("SA", 2000, service="a", severity="P0")
    d, got = notes_of(INHIBIT, [t, s, resolved(s, 5000)], 12_000)
    assert got == [
        (1000, "TA", "firing", [("TA", "firing")]),
        (3000, "SA", "firing", [("SA", "firing")]),
        (6000, "SA", "resolved", [("SA", "resolved")]),
    ]
    assert [(at, fp) for at, fp in d.inhibited] == [(4000, t.fingerprint)]


def test_resolution_of_an_inhibited_alert_is_muted():
    """Item 4 (second half): T notified firing, then muted by S; T resolves while S still
    fires: Alertmanager mutes the resolution too (Inhibitor.Mutes does not look at status)."""
    t = firing("TB", 0, service="b", severity="P2")
    s = firing("SB", 2000, service="b", severity="P0")
    d, got = notes_of(INHIBIT, [t, s, resolved(t, 5000)], 12_000)
    assert got == [(1000, "TB", "firing", [("TB", "firing")]), (3000, "SB", "firing", [("SB", "firing")])]
    assert [(at, fp) for at, fp in d.inhibited] == [(4000, t.fingerprint), (7000, t.fingerprint)]
    assert not [k for k in d.groups if 'alertname="TB"' in k]  # the resolved T left its group


def test_alert_matching_both_sides_inhibits_target_only_alerts():
    """Item 4: X matches the source and the target matchers; it mutes Y (target only) but not
    Z (both sides too: Alertmanager's excludeTwoSidedMatch), and nothing mutes X."""
    x = firing("XA", 0, service="c", kind="both")
    z = firing("ZA", 0, service="c", kind="both")
    y = firing("YA", 500, service="c", kind="tgt")
    d, got = notes_of(INHIBIT, [x, z, y], 5000)
    assert got == [(1000, "XA", "firing", [("XA", "firing")]), (1000, "ZA", "firing", [("ZA", "firing")])]
    assert {fp for _, fp in d.inhibited} == {y.fingerprint}
    assert d._inhibited(y) and not d._inhibited(x) and not d._inhibited(z)
