"""The ``event_id`` dedupe's compact store (transforms/dedupe_store.py): the memory an id
held costs, the verdicts of a reference model of the rule on random batches (many runs,
merged and evicted), and a seed that rebuilds the state a table with an id taken twice
left behind."""

from __future__ import annotations

import random
import tracemalloc

import numpy as np
import pyarrow as pa
import pytest

import transforms.dedupe as dedupe
import transforms.dedupe_store as store
from core.batch import INDEX, RawBatch
from tests.transforms.test_event_dedupe import seed_rows
from transforms.dedupe import EventDedupe

MIN = 60_000


class Reference:
    """The rule of transforms/dedupe.py written plainly: ids in taken order, each with the
    record time of its first copy; an id taken again leaves its earlier entry stale."""

    def __init__(self, window: int, max_ids: int):
        self.window, self.max_ids = window, max_ids
        self.ids: dict[str, int] = {}
        self.order: list[tuple[int, str]] = []
        self.high = -(1 << 62)

    def take(self, ids: list[str | None], stamps: list[int], commit: bool) -> list[int]:
        added: dict[str, int] = {}
        dups = []
        for i, (eid, ms) in enumerate(zip(ids, stamps)):
            if eid is None:
                continue
            first = added.get(eid, self.ids.get(eid))
            if first is not None and ms - first <= self.window:
                dups.append(i)
            else:
                added.pop(eid, None)
                added[eid] = ms
        if commit:
            for eid, ms in added.items():
                self.ids[eid] = ms
                self.order.append((ms, eid))
            self.high = max([self.high, *stamps])
            while self.order and (self.order[0][0] < self.high - self.window or len(self.ids) > self.max_ids):
                ms, eid = self.order.pop(0)
                if self.ids.get(eid) == ms:
                    del self.ids[eid]
        return dups


@pytest.mark.parametrize("run_max", [4, 16, store.RUN_MAX])
def test_random_batches_get_the_reference_verdicts(monkeypatch, run_max):
    monkeypatch.setattr(store, "RUN_MAX", run_max)
    assert _against_the_reference(range(150), shuffled=False) > 10_000


@pytest.mark.parametrize("run_max", [4, store.RUN_MAX])
def test_digests_sharing_a_high_word_and_rows_out_of_order_get_the_reference_verdicts(monkeypatch, run_max):
    """Different ids whose digests share the high word (only its top 3 bits kept: the
    lookup's and the sorts' tie paths), and a table whose rows are not in envelope order."""
    monkeypatch.setattr(store, "RUN_MAX", run_max)

    def narrow(ids, choice=None):
        hi, lo = store.array_digests(ids, choice)
        return hi & np.uint64(0xE000_0000_0000_0000), lo

    monkeypatch.setattr(dedupe, "array_digests", narrow)
    assert _against_the_reference(range(60), shuffled=True) > 4_000


def _against_the_reference(seeds: range, shuffled: bool) -> int:
    """Random batches through :class:`EventDedupe` and :class:`Reference`, verdict by verdict
    (``shuffled``: each table's rows in a random order); the records checked."""
    checked = 0
    for seed in seeds:
        rnd = random.Random(seed)
        window, max_ids = rnd.choice([5, 50, 500]), rnd.choice([3, 10, 40, 1000])
        d, ref = EventDedupe(window, max_ids), Reference(window, max_ids)
        offset, t = 0, 0
        for _ in range(rnd.randint(1, 40)):
            n = rnd.randint(0, 30)
            names = [f"i{k}" for k in range(rnd.choice([5, 30, 200]))]
            ids = [rnd.choice([None, *names]) for _ in range(n)]
            stamps = []
            for _ in range(n):
                t += rnd.choice([0, 0, 1, 3, 20, -5])  # record time may step back (producer clocks)
                stamps.append(t)
            raw = RawBatch("events", "ev", 0, [b"{}"] * n, list(range(offset, offset + n)), stamps)
            offset += n + rnd.randint(0, 2)
            rows = [i for i in range(n) for _ in range(rnd.randint(1, 2))]
            if shuffled:
                rnd.shuffle(rows)
            table = pa.table(
                {INDEX: pa.array(rows, pa.int32()), "event_id": pa.array([ids[i] for i in rows], pa.string())}
            )
            commit = rnd.random() < 0.9
            j = d.judge(raw, table)
            kept = table.filter(j.keep).column(INDEX).to_pylist() if j.keep is not None else rows
            dups = ref.take(ids, stamps, commit)
            assert j.duplicates == len(dups), seed
            assert kept == [i for i in rows if i not in dups], seed
            if commit:
                d.commit(j)
            assert d.held("ev", 0) == len(ref.ids), seed
            checked += n
    return checked


