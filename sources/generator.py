"""A seeded generator of realistic product and service traffic, the embedded source.

Each topic partition is an independent, deterministic stream (seed, topic, partition):
- ``event`` topics: users' sessions walking pages (home, pricing, docs) and a five-step
  signup form; some abandon mid-form (step 3 most), some take too long; clicks,
  scrolls, and client errors whose messages and stack traces carry e-mail addresses,
  tokens and card numbers that scrubbing must remove;
- ``log`` topics: service logs (checkout, signup, search, auth, frontend) with levels,
  trace and span ids, request and user ids, attributes, and the same kinds of PII;
- ``metric`` topics: counters (with occasional resets), gauges and delta histograms per
  service / route / host, a few samples minutes late (:func:`_metrics`).

About ``bad_fraction`` of records (1% by default) are malformed, cycling through every
kind a real pipeline meets; :func:`partition_stream` labels each with the reason code the
pipeline must give it, so tests can check the dead-letter table exactly."""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from collections.abc import Iterator

from core.batch import DEFAULT_MAX_BYTES, RawBatch

USER_AGENTS = [
    (
        "web",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36",
    ),
    (
        "web",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.0 Safari/605.1.15",
    ),
    ("web", "Mozilla/5.0 (X11; Linux x86_64; rv:132.0) Gecko/20100101 Firefox/132.0"),
    (
        "web",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/129.0.0.0 Safari/537.36 Edg/129.0.0.0",
    ),
    (
        "ios",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
    ),
    (
        "ios",
        "Mozilla/5.0 (iPad; CPU OS 17_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.6 Mobile/15E148 Safari/604.1",
    ),
    (
        "android",
        "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.6723.58 Mobile Safari/537.36",
    ),
    (
        "android",
        "Mozilla/5.0 (Linux; Android 13; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/129.0.6668.100 Mobile Safari/537.36",
    ),
]
LOCATIONS = [
    "Berlin, DE",
    "Paris, FR",
    "London, GB",
    "New York, US",
    "Sao Paulo, BR",
    "Tokyo, JP",
    "Bangalore, IN",
    None,
]
PAGES = ["/", "/pricing", "/docs", "/blog/launch", "/features", "/about"]
FORM_STEPS = 5
# chance to abandon the signup form at each step (step 3 is the long one)
ABANDON = {1: 0.08, 2: 0.10, 3: 0.30, 4: 0.08, 5: 0.05}
SERVICES = ["checkout", "signup", "search", "auth", "frontend"]
LEVELS = [("DEBUG", 0.25), ("INFO", 0.60), ("WARN", 0.10), ("ERROR", 0.05)]

EVENT_BAD_KINDS = [
    ("invalid_json", "format_violation"),
    ("truncated", "format_violation"),
    ("not_utf8", "format_violation"),
    ("empty", "format_violation"),
    ("wrong_type", "schema_violation"),
    ("missing_field", "schema_violation"),
    ("unknown_event_type", "schema_violation"),
    ("bad_timestamp", "schema_violation"),
    ("oversized", "size_violation"),
    ("far_future", "timestamp_out_of_range"),
    ("ancient", "timestamp_out_of_range"),
    ("bad_ip", "enrichment_failure"),
]
LOG_BAD_KINDS = [
    ("invalid_json", "format_violation"),
    ("truncated", "format_violation"),
    ("not_utf8", "format_violation"),
    ("empty", "format_violation"),
    ("wrong_type", "schema_violation"),
    ("missing_field", "schema_violation"),
    ("unknown_level", "schema_violation"),
    ("bad_trace_id", "schema_violation"),
    ("oversized", "size_violation"),
    ("far_future", "timestamp_out_of_range"),
    ("ancient", "timestamp_out_of_range"),
]


def _iso(ms: int) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def _hex(rng: random.Random, n: int) -> str:
    return f"{rng.getrandbits(4 * n):0{n}x}"


def _public_ip(rng: random.Random) -> str:
    while True:
        a = rng.randint(1, 223)
        if a in (10, 127, 100, 169, 172, 192, 198, 203):
            continue
        return f"{a}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"


def _stack(rng: random.Random, email: str) -> str:
    fn = rng.choice(["submitForm", "validateStep", "renderPrice", "loadProfile"])
    return (
        f"TypeError: Cannot read properties of undefined (reading 'value') for {email}\n"
        f"    at {fn} (https://app.example.com/static/js/main.{_hex(rng, 8)}.js:{rng.randint(10, 999)}:{rng.randint(1, 80)})\n"
        f"    at HTMLButtonElement.onClick (https://app.example.com/static/js/vendor.js:{rng.randint(10, 999)}:12)\n"
        f"    at invokeGuardedCallback (react-dom.production.min.js:52:10)"
    )


