"""Crashes and broken promises the fuzz suite found, each as a fixed regression test."""

from __future__ import annotations

import json

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    Gauge,
    Metric,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from pipelines.spec import ValidateStep
from schemas.codecs import codec_for
from transforms.batch import RawBatch
from transforms.validate import Validator

T_MS = 1_763_719_200_000


def raw(values):
    return RawBatch("metrics", "metrics", 0, values, list(range(len(values))), [T_MS] * len(values))


def test_metric_samples_without_temporality_next_to_one_with_it_are_valid():
    """Found by test_mixed_batches[metric-otlp_proto] (issue 19 item 2's poison pill): a gauge
    batched with a sum was dead-lettered as schema_violation with a null detail."""
    t = T_MS * 1_000_000
    msg = ExportMetricsServiceRequest(
        resource_metrics=[
            ResourceMetrics(
                resource=Resource(attributes=[KeyValue(key="service.name", value=AnyValue(string_value="checkout"))]),
                scope_metrics=[
                    ScopeMetrics(
                        metrics=[
                            Metric(
                                name="cpu", gauge=Gauge(data_points=[NumberDataPoint(time_unix_nano=t, as_double=0.5)])
                            ),
                            Metric(
                                name="requests",
                                sum=Sum(
                                    aggregation_temporality=2,
                                    is_monotonic=True,
                                    data_points=[NumberDataPoint(time_unix_nano=t, as_double=5.0)],
                                ),
                            ),
                        ]
                    )
                ],
            )
        ]
    )
    b = Validator("metric", ValidateStep(kind="validate"))(
        codec_for("otlp_proto", "metric", 65536).decode(raw([msg.SerializeToString()]))
    )
    assert b.rejects.indices == [] and sorted(b.table.column("name").to_pylist()) == ["cpu", "requests"]
    ts = "2025-11-21T10:00:00.000Z"
    sample = {
        "name": "http.requests",
        "kind": "COUNTER",
        "timestamp": ts,
        "labels": {"service": "checkout"},
        "value": 5.0,
    }
    values = [json.dumps(sample).encode(), json.dumps(dict(sample, temporality="DELTA")).encode()]
    b = Validator("metric", ValidateStep(kind="validate", max_past="30d"))(
        codec_for("json", "metric", 65536).decode(raw(values))
    )
    assert b.rejects.indices == [] and b.table.column("temporality").to_pylist() == [None, "delta"]
