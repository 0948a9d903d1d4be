"""The ``event_id`` dedupe's rule (transforms/dedupe.py), exactly, without services: copies
within the window are dropped and counted, different ids never merge, the bound in time
and in ids, judging without committing leaves the state alone, and a batch that does not
follow its reader's previous one is seeded afresh."""

from __future__ import annotations

import pyarrow as pa

from core.batch import INDEX, RawBatch
from transforms.dedupe import EventDedupe


def seed_rows(rows: list[tuple[str, int]]) -> pa.Table:
    """A seed's answer (``transforms.dedupe.Seed``) holding ``(event_id, ms)`` rows."""
    return pa.table(
        {"event_id": pa.array([e for e, _ in rows], pa.string()), "ms": pa.array([m for _, m in rows], pa.int64())}
    )


MIN = 60_000


def batch(ids: list[str], offsets: list[int], stamps: list[int], rows_per: int = 1, read_from: int = -1):
    """A raw batch of one partition and its accepted rows (``rows_per`` interactions per envelope)."""
    raw = RawBatch("events", "ev", 0, [b"{}"] * len(ids), offsets, stamps, read_from=read_from)
    idx = [i for i in range(len(ids)) for _ in range(rows_per)]
    table = pa.table({INDEX: pa.array(idx, pa.int32()), "event_id": [ids[i] for i in idx]})
    return raw, table


def take(d: EventDedupe, raw, table) -> tuple[int, list]:
    j = d.judge(raw, table)
    kept = table.filter(j.keep) if j.keep is not None else table
    d.commit(j)
    return j.duplicates, kept.column(INDEX).to_pylist()


def test_a_batch_written_twice_keeps_the_first_copy_of_each_envelope():
    d = EventDedupe(10 * MIN, 1000)
    ids = ["a", "b", "c"]
    assert take(d, *batch(ids, [0, 1, 2], [1000, 1000, 1000], rows_per=2)) == (0, [0, 0, 1, 1, 2, 2])
    # the retry: the same envelopes at later offsets (a transaction marker in between), later record time
    assert take(d, *batch(ids, [4, 5, 6], [61_000] * 3, rows_per=2)) == (3, [])
    # both copies in one raw batch: the second is dropped, every row of it
    d2 = EventDedupe(10 * MIN, 1000)
    assert take(d2, *batch(ids + ids, list(range(6)), [1000] * 6, rows_per=2)) == (3, [0, 0, 1, 1, 2, 2])


def test_different_ids_never_merge():
    d = EventDedupe(10 * MIN, 1000)
    ids = [f"e-{k}" for k in range(500)]
    assert take(d, *batch(ids, list(range(500)), [1000] * 500)) == (0, list(range(500)))
    other = [f"E-{k}" for k in range(500)]  # same partition, same time, other ids
    assert take(d, *batch(other, list(range(500, 1000)), [1000] * 500)) == (0, list(range(500)))
    assert d.held("ev", 0) == 1000


def test_the_bound_in_time_and_in_ids():
    d = EventDedupe(10 * MIN, 1000)
    take(d, *batch(["a"], [0], [0]))
    assert take(d, *batch(["a"], [1], [10 * MIN])) == (1, [])  # exactly the window after: still a copy
    assert take(d, *batch(["a"], [2], [10 * MIN + 1])) == (0, [0])  # beyond: a new first copy
    assert take(d, *batch(["a"], [3], [15 * MIN])) == (1, [])  # ... which later copies are judged against
    # ids older than the partition's newest record time minus the window are forgotten
    take(d, *batch(["z"], [4], [40 * MIN]))
    assert d.held("ev", 0) == 1
    small = EventDedupe(10 * MIN, 3)
    take(small, *batch(["a", "b", "c", "d"], [0, 1, 2, 3], [0, 0, 0, 0]))
    assert small.held("ev", 0) == 3
    assert take(small, *batch(["a", "d"], [4, 5], [1, 1])) == (1, [0])  # "a" went first; "d" is held


def test_judging_without_a_commit_leaves_the_state_alone():
    """A batch that raised later in the flow is judged again (pipelines.isolate bisects it):
    its first judgement must not make its own records copies."""
    d = EventDedupe(10 * MIN, 1000)
    raw, table = batch(["a", "b"], [0, 1], [0, 0])
    d.judge(raw, table)  # never committed
    assert d.held("ev", 0) == 0
    assert take(d, raw, table) == (0, [0, 1])


def test_a_batch_that_does_not_follow_is_seeded_from_the_table():
    seeded = []

    def seed(topic, partition, before, since):
        seeded.append((topic, partition, before, since))
        return seed_rows([("a", 0), ("b", 0)])  # the table's first copies below `before`

    d = EventDedupe(10 * MIN, 1000, seed)
    assert take(d, *batch(["a", "c"], [10, 11], [MIN, MIN], read_from=10)) == (1, [1])
    assert seeded == [("ev", 0, 10, MIN - 10 * MIN)]
    # the next batch of the same reader (offsets skip a transaction marker): no new seed
    take(d, *batch(["d"], [13], [MIN], read_from=12))
    assert len(seeded) == 1
    # a reader that started further on (another worker read 12..20 meanwhile): seeded again
    assert take(d, *batch(["b", "e"], [21, 22], [MIN, MIN], read_from=20)) == (1, [1])
    # a rewind (a restart's replay): seeded again, the replayed records judged as before
    assert take(d, *batch(["a", "c"], [10, 11], [MIN, MIN], read_from=10)) == (1, [1])
    assert [s[2] for s in seeded] == [10, 21, 10]
