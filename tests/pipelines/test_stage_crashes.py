"""Records that used to crash a stage (issue 19 items 2, 8-11): each is driven through the
default spec's graph and stateful stages exactly as the Bytewax flow wires them
(``PipelineGraph.process``, then every stage input to its shard, the metrics and product
outputs to the global stage, then the flushes), and must end in a table or a dead letter
with a reason and a detail, never raise."""

from __future__ import annotations

import io
import json
import struct

import fastavro
import pyarrow as pa
import pytest
import yaml
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from core.stats import STATS
from pipelines import DEFAULT_SPEC
from pipelines.graph import PipelineGraph, plan_stages
from pipelines.loader import parse_spec
from pipelines.isolate import GuardedStage
from pipelines.stages import GLOBAL, global_inputs
from schemas.codecs.avro_codec import schema_id_for
from schemas.wire import raw_avro_schema
from sinks.dead_letters import dead_letter_rows
from tests.helpers import iso
from transforms.batch import RawBatch, Rejects

INGEST = 1_763_000_040_000  # ingest time of every record (a whole minute)
T_MS = INGEST - 1000  # event time: one second before ingest
T = iso(T_MS)
TRACE_ID, SPAN_ID = "f8c9f1fe5c3a1826e6dfda5ef0f42562", "5a6de2cfb18c9fa3"


def spec(tmp_path, codecs: dict | None = None):
    """The default spec on a local warehouse, with source codecs overridden."""
    d = yaml.safe_load(DEFAULT_SPEC.read_text())
    d["storage"]["catalog"]["warehouse"] = str(tmp_path)
    for s in d["sources"]:
        s["codec"] = (codecs or {}).get(s["name"], s["codec"])
    return parse_spec(d)


def raw(source: str, values: list[bytes]) -> RawBatch:
    return RawBatch(source, source, 0, values, list(range(len(values))), [INGEST] * len(values), topic_partitions=1)


def drive(spec, batches: list[RawBatch]) -> tuple[list, dict[str, pa.Table]]:
    """The flow outputs and every table's rows (dead letters included) the batches make,
    with the stages hosted as the engines host them (:class:`GuardedStage`)."""
    graph = PipelineGraph(spec, counters=STATS)
    defs = {d.name: d for d in plan_stages(spec)}
    stages: dict = {}
    rows: dict[str, list] = {}
    flows = []

    def emit(outs):
        for out in outs:
            for name, t in out.rows.items():
                rows.setdefault(name, []).append(t)
            for _, fed in global_inputs(out) if GLOBAL in defs else []:  # as the engines feed it
                g = stages.setdefault((GLOBAL, 0), GuardedStage(defs[GLOBAL], 0, counters=STATS))
                emit(g.process(fed))

    for b in batches:
        fo = graph.process(b)
        flows.append(fo)
        emit([fo])
        for si in fo.stage_inputs:
            s = stages.setdefault((si.stage, si.shard), GuardedStage(defs[si.stage], si.shard, counters=STATS))
            emit(s.process(si))
    for key, s in list(stages.items()):
        if key[0] != GLOBAL:
            emit(s.flush())
    if (GLOBAL, 0) in stages:
        emit(stages[(GLOBAL, 0)].flush())
    return flows, {n: pa.concat_tables(ts) for n, ts in rows.items()}


def metric(**extra) -> bytes:
    return json.dumps(
        {
            "name": "http.requests",
            "kind": "COUNTER",
            "timestamp": T,
            "labels": {"service": "checkout"},
            "value": 5.0,
            **extra,
        }
    ).encode()


def span(**extra) -> dict:
    return {
        "trace_id": TRACE_ID,
        "span_id": SPAN_ID,
        "parent_span_id": None,
        "service": "checkout",
        "name": "GET /x",
        "kind": "SERVER",
        "start_time": T,
        "end_time": T,
        "status_code": "UNSET",
        **extra,
    }


def red(tables, name: str) -> list[dict]:
    m = tables["metrics"]
    return [r for r in m.to_pylist() if r["name"] == name]


# -- item 2: samples with and without temporality in one batch ----------------------------------


def test_samples_without_temporality_next_to_ones_with_it_are_valid(tmp_path):
    flows, tables = drive(spec(tmp_path), [raw("metrics", [metric(), metric(temporality="DELTA"), metric(value=7.0)])])
    assert (flows[0].records_in, flows[0].records_accepted, flows[0].records_dead) == (3, 3, 0)
    assert tables["dead_letters"].num_rows == 0
    one_minute = [r for r in tables["metrics"].to_pylist() if r["name"] == "http.requests" and r["resolution"] == "1m"]
    # the delta sample adds 5; the two cumulative ones are the series' first (0) and +2
    assert [(r["count"], r["increase"]) for r in one_minute] == [(3, 7.0)]