def test_an_id_held_costs_at_most_32_bytes():
    """BLAKE2b-128 digest, record time, place in the run, a bit filter: about 26 bytes (a
    ``str`` in a ``dict`` and a ``deque`` cost about 185)."""
    n = 300_000
    ids = [f"d-{k:032x}" for k in range(n)]
    raw = RawBatch("events", "ev", 0, [b""] * n, list(range(n)), [1_000 + k // 100 for k in range(n)])
    table = pa.table({INDEX: pa.array(range(n), pa.int32()), "event_id": ids})
    d = EventDedupe(10 * MIN, n)
    raw.timestamps_array()  # the raw batch's own numpy copy of its times (validation makes it first): not held by the dedupe
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        j = d.judge(raw, table)
        d.commit(j)
        del j
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert d.held("ev", 0) == n
    assert held / n <= 32, held / n


def test_a_seed_keeps_the_later_copy_of_an_id_the_table_holds_twice():
    """The table holds "a" twice: at 0 and, 11 minutes later (beyond the 10-minute window),
    as a new first copy. Before the restart a copy of "a" at 12 minutes was a duplicate of
    the second; after it, seeded from the table, it still is."""

    def seed(topic, partition, before, since):
        return seed_rows([("a", 0), ("a", 0), ("b", 5 * MIN), ("a", 11 * MIN), ("a", 11 * MIN)])  # 2 rows an envelope

    live = EventDedupe(10 * MIN, 1000)
    first = RawBatch("events", "ev", 0, [b"{}"] * 3, [0, 1, 2], [0, 5 * MIN, 11 * MIN])
    j = live.judge(first, pa.table({INDEX: pa.array([0, 1, 2], pa.int32()), "event_id": ["a", "b", "a"]}))
    assert j.duplicates == 0
    live.commit(j)
    again = RawBatch("events", "ev", 0, [b"{}"], [3], [12 * MIN], read_from=3)
    table = pa.table({INDEX: pa.array([0], pa.int32()), "event_id": ["a"]})
    assert live.judge(again, table).duplicates == 1
    restarted = EventDedupe(10 * MIN, 1000, seed)
    assert restarted.judge(again, table).duplicates == 1
    restarted.prepare(again)
    assert restarted.held("ev", 0) == 2  # "a" (its later copy) and "b"


def test_a_large_seed_is_held_in_runs_that_eviction_frees(monkeypatch):
    """The arrays kept for a partition seeded with many ids stay within ``max_ids`` plus one
    run of evicted ids: a seed is cut into runs of at most ``RUN_MAX`` ids."""
    monkeypatch.setattr(store, "RUN_MAX", 16)
    rows = seed_rows([(f"s{k}", k) for k in range(100)])
    d = EventDedupe(10 * MIN, 30, lambda *a: rows)
    raw = RawBatch("events", "ev", 0, [b"{}"], [100], [100], read_from=100)
    d.prepare(raw)
    assert d.held("ev", 0) == 30
    runs = d._parts["ev:0"].store.runs
    assert sum(len(r) for r in runs) <= 30 + 16
    # the newest 30 are the ones held: a copy of s70 is a duplicate, of s69 not
    table = pa.table({INDEX: pa.array([0, 1], pa.int32()), "event_id": ["s70", "s69"]})
    two = RawBatch("events", "ev", 0, [b"{}"] * 2, [100, 101], [100, 100], read_from=100)
    assert d.judge(two, table).duplicates == 1
