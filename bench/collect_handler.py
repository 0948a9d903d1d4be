"""The door's product-event handler alone, in process: CPU per request through
``collector.app.Door.asgi`` (body parse, normalization, judge, records and answer), with
no server and no Kafka (a stub producer that takes the records; with ``--produce``, it
also hands each record to a confluent-kafka ``Producer.produce`` that never connects, so
the per-record produce call is counted).

Each variant runs in its own subprocess, rounds interleaved (``before``, ``now``,
``now``, ``before``, ...), best round of each; the figure is CPU per request and per record:
- ``before`` (``--baseline-root DIR``): the collector of another checkout (e.g. main's
  HEAD from ``git archive``), same requests;
- ``now``: this checkout's.

Requests: ``--events`` envelopes a request (the envelopes of bench/collect.py: already in
the envelope's shape) or, with ``--compact``, the design's compact shape (``timeStamp``
in epoch ms, ``{"click": "#buy"}``, no ``event_id``). Not run in CI; no services needed."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_CHILD = r"""
import asyncio, json, os, sys, tempfile, time
from pathlib import Path
import orjson, yaml
from pipelines import DEFAULT_SPEC
from pipelines.loader import load_spec
from collector.app import Door

n, compact, produce, requests = int(sys.argv[1]), sys.argv[2] == "1", sys.argv[3] == "1", int(sys.argv[4])


class StubProducer:
    ready, broker_down, transactions = True, False, 0

    def __init__(self, produce):
        self.records, self.produce = 0, produce

    async def send(self, records, timeout):
        if self.produce is not None:
            for r in records:
                self.produce(r.topic, r.value, r.key, headers=r.headers)
        self.records += len(records)

    def queue_depth(self):
        return 0


d = yaml.safe_load(DEFAULT_SPEC.read_text())
d["sources"] = [{"name": "events", "topic": "ev", "signal": "event", "codec": "json"},
                {"name": "logs", "topic": "lg", "signal": "log", "codec": "otlp_proto"},
                {"name": "spans", "topic": "sp", "signal": "span", "codec": "otlp_proto"},
                {"name": "metrics", "topic": "mt", "signal": "metric", "codec": "otlp_proto"}]
d.pop("alerts", None)
d["collect"] = {"max_event_bytes": 65536}
p = Path(tempfile.mkdtemp()) / "spec.yaml"
p.write_text(yaml.safe_dump(d))
kp = None
if produce:
    from confluent_kafka import Producer
    kp = Producer({"bootstrap.servers": "127.0.0.1:9", "queue.buffering.max.messages": 10_000_000,
                   "queue.buffering.max.kbytes": 2097151, "message.timeout.ms": 600000, "log_level": 0})
stub = StubProducer(kp.produce if kp is not None else None)
door = Door(load_spec(p), producer=stub)
ms = int(time.time() * 1000)
ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000))
if compact:
    envs = [{"timeStamp": ms - 1000 + i, "page": "/pricing", "session_id": f"s-{i % 97}", "user": f"u-{i % 1000}",
             "platform": "web", "events": [{"click": "#buy"}]} for i in range(n)]
else:
    envs = [{"event_id": f"bench-{i}", "timestamp": f"{ts}.{i % 1000:03d}Z", "page": "/pricing", "session_id": f"s-{i % 97}",
             "user": f"u-{i % 1000}", "platform": "web", "user_agent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0",
             "location": "Berlin, DE", "events": [{"type": "click", "target": "#buy"}]} for i in range(n)]
body = orjson.dumps(envs)
scope = {"type": "http", "method": "POST", "path": "/v1/events", "headers": [(b"content-type", b"application/json"),
         (b"content-length", str(len(body)).encode()), (b"user-agent", b"bench")], "client": ("127.0.0.1", 5),
         "server": ("127.0.0.1", 1), "scheme": "http", "query_string": b"", "root_path": "", "http_version": "1.1"}


async def one():
    sent = False

    async def receive():
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    out = []

    async def send(m):
        out.append(m)

    await door.asgi(scope, receive, send)
    assert out[0]["status"] == 200, out


async def run(k):
    for _ in range(k):
        await one()

asyncio.run(run(max(20, requests // 10)))  # warm-up
for line in sys.stdin:  # one round per line from the parent
    r0 = time.process_time()
    asyncio.run(run(requests))
    print(json.dumps({"us_per_request": (time.process_time() - r0) / requests * 1e6, "records": stub.records}), flush=True)
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=50, help="envelopes a request")
    ap.add_argument("--requests", type=int, default=500, help="requests a round")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--compact", action="store_true", help="the compact shape instead of envelopes")
    ap.add_argument(
        "--produce", action="store_true", help="also hand each record to Producer.produce (never connected)"
    )
    ap.add_argument("--baseline-root", type=Path, help="also measure the collector of this checkout (interleaved)")
    args = ap.parse_args()
    roots = {"now": ROOT} if not args.baseline_root else {"before": args.baseline_root.resolve(), "now": ROOT}
    procs = {}
    for name, root in roots.items():
        env = {**os.environ, "PYTHONPATH": str(root)}
        procs[name] = subprocess.Popen(
            [
                sys.executable,
                "-c",
                _CHILD,
                str(args.events),
                "1" if args.compact else "0",
                "1" if args.produce else "0",
                str(args.requests),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=str(root),
        )
    rounds: dict[str, list[float]] = {k: [] for k in procs}
    for k in range(args.rounds):
        for name, p in list(procs.items()) if k % 2 == 0 else list(procs.items())[::-1]:  # who goes first alternates
            assert p.stdin is not None and p.stdout is not None
            p.stdin.write("go\n")
            p.stdin.flush()
            rounds[name].append(json.loads(p.stdout.readline())["us_per_request"])
    for p in procs.values():
        assert p.stdin is not None
        p.stdin.close()
        p.wait(30)
    load = os.getloadavg()[0]
    results = {}
    print(
        f"{args.events} {'compact' if args.compact else 'envelope'}-shape events a request, {args.requests} requests a round, "
        f"{args.rounds} rounds interleaved, produce={args.produce}, 1-min load {load:.1f}"
    )
    for name, xs in rounds.items():
        best = min(xs)
        results[name] = {
            "us_per_request": round(best, 1),
            "us_per_record": round(best / args.events, 2),
            "rounds": [round(x, 1) for x in xs],
        }
        print(
            f"{name:<7} best {best:8.1f} us CPU a request, {best / args.events:6.2f} us a record "
            f"(median {sorted(xs)[len(xs) // 2]:.1f})"
        )
    if "before" in results:
        print(f"now / before: {results['now']['us_per_request'] / results['before']['us_per_request']:.2f}")
    print(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "load": load, "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
