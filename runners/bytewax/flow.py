"""Build the Bytewax dataflow for a spec.

Operators (each consumes → emits):
- ``input``: :class:`EmbeddedBytewaxSource` or :class:`KafkaBytewaxSource` → one
  :class:`RawBatch` per item, one source partition per topic partition, resumed at the
  positions the tables record (Kafka partitions also emit a :class:`Tick` when idle);
- ``process``: ``map`` hosting :class:`pipelines.graph.PipelineGraph` → :class:`FlowOutput`
  (a ``Tick`` passes through);
- ``stages``: the stateful stages (:class:`StageLogic`); in an unbounded Kafka run with
  ``stages.idle_advance_after`` set, every ``Tick`` reaches every stage shard as a
  :class:`pipelines.stages.StageTick` (idle advance of the stage clocks);
- ``iceberg``: :class:`IcebergBytewaxSink`, one :class:`sinks.iceberg.IcebergSink` per
  worker, committing by rows and seconds (a ``TICK`` lets it commit on time when no
  data arrives) and on close.
Bytewax's own recovery store is not needed: the Iceberg snapshot summaries are the
checkpoint (see ``sinks.iceberg``)."""

from __future__ import annotations

from typing import cast
import time
from datetime import datetime, timedelta, UTC
from collections.abc import Iterator

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from bytewax.operators import StatefulLogic

from core.gc_tuning import tune_gc_once
from pipelines.graph import PipelineGraph, plan_stages, write_plan
from pipelines.isolate import GuardedStage
from pipelines.prebuilt import PrebuiltGraph
from pipelines.stages import GLOBAL, StageTick, global_inputs
from sinks.alerts import publish_stage_output
from pipelines.spec import PipelineSpec
from runners.stats import STATS
from sinks.iceberg import IcebergSink, OpenTables, restrict_to, table_writers
from sinks.plan import WritePlan
from sources.generator import EmbeddedSource
from sources.kafka import KafkaSource, PartitionRange, PartitionReader
from transforms.batch import RawBatch


class Tick:
    """Emitted by idle Kafka partitions so the sink can commit by age with no new data and,
    in unbounded runs, so the stateful stages can advance their clocks on idle
    (``stages.idle_advance_after``): each tick reaches every stage shard as a
    :class:`pipelines.stages.StageTick` carrying ``wall_ms`` (when it was emitted)."""

    __slots__ = ("wall_ms",)

    def __init__(self, wall_ms: int | None = None):
        self.wall_ms = int(time.time() * 1000) if wall_ms is None else wall_ms

    def __repr__(self) -> str:
        return f"TICK({self.wall_ms})"


TICK = Tick(0)


class _BatchPartition(StatefulSourcePartition[RawBatch, None]):
    def __init__(self, batches: Iterator[RawBatch]):
        self._it = batches

    def next_batch(self) -> list[RawBatch]:
        return [next(self._it)]  # StopIteration ends this partition

    def snapshot(self) -> None:
        return None


class EmbeddedBytewaxSource(FixedPartitionedSource[RawBatch, None]):
    """The embedded generator, one Bytewax partition per topic partition."""

    def __init__(self, source: EmbeddedSource, resume: dict[str, int]):
        self.source = source
        self.resume = resume
        self.parts = {p.key: p for p in source.partitions()}

    def list_parts(self) -> list[str]:
        return list(self.parts)

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _BatchPartition:
        return _BatchPartition(self.source.batches(self.parts[for_part], self.resume.get(for_part, 0)))


class _KafkaPartition(StatefulSourcePartition[object, None]):
    """One topic partition: non-blocking polls of a :class:`PartitionReader` (librdkafka
    prefetches in the background), ``next_awake`` instead of sleeping, a :class:`Tick`
    (with the wall time) every ``tick_s`` while idle."""

    IDLE_WAIT_S = 0.02

    def __init__(self, reader: PartitionReader, tick_s: float):
        self.reader = reader
        self.tick_s = tick_s
        self._last_out = time.monotonic()
        self._awake: datetime | None = None

    def next_batch(self) -> list:
        self._awake = None
        if self.reader.done:
            self.reader.close()
            raise StopIteration
        b = self.reader.poll(0.0)
        now = time.monotonic()
        if b is not None:
            self._last_out = now
            return [b]
        if self.reader.done:
            self.reader.close()
            raise StopIteration
        self._awake = datetime.now(UTC) + timedelta(seconds=self.IDLE_WAIT_S)
        if now - self._last_out >= self.tick_s:
            self._last_out = now
            return [Tick()]
        return []

    def next_awake(self) -> datetime | None:
        return self._awake

    def snapshot(self) -> None:
        return None  # positions live in the Iceberg snapshot summaries

    def close(self) -> None:
        self.reader.close()


