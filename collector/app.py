"""The door's ASGI app (Starlette): routes, limits, keys, CORS, back-pressure, metrics.

Every 2xx is sent after Kafka acknowledged every record of the request (the accepted ones
and the door rejects, on the signal's topic; a reject carries the door's verdict in its
headers and the pipeline turns it into a row of ``obs.dead_letters``, see
:mod:`transforms.door_verdicts`). Answers otherwise: 503 +
Retry-After when Kafka is unreachable or slow, the local queue or the in-flight bounds are
full (at once, never a hang past ``request_timeout``); 429 + Retry-After over a key's rate
limit; 400 (not the format), 401 (key), 403 (origin), 413 (too large), 415 (content type
or encoding) for input that will never be accepted."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import ipaddress
import logging
import os
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from core.errors import ObsflowError
from core.routing import Route
from collector.events import BodyError, EventJudge, Judged, now_ms
from collector.otlp import BadRequest, OtlpSplitter, parse, response
from collector.producer import PHASES, DoorProducer, Headers, Record, Unavailable
from pipelines.spec import PipelineSpec, ValidateStep
from transforms.door_verdicts import DETAIL_HEADER, MAX_DETAIL, REJECT_HEADER

log = logging.getLogger("obsflow.collect")

TRACKER_JS = Path(__file__).parent / "tracker" / "dist" / "tracker.js"
GIF = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
SIGNALS = {"/v1/traces": "span", "/v1/logs": "log", "/v1/metrics": "metric"}
ALLOWED_HEADERS = {"content-type", "content-encoding", "authorization", "x-obsflow-key", "x-obsflow-sent-at"}


class HttpError(ObsflowError):
    """An HTTP answer other than 2xx: ``status``, one-line ``message``, whether to send
    Retry-After, and ``refused``: the reason label under which a request whose data is not
    stored is counted in ``obsflow_collect_refused_requests_total`` (None: not counted
    there, e.g. a body the door kept as a dead letter)."""

    def __init__(self, status: int, message: str, retry_after: bool = False, refused: str = ""):
        super().__init__(message)
        self.status, self.message, self.retry_after = status, message, retry_after
        self.refused: str | None = refused or _REFUSED_BY_STATUS.get(status, f"http_{status}")

    def kept(self) -> HttpError:
        """This answer, for a request whose data the door stored (not counted as refused)."""
        self.refused = None
        return self


#: the refusal reason of an answer that does not name its own, by status
_REFUSED_BY_STATUS = {
    400: "bad_request",
    401: "write_key",
    403: "origin",
    404: "no_source",
    413: "too_large",
    415: "content_type",
    429: "rate_limited",
    500: "internal_error",
    503: "unavailable",
}


class Unreadable(HttpError):
    """A body that was read but cannot be decoded (not valid gzip/deflate, an unsupported
    Content-Encoding, or decompressing past ``max_decompressed_bytes``): answered 4xx, and
    the bytes as received are kept as one door reject (``reason``) so they end in
    ``obs.dead_letters`` like every other refused record."""

    def __init__(self, status: int, message: str, body: bytes, reason: str):
        super().__init__(status, message)
        self.body, self.reason = body, reason


@dataclass(frozen=True)
class Key:
    name: str
    kind: str
    digest: bytes


@dataclass(frozen=True)
class Target:
    """Where one signal goes: topic, the source's codec, the pipeline's limits."""

    signal: str
    topic: str
    codec: str
    max_bytes: int
    validate: ValidateStep


def targets(spec: PipelineSpec) -> dict[str, Target]:
    """Topic, codec and validate settings per signal, from ``collect.topics`` and the sources."""
    out = {}
    for signal in ("event", "log", "span", "metric"):
        named = spec.collect.topics.get(signal)
        src = next(
            (s for s in spec.sources if s.signal == signal and s.topic and (named is None or s.topic == named)), None
        )
        topic = named or (src.topic if src else None)
        if topic is None:
            continue
        codec = src.codec if src else ("json" if signal == "event" else "otlp_proto")
        flow = next((f for f in spec.flows if src and f.source == src.name), None)
        step = next((s for s in (flow.steps if flow else []) if isinstance(s, ValidateStep)), None) or ValidateStep(
            kind="validate"
        )
        out[signal] = Target(signal, topic, codec, step.max_bytes, step)
    return out


def load_keys(spec: PipelineSpec) -> list[Key]:
    """Write keys as SHA-256 digests; a key whose variable is unset is an error naming it."""
    keys = []
    for k in spec.collect.keys:
        if k.env is not None:
            value = os.environ.get(k.env)
            if not value:
                raise ValueError(f"collect.keys: write key {k.name!r} reads ${k.env}, which is not set")
            digest = hashlib.sha256(value.encode()).digest()
        elif k.sha256 is not None:
            digest = bytes.fromhex(k.sha256)
        else:  # the spec model requires env or sha256
            raise ValueError(f"collect.keys: write key {k.name!r} has neither env nor sha256")
        keys.append(Key(k.name, k.kind, digest))
    return keys


class _Metrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "obsflow_collect_requests_total", "requests by route and status", ["route", "status"], registry=r
        )
        self.items = Counter(
            "obsflow_collect_records_total",
            "records (events, spans, log records, points) by signal, outcome, reason",
            ["signal", "outcome", "reason"],
            registry=r,
        )
        self.latency = Histogram(
            "obsflow_collect_produce_seconds",
            "time from produce to Kafka's acknowledgement of a request",
            registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.txn_phase = Histogram(
            "obsflow_collect_txn_phase_seconds",
            "where a transactional request's time goes: queue (per request, queued until its transaction "
            "began), begin, produce, commit (per transaction), handoff (per transaction: committed until the event loop "
            "ran its answers)",
            ["phase"],
            registry=r,
            buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
        )
        self.queue = Gauge("obsflow_collect_queue_depth", "records in the producer's queue", registry=r)
        self.inflight_bytes = Gauge(
            "obsflow_collect_inflight_bytes", "request bytes held, not yet answered", registry=r
        )
        self.inflight_requests = Gauge(
            "obsflow_collect_inflight_requests", "requests held, not yet answered", registry=r
        )
        self.ready = Gauge("obsflow_collect_ready", "1 when Kafka answers and the door takes data", registry=r)
        self.transactions = Gauge(
            "obsflow_collect_transactions_committed", "Kafka transactions committed since start", registry=r
        )
        self.commit_retries = Gauge(
            "obsflow_collect_commit_retries",
            "transaction commit attempts retried since start (the attempt timed out, collect.commit_attempt_timeout, "
            "or failed with a retriable error)",
            registry=r,
        )
        self.refused = Counter(
            "obsflow_collect_refused_requests_total",
            "requests answered without storing their data (the sender keeps it), by route and reason",
            ["route", "reason"],
            registry=r,
        )
        self.refused_bytes = Counter(
            "obsflow_collect_refused_bytes_total",
            "declared Content-Length of the refused requests (0 when not declared), by route and reason",
            ["route", "reason"],
            registry=r,
        )
        self._children: dict[tuple, Counter] = {}  # labelled children, looked up once
        self._phases = {p: self.txn_phase.labels(p) for p in PHASES}

    def phase(self, phase: str, seconds: float) -> None:
        """Observe one phase of a transactional request (thread-safe: the writers call it)."""
        self._phases[phase].observe(seconds)

    def request_done(self, route: str, status: int) -> None:
        key = ("r", route, status)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.requests.labels(route, str(status))
        child.inc()

    def item(self, signal: str, outcome: str, reason: str) -> Counter:
        """The records counter's child for these labels."""
        key = ("i", signal, outcome, reason)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.items.labels(signal, outcome, reason)
        return child


