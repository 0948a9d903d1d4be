"""A real Flink session cluster runs a Beam Python pipeline through the FlinkRunner."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

from infra import flink

pytestmark = [pytest.mark.flink, pytest.mark.slow]

LINES = [
    "the quick brown fox jumps over the lazy dog",
    "the dog barks",
    "a fox and a dog",
    "",
    "THE end",
]
EXPECTED = Counter(w for line in LINES for w in line.lower().split())


def test_cluster_is_up(flink_cluster: flink.FlinkCluster) -> None:
    ov = flink_cluster.overview()
    assert ov["taskmanagers"] == 1
    assert ov["slots-total"] == 2
    assert ov["flink-version"] == flink.FLINK_VERSION
    assert flink_cluster.rest_url == f"http://127.0.0.1:{flink_cluster.rest_port}"
    assert flink_cluster.master == f"127.0.0.1:{flink_cluster.rest_port}"
    assert isinstance(flink_cluster.jobs(), list)


def test_beam_wordcount_runs_on_flink(
    flink_cluster: flink.FlinkCluster, flink_beam_options: list[str], tmp_path: Path
) -> None:
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    job_name = f"obsflow-wordcount-{uuid.uuid4().hex[:8]}"
    out = tmp_path / "counts.tsv"
    opts = PipelineOptions([*flink_beam_options, f"--job_name={job_name}"])
    assert opts.get_all_options()["runner"] == "FlinkRunner"

    t0 = time.monotonic()
    with beam.Pipeline(options=opts) as p:
        (
            p
            | beam.Create(LINES)
            | beam.FlatMap(lambda line: line.lower().split())
            | beam.combiners.Count.PerElement()
            | beam.MapTuple(lambda word, n: f"{word}\t{n}")
            | beam.io.WriteToText(str(out), num_shards=1, shard_name_template="")
        )
    elapsed = time.monotonic() - t0

    got = {}
    for row in out.read_text().splitlines():
        word, n = row.split("\t")
        assert word not in got, f"duplicate key {word!r}"
        got[word] = int(n)
    assert got == dict(EXPECTED)
    assert got["the"] == 4 and got["dog"] == 3 and got["fox"] == 2 and got["a"] == 2

    jobs = [j for j in flink_cluster.jobs() if j["name"] == job_name]
    assert len(jobs) == 1, flink_cluster.jobs()
    assert jobs[0]["state"] == "FINISHED"
    assert jobs[0]["tasks"]["failed"] == 0
    print(f"beam wordcount on flink: {elapsed:.1f}s end to end, {jobs[0]['duration'] / 1000:.1f}s in Flink")


def test_cancel_unknown_job_is_an_error(flink_cluster: flink.FlinkCluster) -> None:
    with pytest.raises(Exception):
        flink_cluster.cancel("0" * 32)


def _sleep_forever(x: int) -> int:
    time.sleep(600)
    return x


def test_cancel_running_beam_job(flink_cluster: flink.FlinkCluster, flink_beam_options: list[str]) -> None:
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    job_name = f"obsflow-sleeper-{uuid.uuid4().hex[:8]}"
    p = beam.Pipeline(options=PipelineOptions([*flink_beam_options, f"--job_name={job_name}"]))
    _ = p | beam.Create([1]) | beam.Map(_sleep_forever)
    result = p.run()  # submits and returns; the job server lives until the result is done
    try:
        deadline = time.monotonic() + 180
        job = None
        while time.monotonic() < deadline:
            job = next((j for j in flink_cluster.jobs() if j["name"] == job_name), None)
            if job and job["state"] == "RUNNING":
                break
            time.sleep(0.5)
        assert job is not None and job["state"] == "RUNNING", job
        flink_cluster.cancel(job["jid"])
        assert flink_cluster.wait_for_job(job["jid"], timeout=60) == "CANCELED"
    finally:
        try:
            result.wait_until_finish(duration=60_000)
        except Exception:  # noqa: BLE001 - a cancelled job reports failure to Beam
            pass
