"""Kafka → Iceberg throughput and freshness, next to the raw consume rate of the same topic
measured in the same run.

1. Starts a broker (``infra.kafka.start``; or uses ``$OBSFLOW_KAFKA_BOOTSTRAP``) and
   produces ``--records`` (default 1,000,000) product events — the embedded generator's
   partition streams, its 1% malformed records included — to a 4-partition topic.
2. Measures, each in its own process (peak RSS is that measurement's own):
   - ``raw``: confluent-kafka ``Consumer.consume`` of every record of the topic (each
     value touched), the baseline;
   - ``bytewax`` / ``beam``: ``obsflow``'s bounded Kafka → Iceberg run (events-only spec,
     local warehouse) reading the same topic from the start.
   Targets: the pipeline ≥ 30% of the raw consume rate and ≥ 50,000 events/s.
3. Freshness: an unbounded Bytewax run (``commit.max_seconds`` = ``--commit-seconds``,
   default 1) while this process produces at a steady ``--fresh-rate`` (5,000/s) for
   ``--fresh-seconds`` (60). Each record's latency is the time of the ``obsflow.events``
   snapshot whose recorded positions first cover its offset, minus its produce time (its
   Kafka CreateTime). Reported: p50 / p99 / max seconds; target p99 ≤ 10 s.

``--rounds N`` repeats step 2 N times, interleaved (raw, runners, raw, runners, ...), takes
each runner's share against the raw rate of its own round, and reports the medians and in
how many rounds the targets were met: on a shared machine one round is not a verdict.
Each measurement also reports the CPU time it used per record (user + system, all threads;
the cluster: all its processes, start-up included), which moves less than the rates do
when other work shares the machine.

Prints the figures and ends with one JSON line. Not run in CI; ``--records 50000
--fresh-seconds 10`` makes a quick check. ``--baseline-root DIR`` with a runner such as
``bytewax@base`` measures another checkout (e.g. main) in the same interleaved rounds. A
runner with the suffix ``~gcN`` (e.g. ``bytewax~gc0``) runs with ``process.gc_young_threshold:
N`` in its spec (0: Python's garbage-collector defaults; without it, the spec's default)."""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OBSFLOW_PSEUDONYM_KEY", "benchmark-key-0123456789")

PARTITIONS = 4


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _cpu_s(who=resource.RUSAGE_SELF) -> float:
    """User + system CPU seconds of this process (all its threads) or of its waited-for children."""
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


#: the spec's ``process:`` section in this measurement (a runner's ``~gcN`` suffix); empty: the default
SPEC_PROCESS: dict = {}


def spec_data(warehouse: str, bootstrap: str, topic: str, commit_seconds: float = 5.0, batch: int = 5000) -> dict:
    """Events only (like bench/pipeline_throughput.py), on ``topic``; ``process:`` from
    :data:`SPEC_PROCESS`."""
    import yaml

    from pipelines import DEFAULT_SPEC

    d = yaml.safe_load(DEFAULT_SPEC.read_text())
    d["storage"]["catalog"]["warehouse"] = warehouse
    d["storage"]["commit"] = {"max_rows": 200_000, "max_seconds": f"{commit_seconds}s"}
    d["sources"] = [dict(s, topic=topic) for s in d["sources"] if s["name"] == "events"]
    d["flows"] = [
        dict(f, steps=[s for s in f["steps"] if s["kind"] in ("validate", "scrub", "enrich")])
        for f in d["flows"]
        if f["source"] == "events"
    ]
    for k in ("alerts",):
        d.pop(k, None)
    if SPEC_PROCESS:
        d["process"] = dict(SPEC_PROCESS)
    d["kafka"].update(
        {
            "bootstrap_servers": bootstrap,
            "poll_batch_size": batch,
            "poll_timeout": "200ms",
            "group_id": f"bench-{uuid.uuid4().hex[:6]}",
        }
    )
    return d


# -- producing -------------------------------------------------------------------------------


def _producer(bootstrap: str):
    from confluent_kafka import Producer

    return Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 50,
            "batch.size": 1_000_000,
            "compression.type": "lz4",
            "queue.buffering.max.messages": 500_000,
        }
    )


