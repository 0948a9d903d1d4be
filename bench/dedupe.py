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

With ``--baseline REV``: the ``EventDedupe`` of ``transforms/dedupe.py`` at git revision
``REV`` against this tree's, in the same process, rounds interleaved: the step alone (as
above), the step at its bound (``--bound`` ids held, 5,000-id batches of new ids, every
commit evicting 5,000: CPU per record once full), and ``tracemalloc`` bytes per id held.
This tree's store also at ``--big`` ids held (its default bound), the baseline not (about
210 bytes an id).

With ``--digesters``: the step alone (new ids, first copies then retries, at ``--bound``
ids held) and the digests alone (``transforms.dedupe_store.array_digests`` of each batch's
``event_id`` column, as the step computes them),
with the ids' digests computed by the native extension (``obsflow_native.id_digests``)
against the Python reference (``hashlib.blake2b``), alternating within each round in
this process (the tables are decoded before: only the dedupe's digests change).

Run: ``python bench/dedupe.py [--records 40000] [--rounds 5] [--baseline REV] [--digesters]``;
the last line is JSON."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import subprocess
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
    ap.add_argument("--baseline", default=None, help="git revision whose EventDedupe to measure beside this tree's")
    ap.add_argument("--bound", type=int, default=200_000)
    ap.add_argument("--big", type=int, default=3_000_000)
    ap.add_argument("--digesters", action="store_true", help="the step with native digests against hashlib's")
    ap.add_argument(
        "--digests-only",
        action="store_true",
        help="only array_digests of 5,000-id batches (compare builds by PYTHONPATH)",
    )
    args = ap.parse_args()
    if args.digests_only:
        return _digests_only(args.rounds)
    from pipeline_throughput import _source, _spec

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
        return _step_alone(EventDedupe, raws, retries, tables, copies)

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

    bytes_per_id = _bytes_per_id(EventDedupe, args.ids)  # in Arrow before; what the step keeps counts
    load = os.getloadavg()[0]
    out = {
        "records": n,
        "best_us_per_record": {k: round(v, 3) for k, v in best.items()},
        "dedupe_us_per_record": round(best["on"] - best["off"], 3),
        "rounds": per_round,
        "bytes_per_held_id_excluding_the_string": round(bytes_per_id, 1),
        "load_1m": round(load, 2),
    }
    print(
        f"best of {args.rounds}: off {best['off']:.2f}, on {best['on']:.2f}, retry {best['retry']:.2f} µs/record (CPU); "
        f"dedupe {best['on'] - best['off']:+.2f} µs/record; {bytes_per_id:.1f} B per id held; the step alone {best['step_new']:.2f} µs/record (new ids), "
        f"{best['step_copies']:.2f} (first copies then retries, per record of both); 1-minute load {load:.2f}"
    )
    if args.baseline:
        out["against_baseline"] = against(args, raws, retries, tables)
    if args.digesters:
        out["by_digester"] = by_digester(args, raws, retries, tables)
    print(json.dumps(out))
    return 0


def _digests_only(rounds: int) -> int:
    """CPU ns an id of ``array_digests`` (the obsflow_native first on ``sys.path``) over 5,000
    UUID-shaped ids, ten batches a round, best of ``rounds``."""
    import uuid

    import obsflow_native
    import pyarrow as pa

    from transforms.dedupe_store import array_digests, digester

    assert digester() == "native", "obsflow_native without id_digests_arrow"
    ids = pa.array([str(uuid.UUID(int=k * 2654435761 + 17)) for k in range(5_000)])
    best = float("inf")
    for _ in range(rounds):
        t0 = time.process_time()
        for _ in range(10):
            array_digests(ids)
        best = min(best, 1e9 * (time.process_time() - t0) / (10 * len(ids)))
    load = os.getloadavg()[0]
    print(json.dumps({"build": os.path.dirname(obsflow_native.__file__), "ns_per_id": round(best, 1), "load_1m": load}))
    return 0


def _step_alone(cls: type, raws: list, retries: list, tables: list, copies: int) -> float:
    """CPU µs per record of ``cls``'s step (judge, filter, commit) on ``tables`` (the rows of
    ``raws``), the first copies then ``copies - 1`` rounds of their retries."""
    d = cls(600_000, 200_000)
    t0 = time.process_time()
    for k in range(copies):
        for r, t in zip(raws if k == 0 else retries, tables):
            j = d.judge(r, t)
            if j.keep is not None:
                t.filter(j.keep)
            d.commit(j)
    return 1e6 * (time.process_time() - t0) / (copies * sum(len(r) for r in raws))


def _baseline_class(rev: str) -> type:
    """``EventDedupe`` of ``transforms/dedupe.py`` at git revision ``rev``, with the id store
    of ``transforms/dedupe_store.py`` at ``rev`` where that revision has one."""
    store = _module_at(rev, "transforms/dedupe_store.py", "dedupe_store_baseline")
    text = _text_at(rev, "transforms/dedupe.py")
    if store is not None:
        text = text.replace("from transforms.dedupe_store import", "from dedupe_store_baseline import")
    return _load("dedupe_baseline", text).EventDedupe


def _text_at(rev: str, path: str) -> str:
    return subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{rev}:{path}"], check=True, capture_output=True, text=True
    ).stdout


