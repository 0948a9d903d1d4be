#!/usr/bin/env python
"""Run from the repo root: OBSFLOW_PSEUDONYM_KEY=... PYTHONPATH=. python bench/trace_stage_event_time.py [label]

Trace stage (+ global RED merge) throughput on the event-time model: spans + logs through
PipelineGraph and the stages (tests/groundtruth/sim.py), interleaved order."""

import sys
import time
from tests.groundtruth.test_event_time import model, ordered, keys
from tests.groundtruth.sim import StageHost, spans_logs_spec

parts, spans = model(minutes=30, per_minute=200)
batches = ordered(parts, "interleaved", size=200)
n = sum(len(b) for b in batches)
t = time.perf_counter()
host = StageHost(spans_logs_spec("/tmp/sbw", shards=4), keys())
for b in batches:
    host.feed(b)
host.flush()
dt = time.perf_counter() - t
print(f"{sys.argv[1] if len(sys.argv) > 1 else 'run'}: {n} records in {dt:.2f}s = {n / dt:,.0f} records/s")
