"""Bounded ``event_id`` dedupe of product events, per source partition.

A retried door request whose first attempt Kafka had committed (the answer was lost: a
client timeout, a cut connection, the collector killed after the commit) writes the same
envelopes again, with the same ``event_id`` s, to the same partition (the door keys
product events by session id). :class:`EventDedupe` recognises such a copy and the flow
drops it (reason ``duplicate``), so the table holds each envelope once.

The rule, per ``topic:partition`` and exact for the records of that partition in offset
order: an accepted record is a *duplicate* when an earlier accepted record carried the
same ``event_id``, at most ``window_ms`` before it in Kafka record time, and that id is
still held: ids older than the partition's newest record time minus ``window_ms`` are
forgotten, and at most ``max_ids`` are held (the oldest go first). A duplicate's rows are
all dropped; a copy beyond the bound is a new first copy.

State across restarts: the ids are seeded from the table (``seed``: the rows of the
partition below the batch's first offset, no older than the batch's oldest record time
minus ``window_ms``), whenever a partition's batch does not follow the last batch this
object took of it (the first batch after a start, a rewind, or a reader that moved to
another worker in between: ``RawBatch.read_from``). The table holds exactly the first
copies of the records below the position the run resumes from, so after a restart a
replayed record gets the verdict it got before.

Two-phase: :meth:`EventDedupe.judge` decides a batch without changing the state;
:meth:`EventDedupe.commit` applies a judged batch once the flow produced its output (a
batch that raised and is bisected by ``pipelines.isolate`` is judged again, part by part).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core.batch import INDEX, RawBatch

#: the reason a duplicate is counted under (``FlowOutput.dropped_by_reason``)
DUPLICATE = "duplicate"

#: ``(topic, partition, before_offset, since_ms) -> [(event_id, record time ms)]`` in offset
#: order: the first copies the table holds of that partition below ``before_offset``
Seed = Callable[[str, int, int, int], list[tuple[str, int]]]


@dataclass
class _Partition:
    """The ids held for one partition: ``ids`` (event_id → record time ms of the copy that
    counts as first), ``order`` (``(ms, event_id)`` in the order taken, for eviction; an
    entry whose id was taken again later is stale and skipped), the newest record time
    and the offset after the last record taken."""

    ids: dict[str, int] = field(default_factory=dict)
    order: deque = field(default_factory=deque)
    high_ms: int = -(1 << 62)
    next_offset: int = -1


@dataclass
class Judged:
    """One batch's verdicts (:meth:`EventDedupe.judge`): the rows to keep, the duplicate
    records, and the state change :meth:`EventDedupe.commit` applies."""

    key: str
    keep: pa.Array | None  # boolean mask over the table's rows (None: keep all)
    duplicates: int
    part: _Partition  # the partition's state to build on (the held one, or a fresh seed)
    added: dict[str, int]  # new first copies: event_id -> record time ms, in offset order
    high_ms: int
    next_offset: int


class EventDedupe:
    """The dedupe state of one flow (every partition it reads). Guarantees: see the module
    docstring; never drops a record whose ``event_id`` no earlier record of its partition
    carried, and never drops a record because of a later one."""

    def __init__(self, window_ms: int, max_ids: int, seed: Seed | None = None):
        self.window_ms = window_ms
        self.max_ids = max_ids
        self.seed = seed
        self._parts: dict[str, _Partition] = {}
        self.seeded = 0  # partitions seeded from the table (a restart, a rewind, a moved reader)

    def held(self, topic: str, partition: int) -> int:
        """Ids held for ``topic:partition``."""
        p = self._parts.get(f"{topic}:{partition}")
        return len(p.ids) if p is not None else 0

    def prepare(self, raw: RawBatch) -> None:
        """Seed the partition of ``raw`` from the table if ``raw`` does not follow the last
        batch taken of it. Outside the flow's record isolation: a table that cannot be read
        fails the batch (the engine retries or the run stops), it never dead-letters records."""
        if raw.offsets:
            self._parts[f"{raw.topic}:{raw.partition}"] = self._state(raw)

    def _state(self, raw: RawBatch) -> _Partition:
        key = f"{raw.topic}:{raw.partition}"
        p = self._parts.get(key)
        first = raw.offsets[0]
        if p is not None and first >= p.next_offset and (raw.read_from < 0 or raw.read_from <= p.next_offset):
            return p  # follows the last batch taken (or the seed :meth:`prepare` made for it)
        fresh = _Partition(next_offset=first)
        if self.seed is not None:
            since = min(raw.timestamps_ms) - self.window_ms
            for eid, ms in self.seed(raw.topic, raw.partition, first, since):
                if eid not in fresh.ids:
                    fresh.ids[eid] = ms
                    fresh.order.append((ms, eid))
                    fresh.high_ms = max(fresh.high_ms, ms)
            self.seeded += 1
            self._evict(fresh)
        return fresh

    def judge(self, raw: RawBatch, table: pa.Table) -> Judged:
        """The verdicts for ``table`` (rows of ``raw`` still accepted, with ``_i`` and
        ``event_id`` columns), without changing the state."""
        key = f"{raw.topic}:{raw.partition}"
        if not raw.offsets:
            return Judged(key, None, 0, self._parts.get(key) or _Partition(), {}, -(1 << 62), -1)
        part = self._state(raw)
        ids = part.ids
        window = self.window_ms
        stamps = raw.timestamps_ms
        added: dict[str, int] = {}
        dup_index: list[int] = []
        if table.num_rows:
            # one verdict per envelope, in offset order: its first row (further rows are its other interactions)
            index, first_rows = np.unique(table.column(INDEX).to_numpy(), return_index=True)
            eids = table.column("event_id").take(pa.array(first_rows)).to_pylist()
            for i, eid in zip(index.tolist(), eids):
                if eid is None:
                    continue
                ms = stamps[i]
                first = added.get(eid)
                if first is None:
                    first = ids.get(eid)
                if first is not None and ms - first <= window:
                    dup_index.append(i)
                else:
                    added.pop(eid, None)  # a copy beyond the bound is a new first copy
                    added[eid] = ms
        keep = None
        if dup_index:
            keep = pc.invert(
                pc.is_in(table.column(INDEX), value_set=pa.array(dup_index, table.schema.field(INDEX).type))
            )
        return Judged(key, keep, len(dup_index), part, added, max(stamps), raw.next_offset)

    def commit(self, j: Judged) -> None:
        """Apply a judged batch: its new first copies are held, the partition moves past it."""
        if j.next_offset < 0:
            return
        p = j.part
        for eid, ms in j.added.items():
            p.ids[eid] = ms
            p.order.append((ms, eid))
        p.high_ms = max(p.high_ms, j.high_ms)
        p.next_offset = j.next_offset
        self._evict(p)
        self._parts[j.key] = p

    def _evict(self, p: _Partition) -> None:
        """Forget ids older than the newest record time minus the window, and the oldest
        beyond ``max_ids``."""
        horizon = p.high_ms - self.window_ms
        order, ids = p.order, p.ids
        while order and (order[0][0] < horizon or len(ids) > self.max_ids):
            ms, eid = order.popleft()
            if ids.get(eid) == ms:
                del ids[eid]
        if len(order) > 2 * len(ids) + 1024:  # stale entries of ids taken again: rebuild
            p.order = deque(sorted((ms, eid) for eid, ms in ids.items()))