def otlp_gauge_and_sum() -> bytes:
    req = ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    a = rm.resource.attributes.add()
    a.key, a.value.string_value = "service.name", "checkout"
    sm = rm.scope_metrics.add()
    g = sm.metrics.add()
    g.name = "process.cpu"
    p = g.gauge.data_points.add()
    p.time_unix_nano, p.as_double = T_MS * 1_000_000, 0.5
    s = sm.metrics.add()
    s.name = "http.requests"
    s.sum.aggregation_temporality, s.sum.is_monotonic = 1, True  # DELTA
    p = s.sum.data_points.add()
    p.start_time_unix_nano, p.time_unix_nano, p.as_int = (T_MS - 1000) * 1_000_000, T_MS * 1_000_000, 4
    return req.SerializeToString()


def test_otlp_gauge_batched_with_a_sum_is_accepted(tmp_path):
    flows, tables = drive(spec(tmp_path, {"metrics": "otlp_proto"}), [raw("metrics", [otlp_gauge_and_sum()])])
    assert (flows[0].records_in, flows[0].records_accepted, flows[0].records_dead) == (1, 1, 0)
    assert tables["dead_letters"].num_rows == 0
    got = {r["name"]: r for r in tables["metrics"].to_pylist() if r["resolution"] == "1m"}
    assert (got["process.cpu"]["count"], got["process.cpu"]["last"]) == (1, 0.5)
    assert got["http.requests"]["increase"] == 4.0


def test_a_dead_letter_without_a_detail_or_reason_is_refused_where_it_is_built():
    b = raw("metrics", [b"a", b"b"])
    for reason, detail in (("schema_violation", None), (None, "x"), ("", "x")):
        rej = Rejects()
        rej.add(0, "schema_violation", "fine")
        rej.add(1, reason, detail)
        with pytest.raises(ValueError, match="dead letter without (detail|reason).*metrics:0 offset 1"):
            dead_letter_rows(b, rej, 100)


def test_unknown_temporality_and_missing_kind_have_a_detail(tmp_path):
    flows, tables = drive(spec(tmp_path), [raw("metrics", [metric(temporality="sideways"), metric(kind=None)])])
    d = tables["dead_letters"]
    assert flows[0].records_dead == 2
    assert sorted(d.column("detail").to_pylist()) == [
        "kind: required field is missing or null",
        "temporality: unknown temporality sideways; expected CUMULATIVE or DELTA",
    ]


# -- item 8: a span ending centuries later -------------------------------------------------------


def otlp_span(end_ns: int) -> bytes:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    a = rs.resource.attributes.add()
    a.key, a.value.string_value = "service.name", "checkout"
    sp = rs.scope_spans.add().spans.add()
    sp.trace_id, sp.span_id, sp.name, sp.kind = bytes.fromhex(TRACE_ID), bytes.fromhex(SPAN_ID), "GET /x", 2
    sp.start_time_unix_nano, sp.end_time_unix_nano = T_MS * 1_000_000, end_ns
    return req.SerializeToString()


