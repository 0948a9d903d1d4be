"""Throughput and peak memory of the pipeline on product events, with baselines from the
same run.

Measured, each in its own process (so peak RSS is that measurement's own):
- ``json_decode``   baseline: ``orjson.loads`` of every record, nothing else;
- ``parquet_write`` baseline: ``pyarrow.parquet.write_table`` of the finished event rows;
- ``transforms``    decode → validate → scrub → enrich → shape, the transforms alone
                    (with the generator's 1% malformed records, and on clean input);
- ``bytewax`` / ``beam``: the whole job on each runner into local Iceberg tables.
Records are generated before the clock starts and replayed from memory. Figures are
input records (app envelopes) per second and event rows (interactions) per second.

Run: ``python bench/pipeline_throughput.py [--records 200000]``. The last line of the
output is one JSON object with every figure."""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OBSFLOW_PSEUDONYM_KEY", "benchmark-key-0123456789")

START_MS = 1_763_000_000_000


def _spec(warehouse: str):
    import yaml

    from pipelines import DEFAULT_SPEC
    from pipelines.loader import parse_spec

    d = yaml.safe_load(DEFAULT_SPEC.read_text())
    d["storage"]["catalog"]["warehouse"] = warehouse
    d["sources"] = [s for s in d["sources"] if s["name"] == "events"]
    d["flows"] = [f for f in d["flows"] if f["source"] == "events"]
    for key in ("alerts",):  # only the product-event flow is measured here
        d.pop(key, None)
    for f in d["flows"]:  # decode → validate → scrub → enrich → Iceberg: the stateless path
        f["steps"] = [st for st in f["steps"] if st["kind"] in ("validate", "scrub", "enrich")]
    return parse_spec(d)


def _source(spec, records: int, bad: float):
    from sources.generator import EmbeddedSource, MaterializedSource

    return MaterializedSource(
        EmbeddedSource(
            spec.sources,
            count=records,
            seed=42,
            start_ms=START_MS,
            rate_per_s=5000.0,
            bad_fraction=bad,
            batch_size=5000,
        )
    )


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def measure(part: str, records: int) -> dict:
    tmp = tempfile.mkdtemp(prefix="obsflow-bench-")
    spec = _spec(tmp + "/wh")
    bad = 0.0 if part == "transforms_clean" else 0.01
    src = _source(spec, records, bad)
    batches = [b for p in src.partitions() for b in src.batches(p)]
    n = sum(len(b) for b in batches)
    base_mb = _peak_mb()
    if part == "json_decode":
        import orjson

        t = time.perf_counter()
        for b in batches:
            for v in b.values:
                try:
                    orjson.loads(v)
                except Exception:
                    pass
        secs = time.perf_counter() - t
        return {"records": n, "seconds": secs, "records_per_s": n / secs, "peak_mb": _peak_mb()}
    from core.stats import RunStats
    from pipelines.graph import PipelineGraph

    if part in ("transforms", "transforms_clean", "parquet_write"):
        graph = PipelineGraph(spec, counters=RunStats())
        graph.process(batches[0])  # warm caches and lazy imports outside the clock
        t = time.perf_counter()
        outs = [graph.process(b) for b in batches]
        secs = time.perf_counter() - t
        rows = sum(o.rows["events"].num_rows for o in outs)
        if part != "parquet_write":
            return {
                "records": n,
                "rows": rows,
                "seconds": secs,
                "records_per_s": n / secs,
                "rows_per_s": rows / secs,
                "peak_mb": _peak_mb(),
                "dead": sum(o.records_dead for o in outs),
            }
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.concat_tables([o.rows["events"] for o in outs])
        t = time.perf_counter()
        pq.write_table(table, tmp + "/events.parquet", compression="zstd")
        secs = time.perf_counter() - t
        return {"rows": table.num_rows, "seconds": secs, "rows_per_s": table.num_rows / secs, "peak_mb": _peak_mb()}
    from runners.job import RunRequest
    from runners.stats import STATS

    req = RunRequest(spec=spec, runner=part, count=records, source_override=src)
    if part == "bytewax":
        from runners.bytewax.run import run
    else:
        from runners.beam.run import run
    STATS.reset()
    t = time.perf_counter()
    run(req)
    secs = time.perf_counter() - t
    assert STATS.records_in == n, (STATS.records_in, n)
    rows = STATS.rows_by_table.get("events", 0)
    return {
        "records": n,
        "rows": rows,
        "seconds": secs,
        "records_per_s": n / secs,
        "rows_per_s": rows / secs,
        "peak_mb": _peak_mb(),
        "source_mb": base_mb,
        "commits": STATS.commits,
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--part")
    args = ap.parse_args()
    if args.part:
        print(json.dumps(measure(args.part, args.records)))
        return 0
    results: dict[str, dict] = {}
    for part in ("json_decode", "transforms", "transforms_clean", "parquet_write", "bytewax", "beam"):
        out = subprocess.run(
            [sys.executable, __file__, "--part", part, "--records", str(args.records)],
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
        if out.returncode != 0:
            print(out.stderr[-3000:], file=sys.stderr)
            results[part] = {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "failed"}
            continue
        results[part] = json.loads(out.stdout.strip().splitlines()[-1])
        r = results[part]
        rate = f"{r['records_per_s']:>10,.0f} records/s" if "records_per_s" in r else " " * 21
        rows = f"{r['rows_per_s']:>10,.0f} rows/s" if "rows_per_s" in r else ""
        print(f"{part:18s}{rate}  {rows:>18s}  peak {r['peak_mb']:,.0f} MB", flush=True)
    load = os.getloadavg()[0]
    print(f"(1-minute load average during the run: {load:.1f} on {os.cpu_count()} cores)")
    results["meta"] = {"records": args.records, "load_avg_1m": load, "cpus": os.cpu_count()}
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
