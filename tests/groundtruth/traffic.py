"""A traffic model written from the user's side, with its own answers.

Nothing here uses obsflow's code (not ``sources/generator.py``, not the pipeline's
transforms): traces are made with the OpenTelemetry SDK (five services, a frontend root
calling a backend, database calls; an error spike on checkout and a latency spike on
search at known minutes) and encoded as the Collector's Kafka exporter writes them
(``otlp_proto``, one trace per message); log lines (JSON) carry those trace ids, plus
untraced heartbeat lines; product events (JSON) walk sessions through the signup form;
metric samples (JSON) are CPU gauges. Every record has the Kafka timestamp a live
producer would give it (a trace when it ends, a line or event when it happens).

The answers are computed here from the model's own records, following the documented
semantics (README, transforms/*/README.md), never through the pipeline."""

from __future__ import annotations

import json
import math
import random
import zlib
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common._internal.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

SERVICES = ("checkout", "signup", "search", "auth", "frontend")
BACKENDS = ("checkout", "signup", "search", "auth")
#: the default spec's signup funnel, as its user reads it (transforms/product/config.py signup_funnel)
FUNNEL_STEPS = ("view", "form_start", "step_1", "step_2", "step_3", "step_4", "step_5", "submit", "complete")
HOUR_MS = 3_600_000
ROUTES = {"checkout": "POST /checkout", "signup": "POST /signup", "search": "GET /search", "auth": "POST /login"}
PARTITIONS = 4
MINUTES = 14  # more than a RED window + allowed_lateness (6 min) twice
TRACES_PER_MINUTE = 24
ERROR_SPIKE = ("checkout", 2)  # (service, minute): 60% of its calls fail
LATENCY_SPIKE = ("search", 4)  # (service, minute): its calls take 1.2 - 3 s
SLOW_MS = 1000  # the spec's latency policy threshold
LOG_PERCENT = 20  # the spec's log sampling percentage (untraced INFO lines)
HEARTBEAT_EVERY_S = 4
MIN_MS = 60_000


def _ms(ns: int) -> int:
    return ns // 1_000_000


def partition_of(key: str) -> int:
    return zlib.crc32(key.encode()) % PARTITIONS


@dataclass
class Record:
    topic: str  # logical topic: spans, logs, events, metrics
    partition: int
    value: bytes
    ts_ms: int  # Kafka record timestamp


