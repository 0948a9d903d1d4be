"""``obsflow collect`` throughput: records acknowledged by Kafka per CPU-second of the
collector process (all its threads and worker processes), with same-run baselines.

For each server (uvicorn, Granian; one worker: a per-core figure) and each load:
- ``spans``: OTLP/HTTP protobuf, 100 spans a request (10 traces x 10 spans, 20 attributes each);
- ``events50``: product events, JSON arrays of 50 envelopes;
- ``single``: one event per request;
wrk (Debian ``wrk``) drives ``--seconds`` of closed-loop load on loopback with
``--connections``; the collector's own /metrics counts what Kafka acknowledged, and
psutil the CPU time of its process tree. Baselines measured in the same run:
- ``noop``: bench/collect_noop.py (reads the body, answers 200) on the same server and
  the same requests: the server's ceiling, in records per CPU-second;
- ``producer``: a raw confluent-kafka loop (idempotent, acks=all, one message per record
  of the same bytes, keyed), records per CPU-second of this process: the producer's ceiling.
- ``before`` (with ``--baseline-root DIR``): the collector of another checkout (e.g. the
  code before a change), same server, same requests, same broker: a before/after pair.
- ``pydecoder`` (with ``--decoder-baseline``): this collector with ``OBSFLOW_DECODER=python``
  (the Python JSON / OTLP decoders instead of the compiled one): what the decoder changes.
Then ``open60``: single-event requests on a fixed schedule (open loop, latency from the
scheduled time) at 60% of the rate the first server's collector took closed-loop: p50/p99
(and at ``--open-rate`` requests/s when given, e.g. 3000: 60% of the 5,000/s target).

Starts a broker (``infra.kafka.start``) unless ``$OBSFLOW_KAFKA_BOOTSTRAP`` is set. Prints
a table and one JSON line. Not run in CI (about 2 minutes with the defaults)."""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson
import psutil
import requests
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from pipelines import DEFAULT_SPEC

LUA = """wrk.method = "POST"
wrk.headers["Content-Type"] = os.getenv("CT")
local f = io.open(os.getenv("BODY"), "rb"); wrk.body = f:read("*all"); f:close()
"""


def spans_body(n_traces: int = 10, per_trace: int = 10) -> bytes:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    kv = rs.resource.attributes.add()
    kv.key, kv.value.string_value = "service.name", "checkout"
    ss = rs.scope_spans.add()
    now = time.time_ns()
    for _t in range(n_traces):
        tid = os.urandom(16)
        for s in range(per_trace):
            sp = ss.spans.add()
            sp.trace_id, sp.span_id, sp.name, sp.kind = tid, os.urandom(8), f"GET /route/{s}", 2
            sp.start_time_unix_nano, sp.end_time_unix_nano = now - 5_000_000, now
            for a in range(20):
                kv = sp.attributes.add()
                kv.key, kv.value.string_value = f"attr.{a}", f"value-{a}-{s}"
    return req.SerializeToString()


def event(i: int) -> dict:
    ms = int(time.time() * 1000)
    return {
        "event_id": f"bench-{i}",
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + ".000Z",
        "page": "/pricing",
        "session_id": f"s-{i % 97}",
        "user": f"u-{i % 1000}",
        "platform": "web",
        "user_agent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0",
        "location": "Berlin, DE",
        "events": [{"type": "click", "target": "#buy"}],
    }


LOADS = {
    "spans": ("/v1/traces", "application/x-protobuf", 100),
    "events50": ("/v1/events", "application/json", 50),
    "single": ("/v1/events", "application/json", 1),
}


def bodies() -> dict[str, bytes]:
    return {
        "spans": spans_body(),
        "events50": orjson.dumps([event(i) for i in range(50)]),
        "single": orjson.dumps([event(0)]),
    }


def tree_cpu(pid: int) -> float:
    p = psutil.Process(pid)
    total = 0.0
    for q in [p] + p.children(recursive=True):
        try:
            t = q.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def accepted(url: str) -> float:
    text = requests.get(url + "/metrics", timeout=10).text
    return sum(
        float(m.group(1))
        for m in re.finditer(r'obsflow_collect_records_total\{outcome="accepted",[^}]*\} ([0-9.e+]+)', text)
    )


def transactions(url: str) -> float:
    """Kafka transactions the collector committed so far (0 when it does not say)."""
    m = re.search(
        r"^obsflow_collect_transactions_committed ([0-9.e+]+)", requests.get(url + "/metrics", timeout=10).text, re.M
    )
    return float(m.group(1)) if m else 0.0