class _HotRoutes:
    """The door's ASGI app: POST and OPTIONS on the ingest routes go straight to their
    handler, without Starlette's middleware and route matching (most of a small request's
    fixed cost besides the server's); everything else (the other routes, other methods,
    lifespan, a ``root_path``) goes to the Starlette app, which answers as it always did.
    The handlers catch every exception themselves (:meth:`Door._guarded`), so the answers
    are the same either way."""

    def __init__(self, hot: dict, fallback: Starlette):
        self.hot, self.fallback = hot, fallback

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["method"] in _HOT_METHODS and not scope.get("root_path"):
            handler = self.hot.get(scope["path"])
            if handler is not None:
                resp = await handler(Request(scope, receive))
                await resp(scope, receive, send)
                return
        await self.fallback(scope, receive, send)


_HOT_METHODS = frozenset(("POST", "OPTIONS"))


class Door:
    """State of one collector process; :attr:`asgi` is the ASGI app (:class:`_HotRoutes` in
    front of the Starlette app :attr:`starlette`)."""

    def __init__(self, spec: PipelineSpec, producer: DoorProducer | None = None):
        self.spec = spec
        self.cfg = spec.collect
        self.targets = targets(spec)
        self.keys = load_keys(spec)
        timeout = self.cfg.request_timeout.total_seconds()
        self.timeout = timeout
        self.judge_window = self.cfg.judge_window.total_seconds()
        self.retry_after = str(max(1, round(self.cfg.retry_after.total_seconds())))
        self.producer = producer or DoorProducer(
            spec.kafka.bootstrap,
            dict(self.cfg.producer),
            message_timeout_s=timeout,
            check_interval_s=self.cfg.ready_check_interval.total_seconds(),
            transactional=self.cfg.transactions,
            writers=self.cfg.transaction_writers,
            commit_attempt_s=self.cfg.commit_attempt_timeout.total_seconds(),
            linger_s=self.cfg.transaction_linger.total_seconds(),
        )
        self.metrics = _Metrics()
        self.producer.observe = self.metrics.phase
        self.inflight_bytes = 0
        self.inflight_requests = 0
        self.draining = False
        self.buckets: dict[str, tuple[float, float]] = {}
        self.proxies = [ipaddress.ip_network(p, strict=False) for p in self.cfg.trusted_proxies]
        ev = self.targets.get("event")
        self.events = (
            EventJudge(
                ev.validate if ev else ValidateStep(kind="validate"),
                self.cfg.max_event_bytes,
                self.cfg.public_max_past.total_seconds(),
            )
            if ev
            else None
        )
        self.splitters = {s: OtlpSplitter(s, t.codec, t.max_bytes) for s, t in self.targets.items() if s != "event"}
        self._judge_queue: list = []
        routes = [Route(p, self.otlp, methods=["POST", "OPTIONS"]) for p in SIGNALS]
        routes += [
            Route("/v1/events", self.post_events, methods=["POST", "OPTIONS"]),
            Route("/v1/beacon", self.post_events, methods=["POST", "OPTIONS"]),
            Route("/v1/pixel.gif", self.pixel, methods=["GET"]),
            Route("/tracker.js", self.tracker, methods=["GET"]),
            Route("/healthz", self.healthz, methods=["GET"]),
            Route("/readyz", self.readyz, methods=["GET"]),
            Route("/metrics", self.prom, methods=["GET"]),
        ]
        self.starlette = Starlette(routes=routes, lifespan=self._lifespan)
        hot = {p: self.otlp for p in SIGNALS} | {"/v1/events": self.post_events, "/v1/beacon": self.post_events}
        self.asgi = _HotRoutes(hot, self.starlette)

    # -- plumbing ---------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _lifespan(self, app):
        yield
        await self.shutdown()

    async def shutdown(self) -> None:
        """Not ready, wait for in-flight requests (``drain_timeout``), flush, close."""
        self.draining = True
        deadline = time.monotonic() + self.cfg.drain_timeout.total_seconds()
        while self.inflight_requests and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        left = await asyncio.to_thread(self.producer.close, max(0.0, deadline - time.monotonic()) + 1)
        if left:
            log.warning("collect: %d records still queued at exit", left)

    def _cors(self, request: Request) -> dict[str, str]:
        origin = request.headers.get("origin")
        if not origin:
            return {}
        allowed = self.cfg.cors_origins
        if origin not in allowed and "*" not in allowed:
            raise HttpError(403, f"origin {origin[:100]!r} is not in collect.cors_origins")
        h = {
            "Access-Control-Allow-Origin": origin if (origin in allowed or self.cfg.cors_credentials) else "*",
            "Vary": "Origin",
            "Access-Control-Expose-Headers": "Retry-After",
        }
        if self.cfg.cors_credentials:
            h["Access-Control-Allow-Credentials"] = "true"
        return h

    def _preflight(self, request: Request) -> Response:
        try:
            h = self._cors(request)
        except HttpError as e:
            return self._error(request, e, {})
        asked = {
            x.strip().lower() for x in request.headers.get("access-control-request-headers", "").split(",") if x.strip()
        }
        if asked - ALLOWED_HEADERS:
            return Response(status_code=403, content=f"headers not allowed: {sorted(asked - ALLOWED_HEADERS)}")
        h.update(
            {
                "Access-Control-Allow-Methods": "POST, OPTIONS",
                "Access-Control-Allow-Headers": ", ".join(sorted(ALLOWED_HEADERS)),
                "Access-Control-Max-Age": "600",
            }
        )
        return Response(status_code=204, headers=h)

    def _key(self, request: Request) -> Key:
        """The request's write key (constant-time over every configured key)."""
        if not self.keys:
            return Key("anonymous", "secret", b"")
        given = request.headers.get("x-obsflow-key")
        auth = request.headers.get("authorization", "")
        if not given and auth[:7].lower() == "bearer ":
            given = auth[7:].strip()
        if not given:
            given = request.query_params.get("key")
        if not given:
            raise HttpError(401, "a write key is required (header X-Obsflow-Key or Authorization: Bearer, or ?key=)")
        digest = hashlib.sha256(given.encode()).digest()
        found = None
        for k in self.keys:
            if hmac.compare_digest(digest, k.digest) and found is None:
                found = k
        if found is None:
            raise HttpError(401, "unknown write key")
        return found

    def _rate(self, key: Key, n: int) -> None:
        rate = self.cfg.rate_limit_per_key
        if rate is None:
            return
        burst = self.cfg.rate_limit_burst or rate
        now = time.monotonic()
        tokens, last = self.buckets.get(key.name, (burst, now))
        tokens = min(burst, tokens + (now - last) * rate)
        if tokens < n:
            self.buckets[key.name] = (tokens, now)
            raise HttpError(
                429, f"write key {key.name!r} is over its rate limit of {rate:g} records/s", retry_after=True
            )
        self.buckets[key.name] = (tokens - n, now)

    def client_ip(self, request: Request) -> str | None:
        """The sender's address: the peer, or through trusted proxies the first untrusted
        X-Forwarded-For hop from the right. Never logged."""
        peer = request.client.host if request.client else None
        if not self.proxies:
            return peer
        chain = [peer] if peer else []
        xff = request.headers.get("x-forwarded-for")
        if xff and self.proxies:
            chain = [h.strip() for h in xff.split(",") if h.strip()] + chain
        for hop in reversed(chain):
            try:
                addr = ipaddress.ip_address(hop)
            except ValueError:
                return None
            if not any(addr in net for net in self.proxies):
                return str(addr)
        return chain[0] if chain else None

    async def _body(self, request: Request) -> bytes:
        """The body, decompressed, within the limits; counts toward in-flight bytes."""
        cfg = self.cfg
        length = request.headers.get("content-length")
        if length is not None:
            try:
                n = int(length)
            except ValueError:
                raise HttpError(400, "Content-Length is not a number") from None
            if n > cfg.max_request_bytes:
                raise HttpError(
                    413,
                    f"body of {n} bytes exceeds collect.max_request_bytes ({cfg.max_request_bytes})",
                    refused="too_large_declared",
                )
            self._hold(n)
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > cfg.max_request_bytes:
                raise HttpError(413, f"body exceeds collect.max_request_bytes ({cfg.max_request_bytes})")
            if length is None:
                self._hold(len(chunk))
            chunks.append(chunk)
        body = b"".join(chunks)
        enc = request.headers.get("content-encoding", "identity").strip().lower()
        if enc in ("", "identity"):
            return body
        if enc not in ("gzip", "deflate"):
            raise Unreadable(
                415,
                f"Content-Encoding {enc[:40]!r} is not supported (gzip, deflate, identity)",
                body,
                "format_violation",
            )
        limit = cfg.max_decompressed_bytes
        parts, total, rest = [], 0, body
        while True:  # every member of a multi-member gzip stream, within one limit for all
            d = zlib.decompressobj(16 + zlib.MAX_WBITS if enc == "gzip" else zlib.MAX_WBITS)
            try:
                out = d.decompress(rest, limit + 1 - total)
            except zlib.error as e:
                raise Unreadable(400, f"body is not valid {enc}: {e}", body, "format_violation") from None
            total += len(out)
            if total > limit or d.unconsumed_tail:
                raise Unreadable(
                    413,
                    f"body decompresses to more than collect.max_decompressed_bytes ({limit})",
                    body,
                    "size_violation",
                )
            if not d.eof:
                raise Unreadable(400, f"body is truncated {enc}", body, "format_violation")
            parts.append(out)
            rest = d.unused_data
            if not rest or enc != "gzip":
                break
        if rest:
            raise Unreadable(400, f"{len(rest)} bytes after the end of the {enc} stream", body, "format_violation")
        out = b"".join(parts)
        self._hold(len(out))
        return out

    def _hold(self, n: int) -> None:
        if self.inflight_bytes + n > self.cfg.max_inflight_bytes:
            raise HttpError(503, "collector is at its in-flight byte bound", retry_after=True, refused="inflight_bytes")
        self.inflight_bytes += n
        request_bytes = _HELD.get()
        _HELD.set(request_bytes + n)

    def _error(self, request: Request, e: HttpError, cors: dict, json_status: bool = False) -> Response:
        h = dict(cors)
        if e.retry_after:
            h["Retry-After"] = self.retry_after
        return Response(
            orjson.dumps({"error": e.message}), status_code=e.status, headers=h, media_type="application/json"
        )

    def _refuse(self, request: Request, route: str, e: HttpError, cors: dict) -> Response:
        """The error answer; counted as a refused request (with its declared bytes) unless
        its data was kept (``e.refused`` None)."""
        if e.refused is not None:
            try:
                declared = max(0, int(request.headers.get("content-length") or 0))
            except ValueError:
                declared = 0
            self.metrics.refused.labels(route, e.refused).inc()
            self.metrics.refused_bytes.labels(route, e.refused).inc(declared)
        return self._error(request, e, cors)

    async def _read(self, request: Request, target: Target) -> bytes:
        """:meth:`_body`; a body that was read but cannot be decoded is kept as a door
        reject first (:class:`Unreadable`), then answered."""
        try:
            return await self._body(request)
        except Unreadable as e:
            if not e.body.strip():  # nothing to keep: counted as refused
                raise
            await self._reject_body(target, e.body, now_ms(), e.message, e.reason)
            raise e.kept() from None

    async def _guarded(self, request: Request, route: str, handler) -> Response:
        """Bounds, CORS, the handler; in-flight accounting released whatever happens."""
        if request.method == "OPTIONS":
            resp = self._preflight(request)
            self.metrics.request_done(route, resp.status_code)
            return resp
        _HELD.set(0)
        cors: dict = {}
        self.inflight_requests += 1
        try:
            cors = self._cors(request)
            if self.draining:
                raise HttpError(503, "collector is shutting down", retry_after=True, refused="draining")
            if self.inflight_requests > self.cfg.max_inflight_requests:
                raise HttpError(
                    503, "collector is at its in-flight request bound", retry_after=True, refused="inflight_requests"
                )
            if not self.producer.ready or self.producer.broker_down:
                raise HttpError(503, "Kafka is unreachable", retry_after=True, refused="kafka_unavailable")
            resp = await handler(request, cors)
        except HttpError as e:
            resp = self._refuse(request, route, e, cors)
        except ClientDisconnect:
            resp = self._refuse(
                request,
                route,
                HttpError(400, "client disconnected before the body ended", refused="client_disconnected"),
                cors,
            )
        except Unavailable as e:
            resp = self._refuse(
                request,
                route,
                HttpError(503, f"Kafka did not take the records: {e}", True, refused="kafka_unavailable"),
                cors,
            )
        except Exception as e:
            log.exception("collect: internal error on %s", route)
            resp = self._refuse(request, route, HttpError(500, f"internal error: {type(e).__name__}"), cors)
        finally:
            self.inflight_requests -= 1
            self.inflight_bytes -= _HELD.get()
        self.metrics.request_done(route, resp.status_code)
        return resp

    async def _produce(self, records: list[Record]) -> None:
        started = time.perf_counter()
        await self.producer.send(records, self.timeout)
        self.metrics.latency.observe(time.perf_counter() - started)

    @staticmethod
    def _rejects(target: Target, items: list[tuple[bytes, str, str, bytes | None]], headers: Headers) -> list[Record]:
        """Records for the door rejects ``(raw, reason, detail, key)``: on the signal's topic,
        with the verdict in headers (the pipeline dead-letters them with that reason; see
        :mod:`transforms.door_verdicts`). A raw value over the flow's ``validate.max_bytes``
        is cut to it (its detail names the size)."""
        return [
            Record(
                target.topic,
                raw[: target.max_bytes],
                key,
                headers + [(REJECT_HEADER, reason.encode()), (DETAIL_HEADER, detail[:MAX_DETAIL].encode())],
            )
            for raw, reason, detail, key in items
        ]

    async def _reject_body(
        self, target: Target, body: bytes, received_ms: int, detail: str, reason: str = "format_violation"
    ) -> None:
        """A body of a key holder that is not the format at all (answered 4xx) is kept as one
        ``reason`` record (default ``format_violation``), so it too ends in
        ``obs.dead_letters``; an empty body is not kept. Kafka must take it first (else
        :class:`Unavailable`: 503, and the client's retry gets its 4xx once it is kept)."""
        if not body.strip():
            return
        await self._produce(
            self._rejects(target, [(body, reason, detail, None)], [("received_at", str(received_ms).encode())])
        )
        self.metrics.item(target.signal, "rejected", reason).inc()

    async def _judge(self, items: list, kw: dict) -> Judged:
        """One request's verdicts. Plainly valid envelopes (and items that are not
        objects) are judged at once (:meth:`EventJudge.prepare`); a request with envelopes
        that need the codec + validator pass is judged together with every such request
        that reaches this point within ``collect.judge_window`` while others are being
        answered (one pass for all: its fixed cost is most of a small request's CPU). A
        request alone (no other in flight) is judged in the same turn of the event loop."""
        judge = self.events
        assert judge is not None  # only the events route judges, and it answers 404 without an events source
        prepared = judge.prepare(items, kw)
        if not prepared.pending:
            return prepared
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._judge_queue.append((prepared, kw, fut))
        if len(self._judge_queue) == 1:
            if self.inflight_requests > 1:
                loop.call_later(self.judge_window, self._judge_now)
            else:
                loop.call_soon(self._judge_now)
        return await fut

    def _judge_now(self) -> None:
        pending, self._judge_queue = self._judge_queue, []
        judge = self.events
        assert judge is not None
        try:
            results = judge.finish(
                [p for p, _, _ in pending], [kw for _, kw, _ in pending], self.targets["event"].topic
            )
        except Exception as e:  # noqa: BLE001 - each waiting request answers for itself
            for _, _, fut in pending:
                if not fut.done():
                    fut.set_exception(e)
            return
        for (_, _, fut), res in zip(pending, results):
            if not fut.done():
                fut.set_result(res)

    # -- routes -------------------------------------------------------------------------------

    async def otlp(self, request: Request) -> Response:
        path = request.scope["path"]  # not request.url, which builds a URL object per request
        signal = SIGNALS[path]
        return await self._guarded(request, path, lambda r, c: self._otlp(r, c, signal))

    async def _otlp(self, request: Request, cors: dict, signal: str) -> Response:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype not in ("application/x-protobuf", "application/json", "application/protobuf"):
            raise HttpError(415, f"Content-Type {ctype!r}: OTLP/HTTP takes application/x-protobuf or application/json")
        is_json = ctype == "application/json"
        target = self.targets.get(signal)
        if target is None:
            raise HttpError(404, f"no source in the spec reads signal {signal!r}")
        key = self._key(request)
        body = await self._read(request, target)
        received = now_ms()
        try:
            msg = parse(signal, body, is_json)
        except BadRequest as e:
            await self._reject_body(target, body, received, str(e))
            raise HttpError(400, str(e)).kept() from None
        split = (
            await asyncio.to_thread(self.splitters[signal].split, msg)
            if len(body) > 262144
            else self.splitters[signal].split(msg)
        )
        self._rate(key, split.accepted_items + split.rejected_items)
        headers: Headers = [("received_at", str(received).encode())]
        records = [Record(target.topic, v, k, headers) for k, v in split.messages]
        records += self._rejects(target, [(v, r, d, None) for v, r, d, _ in split.rejects], headers)
        await self._produce(records)
        if split.accepted_items:
            self.metrics.item(signal, "accepted", "").inc(split.accepted_items)
        for _, r, _, n in split.rejects:
            self.metrics.item(signal, "rejected", r).inc(n)
        msg_text = ""
        if split.rejects:
            r0 = split.rejects[0]
            msg_text = f"{split.rejected_items} rejected ({r0[1]}: {r0[2][:200]})"
        return Response(
            response(signal, split.rejected_items, msg_text, is_json),
            status_code=200,
            headers=cors,
            media_type="application/json" if is_json else "application/x-protobuf",
        )

    async def post_events(self, request: Request) -> Response:
        return await self._guarded(request, request.scope["path"], self._events)

    async def _events(self, request: Request, cors: dict, items: list | None = None, pixel: bool = False) -> Response:
        if self.events is None:
            raise HttpError(404, "no source in the spec reads signal 'event'")
        target = self.targets["event"]
        key = self._key(request)
        sent_at = request.headers.get("x-obsflow-sent-at")
        if items is None:
            ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
            if ctype not in ("application/json", "application/x-ndjson", "application/ndjson", "text/plain", ""):
                raise HttpError(
                    415, f"Content-Type {ctype!r}: events take application/json, application/x-ndjson or text/plain"
                )
            body = await self._read(request, target)
            try:
                items, body_sent = _parse_events(body, ctype)
            except BodyError as e:
                await self._reject_body(target, body, now_ms(), str(e))
                raise HttpError(400, str(e)).kept() from None
            sent_at = body_sent or sent_at
        if len(items) > self.cfg.max_events_per_request:
            raise HttpError(
                413,
                f"{len(items)} events exceed collect.max_events_per_request ({self.cfg.max_events_per_request})",
                refused="too_many_events",
            )
        self._rate(key, len(items))
        received = now_ms()
        judged = await self._judge(
            items,
            {
                "key_name": key.name,
                "public": key.kind == "public",
                "client_ip": self.client_ip(request),
                "user_agent": request.headers.get("user-agent"),
                "sent_at": sent_at,
                "received_ms": received,
            },
        )
        records: list[Record] = []
        dead: list[tuple[bytes, str, str, bytes | None, Headers]] = []
        results: list[dict] = []
        base: Headers = [("received_at", str(received).encode())]
        by_sent: dict[str | None, Headers] = {None: base}  # one (read-only) headers list per distinct sent_at
        topic = target.topic
        n, sents = len(judged.payloads), judged.sent_at
        every = n > 0 and judged.reasons.count(None) == n and sents.count(sents[0]) == n
        if every:  # every envelope accepted, one sent_at (the common request): the same records and answer, in bulk
            sent0 = sents[0] or None
            h0 = base if sent0 is None else base + [("sent_at", sent0.encode())]
            records = [Record(topic, payload, key_, h0) for payload, key_ in zip(judged.payloads, judged.keys)]
        accepted_at = _accepted_results(n)
        for i, (payload, key_, sent, reason) in enumerate(
            zip(judged.payloads, judged.keys, sents, judged.reasons, strict=True) if not every else ()
        ):
            h = by_sent.get(sent or None)
            if h is None:
                h = by_sent[sent] = base + [("sent_at", (sent or "").encode())]
            if reason is None:
                records.append(Record(topic, payload, key_, h))
                results.append(accepted_at[i])
            else:
                dead.append((payload, reason, judged.details[i] or "", key_, h))
                results.append({"index": i, "status": "rejected", "reason": reason, "detail": judged.details[i]})
        for payload, reason, detail, key_, h in dead:
            records += self._rejects(target, [(payload, reason, detail, key_)], h)
        await self._produce(records)
        accepted = len(items) - len(dead)
        if accepted:
            self.metrics.item("event", "accepted", "").inc(accepted)
        for _, r, _, _, _ in dead:
            self.metrics.item("event", "rejected", r).inc()
        if pixel:
            return Response(
                GIF,
                status_code=200 if accepted else 400,
                media_type="image/gif",
                headers={**cors, "Cache-Control": "no-store"},
            )
        status = 200 if accepted or not items else 400
        return Response(
            _all_accepted_answer(n)
            if every
            else orjson.dumps({"accepted": accepted, "rejected": len(dead), "results": results}),
            status_code=status,
            headers=cors,
            media_type="application/json",
        )

    async def pixel(self, request: Request) -> Response:
        """``GET /v1/pixel.gif?e=<JSON envelope>`` or ``?page=&session_id=&type=&target=&ts=``."""

        async def handler(req: Request, cors: dict) -> Response:
            q = parse_qs(req.url.query, keep_blank_values=False)
            if "e" in q:
                try:
                    items = [orjson.loads(q["e"][0])]
                except orjson.JSONDecodeError as e:
                    target = self.targets.get("event")
                    if target is None:
                        raise HttpError(404, "no source in the spec reads signal 'event'") from None
                    self._key(req)  # only a key holder's data is kept
                    detail = f"e: invalid JSON: {e}"
                    await self._reject_body(
                        target, q["e"][0].encode(), now_ms(), detail
                    )  # kept like a body that is not JSON
                    raise HttpError(400, detail).kept() from None
            else:
                one = {k: v[0] for k, v in q.items() if k not in ("key",)}
                inter = {"type": one.pop("type", "page_view")}
                if "target" in one:
                    inter["target"] = one.pop("target")
                env: dict[str, object] = {
                    k: one[k] for k in ("event_id", "page", "session_id", "user", "location", "platform") if k in one
                }
                ts = one.get("ts")
                env["timestamp"] = int(ts) if ts and ts.isdigit() else ts
                env["events"] = [inter]
                items = [env]
            return await self._events(req, cors, items=items, pixel=True)

        return await self._guarded(request, "/v1/pixel.gif", handler)

    async def tracker(self, request: Request) -> Response:
        if not TRACKER_JS.exists():
            return Response("tracker not built (npm run build in collector/tracker)", status_code=404)
        return Response(
            TRACKER_JS.read_bytes(),
            media_type="application/javascript",
            headers={"Cache-Control": "public, max-age=300"},
        )

    async def healthz(self, request: Request) -> Response:
        return Response(b"ok", media_type="text/plain")

    async def readyz(self, request: Request) -> Response:
        ok = self.producer.ready and not self.producer.broker_down and not self.draining
        return Response(b"ready" if ok else b"not ready", status_code=200 if ok else 503, media_type="text/plain")

    async def prom(self, request: Request) -> Response:
        m = self.metrics
        m.queue.set(self.producer.queue_depth())
        m.inflight_bytes.set(self.inflight_bytes)
        m.inflight_requests.set(self.inflight_requests)
        m.ready.set(1 if self.producer.ready and not self.draining else 0)
        m.transactions.set(self.producer.transactions)
        m.commit_retries.set(self.producer.commit_retries)
        return Response(generate_latest(m.registry), media_type="text/plain; version=0.0.4")


