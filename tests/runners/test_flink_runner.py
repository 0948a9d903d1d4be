"""Beam on a real Flink session cluster: `obsflow submit` runs the streaming Kafka →
Iceberg pipeline detached, `obsflow jobs` / `obsflow cancel` go through Flink's REST API,
the tables hold exactly the produced records (malformed ones as dead letters with their
reasons), and a resubmission after cancel resumes from the tables' positions without
loss or duplicates.

One submission costs about 30-50 s on two cores (the job server JVM translates the
pipeline; the Python SDK harness starts in the worker pool), so the whole story is one
test."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipelines.loader import parse_spec
from runners.flink_rest import FlinkRest
from tests.fixtures.flink import flink_cluster  # noqa: F401 - the session fixture
from tests.helpers import strip_traces
from tests.e2e.test_kafka_pipeline import (
    PARTITIONS,
    TOPIC_CONFIG,
    Expected,
    check_exact,
    produce,
    spec_data,
    write_spec,
)

pytestmark = [pytest.mark.flink, pytest.mark.kafka, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def obsflow(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "runners.cli", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def wait_exact(spec, expected: Expected, rest: FlinkRest, jid: str, timeout: float = 120) -> float:
    """Poll until the tables hold exactly ``expected`` (the job stays RUNNING meanwhile)."""
    t0 = time.monotonic()
    last: BaseException | None = None
    while time.monotonic() - t0 < timeout:
        try:
            check_exact(spec, expected)
            return time.monotonic() - t0
        except (AssertionError, Exception) as e:  # noqa: BLE001 - tables not there yet count as "not yet"
            last = e
        assert rest.state(jid) == "RUNNING", f"job {jid} left RUNNING: {rest.state(jid)}"
        time.sleep(1.0)
    raise AssertionError(f"tables not exact after {timeout:.0f}s: {last!r}"[:2000])


def job_run_ids(spec) -> set:
    """The run ids in the counters (``obsflow.stats``) of every commit of the spec's tables."""
    from sinks.catalog import open_catalog
    from sinks.iceberg import STATS_KEY

    catalog = open_catalog(spec.storage)
    ids = set()
    for ns, name in catalog.list_tables(spec.storage.namespace):
        for snap in catalog.load_table(f"{ns}.{name}").snapshots():
            raw = snap.summary.additional_properties.get(STATS_KEY) if snap.summary else None
            if raw:
                ids.add(json.loads(raw).get("run_id"))
    return ids


def orphaned_job_servers() -> set[int]:
    """Pids of Beam job-server JVMs whose parent has gone (re-parented to init)."""
    out = set()
    for d in Path("/proc").glob("[0-9]*"):
        try:
            cmd = (d / "cmdline").read_bytes().decode(errors="replace")
            ppid = (d / "stat").read_text().rsplit(")", 1)[1].split()[1]
        except OSError:
            continue
        if "job-server" in cmd and "java" in cmd and ppid == "1":
            out.add(int(d.name))
    return out


def flink_spec_data(tmp_path: Path, bootstrap: str, topics: dict[str, str]) -> dict:
    return strip_traces(spec_data(tmp_path / "wh", bootstrap, topics, max_seconds=1, batch=200))


def test_submit_list_cancel_resubmit_exactly_once(flink_cluster, kafka_broker, kafka_topic_factory, tmp_path):  # noqa: F811
    topics = {n: kafka_topic_factory(partitions=PARTITIONS, config=TOPIC_CONFIG, prefix=n) for n in ("events", "logs")}
    expected = Expected()
    produce(kafka_broker.bootstrap, topics, 100, expected, tombstones=True)
    data = flink_spec_data(tmp_path, kafka_broker.bootstrap, topics)
    path = write_spec(tmp_path / "spec.yaml", data)
    spec = parse_spec(data)
    master = flink_cluster.master
    pool = f"127.0.0.1:{flink_cluster.ensure_worker_pool()}"
    rest = FlinkRest(master)

    # submit through the CLI: it prints the job id and returns while the job runs on
    orphans_before = orphaned_job_servers()
    t0 = time.monotonic()
    done = obsflow(
        "submit",
        "--runner",
        "flink",
        "--flink-master",
        master,
        "--spec",
        str(path),
        "--worker-pool",
        pool,
        "--job-name",
        "obsflow-flink-test-1",
        "--parallelism",
        "1",
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    jid = done.stdout.strip().splitlines()[-1]
    assert len(jid) == 32, done.stdout
    submitted_in = time.monotonic() - t0
    assert rest.state(jid) == "RUNNING"
    assert orphaned_job_servers() <= orphans_before  # the CLI stopped the job server it started
    listed = [
        json.loads(line) for line in obsflow("jobs", "--flink-master", master, "--format", "json").stdout.splitlines()
    ]
    mine = [j for j in listed if j["id"] == jid]
    assert (
        mine
        and mine[0]["state"] == "RUNNING"
        and mine[0]["name"] == "obsflow-flink-test-1"
        and mine[0]["start_time_ms"] > 0
    )
    table = obsflow("jobs", "--flink-master", master).stdout
    assert jid in table and "RUNNING" in table

    landed_in = wait_exact(spec, expected, rest, jid)
    # the run id submit printed is the one every commit of the job names in its counters
    (run_id,) = [line.split()[-1] for line in done.stderr.splitlines() if line.startswith("run id ")]
    assert len(run_id) == 32
    assert job_run_ids(spec) == {run_id}

    done = obsflow("cancel", jid, "--flink-master", master)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [jid, "CANCELED"]
    assert rest.state(jid) == "CANCELED"
    assert obsflow("cancel", "0" * 32, "--flink-master", master).returncode == 2  # unknown job: a clear error

    # more traffic while no job runs; a resubmission resumes from the tables' positions
    produce(kafka_broker.bootstrap, topics, 40, expected, skip=100)
    from runners.beam.flink import submit

    sub = submit(spec, master, worker_pool=pool, job_name="obsflow-flink-test-2")
    assert sub.job.state == "RUNNING"
    assert sub.resumed_from == {f"{t}:{p}": 101 for t in topics.values() for p in range(PARTITIONS)}
    try:
        wait_exact(spec, expected, rest, sub.job.jid)
    finally:
        rest.cancel(sub.job.jid)
        assert rest.wait_for_state(sub.job.jid, {"CANCELED"}, timeout=60) == "CANCELED"
    print(
        f"flink: submitted in {submitted_in:.0f}s, exact {landed_in:.0f}s after RUNNING; resubmitted in {sub.seconds:.0f}s"
    )


def test_jobs_against_an_unreachable_master_exits_3():
    from infra.service import free_port

    done = obsflow("jobs", "--flink-master", f"127.0.0.1:{free_port()}", timeout=60)
    assert done.returncode == 3 and "not reachable" in done.stderr
