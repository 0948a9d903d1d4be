"""Run counters handed down (``core.stats``): the process's ``STATS`` travels to an engine's
workers by reference, any other ``RunStats`` with its values."""

import pickle

from core.stats import STATS, RunStats


def test_the_process_counters_pickle_as_the_receiving_process_own():
    assert pickle.loads(pickle.dumps(STATS)) is STATS


def test_other_counters_pickle_with_their_values_and_a_lock_of_their_own():
    counters = RunStats()
    counters.record_commit("events", 7, 0.2)
    counters.record_produced("alerts", 3)
    counters.set_partition("events", 1, position=40, high=50)
    copy = pickle.loads(pickle.dumps(counters))
    assert copy is not counters and copy is not STATS
    assert dict(copy.rows_by_table) == {"events": 7} and dict(copy.produced) == {"alerts": 3}
    assert copy.partitions["events:1"].lag == 10
    assert copy.commit_latency["events"].n == 1 and copy.started == counters.started
    copy.record_commit("events", 1, 0.1)  # records under its own lock, apart from the original
    assert copy.rows_by_table["events"] == 8 and counters.rows_by_table["events"] == 7
