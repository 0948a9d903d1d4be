"""The running job's /metrics endpoint, scraped during an unbounded Kafka run: records in
per source equal what was produced, dead letters by reason equal the generator's labels,
rows written per table equal the table contents, commit latency/size histograms are
there, and consumer lag falls to 0 on every partition."""

from __future__ import annotations

import re
import subprocess
import time
import urllib.request
from collections import Counter

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.test_kafka_pipeline import PARTITIONS, ROOT, SIGNALS, TOPIC_CONFIG, Expected, cli, produce, write_spec
from tests.sinks.test_kafka_outputs import two_signal_spec


def scrape(url: str) -> dict:
    """``{(sample name, frozenset(labels)): value}``."""
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def values(m: dict, name: str, *keys: str) -> dict:
    return {tuple(dict(labels)[k] for k in keys): v for (n, labels), v in m.items() if n == name}


@pytest.mark.kafka
def test_metrics_endpoint_during_a_kafka_run(kafka_broker, kafka_topic_factory, tmp_path):
    topics = {name: kafka_topic_factory(partitions=PARTITIONS, config=TOPIC_CONFIG, prefix=name) for name in SIGNALS}
    expected = Expected()
    produce(kafka_broker.bootstrap, topics, 200, expected)
    data = two_signal_spec(tmp_path, kafka_broker.bootstrap, topics)
    data["storage"]["commit"] = {"max_rows": 200_000, "max_seconds": "1s"}
    path = write_spec(tmp_path / "spec.yaml", data)
    proc = subprocess.Popen(
        cli(path, "bytewax", "--duration", "25", "--metrics-port", "0"),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        url = None
        for line in proc.stdout:
            m = re.search(r"metrics on (http://\S+)", line)
            if m:
                url = m.group(1)
                break
        assert url, "the run did not print its metrics address"
        want_in = {(s,): float(200 * PARTITIONS) for s in SIGNALS}
        want_dead = {k: float(v) for k, v in Counter(expected.dead.values()).items()}
        # every table's commits land on their own writer thread: settle on all three, not the first two
        want_rows = {
            ("events",): sum(expected.events.values()),
            ("logs",): len(expected.logs),
            ("dead_letters",): len(expected.dead),
        }
        deadline, m = time.monotonic() + 60, {}
        while time.monotonic() < deadline:
            try:
                m = scrape(url)
            except OSError:
                time.sleep(0.2)
                continue
            lag = values(m, "obsflow_consumer_lag", "topic", "partition")
            rows = values(m, "obsflow_rows_written_total", "table")
            if (
                values(m, "obsflow_records_in_total", "source") == want_in
                and len(lag) == 2 * PARTITIONS
                and not any(lag.values())
                and rows == want_rows
            ):
                break
            time.sleep(0.3)
        # settled: exact counters
        assert values(m, "obsflow_records_in_total", "source") == want_in
        assert (
            sum(values(m, "obsflow_records_accepted_total", "source").values())
            + sum(values(m, "obsflow_records_dead_lettered_total", "source").values())
            == expected.records
        )
        dead = Counter()
        for (src, reason), v in values(m, "obsflow_dead_letters_total", "source", "reason").items():
            dead[reason] += v
        assert dict(dead) == want_dead
        assert values(m, "obsflow_rows_written_total", "table") == want_rows
        lag = values(m, "obsflow_consumer_lag", "topic", "partition")
        assert lag == {(t, str(p)): 0.0 for t in topics.values() for p in range(PARTITIONS)}
        assert set(values(m, "obsflow_consumer_position", "topic", "partition").values()) == {200.0}
        count = values(m, "obsflow_commit_duration_seconds_count", "table")
        assert set(count) == {("events",), ("logs",), ("dead_letters",)} and all(v >= 1 for v in count.values())
        assert values(m, "obsflow_commit_rows_sum", "table") == values(m, "obsflow_rows_written_total", "table")
        assert values(m, "obsflow_commits_total", "table") == count
        out = proc.communicate(timeout=90)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out[-3000:]
