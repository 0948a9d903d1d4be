"""Positions: per source partition, the offset below which a stage shard has emitted
everything it received (what the sink records, so that a restart re-reads what a shard
still held).

Guarantees: a batch's first offset is held until the shard says the batch is released
(its rows can no longer be waiting); a partition's position never passes the first
offset of a batch still held; with nothing held it is the next offset after the latest
batch; the global stage's position for a partition is the smallest its upstream shards
reported, and none until every upstream shard reading that topic has reported."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

#: per ``topic:partition``: the batches still held, ``(first_offset, next_offset, release_at)``
Held = dict[str, deque]


def hold_batch(
    held: Held, latest: dict[str, int], tp: str, first_offset: int, next_offset: int, release_at: int
) -> None:
    """Note a batch of ``tp`` that may keep rows until ``release_at`` (the stage's own time scale)."""
    held.setdefault(tp, deque()).append((first_offset, next_offset, release_at))
    latest[tp] = max(latest.get(tp, 0), next_offset)


def held_positions(
    held: Held, latest: dict[str, int], released: Callable[[int], bool], holding: bool = True
) -> dict[str, int]:
    """Drop the batches at the head of each partition's queue whose ``release_at`` is
    ``released``, then the partition's position: the first offset of the oldest batch
    still held, else the latest next offset. ``holding=False`` (the shard holds no rows at
    all) releases every batch."""
    out = {}
    for tp, q in held.items():
        while q and released(q[0][2]):
            q.popleft()
        if not holding:
            q.clear()
        out[tp] = q[0][0] if q else latest[tp]
    return out


def upstream_positions(
    reports: dict[tuple[str, int], dict[str, int]], upstream: dict[str, tuple[int, tuple]]
) -> dict[str, int]:
    """Per partition, the smallest position the upstream shards reported (``reports``:
    (stage, shard) -> positions; ``upstream``: stage -> (shards, topics)); a partition is
    left out until every shard of every upstream stage reading its topic has reported it."""
    out: dict[str, int] = {}
    tps = {tp for rep in reports.values() for tp in rep}
    for tp in tps:
        topic = tp.rsplit(":", 1)[0]
        vals: list[int | None] = []
        for stage, (shards, topics) in upstream.items():
            if topic in topics:
                vals += [reports.get((stage, k), {}).get(tp) for k in range(shards)]
        known = [v for v in vals if v is not None]
        if known and len(known) == len(vals):
            out[tp] = min(known)
    return out
