"""Sharding of a stage's rows: which shard a row goes to and the per-shard split.

Guarantees: a trace's rows all go to one shard (the trace id's first 32 bits modulo the
shard count); rows without a trace id go to the given fallback shard; the split keeps
each shard's rows in their input order and returns exactly ``shards`` tables."""

from __future__ import annotations

import numpy as np
import pyarrow as pa


def trace_shards(trace_ids: pa.Array, shards: int, fallback: int) -> np.ndarray:
    """Shard of each row: from the trace id's first 32 bits; rows without one go to ``fallback``."""
    ids = trace_ids.to_pylist()
    out = np.full(len(ids), fallback % shards, dtype=np.int64)
    for i, t in enumerate(ids):
        if t:
            out[i] = int(t[:8], 16) % shards
    return out


def split_by_shard(table: pa.Table, shard_of: np.ndarray, shards: int) -> list[pa.Table]:
    if table.num_rows == 0:
        return [table] * shards
    order = np.argsort(shard_of, kind="stable")
    counts = np.bincount(shard_of, minlength=shards)
    sorted_t = table.take(pa.array(order))
    out, start = [], 0
    for c in counts:
        out.append(sorted_t.slice(start, int(c)))
        start += int(c)
    return out
