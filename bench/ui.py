"""Each panel of ``obsflow ui``: the server's time for its API answer (cold: first request,
the SQL runs; warm: the same request again, answered from the snapshot-keyed cache) next to
the bare DuckDB time of the same SQL (the test's kind of connection: extensions loaded, a
view per table), in the same run, on a demo warehouse.

    python bench/ui.py [--warehouse DIR] [--count 3000] [--runs 3]

Without --warehouse, builds one with ``obsflow run --count N --dev-key`` in a temp dir.
Starts ``obsflow ui --port 0`` as its own process and stops it at the end. Prints a table
(best of ``--runs`` per column, in ms) and the target: <= 300 ms per panel."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PAGES = ["health", "services", "traces", "logs", "alerts", "product", "sessions"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--warehouse")
    ap.add_argument("--count", type=int, default=3000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    tmp = None
    wh = args.warehouse
    if wh is None:
        tmp = tempfile.TemporaryDirectory()
        wh = str(Path(tmp.name) / "warehouse")
        subprocess.run([sys.executable, "-m", "runners.cli", "run", "--count", str(args.count), "--dev-key", "--warehouse", wh],
                       check=True, capture_output=True, env=env, cwd=ROOT)
    from pipelines import DEFAULT_SPEC
    from runners.query import connect
    from ui.server import load

    con = connect(load(str(DEFAULT_SPEC), wh))
    con.execute("SET TimeZone = 'UTC'")
    proc = subprocess.Popen([sys.executable, "-m", "runners.cli", "ui", "--warehouse", wh, "--port", "0"],
                            stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    try:
        url = proc.stdout.readline().split()[2].rstrip("/")
        for _ in range(100):
            try:
                requests.get(url + "/api/v1", timeout=5)
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        rows = []
        for page in PAGES:
            listing = requests.get(f"{url}/api/v1/{page}", params={"range": "all"}, timeout=60).json()
            for p in listing["panels"]:
                cold, warm, bare = [], [], []
                for i in range(args.runs):
                    t = time.perf_counter()  # fresh=1: the server runs the SQL again (no cache)
                    requests.get(f"{url}/api/v1/{page}/{p['id']}", params={"range": "all", "fresh": "1"}, timeout=60)
                    cold.append(time.perf_counter() - t)
                    t = time.perf_counter()
                    requests.get(f"{url}/api/v1/{page}/{p['id']}", params={"range": "all"}, timeout=60)
                    warm.append(time.perf_counter() - t)
                    if p["sql"]:
                        t = time.perf_counter()
                        con.execute(p["sql"] + f"\n-- run {i} {time.time()}").fetchall()
                        bare.append(time.perf_counter() - t)
                rows.append((f"{page}/{p['id']}", min(cold) * 1000, min(warm) * 1000, min(bare) * 1000 if bare else None,
                             p["row_count"]))
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        if tmp is not None:
            tmp.cleanup()
    print(f"{'panel':42} {'server (ms)':>12} {'cached (ms)':>12} {'bare DuckDB (ms)':>17} {'rows':>6}")
    for name, cold, warm, bare, n in rows:
        print(f"{name:42} {cold:12.1f} {warm:12.1f} {'' if bare is None else f'{bare:.1f}':>17} {n:6}")
    worst = max(r[1] for r in rows)
    print(f"\nworst panel (server, uncached): {worst:.1f} ms; target <= 300 ms: {'met' if worst <= 300 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
