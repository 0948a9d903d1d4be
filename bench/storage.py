"""Shared-storage figures, each next to its local baseline from the same run.

Starts real MinIO, PostgreSQL and Trino (``infra``), then measures:
1. ``write_local`` / ``write_s3``: product events (the embedded generator, materialized
   before the clock starts) through decode → validate → scrub → enrich → Iceberg, with a
   SQLite catalog on local files (baseline) and with the PostgreSQL catalog on S3. The
   source is the same in-memory replay in both, so the difference is the storage.
   (The issue asks for Kafka → Iceberg-on-S3; Kafka's own share is measured by
   ``bench/kafka_throughput.py``.)
2. ``maintenance``: ``obsflow maintain`` (compaction, snapshot expiry, orphan removal) on
   an S3 table after 1,000 small commits, with the file count before and after.
3. ``queries``: the three saved queries (``pipelines/queries``) timed in Trino and in
   DuckDB over the same S3 tables (best of three after a warm-up run).

Run: ``python bench/storage.py [--records 100000]``; ends with one JSON line. Not run in CI."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OBSFLOW_PSEUDONYM_KEY", "benchmark-key-0123456789")


def spec_with(catalog: dict):
    import yaml

    from pipelines import DEFAULT_SPEC
    from pipelines.loader import parse_spec
    from tests.helpers import strip_traces

    d = strip_traces(yaml.safe_load(DEFAULT_SPEC.read_text()))
    d["storage"]["catalog"] = catalog
    return parse_spec(d)


def timed_write(spec, records: int, max_rows: int | None = None, batch_size: int = 5000) -> dict:
    from sources.generator import EmbeddedSource, MaterializedSource
    from tests.helpers import write_through_sink

    src = MaterializedSource(EmbeddedSource(spec.sources, count=records, seed=42, start_ms=int(time.time() * 1000) - 3_600_000,
                                            rate_per_s=5000.0, batch_size=batch_size))
    n = src.records()
    t = time.perf_counter()
    sink = write_through_sink(spec, src, max_rows)
    secs = time.perf_counter() - t
    return {"records": n, "seconds": secs, "records_per_s": n / secs, "commits": sink.stats.commits}


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
    args = ap.parse_args()
    from infra import postgres, s3, trino
    from runners.query import query, saved_query
    from sinks.maintenance import maintain

    out: dict = {}
    tmp = Path(tempfile.mkdtemp(prefix="obsflow-bench-storage-"))
    s3srv = s3.start()
    pg = postgres.start()
    trino_srv = None
    try:
        def shared(tag: str) -> dict:
            suffix = f"{tag}-{uuid.uuid4().hex[:8]}"
            pg.create_database(f"b_{suffix.replace('-', '_')}")
            s3srv.create_bucket(f"b-{suffix}")
            props = {k: str(v) for k, v in s3srv.pyiceberg_properties().items()}
            return {"name": "obsflow", "uri": pg.sqlalchemy_url_for(f"b_{suffix.replace('-', '_')}"),
                    "warehouse": f"s3://b-{suffix}/warehouse", "properties": props}

        # 1. throughput, local files vs S3 + PostgreSQL
        out["write_local"] = timed_write(spec_with({"warehouse": str(tmp / "local")}), args.records)
        s3_catalog = shared("write")
        s3_spec = spec_with(s3_catalog)
        out["write_s3"] = timed_write(s3_spec, args.records)
        for k in ("write_local", "write_s3"):
            print(f"{k:14s} {out[k]['records_per_s']:>10,.0f} records/s  ({out[k]['commits']} commits)", flush=True)

        # 2. maintenance after many small commits
        m_spec = spec_with(shared("maint"))
        # logs only (partitioned by day and service): a commit of 8 lines writes ~4 files
        m_spec = m_spec.model_copy(update={"sources": [x for x in m_spec.sources if x.name == "logs"],
                                           "flows": [f for f in m_spec.flows if f.source == "logs"]})
        per_commit = 8
        timed_write(m_spec, args.small_commits * per_commit // 4, max_rows=per_commit, batch_size=per_commit)
        from sinks.catalog import open_catalog

        table = open_catalog(m_spec.storage).load_table("obs.logs")
        files_before = len(table.inspect.files())
        m = m_spec.storage.maintenance.model_copy(update={"snapshot_max_age": __import__("datetime").timedelta(0),
                                                          "orphan_min_age": __import__("datetime").timedelta(0)})
        m_spec = m_spec.model_copy(update={"storage": m_spec.storage.model_copy(update={"maintenance": m})})
        t = time.perf_counter()
        (rep,) = maintain(m_spec, now=datetime.now(timezone.utc), tables=["logs"], steps=("compact", "expire", "orphans"))
        secs = time.perf_counter() - t
        out["maintenance"] = {"files_before": files_before, "files_after": rep.files_after, "snapshots_expired": rep.expired_snapshots,
                              "orphans_removed": rep.orphan_files, "seconds": secs}
        print(f"maintenance    {secs:.1f}s for {files_before} data files -> {rep.files_after} "
              f"({rep.expired_snapshots} snapshots expired, {rep.orphan_files} orphan files removed)", flush=True)

        # 3. saved queries in Trino and DuckDB over the S3 tables of step 1
        from pyiceberg.catalog.sql import SqlCatalog

        SqlCatalog("obsflow", uri=s3_catalog["uri"], warehouse=s3_catalog["warehouse"], **s3_catalog["properties"]).engine.dispose()
        trino_srv = trino.start(jdbc_url=pg.jdbc_url_for(s3_catalog["uri"].rsplit("/", 1)[1]), jdbc_user=pg.user,
                                jdbc_password=pg.password, catalog_id="obsflow", warehouse=s3_catalog["warehouse"],
                                s3_endpoint=s3srv.endpoint, s3_access_key=s3srv.access_key, s3_secret_key=s3srv.secret_key,
                                s3_region=s3srv.region, quick_jit=False)
        out["queries"] = {}
        for name in ("funnel_dropoff", "error_rate_by_service", "p99_latency_by_service"):
            sql = saved_query(name)
            try:
                t_trino = best_of(lambda: trino_srv.query(sql, schema="obs"))
                t_duck = best_of(lambda: query(s3_spec, sql))
            except Exception as e:  # p99 needs obs.metrics, which the stateless write path does not fill
                out["queries"][name] = {"error": str(e).splitlines()[0][:200]}
                print(f"{name:24s} not timed: {out['queries'][name]['error']}", flush=True)
                continue
            out["queries"][name] = {"trino_s": t_trino, "duckdb_s": t_duck}
            print(f"{name:24s} trino {t_trino * 1000:8.0f} ms   duckdb {t_duck * 1000:8.0f} ms", flush=True)
    finally:
        if trino_srv is not None:
            trino_srv.stop(remove_data=True)
        pg.stop(remove_data=True)
        s3srv.stop(remove_data=True)
    out["meta"] = {"records": args.records, "load_avg_1m": os.getloadavg()[0], "cpus": os.cpu_count()}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
