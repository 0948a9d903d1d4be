"""A token bucket like ``golang.org/x/time/rate.Limiter`` (what the collector's
rate_limiting and bytes_limiting policies use), driven by the caller's clock in ms: it
starts full, refills at ``rate`` tokens per second up to ``burst``; ``allow(now, n)`` takes
``n`` tokens when there are that many (a request larger than ``burst`` never passes).
Time going backwards refills nothing."""

from __future__ import annotations


class TokenBucket:
    def __init__(self, rate: float, burst: float):
        self.rate = float(rate)
        self.burst = float(burst)
        self.tokens = float(burst)
        self.last_ms: int | None = None

    def allow(self, now_ms: int, n: float) -> bool:
        if self.last_ms is not None:
            elapsed = max(0, now_ms - self.last_ms)
            self.tokens = min(self.burst, self.tokens + elapsed * self.rate / 1000.0)
        if self.last_ms is None or now_ms > self.last_ms:
            self.last_ms = now_ms
        if n > self.burst:
            return False
        if self.tokens >= n:
            self.tokens -= n
            return True
        return False

    def state(self):
        return (self.tokens, self.last_ms)

    def restore(self, state) -> None:
        self.tokens, self.last_ms = state
