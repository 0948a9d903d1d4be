"""Stage isolation benchmark: what hosting the stateful stages in
:class:`pipelines.isolate.GuardedStage` (keeps the inputs since its last snapshot, takes a
snapshot of its own every ``REPLAY_LIMIT`` inputs) costs next to the bare stages (baseline,
same run, alternating), on the default spec's stage inputs from the embedded generator.

Run: ``.venv/bin/python bench/stage_isolation.py [--count 40000] [--rounds 2]``; ends with one JSON line."""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

os.environ.setdefault("OBSFLOW_PSEUDONYM_KEY", "bench-key-0123456789abcdef")

from core.stats import RunStats  # noqa: E402
from pipelines.graph import PipelineGraph, plan_stages  # noqa: E402
from pipelines.isolate import GuardedStage  # noqa: E402
from pipelines.stages import make_stage  # noqa: E402
from sources.generator import EmbeddedSource  # noqa: E402


def stage_inputs(count: int) -> tuple[dict, list]:
    from tests.helpers import START_MS, local_spec

    spec = local_spec(tempfile.mkdtemp(), traces=True, metrics=True)
    graph = PipelineGraph(spec, counters=RunStats())
    src = EmbeddedSource(spec.sources, count=count, seed=3, start_ms=START_MS, batch_size=500)
    inputs = [si for p in src.partitions() for b in src.batches(p) for si in graph.process(b).stage_inputs]
    return {d.name: d for d in plan_stages(spec)}, inputs


def run(defs: dict, inputs: list, guarded: bool) -> float:
    """Seconds to feed every input to its shard and flush every shard."""
    stages: dict = {}
    t = time.perf_counter()
    for si in inputs:
        s = stages.get(si.key)
        if s is None:
            d = defs[si.stage]
            s = stages[si.key] = GuardedStage(d, si.shard, counters=RunStats()) if guarded else make_stage(d, si.shard)
        s.process(si)
    for s in stages.values():
        s.flush()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=40_000, help="records per source")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    defs, inputs = stage_inputs(args.count)
    bare, guarded = [], []
    for _ in range(args.rounds):
        bare.append(run(defs, inputs, False))
        guarded.append(run(defs, inputs, True))
        print(f"bare {bare[-1]:.2f}s  guarded {guarded[-1]:.2f}s")
    print(
        json.dumps(
            {
                "inputs": len(inputs),
                "bare_s": min(bare),
                "guarded_s": min(guarded),
                "overhead": round(min(guarded) / min(bare) - 1, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
