"""Fixtures of the UI tests: a small demo warehouse built by ``obsflow run --count N``
(the embedded generator, bytewax, a local warehouse) and ``obsflow ui`` over it, started as
its own process on a free 127.0.0.1 port and stopped at the end."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
DEMO_COUNT = 3000


def ensure_ui_assets() -> None:
    """Build ui/static/vendor/ (ECharts, htmx from npm) when it is not there yet."""
    vendor = ROOT / "ui" / "static" / "vendor"
    if not all((vendor / n).exists() for n in ("echarts.min.js", "htmx.min.js")):
        subprocess.run(["make", "-C", str(ROOT), "ui-assets"], check=True, timeout=600)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.fixture(scope="session")
def demo_warehouse(tmp_path_factory) -> Path:
    """A local warehouse holding every table, from ``obsflow run --count 3000 --dev-key``."""
    wh = tmp_path_factory.mktemp("ui-demo") / "warehouse"
    res = subprocess.run(
        [sys.executable, "-m", "runners.cli", "run", "--count", str(DEMO_COUNT), "--dev-key", "--warehouse", str(wh)],
        check=True,
        env=_env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    (wh.parent / "run-summary.txt").write_text(res.stdout)  # the run summary, for tests of the persisted counters
    return wh


class UiServer:
    def __init__(self, proc: subprocess.Popen, url: str) -> None:
        self.proc, self.url = proc, url

    def get(self, path: str, **params) -> requests.Response:
        return requests.get(self.url + path, params=params, timeout=60)

    def api(self, path: str, **params) -> dict:
        r = self.get("/api/v1" + path, **params)
        assert r.status_code == 200, r.text
        return r.json()


def start_ui(warehouse: Path, *extra: str) -> UiServer:
    ensure_ui_assets()
    proc = subprocess.Popen(
        [sys.executable, "-m", "runners.cli", "ui", "--warehouse", str(warehouse), "--port", "0", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
        cwd=ROOT,
    )
    line = proc.stdout.readline()  # "obsflow ui: http://127.0.0.1:PORT/ ..." once listening
    if not line.startswith("obsflow ui: http://"):
        proc.kill()
        raise RuntimeError(f"obsflow ui did not start: {line!r} {proc.stderr.read()}")
    url = line.split()[2].rstrip("/")
    for _ in range(100):
        try:
            requests.get(url + "/api/v1", timeout=5)
            break
        except requests.ConnectionError:
            time.sleep(0.1)
    return UiServer(proc, url)


def stop_ui(server: UiServer) -> None:
    server.proc.terminate()
    try:
        server.proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        server.proc.wait()


@pytest.fixture(scope="session")
def ui_server(demo_warehouse):
    s = start_ui(demo_warehouse)
    yield s
    stop_ui(s)


@pytest.fixture(scope="session")
def sql(demo_warehouse):
    """The test's own SQL over the demo warehouse: plain DuckDB with the Iceberg extension
    and a view per table (runners.query.connect), independent of the UI's reader and cache.
    Views are pinned to the metadata files at connect time, so it reconnects when a table
    got a new commit (a test appends to one)."""
    from pipelines import DEFAULT_SPEC
    from runners.query import _local_tables, connect
    from sinks.catalog import catalog_properties
    from ui.server import load

    spec = load(str(DEFAULT_SPEC), str(demo_warehouse))
    props = catalog_properties(spec.storage, create=False)
    state: dict = {"con": None, "tables": None}

    def run(q: str) -> list[tuple]:
        tables = _local_tables(props, spec.storage.catalog.name, spec.storage.namespace)
        if tables != state["tables"]:
            if state["con"] is not None:
                state["con"].close()
            state["con"] = connect(spec)
            state["con"].execute("SET TimeZone = 'UTC'")
            state["tables"] = tables
        return state["con"].execute(q).fetchall()

    yield run
    if state["con"] is not None:
        state["con"].close()
