"""Parity: one Kafka input gives identical table contents on the Beam DirectRunner
(bounded read), Beam on a real Flink cluster (streaming), Bytewax with one worker and a
Bytewax cluster (2 processes × 2 workers).

Compared: every row of events, logs and dead_letters (all columns), sorted. The spec is
the default without traces: spans/traces are left out because on a streaming Flink job
the tail sampler decides a trace only when the event-time watermark passes its
decision_wait, and a finite test input never advances it past the last traces (a
bounded run decides them in the final flush) — the traces' parity between the bounded
runners is covered by the trace tests."""

from __future__ import annotations

import time

import pyarrow as pa
import pytest

from pipelines.loader import parse_spec
from runners.bytewax.cluster import ClusterRun, spawn, wait
from sinks.catalog import open_catalog
from sinks.iceberg import snapshot_offsets
from tests.fixtures.flink import flink_cluster  # noqa: F401 - the session fixture
from tests.helpers import read_table, strip_traces
from tests.e2e.test_kafka_pipeline import (
    PARTITIONS,
    TOPIC_CONFIG,
    Expected,
    check_exact,
    produce,
    run_inproc,
    spec_data,
    write_spec,
)

TABLES = ("events", "logs", "dead_letters")


def rows(spec, name: str) -> list[tuple]:
    t: pa.Table = read_table(spec, name)
    cols = sorted(t.column_names)
    return sorted(tuple(repr(r[c]) for c in cols) for r in t.select(cols).to_pylist())


def positions(spec) -> dict[str, dict[str, int]]:
    cat = open_catalog(spec.storage)
    out = {}
    for name in TABLES:
        try:
            out[name] = snapshot_offsets(cat.load_table(f"{spec.storage.namespace}.{name}"))
        except Exception:  # noqa: BLE001 - not created yet
            out[name] = {}
    return out


@pytest.mark.kafka
@pytest.mark.flink
@pytest.mark.slow
def test_same_tables_on_direct_flink_bytewax_and_bytewax_cluster(
    flink_cluster,  # noqa: F811
    kafka_broker,
    kafka_topic_factory,  # noqa: F811
    tmp_path,
):
    topics = {n: kafka_topic_factory(partitions=PARTITIONS, config=TOPIC_CONFIG, prefix=n) for n in ("events", "logs")}
    expected = Expected()
    produce(kafka_broker.bootstrap, topics, 150, expected, tombstones=True)
    ends = {f"{t}:{p}": 151 for t in topics.values() for p in range(PARTITIONS)}
    # each table records the partitions of the topics that feed it; dead letters come from both
    want = {
        "events": {k: v for k, v in ends.items() if k.startswith(topics["events"] + ":")},
        "logs": {k: v for k, v in ends.items() if k.startswith(topics["logs"] + ":")},
        "dead_letters": ends,
    }

    def spec_for(name: str):
        data = strip_traces(spec_data(tmp_path / name, kafka_broker.bootstrap, topics, max_seconds=1, batch=120))
        return data, parse_spec(data)

    specs = {}
    # Beam DirectRunner, bounded read; Bytewax, one worker
    for runner, name in (("beam", "direct"), ("bytewax", "bytewax1")):
        _, specs[name] = spec_for(name)
        run_inproc(runner, specs[name])
    # Bytewax cluster, 2 processes × 2 workers
    data, specs["cluster"] = spec_for("cluster")
    path = write_spec(tmp_path / "cluster.yaml", data)
    codes = wait(spawn(ClusterRun(str(path), bounded=True), processes=2, workers=2, log_dir=tmp_path), timeout=180)
    assert codes == [0, 0], [(tmp_path / f"process-{i}.log").read_text()[-2000:] for i in range(2)]
    # Beam on Flink, streaming: wait until every table records the ends, then cancel
    from runners.beam.flink import submit
    from runners.flink_rest import FlinkRest

    _, specs["flink"] = spec_for("flink")
    sub = submit(
        specs["flink"],
        flink_cluster.master,
        worker_pool=f"127.0.0.1:{flink_cluster.ensure_worker_pool()}",
        job_name="obsflow-parity",
    )
    rest = FlinkRest(flink_cluster.master)
    try:
        deadline = time.monotonic() + 150
        while positions(specs["flink"]) != want:
            behind = {
                t: {k.rsplit("-", 1)[-1]: v for k, v in pos.items() if v != want[t].get(k)}
                | {"missing": sorted(set(want[t]) - set(pos))}
                for t, pos in positions(specs["flink"]).items()
            }
            assert time.monotonic() < deadline, behind
            assert rest.state(sub.job.jid) == "RUNNING"
            time.sleep(1.0)
    finally:
        rest.cancel(sub.job.jid)
        rest.wait_for_state(sub.job.jid, {"CANCELED"}, timeout=60)

    for name, spec in specs.items():
        check_exact(spec, expected)  # exact offsets and reasons on each engine
        assert positions(spec) == want, name
    reference = {t: rows(specs["direct"], t) for t in TABLES}
    assert all(reference[t] for t in TABLES)
    for name in ("flink", "bytewax1", "cluster"):
        for t in TABLES:
            got = rows(specs[name], t)
            assert len(got) == len(reference[t]), (name, t)
            diff = [(a, b) for a, b in zip(got, reference[t]) if a != b][:2]
            assert got == reference[t], (name, t, diff)
