"""``rate_limiting`` (Collector config key: ``spans_per_second``).

Default, ``algorithm: token_bucket`` — what the current OpenTelemetry Collector does
(contrib ``internal/sampling/rate_limiting.go``: ``rate.NewLimiter(spans_per_second,
2 * spans_per_second)`` and ``AllowN(now, span_count)``): a token bucket of spans that
refills at ``spans_per_second`` and holds ``2 x spans_per_second``; a trace is Sampled when
its span count can be taken from the bucket at decision time (the caller's clock), so a
trace larger than the bucket is never Sampled. The Collector does not let the bucket
size be configured for this policy: ``burst_capacity`` is an obsflow extension (0, the
default, is the Collector's 2 x spans_per_second).

``algorithm: per_second`` — the counter of earlier Collector releases: spans are counted
per whole second of the decision clock (``now_ms // 1000``; the count restarts when the
second changes), and a trace is Sampled when the count plus its span count stays below
``spans_per_second`` (strictly), in which case it is added to the count.

Both are stateful (the state is in snapshots) and driven by the caller's clock, so a run
is deterministic."""

from typing import cast
import numpy as np

from ..decision import NS, S
from ._limiter import TokenBucket
from .base import Policy


class RateLimiting(Policy):
    """Sampled while the trace's spans fit the span rate (see the module doc)."""

    kind = "rate_limiting"
    stateful = True
    per_second = False  # subclasses (bytes_limiting) are token buckets

    def __init__(self, name: str, cfg):
        super().__init__(name)
        self.per_second = getattr(cfg, "algorithm", "token_bucket") == "per_second"
        rate = getattr(cfg, "spans_per_second", None)
        self.limit = rate
        self.second: int | None = None
        self.count: float = 0
        self.bucket = TokenBucket(rate, cfg.burst_capacity or 2 * rate) if rate is not None else None

    def amount(self, view, i: int) -> float:
        return float(view.span_count[i])

    def _allow(self, now: int, n: float) -> bool:
        if not self.per_second:
            return cast(TokenBucket, self.bucket).allow(now, n)
        sec = now // 1000
        if sec != self.second:
            self.second, self.count = sec, 0
        if self.count + n < cast(float, self.limit):
            self.count += n
            return True
        return False

    def evaluate(self, view, idx):
        out = np.empty(len(idx), dtype=np.int8)
        now = view.now_ms
        for k, i in enumerate(idx.tolist()):
            out[k] = S if self._allow(now, self.amount(view, i)) else NS
        return out

    def get_state(self):
        return ("per_second", self.second, self.count) if self.per_second else self.bucket.state()

    def set_state(self, state):
        if self.per_second:
            _, self.second, self.count = state
        else:
            self.bucket.restore(state)
