"""OTLP/HTTP details: OTLP/JSON requests, partial_success for the items the pipeline's
codec rejects (dead-lettered with its reason), and span sources whose codec is not OTLP
(``json`` rows, ``otlp_json`` requests) read back by the pipeline, exact."""

from __future__ import annotations

import time

import orjson
import pytest
import requests

from pipelines.loader import parse_spec
from runners.job import RunRequest
from tests.collect.conftest import collect_spec_dict
from tests.collect.test_collect_e2e import door_rejected, read_topic
from tests.helpers import read_table

pytestmark = [pytest.mark.collect, pytest.mark.kafka]

T1, T2 = "0af7651916cd43dd8448eb211c80319c", "4bf92f3577b34da6a3ce929d0e0e4736"


def otlp_json(now_ns: int) -> dict:
    def span(tid, sid, parent, name, start=True):
        s = {
            "traceId": tid,
            "spanId": sid,
            "name": name,
            "kind": 2,
            "endTimeUnixNano": str(now_ns),
            "attributes": [{"key": "http.route", "value": {"stringValue": "/x"}}],
        }
        if parent:
            s["parentSpanId"] = parent
        if start:
            s["startTimeUnixNano"] = str(now_ns - 2_000_000)
        return s

    return {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "search"}}]},
                "scopeSpans": [
                    {
                        "scope": {"name": "t"},
                        "spans": [
                            span(T1, "b7ad6b7169203331", None, "GET /x"),
                            span(T1, "00f067aa0ba902b7", "b7ad6b7169203331", "db"),
                            span(
                                T2, "1111111111111111", None, "broken", start=False
                            ),  # no start time: the codec rejects its trace
                        ],
                    }
                ],
            }
        ]
    }


@pytest.mark.parametrize("span_codec", ["otlp_json", "json"])
def test_otlp_json_partial_success_and_codecs(kafka_broker, collect_topics, tmp_path, start_collector, span_codec):
    d = collect_spec_dict(tmp_path, kafka_broker.bootstrap, collect_topics, span_codec=span_codec)
    c = start_collector(d)
    r = requests.post(
        c.url + "/v1/traces",
        data=orjson.dumps(otlp_json(time.time_ns())),
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    ps = r.json()["partialSuccess"]
    assert ps["rejectedSpans"] == "1" and "schema_violation" in ps["errorMessage"]
    msgs = read_topic(kafka_broker.bootstrap, collect_topics["span"])
    rejected = [m for m in msgs if door_rejected(m)]
    assert [door_rejected(m)[0] for m in rejected] == ["schema_violation"]  # T2's message, with the door's verdict
    msgs = [m for m in msgs if not door_rejected(m)]
    assert {m.key().decode() for m in msgs} == {T1}
    assert len(msgs) == (1 if span_codec == "otlp_json" else 2)  # one request per trace, or one row per span

    spec = parse_spec(d)
    from runners.bytewax.run import run

    run(RunRequest(spec=spec, runner="bytewax", source="kafka", bounded=True))
    rows = sorted(
        (s["trace_id"], s["span_id"], s["parent_span_id"], s["name"], s["service"])
        for s in read_table(spec, "spans").to_pylist()
    )
    assert rows == sorted(
        [
            (T1, "b7ad6b7169203331", None, "GET /x", "search"),
            (T1, "00f067aa0ba902b7", "b7ad6b7169203331", "db", "search"),
        ]
    )
    dead = [(r["reason"], r["source_topic"], r["source_offset"]) for r in read_table(spec, "dead_letters").to_pylist()]
    assert dead == [("schema_violation", collect_topics["span"], rejected[0].offset())]
