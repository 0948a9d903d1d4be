"""Temporality and start time over the Avro (wire schema version 2, registry id 7) and JSON
wire formats: the OpenTelemetry SDK's cumulative exports, decoded by the OTLP codec and
written back as Avro and as JSON samples, roll up into exactly the rows the OTLP path
gives (per-export differences, no double counting) — so an Avro or JSON producer can send
cumulative histograms. Without temporality, a cumulative histogram is read as delta and
double-counts: the field is what makes the difference. An unknown temporality in JSON is a
schema violation."""

import io
import json
import struct

import fastavro
import pyarrow as pa
import pytest

from schemas.codecs import codec_for
from schemas.codecs.avro_codec import schema_id_for
from schemas.wire import raw_avro_schema
from tests.codecs.helpers import as_rows, raw_batch
from tests.rollup.test_otlp_temporality import check_two_exports, payload, rollup, table, two_exports
from transforms.batch import RawBatch
from transforms.rollup import MetricRollup, RollupConfig
from transforms.validate import Validator
from pipelines.spec import ValidateStep

pytestmark = pytest.mark.metrics
V2 = fastavro.parse_schema(raw_avro_schema("metric_sample_v2"))


def otlp_samples(exports) -> list[list[dict]]:
    """Per export, the samples the OTLP codec reads from it (wire columns, as Python values)."""
    codec = codec_for("otlp_proto", "metric", 1 << 20)
    out = []
    for e in exports:
        b = codec.decode(raw_batch([payload(e, "otlp_proto")]))
        assert len(b.rejects) == 0
        out.append(
            as_rows(b.table.drop_columns(["_i", "_item"]))
        )  # wire columns only (the OTLP codec adds the item index)
    return out


def avro_v2(sample: dict) -> bytes:
    rec = dict(sample, kind=sample["kind"].upper(), temporality=sample["temporality"] and sample["temporality"].upper())
    out = io.BytesIO()
    out.write(struct.pack(">bI", 0, schema_id_for("metric")))
    fastavro.schemaless_writer(out, V2, rec)
    return out.getvalue()


def iso(ts) -> str | None:
    return None if ts is None else ts.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def json_sample(sample: dict) -> bytes:
    return json.dumps(dict(sample, timestamp=iso(sample["timestamp"]), start_time=iso(sample["start_time"]))).encode()


def ingested(payloads: list[bytes], at_ms: int) -> RawBatch:
    """The samples as one Kafka batch ingested at ``at_ms`` (their export time)."""
    return RawBatch("metrics", "metrics", 0, payloads, list(range(len(payloads))), [at_ms] * len(payloads))


def roll(batches: list[list[bytes]], codec_name: str, w0: int) -> pa.Table:
    codec = codec_for(codec_name, "metric", 1 << 20)
    validate = Validator("metric", ValidateStep(kind="validate"))
    r = MetricRollup(RollupConfig(resolutions=["1m", "1h"], watermark_delay="0s", allowed_lateness="0s"))
    outs = []
    for k, payloads in enumerate(batches):  # one batch per export, ingested when it was exported
        b = validate(codec.decode(ingested(payloads, w0 + k * 60_000 + 30_000)))
        assert len(b.rejects) == 0, list(zip(b.rejects.reasons, b.rejects.details))
        outs.append(r.process(b.table.drop_columns(["_i"])).metrics)
    outs.append(r.flush().metrics)
    return pa.concat_tables(outs)


def test_schema_id_7_is_the_metric_wire_schema_and_id_4_still_reads():
    assert schema_id_for("metric") == 7 and schema_id_for("metric_sample") == 4


@pytest.mark.parametrize("wire", ["avro", "json"])
def test_cumulative_samples_over_avro_and_json_roll_up_as_the_otlp_path_does(wire):
    exports, w0 = two_exports()
    samples = otlp_samples(exports)
    assert {s["temporality"] for batch in samples for s in batch} == {"cumulative"}
    assert all(s["start_time"] is not None for batch in samples for s in batch)
    encode = avro_v2 if wire == "avro" else json_sample
    got = roll([[encode(s) for s in batch] for batch in samples], wire, w0)
    check_two_exports(got, w0)
    want, _ = rollup(exports)
    assert table(got, w0) == table(want, w0)


def test_without_temporality_a_cumulative_histogram_double_counts():
    exports, w0 = two_exports()
    samples = otlp_samples(exports)
    got = table(roll([[json_sample(dict(s, temporality=None)) for s in batch] for batch in samples], "json", w0), w0)
    lat = [v for k, v in got.items() if k[:3] == ("1h", 0, "http.duration_ms")]
    assert [r["count"] for r in lat] == [10]  # 4 + 6 (cumulative read as delta), not 6


def test_an_unknown_temporality_is_a_schema_violation():
    exports, w0 = two_exports()
    s = otlp_samples(exports)[0][0]
    codec = codec_for("json", "metric", 1 << 20)
    b = Validator("metric", ValidateStep(kind="validate"))(
        codec.decode(
            ingested(
                [json_sample(dict(s, temporality="sometimes")), json_sample(dict(s, temporality="Delta"))], w0 + 30_000
            )
        )
    )
    assert list(zip(b.rejects.indices, b.rejects.reasons)) == [(0, "schema_violation")]
    assert b.rejects.details[0] == "temporality: unknown temporality sometimes; expected CUMULATIVE or DELTA"
    assert b.table.column("temporality").to_pylist() == ["delta"]


def test_a_late_cumulative_sample_is_dead_lettered_with_its_temporality_and_start_time():
    """The dead letter of a late sample re-encodes it as a JSON sample that decodes back to
    the same wire values (temporality and start time included)."""
    from pipelines.stages import _late_dead_letters

    exports, w0 = two_exports()
    s = next(x for x in otlp_samples(exports)[1] if x["kind"] == "HISTOGRAM")
    wire = codec_for("json", "metric", 1 << 20)
    late = pa.Table.from_pylist(
        [dict(s, ingested_at=None, source_topic="metrics", source_partition=0, source_offset=7)]
    )
    dl = _late_dead_letters(late, "metrics", 0).to_pylist()
    assert [(d["reason"], d["source_offset"]) for d in dl] == [("late_data", 7)]
    back = as_rows(wire.decode(ingested([dl[0]["raw"]], w0)).table.drop_columns(["_i"]))
    assert back == [s] and s["temporality"] == "cumulative" and s["start_time"] is not None
