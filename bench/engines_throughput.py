"""Throughput of the engines against the same Kafka topics, in one run (not run in CI).

    python bench/engines_throughput.py [--per-partition 20000] [--partitions 4]

Starts its own local Kafka broker and Flink session cluster (2 slots; both stopped at the
end, also on error), produces the embedded generator's events and logs (malformed ones
included, 4 % of them) to two fresh N-partition topics once, then reads all of it, each
engine into its own fresh warehouse (SQLite catalog + local files), with:

* Beam on Flink, parallelism 1 and 2: the streaming (unbounded) job submitted with
  obsflow's :func:`runners.beam.flink.submit` (FlinkRunner, Beam's job server started per
  submission, SDK workers from the cluster's EXTERNAL worker pool, started once before the
  first measurement), cancelled after its measurement;
* Bytewax 1×1 (one process, one worker) and 2×1 (two processes, one worker each), bounded,
  with :func:`runners.bytewax.cluster.spawn` / ``wait``.

The pipeline is the default spec through :func:`tests.helpers.strip_traces`: the events
and logs flows (validate, scrub, enrich) into ``obs.events``, ``obs.logs`` and
``obs.dead_letters``; the spans and metrics sources, the stateful ``product`` stage and
log sampling are removed, so no engine runs a stateful stage and the output is exactly
predictable.

What is timed, identically for every engine: from the wall-clock instant just before
``submit()`` (Flink) / ``spawn()`` (Bytewax) to the timestamp of the Iceberg snapshot
(commit) at which the last of the three tables first recorded the topics' end offsets.
Start-up is included: for Flink, starting Beam's job server (a JVM), translating and
submitting the job, deploying its tasks and starting the SDK harness; for Bytewax,
creating the tables, starting the Python processes, imports and planning. For Flink the
time from the job's RUNNING timestamp (Flink's own) to that commit is printed as well,
as is the time until the Bytewax processes exited. records/s = Kafka records produced
(events + logs, malformed included) / timed seconds.

After each measurement the bench checks that the run read every produced record exactly
once: every table's recorded offsets equal the topics' end offsets, and the tables hold
exactly the produced (topic, partition, offset) keys — row counts equal to what was
produced, no duplicates, each malformed record a dead letter with its reason
(:func:`tests.e2e.test_kafka_pipeline.check_exact`). Prints one line per engine and then
one JSON line. Shared machine: compare figures within one run only."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OBSFLOW_PSEUDONYM_KEY", "obsflow-bench-key-0123456789")
# the spec's bootstrap (this bench's own broker), not a shared broker named in the environment;
# popped before any child process (worker pool, Bytewax processes) inherits the environment
os.environ.pop("OBSFLOW_KAFKA_BOOTSTRAP", None)

TABLES = ("events", "logs", "dead_letters")


def covering_commit_ms(table, want: dict[str, int]) -> int | None:
    """Timestamp (ms) of the earliest snapshot of ``table`` whose recorded offsets equal
    ``want``; None if none does."""
    from sinks.iceberg import OFFSETS_KEY

    hits = []
    for snap in table.snapshots():
        raw = snap.summary.additional_properties.get(OFFSETS_KEY) if snap.summary else None
        if raw and json.loads(raw) == want:
            hits.append(snap.timestamp_ms)
    return min(hits) if hits else None


def table_state(spec, want: dict[str, dict[str, int]]) -> tuple[bool, dict[str, dict[str, int]]]:
    """(every table records exactly its end offsets, what each records now)."""
    from sinks.catalog import open_catalog
    from sinks.iceberg import snapshot_offsets

    cat = open_catalog(spec.storage)
    now = {}
    for t in TABLES:
        try:
            now[t] = snapshot_offsets(cat.load_table(f"{spec.storage.namespace}.{t}"))
        except Exception:  # noqa: BLE001 - table not created yet
            now[t] = {}
    return all(now[t] == want[t] for t in TABLES), now


def finished_at(spec, want: dict[str, dict[str, int]]) -> float:
    """Wall-clock time (s) of the commit at which the last table reached its end offsets."""
    from sinks.catalog import open_catalog

    cat = open_catalog(spec.storage)
    stamps = {t: covering_commit_ms(cat.load_table(f"{spec.storage.namespace}.{t}"), want[t]) for t in TABLES}
    found = {t: ms for t, ms in stamps.items() if ms is not None}
    if len(found) < len(stamps):
        raise RuntimeError(f"no snapshot of {sorted(set(stamps) - set(found))} records the end offsets")
    return max(found.values()) / 1000.0


def verify(name: str, spec, want, expected) -> dict[str, int]:
    """Exactly the produced records, once each; returns the tables' row counts."""
    from tests.e2e import test_kafka_pipeline as tk
    from tests.helpers import read_table

    ok, now = table_state(spec, want)
    if not ok:
        raise RuntimeError(f"{name}: recorded offsets {now} != end offsets {want}")
    rows = {t: read_table(spec, t).num_rows for t in TABLES}
    produced = {"events": sum(expected.events.values()), "logs": len(expected.logs), "dead_letters": len(expected.dead)}
    if rows != produced:
        raise RuntimeError(f"{name}: table rows {rows} != produced {produced}")
    try:
        tk.check_exact(spec, expected)
    except AssertionError as e:
        raise RuntimeError(f"{name}: tables do not hold exactly the produced records: {e}") from None
    return rows


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-partition", type=int, default=20_000, help="records per partition and topic")
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--timeout", type=float, default=1800.0, help="longest wait per measurement (s)")
    args = ap.parse_args()

    from infra import flink, kafka
    from pipelines.loader import parse_spec
    from runners.beam.flink import submit
    from runners.bytewax.cluster import ClusterRun, spawn, wait
    from runners.flink_rest import FlinkRest, FlinkUnavailable
    from tests.e2e import test_kafka_pipeline as tk

    tk.PARTITIONS = args.partitions  # produce() writes to partitions 0 .. PARTITIONS-1
    tmp = Path(tempfile.mkdtemp(prefix="obsflow-bench-"))
    results: dict[str, dict] = {}
    broker = cluster = None
    try:
        broker = kafka.start()
        cluster = flink.start(slots=2)
        tag = uuid.uuid4().hex[:6]
        topics = {
            n: broker.create_topic(f"bench-{n}-{tag}", partitions=args.partitions, config=tk.TOPIC_CONFIG)
            for n in ("events", "logs")
        }
        expected = tk.Expected()
        t0 = time.monotonic()
        tk.produce(broker.bootstrap, topics, args.per_partition, expected)
        records = expected.records
        # end offsets from what the broker acknowledged: the next offset after the last record
        ends: dict[str, int] = {}
        for topic, part, off in [*expected.events, *expected.logs, *expected.dead]:
            key = f"{topic}:{part}"
            ends[key] = max(ends.get(key, 0), off + 1)
        assert len(ends) == 2 * args.partitions and sum(ends.values()) == records, (ends, records)
        print(
            f"produced {records:,} records ({len(expected.dead):,} malformed) to {len(topics)} topics × "
            f"{args.partitions} partitions in {time.monotonic() - t0:.1f}s",
            flush=True,
        )
        # each table records the partitions of the topics that feed it; dead letters come from both
        want = {
            "events": {k: v for k, v in ends.items() if k.startswith(topics["events"] + ":")},
            "logs": {k: v for k, v in ends.items() if k.startswith(topics["logs"] + ":")},
            "dead_letters": ends,
        }

        def spec_data(name):
            # tk.spec_data applies strip_traces: events and logs flows only, no stateful stage
            return tk.spec_data(tmp / name, broker.bootstrap, topics, max_rows=200_000, max_seconds=5, batch=5000)

        pool = f"127.0.0.1:{cluster.ensure_worker_pool()}"
        rest = FlinkRest(cluster.master)
        for par in (1, 2):
            name = f"flink_p{par}"
            spec = parse_spec(spec_data(name))
            started = time.time()
            sub = submit(spec, cluster.master, parallelism=par, worker_pool=pool, job_name=f"bench-{name}")
            jid = sub.job.jid
            try:
                deadline = time.monotonic() + args.timeout
                seen = None
                while True:
                    # the catalog's metadata locations change on every commit: a cheap poll, so that
                    # checking takes little CPU from the job (the timing comes from the snapshots)
                    cur = tk.catalog_state(tmp / name)
                    if cur != seen:
                        seen = cur
                        ok, now = table_state(spec, want)
                        if ok:
                            break
                    try:
                        state = rest.state(jid)
                    except FlinkUnavailable:  # a busy JobManager may miss one poll
                        state = "RUNNING"
                    if state != "RUNNING" or time.monotonic() > deadline:
                        exc = rest.request("GET", f"/jobs/{jid}/exceptions").get("root-exception") or ""
                        raise RuntimeError(
                            f"{name}: job {jid} {state} after {time.time() - started:.0f}s; tables "
                            f"record {now}; {exc.strip()[:1500]}"
                        )
                    time.sleep(1.0)
                end = finished_at(spec, want)
                running_ms = rest.job(jid).get("timestamps", {}).get("RUNNING") or 0
            finally:
                try:
                    rest.cancel(jid)
                    state = rest.wait_for_state(jid, {"CANCELED"}, timeout=120)
                    if state != "CANCELED":
                        print(f"warning: {name}: job {jid} ended {state}, not CANCELED", file=sys.stderr)
                except Exception as e:  # noqa: BLE001 - the cluster is stopped at the end anyway
                    print(f"warning: {name}: cancelling job {jid} failed: {e}", file=sys.stderr)
            rows = verify(name, spec, want, expected)
            secs = end - started
            from_running = end - running_ms / 1000.0 if running_ms else None
            results[name] = {
                "records_per_s": records / secs,
                "seconds": secs,
                "rows": rows,
                "submit_s": sub.seconds,
                "seconds_from_running": from_running,
            }
            print(
                f"{name:12s} {records / secs:10,.0f} records/s  ({secs:.1f}s from submit to the commit covering "
                f"the end offsets; submit took {sub.seconds:.1f}s"
                + (
                    f"; {from_running:.1f}s from RUNNING = {records / from_running:,.0f} records/s"
                    if from_running
                    else ""
                )
                + ")",
                flush=True,
            )
        for procs in (1, 2):
            name = f"bytewax_{procs}x1"
            data = spec_data(name)
            path = tmp / f"{name}.yaml"
            tk.write_spec(path, data)
            spec = parse_spec(data)
            logs = tmp / f"{name}-logs"
            logs.mkdir()
            started = time.time()
            codes = wait(
                spawn(ClusterRun(str(path), bounded=True), processes=procs, workers=1, log_dir=logs),
                timeout=args.timeout,
            )
            exited = time.time()
            if codes != [0] * procs:
                tails = "".join(
                    f"\n--- {f} ---\n{f.read_text(errors='replace')[-3000:]}" for f in sorted(logs.iterdir())
                )
                raise RuntimeError(f"{name}: exit codes {codes}{tails}")
            end = finished_at(spec, want)
            rows = verify(name, spec, want, expected)
            secs = end - started
            results[name] = {
                "records_per_s": records / secs,
                "seconds": secs,
                "rows": rows,
                "seconds_to_exit": exited - started,
            }
            print(
                f"{name:12s} {records / secs:10,.0f} records/s  ({secs:.1f}s from spawn to the commit covering "
                f"the end offsets, process start included; processes exited after {exited - started:.1f}s)",
                flush=True,
            )
    finally:
        stops = []
        if cluster is not None:
            stops.append(("flink cluster", lambda: cluster.stop(remove=True)))
        if broker is not None:
            stops.append(("kafka broker", lambda: broker.stop(remove_data=True)))
        for what, stop in stops:
            try:
                stop()
            except Exception as e:  # noqa: BLE001 - stop the other one too
                print(f"warning: stopping the {what} failed: {e}", file=sys.stderr)
    shutil.rmtree(tmp, ignore_errors=True)  # only after a successful run (on error: kept for a look)
    print(
        json.dumps(
            {
                "bench": "engines_throughput",
                "records": records,
                "partitions": args.partitions,
                "per_partition": args.per_partition,
                "rows": rows,
                "malformed": len(expected.dead),
                "timed": "submit/spawn -> commit covering the end offsets (start-up included)",
                "records_per_s": {k: round(v["records_per_s"]) for k, v in results.items()},
                "seconds": {k: round(v["seconds"], 1) for k, v in results.items()},
                "flink_records_per_s_from_running": {
                    k: round(records / v["seconds_from_running"])
                    for k, v in results.items()
                    if v.get("seconds_from_running")
                },
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