@dataclass
class Generated:
    value: bytes | None
    timestamp_ms: int
    label: str | None  # expected dead-letter reason, None for a good record
    kind: str | None = None


class _Clock:
    def __init__(self, start_ms: int, rate_per_s: float, rng: random.Random):
        self.now = start_ms
        self.gap = 1000.0 / rate_per_s
        self.rng = rng

    def tick(self) -> int:
        self.now += max(1, int(self.rng.expovariate(1.0 / self.gap)))
        return self.now


def _event_envelopes(rng: random.Random, clock: _Clock, partition: int) -> Iterator[dict]:
    """Endless good product-event envelopes: one session after another (interleaved)."""
    active: list[Iterator[dict]] = []
    user_seq = 0
    while True:
        while len(active) < 20:
            user_seq += 1
            active.append(_session(rng, clock, partition, user_seq))
        k = rng.randrange(len(active))
        try:
            yield next(active[k])
        except StopIteration:
            active.pop(k)


def _session(rng: random.Random, clock: _Clock, partition: int, seq: int) -> Iterator[dict]:
    platform, ua = rng.choice(USER_AGENTS)
    user = f"user-{partition}-{rng.randint(1, 50_000)}" if rng.random() < 0.7 else None
    base = {
        "session_id": f"s-{partition}-{seq}-{_hex(rng, 8)}",
        "user": user,
        "location": rng.choice(LOCATIONS),
        "platform": platform,
        "user_agent": ua,
        "client_ip": _public_ip(rng),
    }

    def envelope(page: str, events: list[dict]) -> dict:
        arrival = clock.tick()
        ts = arrival - rng.randint(0, 1500)
        return {
            "event_id": _hex(rng, 32),
            "timestamp": _iso(ts),
            "page": page,
            **base,
            "events": events,
            "_arrival": arrival,
        }

    for _ in range(rng.randint(1, 3)):
        page = rng.choice(PAGES)
        yield envelope(page, [{"type": "page_view"}])
        if rng.random() < 0.6:
            yield envelope(page, [{"type": "scroll", "depth": round(rng.random(), 2)}])
        if rng.random() < 0.5:
            yield envelope(
                page, [{"type": "click", "target": rng.choice(["#cta", "#nav-pricing", "a.signup", "#buy"])}]
            )
        if rng.random() < 0.03:
            email = f"{rng.choice(['ana', 'li', 'sam'])}.{rng.randint(1, 99)}@example.org"
            yield envelope(
                page,
                [{"type": "error", "message": f"Failed to load profile of {email}", "stackTrace": _stack(rng, email)}],
            )
    if rng.random() < 0.5:
        return
    yield envelope("/signup", [{"type": "page_view"}, {"type": "form_start", "form": "signup"}])
    for step in range(1, FORM_STEPS + 1):
        slow = rng.random() < 0.1
        duration = int(rng.lognormvariate(9.5 if step == 3 else 8.5, 0.5) * (6 if slow else 1))
        events = [{"type": "form_step", "form": "signup", "step": step, "duration_ms": duration}]
        if step == 4 and rng.random() < 0.05:
            card = "4111 1111 1111 1111"
            events.append(
                {
                    "type": "error",
                    "message": f"card {card} declined",
                    "stackTrace": f"PaymentError: declined card={card} token=Bearer {_hex(rng, 24)}\n    at pay (main.js:1:1)",
                }
            )
        yield envelope(f"/signup/step-{step}", events)
        if rng.random() < ABANDON[step]:
            return
    yield envelope("/signup", [{"type": "form_submit", "form": "signup", "duration_ms": rng.randint(200, 3000)}])
    yield envelope("/welcome", [{"type": "signup_complete", "form": "signup"}])