def wrk(url: str, path: str, ctype: str, body: bytes, seconds: int, connections: int, tmp: Path) -> dict:
    (tmp / "body").write_bytes(body)
    (tmp / "post.lua").write_text(LUA)
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(tmp / "post.lua"), url + path],
        capture_output=True,
        text=True,
        env={**os.environ, "BODY": str(tmp / "body"), "CT": ctype},
        check=True,
    ).stdout
    found = re.search(r"(\d+) requests in", out)
    if found is None:
        raise RuntimeError(f"wrk printed no request count: {out!r}")
    reqs = int(found.group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    p99 = re.search(r"99%\s+([0-9.]+)(us|ms|s)", out)
    p99_ms = float(p99.group(1)) * {"us": 0.001, "ms": 1, "s": 1000}[p99.group(2)] if p99 else None
    return {"requests": reqs, "non2xx": int(non2xx.group(1)) if non2xx else 0, "p99_ms": p99_ms}


def start(argv: list[str], url_from_stdout: bool, env: dict, cwd: Path = ROOT) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env, cwd=str(cwd))
    if url_from_stdout:
        assert proc.stdout is not None  # stdout=PIPE
        line = proc.stdout.readline()
        url = line.split("listening on ", 1)[1].strip()
    else:
        url = env["BENCH_URL"]
    return proc, url


def wait_ok(url: str, path: str) -> None:
    for _ in range(300):
        try:
            if requests.get(url + path, timeout=2).status_code in (200, 405):
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url}{path} did not answer")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _collect_command(server: str, spec_path: Path, port: int) -> list[str]:
    """``obsflow collect`` on ``spec_path`` with ``server`` (uvicorn or granian) at ``port``."""
    return [
        sys.executable,
        "-m",
        "runners.cli",
        "collect",
        "--spec",
        str(spec_path),
        "--server",
        server,
        "--port",
        str(port),
    ]


def measure_collector(
    server: str,
    spec_path: Path,
    loads: dict,
    args,
    tmp: Path,
    env: dict,
    root: Path = ROOT,
    path_first: str | None = None,
) -> dict:
    port = free_port()
    env = {
        **env,
        "PYTHONPATH": os.pathsep.join(p for p in (path_first, str(root), os.environ.get("PYTHONPATH", "")) if p),
    }
    proc, url = start(
        _collect_command(server, spec_path, port),
        True,
        env,
        root,
    )
    try:
        wait_ok(url, "/readyz")
        out = {}
        for name, (path, ctype, _per) in LOADS.items():
            if name not in loads:
                continue
            wrk(url, path, ctype, loads[name], 1, args.connections, tmp)  # warm-up
            a0, c0, x0 = accepted(url), tree_cpu(proc.pid), transactions(url)
            w = wrk(url, path, ctype, loads[name], args.seconds, args.connections, tmp)
            a1, c1, x1 = accepted(url), tree_cpu(proc.pid), transactions(url)
            cpu = c1 - c0
            out[name] = {
                "records": a1 - a0,
                "cpu_s": round(cpu, 2),
                "per_cpu_s": round((a1 - a0) / cpu) if cpu else None,
                "wall_per_s": round((a1 - a0) / args.seconds),
                "p99_ms": w["p99_ms"],
                "non2xx": w["non2xx"],
                "requests_per_txn": round((w["requests"] - w["non2xx"]) / (x1 - x0), 1) if x1 > x0 else None,
            }
        return out
    finally:
        proc.terminate()
        proc.wait(30)


