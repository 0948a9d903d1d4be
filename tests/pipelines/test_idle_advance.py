"""Idle advance (``stages.idle_advance_after``): when input stops, a stage shard's clock
follows the wall clock, so a slow trace is decided after ``decision_wait`` of wall time, a
rollup window closes and an absence alert fires with no more input — on the stages
themselves, on Beam's :class:`runners.beam.pipeline.IdleStageDoFn` under ``TestStream``
(processing-time timers) and end to end on Bytewax with a real Kafka broker."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from core.stats import RunStats
from pipelines.graph import PipelineGraph, plan_stages
from pipelines.loader import parse_spec
from pipelines.spec import TailSampleStep
from pipelines.stages import GLOBAL, METRICS, TRACE, StageDef, StageInput, StageTick, TraceStage, make_stage
from tests.helpers import BASE, MIN, metric_spec, sample
from tests.tail_sampling.helpers import span, table, tid
from transforms.batch import RawBatch

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_763_000_000_000  # ingest time of the trace's first spans (Kafka record timestamps)
W0 = 5_000_000  # wall time the stage received them
SLOW = {"name": "slow", "type": "latency", "latency": {"threshold_ms": 1000}}


def trace_step(**sampler) -> TailSampleStep:
    return TailSampleStep.model_validate(
        {
            "kind": "tail_sample",
            "shards": 1,
            "red": None,
            "sampler": {"decision_wait": "10s", "policies": [SLOW]} | sampler,
        }
    )


def ms(ts) -> int:
    return int(ts.timestamp() * 1000)


# -- the trace stage ------------------------------------------------------------------------


@pytest.mark.traces
def test_idle_ticks_decide_a_slow_trace_after_decision_wait_and_not_before():
    stage = TraceStage(trace_step(), None, 0)
    # a tick before any input has no clock to advance
    assert stage.process(StageTick(TRACE, 0, W0, 2000)) is None
    # one slow trace (root 1.5 s), its spans in two batches one second apart (offsets 0 and 1)
    o1 = stage.process(
        StageInput(TRACE, 0, "spans", table([span(7, 0, None, 0, 1500)]), "spans", 0, 0, 1, T0, 1, wall_ms=W0)
    )
    o2 = stage.process(
        StageInput(
            TRACE, 0, "spans", table([span(7, 1, 0, 100, 1300)]), "spans", 0, 1, 2, T0 + 1000, 1, wall_ms=W0 + 1000
        )
    )
    assert o1.rows == {} and o2.rows == {} and o2.positions == {"spans:0": 0}  # held: the trace is buffered
    assert stage.now == T0 + 1000
    # then only ticks, one a second of wall time, idle period 2 s
    outs, nows = {}, {}
    for k in range(1, 13):
        outs[k] = stage.process(StageTick(TRACE, 0, W0 + 1000 + k * 1000, 2000))
        nows[k] = stage.now - T0
    # 1 s without input is not idle yet; from 2 s on the clock is the last input's plus the elapsed wall time
    assert nows == {
        1: 1000,
        2: 3000,
        3: 4000,
        4: 5000,
        5: 6000,
        6: 7000,
        7: 8000,
        8: 9000,
        9: 10000,
        10: 11000,
        11: 12000,
        12: 13000,
    }
    # decision_wait (10 s after the first span arrived at T0) is reached at the 9th tick, not before
    assert [k for k, o in outs.items() if o is not None] == [9]
    d = outs[9]
    assert d.rows["spans"].num_rows == 2 and d.rows["traces"].num_rows == 1
    tr = d.rows["traces"].to_pylist()[0]
    assert (tr["trace_id"], tr["sampling_policy"], tr["span_count"], tr["trace_duration_ms"]) == (
        tid(7),
        "slow",
        2,
        1500.0,
    )
    assert ms(tr["decided_at"]) == T0 + 10_000
    assert d.counters == {"sampled_traces": 1}
    # the decision releases the positions the stage held (no new source positions)
    assert d.positions == {"spans:0": 2}
    # a repeated tick, or one with the idle advance off, changes nothing
    assert stage.process(StageTick(TRACE, 0, W0 + 13_000, 2000)) is None
    assert stage.process(StageTick(TRACE, 0, W0 + 60_000, 0)) is None and stage.now == T0 + 13_000
    # real input resumes: the clock keeps its maximum (ingest T0 + 2 s is behind it) ...
    o = stage.process(
        StageInput(
            TRACE, 0, "spans", table([span(8, 0, None, 0, 10)]), "spans", 0, 2, 3, T0 + 2000, 1, wall_ms=W0 + 14_000
        )
    )
    assert stage.now == T0 + 13_000 and o.positions == {"spans:0": 2}
    # ... and the next idle advance starts from it: trace 8 (arrived at T0 + 13 s) is due at T0 + 23 s
    assert stage.process(StageTick(TRACE, 0, W0 + 23_000, 2000)) is None and stage.now == T0 + 22_000
    o = stage.process(StageTick(TRACE, 0, W0 + 24_000, 2000))
    assert (
        stage.now == T0 + 23_000
        and o.rows == {}
        and o.counters
        == {"dropped_spans": {"not_sampled": 1}, "dropped_traces": {"not_sampled": 1}, "not_sampled_traces": 1}
    )
    assert o.positions == {"spans:0": 3}


@pytest.mark.traces
def test_idle_state_survives_a_snapshot():
    stage = TraceStage(trace_step(), None, 0)
    stage.process(
        StageInput(TRACE, 0, "spans", table([span(7, 0, None, 0, 1500)]), "spans", 0, 0, 1, T0, 1, wall_ms=W0)
    )
    again = TraceStage.restore(trace_step(), None, 0, stage.snapshot())
    assert again.process(StageTick(TRACE, 0, W0 + 9_999, 2000)) is None
    o = again.process(StageTick(TRACE, 0, W0 + 10_000, 2000))
    assert o.rows["traces"].num_rows == 1 and ms(o.rows["traces"].column("decided_at")[0].as_py()) == T0 + 10_000


@pytest.mark.traces
def test_a_restart_downtime_is_not_idle_time():
    """A stage restored after a crash (Bytewax recovery) counts idle time from the restart:
    an hour of downtime must not move the clock an hour (the backlog would find its
    traces decided and its windows closed)."""
    stage = TraceStage(trace_step(), None, 0)
    stage.process(
        StageInput(TRACE, 0, "spans", table([span(7, 0, None, 0, 1500)]), "spans", 0, 0, 1, T0, 1, wall_ms=W0)
    )
    again = TraceStage.restore(trace_step(), None, 0, stage.snapshot())
    restart = W0 + 3_600_000
    again.restart_idle_clock(restart)
    assert again.process(StageTick(TRACE, 0, restart + 1_000, 2000)) is None and again.now == T0
    assert again.process(StageTick(TRACE, 0, restart + 5_000, 2000)) is None and again.now == T0 + 5_000
    o = again.process(StageTick(TRACE, 0, restart + 10_000, 2000))
    assert again.now == T0 + 10_000 and o.rows["traces"].num_rows == 1
    # without the restart rule the first tick would have jumped the clock by the downtime
    naive = TraceStage.restore(trace_step(), None, 0, stage.snapshot())
    naive.process(StageTick(TRACE, 0, restart + 1_000, 2000))
    assert naive.now == T0 + 3_601_000


# -- rollups and alerts -------------------------------------------------------------------------

ABSENT = {
    "rules": [
        {
            "name": "UpAbsent",
            "type": "absence",
            "select": {"metric": "up", "value": "last"},
            "absent_for": "2m",
            "severity": "P1",
        }
    ],
    "route": {"receiver": "default", "group_wait": "0s"},
}


@pytest.mark.traces
def test_no_idle_advance_while_a_partition_has_a_backlog():
    """Input that stops while its partition still had records behind it (a broker restart
    or a slow fetch in the middle of a replay) is not the stream going quiet: ticks do not
    move the clock until a batch arrives that reached the partition's end — or, should
    the lag never drain, for BACKLOG_HOLD idle periods."""
    from pipelines.stages import BACKLOG_HOLD

    assert BACKLOG_HOLD == 12
    stage = TraceStage(trace_step(), None, 0)
    stage.process(
        StageInput(TRACE, 0, "spans", table([span(7, 0, None, 0, 1500)]), "spans", 0, 0, 1, T0, 1, wall_ms=W0, lag=5000)
    )
    for k in range(1, 21):  # 20 s of ticks, idle period 2 s: held
        assert stage.process(StageTick(TRACE, 0, W0 + k * 1000, 2000)) is None
    assert stage.now == T0
    # the snapshot keeps the backlog's mark
    again = TraceStage.restore(trace_step(), None, 0, stage.snapshot())
    assert again.process(StageTick(TRACE, 0, W0 + 21_000, 2000)) is None and again.now == T0
    # the backlog arrives; its last batch reached the end of the partition (lag 0)
    again.process(
        StageInput(
            TRACE,
            0,
            "spans",
            table([span(7, 1, 0, 100, 1300)]),
            "spans",
            0,
            1,
            2,
            T0 + 1000,
            1,
            wall_ms=W0 + 22_000,
            lag=0,
        )
    )
    assert again.process(StageTick(TRACE, 0, W0 + 23_000, 2000)) is None  # not idle yet
    o = again.process(StageTick(TRACE, 0, W0 + 31_000, 2000))
    assert again.now == T0 + 10_000 and o.rows["traces"].num_rows == 1
    # a lag that never drains holds the clock for 12 idle periods (24 s), then the idle advance goes on
    stuck = TraceStage(trace_step(), None, 0)
    stuck.process(
        StageInput(TRACE, 0, "spans", table([span(8, 0, None, 0, 1500)]), "spans", 0, 0, 1, T0, 1, wall_ms=W0, lag=1)
    )
    assert stuck.process(StageTick(TRACE, 0, W0 + 23_999, 2000)) is None and stuck.now == T0
    o = stuck.process(StageTick(TRACE, 0, W0 + 24_000, 2000))
    assert stuck.now == T0 + 24_000 and o.rows["traces"].num_rows == 1
    # an unknown lag (-1: a source that cannot tell) does not hold the clock
    other = TraceStage(trace_step(), None, 0)
    other.process(
        StageInput(TRACE, 0, "spans", table([span(9, 0, None, 0, 1500)]), "spans", 0, 0, 1, T0, 1, wall_ms=W0)
    )
    assert other.process(StageTick(TRACE, 0, W0 + 3000, 2000)) is None and other.now == T0 + 3000


def rollup_spec_stages(tmp_path, partitions: int):
    """A one-shard metrics spec (1m windows, no delay or lateness, the absence rule), its
    graph and its stage definitions by name."""
    spec = metric_spec(
        tmp_path,
        {"resolutions": ["1m"], "watermark_delay": "0s", "allowed_lateness": "0s"},
        ABSENT,
        partitions=partitions,
        shards=1,
    )
    return PipelineGraph(spec, counters=RunStats()), {d.name: d for d in plan_stages(spec)}


@pytest.mark.metrics
def test_no_idle_advance_of_a_rollup_while_another_partition_has_a_backlog(tmp_path):
    graph, defs = rollup_spec_stages(tmp_path, 2)
    metrics = make_stage(defs[METRICS], 0)
    ts = BASE + 30_000
    for p, lag in ((0, 0), (1, 120)):  # partition 1's batch left 120 records unread
        fo = graph.process(
            RawBatch(
                "metrics",
                "metrics",
                p,
                [sample("up", "GAUGE", ts, {"service": "a"}, value=1.0)],
                [0],
                [ts + 100],
                topic_partitions=2,
                lag=lag,
            )
        )
        for si in fo.stage_inputs:
            assert si.lag == lag
            metrics.process(dataclasses.replace(si, wall_ms=W0))
    wm = metrics.close_wm
    assert all(metrics.process(StageTick(METRICS, 0, W0 + k * 5_000, 5000)) is None for k in range(1, 12))
    assert metrics.close_wm == wm
    # partition 1 catches up: idle advance resumes (from the last input's wall time)
    fo = graph.process(
        RawBatch(
            "metrics",
            "metrics",
            1,
            [sample("up", "GAUGE", ts + 1000, {"service": "a"}, value=1.0)],
            [1],
            [ts + 1100],
            topic_partitions=2,
            lag=0,
        )
    )
    for si in fo.stage_inputs:
        metrics.process(dataclasses.replace(si, wall_ms=W0 + 130_000))
    out = metrics.process(StageTick(METRICS, 0, W0 + 145_000, 5000))
    assert out is not None and out.watermark > ts


@pytest.mark.metrics
@pytest.mark.alerts
def test_idle_ticks_close_a_rollup_window_and_fire_an_absence_alert(tmp_path):
    graph, defs = rollup_spec_stages(tmp_path, 1)
    metrics, globl = make_stage(defs[METRICS], 0), make_stage(defs[GLOBAL], 0)
    windows, alerts, marks, positions = [], [], [], []

    def feed(out):
        if out is None:
            return
        marks.append(out.watermark - BASE)
        positions.append(out.positions["metrics:0"])
        if "metrics" in out.rows:
            windows.extend(((ms(r["window_start"]) - BASE) // 1000, r["last"]) for r in out.rows["metrics"].to_pylist())
        g = globl.process(out)
        if "alerts" in g.rows:
            alerts.extend(((ms(r["ts"]) - BASE) // 1000, r["rule"], r["status"]) for r in g.rows["alerts"].to_pylist())

    # up{service=a} at 0:30, 1:30, 2:30 (one record each, offsets 0..2), then nothing
    for m in range(3):
        ts = BASE + m * MIN + 30_000
        fo = graph.process(
            RawBatch(
                "metrics",
                "metrics",
                0,
                [sample("up", "GAUGE", ts, {"service": "a"}, value=1.0)],
                [m],
                [ts + 100],
                topic_partitions=1,
            )
        )
        for si in fo.stage_inputs:
            feed(metrics.process(dataclasses.replace(si, wall_ms=W0 + m * 1000)))
    assert windows == [(0, 1.0), (60, 1.0)] and marks == [30_000, 90_000, 150_000] and alerts == []
    assert positions == [0, 1, 2]  # offset 2 held: its window [2:00, 3:00) is open
    n = len(marks)
    # ticks every 15 s of wall time, idle period 5 s
    assert metrics.process(StageTick(METRICS, 0, W0 + 2000 + 4_999, 5000)) is None  # not idle yet
    for k in range(1, 11):
        feed(metrics.process(StageTick(METRICS, 0, W0 + 2000 + k * 15_000, 5000)))
    # the watermark follows the wall clock from the last input's (2:30)
    assert marks[n:] == [150_000 + k * 15_000 for k in range(1, 11)]
    # window [2:00, 3:00) closes at the 2nd tick and releases offset 2
    assert windows == [(0, 1.0), (60, 1.0), (120, 1.0)] and positions[n:] == [2] + [3] * 9
    # the series has been absent for 2 minutes when window [4:00, 5:00) closes
    assert alerts == [(300, "UpAbsent", "firing")]


@pytest.mark.metrics
def test_idle_ticks_close_sessions_as_the_end_of_input_would(tmp_path, monkeypatch):
    from pipelines import DEFAULT_SPEC
    from pipelines.stages import PRODUCT
    from runners.job import RunRequest, embedded_source

    monkeypatch.setenv("OBSFLOW_PSEUDONYM_KEY", "idle-advance-test-key-0123")
    d = yaml.safe_load(DEFAULT_SPEC.read_text())
    d["storage"]["catalog"]["warehouse"] = str(tmp_path)
    spec = parse_spec(d)
    graph = PipelineGraph(spec, counters=RunStats())
    defn = next(x for x in plan_stages(spec) if x.name == PRODUCT)
    src = embedded_source(RunRequest(spec=spec, runner="bytewax", count=200))
    stages = {}
    for part in src.partitions():
        if part.signal == "event":
            for b in src.batches(part, 0):
                for si in graph.process(b).stage_inputs:
                    if si.stage == PRODUCT:
                        st = stages.setdefault(si.shard, make_stage(defn, si.shard))
                        st.process(dataclasses.replace(si, wall_ms=W0))
    assert sorted(stages) == [0, 1, 2, 3]
    for k, st in stages.items():
        ref = make_stage(defn, k, st.snapshot()).flush()  # what the end of input would close
        mark = st.close_wm
        assert st.process(StageTick(PRODUCT, k, W0 + 4_999, 5000)) is None  # not idle yet
        # three hours of idle wall time: past the 30 min session gap and the 1 h report window
        out = st.process(StageTick(PRODUCT, k, W0 + 3 * 3_600_000, 5000))
        assert st.close_wm == mark + 3 * 3_600_000 and out.watermark == st.close_wm
        key = ["session_id"]
        assert out.rows["sessions"].num_rows > 0
        assert (
            out.rows["sessions"].sort_by([(c, "ascending") for c in key]).to_pylist()
            == ref.rows["sessions"].sort_by([(c, "ascending") for c in key]).to_pylist()
        )
        assert out.extra["funnels"] == ref.extra["funnels"]
        assert out.positions == ref.positions == {f"events:{p}": 50 for p in range(4)}


# -- Beam: processing-time timers under TestStream ----------------------------------------

BEAM_OUT: dict[str, list] = {}


def _record(name: str, o) -> None:
    """Record a stage output under ``name`` (the DirectRunner runs in this process)."""
    tr = o.rows.get("traces")
    BEAM_OUT.setdefault(name, []).append(
        (
            {k: t.num_rows for k, t in o.rows.items()},
            o.positions,
            [ms(x) - T0 for x in tr.column("decided_at").to_pylist()] if tr is not None else [],
        )
    )


def _record_as(o, name: str) -> None:
    _record(name, o)


def _zero_clock() -> float:
    return 0.0  # TestStream's processing time starts at 0 and only moves by advance_processing_time


def _beam_run(name: str, advances: list[int]) -> list:
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.testing.test_stream import TestStream

    from runners.beam.pipeline import KEYED, IdleStageDoFn

    defs = {TRACE: StageDef(TRACE, 1, ("spans", "traces"), ("spans",), (trace_step(), None))}
    si = StageInput(
        TRACE, 0, "spans", table([span(7, 0, None, 0, 1500), span(7, 1, 0, 100, 1300)]), "spans", 0, 0, 2, T0, 1
    )
    stream = TestStream().advance_watermark_to(0).add_elements([(si.key, si)])
    for s in advances:
        stream = stream.advance_processing_time(s)
    stream = stream.advance_watermark_to_infinity()
    BEAM_OUT.pop(name, None)
    with beam.Pipeline(options=PipelineOptions(["--runner=DirectRunner", "--streaming"])) as p:
        _ = (
            p
            | stream.with_output_types(KEYED)
            | beam.ParDo(IdleStageDoFn(defs, idle_ms=5000, clock=_zero_clock))
            | beam.Map(_record_as, name)
        )
    return BEAM_OUT.pop(name, [])


@pytest.mark.traces
def test_beam_processing_time_timer_decides_after_decision_wait():
    # 10 s of processing time with no input: the timer fires at 5 s (clock + 5 s, nothing due) and at
    # 10 s (decision_wait reached: kept by the latency policy, decided at T0 + 10 s); the end-of-input
    # flush then has nothing left
    out = _beam_run("ten", [5, 4, 1])
    assert out == [
        ({}, {"spans:0": 0}, []),
        ({"spans": 2, "traces": 1}, {"spans:0": 2}, [10_000]),
        ({}, {"spans:0": 2}, []),
    ]
    # 9 s: only the 5 s firing (it moved the clock to T0 + 5 s without deciding); the flush decides
    out = _beam_run("nine", [5, 4])
    assert out == [({}, {"spans:0": 0}, []), ({"spans": 2, "traces": 1}, {"spans:0": 2}, [5_000])]


# -- Bytewax end to end on a real Kafka broker --------------------------------------------


def _slow_trace_otlp() -> tuple[bytes, str]:
    """One slow trace (root 1.5 s, one child), OTLP protobuf as the Collector's Kafka exporter writes it."""
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.common._internal.trace_encoder import encode_spans
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import SpanKind

    now = time.time_ns()
    out = InMemorySpanExporter()
    tp = TracerProvider(resource=Resource.create({"service.name": "checkout"}))
    tp.add_span_processor(SimpleSpanProcessor(out))
    tracer = tp.get_tracer("idle")
    root = tracer.start_span("POST /checkout", kind=SpanKind.SERVER, start_time=now - 2_000_000_000)
    child = tracer.start_span(
        "charge", kind=SpanKind.CLIENT, context=trace.set_span_in_context(root), start_time=now - 1_900_000_000
    )
    child.end(end_time=now - 1_000_000_000)
    root.end(end_time=now - 500_000_000)
    tp.shutdown()
    spans = out.get_finished_spans()
    return encode_spans(spans).SerializeToString(), f"{root.get_span_context().trace_id:032x}"