def _module_at(rev: str, path: str, name: str):
    """The module ``path`` at ``rev``, loaded as ``name`` (None when ``rev`` has no such file)."""
    try:
        text = _text_at(rev, path)
    except subprocess.CalledProcessError:
        return None
    return _load(name, text)


def _load(name: str, text: str):
    path = Path(tempfile.mkdtemp(prefix="obsflow-dedupe-")) / f"{name}.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def _door_ids(count: int, batch: int):
    """``count`` door-shaped ids in raw batches of ``batch`` (one row each), record times 1 ms apart."""
    import pyarrow as pa

    from core.batch import INDEX, RawBatch

    ids = pa.array([f"d-{k:032x}" for k in range(count)])
    index = pa.array(range(batch), pa.int32())
    for first in range(0, count, batch):
        k = min(batch, count - first)
        raw = RawBatch("events", "ev", 0, [b""] * k, list(range(first, first + k)), list(range(first, first + k)))
        yield raw, pa.table({INDEX: index.slice(0, k), "event_id": ids.slice(first, k)})


def _at_bound(cls: type, bound: int, batches: list) -> tuple[float, int]:
    """CPU µs per record of the step (judge, commit) once ``bound`` ids are held: the batches
    after the first ``bound`` ids, each evicting as many as it adds."""
    d = cls(600_000_000, bound)
    t0, timed = 0.0, 0
    for raw, table in batches:
        full = d.held("ev", 0) >= bound
        if full and not timed:
            t0 = time.process_time()
        j = d.judge(raw, table)
        d.commit(j)
        if full:
            timed += len(raw)
    return 1e6 * (time.process_time() - t0) / max(timed, 1), d.held("ev", 0)


def _bytes_per_id(cls: type, count: int) -> float:
    batches = list(
        _door_ids(count, 5_000)
    )  # ids in Arrow, made before: what the step keeps counts (the str a dict keeps, too)
    d = cls(600_000_000, count)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for raw, table in batches:
        d.commit(d.judge(raw, table))
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert d.held("ev", 0) == count
    return held / count


