"""``obsflow collect`` open-loop latency of single-event requests (or batches of 50), and where it goes.

Requests are sent on a fixed schedule (``--rate`` a second, whatever the answers) over
``--conns`` keep-alive connections; each latency counts from its scheduled send time, so
queueing in the generator, the server or Kafka is not hidden (no coordinated omission).
Variants, each a fresh process on the same broker, run in interleaved rounds (same run;
the order of the variants is reversed every other round):

- ``noop/SERVER``: bench/collect_noop.py on that server, same requests: the server's floor;
- ``collect/SERVER``: this checkout's collector (``--set KEY=YAML`` variants of its
  ``collect:`` section, e.g. ``transaction_writers=2``, each its own variant);
- ``before/SERVER`` (``--baseline-root DIR``): another checkout's collector;
- ``rawtxn``: a raw transactional confluent-kafka producer committing one record a
  transaction at the same rate (one transaction at a time): the commit's own latency floor.

For each collector variant the phases of its transactions come from its
``obsflow_collect_txn_phase_seconds`` histogram (queue: queued until its transaction
began; begin, produce, commit; handoff: committed until its event loop answered), as the
mean and the bucket bound holding 99%; CPU seconds of the collector's process tree per
request. Prints a table and one JSON line; the 1-minute load average before and after.
Starts a broker (``infra.kafka.start``) unless ``$OBSFLOW_KAFKA_BOOTSTRAP`` is set."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import requests
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.collect import _open_loop, bodies, free_port, start, tree_cpu, wait_ok
from pipelines import DEFAULT_SPEC


def phases(url: str) -> dict[str, dict[str, float]]:
    """The collector's txn phase histogram: per phase its bucket counts, sum and count."""
    text = requests.get(url + "/metrics", timeout=10).text
    out: dict[str, dict[str, float]] = {}
    for m in re.finditer(r'^obsflow_collect_txn_phase_seconds_bucket\{le="([^"]+)",phase="(\w+)"\} (\S+)', text, re.M):
        out.setdefault(m.group(2), {})[m.group(1)] = float(m.group(3))
    for m in re.finditer(r'^obsflow_collect_txn_phase_seconds_(sum|count)\{phase="(\w+)"\} (\S+)', text, re.M):
        out.setdefault(m.group(2), {})[m.group(1)] = float(m.group(3))
    return out


