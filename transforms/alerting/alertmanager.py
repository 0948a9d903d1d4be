"""A small client of Prometheus Alertmanager's v2 API (urllib only).

``post_alerts`` sends alert events (``POST /api/v2/alerts``); ``get_alerts`` reads them back
(``GET /api/v2/alerts``); ``status`` is ``GET /api/v2/status``."""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request

from transforms.alerting.events import AlertEvent


class AlertmanagerClient:
    def __init__(self, base_url: str, timeout: float = 10.0, generator_url: str = ""):
        self.base = base_url.rstrip("/")
        self.timeout = timeout
        self.generator_url = generator_url

    def _req(self, method: str, path: str, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            self.base + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=self.timeout) as r:
            raw = r.read()
            return json.loads(raw) if raw else None

    def post_alerts(self, events: list[AlertEvent], now: int | None = None) -> None:
        """POST the events: resolved ones with their ``endsAt``, firing ones with
        ``endsAt = valid_until`` with the validity counted from ``now`` (wall-clock ms;
        default: the current time), see :meth:`AlertEvent.to_alertmanager`."""
        if events:
            now = int(time.time() * 1000) if now is None else now
            self._req("POST", "/api/v2/alerts", [e.to_alertmanager(self.generator_url, now) for e in events])

    def get_alerts(
        self, active: bool = True, silenced: bool = True, inhibited: bool = True, filters: list[str] | None = None
    ) -> list[dict]:
        q = [
            ("active", str(active).lower()),
            ("silenced", str(silenced).lower()),
            ("inhibited", str(inhibited).lower()),
        ]
        q += [("filter", f) for f in filters or []]
        return self._req("GET", "/api/v2/alerts?" + urllib.parse.urlencode(q))

    def status(self) -> dict:
        return self._req("GET", "/api/v2/status")
