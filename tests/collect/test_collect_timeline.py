"""Where a transactional request's time goes, in /metrics: ``obsflow_collect_txn_phase_seconds``
counts every answered request's queue wait once and every committed transaction's begin,
produce, commit and hand-off back to the event loop once (real broker, real collector); two
transaction writers by default."""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from pipelines.loader import parse_spec
from tests.collect.conftest import collect_spec_dict
from tests.collect.test_collect_e2e import iso

pytestmark = [pytest.mark.collect]


def _metric(text: str, name: str, labels: str = "") -> float:
    m = re.search(rf"^{re.escape(name)}{re.escape(labels)} (\S+)$", text, re.M)
    assert m is not None, f"{name}{labels} not in /metrics"
    return float(m.group(1))


def test_two_transaction_writers_by_default(tmp_path):
    """Two writers: a request arriving during a commit starts the next transaction at once
    (bench/README.md, open-loop latency: the p99 at 3,000 requests/s several times lower)."""
    d = collect_spec_dict(tmp_path, "127.0.0.1:9", {s: s for s in ("event", "log", "span", "metric", "dead_letters")})
    assert parse_spec(d).collect.transaction_writers == 2
    d["collect"]["transaction_writers"] = 1
    assert parse_spec(d).collect.transaction_writers == 1


@pytest.mark.kafka
def test_txn_phases_count_each_request_and_transaction_once(kafka_broker, collect_topics, tmp_path, start_collector):
    c = start_collector(collect_spec_dict(tmp_path, kafka_broker.bootstrap, collect_topics))
    now = int(time.time() * 1000)

    def post(i: int) -> int:
        env = {"event_id": f"t{i}", "page": "/p", "timestamp": iso(now), "session_id": f"s{i % 3}"}
        env["events"] = [{"type": "page_view"}]
        return requests.post(c.url + "/v1/events", json=[env], timeout=30).status_code

    with ThreadPoolExecutor(8) as pool:  # concurrent: several requests share a transaction
        codes = list(pool.map(post, range(24)))
    codes += [post(100 + i) for i in range(3)]  # one by one: a transaction each
    assert codes == [200] * 27
    m = requests.get(c.url + "/metrics", timeout=10).text
    txns = _metric(m, "obsflow_collect_transactions_committed")
    assert 4 <= txns <= 27
    count = "obsflow_collect_txn_phase_seconds_count"
    assert _metric(m, count, '{phase="queue"}') == 27  # each request once
    for phase in ("begin", "produce", "commit", "handoff"):  # each committed transaction once (one event loop)
        assert _metric(m, count, f'{{phase="{phase}"}}') == txns, phase
    assert _metric(m, "obsflow_collect_txn_phase_seconds_sum", '{phase="commit"}') > 0
    # the inf bucket holds every observation; the commit's round trips take more than 0.1 ms each time
    assert _metric(m, "obsflow_collect_txn_phase_seconds_bucket", '{le="+Inf",phase="commit"}') == txns
    assert _metric(m, "obsflow_collect_txn_phase_seconds_bucket", '{le="0.0001",phase="commit"}') == 0
