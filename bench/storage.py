"""Shared-storage figures, each next to its local baseline from the same run.

Starts real MinIO, PostgreSQL and Trino (``infra``), then measures:
1. ``write_local`` / ``write_s3``: product events (the embedded generator, materialized
   before the clock starts) through decode → validate → scrub → enrich → Iceberg, with a
   SQLite catalog on local files (baseline) and with the PostgreSQL catalog on S3. The
   source is the same in-memory replay in both, so the difference is the storage.
1b. ``kafka_local`` / ``kafka_s3``: Kafka → Iceberg. A real local broker (``infra.kafka``,
   or ``$OBSFLOW_KAFKA_BOOTSTRAP``) gets ``--kafka-records`` product events (the
   generator's 1% malformed ones included) on a 4-partition topic, produced as
   ``bench/kafka_throughput.py`` does; then the bounded Bytewax Kafka run
   (``obsflow run --source kafka --bounded``, events only) reads the whole topic twice,
   each in its own process: into a SQLite catalog + local files (baseline), and into the
   PostgreSQL catalog + MinIO (credentials as ``${VAR}`` references in the spec).
2. ``maintenance``: ``obsflow maintain`` (compaction, snapshot expiry, orphan removal) on
   an S3 table after 1,000 small commits, with the file count before and after.
3. ``queries``: the three saved queries (``pipelines/queries``) timed in Trino and in
   DuckDB (best of three after a warm-up run) over the same S3 tables, filled first by a
   Bytewax run of the whole default spec (every flow and stage, ``--records`` per source),
   so ``p99_latency_by_service`` has the trace stage's RED metrics to read.

Run: ``python bench/storage.py [--records 100000] [--kafka-records 200000] [--only write,kafka,maintenance,queries]``;
ends with one JSON line. Not run in CI."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from datetime import datetime, UTC
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OBSFLOW_PSEUDONYM_KEY", "benchmark-key-0123456789")


def spec_with(catalog: dict, full: bool = False):
    """The default spec on ``catalog``: its stateless flows only, or (``full``) every
    flow and stage (the trace stage fills ``obs.metrics`` with RED metrics)."""
    import yaml

    from pipelines import DEFAULT_SPEC
    from pipelines.loader import parse_spec
    from tests.helpers import strip_traces

    d = yaml.safe_load(DEFAULT_SPEC.read_text())
    if not full:
        d = strip_traces(d)
    d["storage"]["catalog"] = catalog
    return parse_spec(d)


def timed_write(spec, records: int, max_rows: int | None = None, batch_size: int = 5000) -> dict:
    from sources.generator import EmbeddedSource, MaterializedSource
    from tests.helpers import write_through_sink

    src = MaterializedSource(
        EmbeddedSource(
            spec.sources,
            count=records,
            seed=42,
            start_ms=int(time.time() * 1000) - 3_600_000,
            rate_per_s=5000.0,
            batch_size=batch_size,
        )
    )
    n = src.records()
    t = time.perf_counter()
    sink = write_through_sink(spec, src, max_rows)
    secs = time.perf_counter() - t
    return {"records": n, "seconds": secs, "records_per_s": n / secs, "commits": sink.stats.commits}


def kafka_run(warehouse: str, bootstrap: str, topic: str, records: int, catalog: dict | None = None) -> dict:
    """The bounded Bytewax Kafka → Iceberg run of ``bench/kafka_throughput.py`` (events
    only) in its own process, into ``warehouse`` (or the shared ``catalog``)."""
    import subprocess

    args = [
        sys.executable,
        __file__,
        "--part",
        "kafka",
        "--bootstrap",
        bootstrap,
        "--topic",
        topic,
        "--kafka-records",
        str(records),
        "--warehouse",
        warehouse,
    ]
    env = {k: v for k, v in os.environ.items() if k != "OBSFLOW_KAFKA_BOOTSTRAP"}
    if catalog is not None:  # credentials through the environment, as a deployment would pass them
        env.update(
            {
                "BENCH_CATALOG_URI": catalog["uri"],
                "BENCH_S3_KEY": catalog["properties"]["s3.access-key-id"],
                "BENCH_S3_SECRET": catalog["properties"]["s3.secret-access-key"],
            }
        )
        props = {
            **catalog["properties"],
            "s3.access-key-id": "${BENCH_S3_KEY}",
            "s3.secret-access-key": "${BENCH_S3_SECRET}",
        }
        args += ["--catalog-properties", json.dumps(props)]
    out = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"kafka run failed: {out.stderr.strip()[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _kafka_part(args) -> int:
    """Child process of :func:`kafka_run`: one bounded Kafka → Iceberg run, timed."""
    from bench.kafka_throughput import _peak_mb, spec_data
    from pipelines.loader import parse_spec
    from runners.bytewax.run import run
    from runners.job import RunRequest
    from runners.stats import STATS

    d = spec_data(args.warehouse, args.bootstrap, args.topic)
    if args.catalog_properties:
        d["storage"]["catalog"] = {
            "name": "obsflow",
            "uri": "${BENCH_CATALOG_URI}",
            "warehouse": args.warehouse,
            "properties": json.loads(args.catalog_properties),
        }
    spec = parse_spec(d)
    STATS.reset()
    t = time.perf_counter()
    run(RunRequest(spec=spec, runner="bytewax", source="kafka", bounded=True))
    secs = time.perf_counter() - t
    assert STATS.records_in == args.kafka_records, (STATS.records_in, args.kafka_records)
    rows = STATS.rows_by_table.get("events", 0)
    print(
        json.dumps(
            {
                "records": STATS.records_in,
                "rows": rows,
                "seconds": secs,
                "records_per_s": STATS.records_in / secs,
                "rows_per_s": rows / secs,
                "dead": STATS.records_dead,
                "commits": STATS.commits,
                "peak_mb": _peak_mb(),
            }
        )
    )
    return 0


def best_of(fn, runs: int = 3) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=100_000, help="records per source for the write figures")
    ap.add_argument("--small-commits", type=int, default=1000)
    ap.add_argument(
        "--kafka-records", type=int, default=200_000, help="product events produced to Kafka for the Kafka figures"
    )
    ap.add_argument(
        "--only", default="write,kafka,maintenance,queries", help="comma-separated subset of the measurements"
    )
    for hidden in ("--part", "--bootstrap", "--topic", "--warehouse", "--catalog-properties"):
        ap.add_argument(hidden, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.part == "kafka":
        return _kafka_part(args)
    only = set(args.only.split(","))
    from infra import postgres, s3, trino
    from runners.query import query, saved_query
    from sinks.maintenance import maintain

    out: dict = {}
    tmp = Path(tempfile.mkdtemp(prefix="obsflow-bench-storage-"))
    s3srv = s3.start()
    pg = postgres.start()
    trino_srv = broker = None
    try:

        def shared(tag: str) -> dict:
            suffix = f"{tag}-{uuid.uuid4().hex[:8]}"
            pg.create_database(f"b_{suffix.replace('-', '_')}")
            s3srv.create_bucket(f"b-{suffix}")
            props = {k: str(v) for k, v in s3srv.pyiceberg_properties().items()}
            return {
                "name": "obsflow",
                "uri": pg.sqlalchemy_url_for(f"b_{suffix.replace('-', '_')}"),
                "warehouse": f"s3://b-{suffix}/warehouse",
                "properties": props,
            }

        # 1. throughput, local files vs S3 + PostgreSQL
        if "write" in only:
            out["write_local"] = timed_write(spec_with({"warehouse": str(tmp / "local")}), args.records)
            s3_catalog = shared("write")
            s3_spec = spec_with(s3_catalog)
            out["write_s3"] = timed_write(s3_spec, args.records)
            for k in ("write_local", "write_s3"):
                print(f"{k:14s} {out[k]['records_per_s']:>10,.0f} records/s  ({out[k]['commits']} commits)", flush=True)

        # 1b. Kafka → Iceberg, local files vs S3 + PostgreSQL, from one topic
        if "kafka" in only:
            from bench.kafka_throughput import PARTITIONS, produce_bulk
            from infra import kafka

            external = os.environ.get("OBSFLOW_KAFKA_BOOTSTRAP")
            endpoint = kafka.KafkaEndpoint(external) if external else None
            if endpoint is None:
                print("starting a Kafka broker ...", flush=True)
                broker = endpoint = kafka.start(heap="1g")
            n = args.kafka_records - args.kafka_records % PARTITIONS
            topic = endpoint.create_topic(
                f"bench-storage-{uuid.uuid4().hex[:8]}", partitions=PARTITIONS, config={"retention.ms": "-1"}
            )
            secs = produce_bulk(endpoint.bootstrap, topic, n, int(time.time() * 1000) - int(n / 5000.0 * 1000))
            print(f"produced {n:,} product events to {topic} in {secs:.1f}s", flush=True)
            k_catalog = shared("kafka")
            out["kafka_local"] = kafka_run(str(tmp / "kafka-local"), endpoint.bootstrap, topic, n)
            out["kafka_s3"] = kafka_run(k_catalog["warehouse"], endpoint.bootstrap, topic, n, catalog=k_catalog)
            out["kafka_s3"]["share_of_local"] = out["kafka_s3"]["records_per_s"] / out["kafka_local"]["records_per_s"]
            for k in ("kafka_local", "kafka_s3"):
                r = out[k]
                print(
                    f"{k:14s} {r['records_per_s']:>10,.0f} events/s  {r['seconds']:6.1f}s  ({r['rows']:,} rows, {r['dead']:,} dead, "
                    f"{r['commits']} commits, peak {r['peak_mb']:,.0f} MB)",
                    flush=True,
                )

        # 2. maintenance after many small commits
        if "maintenance" in only:
            m_spec = spec_with(shared("maint"))
            # logs only (partitioned by day and service): a commit of 8 lines writes ~4 files
            m_spec = m_spec.model_copy(
                update={
                    "sources": [x for x in m_spec.sources if x.name == "logs"],
                    "flows": [f for f in m_spec.flows if f.source == "logs"],
                }
            )
            per_commit = 8
            timed_write(m_spec, args.small_commits * per_commit // 4, max_rows=per_commit, batch_size=per_commit)
            from sinks.catalog import open_catalog

            table = open_catalog(m_spec.storage).load_table("obs.logs")
            files_before = len(table.inspect.files())
            m = m_spec.storage.maintenance.model_copy(
                update={
                    "snapshot_max_age": __import__("datetime").timedelta(0),
                    "orphan_min_age": __import__("datetime").timedelta(0),
                }
            )
            m_spec = m_spec.model_copy(update={"storage": m_spec.storage.model_copy(update={"maintenance": m})})
            t = time.perf_counter()
            (rep,) = maintain(m_spec, now=datetime.now(UTC), tables=["logs"], steps=("compact", "expire", "orphans"))
            secs = time.perf_counter() - t
            out["maintenance"] = {
                "files_before": files_before,
                "files_after": rep.files_after,
                "snapshots_expired": rep.expired_snapshots,
                "orphans_removed": rep.orphan_files,
                "seconds": secs,
            }
            print(
                f"maintenance    {secs:.1f}s for {files_before} data files -> {rep.files_after} "
                f"({rep.expired_snapshots} snapshots expired, {rep.orphan_files} orphan files removed)",
                flush=True,
            )

        # 3. saved queries in Trino and DuckDB over S3 tables filled by a whole-spec run
        # (every flow and stage, on Bytewax: RED metrics in obs.metrics for the p99 query)
        if "queries" in only:
            from pyiceberg.catalog.sql import SqlCatalog

            from runners.bytewax.run import run as run_bytewax
            from runners.job import RunRequest
            from runners.stats import STATS

            q_catalog = shared("queries")
            q_spec = spec_with(q_catalog, full=True)
            STATS.reset()
            t = time.perf_counter()
            run_bytewax(
                RunRequest(
                    spec=q_spec,
                    runner="bytewax",
                    count=args.records,
                    start_ms=int(time.time() * 1000) - 3_600_000,
                    rate_per_s=5000.0,
                )
            )
            rows = dict(sorted(STATS.rows_by_table.items()))
            out["queries_data"] = {"records_per_source": args.records, "rows": rows, "seconds": time.perf_counter() - t}
            print(
                f"queries' data: {args.records:,} records per source through every flow and stage in "
                f"{out['queries_data']['seconds']:.1f}s: {rows}",
                flush=True,
            )
            SqlCatalog(
                "obsflow", uri=q_catalog["uri"], warehouse=q_catalog["warehouse"], **q_catalog["properties"]
            ).engine.dispose()
            trino_srv = trino.start(
                jdbc_url=pg.jdbc_url_for(q_catalog["uri"].rsplit("/", 1)[1]),
                jdbc_user=pg.user,
                jdbc_password=pg.password,
                catalog_id="obsflow",
                warehouse=q_catalog["warehouse"],
                s3_endpoint=s3srv.endpoint,
                s3_access_key=s3srv.access_key,
                s3_secret_key=s3srv.secret_key,
                s3_region=s3srv.region,
                quick_jit=False,
            )
            out["queries"] = {}
            for name in ("funnel_dropoff", "error_rate_by_service", "p99_latency_by_service"):
                sql = saved_query(name)
                n_trino = len(trino_srv.query(sql, schema="obs"))
                n_duck = len(query(q_spec, sql)[1])
                t_trino = best_of(lambda: trino_srv.query(sql, schema="obs"))
                t_duck = best_of(lambda: query(q_spec, sql))
                out["queries"][name] = {"trino_s": t_trino, "duckdb_s": t_duck, "rows": n_duck, "rows_trino": n_trino}
                print(
                    f"{name:24s} trino {t_trino * 1000:8.0f} ms   duckdb {t_duck * 1000:8.0f} ms   ({n_duck} rows; Trino {n_trino})",
                    flush=True,
                )
    finally:
        if trino_srv is not None:
            trino_srv.stop(remove_data=True)
        if broker is not None:
            broker.stop(remove_data=True)
        pg.stop(remove_data=True)
        s3srv.stop(remove_data=True)
    out["meta"] = {
        "records": args.records,
        "kafka_records": args.kafka_records,
        "load_avg_1m": os.getloadavg()[0],
        "cpus": os.cpu_count(),
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
