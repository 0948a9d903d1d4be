"""``rate_limiting``: a token bucket of spans — ``spans_per_second`` refill, bucket of
``burst_capacity`` (default 2 x spans_per_second, as the collector); a trace is Sampled
when its span count can be taken from the bucket at decision time (the caller's clock)."""

import numpy as np

from ..decision import NS, S
from ._limiter import TokenBucket
from .base import Policy


class RateLimiting(Policy):
    kind = "rate_limiting"
    stateful = True

    def __init__(self, name: str, cfg):
        super().__init__(name)
        self.bucket = TokenBucket(cfg.spans_per_second, cfg.burst_capacity or 2 * cfg.spans_per_second)

    def amount(self, view, i: int) -> float:
        return float(view.span_count[i])

    def evaluate(self, view, idx):
        out = np.empty(len(idx), dtype=np.int8)
        now = view.now_ms
        for k, i in enumerate(idx.tolist()):
            out[k] = S if self.bucket.allow(now, self.amount(view, i)) else NS
        return out

    def get_state(self):
        return self.bucket.state()

    def set_state(self, state):
        self.bucket.restore(state)
