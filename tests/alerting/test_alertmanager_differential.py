"""Differential tests against the real Alertmanager (Debian ``prometheus-alertmanager``):
the same alert timeline through our :class:`Dispatcher` (event time) and through a real
Alertmanager (wall clock) whose webhook receiver is an HTTP server in this test; the
notifications must be the same (receiver, group, status, alerts, in order per group).
Timelines are in units of ``UNIT`` ms (group_wait 1 unit, group_interval 3) and keep every
event at least half a unit away from a flush, so scheduling jitter cannot reorder them; no
assertion is on a duration."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pyarrow as pa
import pytest

from tests.alerting.test_alerting import real_alertmanager
from tests.alerting.test_alertmanager_semantics import INHIBIT, firing, resolved
from transforms.alerting import AlertEngine, AlertingConfig, AlertmanagerClient
from transforms.alerting.dispatch import Dispatcher

pytestmark = pytest.mark.alerts
UNIT = 1500  # ms


@contextlib.contextmanager
def webhook():
    """An HTTP server on 127.0.0.1 recording every webhook body it receives, in order."""
    got: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            got.append(json.loads(body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", got
    finally:
        server.shutdown()
        server.server_close()


def _key(group_labels: dict) -> tuple:
    return tuple(sorted(group_labels.items()))


def _ours(notes) -> dict:
    out: dict = {}
    for n in notes:
        out.setdefault((n.receiver, _key(n.group_labels)), []).append(
            (n.status, sorted((a.labels["alertname"], a.status) for a in n.alerts))
        )
    return out


def _theirs(bodies) -> dict:
    out: dict = {}
    for b in bodies:
        out.setdefault((b["receiver"], _key(b["groupLabels"])), []).append(
            (b["status"], sorted((a["labels"]["alertname"], a["status"]) for a in b["alerts"]))
        )
    return out


def _replay(client: AlertmanagerClient, timeline, end_ms: int) -> None:
    """POST each event at its offset (ms after the start) on the wall clock; return at ``end_ms``.
    A firing alert is posted with endsAt an hour ahead, a resolution with endsAt = now."""
    t0 = time.monotonic()
    for e in sorted(timeline, key=lambda e: e.at):
        time.sleep(max(0.0, t0 + e.at / 1000 - time.monotonic()))
        now = int(time.time() * 1000)
        body = e.to_alertmanager()
        body["startsAt"] = _iso(now - e.at + e.starts_at)
        body["endsAt"] = _iso(now + 3_600_000 if e.status == "firing" else now)
        client._req("POST", "/api/v2/alerts", [body])
    time.sleep(max(0.0, t0 + end_ms / 1000 - time.monotonic()))


def _iso(ms: int) -> str:
    from transforms.alerting.events import iso

    return iso(ms)


def test_dispatcher_matches_real_alertmanager_on_inhibition_timeline():
    """Three scenarios at once (one service each): (a) a notified P2 alert muted by a P0
    one that later resolves — no empty notification, no duplicate; (b) the P2 alert
    resolves while muted — its resolution is muted; (c) a source matching both sides of an
    inhibit rule mutes a target-only alert, not a two-sided one. Same notifications from
    our dispatcher and from the real Alertmanager's webhook."""
    u = UNIT
    ta, tb = firing("TA", 0, service="a", severity="P2"), firing("TB", 0, service="b", severity="P2")
    sa, sb = firing("SA", 2 * u, service="a", severity="P0"), firing("SB", 2 * u, service="b", severity="P0")
    x, z = firing("XA", 0, service="c", kind="both"), firing("ZA", 0, service="c", kind="both")
    y = firing("YA", u // 2, service="c", kind="tgt")
    timeline = [ta, tb, x, z, y, sa, sb, resolved(sa, 5 * u), resolved(tb, 5 * u)]
    end = 23 * u // 3  # after the flushes at 7 units, before those at 10
    with webhook() as (url, bodies):
        route = {**INHIBIT["route"], "group_wait": f"{u}ms", "group_interval": f"{3 * u}ms"}
        cfg = {
            **INHIBIT,
            "route": route,
            "receivers": [{"name": "hook", "webhook_configs": [{"url": url, "send_resolved": True}]}],
        }
        d = Dispatcher(AlertingConfig(**cfg))
        ours = _ours(d.add(timeline) + d.advance(end))
        with real_alertmanager(cfg) as server:
            _replay(AlertmanagerClient(server.url), timeline, end)
        theirs = _theirs(bodies)
    g = lambda name, svc: ("hook", (("alertname", name), ("service", svc)))
    assert ours == {
        g("TA", "a"): [("firing", [("TA", "firing")])],
        g("SA", "a"): [("firing", [("SA", "firing")]), ("resolved", [("SA", "resolved")])],
        g("TB", "b"): [("firing", [("TB", "firing")])],
        g("SB", "b"): [("firing", [("SB", "firing")])],
        g("XA", "c"): [("firing", [("XA", "firing")])],
        g("ZA", "c"): [("firing", [("ZA", "firing")])],
    }
    assert theirs == ours


def rows_1s(end_ms: int, value: float) -> pa.Table:
    """One METRICS row of the 1s window ending at ``end_ms``: gauge ``temp`` with ``last = value``."""
    from tests.alerting.test_alerting import window_rows

    t = window_rows(1, [("temp", {"room": "r1"}, {"last": value})])
    ts = pa.array([(end_ms - 1000) * 1000, end_ms * 1000], pa.int64()).cast(pa.timestamp("us", tz="UTC"))
    t = t.set_column(0, "window_start", ts.slice(0, 1)).set_column(1, "window_end", ts.slice(1, 1))
    return t.set_column(t.schema.get_field_index("resolution"), "resolution", pa.array(["1s"]))


def test_real_alertmanager_keeps_a_resent_alert_active_past_resolve_timeout():
    """Item 1 against the real Alertmanager with ``resolve_timeout: 1s``: an alert posted once
    without endsAt (what obsflow used to send) is resolved by Alertmanager itself; our firing
    alert, re-sent every 2 s (resend_delay 1s, evaluated every 1 s; endsAt 4 s ahead) stays
    active for as long as the rule holds it firing, and its resolution ends it."""
    cfg = {
        "rules": [
            {
                "name": "Hot",
                "resolution": "1s",
                "select": {"metric": "temp", "value": "last"},
                "op": ">",
                "threshold": 50,
                "severity": "P1",
            }
        ],
        "route": {"receiver": "default", "group_wait": "1s", "group_interval": "1s", "repeat_interval": "1h"},
        "resend_delay": "1s",
    }
    am = AlertingConfig(**cfg).alertmanager_config()
    am["global"] = {"resolve_timeout": "1s"}
    import yaml

    from infra import alertmanager

    try:
        alertmanager.binary()
    except FileNotFoundError as e:
        pytest.skip(str(e))
    server = alertmanager.start(config=yaml.safe_dump(am, sort_keys=False))
    try:
        client = AlertmanagerClient(server.url)
        engine = AlertEngine(cfg)
        legacy = firing("Legacy", 0, room="r0", severity="P1")
        start = int(time.time() * 1000) // 1000 * 1000
        legacy.starts_at = start
        client._req(
            "POST", "/api/v2/alerts", [{"labels": legacy.labels, "startsAt": _iso(start)}]
        )  # no endsAt, never again
        posted = []
        for i in range(1, 7):  # one evaluation a second, the condition holding throughout
            t = start + i * 1000
            time.sleep(max(0.0, t / 1000 - time.time()))
            out = engine.process(rows_1s(t, 60.0))
            posted += [(e.at - start, e.resend) for e in out.events + out.resends]
            client.post_alerts(out.events + out.resends)
        active = {a["labels"]["alertname"] for a in client.get_alerts()}
        assert posted == [(1000, False), (3000, True), (5000, True)]
        assert active == {
            "Hot"
        }  # Legacy was resolved by resolve_timeout; Hot is still active (obsflow holds it firing)
        time.sleep(max(0.0, (start + 7000) / 1000 - time.time()))
        out = engine.process(rows_1s(start + 7000, 10.0))
        assert [(e.status, e.ends_at - start) for e in out.events] == [("resolved", 7000)]
        client.post_alerts(out.events)
        assert {a["labels"]["alertname"] for a in client.get_alerts()} == set()
    finally:
        server.stop(remove_data=True)
