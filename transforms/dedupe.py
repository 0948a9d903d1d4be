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

The ids are held as 128-bit digests in numpy arrays (:mod:`transforms.dedupe_store`: about
26 bytes an id; two different ids are confused with a probability below ``n**2 / 2**129``
for ``n`` ids held, about 1.3e-26 at the default bound of 3,000,000), and a whole batch is
looked up at once.

Two-phase: :meth:`EventDedupe.judge` decides a batch without changing the state;
:meth:`EventDedupe.commit` applies a judged batch once the flow produced its output (a
batch that raised and is bisected by ``pipelines.isolate`` is judged again, part by part).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core.batch import INDEX, RawBatch
from transforms.dedupe_store import IdStore, array_digests

#: the reason a duplicate is counted under (``FlowOutput.dropped_by_reason``)
DUPLICATE = "duplicate"

#: ``(topic, partition, before_offset, since_ms) -> table`` of the first copies the table
#: holds of that partition below ``before_offset``, in offset order: columns ``event_id``
#: (``string``, no nulls) and ``ms`` (``int64``, the record time in milliseconds)
Seed = Callable[[str, int, int, int], pa.Table]

_NONE = np.zeros(0, dtype=np.uint64)


@dataclass
class _Partition:
    """The ids held for one partition (``store``), the newest record time and the offset
    after the last record taken."""

    store: IdStore = field(default_factory=IdStore)
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
    high_ms: int
    next_offset: int
    # new first copies in offset order: digests, record times; the entries they replace
    added_hi: np.ndarray = field(default_factory=lambda: _NONE)
    added_lo: np.ndarray = field(default_factory=lambda: _NONE)
    added_ms: np.ndarray = field(default_factory=lambda: _NONE.astype(np.int64))
    replaced: np.ndarray = field(default_factory=lambda: _NONE.astype(np.int64))
    # the new first copies by digest high word, ties in offset order (None: not known)
    added_order: np.ndarray | None = None