def produce_bulk(bootstrap: str, topic: str, records: int, start_ms: int) -> float:
    """``records`` generated product events over the partitions; returns seconds taken."""
    from sources.generator import partition_stream

    p = _producer(bootstrap)
    errors = []

    def delivered(err, msg) -> None:
        if err is not None:
            errors.append(err)

    t = time.perf_counter()
    per = records // PARTITIONS
    streams = [
        partition_stream("event", topic, k, per, start_ms=start_ms, rate_per_s=5000.0 / PARTITIONS)
        for k in range(PARTITIONS)
    ]
    for k, stream in enumerate(streams):
        for g in stream:
            while True:
                try:
                    p.produce(
                        topic,
                        value=g.value,
                        partition=k,
                        timestamp=g.timestamp_ms,
                        on_delivery=delivered,
                    )
                    break
                except BufferError:
                    p.poll(0.05)
            p.poll(0)
    assert p.flush(120) == 0 and not errors, errors[:3]
    return time.perf_counter() - t


# -- measurements (each in its own process) --------------------------------------------------


def measure_raw(bootstrap: str, topic: str, records: int) -> dict:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"raw-{uuid.uuid4().hex[:6]}",
            "enable.auto.commit": False,
            "enable.partition.eof": False,
        }
    )
    c.assign([TopicPartition(topic, k, 0) for k in range(PARTITIONS)])
    n = nbytes = 0
    cpu = _cpu_s()
    t = time.perf_counter()
    while n < records:
        for m in c.consume(5000, 1.0):
            if m.error() is None:
                nbytes += len(m.value() or b"")
                n += 1
    secs = time.perf_counter() - t
    cpu = _cpu_s() - cpu
    c.close()
    return {
        "records": n,
        "seconds": secs,
        "records_per_s": n / secs,
        "mb_per_s": nbytes / secs / 1e6,
        "peak_mb": _peak_mb(),
        "cpu_us_per_record": cpu / n * 1e6,
    }


def measure_pipeline(runner: str, bootstrap: str, topic: str, records: int) -> dict:
    from pipelines.loader import parse_spec
    from runners.job import RunRequest
    from runners.stats import STATS

    spec = parse_spec(spec_data(tempfile.mkdtemp(prefix="obsflow-kbench-") + "/wh", bootstrap, topic))
    if runner == "bytewax":
        from runners.bytewax.run import run
    else:
        from runners.beam.run import run
    STATS.reset()
    cpu = _cpu_s()
    t = time.perf_counter()
    run(RunRequest(spec=spec, runner=runner, source="kafka", bounded=True))
    secs = time.perf_counter() - t
    cpu = _cpu_s() - cpu
    assert STATS.records_in == records, (STATS.records_in, records)
    rows = STATS.rows_by_table.get("events", 0)
    return {
        "records": STATS.records_in,
        "rows": rows,
        "seconds": secs,
        "records_per_s": STATS.records_in / secs,
        "rows_per_s": rows / secs,
        "dead": STATS.records_dead,
        "commits": STATS.commits,
        "peak_mb": _peak_mb(),
        "cpu_us_per_record": cpu / STATS.records_in * 1e6,
    }


def measure_cluster(processes: int, bootstrap: str, topic: str, records: int) -> dict:
    """The same bounded run on a local Bytewax cluster of ``processes`` processes × 1
    worker (``obsflow run --processes``: forked from this process), timed from launching
    to the last process's exit; counts are read back from the tables (each process keeps
    its own stats)."""
    import yaml

    from pipelines.loader import parse_spec
    from runners.bytewax.cluster import ClusterRun, launch
    from sinks.catalog import open_catalog
    from sinks.iceberg import snapshot_offsets

    tmp = Path(tempfile.mkdtemp(prefix="obsflow-kbench-"))
    data = spec_data(str(tmp / "wh"), bootstrap, topic)
    (tmp / "spec.yaml").write_text(yaml.safe_dump(data))
    spec = parse_spec(data)
    # the launcher's own CPU counts too: it imports what its forked processes then share
    cpu = _cpu_s(resource.RUSAGE_CHILDREN) + _cpu_s()
    t = time.perf_counter()
    rc = launch(
        ClusterRun(str(tmp / "spec.yaml"), source="kafka", bounded=True), processes=processes, workers=1, log_dir=tmp
    )
    secs = time.perf_counter() - t
    cpu = _cpu_s(resource.RUSAGE_CHILDREN) + _cpu_s() - cpu
    assert rc == 0, f"cluster failed; logs in {tmp}"
    cat = open_catalog(spec.storage)
    events, dead = cat.load_table("obs.events"), cat.load_table("obs.dead_letters")
    covered = sum(snapshot_offsets(events).values())
    assert covered == records and sum(snapshot_offsets(dead).values()) == records, (covered, records)
    rows = events.scan().count() if hasattr(events.scan(), "count") else events.scan().to_arrow().num_rows
    n_dead = dead.scan().to_arrow().num_rows
    return {
        "records": records,
        "rows": rows,
        "seconds": secs,
        "records_per_s": records / secs,
        "rows_per_s": rows / secs,
        "dead": n_dead,
        "processes": processes,
        "peak_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0,
        "peak_mb_note": "per process (the largest)",
        "cpu_us_per_record": cpu / records * 1e6,
        "cpu_note": "the launcher and all processes, start-up included",
    }


