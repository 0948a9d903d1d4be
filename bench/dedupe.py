"""CPU cost of the events flow's ``event_id`` dedupe per record, with a baseline from the
same run, and the memory an id held costs.

On the generator's product events (5,000-record raw batches, 4 partitions), the whole
events flow (``PipelineGraph.process``: decode, validate, scrub, enrich, shape, dedupe)
timed in CPU seconds of this process (``time.process_time``), rounds interleaved:
- ``off``: the flow with ``{kind: dedupe, enabled: false}`` (the path before the dedupe);
- ``on``: the flow as it runs by default (first copies only: every id is new);
- ``retry``: ``on`` with every batch given twice, the second time as a retry (other
  offsets: every record a duplicate), per record of both copies;
- ``step_new`` / ``step_copies``: the dedupe step alone (judge, filter, commit) on the rows
  the flow hands it, every id new / the batches then their retries.
Each round starts from an empty dedupe state (no table to seed from). Then
``tracemalloc``: bytes per id held, for ``--ids`` ids of the door's shape.

Run: ``python bench/dedupe.py [--records 40000] [--rounds 5]``; the last line is JSON."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("OBSFLOW_PSEUDONYM_KEY", "benchmark-key-0123456789")


def _graph(spec, enabled: bool):
    from core.stats import RunStats
    from pipelines.graph import PipelineGraph

    g = PipelineGraph(spec, counters=RunStats())
    flow = g.flows["events"]
    if not enabled:
        flow.dedupe = None
    elif flow.dedupe is not None:
        flow.dedupe.seed = None  # an empty state each round: no table to read
    assert (flow.dedupe is not None) == enabled
    return g


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=40_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--ids", type=int, default=200_000)
    args = ap.parse_args()
    from pipeline_throughput import _source, _spec

    import pyarrow as pa

    from core.batch import INDEX, RawBatch
    from transforms import shape
    from transforms.dedupe import EventDedupe

    spec = _spec(tempfile.mkdtemp(prefix="obsflow-bench-") + "/wh")
    src = _source(spec, args.records, 0.0)
    raws = [b for p in src.partitions() for b in src.batches(p)]
    n = sum(len(r) for r in raws)
    shift = max(r.offsets[-1] for r in raws) + 10
    retries = [
        dataclasses.replace(
            r, offsets=[o + shift for o in r.offsets], timestamps_ms=[t + 2000 for t in r.timestamps_ms]
        )
        for r in raws
    ]

    def run(kind: str) -> tuple[float, int]:
        g = _graph(spec, kind != "off")
        items = raws if kind != "retry" else [x for pair in zip(raws, retries) for x in pair]
        t0 = time.process_time()
        dropped = 0
        for r in items:
            dropped += g.process(r).records_dropped
        return time.process_time() - t0, dropped

    # the step alone, on the rows the flow hands it (decoded ... enriched), every id new / every id a copy
    flow = _graph(spec, False).flows["events"]
    tables = []
    for r in raws:
        b = flow.codec.decode(r)
        for step in flow.pre:
            b = step(b)
        b = shape.to_rows("event", b)
        for step in flow.post:
            b = step(b)
        tables.append(b.table)

    def step_alone(copies: int) -> float:
        d = EventDedupe(600_000, 200_000)
        t0 = time.process_time()
        for k in range(copies):
            for r, t in zip(raws if k == 0 else retries, tables):
                j = d.judge(r, t)
                if j.keep is not None:
                    t.filter(j.keep)
                d.commit(j)
        return 1e6 * (time.process_time() - t0) / (copies * n)

    # warm every lookup (geo, user agents) once, untimed
    _graph(spec, True).process(raws[0])
    best: dict[str, float] = {}
    per_round: list[dict] = []
    for k in range(args.rounds):
        row = {}
        for kind in ("off", "on", "retry") if k % 2 == 0 else ("retry", "on", "off"):
            secs, dropped = run(kind)
            recs = n if kind != "retry" else 2 * n
            assert dropped == (n if kind == "retry" else 0), (kind, dropped)
            row[kind] = 1e6 * secs / recs
            best[kind] = min(best.get(kind, float("inf")), row[kind])
        row["step_new"] = step_alone(1)
        row["step_copies"] = step_alone(2)
        for kind in ("step_new", "step_copies"):
            best[kind] = min(best.get(kind, float("inf")), row[kind])
        per_round.append(row)
        print(f"round {k}: " + ", ".join(f"{kind} {us:.2f} µs/record" for kind, us in row.items()))

    tracemalloc.start()
    d = EventDedupe(600_000, args.ids + 1)
    ids = [f"d-{k:032x}" for k in range(args.ids)]
    raw = RawBatch("events", "ev", 0, [b""] * len(ids), list(range(len(ids))), [1_000] * len(ids))
    table = pa.table({INDEX: pa.array(range(len(ids)), pa.int32()), "event_id": ids})
    before = tracemalloc.get_traced_memory()[0]
    d.commit(d.judge(raw, table))
    del raw, table
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    bytes_per_id = held / args.ids  # the id strings are the door's ("d-" + 32 hex), made before: not counted
    load = os.getloadavg()[0]
    out = {
        "records": n,
        "best_us_per_record": {k: round(v, 3) for k, v in best.items()},
        "dedupe_us_per_record": round(best["on"] - best["off"], 3),
        "rounds": per_round,
        "bytes_per_held_id_excluding_the_string": round(bytes_per_id),
        "string_bytes": sys.getsizeof(ids[0]),
        "load_1m": round(load, 2),
    }
    print(
        f"best of {args.rounds}: off {best['off']:.2f}, on {best['on']:.2f}, retry {best['retry']:.2f} µs/record (CPU); "
        f"dedupe {best['on'] - best['off']:+.2f} µs/record; {bytes_per_id:.0f} B per id held "
        f"(+{sys.getsizeof(ids[0])} B its string); the step alone {best['step_new']:.2f} µs/record (new ids), "
        f"{best['step_copies']:.2f} (first copies then retries, per record of both); 1-minute load {load:.2f}"
    )
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
