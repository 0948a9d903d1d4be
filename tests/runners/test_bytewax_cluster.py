"""Bytewax as a cluster: 2 processes × 2 workers against 4-partition topics on a real
broker; one process is killed with SIGKILL mid-run, the cluster is started again, and the
tables hold exactly the produced records (nothing lost, nothing twice)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from pipelines.loader import parse_spec
from runners.bytewax.cluster import ClusterRun, spawn, wait
from sinks.catalog import open_catalog
from sinks.iceberg import snapshot_offsets
from tests.helpers import CLUSTER_RUN, obsflow_cli, obsflow_command, strip_traces
from tests.e2e.test_kafka_pipeline import (
    PARTITIONS,
    TOPIC_CONFIG,
    Expected,
    catalog_state,
    check_exact,
    produce,
    spec_data,
    write_spec,
)

ROOT = Path(__file__).resolve().parents[2]


def _setup(kafka_broker, kafka_topic_factory, tmp_path, per: int):
    """Events and logs topics with ``per`` produced records a partition (tombstones
    included), a spec committing often in small batches, and what each record must become."""
    topics = {n: kafka_topic_factory(partitions=PARTITIONS, config=TOPIC_CONFIG, prefix=n) for n in ("events", "logs")}
    expected = Expected()
    produce(kafka_broker.bootstrap, topics, per, expected, tombstones=True)
    wh = tmp_path / "wh"
    data = strip_traces(spec_data(wh, kafka_broker.bootstrap, topics, max_rows=150, max_seconds=0.5, batch=100))
    path = write_spec(tmp_path / "spec.yaml", data)
    return topics, expected, wh, path, parse_spec(data)


@pytest.mark.kafka
@pytest.mark.slow
def test_two_processes_two_workers_kill9_one_process_restart_exact(kafka_broker, kafka_topic_factory, tmp_path):
    topics, expected, wh, path, spec = _setup(kafka_broker, kafka_topic_factory, tmp_path, per := 1500)

    logs = tmp_path / "logs"
    logs.mkdir()
    procs = spawn(ClusterRun(str(path), bounded=True), processes=2, workers=2, log_dir=logs)
    try:
        deadline = time.monotonic() + 90
        base = None
        while time.monotonic() < deadline and all(p.poll() is None for p in procs):
            now = catalog_state(wh)
            if base is None and len(now) >= 3:
                base = now
            elif base is not None and now != base:
                break  # the cluster committed something: it is mid-run
            time.sleep(0.05)
        assert all(p.poll() is None for p in procs), _exit_report(procs, logs)
        procs[1].kill()  # SIGKILL one process
        codes = wait(procs, timeout=90, peer_grace_s=15)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert codes[1] == -9
    done = snapshot_offsets(open_catalog(spec.storage).load_table("obs.dead_letters"))
    assert sum(done.values()) < 2 * PARTITIONS * (per + 1), "the cluster finished before the kill"

    # more traffic while it is down, then the whole cluster again, through the CLI
    produce(kafka_broker.bootstrap, topics, 100, expected, skip=per)
    run = obsflow_cli(
        *CLUSTER_RUN,
        "--workers-per-process",
        "2",
        "--source",
        "kafka",
        "--bounded",
        "--spec",
        str(path),
        "--no-progress",
        timeout=240,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    assert "2 processes × 2 workers" in run.stdout
    check_exact(spec, expected)


def _exit_report(procs, logs: Path) -> str:
    """Exit codes and the tail of each process's log, for an assertion message."""
    parts = [f"exit codes {[p.returncode for p in procs]}"]
    for i in range(len(procs)):
        log = logs / f"process-{i}.log"
        text = log.read_text(errors="replace") if log.exists() else "(no log)"
        parts.append(f"--- process {i}:\n{text[-3000:]}")
    return "\n".join(parts)


def test_process_id_needs_addresses(capsys):
    from runners.cli import main

    assert main(["run", "--runner", "bytewax", "--process-id", "0", "--source", "kafka"]) == 2
    assert "--addresses" in capsys.readouterr().err


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(x) for x in path.read_text().split()] if path.exists() else []


@pytest.mark.kafka
@pytest.mark.slow
def test_cli_cluster_forks_its_processes_kill9_one_restart_exact(kafka_broker, kafka_topic_factory, tmp_path):
    """`obsflow run --processes 2` forks its processes from itself (they share its
    imports): SIGKILL one mid-run, the launcher stops the other and exits non-zero, and a
    second launch lands exactly the produced records."""
    topics, expected, wh, path, spec = _setup(kafka_broker, kafka_topic_factory, tmp_path, per := 1500)
    cmd = [
        *obsflow_command(),
        *CLUSTER_RUN,
        "--source",
        "kafka",
        "--bounded",
        "--spec",
        str(path),
        "--no-progress",
    ]
    launcher = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 90
        base, kids = None, []
        while time.monotonic() < deadline and launcher.poll() is None:
            kids = _children(launcher.pid)
            now = catalog_state(wh)
            if len(kids) == 2 and base is None and len(now) >= 3:
                base = now
            elif base is not None and now != base:
                break  # the cluster committed something: it is mid-run
            time.sleep(0.05)
        assert launcher.poll() is None and len(kids) == 2, launcher.communicate(timeout=60)[0][-3000:]
        # forked, not started anew: a process's command line is the launcher's own
        for k in kids:
            assert Path(f"/proc/{k}/cmdline").read_bytes() == Path(f"/proc/{launcher.pid}/cmdline").read_bytes()
        os.kill(kids[1], signal.SIGKILL)
        out = launcher.communicate(timeout=120)[0]
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
        for k in _children(launcher.pid):
            os.kill(k, signal.SIGKILL)
    assert launcher.returncode != 0 and "a process failed" in out, out[-3000:]
    done = snapshot_offsets(open_catalog(spec.storage).load_table("obs.dead_letters"))
    assert sum(done.values()) < 2 * PARTITIONS * (per + 1), "the cluster finished before the kill"

    produce(kafka_broker.bootstrap, topics, 100, expected, skip=per)
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-3000:]
    assert "cluster finished" in again.stdout and "(ok)" in again.stdout
    check_exact(spec, expected)
