"""``latency``: trace duration — earliest span start to latest span end, subtracted in
nanoseconds, then whole milliseconds truncated (Go's ``Duration.Milliseconds``) — with
``upper_threshold_ms`` 0: Sampled when ``duration > threshold_ms`` (strictly, as the
Collector v0.161.0); otherwise Sampled when ``threshold_ms < duration <= upper_threshold_ms``.

Difference kept on purpose: the Collector walks the spans in arrival order with a running
min start / max end and samples as soon as a *partial* duration qualifies, so with an upper
bound it can keep a trace whose full duration is above the bound (depending on the order its
spans arrived in); we decide on the full duration. Without an upper bound both agree."""

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
            return from_bool(d > self.threshold)
        return from_bool((d > self.threshold) & (d <= self.upper))
