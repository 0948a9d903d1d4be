"""Process-local run counters, read by the progress display and the run summary.

Engines that run their operators in the driver process (Bytewax ``run_main``, Beam's
in-process DirectRunner) update these directly; distributed runs report through the
engine's own metrics and the tables themselves."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field


@dataclass
class RunStats:
    records_in: int = 0
    records_accepted: int = 0
    records_dead: int = 0
    records_dropped: int = 0
    dead_by_reason: Counter = field(default_factory=Counter)
    rows_by_table: Counter = field(default_factory=Counter)
    commits: int = 0
    commit_seconds: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add_output(self, out) -> None:
        with self._lock:
            self.records_in += out.records_in
            self.records_accepted += out.records_accepted
            self.records_dead += out.records_dead
            self.records_dropped += out.records_dropped
            self.dead_by_reason.update(out.dead_by_reason)

    def add_commits(self, sink_stats) -> None:
        with self._lock:
            self.commits += sink_stats.commits
            self.commit_seconds += sink_stats.seconds
            self.rows_by_table.update(sink_stats.rows_by_table)

    def reset(self) -> None:
        with self._lock:
            self.records_in = self.records_accepted = self.records_dead = self.records_dropped = 0
            self.dead_by_reason.clear()
            self.rows_by_table.clear()
            self.commits = 0
            self.commit_seconds = 0.0


STATS = RunStats()
