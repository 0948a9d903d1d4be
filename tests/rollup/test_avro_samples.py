"""Avro metric samples end to end at the unit level: records written with fastavro in the
Confluent wire format (magic byte, 4-byte big-endian schema id, Avro body) with the
version 1 wire schema (registry id 4, no temporality or start time: still read, both
null), decoded by the Avro codec into exactly the samples written, then rolled up into exact window rows
(counter increase across a reset, gauge last/min/max/avg, delta histogram merge and
quantiles, summary count and sum)."""

import io
import struct
from datetime import datetime, UTC

import fastavro
import pyarrow as pa
import pytest

from schemas.codecs import codec_for
from schemas.codecs.avro_codec import schema_id_for
from schemas.wire import raw_avro_schema
from tests.codecs.helpers import accounted, as_rows, raw_batch
from transforms.rollup import MetricRollup, RollupConfig

pytestmark = pytest.mark.metrics
BASE = 1_763_000_040_000  # a whole minute (and 12:34 into its hour)
MIN = 60_000
SCHEMA = fastavro.parse_schema(raw_avro_schema("metric_sample"))


def dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def confluent(record: dict, schema_id: int | None = None) -> bytes:
    out = io.BytesIO()
    out.write(struct.pack(">bI", 0, schema_id_for("metric_sample") if schema_id is None else schema_id))
    fastavro.schemaless_writer(out, SCHEMA, record)
    return out.getvalue()


def rec(name, kind, t, labels, value=None, bounds=None, counts=None, count=None, total=None):
    return {
        "name": name,
        "kind": kind,
        "timestamp": dt(BASE + t),
        "labels": labels,
        "value": value,
        "bucket_bounds": bounds,
        "bucket_counts": counts,
        "count": count,
        "sum": total,
    }


A = {"svc": "a", "région": "Zürich ✓"}
SAMPLES = [
    rec("req", "COUNTER", 10_000, A, 100.0),
    rec("req", "COUNTER", 40_000, A, 130.0),
    rec("req", "COUNTER", 70_000, A, 20.0),  # a reset: counts the post-reset value
    rec("req", "COUNTER", 100_000, A, 50.0),
    rec("temp", "GAUGE", 5_000, {}, 3.0),
    rec("temp", "GAUGE", 20_000, {}, -1.5),
    rec("temp", "GAUGE", 50_000, {}, 7.25),
    rec("temp", "GAUGE", 65_000, {}, 2.0),
    rec("lat", "HISTOGRAM", 30_000, A, bounds=[10.0, 100.0], counts=[2, 1, 0], count=3, total=60.0),
    rec("lat", "HISTOGRAM", 80_000, A, bounds=[10.0, 100.0], counts=[0, 2, 1], count=3, total=450.0),
    rec("jobs", "SUMMARY", 30_000, A, count=4, total=10.0),
    rec("jobs", "SUMMARY", 90_000, A, count=1, total=2.5),
]


def decoded():
    payloads = [confluent(r) for r in SAMPLES] + [confluent(SAMPLES[0])[:9], confluent(SAMPLES[0], schema_id=999)]
    b = codec_for("avro", "metric", 65536).decode(raw_batch(payloads))
    accounted(b, len(payloads))
    return b


def test_confluent_framed_samples_decode_exactly():
    b = decoded()
    assert confluent(SAMPLES[0])[:5] == b"\x00\x00\x00\x00\x04"
    assert sorted(zip(b.rejects.indices, b.rejects.reasons)) == [(12, "format_violation"), (13, "schema_violation")]
    assert as_rows(b.table.drop_columns(["_i"])) == [dict(s, temporality=None, start_time=None) for s in SAMPLES]
    assert b.table.column("_i").to_pylist() == list(range(12))


def test_avro_samples_roll_up_exactly():
    b = decoded()
    r = MetricRollup(RollupConfig(resolutions=["1m", "1h"], watermark_delay="0s", allowed_lateness="0s"))
    rows = pa.concat_tables([r.process(b.table.drop_columns(["_i"])).metrics, r.flush().metrics]).to_pylist()
    got = {
        (
            x["resolution"],
            (int(x["window_start"].timestamp() * 1000) - BASE) // MIN if x["resolution"] == "1m" else 0,
            x["name"],
        ): x
        for x in rows
    }
    assert len(got) == len(rows) == 12
    cols = ("kind", "count", "sum", "min", "max", "last", "increase", "rate")
    v = lambda res, k, n: tuple(got[(res, k, n)][c] for c in cols)  # noqa: E731
    # counters: the first sample ever contributes 0; 130-100; reset -> 20, then 50-20
    assert v("1m", 0, "req") == ("counter", 2, None, 100.0, 130.0, 130.0, 30.0, 0.5)
    assert v("1m", 1, "req") == ("counter", 2, None, 20.0, 50.0, 50.0, 50.0, 50 / 60)
    assert v("1h", 0, "req") == ("counter", 4, None, 20.0, 130.0, 50.0, 80.0, 80 / 3600)
    # gauges: last, min, max and avg = sum / count
    assert v("1m", 0, "temp") == ("gauge", 3, 8.75, -1.5, 7.25, 7.25, None, None)
    assert v("1m", 1, "temp") == ("gauge", 1, 2.0, 2.0, 2.0, 2.0, None, None)
    assert v("1h", 0, "temp") == ("gauge", 4, 10.75, -1.5, 7.25, 2.0, None, None)
    # delta histograms merged; quantiles interpolated in the merged buckets (0,10] (10,100] (100,+Inf)
    h = lambda res, k: (*v(res, k, "lat")[:3], *(got[(res, k, "lat")][q] for q in ("p50", "p99")))  # noqa: E731
    assert h("1m", 0) == ("histogram", 3, 60.0, 7.5, pytest.approx(97.3, rel=1e-12))  # p99: 10 + 90 * 0.97
    assert h("1m", 1) == ("histogram", 3, 450.0, 77.5, 100.0)  # p99 in +Inf: the last bound
    assert h("1h", 0) == ("histogram", 6, 510.0, 40.0, 100.0)  # buckets 2 3 1: p50 10 + 90 * 1/3
    # summaries (delta count and sum, as the Avro contract states)
    assert v("1m", 0, "jobs")[:3] == ("summary", 4, 10.0) and v("1m", 1, "jobs")[:3] == ("summary", 1, 2.5)
    assert v("1h", 0, "jobs")[:3] == ("summary", 5, 12.5)
    assert {tuple(sorted(dict(x["labels"]).items())) for x in rows if x["name"] != "temp"} == {
        (("région", "Zürich ✓"), ("svc", "a"))
    }
