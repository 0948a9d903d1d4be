"""The door's producer path alone: CPU per request through ``DoorProducer.send`` (no HTTP),
with same-run baselines.

``--senders`` asyncio tasks each send one request (``--records`` records) after another
for ``--seconds``; the figure is the CPU of the whole process (all threads: the event
loop, the transaction writers, librdkafka's) per acknowledged request, measured after a
1-second warm-up. Each variant runs in its own subprocess on the same broker:
- ``raw``: a raw confluent-kafka loop (idempotent, acks=all), CPU per record: the ceiling;
- ``before`` (``--baseline-root DIR``): the ``collector/producer.py`` of another checkout;
- ``now``: this checkout's, with ``--writers`` transactional writers (e.g. ``1,4``).

Starts a broker (``infra.kafka.start``) unless ``$OBSFLOW_KAFKA_BOOTSTRAP`` is set. Prints a
table and one JSON line. Not run in CI."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def _drive(bootstrap: str, topic: str, writers: int, senders: int, records: int, seconds: float) -> dict:
    from collector.producer import DoorProducer, Record

    extra = json.loads(os.environ.get("BENCH_PRODUCER_CONF", "{}"))  # librdkafka settings to try
    door = DoorProducer(bootstrap, extra, transactional=True, writers=writers)
    for _ in range(300):
        if door.ready:
            break
        await asyncio.sleep(0.05)
    value = b'{"event_id":"bench","page":"/pricing","session_id":"s-1","events":[{"type":"click","target":"#buy"}]}'
    counts = {"ok": 0, "failed": 0}
    phase = {"measure": False}

    async def sender(k: int) -> None:
        recs = [
            Record(topic, value, f"s-{k}-{i}".encode(), [("received_at", b"1764000000000")]) for i in range(records)
        ]
        while not phase.get("stop"):
            try:
                await door.send(recs, 10.0)
                if phase["measure"]:
                    counts["ok"] += 1
            except Exception:  # noqa: BLE001 - counted, the figure says how many failed
                counts["failed"] += 1

    tasks = [asyncio.create_task(sender(k)) for k in range(senders)]
    await asyncio.sleep(1.0)  # warm-up: init_transactions, connections
    phase["measure"] = True
    c0, t0, tx0 = _cpu(), time.perf_counter(), door.transactions
    await asyncio.sleep(seconds)
    phase["measure"] = False
    c1, t1, tx1 = _cpu(), time.perf_counter(), door.transactions
    phase["stop"] = True
    await asyncio.gather(*tasks)
    await asyncio.to_thread(door.close, 5)
    n = counts["ok"]
    return {
        "requests": n,
        "failed": counts["failed"],
        "cpu_s": round(c1 - c0, 3),
        "us_per_request": round((c1 - c0) / n * 1e6, 1) if n else None,
        "requests_per_s": round(n / (t1 - t0)),
        "requests_per_txn": round(n / max(1, tx1 - tx0), 1),
    }


def _raw(bootstrap: str, topic: str, n: int) -> dict:
    from confluent_kafka import Producer

    p = Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "compression.type": "lz4",
        }
    )
    value = b'{"event_id":"bench","page":"/pricing","session_id":"s-1","events":[{"type":"click","target":"#buy"}]}'
    acked = [0]

    def cb(err, msg):
        if err is None:
            acked[0] += 1

    c0 = _cpu()
    for i in range(n):
        p.produce(topic, value, f"s-{i % 97}".encode(), on_delivery=cb, headers=[("received_at", b"1764000000000")])
        if i % 1000 == 0:
            p.poll(0)
    p.flush(60)
    cpu = _cpu() - c0
    return {"records": acked[0], "cpu_s": round(cpu, 3), "us_per_record": round(cpu / max(1, acked[0]) * 1e6, 2)}


def _child(argv: list[str]) -> None:
    kind, bootstrap, topic = argv[:3]
    if kind == "raw":
        out = _raw(bootstrap, topic, int(argv[3]))
    else:
        writers, senders, records, seconds = int(argv[3]), int(argv[4]), int(argv[5]), float(argv[6])
        out = asyncio.run(_drive(bootstrap, topic, writers, senders, records, seconds))
    print(json.dumps(out))


def _run(root: Path, args: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), str(ROOT)])}
    out = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=str(root),
        check=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        sys.path.insert(0, os.environ["PYTHONPATH"].split(os.pathsep)[0])
        _child(sys.argv[2:])
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--senders", default="16", help="comma-separated: concurrent requests")
    ap.add_argument("--records", default="1,50", help="comma-separated: records per request")
    ap.add_argument("--writers", default="4", help="comma-separated: transactional writers of this checkout's producer")
    ap.add_argument("--baseline-root", type=Path)
    ap.add_argument("--baseline-writers", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=1, help="repeat the whole set, interleaved")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from infra import kafka

    broker = None
    bootstrap = os.environ.get("OBSFLOW_KAFKA_BOOTSTRAP")
    if not bootstrap:
        broker = kafka.start()
        bootstrap = broker.bootstrap
    topic = f"bench-door-{time.time_ns() % 10**9}"
    kafka.KafkaEndpoint(bootstrap).create_topic(topic, partitions=4)
    results: list[dict] = []
    try:
        results.append({"variant": "raw", **_run(ROOT, ["raw", bootstrap, topic, "100000"])})
        for rnd in range(args.rounds):
            for senders in args.senders.split(","):
                for records in args.records.split(","):
                    common = [senders, records, str(args.seconds)]
                    if args.baseline_root:
                        r = _run(
                            args.baseline_root.resolve(),
                            ["door", bootstrap, topic, str(args.baseline_writers), *common],
                        )
                        results.append(
                            {
                                "variant": f"before/w{args.baseline_writers}",
                                "round": rnd,
                                "senders": int(senders),
                                "records": int(records),
                                **r,
                            }
                        )
                    for w in args.writers.split(","):
                        r = _run(ROOT, ["door", bootstrap, topic, w, *common])
                        results.append(
                            {
                                "variant": f"now/w{w}",
                                "round": rnd,
                                "senders": int(senders),
                                "records": int(records),
                                **r,
                            }
                        )
    finally:
        if broker is not None:
            broker.stop(remove_data=True)
    print(
        f"{'variant':<12} {'round':>5} {'senders':>7} {'records':>7} {'requests':>8} {'us/request':>10} {'req/s':>7} "
        f"{'req/txn':>7} {'failed':>6}"
    )
    for r in results:
        if r["variant"] == "raw":
            print(f"{'raw':<12} {'':>5} {'':>7} {'':>7} {r['records']:>8} {r['us_per_record']:>10} (per record)")
            continue
        print(
            f"{r['variant']:<12} {r['round']:>5} {r['senders']:>7} {r['records']:>7} {r['requests']:>8} "
            f"{r['us_per_request'] or 0:>10} {r['requests_per_s']:>7} {r['requests_per_txn']:>7} {r['failed']:>6}"
        )
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