def _idle_spec(tmp_path: Path, bootstrap: str, topic: str) -> dict:
    from pipelines import DEFAULT_SPEC

    d = yaml.safe_load(DEFAULT_SPEC.read_text())
    d["storage"]["catalog"]["warehouse"] = str(tmp_path / "wh")
    d["storage"]["commit"] = {"max_rows": 200_000, "max_seconds": "1s"}
    d["kafka"].update({"bootstrap_servers": bootstrap, "group_id": f"idle-{tmp_path.name}", "poll_timeout": "200ms"})
    d["sources"] = [{"name": "spans", "topic": topic, "signal": "span", "codec": "otlp_proto"}]
    d["flows"] = [f for f in d["flows"] if f["source"] == "spans"]
    d.pop("alerts", None)
    for st in d["flows"][0]["steps"]:
        if st["kind"] == "tail_sample":
            st["shards"] = 2
            st["sampler"]["decision_wait"] = "4s"
            st["sampler"]["policies"] = [SLOW]
    d["stages"] = {"idle_advance_after": "1s"}
    return d


@pytest.mark.kafka
@pytest.mark.traces
@pytest.mark.slow
def test_bytewax_kafka_decides_a_slow_trace_while_no_more_input_arrives(kafka_broker, kafka_topic_factory, tmp_path):
    from confluent_kafka import Producer

    from tests.helpers import read_table

    topic = kafka_topic_factory(partitions=1, prefix="idle-spans")
    data = _idle_spec(tmp_path, kafka_broker.bootstrap, topic)
    spec = parse_spec(data)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data))
    # an unbounded run lasting far longer than the bound below: its end-of-input flush cannot be what decides
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "runners.cli",
            "run",
            "--source",
            "kafka",
            "--runner",
            "bytewax",
            "--spec",
            str(path),
            "--no-progress",
            "--duration",
            "150",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )

    def rows(name):
        try:
            return read_table(spec, name).to_pylist()
        except Exception:  # noqa: BLE001 - the job has not created the table yet
            return []

    try:
        payload, trace_id = _slow_trace_otlp()
        p = Producer({"bootstrap.servers": kafka_broker.bootstrap, "enable.idempotence": True})
        p.produce(topic, payload, partition=0)  # the trace's spans; then nothing more
        assert p.flush(30) == 0
        produced_at = time.monotonic()
        traces = []
        while time.monotonic() - produced_at < 45 and not traces:
            assert proc.poll() is None, proc.stdout.read().decode(errors="replace")[-3000:]
            traces = [r for r in rows("traces") if r["trace_id"] == trace_id]
            time.sleep(0.5)
        took = time.monotonic() - produced_at
        assert traces, "the slow trace was not decided while no more input arrived"
        assert proc.poll() is None  # decided while the job runs, not by its end-of-input flush
        assert took >= 4.0  # decision_wait of wall time
        assert (traces[0]["sampling_policy"], traces[0]["span_count"], traces[0]["root_name"]) == (
            "slow",
            2,
            "POST /checkout",
        )
        assert traces[0]["trace_duration_ms"] == pytest.approx(1500.0, abs=0.01)
        spans = sorted(r["name"] for r in rows("spans") if r["trace_id"] == trace_id)
        assert spans == ["POST /checkout", "charge"]
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=60)