def _logs(rng: random.Random, clock: _Clock, partition: int, seed: int = 42) -> Iterator[dict]:
    n = 0
    while True:
        arrival = clock.tick()
        ts = arrival - rng.randint(0, 800)
        trace_ref = trace_id_for(seed, int(n * LOG_TRACE_RATIO))
        n += 1
        r = rng.random()
        acc = 0.0
        level = "INFO"
        for lv, p in LEVELS:
            acc += p
            if r < acc:
                level = lv
                break
        service = rng.choice(SERVICES)
        user = f"user-{partition}-{rng.randint(1, 50_000)}"
        msg = rng.choice(
            [
                f"request handled in {rng.randint(2, 900)} ms",
                f"cache miss for key product:{rng.randint(1, 9999)}",
                f"login succeeded for {user}@example.com",
                f"retrying payment with Authorization: Bearer {_hex(rng, 32)}",
                f"upstream call failed: api_key={_hex(rng, 20)} status=503",
                f"charged card 5555 5555 5555 4444 amount={rng.randint(1, 500)}.00",
                "connection pool exhausted, waiting",
            ]
        )
        rec = {
            "timestamp": _iso(ts),
            "level": level if rng.random() > 0.1 else level.lower(),
            "service": service,
            "message": msg,
            "trace_id": trace_ref if rng.random() < 0.8 else None,
            "span_id": _hex(rng, 16),
            "request_id": f"req-{_hex(rng, 12)}",
            "user_id": user if rng.random() < 0.5 else None,
            "host": f"{service}-{rng.randint(1, 4)}",
            "env": "prod",
            "attributes": {
                "http.status_code": rng.choice([200, 200, 200, 404, 500]),
                "region": rng.choice(["eu-west-1", "us-east-1"]),
            },
            "_arrival": arrival,
        }
        yield rec


METRIC_BAD_KINDS = [
    ("invalid_json", "format_violation"),
    ("truncated", "format_violation"),
    ("empty", "format_violation"),
    ("wrong_type", "schema_violation"),
    ("missing_field", "schema_violation"),
    ("unknown_kind", "schema_violation"),
    ("far_future", "timestamp_out_of_range"),
    ("ancient", "timestamp_out_of_range"),
]
ROUTES = ["/", "/checkout", "/search", "/signup", "/api/items"]
LATENCY_BOUNDS = [5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0]
#: fraction of metric samples stamped minutes in the past (late data the rollup must route)
METRIC_LATE_FRACTION = 0.002


def _metrics(rng: random.Random, clock: _Clock, partition: int) -> Iterator[dict]:
    """Metric samples of the services on this partition (each service's series live on one
    partition, as when each exporter writes its own): cumulative counters
    ``http.requests`` / ``http.errors`` per service and route (a process restart now and
    then resets them), a ``process.cpu`` gauge per host, and ``http.latency_ms``
    histograms (delta buckets) per service and route."""
    services = [s for i, s in enumerate(SERVICES) if i % 4 == partition % 4] or [SERVICES[partition % len(SERVICES)]]
    totals: dict[tuple, float] = {}
    while True:
        arrival = clock.tick()
        ts = arrival - rng.randint(0, 2000)
        if rng.random() < METRIC_LATE_FRACTION:
            ts = arrival - rng.randint(180_000, 600_000)
        service = rng.choice(services)
        route = rng.choice(ROUTES)
        r = rng.random()
        labels = {"service": service, "route": route, "env": "prod"}
        if r < 0.45:
            name = "http.requests" if rng.random() < 0.8 else "http.errors"
            key = (name, service, route)
            if rng.random() < 0.002:
                totals[key] = 0.0  # the process restarted: the counter starts again
            totals[key] = totals.get(key, 0.0) + rng.randint(1, 20) * (1 if name == "http.requests" else 0.1)
            rec = {"name": name, "kind": "COUNTER", "value": round(totals[key], 3)}
        elif r < 0.65:
            labels = {"service": service, "host": f"{service}-{rng.randint(1, 4)}", "env": "prod"}
            rec = {"name": "process.cpu", "kind": "GAUGE", "value": round(rng.betavariate(2, 5), 4)}
        else:
            n = rng.randint(1, 30)
            obs = [rng.lognormvariate(4.0 if service != "checkout" else 5.0, 0.8) for _ in range(n)]
            counts = [0] * (len(LATENCY_BOUNDS) + 1)
            for v in obs:
                counts[next((i for i, b in enumerate(LATENCY_BOUNDS) if v <= b), len(LATENCY_BOUNDS))] += 1
            rec = {
                "name": "http.latency_ms",
                "kind": "HISTOGRAM",
                "bucket_bounds": LATENCY_BOUNDS,
                "bucket_counts": counts,
                "count": n,
                "sum": round(sum(obs), 3),
            }
        yield {**rec, "timestamp": _iso(ts), "labels": labels, "_arrival": arrival}


