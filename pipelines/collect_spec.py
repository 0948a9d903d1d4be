"""Typed model of the ``collect:`` section of a pipeline spec (``obsflow collect``, the
HTTP / OTLP/HTTP front door). Every number has bounds; unknown keys are errors."""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from core.durations import Duration
from core.gc_tuning import DEFAULT_YOUNG_THRESHOLD, MAX_YOUNG_THRESHOLD


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WriteKey(_Model):
    """One write key. The key itself comes from the environment variable ``env`` or is
    given as its SHA-256 (``sha256``, lowercase hex), so the spec never holds a secret."""

    name: str = Field(..., min_length=1, max_length=100, description="who the key belongs to (a source, an app)")
    kind: Literal["public", "secret"] = Field(
        "public",
        description="public: a browser/mobile key (visible to anyone), may only send recent timestamps; "
        "secret: a server key, may send historical timestamps",
    )
    env: str | None = Field(None, description="environment variable holding the key")
    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$", description="SHA-256 of the key, lowercase hex")

    @model_validator(mode="after")
    def _one_source(self) -> WriteKey:
        if (self.env is None) == (self.sha256 is None):
            raise ValueError("a write key names exactly one of 'env' and 'sha256'")
        return self


class CollectSpec(_Model):
    """``obsflow collect``: where it listens, what it accepts, how it pushes back."""

    host: str = Field("127.0.0.1", description="address to bind (0.0.0.0 behind a load balancer)")
    port: int = Field(
        4318, ge=0, le=65535, description="port for every route (4318 is the OTLP/HTTP default); 0: a free port"
    )
    server: Literal["granian", "uvicorn"] = Field(
        "uvicorn", description="ASGI server: uvicorn in this process (default) or Granian workers; see bench/README.md"
    )
    topics: dict[Literal["event", "log", "span", "metric"], str] = Field(
        default_factory=dict,
        description="topic per signal; default: the first source of that signal with a fixed topic",
    )
    max_request_bytes: int = Field(
        5 << 20, ge=1024, le=1 << 30, description="largest request body as sent (compressed)"
    )
    max_decompressed_bytes: int = Field(
        20 << 20, ge=1024, le=1 << 31, description="largest body after gunzip (gzip bombs stop here)"
    )
    max_event_bytes: int = Field(65536, ge=256, le=16 << 20, description="largest single product event (its JSON)")
    max_events_per_request: int = Field(1000, ge=1, le=100_000, description="events in one request at most")
    max_inflight_bytes: int = Field(
        256 << 20,
        ge=1 << 20,
        le=1 << 34,
        description="bodies held at once (received, not yet acknowledged by Kafka); over it: 503",
    )
    max_inflight_requests: int = Field(1024, ge=1, le=1_000_000, description="requests held at once; over it: 503")
    request_timeout: Duration = Field(
        timedelta(seconds=10), description="longest wait for Kafka's acknowledgement; then 503"
    )
    retry_after: Duration = Field(timedelta(seconds=2), description="Retry-After sent with 503 and 429")
    ready_check_interval: Duration = Field(
        timedelta(seconds=1), description="how often Kafka's reachability is checked"
    )
    drain_timeout: Duration = Field(
        timedelta(seconds=15), description="on SIGTERM, longest wait for in-flight requests"
    )
    rate_limit_per_key: float | None = Field(
        None, gt=0, le=1e9, description="events (or spans, log records, points) per second per write key; over it: 429"
    )
    rate_limit_burst: float | None = Field(
        None, gt=0, le=1e10, description="bucket size for the rate limit; default one second's worth"
    )
    keys: list[WriteKey] = Field(default_factory=list, description="write keys; empty: no key is asked for")
    public_max_past: Duration = Field(
        timedelta(hours=1), description="public keys: oldest event time accepted (older: timestamp_out_of_range)"
    )
    cors_origins: list[str] = Field(
        default_factory=list, description="origins allowed to POST from a browser (exact, or '*')"
    )
    cors_credentials: bool = Field(False, description="send Access-Control-Allow-Credentials: true")
    trusted_proxies: list[str] = Field(default_factory=list, description="CIDRs whose X-Forwarded-For is believed")
    judge_window: Duration = Field(
        timedelta(milliseconds=2),
        description=(
            "product events: how long a request waits for others to share one pass of the codec and validator, "
            "when other requests are in flight (0s: only those of the same event-loop turn)"
        ),
    )
    transactions: bool = Field(
        True,
        description=(
            "write each request in a Kafka transaction (several requests per transaction): a request answered 503 "
            "leaves nothing visible to read_committed consumers, so the client's retry makes no duplicate"
        ),
    )
    transaction_writers: int = Field(
        2,
        ge=1,
        le=64,
        description=(
            "transactional producers per process, each with one transaction in flight. Two (the default): a request "
            "arriving during one commit starts the next transaction on the other producer at once, so it does not wait "
            "for the commit in flight (open loop at 3,000 requests/s: the p99 several times lower than with one). One "
            "commits every request queued during the previous commit in the next transaction: the fewest, largest "
            "transactions (a transaction's fixed CPU is about 0.75 ms), at the price of that wait; more than two add "
            "smaller transactions"
        ),
    )
    switch_interval: Duration = Field(
        timedelta(microseconds=500),
        description=(
            "the process's GIL switch interval (sys.setswitchinterval): how long a thread that wants the GIL waits "
            "for the busy event loop to hand it over. Every step of a transaction (a writer woken, begin, commit "
            "returned) waits up to this for the GIL, so it bounds what a busy loop adds to each (Python's default is "
            "5ms; with 0.5ms and transaction_linger 5ms the open-loop p99 was lower than with Python's and no "
            "linger in 10 of 13 same-run pairs, bench/README.md)"
        ),
    )
    transaction_linger: Duration = Field(
        timedelta(milliseconds=5),
        description=(
            "transactions: a writer woken for a request waits until that request is this old before it begins the "
            "transaction, so the requests arriving meanwhile share it (fewer, larger transactions: less CPU a request, "
            "at most this much more latency); 0s: begin at once"
        ),
    )
    commit_attempt_timeout: Duration = Field(
        timedelta(seconds=1),
        description=(
            "transactions: longest wait of one commit attempt. An attempt that times out (or fails with a retriable "
            "error) is retried while the request's request_timeout allows (librdkafka resumes the commit it began, so a "
            "retry never commits twice); then the request gets 503 + Retry-After. Each retry is counted in "
            "obsflow_collect_commit_retries"
        ),
    )
    producer: dict[str, str] = Field(default_factory=dict, description="extra librdkafka producer properties")
    gc_young_threshold: int = Field(
        DEFAULT_YOUNG_THRESHOLD,
        ge=0,
        le=MAX_YOUNG_THRESHOLD,
        description=(
            "the collector process's garbage collector: after start-up every live object is frozen (never walked "
            "again) and a young collection runs after this many new container objects (Python's default: 700, "
            "which under load spends about a quarter of the CPU walking requests in flight); 0: Python's defaults"
        ),
    )

    @model_validator(mode="after")
    def _limits(self) -> CollectSpec:
        if self.max_decompressed_bytes < self.max_request_bytes:
            raise ValueError("max_decompressed_bytes must be at least max_request_bytes")
        if not (timedelta(milliseconds=100) <= self.request_timeout <= timedelta(minutes=5)):
            raise ValueError("request_timeout must be between 100ms and 5m")
        if not (timedelta(0) <= self.retry_after <= timedelta(hours=1)):
            raise ValueError("retry_after must be between 0s and 1h")
        if not (timedelta(milliseconds=50) <= self.ready_check_interval <= timedelta(minutes=1)):
            raise ValueError("ready_check_interval must be between 50ms and 1m")
        if not (timedelta(0) <= self.judge_window <= timedelta(milliseconds=100)):
            raise ValueError("judge_window must be between 0s and 100ms")
        if not (timedelta(0) <= self.drain_timeout <= timedelta(minutes=10)):
            raise ValueError("drain_timeout must be between 0s and 10m")
        if not (timedelta(microseconds=100) <= self.switch_interval <= timedelta(milliseconds=100)):
            raise ValueError("switch_interval must be between 100us and 100ms")
        if not (timedelta(0) <= self.transaction_linger <= timedelta(milliseconds=100)):
            raise ValueError("transaction_linger must be between 0s and 100ms")
        if not (timedelta(milliseconds=50) <= self.commit_attempt_timeout <= timedelta(minutes=5)):
            raise ValueError("commit_attempt_timeout must be between 50ms and 5m")
        return self
