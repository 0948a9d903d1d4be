"""A small client for Flink's REST API (any Flink 1.x/2.x JobManager, not only the test
cluster): list jobs, look one up, cancel one, wait for a state.

    rest = FlinkRest("flink-jobmanager:8081")       # or "http://host:port", "https://..."
    rest.jobs()            -> [JobInfo(jid, name, state, start_time_ms, duration_ms), ...]  newest first
    rest.job(jid)          -> dict (GET /jobs/<jid>)
    rest.cancel(jid)       -> None (PATCH /jobs/<jid>?mode=cancel; returns at once)
    rest.wait_for_state(jid, {"CANCELED"}, timeout=60) -> the state reached
    rest.wait_for_named(name, {"RUNNING"}, timeout)   -> JobInfo (a job submitted under that name)

Errors: :class:`FlinkUnavailable` (a ``ConnectionError``: nothing answers at the address),
:class:`FlinkRestError` (Flink answered with an error, e.g. an unknown job id; the
message carries Flink's own ``errors`` text)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import datetime, UTC
from typing import Any
from collections.abc import Iterable

from core.errors import EXIT_FAILED, EXIT_USAGE, ObsflowError, ServiceUnavailable

TERMINAL = frozenset({"FINISHED", "FAILED", "CANCELED", "SUSPENDED"})


class FlinkUnavailable(ServiceUnavailable, ConnectionError):
    """The Flink REST endpoint does not answer."""


class FlinkRestError(ObsflowError, RuntimeError):
    """Flink answered with an HTTP error: exit 2 for 400 / 404 (no such job, a wrong
    request), else 1."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.exit_code = EXIT_USAGE if status in (400, 404) else EXIT_FAILED


@dataclass(frozen=True)
class JobInfo:
    jid: str
    name: str
    state: str
    start_time_ms: int
    duration_ms: int

    @property
    def start_time(self) -> str:
        if self.start_time_ms <= 0:
            return "-"
        return datetime.fromtimestamp(self.start_time_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


def base_url(address: str) -> str:
    """``host:port`` or a URL → ``http(s)://host:port`` without a trailing slash."""
    address = address.strip().rstrip("/")
    return address if address.startswith(("http://", "https://")) else f"http://{address}"


class FlinkRest:
    def __init__(self, address: str, timeout: float = 20.0):
        self.url = base_url(address)
        self.timeout = timeout

    def request(self, method: str, path: str, attempts: int = 3) -> Any:
        """JSON of one call. A GET is tried ``attempts`` times when nothing answers in
        ``timeout`` seconds or the connection drops (a JobManager busy deploying a job on a
        loaded machine can stall its REST thread for many seconds); other methods are sent
        once, since they are not idempotent. Of the HTTP error answers only 503 (Flink's
        "temporarily unavailable", e.g. during the JobManager's leader election at start) is
        retried, and only for a GET; any other error answer is raised at once."""
        tries = attempts if method == "GET" else 1
        for attempt in range(1, tries + 1):
            try:
                return self._request_once(method, path)
            except FlinkUnavailable:
                if attempt == tries:
                    raise
            except FlinkRestError as e:
                if e.status != 503 or attempt == tries:
                    raise
            time.sleep(min(2.0 * attempt, 5.0))

    def _request_once(self, method: str, path: str) -> Any:
        req = urllib.request.Request(self.url + path, method=method, headers={"Accept": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                body = resp.read()
        except urllib.error.HTTPError as e:
            try:
                detail = "; ".join(str(x).splitlines()[0] for x in json.loads(e.read() or b"{}").get("errors", []))
            except ValueError:
                detail = ""
            raise FlinkRestError(e.code, f"Flink REST {method} {path}: HTTP {e.code} {detail or e.reason}") from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise FlinkUnavailable(
                f"Flink REST API not reachable at {self.url} ({reason}); is the JobManager up "
                f"and --flink-master its REST address (host:port, default port 8081)?"
            ) from None
        return json.loads(body) if body else None

    def overview(self) -> dict:
        return self.request("GET", "/overview")

    def jobs(self) -> list[JobInfo]:
        """Every job the JobManager knows (running and archived), newest first."""
        raw = self.request("GET", "/jobs/overview").get("jobs", [])
        out = [
            JobInfo(
                j["jid"],
                j.get("name", ""),
                j.get("state", "?"),
                int(j.get("start-time", -1)),
                int(j.get("duration", -1)),
            )
            for j in raw
        ]
        return sorted(out, key=lambda j: j.start_time_ms, reverse=True)

    def job(self, jid: str) -> dict:
        return self.request("GET", f"/jobs/{jid}")

    def state(self, jid: str) -> str:
        return self.job(jid)["state"]

    def cancel(self, jid: str) -> None:
        self.request("PATCH", f"/jobs/{jid}?mode=cancel")

    def wait_for_state(self, jid: str, states: Iterable[str], timeout: float = 60.0) -> str:
        """Poll until the job is in one of ``states`` (or any terminal state); return it."""
        want = set(states)
        deadline = time.monotonic() + timeout
        state = "?"
        while time.monotonic() < deadline:
            try:
                state = self.state(jid)
            except FlinkUnavailable:  # a busy JobManager may miss one poll
                time.sleep(1.0)
                continue
            if state in want or state in TERMINAL:
                return state
            time.sleep(0.3)
        raise TimeoutError(
            f"Flink job {jid} still {state} after {timeout:.0f}s (waiting for {', '.join(sorted(want))})"
        )

    def wait_for_named(
        self, name: str, states: Iterable[str], timeout: float = 120.0, not_before_ms: int = 0
    ) -> JobInfo:
        """The newest job named ``name`` (started at or after ``not_before_ms``) once it is in
        one of ``states`` (or terminal)."""
        want = set(states)
        deadline = time.monotonic() + timeout
        seen = None
        while time.monotonic() < deadline:
            try:
                jobs = self.jobs()
            except FlinkUnavailable:  # a busy JobManager (e.g. while it accepts the job graph) may miss one poll
                time.sleep(1.0)
                continue
            seen = next((j for j in jobs if j.name == name and j.start_time_ms >= not_before_ms), None)
            if seen is not None and (seen.state in want or seen.state in TERMINAL):
                return seen
            time.sleep(0.3)
        raise TimeoutError(
            f"no Flink job named {name!r} reached {', '.join(sorted(want))} within {timeout:.0f}s"
            + (f" (it is {seen.state})" if seen else " (none submitted)")
        )
