"""Throughput of the engines against the same Kafka topics, in one run (not run in CI).

    python bench/engines_throughput.py [--per-partition 20000] [--partitions 4]

Starts a local Kafka broker and a Flink session cluster (2 slots), produces the embedded
generator's events and logs (malformed ones included) to 4-partition topics once, then
reads all of it into a fresh warehouse with:

* Beam on Flink, parallelism 1 and 2 (streaming job submitted with obsflow's submit; timed
  from RUNNING until every table records the topics' end offsets);
* Bytewax 1×1 (one process, one worker) and 2×1 (two processes, one worker each), bounded.

Prints records/s per engine and one JSON line. Shared machine: compare figures within one
run only."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OBSFLOW_PSEUDONYM_KEY", "obsflow-bench-key-0123456789")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-partition", type=int, default=20_000)
    ap.add_argument("--partitions", type=int, default=4)
    args = ap.parse_args()

    import tempfile

    from infra import flink, kafka
    from pipelines.loader import parse_spec
    from runners.beam.flink import submit
    from runners.bytewax.cluster import ClusterRun, spawn, wait
    from runners.flink_rest import FlinkRest
    from sinks.catalog import open_catalog
    from sinks.iceberg import snapshot_offsets
    from tests import test_kafka_pipeline as tk
    from tests.helpers import strip_traces

    tk.PARTITIONS = args.partitions
    broker = kafka.start()
    cluster = flink.start(slots=2)
    tmp = Path(tempfile.mkdtemp(prefix="obsflow-bench-"))
    results: dict[str, float] = {}
    try:
        tag = uuid.uuid4().hex[:6]
        topics = {n: broker.create_topic(f"bench-{n}-{tag}", partitions=args.partitions, config=tk.TOPIC_CONFIG)
                  for n in ("events", "logs")}
        expected = tk.Expected()
        t0 = time.monotonic()
        tk.produce(broker.bootstrap, topics, args.per_partition, expected)
        records = expected.records
        print(f"produced {records:,} records to {len(topics)} topics × {args.partitions} partitions "
              f"in {time.monotonic() - t0:.1f}s")
        ends = {f"{t}:{p}": args.per_partition for t in topics.values() for p in range(args.partitions)}
        # each table records the partitions of the topics that feed it; dead letters come from both
        want = {"events": {k: v for k, v in ends.items() if k.startswith(topics["events"] + ":")},
                "logs": {k: v for k, v in ends.items() if k.startswith(topics["logs"] + ":")},
                "dead_letters": ends}

        def spec_data(name):
            return strip_traces(tk.spec_data(tmp / name, broker.bootstrap, topics, max_rows=200_000, max_seconds=5,
                                              batch=5000))

        def done(spec) -> bool:
            cat = open_catalog(spec.storage)
            try:
                return all(snapshot_offsets(cat.load_table(f"obs.{t}")) == want[t] for t in want)
            except Exception:  # noqa: BLE001 - tables not created yet
                return False

        pool = f"127.0.0.1:{cluster.ensure_worker_pool()}"
        rest = FlinkRest(cluster.master)
        for par in (1, 2):
            name = f"flink_p{par}"
            spec = parse_spec(spec_data(name))
            sub = submit(spec, cluster.master, parallelism=par, worker_pool=pool, job_name=f"bench-{name}")
            t0 = time.monotonic()
            while not done(spec):
                if rest.state(sub.job.jid) != "RUNNING" or time.monotonic() - t0 > 1800:
                    raise RuntimeError(f"{name}: job {rest.state(sub.job.jid)} after {time.monotonic() - t0:.0f}s")
                time.sleep(0.5)
            secs = time.monotonic() - t0
            rest.cancel(sub.job.jid)
            rest.wait_for_state(sub.job.jid, {"CANCELED"}, timeout=60)
            results[name] = records / secs
            print(f"{name:12s} {records / secs:10,.0f} records/s  ({secs:.1f}s from RUNNING; submit took {sub.seconds:.0f}s)")
        for procs in (1, 2):
            name = f"bytewax_{procs}x1"
            data = spec_data(name)
            path = tmp / f"{name}.yaml"
            tk.write_spec(path, data)
            t0 = time.monotonic()
            codes = wait(spawn(ClusterRun(str(path), bounded=True), processes=procs, workers=1, log_dir=tmp))
            secs = time.monotonic() - t0
            if codes != [0] * procs or not done(parse_spec(data)):
                raise RuntimeError(f"{name} failed: {codes}")
            results[name] = records / secs
            print(f"{name:12s} {records / secs:10,.0f} records/s  ({secs:.1f}s including process start)")
    finally:
        cluster.stop(remove=True)
        broker.stop(remove_data=True)
    print(json.dumps({"bench": "engines_throughput", "records": records, "partitions": args.partitions,
                      "records_per_s": {k: round(v) for k, v in results.items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