async def _open_loop(host: str, port: int, request: bytes, rate: float, seconds: float, conns: int = 64) -> dict:
    """Requests sent on a fixed schedule (``rate`` a second) whatever the answers; each
    latency counts from its scheduled time (no coordinated omission)."""
    import asyncio

    idle: asyncio.Queue = asyncio.Queue()
    for _ in range(conns):
        idle.put_nowait(await asyncio.open_connection(host, port))
    lat: list[float] = []
    codes: dict[int, int] = {}

    async def one(t_sched: float) -> None:
        reader, writer = await idle.get()
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        code = int(head.split(b" ", 2)[1])
        length = re.search(rb"(?i)content-length: *(\d+)", head)
        if length is None:
            raise RuntimeError(f"an answer without Content-Length: {head!r}")
        n = int(length.group(1))
        await reader.readexactly(n)
        lat.append(time.perf_counter() - t_sched)
        codes[code] = codes.get(code, 0) + 1
        idle.put_nowait((reader, writer))

    start = time.perf_counter() + 0.2
    tasks = []
    for i in range(int(rate * seconds)):
        t = start + i / rate
        delay = t - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(t)))
    await asyncio.gather(*tasks)
    while not idle.empty():
        idle.get_nowait()[1].close()
    lat.sort()
    return {
        "rate": round(rate),
        "requests": len(lat),
        "codes": codes,
        "p50_ms": round(lat[len(lat) // 2] * 1000, 1),
        "p99_ms": round(lat[int(len(lat) * 0.99) - 1] * 1000, 1),
    }


def measure_open_loop(server: str, spec_path: Path, body: bytes, rate: float, seconds: int, env: dict) -> dict:
    """p50/p99 of single-event requests at a fixed ``rate`` (open loop) on a fresh collector."""
    import asyncio

    port = free_port()
    proc, url = start(
        _collect_command(server, spec_path, port),
        True,
        env,
    )
    try:
        wait_ok(url, "/readyz")
        req = (
            f"POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        asyncio.run(_open_loop("127.0.0.1", port, req, rate, 1))  # warm-up
        return asyncio.run(_open_loop("127.0.0.1", port, req, rate, seconds))
    finally:
        proc.terminate()
        proc.wait(30)


def measure_noop(server: str, loads: dict, args, tmp: Path, env: dict) -> dict:
    port = free_port()
    if server == "uvicorn":
        argv = [
            sys.executable,
            "-m",
            "uvicorn",
            "bench.collect_noop:app",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
        ]
    else:
        argv = [
            sys.executable,
            "-m",
            "granian",
            "--interface",
            "asgi",
            "--port",
            str(port),
            "--workers",
            "1",
            "--no-log",
            "bench.collect_noop:app",
        ]
    proc, url = start(argv, False, {**env, "BENCH_URL": f"http://127.0.0.1:{port}"})
    try:
        wait_ok(url, "/v1/events")
        out = {}
        for name, (path, ctype, per) in LOADS.items():
            if name not in loads:
                continue
            wrk(url, path, ctype, loads[name], 1, args.connections, tmp)
            c0 = tree_cpu(proc.pid)
            w = wrk(url, path, ctype, loads[name], args.seconds, args.connections, tmp)
            cpu = tree_cpu(proc.pid) - c0
            n = (w["requests"] - w["non2xx"]) * per
            out[name] = {
                "records": n,
                "cpu_s": round(cpu, 2),
                "per_cpu_s": round(n / cpu) if cpu else None,
                "wall_per_s": round(n / args.seconds),
                "p99_ms": w["p99_ms"],
            }
        return out
    finally:
        proc.terminate()
        proc.wait(30)


def measure_producer(bootstrap: str, topic: str, n: int) -> dict:
    from confluent_kafka import Producer

    value = orjson.dumps(event(1))
    p = Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "compression.type": "lz4",
            "queue.buffering.max.kbytes": 262144,
        }
    )
    acked = [0]

    def cb(err, msg):
        if err is None:
            acked[0] += 1

    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    for i in range(n):
        while True:
            try:
                p.produce(topic, value, f"s-{i % 97}".encode(), on_delivery=cb)
                break
            except BufferError:
                p.poll(0.01)
        if i % 1000 == 0:
            p.poll(0)
    p.flush(60)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    return {
        "records": acked[0],
        "cpu_s": round(cpu, 2),
        "per_cpu_s": round(acked[0] / cpu),
        "wall_per_s": round(acked[0] / wall),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--servers", default="uvicorn,granian")
    ap.add_argument("--loads", default="spans,events50,single")
    ap.add_argument("--producer-records", type=int, default=200_000)
    ap.add_argument(
        "--baseline-root", type=Path, help="also measure the collector of this checkout (before/after, same run)"
    )
    ap.add_argument(
        "--open-rate", type=float, help="also measure single-event requests open loop at this rate (requests/s)"
    )
    ap.add_argument(
        "--decoder-baseline", action="store_true", help="also measure this collector with OBSFLOW_DECODER=python"
    )
    ap.add_argument(
        "--baseline-pythonpath",
        help="put this first on the baseline collector's PYTHONPATH (e.g. modules that "
        "hide optional packages, to measure without them)",
    )
    ap.add_argument(
        "--collect-set",
        action="append",
        default=[],
        metavar="KEY=YAML",
        help="a collect: setting for this checkout's collector only, also in the open-loop runs "
        "(e.g. transaction_writers=1); repeatable",
    )
    args = ap.parse_args()
    if not shutil.which("wrk"):
        sys.exit("bench/collect.py needs wrk (apt-get install wrk)")
    from infra import kafka

    broker = None
    bootstrap = os.environ.get("OBSFLOW_KAFKA_BOOTSTRAP")
    if not bootstrap:
        broker = kafka.start()
        bootstrap = broker.bootstrap
    ep = kafka.KafkaEndpoint(bootstrap)
    tag = time.time_ns() % 10**9
    topics = {s: f"bench-{s}-{tag}" for s in ("event", "log", "span", "metric", "raw")}
    for t in topics.values():
        ep.create_topic(t, partitions=4)
    all_bodies = bodies()
    loads = {k: all_bodies[k] for k in args.loads.split(",")}
    results: dict = {"producer": measure_producer(bootstrap, topics["raw"], args.producer_records)}
    with tempfile.TemporaryDirectory() as tmpd:
        tmp = Path(tmpd)
        d = yaml.safe_load(DEFAULT_SPEC.read_text())
        d["kafka"]["bootstrap_servers"] = bootstrap
        d["sources"] = [
            {"name": "events", "topic": topics["event"], "signal": "event", "codec": "json"},
            {"name": "logs", "topic": topics["log"], "signal": "log", "codec": "otlp_proto"},
            {"name": "spans", "topic": topics["span"], "signal": "span", "codec": "otlp_proto"},
            {"name": "metrics", "topic": topics["metric"], "signal": "metric", "codec": "otlp_proto"},
        ]
        d.pop("alerts", None)
        d["collect"] = {"max_event_bytes": 65536}
        spec_path = tmp / "spec.yaml"
        spec_path.write_text(yaml.safe_dump(d))
        now_spec = spec_path
        if args.collect_set:  # this checkout's collector only; `before` keeps the defaults
            for kv in args.collect_set:
                k, v = kv.split("=", 1)
                d["collect"][k] = yaml.safe_load(v)
            now_spec = tmp / "spec-now.yaml"
            now_spec.write_text(yaml.safe_dump(d))
        env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        for server in args.servers.split(","):
            results[f"noop/{server}"] = measure_noop(server, loads, args, tmp, env)
            if args.baseline_root:
                results[f"before/{server}"] = measure_collector(
                    server, spec_path, loads, args, tmp, env, args.baseline_root.resolve(), args.baseline_pythonpath
                )
            if args.decoder_baseline:
                results[f"pydecoder/{server}"] = measure_collector(
                    server, spec_path, loads, args, tmp, {**env, "OBSFLOW_DECODER": "python"}
                )
            results[f"collect/{server}"] = measure_collector(server, now_spec, loads, args, tmp, env)
        first = args.servers.split(",")[0]
        single = results[f"collect/{first}"].get("single")
        if single and single["wall_per_s"]:
            # 60% of what this collector took closed-loop in this run
            results[f"open60/{first}"] = measure_open_loop(
                first, now_spec, loads["single"], 0.6 * single["wall_per_s"], args.seconds, env
            )
        if args.open_rate:
            results[f"open{args.open_rate:g}/{first}"] = measure_open_loop(
                first, now_spec, loads["single"], args.open_rate, args.seconds, env
            )
    if broker is not None:
        broker.stop(remove_data=True)
    print(
        f"{'measurement':<20} {'load':<9} {'records':>9} {'cpu s':>7} {'rec/cpu-s':>10} {'rec/s wall':>10} {'p99 ms':>8} {'req/txn':>8}"
    )
    for name, r in results.items():
        if name.startswith("open"):
            print(
                f"{name:<20} single at {r['rate']}/s open loop: {r['requests']} requests {r['codes']}, "
                f"p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms"
            )
            continue
        rows = {"-": r} if "per_cpu_s" in r else r
        for load, x in rows.items():
            print(
                f"{name:<20} {load:<9} {x['records']:>9.0f} {x['cpu_s']:>7} {x['per_cpu_s'] or 0:>10} {x['wall_per_s']:>10} "
                f"{x.get('p99_ms') or '':>8} {x.get('requests_per_txn') or '':>8}"
            )
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