class KafkaBytewaxSource(FixedPartitionedSource[object, None]):
    """Kafka, one Bytewax partition per topic partition, starting at the offsets the
    Iceberg tables record.

    Our own partition class on :mod:`sources.kafka` rather than
    ``bytewax.connectors.kafka.KafkaSource``: that connector emits one message per item
    (we need :class:`RawBatch` batches for the columnar codecs), resumes from Bytewax's
    recovery store (ours is the Iceberg snapshot summaries), has no "stop at the high
    watermark seen at start" mode, and would not share its reading code with the Beam
    runner. The partitions are planned in the driver (so a missing topic or an
    unreachable broker fails before the dataflow starts)."""

    def __init__(self, source: KafkaSource, ranges: list[PartitionRange], tick_s: float = 1.0):
        self.source = source
        self.ranges = {r.part.key: r for r in ranges}
        self.tick_s = tick_s

    def list_parts(self) -> list[str]:
        return list(self.ranges)

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _KafkaPartition:
        return _KafkaPartition(self.source.reader(self.ranges[for_part]), self.tick_s)


class _IcebergPartition(StatelessSinkPartition):
    def __init__(
        self, spec: PipelineSpec, tables: list[str], plan: WritePlan, dedupe: bool = False, opened=None
    ) -> None:
        self.sink = IcebergSink(spec, tables, dedupe=dedupe, plan=plan, counters=STATS, opened=opened)

    def write_batch(self, items) -> None:
        for out in items:
            self.sink.accept(out)

    def close(self) -> None:
        close_sink(self.sink)


#: errors the Iceberg sinks raised while closing (their final commits): Bytewax aborts the
#: process on an exception in a partition's close, so they are kept here and raised by
#: :func:`run_flow` (or the cluster worker) once the dataflow has ended
CLOSE_ERRORS: list[BaseException] = []


def close_sink(sink: IcebergSink) -> None:
    """Close ``sink`` (its final commits); an error is kept in :data:`CLOSE_ERRORS`."""
    try:
        sink.close()
    except Exception as e:  # noqa: BLE001 - raised after the dataflow ended (run_flow)
        CLOSE_ERRORS.append(e)
    STATS.add_commits(sink.stats)


def run_flow(flow: Dataflow) -> None:
    """``run_main(flow)``, then raise the first error a sink met while closing."""
    from bytewax.testing import run_main

    CLOSE_ERRORS.clear()
    run_main(flow)
    if CLOSE_ERRORS:
        raise CLOSE_ERRORS[0]


class IcebergBytewaxSink(DynamicSink):
    """One :class:`sinks.iceberg.IcebergSink` per worker; ``opened``: the catalog and tables
    the run read its positions from (one worker only: its sink then opens nothing again)."""

    def __init__(
        self,
        spec: PipelineSpec,
        tables: list[str],
        plan: WritePlan,
        dedupe: bool = False,
        opened: OpenTables | None = None,
    ):
        self.spec = spec
        self.tables = tables
        self.plan = plan
        self.dedupe = dedupe
        self.opened = opened

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _IcebergPartition:
        opened = self.opened if worker_count == 1 else None
        return _IcebergPartition(self.spec, self.tables, self.plan, self.dedupe, opened)


