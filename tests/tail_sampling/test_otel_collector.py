"""Differential test against the OpenTelemetry Collector (issue 12 item 6): the contrib
``tailsamplingprocessor`` v0.161.0, driven in-process by the Go harness of
``infra/otelcol`` (built from the Go module proxy into the cache), and our
:class:`TailSampler` get the same OTLP export requests; their kept trace ids must be the
same for every deterministic policy and for ``probabilistic``. The differences we keep
on purpose are asserted as such, with the traces they concern.

Both sides see every span before deciding: the Collector decides at shutdown (its
``decision_wait`` is longer than the run), ours at ``flush_all``."""

from __future__ import annotations

import random

import pyarrow as pa
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from schemas.codecs.otlp_codec import OtlpCodec
from transforms.batch import INDEX, RawBatch
from transforms.tail_sampling import TailSampler

pytestmark = [pytest.mark.otel_collector, pytest.mark.traces]

T0 = 1_765_000_000_000_000_000  # ns
N_TRACES = 3000
WAIT = "120s"  # longer than a harness run: the Collector decides everything at shutdown


# -- traffic ------------------------------------------------------------------------------


def _value(v) -> AnyValue:
    if isinstance(v, bool):
        return AnyValue(bool_value=v)
    if isinstance(v, int):
        return AnyValue(int_value=v)
    if isinstance(v, float):
        return AnyValue(double_value=v)
    return AnyValue(string_value=v)


def _kvs(d: dict) -> list[KeyValue]:
    return [KeyValue(key=k, value=_value(v)) for k, v in d.items()]


RESOURCES = [
    {"service.name": "checkout", "region": "eu", "deploy.replicas": 3},
    {"service.name": "payments", "region": "us", "shard": 7},
    {"service.name": "search", "region": "eu", "shard": "7"},
    {"service.name": "gateway", "region": "ap"},
    {"service.name": "worker", "region": "us", "deploy.replicas": 12},
]
ROUTES = ["/api/v1/cart", "/api/v2/pay", "/health", "/static/app.js", "/api/vx/none"]


def _attrs(rng: random.Random) -> dict:
    a: dict = {"http.route": rng.choice(ROUTES)}
    r = rng.random()
    a["http.status_code"] = (
        rng.choice([200, 404, 500, 503])
        if r < 0.6
        else rng.choice(["500", "200"])
        if r < 0.8
        else rng.choice([500.0, 0.0])
        if r < 0.9
        else 0
    )
    if rng.random() < 0.4:
        a["tier"] = rng.choice(["free", "paid", ""])
    if rng.random() < 0.3:
        a["debug"] = rng.choice([True, False, "true"])
    if rng.random() < 0.1:
        a["big"] = rng.choice([2**53 + 3, 2**53 + 5, -(2**63)])
    return a


