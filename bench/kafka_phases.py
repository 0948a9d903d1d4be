"""Where a one-process Bytewax Kafka → Iceberg run spends its wall time, phase by phase,
for this checkout and others measured in the same rounds.

Starts a broker (``infra.kafka.start``), produces ``--records`` product events (the
generator's, 1% malformed) to a 4-partition topic, then per round: the raw
confluent-kafka consume (``bench/kafka_throughput.py --part raw``) and, for each checkout
of ``--roots`` (default: this one; e.g. ``.,/tmp/main`` for a ``git archive`` of main),
one bounded run in its own process with wall-time timers wrapped around its phases:

- ``first_batch_at``: seconds from the run's start to its first batch reaching the graph
  (the start-up: catch-up plan, positions, flow build, consumers);
- ``catch_up_sources``, ``kafka_plan``, ``build_flow``, ``graph.init`` (building the
  graph, its lookup tables), ``sink.init``: the start-up's parts (they overlap where a
  checkout runs them on threads);
- ``reader.poll`` (the Kafka source), ``graph.process`` (the stateless path),
  ``sink.close`` (the final commits), ``files.write`` / ``files.commit`` (every commit's
  Parquet encoding / snapshot commit, on the committer thread).

Prints one JSON line per measurement; CPU per record is the run process's (all threads).
Timers are wall time, so on a loaded machine compare within a round. Not run in CI."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(os.environ.get("OBSFLOW_BENCH_ROOT", Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OBSFLOW_PSEUDONYM_KEY", "benchmark-key-0123456789")


def _throughput_bench():
    """``bench/kafka_throughput.py`` of the checkout being measured (its spec and producer)."""
    spec = importlib.util.spec_from_file_location("kafka_throughput", ROOT / "bench" / "kafka_throughput.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _timed(timers: dict[str, float], owner, name: str, label: str) -> None:
    """Wrap ``owner.name`` so that its wall time adds up in ``timers[label]``."""
    inner = getattr(owner, name)

    def wrapper(*a, **k):
        t = time.perf_counter()
        try:
            return inner(*a, **k)
        finally:
            timers[label] = timers.get(label, 0.0) + time.perf_counter() - t

    setattr(owner, name, wrapper)


def measure(bootstrap: str, topic: str, records: int) -> dict:
    """One bounded one-process Bytewax run of this checkout, with its phase timers."""
    import runners.bytewax.run as brun
    import sinks.iceberg as iceberg
    from pipelines import graph
    from pipelines.loader import parse_spec
    from runners.job import RunRequest
    from runners.stats import STATS
    from sources.kafka import PartitionReader

    timers: dict[str, float] = {}
    for name in ("catch_up_sources", "kafka_plan", "build_flow"):
        _timed(timers, brun, name, name)
    _timed(timers, iceberg.IcebergSink, "__init__", "sink.init")
    _timed(timers, iceberg.IcebergSink, "close", "sink.close")
    _timed(timers, iceberg._WrittenFiles, "write", "files.write")
    _timed(timers, iceberg._WrittenFiles, "commit", "files.commit")
    _timed(timers, PartitionReader, "poll", "reader.poll")
    _timed(timers, graph.PipelineGraph, "__init__", "graph.init")
    _timed(timers, graph.PipelineGraph, "process", "graph.process")
    started = [0.0]
    timed_process = graph.PipelineGraph.process

    def first(self, raw):
        timers.setdefault("first_batch_at", time.perf_counter() - started[0])
        return timed_process(self, raw)

    setattr(graph.PipelineGraph, "process", first)  # noqa: B010 - the class is patched for this bench process
    kt = _throughput_bench()
    spec = parse_spec(kt.spec_data(tempfile.mkdtemp(prefix="obsflow-kphases-") + "/wh", bootstrap, topic))
    STATS.reset()
    cpu = time.process_time()
    started[0] = time.perf_counter()
    brun.run(RunRequest(spec=spec, runner="bytewax", source="kafka", bounded=True))
    secs = time.perf_counter() - started[0]
    cpu = time.process_time() - cpu
    assert STATS.records_in == records, (STATS.records_in, records)
    return {
        "seconds": round(secs, 3),
        "records_per_s": round(records / secs),
        "cpu_us_per_record": round(cpu / records * 1e6, 2),
        **{k: round(v, 3) for k, v in sorted(timers.items())},
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--roots", default=".", help="checkouts to measure, comma-separated, each in every round")
    ap.add_argument("--part", nargs=3, help=argparse.SUPPRESS)  # bootstrap topic records
    args = ap.parse_args()
    if args.part:
        print(json.dumps(measure(args.part[0], args.part[1], int(args.part[2]))))
        return 0
    from infra import kafka

    roots = [Path(r).resolve() for r in args.roots.split(",")]
    records = args.records - args.records % 4
    kt = _throughput_bench()
    broker = kafka.start(heap="1g")
    try:
        topic = broker.create_topic(f"bench-phases-{uuid.uuid4().hex[:8]}", partitions=4, config={"retention.ms": "-1"})
        kt.produce_bulk(broker.bootstrap, topic, records, int(time.time() * 1000) - int(records / 5000.0 * 1000))
        for rnd in range(1, args.rounds + 1):
            raw = subprocess.run(
                [sys.executable, str(ROOT / "bench" / "kafka_throughput.py"), "--part", "raw"]
                + ["--records", str(records), "--bootstrap", broker.bootstrap, "--topic", topic],
                capture_output=True,
                text=True,
                cwd=ROOT,
            )
            print(json.dumps({"round": rnd, "part": "raw", **json.loads(raw.stdout.strip().splitlines()[-1])}))
            for root in roots:
                out = subprocess.run(
                    [sys.executable, str(Path(__file__).resolve()), "--part", broker.bootstrap, topic, str(records)],
                    capture_output=True,
                    text=True,
                    cwd=root,
                    env={**os.environ, "OBSFLOW_BENCH_ROOT": str(root), "PYTHONPATH": str(root)},
                )
                got = (
                    json.loads(out.stdout.strip().splitlines()[-1])
                    if out.returncode == 0
                    else {"error": out.stderr[-500:]}
                )
                print(json.dumps({"round": rnd, "part": str(root), **got}), flush=True)
    finally:
        broker.stop(remove_data=True)
    print(json.dumps({"load_avg_1m": os.getloadavg()[0], "cpus": os.cpu_count()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
