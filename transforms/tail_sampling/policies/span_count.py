"""``span_count``: Sampled when ``min_spans <= spans`` and (``max_spans`` 0 or
``spans <= max_spans``), counting the spans buffered at decision time."""

from ..decision import from_bool
from .base import Policy


class SpanCount(Policy):
    kind = "span_count"

    def __init__(self, name: str, cfg):
        super().__init__(name)
        self.min = cfg.min_spans
        self.max = cfg.max_spans

    def evaluate_all(self, view):
        c = view.span_count
        ok = c >= self.min
        if self.max:
            ok &= c <= self.max
        return from_bool(ok)
