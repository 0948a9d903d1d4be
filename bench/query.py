"""How long `obsflow query` takes for a one-row query, next to a same-run baseline: a bare
Python process that imports DuckDB, loads the Iceberg and Avro extensions and runs
``iceberg_scan`` on the table's metadata file (the floor for any DuckDB reader).

    python bench/query.py [--warehouse .obsflow/warehouse] [--table events] [--runs 5]

Runs alternate (baseline, obsflow cold, obsflow warm), each a new process; the cold run
empties the spec cache first, so it also pays the whole spec validation."""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BARE = """
import glob, os, sys
import duckdb, duckdb_extension_avro, duckdb_extension_iceberg
def ext(m): return glob.glob(os.path.join(os.path.dirname(m.__file__), "extensions", "*", "*.duckdb_extension"))[0]
con = duckdb.connect()
con.execute(f"LOAD '{ext(duckdb_extension_avro)}'"); con.execute(f"LOAD '{ext(duckdb_extension_iceberg)}'")
print(con.execute(f"SELECT * FROM iceberg_scan('{sys.argv[1]}') LIMIT 1").fetchall()[0][0])
"""


def timed(argv: list[str], env: dict) -> float:
    t = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True, env=env)
    return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--warehouse", default=".obsflow/warehouse")
    ap.add_argument("--table", default="events")
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    wh = Path(a.warehouse).resolve()
    loc = (
        sqlite3.connect(f"file:{wh / 'catalog.db'}?mode=ro", uri=True)
        .execute("SELECT metadata_location FROM iceberg_tables WHERE table_name = ?", (a.table,))
        .fetchone()[0]
    )
    cache = tempfile.mkdtemp(prefix="obsflow-bench-cache-")
    env = {**os.environ, "OBSFLOW_CACHE": cache}
    sql = f"SELECT * FROM obs.{a.table} LIMIT 1"
    cli = [sys.executable, "-m", "runners.cli", "query", sql, "--warehouse", str(wh)]
    times: dict[str, list[float]] = {
        "baseline (bare DuckDB iceberg_scan)": [],
        "obsflow query, cold spec cache": [],
        "obsflow query": [],
    }
    names = list(times)
    try:
        for _ in range(a.runs):
            times[names[0]].append(timed([sys.executable, "-c", BARE, loc.removeprefix("file://")], env))
            shutil.rmtree(Path(cache) / "specs", ignore_errors=True)
            times[names[1]].append(timed(cli, env))
            times[names[2]].append(timed(cli, env))
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    print(f"one-row query on {wh} obs.{a.table}, {a.runs} runs each, alternating (median, min .. max):")
    for name, ts in times.items():
        print(f"  {name:<40} {statistics.median(ts):.3f} s  ({min(ts):.3f} .. {max(ts):.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