SPAN_BAD_KINDS = [
    ("invalid_json", "format_violation"),
    ("truncated", "format_violation"),
    ("empty", "format_violation"),
    ("missing_field", "schema_violation"),
    ("bad_span_id", "schema_violation"),
    ("far_future", "timestamp_out_of_range"),
]
#: log lines per trace index: log n of a partition refers to trace int(n * LOG_TRACE_RATIO)
LOG_TRACE_RATIO = 0.7


def trace_id_for(seed: int, k: int) -> str:
    """The id of the k-th generated trace (shared by the span and the log streams)."""
    return hashlib.sha256(f"{seed}/trace/{k}".encode()).hexdigest()[:32]


def _iso_us(us: int) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(us // 1_000_000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{us % 1_000_000:06d}Z"


def make_trace(seed: int, k: int, start_ms: int) -> list[dict]:
    """The spans of trace ``k``: a request through frontend → checkout or search → auth,
    payment, db; about 2% end in an error, about 3% have a slow database call."""
    rng = random.Random(int.from_bytes(hashlib.sha256(f"{seed}/spans/{k}".encode()).digest()[:8], "big"))
    tid = trace_id_for(seed, k)
    t0 = start_ms * 1000 + rng.randint(0, 999)
    error = rng.random() < 0.02
    slow = rng.random() < 0.03
    spans: list[dict] = []

    def span(service, name, kind, start_us, dur_us, parent, status="UNSET", msg=None, **attrs):
        sid = _hex(rng, 16)
        spans.append(
            {
                "trace_id": tid,
                "span_id": sid,
                "parent_span_id": parent,
                "service": service,
                "name": name,
                "kind": kind,
                "start_time": _iso_us(start_us),
                "end_time": _iso_us(start_us + dur_us),
                "status_code": status,
                "status_message": msg,
                "attributes": {k2: str(v) for k2, v in attrs.items()},
                "resource": {"service.name": service, "deployment.environment": "prod"},
                "_end_ms": (start_us + dur_us) // 1000,
            }
        )
        return sid

    if rng.random() < 0.6:
        db = int(rng.lognormvariate(8.5, 0.4)) + (2_000_000 if slow else 0)
        auth = int(rng.lognormvariate(8.0, 0.3))
        pay = int(rng.lognormvariate(10.5, 0.4))
        inner = auth + pay + db + 2000
        root = span(
            "frontend",
            "GET /checkout",
            "SERVER",
            t0,
            inner + 3000,
            None,
            "ERROR" if error else "UNSET",
            "upstream payment failed" if error else None,
            **{"http.route": "/checkout", "http.status_code": 500 if error else 200},
        )
        co = span(
            "checkout",
            "POST /orders",
            "SERVER",
            t0 + 1000,
            inner,
            root,
            "ERROR" if error else "UNSET",
            **{"order.items": rng.randint(1, 5)},
        )
        span("auth", "Authenticate", "SERVER", t0 + 1200, auth, co)
        span(
            "payment",
            "Charge",
            "CLIENT",
            t0 + 1500 + auth,
            pay,
            co,
            "ERROR" if error else "OK",
            "card declined for jane@example.org" if error else None,
            **{"payment.provider": rng.choice(["stripe", "adyen"])},
        )
        span("checkout", "INSERT orders", "CLIENT", t0 + 1800 + auth + pay, db, co, **{"db.system": "postgresql"})
    else:
        db = int(rng.lognormvariate(8.0, 0.5)) + (2_000_000 if slow else 0)
        root = span(
            "frontend",
            "GET /search",
            "SERVER",
            t0,
            db + 4000,
            None,
            **{"http.route": "/search", "http.status_code": 200},
        )
        se = span("search", "Query", "SERVER", t0 + 800, db + 2500, root, **{"search.terms": rng.randint(1, 4)})
        span("search", "SELECT products", "CLIENT", t0 + 1200, db, se, **{"db.system": "postgresql"})
    return spans


def _spans(seed: int, partition: int, partitions: int, start_ms: int, rate_per_s: float) -> Iterator[tuple[dict, int]]:
    """The spans partition ``partition`` carries: span i of trace k goes to partition
    (k + i) % partitions, so every trace is spread over several partitions, as when each
    service exports on its own. Yields (span, arrival_ms)."""
    gap_ms = 1000.0 / (rate_per_s * LOG_TRACE_RATIO)
    k = 0
    while True:
        t_k = start_ms + int(k * gap_ms)
        for i, sp in enumerate(make_trace(seed, k, t_k)):
            if (k + i) % partitions == partition:
                end_ms = sp.pop("_end_ms")
                yield sp, end_ms + 5 + i
        k += 1


def _malform(kind: str, rec: dict, rng: random.Random, arrival: int, max_bytes: int) -> bytes:
    rec = dict(rec)
    rec.pop("_arrival", None)
    body = json.dumps(rec).encode()
    if kind == "invalid_json":
        return body.replace(b'":', b'" ', 1)
    if kind == "truncated":
        return body[: len(body) // 2]
    if kind == "not_utf8":
        return body.replace(b'"prod"', b'"pr\xff\xfed"').replace(b'"/', b'"/\xc3\x28', 1)
    if kind == "empty":
        return b""
    if kind == "wrong_type" and "kind" in rec:
        rec["name"] = 12345
        return json.dumps(rec).encode()
    if kind == "missing_field" and "kind" in rec:
        rec.pop("name")
        return json.dumps(rec).encode()
    if kind == "unknown_kind":
        rec["kind"] = "TALLY"
        return json.dumps(rec).encode()
    if kind == "wrong_type":
        key = "page" if "page" in rec else "message"
        rec[key] = 12345
        return json.dumps(rec).encode()
    if kind == "missing_field":
        rec.pop("session_id" if "session_id" in rec else "trace_id" if "start_time" in rec else "service")
        return json.dumps(rec).encode()
    if kind == "unknown_event_type":
        rec["events"] = rec["events"] + [{"type": "teleport"}]
        return json.dumps(rec).encode()
    if kind == "unknown_level":
        rec["level"] = "LOUD"
        return json.dumps(rec).encode()
    if kind == "bad_trace_id":
        rec["trace_id"] = "not-a-trace-id"
        return json.dumps(rec).encode()
    if kind == "bad_timestamp":
        rec["timestamp"] = "yesterday at noon"
        return json.dumps(rec).encode()
    if kind == "oversized":
        rec["padding"] = "x" * (max_bytes + 10)
        return json.dumps(rec).encode()
    if kind == "far_future" and "start_time" in rec:
        rec["start_time"] = _iso_us((arrival + 2 * 86400_000) * 1000)
        rec["end_time"] = _iso_us((arrival + 2 * 86400_000 + 5) * 1000)
        return json.dumps(rec).encode()
    if kind == "far_future":
        rec["timestamp"] = _iso(arrival + 2 * 86400_000)
        return json.dumps(rec).encode()
    if kind == "ancient":
        rec["timestamp"] = _iso(arrival - 400 * 86400_000)
        return json.dumps(rec).encode()
    if kind == "bad_span_id":
        rec["span_id"] = "zz" + rec["span_id"][2:]
        return json.dumps(rec).encode()
    if kind == "bad_ip":
        rec["client_ip"] = "999.12.1"
        return json.dumps(rec).encode()
    raise ValueError(kind)


def _span_records(seed, partition, partitions, start_ms, rate_per_s) -> Iterator[dict]:
    for sp, arrival in _spans(seed, partition, partitions, start_ms, rate_per_s):
        yield {**sp, "_arrival": arrival}


def partition_stream(
    signal: str,
    topic: str,
    partition: int,
    count: int,
    *,
    seed: int = 42,
    start_ms: int,
    rate_per_s: float = 1000.0,
    bad_fraction: float = 0.01,
    max_bytes: int = DEFAULT_MAX_BYTES,
    partitions: int = 4,
) -> Iterator[Generated]:
    """The first ``count`` records of one partition's deterministic stream."""
    h = int.from_bytes(hashlib.sha256(f"{seed}/{topic}/{partition}".encode()).digest()[:8], "big")
    rng = random.Random(h)
    bad_rng = random.Random(h ^ 0x5EED)
    clock = _Clock(start_ms, rate_per_s, rng)
    if signal == "event":
        good, kinds = _event_envelopes(rng, clock, partition), EVENT_BAD_KINDS
    elif signal == "log":
        good, kinds = _logs(rng, clock, partition, seed), LOG_BAD_KINDS
    elif signal == "span":
        good, kinds = _span_records(seed, partition, partitions, start_ms, rate_per_s), SPAN_BAD_KINDS
    elif signal == "metric":
        good, kinds = _metrics(rng, clock, partition), METRIC_BAD_KINDS
    else:
        raise ValueError(f"the embedded generator has no {signal!r} traffic")
    next_kind = bad_rng.randrange(len(kinds))
    n = 0
    while count < 0 or n < count:
        n += 1
        rec = next(good)
        arrival = rec.pop("_arrival")
        if bad_rng.random() < bad_fraction:
            kind, reason = kinds[next_kind % len(kinds)]
            next_kind += 1
            yield Generated(_malform(kind, rec, bad_rng, arrival, max_bytes), arrival, reason, kind)
        else:
            yield Generated(json.dumps(rec, separators=(",", ":")).encode(), arrival, None)


@dataclass(frozen=True)
class EmbeddedPartition:
    """One partition of the embedded source: what a runner reads from."""

    source: str
    signal: str
    topic: str
    partition: int
    count: int

    @property
    def key(self) -> str:
        return f"{self.topic}:{self.partition}"


@dataclass
class EmbeddedSource:
    """All partitions of the spec's sources, with ``count`` records per source split
    evenly over its partitions."""

    sources: list  # list[pipelines.spec.SourceSpec]
    count: int
    seed: int = 42
    start_ms: int = 0
    rate_per_s: float = 1000.0
    bad_fraction: float = 0.01
    batch_size: int = 5000
    max_bytes: int = DEFAULT_MAX_BYTES
    deadline: float | None = None  # time.monotonic() after which unbounded streams stop

    def partitions(self) -> list[EmbeddedPartition]:
        out: list[EmbeddedPartition] = []
        for s in self.sources:
            if self.count < 0:
                out.extend(EmbeddedPartition(s.name, s.signal, s.topic, p, -1) for p in range(s.partitions))
                continue
            base, extra = divmod(self.count, s.partitions)
            for p in range(s.partitions):
                out.append(EmbeddedPartition(s.name, s.signal, s.topic, p, base + (1 if p < extra else 0)))
        return out

    def stream(self, part: EmbeddedPartition) -> Iterator[Generated]:
        n_parts = next((s.partitions for s in self.sources if s.name == part.source), 1)
        return partition_stream(
            part.signal,
            part.topic,
            part.partition,
            part.count,
            seed=self.seed,
            start_ms=self.start_ms,
            rate_per_s=self.rate_per_s / max(1, len(self.partitions())),
            bad_fraction=self.bad_fraction,
            max_bytes=self.max_bytes,
            partitions=n_parts,
        )

    def batches(self, part: EmbeddedPartition, start_offset: int = 0) -> Iterator[RawBatch]:
        """Raw batches of one partition from ``start_offset`` on (offsets are 0-based
        positions in the partition stream, as in Kafka)."""
        import time

        n_parts = next((s.partitions for s in self.sources if s.name == part.source), None)
        values: list[bytes | None] = []
        offsets: list[int] = []
        stamps: list[int] = []
        for off, g in enumerate(self.stream(part)):
            if off < start_offset:
                continue
            if self.deadline is not None and len(values) == 0 and time.monotonic() >= self.deadline:
                return
            values.append(g.value)
            offsets.append(off)
            stamps.append(g.timestamp_ms)
            if len(values) >= self.batch_size:
                yield RawBatch(
                    part.source, part.topic, part.partition, values, offsets, stamps, topic_partitions=n_parts
                )
                values, offsets, stamps = [], [], []
        if values:
            yield RawBatch(part.source, part.topic, part.partition, values, offsets, stamps, topic_partitions=n_parts)


class MaterializedSource:
    """An :class:`EmbeddedSource` generated up front and replayed from memory, so that a
    benchmark times the pipeline, not the generator. Same partitions, same batches."""

    _REGISTRY: dict[int, dict] = {}

    def __init__(self, source: EmbeddedSource):
        self.source = source
        self._parts = source.partitions()
        self._batches = {p.key: list(source.batches(p)) for p in self._parts}
        self._key = id(self)
        MaterializedSource._REGISTRY[self._key] = self._batches

    def __getstate__(self):
        # engines pickle their operators; the records stay in this process's memory
        return {"source": self.source, "_parts": self._parts, "_key": self._key}

    def __setstate__(self, state):
        self.__dict__.update(state)
        try:
            self._batches = MaterializedSource._REGISTRY[self._key]
        except KeyError:
            raise RuntimeError(
                "a MaterializedSource replays from memory and only runs in the process that built it"
            ) from None

    def partitions(self) -> list[EmbeddedPartition]:
        return self._parts

    def batches(self, part: EmbeddedPartition, start_offset: int = 0) -> Iterator[RawBatch]:
        for b in self._batches[part.key]:
            if b.next_offset <= start_offset:
                continue
            yield b.slice_from(start_offset) if b.offsets[0] < start_offset else b

    def records(self) -> int:
        return sum(len(b) for bs in self._batches.values() for b in bs)