@dataclass
class Model:
    base_ms: int
    records: list[Record] = field(default_factory=list)
    spans: list = field(default_factory=list)  # ReadableSpan
    logs: list[dict] = field(default_factory=list)  # the JSON documents
    sessions: dict[str, int] = field(default_factory=dict)  # session -> steps of the signup funnel reached
    conversions: list[tuple[int, int]] = field(default_factory=list)  # (last event ms, first step to completion ms)
    #: session -> (event ms, index in FUNNEL_STEPS or None) of each interaction, as its client stamped it
    stamped: dict[str, list[tuple[int, int | None]]] = field(default_factory=lambda: defaultdict(list))
    samples: int = 0

    # -- answers -------------------------------------------------------------------------------

    def minute(self, ns: int) -> int:
        return (_ms(ns) - self.base_ms) // MIN_MS

    def red_series(self) -> dict[tuple, list[float]]:
        """(service, operation, kind, status, minute) -> durations in ms (every span)."""
        out: dict[tuple, list[float]] = defaultdict(list)
        for s in self.spans:
            key = (
                s.resource.attributes["service.name"],
                s.name,
                s.kind.name,
                s.status.status_code.name,
                self.minute(s.start_time),
            )
            out[key].append((s.end_time - s.start_time) / 1e6)
        return out

    def calls_errors(self) -> dict[tuple, tuple[int, int]]:
        """(service, minute) -> (spans, spans with status ERROR)."""
        out: dict[tuple, list[int]] = defaultdict(lambda: [0, 0])
        for s in self.spans:
            k = (s.resource.attributes["service.name"], self.minute(s.start_time))
            out[k][0] += 1
            out[k][1] += s.status.status_code == StatusCode.ERROR
        return {k: (a, b) for k, (a, b) in out.items()}

    def traces(self) -> dict[str, list]:
        out: dict[str, list] = defaultdict(list)
        for s in self.spans:
            out[format(s.context.trace_id, "032x")].append(s)
        return out

    def kept_traces(self) -> dict[str, str]:
        """Trace id -> the policy that keeps it: ``errors`` (a span with status ERROR,
        listed first), else ``slow`` (last end - first start above the threshold)."""
        out = {}
        for tid, ss in self.traces().items():
            if any(s.status.status_code == StatusCode.ERROR for s in ss):
                out[tid] = "errors"
            elif (max(s.end_time for s in ss) - min(s.start_time for s in ss)) / 1e6 > SLOW_MS:
                out[tid] = "slow"
        return out

    def kept_logs(self) -> tuple[Counter, Counter, Counter]:
        """Per service: lines kept exactly (WARN+ always; a traced line when its trace is
        kept, weight 1), the heartbeats (untraced INFO, kept by hash: an estimate) and the
        error lines."""
        kept = self.kept_traces()
        exact, heartbeats, errors = Counter(), Counter(), Counter()
        for d in self.logs:
            if d["level"] in ("ERROR", "WARN"):
                exact[d["service"]] += 1
                errors[d["service"]] += d["level"] == "ERROR"
            elif d["trace_id"]:
                exact[d["service"]] += d["trace_id"] in kept
            else:
                heartbeats[d["service"]] += 1
        return exact, heartbeats, errors

    def funnel(self) -> list[tuple]:
        """funnel_dropoff.sql's answer over the default signup funnel (view, form_start,
        step_1..step_5, submit, complete; a step counts when the longest prefix of steps a
        session has reaches it): (step_index, step, sessions, dropped_after_step,
        pct_of_first_step). A session drops out after its last step unless that is the final
        one (a conversion)."""
        reached = [0] * len(FUNNEL_STEPS)
        last = [0] * len(FUNNEL_STEPS)
        for n in self.sessions.values():  # n: steps of the funnel the session reached (a prefix)
            for i in range(n):
                reached[i] += 1
            if 0 < n < len(FUNNEL_STEPS):
                last[n - 1] += 1
        out = []
        for i, name in enumerate(FUNNEL_STEPS):
            pct = Decimal(100 * reached[i]) / Decimal(reached[0])  # SQL's round: half away from zero
            out.append((i, name, reached[i], last[i], float(pct.quantize(Decimal("0.1"), ROUND_HALF_UP))))
        return out

    def time_to_convert(self) -> list[tuple]:
        """time_to_convert.sql's answer: per report hour of the converting sessions' last
        event, (window start ms, conversions, avg ms, p50 ms, p75 ms, p90 ms, min ms, max ms), the
        quantiles as the lower order statistic (the funnel report's definition)."""
        by_hour: dict[int, list[int]] = defaultdict(list)
        for end_ms, took in self.conversions:
            by_hour[end_ms // HOUR_MS * HOUR_MS].append(took)
        out = []
        for ws in sorted(by_hour):
            v = sorted(by_hour[ws])
            avg = Decimal(sum(v)) / Decimal(len(v))
            out.append(
                (
                    ws,
                    len(v),
                    float(avg.quantize(Decimal("0.1"), ROUND_HALF_UP)),
                    v[(len(v) - 1) // 2],
                    v[int(math.floor(0.75 * (len(v) - 1)))],
                    v[int(math.floor(0.9 * (len(v) - 1)))],
                    v[0],
                    v[-1],
                )
            )
        return out

    def step_timings(self) -> tuple[dict[tuple[int, int], list[int]], dict[int, list[int]]]:
        """The funnel's times as its user defines them, from the stamped interactions: a
        session reaches step k when steps 1..k have all occurred (whatever their order:
        client clocks jitter), at the latest of their first occurrences; a step's time is
        that moment minus the previous step's; the time to convert is the final step's
        moment minus the first step's. Returns ((report hour ms, step index) -> step times,
        report hour ms -> times to convert), a session counted in the hour of its last event."""
        steps: dict[tuple[int, int], list[int]] = defaultdict(list)
        convert: dict[int, list[int]] = defaultdict(list)
        for stamped in self.stamped.values():
            first: dict[int, int] = {}
            for ts, k in stamped:
                if k is not None and (k not in first or ts < first[k]):
                    first[k] = ts
            hour = max(ts for ts, _ in stamped) // HOUR_MS * HOUR_MS
            reached: list[int] = []  # moment each step is reached
            for k in range(len(FUNNEL_STEPS)):
                if k not in first:
                    break
                reached.append(max(first[k], reached[-1]) if reached else first[k])
            for k in range(1, len(reached)):
                steps[(hour, k)].append(reached[k] - reached[k - 1])
            if len(reached) == len(FUNNEL_STEPS):
                convert[hour].append(reached[-1] - reached[0])
        return dict(steps), dict(convert)

    def p99_by_service(self) -> dict[str, tuple[float, float, int]]:
        """p99_latency_by_service.sql's answer, exactly: service -> (worst series-minute p99,
        worst series-minute p50, SERVER calls) over the SERVER series."""
        out: dict[str, list] = {}
        for (svc, _, kind, _, _), vals in self.red_series().items():
            if kind != "SERVER":
                continue
            p99, p50 = exact_quantile(vals, 0.99), exact_quantile(vals, 0.5)
            w = out.setdefault(svc, [0.0, 0.0, 0])
            w[0], w[1], w[2] = max(w[0], p99), max(w[1], p50), w[2] + len(vals)
        return {k: tuple(v) for k, v in out.items()}


def exact_quantile(values: list[float], q: float) -> float:
    """The value at rank floor(q * (n - 1)) of the sorted values (what a DDSketch estimates
    within its relative accuracy)."""
    s = sorted(values)
    return s[int(math.floor(q * (len(s) - 1)))]


def _duration_ms(rnd: random.Random, service: str, minute: int) -> float:
    """A backend call's duration; never within 10% of the slow threshold (a trace's fate
    must not hang on a rounding)."""
    while True:
        d = rnd.uniform(1200, 3000) if (service, minute) == LATENCY_SPIKE else min(rnd.lognormvariate(3.5, 0.8), 800.0)
        if not 0.9 * SLOW_MS <= d <= 1.1 * SLOW_MS:
            return d


def build(base_ms: int, seed: int = 12) -> Model:
    """The model's traffic over MINUTES minutes from ``base_ms`` (a whole minute)."""
    rnd = random.Random(seed)
    m = Model(base_ms)
    exporter = InMemorySpanExporter()
    providers = {}
    for svc in SERVICES:
        tp = TracerProvider(resource=Resource.create({"service.name": svc, "deployment.environment.name": "prod"}))
        tp.add_span_processor(SimpleSpanProcessor(exporter))
        providers[svc] = tp
    tracers = {svc: providers[svc].get_tracer(f"shop.{svc}") for svc in SERVICES}
    base_ns = base_ms * 1_000_000
    for minute in range(MINUTES):
        for i in range(TRACES_PER_MINUTE):
            svc = BACKENDS[i % len(BACKENDS)]
            t0 = (
                base_ns
                + minute * MIN_MS * 1_000_000
                + rnd.randrange(0, 50_000) * 1_000_000
                + rnd.randrange(0, 1_000_000)
            )
            dur_ms = _duration_ms(rnd, svc, minute)
            fail = rnd.random() < (0.6 if (svc, minute) == ERROR_SPIKE else 0.04)
            root = tracers["frontend"].start_span(ROUTES[svc], kind=SpanKind.SERVER, start_time=t0)
            ctx = trace.set_span_in_context(root)
            b0 = t0 + 2_000_000
            back = tracers[svc].start_span(ROUTES[svc], kind=SpanKind.SERVER, context=ctx, start_time=b0)
            db = tracers[svc].start_span(
                "db.query", kind=SpanKind.CLIENT, context=trace.set_span_in_context(back), start_time=b0 + 1_000_000
            )
            db.end(end_time=b0 + 1_000_000 + int(dur_ms * 0.6 * 1e6))
            if fail:
                back.set_status(Status(StatusCode.ERROR, "upstream failed"))
            back.end(end_time=b0 + int(dur_ms * 1e6))
            root.end(end_time=b0 + int(dur_ms * 1e6) + 3_000_000)
            tid = format(root.get_span_context().trace_id, "032x")
            ts = [s for s in exporter.get_finished_spans() if format(s.context.trace_id, "032x") == tid]
            exporter.clear()
            m.spans += ts
            end_ms = _ms(max(s.end_time for s in ts))
            m.records.append(Record("spans", partition_of(tid), encode_spans(ts).SerializeToString(), end_ms + 1))
            _log(m, tid, svc, _ms(b0) + 1, "INFO", f"handled {ROUTES[svc]}")
            if fail:
                _log(m, tid, svc, _ms(b0) + 2, "ERROR", "upstream failed: card declined for user jane@example.org")
        for svc in SERVICES:
            for k in range(60 // HEARTBEAT_EVERY_S):
                _log(
                    m,
                    None,
                    svc,
                    base_ms + minute * MIN_MS + k * HEARTBEAT_EVERY_S * 1000 + SERVICES.index(svc),
                    "INFO",
                    "heartbeat ok",
                )
        _sessions(m, rnd, minute)
        for svc in SERVICES:
            for k in range(3):
                ts = base_ms + minute * MIN_MS + k * 20_000 + 500
                doc = {
                    "name": "process.cpu",
                    "kind": "GAUGE",
                    "value": round(rnd.random(), 4),
                    "timestamp": _iso(ts),
                    "labels": {"service": svc, "host": f"{svc}-1", "env": "prod"},
                }
                m.records.append(Record("metrics", partition_of(svc), json.dumps(doc).encode(), ts))
                m.samples += 1
    for tp in providers.values():
        tp.shutdown()
    m.records.sort(key=lambda r: (r.topic, r.partition, r.ts_ms))  # each partition in time order, as produced live
    return m


def _iso(ms: int) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def _log(m: Model, tid: str | None, svc: str, ts_ms: int, level: str, message: str) -> None:
    doc = {
        "timestamp": _iso(ts_ms),
        "level": level,
        "service": svc,
        "message": message,
        "trace_id": tid,
        "span_id": None,
        "request_id": None,
        "user_id": None,
        "host": f"{svc}-1",
        "env": "prod",
        "attributes": {},
    }
    m.logs.append(doc)
    key = tid or f"{svc}-{ts_ms}"
    m.records.append(Record("logs", partition_of(key), json.dumps(doc).encode(), ts_ms))


def _sessions(m: Model, rnd: random.Random, minute: int) -> None:
    """Sessions that open the signup form and go through some of its first 3 steps, and one
    that completes signup (all 5 steps, submit and signup_complete in a second envelope,
    a known time after the first)."""
    for k in range(5):
        sid = f"s-{minute}-{k}"
        last = rnd.choice((1, 1, 2, 2, 3, 3, 3))
        m.sessions[sid] = 2 + last  # view, form_start, step_1..step_<last> (no step_4: submit does not count)
        t = m.base_ms + minute * MIN_MS + k * 5000 + 100
        interactions = [{"type": "page_view"}, {"type": "form_start", "form": "signup"}]
        interactions += [
            {"type": "form_step", "form": "signup", "step": st, "duration_ms": 1000 + st} for st in range(1, last + 1)
        ]
        if last == 3:
            interactions.append({"type": "form_submit", "form": "signup"})
        doc = {
            "event_id": f"e-{minute}-{k}",
            "timestamp": _iso(t),
            "page": "/signup",
            "session_id": sid,
            "user": f"user-{minute}-{k}",
            "location": None,
            "platform": "web",
            "user_agent": None,
            "client_ip": None,
            "events": interactions,
        }
        _stamp(m, sid, t, interactions, "/signup")
        m.records.append(Record("events", partition_of(sid), json.dumps(doc).encode(), t))
    sid, t0 = f"s-{minute}-conv", m.base_ms + minute * MIN_MS + 30_100
    took = 20_000 + 1000 * minute  # first step (view) to completion
    first = [{"type": "page_view"}, {"type": "form_start", "form": "signup"}]
    first += [{"type": "form_step", "form": "signup", "step": st, "duration_ms": 1000 + st} for st in range(1, 6)]
    then = [{"type": "form_submit", "form": "signup"}, {"type": "signup_complete", "form": "signup"}]
    for n, (t, interactions) in enumerate(((t0, first), (t0 + took, then))):
        doc = {
            "event_id": f"e-{minute}-conv-{n}",
            "timestamp": _iso(t),
            "page": "/signup",
            "session_id": sid,
            "user": f"user-{minute}-conv",
            "location": None,
            "platform": "web",
            "user_agent": None,
            "client_ip": None,
            "events": interactions,
        }
        _stamp(m, sid, t, interactions, "/signup")
        m.records.append(Record("events", partition_of(sid), json.dumps(doc).encode(), t))
    m.sessions[sid] = len(FUNNEL_STEPS)
    m.conversions.append((t0 + took, took))
    _jittered_session(m, minute)


def _jittered_session(m: Model, minute: int) -> None:
    """A session that converts over five envelopes, one of them (step 1) stamped by a
    client clock that runs behind: its time is before the /signup view it followed. The
    gaps grow with the minute, so each report hour has distinct step times."""
    sid, t = f"s-{minute}-jit", m.base_ms + minute * MIN_MS + 40_100
    start, lag, steps, done = 800 + 37 * minute, 300 + 90 * minute, 3000 + 111 * minute, 5000 + 250 * minute
    envelopes = [  # (client stamp, Kafka timestamp: when it was sent, interactions)
        (t, t, [{"type": "page_view"}]),
        (t + start, t + start, [{"type": "form_start", "form": "signup"}]),
        (t - lag, t + start + 100, [{"type": "form_step", "form": "signup", "step": 1, "duration_ms": 900}]),
        (
            t + steps,
            t + steps,
            [{"type": "form_step", "form": "signup", "step": st, "duration_ms": 500 + st} for st in range(2, 6)]
            + [{"type": "form_submit", "form": "signup"}],
        ),
        (t + done, t + done, [{"type": "signup_complete", "form": "signup"}]),
    ]
    for n, (stamp, sent, interactions) in enumerate(envelopes):
        doc = {
            "event_id": f"e-{minute}-jit-{n}",
            "timestamp": _iso(stamp),
            "page": "/signup",
            "session_id": sid,
            "user": f"user-{minute}-jit",
            "location": None,
            "platform": "web",
            "user_agent": None,
            "client_ip": None,
            "events": interactions,
        }
        _stamp(m, sid, stamp, interactions, "/signup")
        m.records.append(Record("events", partition_of(sid), json.dumps(doc).encode(), sent))
    m.sessions[sid] = len(FUNNEL_STEPS)
    m.conversions.append((t + done, done))  # view (stamped t) to completion


def _step_index(interaction: dict, page: str) -> int | None:
    """Which step of the signup funnel an interaction is, as the funnel's user defines it."""
    kind = interaction["type"]
    if kind == "page_view":
        return 0 if page == "/signup" else None
    if interaction.get("form") != "signup":
        return None
    if kind == "form_step":
        return 1 + int(interaction["step"])
    return {"form_start": 1, "form_submit": 7, "signup_complete": 8}.get(kind)


def _stamp(m: Model, sid: str, ts: int, interactions: list[dict], page: str) -> None:
    m.stamped[sid] += [(ts, _step_index(i, page)) for i in interactions]