def otlp_item(payload: bytes) -> bytes:
    """The first span of an OTLP message, serialized alone (what its dead letter holds)."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    msg = ExportTraceServiceRequest.FromString(payload)
    return msg.resource_spans[0].scope_spans[0].spans[0].SerializeToString()


def avro_span(end_us: int) -> bytes:
    rec = {**span(start_time=T_MS * 1000, end_time=end_us), "status_message": None, "attributes": {}, "resource": {}}
    out = io.BytesIO()
    out.write(struct.pack(">bI", 0, schema_id_for("span")))
    fastavro.schemaless_writer(out, fastavro.parse_schema(raw_avro_schema("span")), rec)
    return out.getvalue()


@pytest.mark.parametrize(
    "codec, payload",
    [("otlp_proto", otlp_span(2**64 - 1)), ("avro", avro_span(2**63 - 1))],
    ids=["otlp_end_2_64", "avro_end_2_63"],
)
def test_span_ending_centuries_after_ingest_is_a_dead_letter(tmp_path, codec, payload):
    flows, tables = drive(spec(tmp_path, {"spans": codec}), [raw("spans", [payload])])
    assert (flows[0].records_accepted, flows[0].records_dead) == (0, 1)
    d = tables["dead_letters"].to_pylist()
    # OTLP is accepted per span: the dead letter holds the span alone (item 0); Avro: the record
    want_raw = otlp_item(payload) if codec == "otlp_proto" else payload
    assert [(r["reason"], r["source_offset"], r["raw"]) for r in d] == [("timestamp_out_of_range", 0, want_raw)]
    assert d[0]["detail"].startswith("end_time is ") and d[0]["detail"].endswith("d after ingest time (limit 5.0m)")
    assert "spans" not in tables and "traces" not in tables


@pytest.mark.parametrize("codec", ["otlp_proto", "avro"])
def test_span_ending_within_max_future_keeps_its_exact_duration(tmp_path, codec):
    end_us = INGEST * 1000 + 299_000_000  # 4m59s after ingest: 5 min of span
    payload = otlp_span(end_us * 1000) if codec == "otlp_proto" else avro_span(end_us)
    flows, tables = drive(spec(tmp_path, {"spans": codec}), [raw("spans", [payload])])
    assert (flows[0].records_accepted, flows[0].records_dead) == (1, 0)
    assert tables["spans"].column("duration_ms").to_pylist() == [(end_us - T_MS * 1000) / 1000.0]
    assert [r["count"] for r in red(tables, "span.calls")] == [1]


# -- item 9: counts past 2**53 --------------------------------------------------------------------


def histogram(count: int, buckets: list[int]) -> bytes:
    return json.dumps(
        {
            "name": "h",
            "kind": "HISTOGRAM",
            "timestamp": T,
            "labels": {"service": "checkout"},
            "bucket_bounds": [1.0],
            "bucket_counts": buckets,
            "count": count,
            "sum": 5.0,
        }
    ).encode()


def test_counts_past_2_53_are_dead_letters_and_below_are_exact(tmp_path):
    big = 1152921504606846976
    exact = 2**53 - 2
    flows, tables = drive(
        spec(tmp_path),
        [
            raw(
                "metrics",
                [
                    histogram(big + 1, [big, 1]),
                    histogram(3, [big, 1]),
                    json.dumps(
                        {"name": "s", "kind": "SUMMARY", "timestamp": T, "labels": {}, "count": big, "sum": 1.0}
                    ).encode(),
                    histogram(exact, [exact - 1, 1]),
                ],
            )
        ],
    )
    assert (flows[0].records_accepted, flows[0].records_dead) == (1, 3)
    d = tables["dead_letters"].sort_by("source_offset")
    assert d.column("source_offset").to_pylist() == [0, 1, 2]
    assert d.column("detail").to_pylist() == [  # every problem of a record (issue 13): the first has two
        f"count: {big + 1} is 2**53 or more, beyond what a rollup adds exactly; "
        "bucket_counts: a bucket count is 2**53 or more, beyond what a rollup adds exactly",
        "bucket_counts: a bucket count is 2**53 or more, beyond what a rollup adds exactly",
        f"count: {big} is 2**53 or more, beyond what a rollup adds exactly",
    ]
    h = [r for r in tables["metrics"].to_pylist() if r["name"] == "h" and r["resolution"] == "1m"]
    assert [r["count"] for r in h] == [exact]


# -- item 10: U+001F in a span name -----------------------------------------------------------------


def test_span_name_with_the_unit_separator_is_its_own_red_series(tmp_path):
    names = ["GET \x1f/x", "GET /x", "a\x1fb\x1fc"]
    values = [json.dumps(span(name=n, span_id=f"{k + 1:016x}")).encode() for k, n in enumerate(names)]
    flows, tables = drive(spec(tmp_path), [raw("spans", values)])
    assert (flows[0].records_accepted, flows[0].records_dead) == (3, 0)
    calls = {dict(r["labels"])["operation"]: r["count"] for r in red(tables, "span.calls")}
    assert calls == {n: 1 for n in names}


# -- item 11: a form step lasting 2**60 ms ------------------------------------------------------------


def test_form_step_duration_2_60_becomes_a_derived_sample(tmp_path):
    ev = {
        "event_id": "e1",
        "timestamp": T,
        "page": "/signup",
        "session_id": "s1",
        "user": "u",
        "events": [{"type": "form_step", "form": "signup", "step": 2, "duration_ms": 2**60}],
    }
    flows, tables = drive(spec(tmp_path), [raw("events", [json.dumps(ev).encode()])])
    assert (flows[0].records_accepted, flows[0].records_dead) == (1, 0)
    assert tables["events"].column("duration_ms").to_pylist() == [2**60]
    got = [r for r in tables["metrics"].to_pylist() if r["name"] == "form.step.duration_ms" and r["resolution"] == "1m"]
    assert [(r["count"], r["max"]) for r in got] == [(1, float(2**60))]