def against(args, raws, retries, tables) -> dict:
    """This tree's ``EventDedupe`` beside the one at ``args.baseline``, rounds interleaved."""
    from transforms.dedupe import EventDedupe

    classes = {"baseline": _baseline_class(args.baseline), "compact": EventDedupe}

    def step_alone(cls: type, copies: int) -> float:
        return _step_alone(cls, raws, retries, tables, copies)

    flowing = list(_door_ids(args.bound + 100_000, 5_000))
    big = list(_door_ids(args.big + 100_000, 5_000))
    best: dict[str, float] = {}
    for k in range(args.rounds):
        names = list(classes) if k % 2 == 0 else list(reversed(classes))
        row = {}
        for name in names:
            cls = classes[name]
            row[f"{name}_new"] = step_alone(cls, 1)
            row[f"{name}_copies"] = step_alone(cls, 2)
            row[f"{name}_at_{args.bound}"], held = _at_bound(cls, args.bound, flowing)
            assert held == args.bound, (name, held)
        for key, us in row.items():
            best[key] = min(best.get(key, float("inf")), us)
        print(f"round {k} (µs/record, CPU): " + ", ".join(f"{key} {us:.2f}" for key, us in row.items()))
    us_big, held_big = _at_bound(EventDedupe, args.big, big)
    assert held_big == args.big
    memory = {name: _bytes_per_id(cls, args.ids) for name, cls in classes.items()}
    memory_big = _bytes_per_id(EventDedupe, args.big)
    load = os.getloadavg()[0]
    print(
        f"best of {args.rounds} (µs/record, CPU): "
        + ", ".join(f"{key} {us:.2f}" for key, us in best.items())
        + f"; compact at {args.big} ids held {us_big:.2f}"
    )
    print(
        f"bytes per id held ({args.ids} ids, tracemalloc, what the step keeps, a str it keeps included): baseline "
        f"{memory['baseline']:.0f}, compact {memory['compact']:.1f}; compact at {args.big}: {memory_big:.1f}; "
        f"1-minute load {load:.2f}"
    )
    return {
        "best_us_per_record": {k: round(v, 3) for k, v in best.items()},
        f"compact_us_per_record_at_{args.big}": round(us_big, 3),
        "bytes_per_id": {k: round(v, 1) for k, v in memory.items()},
        f"compact_bytes_per_id_at_{args.big}": round(memory_big, 1),
        "load_1m": round(load, 2),
    }


def by_digester(args, raws, retries, tables) -> dict:
    """This tree's ``EventDedupe`` with native digests beside Python's, rounds interleaved
    (``$OBSFLOW_DECODER`` chooses: the tables are already decoded)."""
    from transforms.dedupe import EventDedupe
    from transforms.dedupe_store import array_digests, digester

    columns = [t.column("event_id").drop_null() for t in tables]
    n_ids = sum(len(c) for c in columns)
    flowing = list(_door_ids(args.bound + 100_000, 5_000))
    best: dict[str, float] = {}
    for k in range(args.rounds):
        row = {}
        for name in ("native", "python") if k % 2 == 0 else ("python", "native"):
            os.environ["OBSFLOW_DECODER"] = name
            assert digester() == name, "obsflow_native without id_digests: build native/ first"
            t0 = time.process_time()
            for c in columns:
                array_digests(c)
            row[f"{name}_digests"] = 1e6 * (time.process_time() - t0) / n_ids
            row[f"{name}_new"] = _step_alone(EventDedupe, raws, retries, tables, 1)
            row[f"{name}_copies"] = _step_alone(EventDedupe, raws, retries, tables, 2)
            row[f"{name}_at_{args.bound}"], held = _at_bound(EventDedupe, args.bound, flowing)
            assert held == args.bound, (name, held)
        os.environ.pop("OBSFLOW_DECODER")
        for key, us in row.items():
            best[key] = min(best.get(key, float("inf")), us)
        print(f"round {k} by digester (µs/record, CPU): " + ", ".join(f"{key} {us:.3f}" for key, us in row.items()))
    load = os.getloadavg()[0]
    print(
        f"best of {args.rounds} by digester (µs/record, CPU): "
        + ", ".join(f"{key} {us:.3f}" for key, us in best.items())
        + f"; 1-minute load {load:.2f}"
    )
    return {"best_us_per_record": {k: round(v, 3) for k, v in best.items()}, "ids": n_ids, "load_1m": round(load, 2)}


if __name__ == "__main__":
    raise SystemExit(main())