def phase_summary(before: dict, after: dict) -> dict[str, tuple[int, float, str]]:
    """Per phase over the measured interval: (observations, mean ms, the bucket bound holding 99%)."""
    out = {}
    for ph, a in after.items():
        b = before.get(ph, {})
        n = a.get("count", 0) - b.get("count", 0)
        if n <= 0:
            continue
        mean_ms = (a.get("sum", 0) - b.get("sum", 0)) / n * 1000
        bound = "inf"
        for le in sorted((k for k in a if k not in ("sum", "count", "+Inf")), key=float):
            if a[le] - b.get(le, 0) >= 0.99 * n:
                bound = f"{float(le) * 1000:g}"
                break
        out[ph] = (int(n), round(mean_ms, 2), bound)
    return out


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds of a process's threads by kind: ``loop`` (the main thread: the event
    loop), ``python`` (its other threads: writers, poller, checker), ``librdkafka``
    (``rdk:*``), ``other``; from /proc (Linux)."""
    out = {"loop": 0.0, "python": 0.0, "librdkafka": 0.0, "other": 0.0}
    tick = os.sysconf("SC_CLK_TCK")
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            comm = (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        cpu = (int(fields[11]) + int(fields[12])) / tick
        kind = (
            "loop"
            if task.name == str(pid)
            else "librdkafka"
            if comm.startswith("rdk:")
            else "python"
            if comm.startswith("python")
            else "other"
        )
        out[kind] += cpu
    return out


def _request(body: bytes) -> bytes:
    head = (
        "POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def run_server(
    argv: list[str], env: dict, port: int, url_from_stdout: bool, args, body: bytes, ready: str, cwd: Path = ROOT
) -> dict:
    """Open loop against one fresh server process: latency, CPU per request, txn phases."""
    proc, url = start(argv, url_from_stdout, {**env, "BENCH_URL": f"http://127.0.0.1:{port}"}, cwd)
    try:
        wait_ok(url, ready)
        req = _request(body)
        asyncio.run(_open_loop("127.0.0.1", port, req, args.rate, 1, args.conns))  # warm-up
        p0, c0, k0 = (phases(url) if ready == "/readyz" else {}), tree_cpu(proc.pid), thread_cpu(proc.pid)
        res = asyncio.run(_open_loop("127.0.0.1", port, req, args.rate, args.seconds, args.conns))
        cpu = tree_cpu(proc.pid) - c0
        k1 = thread_cpu(proc.pid)
        res["threads_us_per_request"] = {
            k: round((k1[k] - k0[k]) / max(1, res["requests"]) * 1e6) for k in k1 if k1[k] > k0[k]
        }
        p1 = phases(url) if ready == "/readyz" else {}
        res["cpu_us_per_request"] = round(cpu / max(1, res["requests"]) * 1e6, 1)
        res["phases"] = phase_summary(p0, p1)
        return res
    finally:
        proc.terminate()
        proc.wait(30)


def raw_txn(bootstrap: str, topic: str, rate: float, seconds: float) -> dict:
    """A raw transactional producer: one record a transaction, begun on schedule (one at a
    time: a late one starts at once); the commit latency (produce to committed)."""
    from confluent_kafka import Producer

    p = Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "compression.type": "lz4",
            "transactional.id": f"bench-rawtxn-{os.getpid()}-{time.time_ns()}",
        }
    )
    p.init_transactions(30)
    value = b'{"event_id":"bench","page":"/pricing","session_id":"s-1","events":[{"type":"click","target":"#buy"}]}'
    lat: list[float] = []
    n = int(rate * seconds)
    t_start = time.perf_counter()
    for i in range(n):
        delay = t_start + i / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        t0 = time.perf_counter()
        p.begin_transaction()
        p.produce(topic, value, f"s-{i % 97}".encode(), headers=[("received_at", b"1764000000000")])
        p.commit_transaction(10)
        lat.append(time.perf_counter() - t0)
    wall = time.perf_counter() - t_start
    lat.sort()
    return {
        "transactions": len(lat),
        "per_s": round(len(lat) / wall),
        "p50_ms": round(lat[len(lat) // 2] * 1000, 2),
        "p99_ms": round(lat[int(len(lat) * 0.99) - 1] * 1000, 2),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rate", type=float, default=3000, help="requests a second (open loop)")
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--conns", type=int, default=64, help="keep-alive connections of the generator")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--servers", default="uvicorn,granian")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=YAML[,KEY=YAML]", help="a collector variant")
    ap.add_argument("--baseline-root", type=Path, help="also the collector of this checkout (same run)")
    ap.add_argument(
        "--load", default="single", choices=("single", "events50"), help="the requests (bench/collect.py's)"
    )
    ap.add_argument("--rawtxn-rate", type=float, default=200, help="transactions a second of the raw baseline")
    args = ap.parse_args()
    from infra import kafka

    broker = None
    bootstrap = os.environ.get("OBSFLOW_KAFKA_BOOTSTRAP")
    if not bootstrap:
        broker = kafka.start()
        bootstrap = broker.bootstrap
    ep = kafka.KafkaEndpoint(bootstrap)
    tag = time.time_ns() % 10**9
    topics = {s: f"bench-lat-{s}-{tag}" for s in ("event", "log", "span", "metric", "raw")}
    for t in topics.values():
        ep.create_topic(t, partitions=4)
    body = bodies()[args.load]
    load0 = os.getloadavg()[0]
    results: list[dict] = []
    try:
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
            specs: dict[str, Path] = {}
            for label in ["default", *args.set]:
                d["collect"] = {"max_event_bytes": 65536}
                if label != "default":
                    for kv in label.split(","):
                        k, v = kv.split("=", 1)
                        d["collect"][k] = yaml.safe_load(v)
                specs[label] = tmp / f"spec-{len(specs)}.yaml"
                specs[label].write_text(yaml.safe_dump(d))
            env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
            # (variant, argv, env, url from stdout, ready path, working directory: `python -m` imports from it first)
            runs: list[tuple[str, list[str], dict, bool, str, Path]] = []
            for server in args.servers.split(","):
                noop = (
                    [sys.executable, "-m", "uvicorn", "bench.collect_noop:app", "--port", "{port}"]
                    + ["--log-level", "warning", "--no-access-log"]
                    if server == "uvicorn"
                    else [sys.executable, "-m", "granian", "--interface", "asgi", "--port", "{port}"]
                    + ["--workers", "1", "--no-log", "bench.collect_noop:app"]
                )
                runs.append((f"noop/{server}", noop, env, False, "/v1/events", ROOT))
                roots = [("collect", ROOT)] + ([("before", args.baseline_root.resolve())] if args.baseline_root else [])
                for name, root in roots:
                    for label, spec in specs.items():
                        if name == "before" and label != "default":
                            continue
                        argv = [sys.executable, "-m", "runners.cli", "collect", "--spec", str(spec)]
                        argv += ["--server", server, "--port", "{port}"]
                        variant = f"{name}/{server}" + ("" if label == "default" else f" {label}")
                        runs.append(
                            (
                                variant,
                                argv,
                                {**env, "PYTHONPATH": f"{root}{os.pathsep}{env['PYTHONPATH']}"},
                                True,
                                "/readyz",
                                root,
                            )
                        )
            for rnd in range(args.rounds):
                results.append(
                    {"variant": "rawtxn", "round": rnd, **raw_txn(bootstrap, topics["raw"], args.rawtxn_rate, 2)}
                )
                for variant, argv, venv, from_stdout, ready, cwd in runs if rnd % 2 == 0 else runs[::-1]:  # alternates
                    port = free_port()
                    argv = [a.replace("{port}", str(port)) for a in argv]
                    r = run_server(argv, venv, port, from_stdout, args, body, ready, cwd)
                    results.append({"variant": variant, "round": rnd, **r})
    finally:
        if broker is not None:
            broker.stop(remove_data=True)
    load1 = os.getloadavg()[0]
    print(f"1-minute load average: {load0:.1f} before, {load1:.1f} after; rate {args.rate:g}/s, {args.seconds:g} s")
    for r in results:
        if r["variant"] == "rawtxn":
            print(
                f"{r['variant']:<40} round {r['round']}: {r['transactions']} txns at {r['per_s']}/s, "
                f"commit p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms"
            )
            continue
        ph = " ".join(f"{k}={v[1]}ms(p99<={v[2]},n={v[0]})" for k, v in r["phases"].items())
        print(
            f"{r['variant']:<40} round {r['round']}: {r['requests']} {r['codes']} p50 {r['p50_ms']} ms "
            f"p99 {r['p99_ms']} ms, {r['cpu_us_per_request']} us CPU/request {r['threads_us_per_request']} {ph}"
        )
    print(json.dumps({"load": [load0, load1], "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