def _first_rows(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct values of ``rows`` (the envelope index of each row) in ascending order,
    and the position of each one's first row: ``np.unique(rows, return_index=True)``,
    without its sort when ``rows`` is already ascending (the shaped rows of a batch are)."""
    if len(rows) and bool((rows[1:] >= rows[:-1]).all()):
        first = np.flatnonzero(np.concatenate(([True], rows[1:] != rows[:-1])))
        return rows[first], first
    return np.unique(rows, return_index=True)


def _suborder(order: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """``order`` (a permutation sorting some array) restricted to the positions where
    ``keep`` is set, renumbered as positions of the kept elements: it sorts ``array[keep]``
    the same way."""
    rank = np.cumsum(keep) - 1
    return rank[order[keep[order]]]


def _repeats(
    hi: np.ndarray, lo: np.ndarray, ms: np.ndarray, found: np.ndarray, first: np.ndarray, dup: np.ndarray, window: int
) -> np.ndarray:
    """Where an id occurs more than once in the batch: its copies' verdicts in offset order,
    set in ``dup`` (a copy beyond the bound is a new first copy); returns the positions of
    the new first copies to take, ascending (the last new copy of each id)."""
    n = len(hi)
    order = np.lexsort((lo, hi))  # equal ids side by side, in offset order
    repeat = (hi[order][1:] == hi[order][:-1]) & (lo[order][1:] == lo[order][:-1])
    if not repeat.any():
        return np.flatnonzero(~dup)
    group = np.empty(n, dtype=np.int64)
    group[order] = np.cumsum(np.concatenate([[True], ~repeat])) - 1
    counts = np.bincount(group)
    current: dict[int, int] = {}  # group -> record time of the copy that counts as first
    for k in np.flatnonzero(counts[group] > 1).tolist():
        g = int(group[k])
        f = current.get(g, int(first[k]) if found[k] else None)
        if f is not None and ms[k] - f <= window:
            dup[k] = True
        else:  # a copy beyond the bound is a new first copy
            dup[k] = False
            current[g] = int(ms[k])
    new = np.flatnonzero(~dup)
    _, last = np.unique(group[new][::-1], return_index=True)  # the last new copy of each id counts
    return np.sort(new[::-1][last])


class EventDedupe:
    """The dedupe state of one flow (every partition it reads). Guarantees: see the module
    docstring; never drops a record whose ``event_id`` no earlier record of its partition
    carried (up to a digest collision, see above), and never drops a record because of a
    later one."""

    def __init__(self, window_ms: int, max_ids: int, seed: Seed | None = None):
        self.window_ms = window_ms
        self.max_ids = max_ids
        self.seed = seed
        self._parts: dict[str, _Partition] = {}
        self.seeded = 0  # partitions seeded from the table (a restart, a rewind, a moved reader)

    def held(self, topic: str, partition: int) -> int:
        """Ids held for ``topic:partition``."""
        p = self._parts.get(f"{topic}:{partition}")
        return len(p.store) if p is not None else 0

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
            rows = self.seed(raw.topic, raw.partition, first, since)
            if rows.num_rows:
                hi, lo = array_digests(rows.column("event_id"))
                ms = rows.column("ms").to_numpy().astype(np.int64, copy=False)
                # the rows of one envelope (one per interaction) are one id taken
                new = np.ones(len(rows), dtype=bool)
                new[1:] = (hi[1:] != hi[:-1]) | (lo[1:] != lo[:-1]) | (ms[1:] != ms[:-1])
                hi, lo, ms = hi[new], lo[new], ms[new]
                # an id the table holds twice was taken again (a copy beyond the bound): the later copy counts
                order = np.lexsort((lo, hi))  # equal ids side by side, in offset order
                later = np.zeros(len(hi), dtype=bool)
                later[order[:-1]] = (hi[order][1:] == hi[order][:-1]) & (lo[order][1:] == lo[order][:-1])
                fresh.store.add(hi, lo, ms, np.flatnonzero(later).astype(np.int64))
                fresh.high_ms = int(ms.max())
            self.seeded += 1
            self._evict(fresh)
        return fresh

    def judge(self, raw: RawBatch, table: pa.Table) -> Judged:
        """The verdicts for ``table`` (rows of ``raw`` still accepted, with ``_i`` and
        ``event_id`` columns), without changing the state."""
        key = f"{raw.topic}:{raw.partition}"
        if not raw.offsets:
            return Judged(key, None, 0, self._parts.get(key) or _Partition(), -(1 << 62), -1)
        part = self._state(raw)
        judged = Judged(key, None, 0, part, int(raw.timestamps_array().max()), raw.next_offset)
        if not table.num_rows:
            return judged
        # one verdict per envelope, in offset order: its first row (further rows are its other interactions)
        index, first_rows = _first_rows(table.column(INDEX).to_numpy())
        eids = table.column("event_id")
        if len(first_rows) != table.num_rows or not bool((first_rows[1:] > first_rows[:-1]).all()):
            eids = eids.take(pa.array(first_rows))  # not every row an envelope's first, in order
        if eids.null_count:
            index = index[eids.is_valid().to_numpy(zero_copy_only=False)]
            eids = eids.drop_null()
        if not len(index):
            return judged
        hi, lo = array_digests(eids)
        ms = raw.timestamps_array()[index]
        order = np.argsort(hi)  # the digests by high word; in offset order too where no two share one
        sorted_hi = hi[order]
        ties = bool((sorted_hi[1:] == sorted_hi[:-1]).any())
        found, first, seq = part.store.find(hi, lo, order)
        window = self.window_ms
        dup = found & (ms - first <= window)
        take: np.ndarray | None
        if ties:  # two digests share a high word (almost surely an id more than once in the batch)
            take = _repeats(hi, lo, ms, found, first, dup, window)
            added_order = None
        else:
            take = np.flatnonzero(~dup) if dup.any() else None
            added_order = order if take is None else _suborder(order, ~dup)
        if take is None:  # every record a new first copy
            judged.added_hi, judged.added_lo, judged.added_ms = hi, lo, ms
        else:
            judged.added_hi, judged.added_lo, judged.added_ms = hi[take], lo[take], ms[take]
        judged.added_order = added_order
        if found.any():
            judged.replaced = np.unique(seq[take][found[take]] if take is not None else seq[found])
        if dup.any():
            dup_index = index[dup]
            judged.duplicates = len(dup_index)
            judged.keep = pc.invert(
                pc.is_in(table.column(INDEX), value_set=pa.array(dup_index, table.schema.field(INDEX).type))
            )
        return judged

    def commit(self, j: Judged) -> None:
        """Apply a judged batch: its new first copies are held, the partition moves past it."""
        if j.next_offset < 0:
            return
        p = j.part
        p.store.add(j.added_hi, j.added_lo, j.added_ms, j.replaced, j.added_order)
        p.high_ms = max(p.high_ms, j.high_ms)
        p.next_offset = j.next_offset
        self._evict(p)
        self._parts[j.key] = p

    def _evict(self, p: _Partition) -> None:
        """Forget ids older than the newest record time minus the window, and the oldest
        beyond ``max_ids`` (in the order taken, from the oldest on)."""
        p.store.evict_front(p.high_ms - self.window_ms, self.max_ids)
