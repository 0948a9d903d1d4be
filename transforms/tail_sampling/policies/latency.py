"""``latency``: trace duration (earliest span start to latest span end, whole ms) —
with ``upper_threshold_ms`` 0: Sampled when ``duration >= threshold_ms``; otherwise
Sampled when ``threshold_ms < duration <= upper_threshold_ms`` (the collector's bounds)."""

from ..decision import from_bool
from .base import Policy


class Latency(Policy):
    kind = "latency"

    def __init__(self, name: str, cfg):
        super().__init__(name)
        self.threshold = cfg.threshold_ms
        self.upper = cfg.upper_threshold_ms

    def evaluate_all(self, view):
        d = view.duration_ms
        if self.upper == 0:
            return from_bool(d >= self.threshold)
        return from_bool((d > self.threshold) & (d <= self.upper))