def build_flow(
    spec: PipelineSpec,
    source,
    name: str = "obsflow",
    by_table: bool = False,
    tables: list[str] | None = None,
    dedupe: bool = False,
    graph: PrebuiltGraph | None = None,
    opened: OpenTables | None = None,
) -> Dataflow:
    """The dataflow for ``spec`` reading ``source`` (a Bytewax source of RawBatch),
    writing ``tables`` (default: every table of the spec; a catch-up writes one, with
    ``dedupe``: see :class:`sinks.iceberg.IcebergSink`).

    Stateful stages (:mod:`pipelines.stages`): one ``stateful`` operator hosts every
    stage fed by the flows, keyed ``"<stage>:<shard>"`` (:class:`StageLogic`); the
    ``global`` stage (alerts, funnel reports) is a second keyed operator chained on the
    metrics and product stages' outputs.

    ``graph``: the spec's graph, being built on a thread since the run started (the first
    batch waits for it); default: built here. ``opened``: the catalog and tables the run
    read its positions from, for a one-worker sink."""
    partitions = list(source.list_parts()) if hasattr(source, "list_parts") else None
    if isinstance(source, KafkaBytewaxSource):  # the stages' event time waits for the partitions with records to read
        partitions = [k for k in cast(list, partitions) if source.ranges[k].backlog]
    eager = PipelineGraph(spec, counters=STATS) if graph is None else None
    built: list[PipelineGraph] = []

    def process(raw):
        if isinstance(raw, Tick):
            return raw
        if not built:
            built.append(eager if eager is not None else cast(PrebuiltGraph, graph).get())
            tune_gc_once(spec.process.gc_young_threshold)  # the process's graph is built: frozen with the imports
        out = built[0].process(raw)
        STATS.add_output(out)
        return out

    flow = Dataflow(name)
    raw = op.input("input", flow, source)
    outs = op.map("process", raw, process)
    defs = {d.name: d for d in plan_stages(spec, partitions, kafka=isinstance(source, KafkaBytewaxSource))}
    fed = [d for d in defs.values() if d.name != GLOBAL]
    idle_ms = idle_advance_ms(spec, source)
    shard_keys = [(d.name, k) for d in fed for k in range(d.shards)]
    routed = [0]  # wall time of the last tick routed to the stages (every idle partition ticks: pass a few)

    def stage_inputs(o):
        if isinstance(o, Tick):  # idle advance: the tick's wall time to every stage shard (unbounded Kafka runs)
            if not idle_ms or o.wall_ms - routed[0] < min(idle_ms, 1000) // 4:
                return []
            routed[0] = o.wall_ms
            return [(f"{n}:{k}", StageTick(n, k, o.wall_ms, idle_ms)) for n, k in shard_keys]
        return [(si.key, si) for si in o.stage_inputs]

    if fed:
        keyed = op.flat_map("stage_inputs", outs, stage_inputs)
        staged = op.map(
            "unkey", op.stateful("stages", keyed, lambda resume: StageLogic(defs, resume)), lambda kv: kv[1]
        )
        outs = op.merge("merge", outs, staged)
        if GLOBAL in defs:
            to_global = op.flat_map("global_inputs", staged, global_inputs)
            globl = op.map(
                "unkey_global",
                op.stateful("global_stage", to_global, lambda resume: StageLogic(defs, resume, GLOBAL)),
                lambda kv: kv[1],
            )
            outs = op.merge("merge_global", outs, globl)
    plan = write_plan(spec)  # who writes which table, once for every sink of the job
    if by_table:  # a multi-worker cluster: one sink partition per stage table keeps recorded positions sound
        # (the flows' other tables are committed where their rows were made: measured 8%
        # faster on two processes than routing them too, now that a commit conflict
        # between workers costs a metadata commit and not a second Parquet encoding)
        from runners.bytewax.table_sink import output_by_table

        anywhere, single = table_writers(plan, tables or PipelineGraph.names_of(spec))
        if anywhere:  # tables only flows write: committed on the worker that produced the rows
            direct = op.flat_map("flow_tables", outs, restrict_to(anywhere))
            op.output("iceberg", direct, IcebergBytewaxSink(spec, anywhere, plan, dedupe))
        if single:
            output_by_table("iceberg_by_table", outs, spec, single, plan, dedupe)
    else:
        op.output(
            "iceberg", outs, IcebergBytewaxSink(spec, tables or PipelineGraph.names_of(spec), plan, dedupe, opened)
        )
    return flow


def idle_advance_ms(spec: PipelineSpec, source) -> int:
    """The stages' idle advance period (``stages.idle_advance_after``) for a run reading
    ``source``: only an unbounded Kafka read advances on idle (a bounded run decides
    everything at the end of its input, deterministically); 0 when off."""
    if not isinstance(source, KafkaBytewaxSource) or all(r.end is not None for r in source.ranges.values()):
        return 0
    return spec.stages.idle_advance_ms


class StageLogic(StatefulLogic):
    """Hosts one shard of any stage (:func:`pipelines.stages.make_stage`) in Bytewax keyed
    state, built on its first item (the key names the stage and the shard).

    Consumes StageInput items (or, for the ``global`` stage, StageOutput items of the
    stages feeding it) and StageTick items (idle advance: an output only when the clock
    moved); emits StageOutput items, and the stage's final output at the end
    of input. Its snapshot is ``(stage, shard, the stage's own snapshot)``."""

    def __init__(self, defs: dict, resume, stage: str | None = None):
        self.defs = defs
        self.name = stage
        self._resume = resume
        self.stage = None
        if resume:
            self.name, self.shard, blob = resume
            self.stage = GuardedStage(defs[self.name], self.shard, blob, counters=STATS)
            restart = getattr(self.stage, "restart_idle_clock", None)
            if restart is not None:  # a restart's downtime is not idle time of the stream
                restart(int(time.time() * 1000))

    def on_item(self, value):
        if self.stage is None:
            if isinstance(value, StageTick):
                return [], StatefulLogic.DISCARD  # a shard that has had no input has no clock to advance
            self.name = self.name or value.stage
            self.shard = 0 if self.name == GLOBAL else value.shard
            self.stage = GuardedStage(self.defs[self.name], self.shard, counters=STATS)
        outs = self.stage.process(value)  # none for a tick that moved nothing; a record that raises is isolated
        for out in outs:
            _publish(self.defs[self.name], out)
        return outs, StatefulLogic.RETAIN

    def on_eof(self):
        if self.stage is None:
            return [], StatefulLogic.DISCARD
        outs = self.stage.flush()
        for out in outs:
            _publish(self.defs[self.name], out)
        return outs, StatefulLogic.DISCARD

    def snapshot(self):
        return (self.name, self.shard, self.stage.snapshot()) if self.stage is not None else self._resume


def _publish(defn, out) -> None:
    STATS.record_stage(out)  # the trace stage's tail sampling counts
    publish_stage_output(out, defn.options.get("spec"), defn.options.get("kafka", False), counters=STATS)


#: the trace stage's host, by its former name
TraceLogic = StageLogic
