"""The pipeline-health counters of a Beam job on a real Flink cluster: every SDK worker
process that commits tags its commits' counters (``obsflow.stats``) with the job's one run
id, fixed when the pipeline was built in the submitting process and pickled with the writing
DoFns (the workers have no ``$OBSFLOW_RUN_ID``), so the UI's JSON API sums the workers'
counters into one run whose totals are the records produced.

Before the run id was carried with the DoFns, each worker process was its own run (keyed by
its own ``run_started``): the UI's newest figures were one process's.

One submission costs about 30-50 s on two cores (see test_flink_runner.py)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from pipelines.loader import parse_spec
from runners.flink_rest import FlinkRest
from tests.e2e.test_kafka_pipeline import PARTITIONS, TOPIC_CONFIG, Expected, produce
from tests.fixtures.flink import flink_cluster  # noqa: F401 - the session fixture
from tests.runners.test_flink_runner import flink_spec_data, wait_exact

pytestmark = [pytest.mark.flink, pytest.mark.kafka, pytest.mark.slow]

PER_PARTITION = 150


def _rows(panel: dict) -> list[dict]:
    return [dict(zip(panel["columns"], r)) for r in panel["rows"]]


def _commit_stats(reader) -> list[dict]:
    """The ``obsflow.stats`` of every commit of every table."""
    return [
        json.loads(c["summary"]["obsflow.stats"])
        for m in reader.tables().values()
        for c in m.commits
        if c["summary"].get("obsflow.stats")
    ]


def test_flink_job_counters_add_up_over_its_worker_processes(
    flink_cluster,  # noqa: F811
    kafka_broker,
    kafka_topic_factory,  # noqa: F811
    tmp_path: Path,
    monkeypatch,
):
    from starlette.testclient import TestClient

    from runners.beam.flink import submit
    from runners.query import connect
    from sinks.iceberg import RUN_ID_ENV
    from ui.app import create_app
    from ui.data import Reader

    monkeypatch.delenv(RUN_ID_ENV, raising=False)  # the submitter has none: the job makes its own
    topics = {n: kafka_topic_factory(partitions=PARTITIONS, config=TOPIC_CONFIG, prefix=n) for n in ("events", "logs")}
    expected = Expected()
    produce(kafka_broker.bootstrap, topics, PER_PARTITION, expected)
    produced = len(topics) * PARTITIONS * PER_PARTITION  # every record sent to Kafka, one per offset
    assert expected.records == produced
    data = flink_spec_data(tmp_path, kafka_broker.bootstrap, topics)
    spec = parse_spec(data)
    master = flink_cluster.master
    pool = f"127.0.0.1:{flink_cluster.ensure_worker_pool()}"
    rest = FlinkRest(master)

    # parallelism 2 and up to 4 SDK worker processes on the task manager (Beam's default is one
    # a task manager). The runner hands each operator instance that opens the next process in
    # turn (round robin over --sdk_worker_parallelism, in the order they open): with 2 it gave
    # both Kafka-reading instances the same process in one of three runs; with one process per
    # instance (2 stages x 2) the keyed Kafka reads spread over processes that each commit
    sub = submit(
        spec,
        master,
        parallelism=2,
        worker_pool=pool,
        job_name="obsflow-flink-counters",
        extra_options=["--sdk_worker_parallelism=4"],
    )
    try:
        wait_exact(spec, expected, rest, sub.job.jid)
        # the tables are exact: every record's commit has landed, with its process's counters
        reader = Reader(spec)
        client = TestClient(create_app(spec, reader))
        deadline = time.monotonic() + 30
        while True:  # a process's last commit carries all it read; allow a commit in flight to land
            got = client.get("/api/v1/health/pipeline_counters", params={"range": "all"})
            assert got.status_code == 200, got.text
            rows = _rows(got.json())
            if (rows and rows[-1]["records_in"] == produced) or time.monotonic() > deadline:
                break
            time.sleep(1.0)
    finally:
        rest.cancel(sub.job.jid)
        assert rest.wait_for_state(sub.job.jid, {"CANCELED"}, timeout=60) == "CANCELED"

    stats = _commit_stats(reader)
    procs = {s["process"] for s in stats}
    con = connect(spec)
    dead = con.execute("SELECT count(*) FROM obs.dead_letters").fetchone()[0]
    con.close()
    assert dead == len(expected.dead) > 0
    newest = rows[-1]
    print(
        f"flink counters: {len(procs)} worker processes committed {len(stats)} commits; newest: "
        f"in {newest['records_in']}, dead {newest['records_dead_lettered']}, processes {newest['processes']}"
    )
    assert len(procs) >= 2, f"one SDK worker process committed everything: {procs}"
    # one run, however many worker processes committed: the UI's newest figures are its totals
    assert (newest["records_in"], newest["records_dead_lettered"], newest["processes"]) == (produced, dead, len(procs))
    assert newest["records_accepted"] + newest["records_dead_lettered"] + newest["records_dropped"] == produced
    assert sum(r["in_since_previous_commit"] for r in rows) == produced
    assert sum(r["dead_lettered_since_previous_commit"] for r in rows) == dead
    assert {s.get("run_id") for s in stats} == {sub.run_id} and len(sub.run_id) == 32
    reader.close()
