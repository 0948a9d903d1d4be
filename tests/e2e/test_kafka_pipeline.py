"""Kafka in, on both engines, against a real broker: the tables and dead letters hold
exactly the records produced (malformed ones and tombstones included, each with its
reason), nothing lost or written twice across kill -9 crashes and a broker restart,
and clear errors for a missing topic or a broker that is down at start.

Records are the embedded generator's partition streams (realistic traffic plus its
labelled malformed records), produced keyed to explicit partitions with their
generated timestamps as Kafka record timestamps."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml
from confluent_kafka import Producer

from core.errors import EXIT_INTERRUPTED
from core.stats import RunStats
from pipelines import DEFAULT_SPEC
from pipelines.loader import SpecError, parse_spec
from runners.job import RunRequest
from runners.stats import STATS
from sources.generator import partition_stream
from tests.helpers import START_MS, read_table, strip_traces

ROOT = Path(__file__).resolve().parents[2]
PARTITIONS = 4
SIGNALS = {"events": "event", "logs": "log"}
TOPIC_CONFIG = {"retention.ms": "-1"}  # generated timestamps are in the past: keep them


# -- helpers ------------------------------------------------------------------------------


class Expected:
    """What the tables must hold: per table the exact (topic, partition, offset) set."""

    def __init__(self):
        self.events: Counter = Counter()  # (topic, p, off) -> rows (interactions)
        self.logs: set = set()
        self.dead: dict = {}  # (topic, p, off) -> reason

    @property
    def records(self) -> int:
        return len(self.events) + len(self.logs) + len(self.dead)


def produce(
    bootstrap: str,
    topics: dict[str, str],
    per_partition: int,
    expected: Expected,
    *,
    skip: int = 0,
    tombstones: bool = False,
) -> None:
    """Produce records ``skip .. skip+per_partition`` of each partition's generated stream
    (to partition p of each signal's topic), recording what each must become."""
    import json

    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all", "linger.ms": 20})
    errors = []
    for source, topic in topics.items():
        signal = SIGNALS[source]
        for part in range(PARTITIONS):
            stream = partition_stream(
                signal, topic, part, skip + per_partition, start_ms=START_MS, rate_per_s=500.0, bad_fraction=0.04
            )
            items = [(g.value, g.timestamp_ms, g.label) for g in stream][skip:]
            if tombstones:
                items.append((None, START_MS + 1000, "format_violation"))

            def on_delivery(err, msg, value=None, label=None, signal=signal):
                if err is not None:
                    errors.append(err)
                    return
                key = (msg.topic(), msg.partition(), msg.offset())
                if label:
                    expected.dead[key] = label
                elif signal == "event":
                    expected.events[key] = len(json.loads(value)["events"])
                else:
                    expected.logs.add(key)

            for k, (value, ts, label) in enumerate(items):
                while True:
                    try:
                        p.produce(
                            topic,
                            value=value,
                            key=f"{source}-{part}-{skip + k}".encode(),
                            partition=part,
                            timestamp=ts,
                            headers=[("producer", b"test_kafka_pipeline")],
                            on_delivery=lambda err, msg, v=value, lab=label, f=on_delivery: f(err, msg, v, lab),
                        )
                        break
                    except BufferError:
                        p.poll(0.1)
    assert p.flush(60) == 0
    assert not errors, errors[:3]


def spec_data(
    warehouse: Path,
    bootstrap: str,
    topics: dict[str, str],
    *,
    max_rows: int = 200_000,
    max_seconds: float = 5,
    batch: int = 1000,
    **kafka,
) -> dict:
    data = strip_traces(yaml.safe_load(DEFAULT_SPEC.read_text()))  # events and logs only: exactly predictable
    data["storage"]["catalog"]["warehouse"] = str(warehouse)
    data["storage"]["commit"] = {"max_rows": max_rows, "max_seconds": f"{max_seconds}s"}
    data["kafka"].update(
        {
            "bootstrap_servers": bootstrap,
            "poll_batch_size": batch,
            "poll_timeout": "200ms",
            "group_id": f"obsflow-test-{warehouse.name}",
            **kafka,
        }
    )
    for s in data["sources"]:
        s["topic"] = topics.get(s["name"], s["topic"])
    return data


def write_spec(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def check_exact(spec, expected: Expected) -> None:
    """Tables + dead letters hold exactly the produced records: nothing lost, nothing twice."""
    ev = (
        read_table(spec, "events")
        .select(["source_topic", "source_partition", "source_offset", "event_index"])
        .to_pylist()
    )
    ev_keys = [(r["source_topic"], r["source_partition"], r["source_offset"], r["event_index"]) for r in ev]
    assert len(ev_keys) == len(set(ev_keys)), "duplicate event rows"
    got_events = Counter(k[:3] for k in ev_keys)
    assert set(got_events) == set(expected.events)
    assert got_events == expected.events
    logs = read_table(spec, "logs").select(["source_topic", "source_partition", "source_offset"]).to_pylist()
    log_keys = [(r["source_topic"], r["source_partition"], r["source_offset"]) for r in logs]
    assert len(log_keys) == len(set(log_keys)), "duplicate log rows"
    assert set(log_keys) == expected.logs
    dl = (
        read_table(spec, "dead_letters")
        .select(["source_topic", "source_partition", "source_offset", "reason"])
        .to_pylist()
    )
    dl_keys = [(r["source_topic"], r["source_partition"], r["source_offset"]) for r in dl]
    assert len(dl_keys) == len(set(dl_keys)), "duplicate dead letters"
    assert {k: r["reason"] for k, r in zip(dl_keys, dl)} == expected.dead


def run_inproc(runner: str, spec, **kw):
    STATS.reset()
    req = RunRequest(spec=spec, runner=runner, source="kafka", bounded=True, **kw)
    if runner == "bytewax":
        from runners.bytewax.run import run as go
    else:
        from runners.beam.run import run as go
    return go(req)


def cli(spec_path: Path, runner: str, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "runners.cli",
        "run",
        "--source",
        "kafka",
        "--runner",
        runner,
        "--spec",
        str(spec_path),
        "--no-progress",
        *extra,
    ]


def catalog_state(warehouse: Path) -> tuple:
    """The tables' current metadata locations (changes on every commit); cheap to poll."""
    db = warehouse / "catalog.db"
    if not db.exists():
        return ()
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
        try:
            return tuple(sorted(con.execute("SELECT table_name, metadata_location FROM iceberg_tables").fetchall()))
        finally:
            con.close()
    except sqlite3.Error:
        return ()


def wait_for_commit(warehouse: Path, proc: subprocess.Popen, before: tuple, timeout: float = 90) -> bool:
    """Wait until some table committed a snapshot the job made (not just created the
    tables) past ``before``; False if the process ended first."""
    deadline = time.monotonic() + timeout
    base = before if len(before) >= 3 else None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        now = catalog_state(warehouse)
        if base is None:
            if len(now) >= 3:
                base = now  # the tables exist; their next metadata change is a commit
        elif now != base:
            return True
        time.sleep(0.1)
    raise AssertionError("the job made no commit in time")


@pytest.fixture
def topics(kafka_topic_factory) -> dict[str, str]:
    return {name: kafka_topic_factory(partitions=PARTITIONS, config=TOPIC_CONFIG, prefix=name) for name in SIGNALS}


# -- bounded runs: exactly what was produced ----------------------------------------------


@pytest.mark.kafka
@pytest.mark.parametrize("runner", ["bytewax", "beam"])
def test_bounded_run_lands_exactly_the_produced_records(runner, kafka_broker, topics, tmp_path):
    expected = Expected()
    produce(kafka_broker.bootstrap, topics, 250, expected, tombstones=True)
    assert set(expected.dead.values()) == {
        "format_violation",
        "schema_violation",
        "size_violation",
        "timestamp_out_of_range",
        "enrichment_failure",
    }
    spec = parse_spec(spec_data(tmp_path / "wh", kafka_broker.bootstrap, topics, batch=300))
    resumed = run_inproc(runner, spec)
    assert resumed == {}
    assert STATS.records_in == expected.records
    assert STATS.records_in == STATS.records_accepted + STATS.records_dead + STATS.records_dropped
    check_exact(spec, expected)
    # every tombstone is a dead letter with its own detail
    dl = read_table(spec, "dead_letters").to_pylist()
    tomb = [r for r in dl if r["raw"] is None]
    assert len(tomb) == 2 * PARTITIONS and all("tombstone" in r["detail"] for r in tomb)
    # the snapshot summaries record every partition's next offset; a rerun reads nothing
    from sinks.catalog import open_catalog
    from sinks.iceberg import snapshot_offsets

    ends = {f"{t}:{p}": 251 for t in topics.values() for p in range(PARTITIONS)}
    assert snapshot_offsets(open_catalog(spec.storage).load_table("obs.dead_letters")) == ends
    resumed = run_inproc(runner, spec)
    assert resumed == ends and STATS.records_in == 0
    # new records are picked up from the recorded positions
    produce(kafka_broker.bootstrap, topics, 50, expected, skip=250)
    run_inproc(runner, spec)
    assert STATS.records_in == 2 * PARTITIONS * 50
    check_exact(spec, expected)


# -- kill -9 at random points: effectively-once ------------------------------------------


@pytest.mark.kafka
@pytest.mark.slow
@pytest.mark.parametrize("runner", ["bytewax", "beam"])
def test_kill9_at_random_points_loses_and_duplicates_nothing(runner, kafka_broker, topics, tmp_path):
    rng = random.Random(f"kill9-{runner}")
    expected = Expected()
    per = 300
    produce(kafka_broker.bootstrap, topics, per, expected)
    wh = tmp_path / "wh"
    data = spec_data(wh, kafka_broker.bootstrap, topics, max_rows=150, max_seconds=0.5, batch=100)
    path = write_spec(tmp_path / "spec.yaml", data)
    kills, produced = 0, per
    for attempt in range(8):
        before = catalog_state(wh)
        proc = subprocess.Popen(
            cli(path, runner, "--bounded"), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        try:
            if wait_for_commit(wh, proc, before):
                # a random point after a commit, while a bounded run this small is still going
                # (a faster pipeline finished more of them inside 1.5 s than the test could kill)
                time.sleep(rng.uniform(0.0, 0.4))
                if proc.poll() is None:
                    proc.kill()
                    kills += 1
            out = proc.communicate(timeout=120)[0].decode(errors="replace")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode in (0, -9), out[-3000:]
        if kills >= 3:
            break
        # more traffic arrives while the job is down
        produce(kafka_broker.bootstrap, topics, 100, expected, skip=produced)
        produced += 100
    assert kills >= 3
    # the last run, to completion
    done = subprocess.run(cli(path, runner, "--bounded"), cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    check_exact(parse_spec(data), expected)


# -- unbounded: records arriving while the job runs are committed on time ---------------


@pytest.mark.kafka
@pytest.mark.slow
@pytest.mark.parametrize("runner", ["bytewax", "beam"])
def test_unbounded_run_commits_new_records_while_running(runner, kafka_broker, topics, tmp_path):
    """Records that arrive while an unbounded run goes on are committed by age
    (``commit.max_seconds``) while it still runs, exactly once; Ctrl-C then ends it."""
    expected = Expected()
    wh = tmp_path / "wh"
    data = spec_data(wh, kafka_broker.bootstrap, topics, max_seconds=1, batch=500)
    spec = parse_spec(data)
    path = write_spec(tmp_path / "spec.yaml", data)
    # a run far longer than every wait below (each only guards a hang): its final flush, at
    # the end of its duration, cannot be what commits the records
    proc = subprocess.Popen(
        cli(path, runner, "--duration", "3600"), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 300
        while len(catalog_state(wh)) < 3 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert proc.poll() is None, "the job ended before creating its tables"
        produce(kafka_broker.bootstrap, topics, 40, expected)
        assert wait_until_exact(spec, expected, proc), "the job ended before committing what arrived"
        proc.send_signal(signal.SIGINT)  # Ctrl-C: the run ends with the documented exit code
        out = proc.communicate(timeout=300)[0].decode(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == EXIT_INTERRUPTED, out[-3000:]
    check_exact(spec, expected)


def wait_until_exact(spec, expected: Expected, proc: subprocess.Popen, timeout: float = 600) -> bool:
    """Wait until the tables hold exactly the expected records (:func:`check_exact`) while
    ``proc`` runs; False if it ended first. ``timeout`` only guards a hang."""
    deadline = time.monotonic() + timeout
    last: AssertionError | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            check_exact(spec, expected)
            return proc.poll() is None
        except AssertionError as e:
            last = e
        time.sleep(0.5)
    raise AssertionError(f"the records were not committed while the job ran: {last}")


# -- broker restart mid-run ---------------------------------------------------------------


@pytest.mark.kafka
@pytest.mark.slow
def test_broker_restart_mid_run_loses_nothing(private_kafka_broker, tmp_path):
    broker = private_kafka_broker
    topics = {
        name: broker.create_topic(f"{name}-restart", partitions=PARTITIONS, config=TOPIC_CONFIG) for name in SIGNALS
    }
    expected = Expected()
    produce(broker.bootstrap, topics, 400, expected)
    wh = tmp_path / "wh"
    # small fetch queues, so the job really fetches after the restart instead of from its prefetch
    data = spec_data(
        wh,
        broker.bootstrap,
        topics,
        max_rows=150,
        max_seconds=0.5,
        batch=100,
        config={"queued.max.messages.kbytes": "64", "max.partition.fetch.bytes": "16384"},
    )
    path = write_spec(tmp_path / "spec.yaml", data)
    env = {k: v for k, v in os.environ.items() if k != "OBSFLOW_KAFKA_BOOTSTRAP"}  # this broker, not a shared one
    proc = subprocess.Popen(
        cli(path, "bytewax", "--bounded"), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env
    )
    try:
        assert wait_for_commit(wh, proc, catalog_state(wh)), "the job ended before the broker could be restarted"
        broker.kill()
        before = catalog_state(wh)
        from sinks.catalog import open_catalog
        from sinks.iceberg import snapshot_offsets

        done_at_kill = snapshot_offsets(open_catalog(parse_spec(data).storage).load_table("obs.dead_letters"))
        assert sum(done_at_kill.values()) < 2 * PARTITIONS * 400  # the job was mid-way
        time.sleep(2.0)
        broker.restart()
        out = proc.communicate(timeout=180)[0].decode(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out[-3000:]
    assert catalog_state(wh) != before  # it went on committing after the restart
    check_exact(parse_spec(data), expected)


# -- bad conditions: clear errors ---------------------------------------------------------


@pytest.mark.kafka
def test_missing_topic_is_a_clear_error(kafka_broker, tmp_path, capsys):
    from runners.cli import main

    data = spec_data(tmp_path / "wh", kafka_broker.bootstrap, {"events": "no-such-topic-xyz"})
    path = write_spec(tmp_path / "spec.yaml", data)
    rc = main(["run", "--source", "kafka", "--runner", "bytewax", "--spec", str(path), "--bounded", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "'no-such-topic-xyz'" in err and "does not exist" in err and "--create --topic no-such-topic-xyz" in err


def test_broker_down_at_start_retries_then_says_what_to_start(tmp_path, capsys, caplog, monkeypatch):
    from infra.service import free_port
    from runners.cli import main

    monkeypatch.delenv("OBSFLOW_KAFKA_BOOTSTRAP", raising=False)

    data = spec_data(
        tmp_path / "wh",
        f"127.0.0.1:{free_port()}",
        {},
        connect_retries=2,
        connect_backoff="100ms",
        connect_timeout="500ms",
    )
    path = write_spec(tmp_path / "spec.yaml", data)
    started = time.monotonic()
    rc = main(["run", "--source", "kafka", "--runner", "beam", "--spec", str(path), "--bounded", "--no-progress"])
    took = time.monotonic() - started
    err = capsys.readouterr().err
    assert rc == 3
    assert "not reachable" in err and "3 attempts" in err and "python -m infra.kafka start" in err
    assert "kafka.bootstrap_servers" in err
    assert took < 10
    assert sum("retrying in" in r.getMessage() for r in caplog.records) == 2


# -- topic patterns -----------------------------------------------------------------------


@pytest.mark.kafka
def test_topic_pattern_discovers_every_matching_partition(kafka_broker, kafka_topic_factory, tmp_path):
    from sources.kafka import KafkaSource

    a = kafka_topic_factory(partitions=2, prefix="patlogs")
    b = kafka_topic_factory(partitions=3, prefix="patlogs")
    kafka_topic_factory(partitions=1, prefix="other")
    data = spec_data(tmp_path / "wh", kafka_broker.bootstrap, {"events": a})
    data["sources"][1] = {"name": "logs", "topic_pattern": r"patlogs-test_topic_pattern.*", "signal": "log"}
    spec = parse_spec(data)
    parts = KafkaSource(spec, [spec.sources[1]], counters=RunStats()).partitions()
    assert sorted((p.topic, p.partition) for p in parts) == sorted([(a, 0), (a, 1)] + [(b, i) for i in range(3)])
    assert {p.source for p in parts} == {"logs"}


def test_spec_needs_exactly_one_of_topic_and_topic_pattern():
    data = yaml.safe_load(DEFAULT_SPEC.read_text())
    data["sources"][1]["topic_pattern"] = "logs-.*"
    with pytest.raises(SpecError) as e:
        parse_spec(data)
    assert e.value.problems == [("sources[1]", "expected exactly one of 'topic' and 'topic_pattern', got 'both'")]
    del data["sources"][1]["topic"]
    data["sources"][1]["topic_pattern"] = "logs-("
    with pytest.raises(SpecError) as e:
        parse_spec(data)
    assert e.value.problems[0][0] == "sources[1].topic_pattern"
    data["sources"][1]["topic_pattern"] = "logs-.*"
    spec = parse_spec(data)
    assert spec.source("logs").topic is None and spec.kafka.bootstrap_servers == "127.0.0.1:9092"


@pytest.mark.kafka
def test_each_batch_says_how_many_records_its_partition_still_holds(kafka_broker, kafka_topic_factory, tmp_path):
    """``RawBatch.lag``: what was left after the batch up to the partition's high watermark
    when it was read (the stages hold their idle advance while it is above 0)."""
    from sources.kafka import KafkaSource

    topic = kafka_topic_factory(partitions=1, prefix="lag")
    p = Producer({"bootstrap.servers": kafka_broker.bootstrap})
    for k in range(10):
        p.produce(topic, value=b'{"k": %d}' % k, partition=0)
    assert p.flush(30) == 0
    spec = parse_spec(spec_data(tmp_path / "wh", kafka_broker.bootstrap, {"events": topic}))
    source = KafkaSource(spec, [spec.sources[0]], batch_size=4, counters=RunStats())
    batches = list(source.batches(source.partitions()[0], 0))
    assert [(b.offsets[0], len(b), b.lag) for b in batches] == [(0, 4, 6), (4, 4, 2), (8, 2, 0)]