# -- freshness -----------------------------------------------------------------------------


def freshness(bootstrap: str, endpoint, rate: float, seconds: float, commit_seconds: float) -> dict:
    """Produce at ``rate`` for ``seconds`` while an unbounded Bytewax run commits; latency
    per record from the snapshot that first records its offset."""
    import yaml
    from confluent_kafka import Consumer, TopicPartition

    from pipelines.loader import parse_spec
    from sinks.catalog import open_catalog
    from sources.generator import partition_stream

    topic = endpoint.create_topic(
        f"bench-fresh-{uuid.uuid4().hex[:8]}", partitions=PARTITIONS, config={"retention.ms": "-1"}
    )
    tmp = Path(tempfile.mkdtemp(prefix="obsflow-kfresh-"))
    data = spec_data(str(tmp / "wh"), bootstrap, topic, commit_seconds=commit_seconds, batch=5000)
    (tmp / "spec.yaml").write_text(yaml.safe_dump(data))
    spec = parse_spec(data)
    # records generated up front (event times ending about now), so the producer keeps its pace
    n = int(rate * seconds)
    start_ms = int(time.time() * 1000)
    values = [
        [
            g.value
            for g in partition_stream(
                "event", topic, k, n // PARTITIONS + 1, start_ms=start_ms, rate_per_s=rate / PARTITIONS
            )
        ]
        for k in range(PARTITIONS)
    ]
    run_for = seconds + 40
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "runners.cli",
            "run",
            "--source",
            "kafka",
            "--runner",
            "bytewax",
            "--spec",
            str(tmp / "spec.yaml"),
            "--duration",
            str(run_for),
            "--no-progress",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    out_lines: list[str] = []
    assert proc.stdout is not None  # stdout=PIPE
    stdout = proc.stdout
    threading.Thread(target=lambda: out_lines.extend(stdout), daemon=True).start()
    try:
        db = tmp / "wh" / "catalog.db"
        deadline = time.monotonic() + 60
        while not db.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(3.0)  # the job's readers are polling
        from confluent_kafka import Producer

        p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all", "linger.ms": 5})
        t0 = time.monotonic()
        sent = 0
        tick = 0.02
        while sent < n:
            due = min(n, int((time.monotonic() - t0) * rate))
            while sent < due:
                k = sent % PARTITIONS
                p.produce(topic, value=values[k][sent // PARTITIONS], partition=k)  # CreateTime = now
                sent += 1
            p.poll(0)
            time.sleep(tick)
        p.flush(30)
        produce_secs = time.monotonic() - t0
        proc.wait(timeout=run_for + 120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # produce time of every offset (the record's CreateTime)
    c = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"fresh-{uuid.uuid4().hex[:6]}", "enable.auto.commit": False}
    )
    c.assign([TopicPartition(topic, k, 0) for k in range(PARTITIONS)])
    created: dict[int, list[int]] = {k: [] for k in range(PARTITIONS)}
    got = 0
    while got < n:
        for m in c.consume(5000, 1.0):
            if m.error() is None:
                created[int(m.partition() or 0)].append(m.timestamp()[1])
                got += 1
    c.close()
    # snapshots of obs.events in order: the offsets each newly covers, visible at its commit time
    table = open_catalog(spec.storage).load_table("obs.events")
    covered = {k: 0 for k in range(PARTITIONS)}
    lat: list[float] = []
    for snap in sorted(table.snapshots(), key=lambda s: s.timestamp_ms):
        raw = snap.summary.additional_properties.get("obsflow.offsets") if snap.summary else None
        if not raw:
            continue
        for key, nxt in json.loads(raw).items():
            k = int(key.rsplit(":", 1)[1])
            for off in range(covered[k], min(nxt, len(created[k]))):
                lat.append((snap.timestamp_ms - created[k][off]) / 1000.0)
            covered[k] = max(covered[k], nxt)
    lat.sort()
    q = lambda f: lat[min(len(lat) - 1, int(f * len(lat)))] if lat else float("nan")  # noqa: E731
    return {
        "rate": rate,
        "seconds": seconds,
        "produced": n,
        "produce_seconds": produce_secs,
        "visible": len(lat),
        "commit_max_seconds": commit_seconds,
        "p50_s": q(0.50),
        "p99_s": q(0.99),
        "max_s": lat[-1] if lat else None,
        "job_rc": proc.returncode,
        "job_tail": "".join(out_lines[-3:]).strip()[-300:] if proc.returncode else "",
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument(
        "--runners",
        default="bytewax,bytewax-2p,beam",
        help="bytewax (one process, in-process run), bytewax-Np (a local cluster of N processes × 1 worker), beam; "
        "a suffix :python or :native chooses the decoder (OBSFLOW_DECODER), e.g. bytewax,bytewax:python",
    )
    ap.add_argument(
        "--baseline-root",
        help="another checkout of obsflow (e.g. `git archive main | tar -x -C /tmp/base`): a runner with the suffix "
        "@base (e.g. bytewax@base) runs that checkout's own bench part, in the same rounds, as a same-run baseline",
    )
    ap.add_argument("--fresh-rate", type=float, default=5000.0)
    ap.add_argument("--fresh-seconds", type=float, default=60.0)
    ap.add_argument("--commit-seconds", type=float, default=1.0)
    ap.add_argument("--skip-freshness", action="store_true")
    ap.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="measure raw and every runner this many times, interleaved (raw, runners, raw, runners, ...); "
        "each runner's share is taken against the raw rate of its own round, and medians are reported",
    )
    ap.add_argument("--part", help=argparse.SUPPRESS)
    ap.add_argument("--bootstrap", help=argparse.SUPPRESS)
    ap.add_argument("--topic", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.part:
        # a runner may set the process's GC: "bytewax~gc0" runs with process.gc_young_threshold: 0
        args.part, _, gc_threshold = args.part.partition("~gc")
        if gc_threshold:
            SPEC_PROCESS["gc_young_threshold"] = int(gc_threshold)
        # a runner may name its decoder: "bytewax:python" runs bytewax with OBSFLOW_DECODER=python
        args.part, _, decoder = args.part.partition(":")
        if decoder:
            os.environ["OBSFLOW_DECODER"] = decoder
        if args.part == "raw":
            r = measure_raw(args.bootstrap, args.topic, args.records)
        elif args.part.startswith("bytewax-") and args.part.endswith("p"):
            r = measure_cluster(int(args.part[len("bytewax-") : -1]), args.bootstrap, args.topic, args.records)
        else:
            r = measure_pipeline(args.part, args.bootstrap, args.topic, args.records)
        print(json.dumps(r))
        return 0

    from infra import kafka

    external = os.environ.get("OBSFLOW_KAFKA_BOOTSTRAP")
    broker = None
    if external:
        endpoint = kafka.KafkaEndpoint(external)
    else:
        print("starting a Kafka broker ...", flush=True)
        broker = endpoint = kafka.start(heap="1g")
    results: dict = {}
    try:
        records = args.records - args.records % PARTITIONS
        topic = endpoint.create_topic(
            f"bench-events-{uuid.uuid4().hex[:8]}", partitions=PARTITIONS, config={"retention.ms": "-1"}
        )
        start_ms = int(time.time() * 1000) - int(records / 5000.0 * 1000)  # the generator's 5,000/s ends about now
        secs = produce_bulk(endpoint.bootstrap, topic, records, start_ms)
        print(f"produced {records:,} product events to {topic} in {secs:.1f}s ({records / secs:,.0f}/s)", flush=True)
        results["produce"] = {"records": records, "seconds": secs}
        env = {k: v for k, v in os.environ.items() if k != "OBSFLOW_KAFKA_BOOTSTRAP"}
        parts = ["raw", *[r for r in args.runners.split(",") if r]]
        rounds: list[dict] = []
        for rnd in range(1, args.rounds + 1):
            if args.rounds > 1:
                print(f"round {rnd} of {args.rounds}", flush=True)
            this: dict = {}
            rounds.append(this)
            for part in parts:
                name, at_base, _ = part.partition("@base")
                if at_base and not args.baseline_root:
                    ap.error(f"{part}: a runner with @base needs --baseline-root")
                root = Path(args.baseline_root).resolve() if at_base else ROOT
                out = subprocess.run(
                    [
                        sys.executable,
                        str(root / "bench" / "kafka_throughput.py"),
                        "--part",
                        name,
                        "--records",
                        str(records),
                        "--bootstrap",
                        endpoint.bootstrap,
                        "--topic",
                        topic,
                    ],
                    capture_output=True,
                    text=True,
                    cwd=root,
                    env={**env, "PYTHONPATH": str(root)},
                )
                if out.returncode != 0:
                    print(out.stderr[-3000:], file=sys.stderr)
                    this[part] = {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "failed"}
                    continue
                r = this[part] = json.loads(out.stdout.strip().splitlines()[-1])
                extra = ""
                if part != "raw" and "records_per_s" in this.get("raw", {}):
                    r["share_of_raw"] = r["records_per_s"] / this["raw"]["records_per_s"]
                    r["meets_targets"] = r["share_of_raw"] >= 0.30 and r["records_per_s"] >= 50_000
                    extra = f"  {r['share_of_raw']:.0%} of raw consume  (targets ≥30% and ≥50,000/s: {'met' if r['meets_targets'] else 'NOT met'})"
                print(
                    f"{part:10s}{r['records_per_s']:>12,.0f} events/s  {r['seconds']:7.1f}s  {r.get('cpu_us_per_record', float('nan')):5.1f} µs CPU/record"
                    f"  peak {r['peak_mb']:,.0f} MB{extra}",
                    flush=True,
                )
        results.update(rounds[-1])
        if args.rounds > 1:
            results["rounds"] = rounds
            print(f"medians over {args.rounds} rounds:", flush=True)
            for part in parts:
                ok = [r[part] for r in rounds if "records_per_s" in r.get(part, {})]
                if not ok:
                    continue
                med = statistics.median(r["records_per_s"] for r in ok)
                cpu = statistics.median(r.get("cpu_us_per_record", float("nan")) for r in ok)
                line = f"{part:10s}{med:>12,.0f} events/s  {cpu:5.1f} µs CPU/record"
                summary = {"records_per_s": med, "rounds": len(ok), "cpu_us_per_record": cpu}
                if part != "raw" and all("share_of_raw" in r for r in ok):
                    share = statistics.median(r["share_of_raw"] for r in ok)
                    met = sum(1 for r in ok if r["meets_targets"])
                    summary.update(share_of_raw=share, rounds_meeting_targets=met)
                    line += f"  {share:.0%} of raw consume; targets met in {met} of {len(ok)} rounds"
                results.setdefault("median", {})[part] = summary
                print(line, flush=True)
        if not args.skip_freshness:
            f = results["freshness"] = freshness(
                endpoint.bootstrap, endpoint, args.fresh_rate, args.fresh_seconds, args.commit_seconds
            )
            f["meets_target"] = f["p99_s"] <= 10.0
            print(
                f"freshness at {f['rate']:,.0f} events/s for {f['seconds']:.0f}s (commit.max_seconds {f['commit_max_seconds']}): "
                f"p50 {f['p50_s']:.2f}s, p99 {f['p99_s']:.2f}s, max {f['max_s']:.2f}s over {f['visible']:,} records "
                f"(target p99 ≤ 10s: {'met' if f['meets_target'] else 'NOT met'})",
                flush=True,
            )
    finally:
        if broker is not None:
            broker.stop(remove_data=True)
    load = os.getloadavg()[0]
    print(
        f"(1-minute load average at the end: {load:.1f} on {os.cpu_count()} cores; shared machine: compare within this run)"
    )
    results["meta"] = {"records": args.records, "load_avg_1m": load, "cpus": os.cpu_count()}
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
