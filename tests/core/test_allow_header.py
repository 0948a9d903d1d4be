"""A 405 names the allowed methods in one order, whatever the process: the collector's door
and the UI, each built in processes with different string-hash seeds (Starlette joined a
set of methods, so ``GET, HEAD`` was ``HEAD, GET`` in some processes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository (this file is tests/core/...)

# Builds both apps on the default spec (a warehouse under argv[1]; the door's producer is
# never used: a 405 is answered before any handler) and prints the Allow header and status
# of each (method, path) as JSON.
SCRIPT = r"""
import asyncio, json, sys
from pipelines import DEFAULT_SPEC
from pipelines.loader import parse_spec
import yaml

data = yaml.safe_load(DEFAULT_SPEC.read_text())
data["storage"]["catalog"]["warehouse"] = sys.argv[1]
spec = parse_spec(data)

from collector.app import create_app as door_app
from ui.app import create_app as ui_app
from ui.data import Reader

async def call(app, method, path):
    sent = []
    scope = {"type": "http", "method": method, "path": path, "raw_path": path.encode(), "root_path": "",
             "query_string": b"", "headers": [], "scheme": "http", "server": ("127.0.0.1", 80),
             "client": ("127.0.0.1", 1), "http_version": "1.1", "asgi": {"version": "3.0"}}
    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}
    async def send(m):
        sent.append(m)
    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    headers = {k.decode().lower(): v.decode() for k, v in start["headers"]}
    return [start["status"], headers.get("allow")]

door = door_app(spec)
ui = ui_app(spec, Reader(spec))
out = {}
for name, app, method, path in [("door", door.asgi, "GET", "/v1/traces"), ("door", door.asgi, "POST", "/healthz"),
                                ("door", door.asgi, "DELETE", "/v1/events"), ("ui", ui, "POST", "/health"),
                                ("ui", ui, "PUT", "/api/v1/health")]:
    out[f"{name} {method} {path}"] = asyncio.run(call(app, method, path))
print(json.dumps(out))
"""

WANT = {
    "door GET /v1/traces": [405, "OPTIONS, POST"],
    "door POST /healthz": [405, "GET, HEAD"],
    "door DELETE /v1/events": [405, "OPTIONS, POST"],
    "ui POST /health": [405, "GET, HEAD"],
    "ui PUT /api/v1/health": [405, "GET, HEAD"],
}


# string-hash seeds under which Starlette's own order was, on CPython 3.11: sorted for both
# sets (1), "POST, OPTIONS" (0, 2), "HEAD, GET" (3)
SEEDS = (0, 1, 2, 3)


def test_allow_header_is_sorted_in_every_process(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    seen = {}
    for seed in SEEDS:
        env["PYTHONHASHSEED"] = str(seed)
        res = subprocess.run(
            [sys.executable, "-c", SCRIPT, str(tmp_path / "wh")],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert res.returncode == 0, res.stderr[-2000:]
        seen[seed] = json.loads(res.stdout.strip().splitlines()[-1])
    assert seen == {seed: WANT for seed in SEEDS}