def make_traffic(seed: int = 12, t0: int = T0) -> list[bytes]:
    """``N_TRACES`` traces over five services as OTLP export requests, split into messages
    the way SDK batch exporters split them: a trace's spans spread over several messages,
    children usually before their root, several traces per message. Durations include
    exact milliseconds and nanosecond edges; attributes of every OTLP type, and values of
    the wrong type for the policies that read them."""
    rng = random.Random(seed)
    pending: list[tuple[int, object]] = []  # (resource index, span)
    for k in range(N_TRACES):
        tid = rng.getrandbits(128).to_bytes(16, "big")
        res = rng.randrange(len(RESOURCES))
        start = t0 + k * 1_000_000 + rng.choice([0, 999, 1, 500_000])
        dur = rng.choice(
            [
                1_000_000_000,
                999_999_999,
                1_000_999_500,
                1_000_000_001,
                5_000_000,
                1_500_000_000,
                rng.randrange(1, 3_000_000_000),
            ]
        )
        n = rng.choice([1, 1, 2, 3, 4, 5, 6, 8])
        root_id = rng.getrandbits(64).to_bytes(8, "big")
        spans = []
        for i in range(n):
            sp = ExportTraceServiceRequest().resource_spans.add().scope_spans.add().spans.add()
            sp.trace_id = tid
            sp.span_id = root_id if i == 0 else rng.getrandbits(64).to_bytes(8, "big")
            if i:
                sp.parent_span_id = root_id
            sp.name = "GET " + rng.choice(ROUTES)
            sp.kind = 2 if i == 0 else rng.choice([1, 3])
            if i == 0:
                sp.start_time_unix_nano, sp.end_time_unix_nano = start, start + dur
            else:  # children inside the root, some reaching past its end (clock skew)
                cs = start + rng.randrange(0, max(1, dur))
                sp.start_time_unix_nano = cs
                sp.end_time_unix_nano = cs + rng.randrange(1, max(2, dur // 2)) + (dur if rng.random() < 0.05 else 0)
            sp.status.code = rng.choices([0, 1, 2], [70, 20, 10])[0]
            sp.attributes.extend(_kvs(_attrs(rng)))
            if rng.random() < 0.15:
                sp.trace_state = rng.choice(
                    ["vendor=gold", "vendor=silver,ot=th:8", "Vendor=gold", "a=1,a=2,vendor=gold", "vendor=platinum"]
                )
            sp.flags = rng.choice([0, 0x100, 0x101, 0x1])
            spans.append(sp)
        spans = spans[1:] + spans[:1] if rng.random() < 0.7 else spans  # root last, usually
        pending.extend((res, sp) for sp in spans)
    # shuffle within windows so a trace's spans spread over a few messages, then batch
    out: list[bytes] = []
    w = 40
    for lo in range(0, len(pending), w):
        part = pending[lo : lo + w]
        rng.shuffle(part)
        msg = ExportTraceServiceRequest()
        by_res: dict[int, object] = {}
        for res, sp in part:
            if res not in by_res:
                rs = msg.resource_spans.add()
                rs.resource.attributes.extend(_kvs(RESOURCES[res]))
                by_res[res] = rs.scope_spans.add()
            by_res[res].spans.add().CopyFrom(sp)
        out.append(msg.SerializeToString())
    return out


@pytest.fixture(scope="module")
def traffic() -> list[bytes]:
    return make_traffic()


@pytest.fixture(scope="module")
def rows(traffic) -> list[pa.Table]:
    """Our span rows for each message (the OTLP codec, as the pipeline decodes them)."""
    codec = OtlpCodec("span")
    out = []
    for i, m in enumerate(traffic):
        b = codec.decode(RawBatch("spans", "otlp_spans", 0, [m], [i], [0]))
        assert not b.rejects.indices
        out.append(b.table.drop_columns([INDEX]))
    return out


@pytest.fixture(scope="module")
def collector():
    from infra.otelcol import build, run_harness

    build()
    return run_harness


def ours(rows: list[pa.Table], config: dict) -> set[str]:
    ts = TailSampler(config)
    kept: set[str] = set()
    for t in rows:
        ts.add(t, 0)
    d = ts.flush_all(0)
    kept.update(d.spans.column("trace_id").to_pylist())
    assert ts.buffered_spans == 0
    return kept


def pol(name: str, type_: str, body: dict | None = None) -> dict:
    p = {"name": name, "type": type_}
    if body is not None:
        p[type_] = body
    return p


ERR = pol("err", "status_code", {"status_codes": ["ERROR"]})
FREE = pol("free", "string_attribute", {"key": "tier", "values": ["free"]})

#: every deterministic policy kind (and probabilistic), with the cases the issue found differing
SAME = {
    "always_sample": [pol("all", "always_sample")],
    "latency_1000": [pol("slow", "latency", {"threshold_ms": 1000})],
    "latency_0": [pol("slow", "latency", {"threshold_ms": 0})],
    "status_error": [ERR],
    "status_ok_unset": [pol("ok", "status_code", {"status_codes": ["OK", "UNSET"]})],
    "probabilistic_25": [pol("p", "probabilistic", {"sampling_percentage": 25})],
    "probabilistic_salted_3.7": [pol("p", "probabilistic", {"sampling_percentage": 3.7, "hash_salt": "pepper"})],
    "probabilistic_250": [pol("p", "probabilistic", {"sampling_percentage": 250})],
    "string_exact": [FREE],
    "string_typed_int": [pol("s", "string_attribute", {"key": "http.status_code", "values": ["500"]})],
    "string_regex": [
        pol(
            "s",
            "string_attribute",
            {"key": "http.route", "values": ["^/api/v[0-9]+/", "health$"], "enabled_regex_matching": True},
        )
    ],
    "string_regex_empty_resource": [
        pol("s", "string_attribute", {"key": "shard", "values": ["^$"], "enabled_regex_matching": True})
    ],
    "string_resource": [pol("s", "string_attribute", {"key": "region", "values": ["eu"]})],
    "string_invert": [pol("s", "string_attribute", {"key": "tier", "values": ["free", "paid"], "invert_match": True})],
    "always_plus_invert": [
        pol("all", "always_sample"),
        pol("s", "string_attribute", {"key": "tier", "values": ["free"], "invert_match": True}),
    ],
    "numeric_5xx": [pol("n", "numeric_attribute", {"key": "http.status_code", "min_value": 500, "max_value": 599})],
    "numeric_reads_zero": [pol("n", "numeric_attribute", {"key": "http.status_code", "min_value": -5, "max_value": 5})],
    "numeric_int64_exact": [
        pol("n", "numeric_attribute", {"key": "big", "min_value": 2**53 + 5, "max_value": 2**53 + 5})
    ],
    "numeric_min_only": [pol("n", "numeric_attribute", {"key": "deploy.replicas", "min_value": 10})],
    "numeric_invert": [
        pol(
            "n",
            "numeric_attribute",
            {"key": "http.status_code", "min_value": 400, "max_value": 599, "invert_match": True},
        )
    ],
    "boolean_true": [pol("b", "boolean_attribute", {"key": "debug", "value": True})],
    "boolean_false": [pol("b", "boolean_attribute", {"key": "debug", "value": False})],
    "boolean_invert": [pol("b", "boolean_attribute", {"key": "debug", "value": True, "invert_match": True})],
    "span_count_3_5": [pol("c", "span_count", {"min_spans": 3, "max_spans": 5})],
    "span_count_6": [pol("c", "span_count", {"min_spans": 6})],
    "trace_state": [pol("t", "trace_state", {"key": "vendor", "values": ["gold", "platinum"]})],
    "trace_flags": [pol("f", "trace_flags")],
    "and": [pol("a", "and", {"and_sub_policy": [ERR, FREE]})],
    "and_with_invert": [
        pol(
            "a",
            "and",
            {
                "and_sub_policy": [
                    ERR,
                    pol("s", "string_attribute", {"key": "tier", "values": ["free"], "invert_match": True}),
                ]
            },
        )
    ],
    "not": [pol("n", "not", {"not_sub_policy": ERR})],
    "drop_over_always": [
        pol("all", "always_sample"),
        pol(
            "d",
            "drop",
            {"drop_sub_policy": [pol("h", "string_attribute", {"key": "http.route", "values": ["/health"]})]},
        ),
    ],
    "several_first_match": [
        ERR,
        pol("slow", "latency", {"threshold_ms": 2000}),
        pol("p", "probabilistic", {"sampling_percentage": 5}),
    ],
    "composite_default_share": [
        pol(
            "c",
            "composite",
            {
                "max_total_spans_per_second": 10**9,
                "composite_sub_policy": [ERR, pol("rest", "always_sample")],
                "rate_allocation": [{"policy": "err", "percent": 100}],
            },
        )
    ],
    "rate_limiting_unbound": [pol("r", "rate_limiting", {"spans_per_second": 10**9})],
}


@pytest.mark.parametrize("case", sorted(SAME))
def test_same_kept_traces_as_the_collector(case, rows, collector, traffic):
    policies = SAME[case]
    settings = {"sample_on_first_match": True} if case == "several_first_match" else {}
    theirs = collector({"decision_wait": WAIT, "policies": policies, **settings}, traffic)
    mine = ours(rows, {"decision_wait": WAIT, "policies": policies, **settings})
    assert 0 < len(theirs) or case in ("numeric_int64_exact",), (
        f"{case}: the Collector kept nothing; the case tests nothing"
    )
    assert mine == theirs, (
        f"{case}: {len(mine - theirs)} kept only by us (e.g. {sorted(mine - theirs)[:3]}), "
        f"{len(theirs - mine)} only by the Collector (e.g. {sorted(theirs - mine)[:3]})"
    )


def _durations_and_prefixes(traffic) -> tuple[dict[str, int], dict[str, list[int]]]:
    """Per trace: full duration in ms (as Go's Milliseconds), and every partial duration
    the Collector's running min/max sees, in arrival order."""
    lo: dict[str, int] = {}
    hi: dict[str, int] = {}
    prefixes: dict[str, list[int]] = {}
    for m in traffic:
        req = ExportTraceServiceRequest.FromString(m)
        for rs in req.resource_spans:
            for ss in rs.scope_spans:
                for sp in ss.spans:
                    t = sp.trace_id.hex()
                    lo[t] = min(lo.get(t, sp.start_time_unix_nano), sp.start_time_unix_nano)
                    hi[t] = max(hi.get(t, sp.end_time_unix_nano), sp.end_time_unix_nano)
                    prefixes.setdefault(t, []).append((hi[t] - lo[t]) // 1_000_000)
    return {t: (hi[t] - lo[t]) // 1_000_000 for t in lo}, prefixes


def test_latency_band_differs_on_purpose_full_duration_vs_partial(rows, collector, traffic):
    """Kept on purpose: with ``upper_threshold_ms`` the Collector samples as soon as a
    partial duration (spans in arrival order) is in the band, so it keeps traces whose full
    duration is above the band; we decide on the full duration."""
    band = [pol("band", "latency", {"threshold_ms": 500, "upper_threshold_ms": 1500})]
    theirs = collector({"decision_wait": WAIT, "policies": band}, traffic)
    mine = ours(rows, {"decision_wait": WAIT, "policies": band})
    full, prefixes = _durations_and_prefixes(traffic)
    assert mine == {t for t, d in full.items() if 500 < d <= 1500}
    # the Collector's rule, reproduced: any partial duration in the band
    assert theirs == {t for t, ds in prefixes.items() if any(500 < d <= 1500 for d in ds)}
    extra = theirs - mine
    assert mine <= theirs and extra and all(full[t] > 1500 for t in extra)


def test_legacy_invert_differs_on_purpose_only_when_asked(rows, collector, traffic):
    """``legacy_invert_decisions`` (ours, off by default) restores the InvertNotSampled veto
    of Collector releases before v0.150.0: always_sample + an inverted policy then keeps
    only the traces the inverted policy does not match; v0.161.0 keeps every trace."""
    policies = SAME["always_plus_invert"]
    theirs = collector({"decision_wait": WAIT, "policies": policies}, traffic)
    legacy = ours(rows, {"decision_wait": WAIT, "policies": policies, "legacy_invert_decisions": True})
    not_free = ours(rows, {"decision_wait": WAIT, "policies": [policies[1]]})
    assert len(theirs) == N_TRACES
    assert legacy == not_free and len(legacy) < N_TRACES


def test_num_traces_overflow(collector):
    """The Collector evicts the oldest undecided trace when ``num_traces`` is full (our
    ``num_traces_overflow: drop_oldest``); our default decides them early instead, on
    purpose, so an overflow costs a trace its wait, not its spans."""
    rng = random.Random(5)
    msgs, ids = [], []
    for k in range(300):  # one trace per message: arrival order is the message order
        req = ExportTraceServiceRequest()
        rs = req.resource_spans.add()
        rs.resource.attributes.extend(_kvs(RESOURCES[0]))
        sp = rs.scope_spans.add().spans.add(
            trace_id=rng.getrandbits(128).to_bytes(16, "big"),
            span_id=rng.getrandbits(64).to_bytes(8, "big"),
            name="x",
            kind=2,
            start_time_unix_nano=T0 + k,
            end_time_unix_nano=T0 + k + 10,
        )
        ids.append(sp.trace_id.hex())
        msgs.append(req.SerializeToString())
    codec = OtlpCodec("span")
    tables = [
        codec.decode(RawBatch("s", "t", 0, [m], [i], [0])).table.drop_columns([INDEX]) for i, m in enumerate(msgs)
    ]
    cfg = {"decision_wait": WAIT, "num_traces": 100, "policies": [pol("all", "always_sample")]}
    theirs = collector(cfg, msgs)
    assert theirs == set(ids[-100:])
    assert ours(tables, {**cfg, "num_traces_overflow": "drop_oldest"}) == theirs
    assert ours(tables, cfg) == set(ids)


PIPELINE_POLICIES = [
    pol("slow", "latency", {"threshold_ms": 1000}),
    SAME["string_typed_int"][0] | {"name": "s500"},
    SAME["numeric_int64_exact"][0],
    SAME["boolean_false"][0],
    SAME["trace_state"][0],
    pol("d", "drop", {"drop_sub_policy": [pol("h", "string_attribute", {"key": "http.route", "values": ["/health"]})]}),
]


@pytest.mark.kafka
@pytest.mark.parametrize("runner", ["bytewax", "beam"])
def test_pipeline_keeps_what_the_collector_keeps(runner, kafka_broker, collector, tmp_path):
    """The same OTLP messages through Kafka and the whole span flow (codec, validate,
    scrub, the sharded trace stage) on each engine: obs.traces holds exactly the traces the
    Collector keeps."""
    import time

    import yaml
    from confluent_kafka import Producer

    from pipelines import DEFAULT_SPEC
    from pipelines.loader import parse_spec
    from runners.job import RunRequest
    from tests.helpers import read_table

    traffic = make_traffic(seed=21, t0=time.time_ns() - 3_600_000_000_000)
    theirs = collector({"decision_wait": WAIT, "policies": PIPELINE_POLICIES}, traffic)
    topic = f"otlp_spans_diff-{runner}-{time.time_ns() % 10**9}"
    kafka_broker.create_topic(topic, partitions=2)
    p = Producer({"bootstrap.servers": kafka_broker.bootstrap, "enable.idempotence": True})
    for i, m in enumerate(traffic):  # one message per export request, as the Collector's Kafka exporter
        p.produce(topic, m, partition=i % 2)
    assert p.flush(30) == 0
    d = yaml.safe_load(DEFAULT_SPEC.read_text())
    d["storage"]["catalog"]["warehouse"] = str(tmp_path / "wh")
    d["kafka"].update(
        {"bootstrap_servers": kafka_broker.bootstrap, "group_id": f"diff-{tmp_path.name}", "poll_timeout": "200ms"}
    )
    d["sources"] = [{"name": "spans", "topic": topic, "signal": "span", "codec": "otlp_proto"}]
    d["flows"] = [f for f in d["flows"] if f["source"] == "spans"]
    d.pop("alerts", None)
    for f in d["flows"]:
        for st in f["steps"]:
            if st["kind"] == "tail_sample":
                st["sampler"] = {"decision_wait": WAIT, "policies": PIPELINE_POLICIES}
    spec = parse_spec(d)
    if runner == "bytewax":
        from runners.bytewax.run import run
    else:
        from runners.beam.run import run
    run(RunRequest(spec=spec, runner=runner, source="kafka", bounded=True))
    mine = {t["trace_id"] for t in read_table(spec, "traces").to_pylist()}
    assert 300 < len(theirs) < N_TRACES
    assert mine == theirs, f"{len(mine - theirs)} kept only by us, {len(theirs - mine)} only by the Collector"
    assert not read_table(spec, "dead_letters").num_rows
