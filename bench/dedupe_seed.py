"""CPU cost of seeding one partition's ``event_id`` dedupe from the table after a restart,
with a baseline from the same run.

The seed reads a partition's rows (``event_id``, ``ingested_at``, ``source_offset``) from
the flow's table and hands them to :class:`transforms.dedupe.EventDedupe`, which digests
and holds them. Timed here, on an in-memory Arrow table of ``--ids`` door-shaped ids
(what the scan returns; the scan itself is the same on both sides and not timed):

- ``baseline``: the seed as it was at ``--baseline REV`` (the ids and times made into a
  Python list of ``(str, int)`` pairs, then digested from the list by that revision's
  ``EventDedupe``);
- ``this tree``: :class:`pipelines.dedupe_seed.TableSeed`'s conversion of the same table
  (Arrow columns, no Python objects per id) and this tree's ``EventDedupe``.

Rounds alternate in this process; CPU time (``time.process_time``), best round. Both sides
must hold the same number of ids afterwards (checked).

Run: ``python bench/dedupe_seed.py --baseline REV [--ids 1000000] [--rounds 5]``; the last
line is JSON."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pyarrow as pa  # noqa: E402

from bench.dedupe import _baseline_class  # noqa: E402
from core.batch import RawBatch  # noqa: E402
from transforms.dedupe import EventDedupe  # noqa: E402

MIN = 60_000


def _scanned(count: int) -> pa.Table:
    """What the seed's table scan returns for ``count`` door-shaped ids, one row each."""
    return pa.table(
        {
            "event_id": pa.array([f"d-{k:032x}" for k in range(count)]),
            "ingested_at": pa.array(
                [1_700_000_000_000_000 + 1000 * k for k in range(count)], pa.timestamp("us", "UTC")
            ),
            "source_offset": pa.array(range(count), pa.int64()),
        }
    )


def _old_rows(rows: pa.Table) -> list[tuple[str, int]]:
    """The baseline's conversion (the seed before it returned Arrow columns)."""
    rows = rows.sort_by([("source_offset", "ascending")])
    ms = rows.column("ingested_at").cast("int64").to_pylist()
    return [(e, m // 1000) for e, m in zip(rows.column("event_id").to_pylist(), ms) if e is not None]


def _new_rows(rows: pa.Table) -> pa.Table:
    """This tree's conversion (``TableSeed._read`` after the scan)."""
    import pyarrow.compute as pc

    rows = rows.filter(pc.is_valid(rows.column("event_id")))
    rows = rows.sort_by([("source_offset", "ascending")])
    us = rows.column("ingested_at").cast(pa.int64()).to_numpy()
    return pa.table({"event_id": rows.column("event_id").cast(pa.string()), "ms": pa.array(us // 1000)})


def _seed_once(cls: type, convert, scanned: pa.Table, count: int) -> tuple[float, int]:
    """CPU seconds to convert ``scanned`` and seed a fresh dedupe from it; ids held after."""
    t0 = time.process_time()
    d = cls(10_000 * MIN, count + 1, lambda *a: convert(scanned))
    last_ms = 1_700_000_000_000 + count
    raw = RawBatch("events", "ev", 0, [b"{}"], [count], [last_ms], read_from=count)
    d.prepare(raw)
    spent = time.process_time() - t0
    del raw
    return spent, d.held("ev", 0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--baseline", required=True, help="git revision whose EventDedupe seeds from a list")
    ap.add_argument("--ids", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    old_cls = _baseline_class(a.baseline)
    scanned = _scanned(a.ids)
    best = {"baseline": float("inf"), "this tree": float("inf")}
    held = {}
    for _ in range(a.rounds):
        for name, cls, convert in (("baseline", old_cls, _old_rows), ("this tree", EventDedupe, _new_rows)):
            spent, held[name] = _seed_once(cls, convert, scanned, a.ids)
            best[name] = min(best[name], spent)
    if held["baseline"] != held["this tree"]:
        raise SystemExit(f"ids held differ: {held}")
    load = os.getloadavg()[0]
    for name, s in best.items():
        print(f"{name:>10}: {s:.3f} s CPU to seed {a.ids:,} ids ({1e9 * s / a.ids:.0f} ns an id)")
    print(f"ratio {best['baseline'] / best['this tree']:.2f}x, ids held {held['this tree']:,}, load {load:.1f}")
    print(json.dumps({"ids": a.ids, "seconds": best, "held": held["this tree"], "load": load}))


if __name__ == "__main__":
    main()