_ACCEPTED_RESULTS: list[dict] = []


def _accepted_results(n: int) -> list[dict]:
    """``{"index": i, "status": "accepted"}`` for i < n, shared by every request (read-only:
    only serialized into answers), so an accepted event costs no new dict."""
    while len(_ACCEPTED_RESULTS) < n:
        _ACCEPTED_RESULTS.append({"index": len(_ACCEPTED_RESULTS), "status": "accepted"})
    return _ACCEPTED_RESULTS


_ALL_ACCEPTED: dict[int, bytes] = {}


def _all_accepted_answer(n: int) -> bytes:
    """The answer's body for a request of ``n`` envelopes all accepted: the bytes of
    ``{"accepted": n, "rejected": 0, "results": [{"index": i, "status": "accepted"}, ...]}``,
    made once per ``n`` up to 1024 (larger ones each time)."""
    body = _ALL_ACCEPTED.get(n)
    if body is None:
        body = orjson.dumps({"accepted": n, "rejected": 0, "results": _accepted_results(n)[:n]})
        if n <= 1024:
            _ALL_ACCEPTED[n] = body
    return body


def _parse_events(body: bytes, ctype: str):
    from collector.events import parse_body

    return parse_body(body, ctype)


import contextvars

_HELD: contextvars.ContextVar[int] = contextvars.ContextVar("held", default=0)


def create_app(spec: PipelineSpec) -> Door:
    """A :class:`Door` for ``spec`` (its ``.asgi`` is the ASGI app)."""
    return Door(spec)
