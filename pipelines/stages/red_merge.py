"""The global stage's RED job: the trace shards' closed RED windows merged into one
``metrics`` row per series and window.

Guarantees: partial aggregates merge exactly (counts add, DDSketches merge, exemplars
bounded by ``max_exemplars``); a window's rows are written once, when every trace shard
has closed it (``extra["red_through"]``); at the end of input (:data:`_MAX`) every
window is written."""

from __future__ import annotations

from pipelines.stages.contract import _MAX


class RedJob:
    """RED partial aggregates (``extra["red"]`` of the trace shards) merged per
    (window start ms, service, operation, kind, status)."""

    def __init__(self, window_ms: int, max_exemplars: int):
        self.window = window_ms
        self.exemplars = max_exemplars
        self.aggs: dict = {}

    def merge(self, partials: dict) -> None:
        """Add a trace shard's closed windows."""
        from transforms.tail_sampling.red import merge_partials

        merge_partials(self.aggs, partials, self.exemplars)

    def emit(self, mark: int, rows: dict[str, list]) -> None:
        """Write to ``rows["metrics"]`` the windows that end at or before ``mark`` (the
        smallest ``red_through`` over the trace shards)."""
        from transforms.tail_sampling.red import red_rows

        window = self.window or 60_000  # a global stage restored from before RED merging: the default
        due = {k: self.aggs.pop(k) for k in [k for k in self.aggs if mark >= _MAX or k[0] + window <= mark]}
        if due:
            rows["metrics"].append(red_rows(due, window))
