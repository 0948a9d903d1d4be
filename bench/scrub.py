"""Cost of scrubbing every stored string, with a baseline from the same run.

On the generator's product events (decoded, validated and shaped as in the pipeline),
each timed over the same tables, best of ``--repeat``:
- ``baseline``: the scrub scope before issue 13 (placeholders in page, target, error
  message and stack; user pseudonyms; IP networks), with today's scrubbing functions;
- ``scrub``: the ``scrub`` step as it runs now (every string column, identifiers,
  maps, user pseudonyms, IP networks);
- ``transforms``: decode → validate → scrub → enrich → shape for the same records.

Run: ``python bench/scrub.py [--records 50000] [--repeat 5]``; the last line is JSON."""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OBSFLOW_PSEUDONYM_KEY", "benchmark-key-0123456789")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=50_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "bench"))
    from pipeline_throughput import _source, _spec

    from core.stats import RunStats
    from pipelines.graph import PipelineGraph
    from transforms import shape

    spec = _spec(tempfile.mkdtemp(prefix="obsflow-bench-") + "/wh")
    src = _source(spec, args.records, 0.01)
    raws = [b for p in src.partitions() for b in src.batches(p)]
    graph = PipelineGraph(spec, counters=RunStats())
    flow = graph.flows["events"]
    shaped = []
    for raw in raws:
        b = flow.codec.decode(raw)
        for step in flow.pre:
            b = step(b)
        shaped.append(shape.to_rows("event", b))
    rows = sum(b.table.num_rows for b in shaped)
    s = flow.scrubber

    def baseline(b):
        t = b.table
        for name in ("page", "target", "error_message", "error_stack"):
            t = t.set_column(t.column_names.index(name), name, s.scrub_text(t.column(name)))
        t = t.append_column("user_pseudonym", s.pseudonymize(t.column("user_id")))
        return t.append_column("client_ip_anon", s.anonymize_ip(t.column("client_ip")))

    def best(fn, items) -> float:
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            for it in items:
                fn(copy.copy(it))
            times.append(time.perf_counter() - t0)
        return min(times)

    out = {"records": src.records(), "rows": rows}
    graph.process(raws[0])
    for name, fn, items in (("baseline", baseline, shaped), ("scrub", s, shaped), ("transforms", graph.process, raws)):
        secs = best(fn, items)
        out[name] = {
            "seconds": round(secs, 4),
            "rows_per_s": round(rows / secs),
            "us_per_row": round(1e6 * secs / rows, 2),
        }
        print(f"{name:<11} {secs:8.3f} s  {rows / secs:>12,.0f} rows/s  {1e6 * secs / rows:6.2f} µs/row")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
