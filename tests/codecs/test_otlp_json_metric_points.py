"""Issue 19 item 3, OTLP/JSON metrics: a wrong-typed data point is rejected alone (as a
protobuf data point, span or log record is), not the whole message; its dead letter holds
the point's own JSON and its index in the message."""

from __future__ import annotations

import json

import pytest
import yaml
from google.protobuf import json_format

from core.stats import RunStats
from pipelines import DEFAULT_SPEC
from pipelines.graph import PipelineGraph
from pipelines.loader import parse_spec
from schemas.codecs import codec_for
from tests.codecs.helpers import accounted, raw_batch
from tests.codecs.test_otlp_items import _gauge, _histogram, metric_msg, run

WHERE = "resource_metrics[0].scope_metrics[0].metrics"


def doc_of(metrics) -> dict:
    return json_format.MessageToDict(metric_msg(metrics))


def points(doc: dict, m: int) -> list[dict]:
    metric = doc["resourceMetrics"][0]["scopeMetrics"][0]["metrics"][m]
    body = next(v for k, v in metric.items() if k in ("gauge", "sum", "histogram", "summary"))
    return body["dataPoints"]


@pytest.mark.parametrize(
    "field, value, says",
    [
        ("asDouble", "lots", "asDouble"),
        ("timeUnixNano", {"when": "now"}, "timeUnixNano"),
        ("attributes", 5, "attributes"),
    ],
)
def test_a_wrong_typed_json_data_point_is_rejected_alone(field, value, says):
    doc = doc_of([_gauge(1.0), _gauge(2.0), _gauge(3.0)])
    points(doc, 1)[0][field] = value
    b = codec_for("otlp_json", "metric", 65536).decode(raw_batch([json.dumps(doc).encode()]))
    accounted(b, 1)
    assert b.items_in == [3]
    assert b.rejects.keys() == [(0, 1)]
    assert b.rejects.reasons == ["schema_violation"]
    assert b.rejects.details[0].startswith(f"{WHERE}[1].gauge.data_points[0]: ")
    assert says in b.rejects.details[0]
    assert b.table.column("value").to_pylist() == [1.0, 3.0]


def test_a_wrong_typed_histogram_point_next_to_good_ones():
    doc = doc_of([_histogram(3, [1, 2]), _gauge(2.0)])
    doc["resourceMetrics"][0]["scopeMetrics"][0]["metrics"][0]["histogram"]["dataPoints"].append(
        dict(points(doc, 0)[0], bucketCounts=["1", "two"])
    )
    b = codec_for("otlp_json", "metric", 65536).decode(raw_batch([json.dumps(doc).encode()]))
    accounted(b, 1)
    assert b.items_in == [3]
    assert b.rejects.keys() == [(0, 1)]
    assert b.rejects.details[0].startswith(f"{WHERE}[0].histogram.data_points[1]: ")
    assert sorted(b.table.column("kind").to_pylist()) == ["GAUGE", "HISTOGRAM"]


def test_a_wrong_typed_metric_field_rejects_that_metric_alone():
    """A metric whose own fields are wrong (aggregationTemporality an object) is one
    rejected item, as an unsupported metric is; the other metrics' points go on."""
    doc = doc_of([_gauge(1.0), _histogram(3, [1, 2]), _gauge(3.0)])
    doc["resourceMetrics"][0]["scopeMetrics"][0]["metrics"][1]["histogram"]["aggregationTemporality"] = {
        "not": "an enum"
    }
    b = codec_for("otlp_json", "metric", 65536).decode(raw_batch([json.dumps(doc).encode()]))
    accounted(b, 1)
    assert b.items_in == [3]
    assert b.rejects.keys() == [(0, 1)]
    assert b.rejects.details[0].startswith(f"{WHERE}[1]: ")
    assert b.table.column("value").to_pylist() == [1.0, 3.0]


@pytest.fixture(scope="module")
def json_graph(tmp_path_factory):
    """The default spec with its metric source in OTLP/JSON."""
    d = yaml.safe_load(DEFAULT_SPEC.read_text())
    d["storage"]["catalog"]["warehouse"] = str(tmp_path_factory.mktemp("wh"))
    for s in d["sources"]:
        if s["signal"] == "metric":
            s["codec"] = "otlp_json"
    return PipelineGraph(parse_spec(d), counters=RunStats())


def test_through_the_graph_the_dead_letter_holds_the_point(json_graph):
    doc = doc_of([_gauge(1.0), _gauge(2.0)])
    points(doc, 0)[0]["asDouble"] = [1, 2]
    out, dead = run(json_graph, "metrics", [json.dumps(doc).encode()])
    assert (out.records_accepted, out.records_dead, out.items_in, out.items_accepted, out.items_dead) == (1, 0, 2, 1, 1)
    assert [(r["item_index"], r["reason"], r["source_offset"]) for r in dead] == [(0, "schema_violation", 100)]
    assert json.loads(dead[0]["raw"]) == points(doc, 0)[0]
