"""No crash loops (issue 19 item 16): a record that a flow step or a stateful stage still
raises on is isolated (its batch bisected), dead-lettered with reason ``internal_error``
and the exception, counted in the run stats and on /metrics, and the job goes on.

The failures come from test-only steps: :class:`PoisonStep` (a flow step raising on log
lines whose message holds :data:`POISON`) and :func:`poison_rollups` (the metrics stage
raising on a sample labelled :data:`POISON_LABEL` *after* taking the whole input, so the
stage must be brought back to its state before that input)."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest
import yaml
from confluent_kafka import Producer
from prometheus_client import generate_latest

from pipelines import DEFAULT_SPEC
from pipelines.graph import CompiledFlow, PipelineGraph, plan_stages
from pipelines.isolate import GuardedStage
from pipelines.loader import parse_spec
from pipelines.stages import MetricsStage
from runners.job import catch_up_plan
from runners.metrics import registry
from runners.stats import STATS
from tests.helpers import read_table, strip_traces
from tests.helpers import iso
from tests.pipelines.test_stage_crashes import INGEST, drive, raw

POISON = "POISON-PILL"
POISON_LABEL = ("poison", "pill")


class PoisonStep:
    """A test-only flow step: raises on a batch holding a log line with :data:`POISON`."""

    def __call__(self, batch):
        if any(POISON in (m or "") for m in batch.table.column("message").to_pylist()):
            raise RuntimeError(f"test-only step fails on {POISON}")
        return batch


def poison_flows(monkeypatch) -> None:
    """Every log flow built from now on ends with :class:`PoisonStep` (both engines build
    their :class:`PipelineGraph` in this process)."""
    init = CompiledFlow.__init__

    def patched(self, spec, flow):
        init(self, spec, flow)
        if self.signal == "log":
            self.post.append(PoisonStep())

    monkeypatch.setattr(CompiledFlow, "__init__", patched)


def poison_rollups(monkeypatch) -> None:
    """The metrics stage takes the whole input, then raises if it held a sample labelled :data:`POISON_LABEL`."""
    process = MetricsStage.process

    def patched(self, item):
        out = process(self, item)
        t = getattr(item, "table", None)
        if (
            t is not None
            and t.num_rows
            and any(POISON_LABEL in (labels or []) for labels in t.column("labels").to_pylist())
        ):
            raise ValueError("test-only stage step fails on a poison sample")
        return out

    monkeypatch.setattr(MetricsStage, "process", patched)


def log_line(k: int, ts_ms: int, poison: bool = False) -> bytes:
    return json.dumps(
        {
            "timestamp": iso(ts_ms),
            "level": "ERROR",
            "service": "checkout",
            "message": f"{POISON} {k}" if poison else f"line {k}",
            "trace_id": None,
            "span_id": None,
            "request_id": f"r{k}",
            "user_id": None,
            "host": "h",
            "env": "prod",
            "attributes": {},
        }
    ).encode()


def sample(k: int, ts_ms: int, poison: bool = False) -> bytes:
    labels = {"service": "checkout", **dict([POISON_LABEL] if poison else [])}
    return json.dumps(
        {"name": "http.requests", "kind": "GAUGE", "timestamp": iso(ts_ms), "labels": labels, "value": float(k)}
    ).encode()


def local(tmp_path):
    d = strip_traces(yaml.safe_load(DEFAULT_SPEC.read_text()), metrics=True)
    d["storage"]["catalog"]["warehouse"] = str(tmp_path)
    d["outputs"]["alerts_topic"] = None
    return d


# -- in process: the graph and the guarded stages ------------------------------------------------


def test_flow_step_raising_on_a_record_isolates_it(tmp_path, monkeypatch):
    STATS.reset()
    poison_flows(monkeypatch)
    graph = PipelineGraph(parse_spec(local(tmp_path)), counters=STATS)
    values = [log_line(k, INGEST - 1000, poison=k in (3, 6)) for k in range(7)]
    out = graph.process(raw("logs", values))
    assert (out.records_in, out.records_accepted, out.records_dead, out.records_dropped) == (7, 5, 2, 0)
    assert out.dead_by_reason == {"internal_error": 2}
    assert (out.first_offset, out.next_offset) == (0, 7)
    assert sorted(out.rows["logs"].column("source_offset").to_pylist()) == [0, 1, 2, 4, 5]
    d = out.rows["dead_letters"].sort_by("source_offset").to_pylist()
    assert [(r["source_offset"], r["reason"], r["raw"]) for r in d] == [
        (3, "internal_error", values[3]),
        (6, "internal_error", values[6]),
    ]
    assert d[0]["detail"] == f"flow 'service_logs' raised RuntimeError: test-only step fails on {POISON}"
    # the rollups' derived samples (log.errors) still come from the five good lines, and the
    # stage inputs cover the whole batch's positions
    derived = [si for si in out.stage_inputs if si.kind == "derived"]
    assert sum(si.table.num_rows for si in derived) == 5
    # parts [0, 3), [4, 5), [5, 6): the last one ends at the batch's end (the isolated record 6)
    for shard in range(4):  # every metrics shard hears of every part
        assert [(si.first_offset, si.next_offset) for si in derived if si.shard == shard] == [(0, 3), (4, 5), (5, 7)]
    assert STATS.internal_errors == {"flow:logs": 2}
    assert STATS.records_in == 0  # the graph does not count: the runners do (STATS.add_output)


class NullDetailStep:
    """A test-only flow step that rejects lines holding :data:`POISON` without a detail."""

    def __call__(self, batch):
        bad = [POISON in (m or "") for m in batch.table.column("message").to_pylist()]
        batch.reject_mask(pa.array(bad), "schema_violation", [None] * len(bad))
        return batch


def test_a_step_rejecting_without_a_detail_ends_as_an_internal_error(tmp_path):
    STATS.reset()
    graph = PipelineGraph(parse_spec(local(tmp_path)), counters=STATS)
    graph.flows["logs"].post.append(NullDetailStep())
    values = [log_line(k, INGEST - 1000, poison=k == 1) for k in range(3)]
    out = graph.process(raw("logs", values))
    assert (out.records_accepted, out.records_dead) == (2, 1)
    d = out.rows["dead_letters"].to_pylist()
    assert [(r["source_offset"], r["reason"], r["raw"]) for r in d] == [(1, "internal_error", values[1])]
    assert d[0]["detail"].startswith(
        "flow 'service_logs' raised ValueError: dead letter without detail: "
        "reason 'schema_violation', detail None, logs:0 offset 1"
    )


def test_stage_raising_after_taking_an_input_is_undone_and_the_record_isolated(tmp_path, monkeypatch):
    STATS.reset()
    poison_rollups(monkeypatch)
    spec = parse_spec(local(tmp_path))
    batches = [
        raw("metrics", [sample(k, INGEST - 1000, poison=k == 4) for k in range(6)]),
        raw("metrics", [sample(k, INGEST - 1000) for k in range(6, 9)]),
    ]
    batches[1].offsets = [6, 7, 8]
    flows, tables = drive(spec, batches)
    assert [f.records_accepted for f in flows] == [6, 3]
    got = [r for r in tables["metrics"].to_pylist() if r["name"] == "http.requests" and r["resolution"] == "1m"]
    # exactly the 8 good samples, none counted twice by the failed attempt
    assert [(r["count"], r["sum"], r["min"], r["max"]) for r in got] == [(8, float(sum(range(9)) - 4), 0.0, 8.0)]
    assert not [r for r in tables["metrics"].to_pylist() if POISON_LABEL in (r["labels"] or [])]
    d = tables["dead_letters"].to_pylist()
    assert [(r["reason"], r["source_topic"], r["source_partition"], r["source_offset"]) for r in d] == [
        ("internal_error", "metrics", 0, 4)
    ]
    assert d[0]["detail"] == (
        "metrics stage raised ValueError: test-only stage step fails on a poison sample"
        "; raw is the decoded row re-encoded"
    )
    assert json.loads(d[0]["raw"])["labels"] == {"poison": "pill", "service": "checkout"}
    assert STATS.internal_errors == {"stage:metrics": 1}
    m = generate_latest(registry(STATS)).decode()
    assert 'obsflow_internal_errors_total{where="stage:metrics"} 1.0' in m


def test_guarded_stage_replays_what_it_took_since_its_last_snapshot(tmp_path, monkeypatch):
    """A failure long after the last snapshot: the stage is rebuilt from the snapshot and
    the inputs since, exactly (the same rows as a stage that never failed)."""
    poison_rollups(monkeypatch)
    spec = parse_spec(local(tmp_path))
    graph = PipelineGraph(spec, counters=STATS)
    inputs = []
    for b in range(5):
        r = raw("metrics", [sample(10 * b + k, INGEST - 1000, poison=(b, k) == (4, 1)) for k in range(3)])
        r.offsets = [3 * b + k for k in range(3)]
        inputs += [si for si in graph.process(r).stage_inputs if si.table.num_rows]
    defn = next(d for d in plan_stages(spec) if d.name == "metrics")
    assert len({si.shard for si in inputs}) == 1  # one metric name: one shard
    guarded = GuardedStage(defn, inputs[0].shard, counters=STATS)
    guarded.snapshot()
    outs = [o for si in inputs for o in guarded.process(si)] + guarded.flush()
    rows = pa.concat_tables([o.rows["metrics"] for o in outs if "metrics" in o.rows]).to_pylist()
    one = [r for r in rows if r["name"] == "http.requests" and r["resolution"] == "1m"]
    vals = [10 * b + k for b in range(5) for k in range(3) if (b, k) != (4, 1)]
    assert [(r["count"], r["sum"]) for r in one] == [(14, float(sum(vals)))]
    dead = [r for o in outs if "dead_letters" in o.rows for r in o.rows["dead_letters"].to_pylist()]
    assert [r["source_offset"] for r in dead] == [13]


# -- over Kafka, on both engines, across a restart ---------------------------------------------------


def produce(bootstrap: str, topic: str, values: list[bytes], ts_ms: int) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all"})
    for v in values:
        p.produce(topic, value=v, partition=0, timestamp=ts_ms)
    assert p.flush(60) == 0


@pytest.mark.kafka
@pytest.mark.parametrize("runner", ["bytewax", "beam"])
def test_poison_records_over_kafka_are_dead_letters_and_a_restart_goes_on(
    runner, kafka_broker, kafka_topic_factory, tmp_path, monkeypatch
):
    from tests.e2e.test_kafka_pipeline import run_inproc

    poison_flows(monkeypatch)
    poison_rollups(monkeypatch)
    topics = {name: kafka_topic_factory(partitions=1, prefix=name) for name in ("events", "logs", "metrics")}
    d = local(tmp_path / "wh")
    d["kafka"].update(
        {
            "bootstrap_servers": kafka_broker.bootstrap,
            "poll_batch_size": 50,
            "poll_timeout": "200ms",
            "group_id": f"obsflow-test-{tmp_path.name}",
        }
    )
    for s in d["sources"]:
        s["topic"], s["partitions"] = topics[s["name"]], 1
    spec = parse_spec(d)
    t0 = 1_763_000_040_000
    logs = [log_line(k, t0 + 10 * k, poison=k in (17, 40)) for k in range(60)]
    samples = [sample(k, t0 + 10 * k, poison=k == 25) for k in range(60)]
    produce(kafka_broker.bootstrap, topics["logs"], logs, t0 + 1000)
    produce(kafka_broker.bootstrap, topics["metrics"], samples, t0 + 1000)

    def check(n_logs: int, poison_logs: set, poison_samples: set) -> None:
        got = sorted(read_table(spec, "logs").column("source_offset").to_pylist())
        assert got == [k for k in range(n_logs) if k not in poison_logs]
        dl = read_table(spec, "dead_letters").to_pylist()
        assert sorted((r["source_topic"], r["source_offset"], r["reason"]) for r in dl) == sorted(
            [(topics["logs"], k, "internal_error") for k in poison_logs]
            + [(topics["metrics"], k, "internal_error") for k in poison_samples]
        )
        m = [
            r
            for r in read_table(spec, "metrics").to_pylist()
            if r["name"] == "http.requests" and r["resolution"] == "1m"
        ]
        assert sum(r["count"] for r in m) == n_logs - len(poison_samples)
        derived = [
            r for r in read_table(spec, "metrics").to_pylist() if r["name"] == "log.errors" and r["resolution"] == "1m"
        ]
        assert sum(r["count"] for r in derived) == n_logs - len(poison_logs)

    def summary() -> tuple:
        return STATS.records_in, STATS.records_dead, dict(STATS.dead_by_reason), dict(STATS.internal_errors)

    run_inproc(runner, spec)
    # records_dead: what the flows rejected; dead letters by reason: every dead letter, the stage's too
    assert summary() == (120, 2, {"internal_error": 3}, {"flow:logs": 2, "stage:metrics": 1})
    assert STATS.records_in == STATS.records_accepted + STATS.records_dead + STATS.records_dropped
    check(60, {17, 40}, {25})
    # a restart resumes past the poison records: nothing read again, nothing raised, nothing twice
    behind = [(c.table, c.start, c.end) for c in catch_up_plan(spec)]
    assert behind == []  # every table recorded the end of input
    run_inproc(runner, spec)
    assert STATS.records_in == 0 and not STATS.internal_errors, summary()
    check(60, {17, 40}, {25})
    # and goes on with new records, a poison one among them
    produce(
        kafka_broker.bootstrap,
        topics["logs"],
        [log_line(k, t0 + 10 * k, poison=k == 70) for k in range(60, 80)],
        t0 + 2000,
    )
    produce(kafka_broker.bootstrap, topics["metrics"], [sample(k, t0 + 10 * k) for k in range(60, 80)], t0 + 2000)
    run_inproc(runner, spec)
    assert (STATS.records_in, dict(STATS.internal_errors)) == (40, {"flow:logs": 1}), summary()
    check(80, {17, 40, 70}, {25})
