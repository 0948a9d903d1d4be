"""``bytes_limiting``: a token bucket of bytes — ``bytes_per_second`` refill, bucket of
``burst_capacity`` (default 2 x bytes_per_second); a trace is Sampled when its size can be
taken from the bucket at decision time.

Trace size (the collector uses the OTLP protobuf size, which we no longer have): the sum
over its spans of 16 (trace id) + 8 (span id) + 8 when there is a parent + 16 (start, end)
+ 2 (kind, status) + UTF-8 bytes of name and status message + for each span attribute
the bytes of key and value + 4. Resource attributes are not counted."""

from .rate_limiting import RateLimiting
from ._limiter import TokenBucket
from .base import Policy


class BytesLimiting(RateLimiting):
    kind = "bytes_limiting"
    needs_bytes = True

    def __init__(self, name: str, cfg):
        Policy.__init__(self, name)
        self.bucket = TokenBucket(cfg.bytes_per_second, cfg.burst_capacity or 2 * cfg.bytes_per_second)

    def amount(self, view, i: int) -> float:
        return float(view.nbytes[i])
