"""Build and run the Beam pipeline for a spec.

Transforms (each consumes → emits):
- ``Partitions``: ``Create`` of the source's partition keys;
- ``ReadEmbedded``: a partition key → the :class:`RawBatch` items of that partition,
  from the position the tables record;
- ``Process``: :class:`ProcessBatches` hosting :class:`pipelines.graph.PipelineGraph`
  → :class:`FlowOutput`;
- ``WriteIceberg``: :class:`WriteIceberg` buffering outputs in an
  :class:`sinks.iceberg.IcebergSink` per DoFn instance, committing by rows and seconds
  and at the end of every bundle (so a bundle's output is durable before Beam considers
  it done) — for the tables only flows write (events, logs, dead letters);
- ``WriteTables``: the tables a stateful stage writes, keyed by table name
  (:class:`WriteTables`), so each has one writer at any parallelism.

Kafka (:func:`build_kafka_pipeline`; Beam's own ``ReadFromKafka`` is a Java
cross-language transform that needs Docker, so the read is Python on confluent-kafka,
:mod:`sources.kafka`):
- bounded (DirectRunner, tests, ``obsflow run --bounded``): ``Create`` of
  :class:`sources.kafka.PartitionRange` ``(topic, partition, start, end)`` →
  :class:`ReadKafkaRange` reading exactly that offset range;
- unbounded (streaming, portable runners such as Flink): the same ``Create`` →
  :class:`ReadKafkaPartition`, a splittable DoFn whose restriction is the partition's
  offset range ``[start, ∞)``. Each call reads while batches come (at most about a
  second), claims the last offset of every batch it emits and then checkpoints
  (``defer_remainder``; after a short pause when it found nothing), so the
  runner finishes the bundle — which commits the Iceberg sink — and resumes the
  residual ``[last + 1, ∞)``. It ends when the run's deadline or record budget is
  reached. On Flink submit with ``--runner=FlinkRunner --streaming`` (plus
  ``--flink_master`` / ``--flink_job_server_jar``) through
  ``RunRequest.beam_options``. On a job restart the start offsets come again from the
  Iceberg tables; a runner's own SDF checkpoint only matters within one job.
  Streaming, the stateful stages run in :class:`IdleStageDoFn`: a processing-time timer
  advances a stage's clock when its input has been idle for ``stages.idle_advance_after``
  (bounded and batch-mode runs keep :class:`StageDoFn`, and their exact outputs).
"""

from __future__ import annotations

import dataclasses
import typing

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.io.restriction_trackers import OffsetRange, OffsetRestrictionTracker
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.transforms.core import RestrictionProvider
from apache_beam.utils.timestamp import Duration

from apache_beam.coders import BytesCoder, VarIntCoder
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.transforms.window import GlobalWindow

from core.gc_tuning import tune_gc_once
from pipelines.graph import PipelineGraph, plan_stages, write_plan
from pipelines.isolate import GuardedStage
from pipelines.stages import GLOBAL, StageInput, StageTick, global_inputs
from sinks.alerts import publish_stage_output
from pipelines.spec import PipelineSpec
from runners.stats import STATS
from sinks.iceberg import IcebergSink, restrict_to, split_by_table, table_writers
from sinks.plan import WritePlan
from sources.generator import EmbeddedSource
from sources.kafka import KafkaSource, PartitionRange


class ReadEmbedded(beam.DoFn):
    def __init__(self, source: EmbeddedSource, resume: dict[str, int]):
        self.source = source
        self.resume = resume

    def process(self, keys):
        """One partition key, or a list of keys read round-robin (so a bounded run on the
        DirectRunner sees partitions interleaved, as a real consumer group would)."""
        keys = [keys] if isinstance(keys, str) else keys
        parts = {p.key: p for p in self.source.partitions()}
        yield from _round_robin([self.source.batches(parts[k], self.resume.get(k, 0)) for k in keys])


def _round_robin(iterators):
    live = list(iterators)
    while live:
        nxt = []
        for it in live:
            try:
                yield next(it)
                nxt.append(it)
            except StopIteration:
                pass
        live = nxt


class ReadKafkaRange(beam.DoFn):
    """A :class:`PartitionRange` with an end → the raw batches of exactly that range."""

    def __init__(self, source: KafkaSource):
        self.source = source

    def process(self, rng):
        """One range, or a list of ranges read round-robin (partitions interleaved)."""
        rngs = rng if isinstance(rng, (list, tuple)) else [rng]
        yield from _round_robin([self.source.batches(r.part, r.start, bounded=True, end_offset=r.end) for r in rngs])


UNBOUNDED_STOP = 2**63 - 1


class _PartitionTracker(OffsetRestrictionTracker):
    def is_bounded(self):
        return self.current_restriction().stop != UNBOUNDED_STOP


class _PartitionRestrictions(RestrictionProvider):
    """A partition's restriction: its offset range, ``[start, ∞)`` when unbounded."""

    def initial_restriction(self, rng: PartitionRange):
        return OffsetRange(rng.start, rng.end if rng.end is not None else UNBOUNDED_STOP)

    def create_tracker(self, restriction):
        return _PartitionTracker(restriction)

    def split(self, rng, restriction):
        yield restriction  # one reader per partition; the runner splits by checkpoints

    def restriction_size(self, rng, restriction):
        return min(restriction.size(), 1 << 30)

    def truncate(self, rng, restriction):
        return None if restriction.stop == UNBOUNDED_STOP else restriction  # drain: stop reading


class ReadKafkaPartition(beam.DoFn):
    """Splittable read of one partition (see the module docstring): reads for about
    ``slice_s`` seconds per call, then checkpoints."""

    def __init__(self, source: KafkaSource, slice_s: float = 1.0, idle_resume_s: float = 0.2):
        self.source = source
        self.slice_s = slice_s
        self.idle_resume_s = idle_resume_s

    def setup(self):
        self.readers = {}

    def process(self, rng: PartitionRange, tracker=beam.DoFn.RestrictionParam(_PartitionRestrictions())):
        import time

        r = tracker.current_restriction()
        key = rng.part.key
        reader = self.readers.get(key)
        if reader is None or reader.position != r.start:
            if reader is not None:
                reader.close()
            end = None if r.stop == UNBOUNDED_STOP else r.stop
            reader = self.readers[key] = self.source.reader(PartitionRange(rng.part, r.start, end))
        until = time.monotonic() + self.slice_s
        emitted = False
        while True:
            b = reader.poll(min(0.2, self.source.kspec.poll_timeout.total_seconds()))
            if b is not None:
                if not tracker.try_claim(b.offsets[-1]):
                    reader.close()  # the runner split the range before this batch: the residual re-reads it
                    self.readers.pop(key, None)
                    return
                emitted = True
                yield b
            if reader.done:
                tracker.try_claim(r.stop)  # nothing more of this range in this run
                reader.close()
                self.readers.pop(key, None)
                return
            if b is None or time.monotonic() >= until:  # idle (or slice used up): let the bundle finish and commit
                tracker.defer_remainder(Duration.of(0 if emitted else self.idle_resume_s))
                return

    def teardown(self):
        for reader in getattr(self, "readers", {}).values():
            reader.close()


class ProcessBatches(beam.DoFn):
    def __init__(self, spec: PipelineSpec):
        self.spec = spec
        self.records_in = Metrics.counter("obsflow", "records_in")
        self.accepted = Metrics.counter("obsflow", "records_accepted")
        self.dead = Metrics.counter("obsflow", "records_dead")

    def setup(self):
        self.graph = PipelineGraph(self.spec, counters=STATS)
        tune_gc_once(self.spec.process.gc_young_threshold)  # the worker process's graph is built: frozen

    def process(self, raw):
        out = self.graph.process(raw)
        self.records_in.inc(out.records_in)
        self.accepted.inc(out.records_accepted)
        self.dead.inc(out.records_dead)
        STATS.add_output(out)
        yield out


def _flush_bundle(sink: IcebergSink) -> None:
    """Commit what ``sink`` buffered (a bundle's output is durable before Beam considers
    the bundle done) and hand its commit figures to the run's stats."""
    before = sink.stats.commits
    sink.flush(include_empty=True)
    if sink.stats.commits != before:
        STATS.add_commits(sink.stats)
        sink.stats = type(sink.stats)()


def beam_run_id() -> str:
    """The run id of a Beam job being built: ``$OBSFLOW_RUN_ID`` when the submitting process
    has one, else a new one. Fixed here, in the process that builds the pipeline, and
    pickled with the writing DoFns: a portable runner's SDK workers (Flink's task managers)
    do not get the submitter's environment, so every worker process of the job tags its
    commits' counters with this one id (``run_id`` in :data:`sinks.iceberg.STATS_KEY`)."""
    import os
    import uuid

    from sinks.iceberg import RUN_ID_ENV

    return os.environ.get(RUN_ID_ENV) or uuid.uuid4().hex


class WriteIceberg(beam.DoFn):
    def __init__(
        self, spec: PipelineSpec, tables: list[str], plan: WritePlan, dedupe: bool = False, run_id: str | None = None
    ):
        self.spec = spec
        self.tables = tables
        self.plan = plan
        self.dedupe = dedupe
        self.run_id = run_id  # the job's (:func:`beam_run_id`), carried to the workers with the DoFn

    def setup(self):
        self.sink = IcebergSink(
            self.spec, self.tables, dedupe=self.dedupe, plan=self.plan, counters=STATS, run_id=self.run_id
        )

    def process(self, out):
        self.sink.accept(out)

    def finish_bundle(self):
        _flush_bundle(self.sink)

    def teardown(self):
        self.sink.close()


class WriteTables(beam.DoFn):
    """One writer per table for the tables the stateful stages write: consumes
    ``(table, piece)`` from :func:`sinks.iceberg.split_by_table`; commits like
    :class:`WriteIceberg`, with one :class:`IcebergSink` per table.

    Keyed state makes the runner send every piece of a table to the one worker that owns
    its key, whatever the parallelism — so that table's sink sees every shard's position
    report (and, for dead letters, every flow's) before it records a position. The state
    cell counts the pieces a table received."""

    PIECES = ReadModifyWriteStateSpec("pieces", VarIntCoder())

    def __init__(self, spec: PipelineSpec, plan: WritePlan, dedupe: bool = False, run_id: str | None = None):
        self.spec = spec
        self.plan = plan
        self.dedupe = dedupe
        self.run_id = run_id  # the job's (:func:`beam_run_id`), carried to the workers with the DoFn

    def setup(self):
        self.sinks: dict[str, IcebergSink] = {}

    def process(self, element, pieces=beam.DoFn.StateParam(PIECES)):
        table, out = element
        sink = self.sinks.get(table)
        if sink is None:
            sink = self.sinks[table] = IcebergSink(
                self.spec, [table], dedupe=self.dedupe, plan=self.plan, counters=STATS, run_id=self.run_id
            )
        sink.accept(out)
        pieces.write((pieces.read() or 0) + 1)

    def finish_bundle(self):
        for sink in self.sinks.values():
            _flush_bundle(sink)

    def teardown(self):
        for sink in self.sinks.values():
            sink.close()


class StageDoFn(beam.DoFn):
    """Hosts one shard of any stage (:func:`pipelines.stages.make_stage`) in Beam keyed
    state: the key ``"<stage>:<shard>"`` names it (``stage`` fixes it, for the ``global``
    stage fed by other stages' outputs).

    Consumes (key, StageInput | StageOutput); emits StageOutput. The stage lives in a
    ReadModifyWrite state cell (its snapshot), and an event-time timer at the end of the
    global window flushes it when the input ends."""

    STATE = ReadModifyWriteStateSpec("stage", BytesCoder())
    FLUSH = TimerSpec("flush", TimeDomain.WATERMARK)

    def __init__(self, defs: dict, stage: str | None = None):
        self.defs = defs
        self.stage = stage

    def _stage(self, key: str, blob):
        name, shard = key.rsplit(":", 1)
        return GuardedStage(
            self.defs[self.stage or name], int(shard), blob, counters=STATS
        )  # a record that raises is isolated

    def process(self, element, state=beam.DoFn.StateParam(STATE), flush=beam.DoFn.TimerParam(FLUSH)):
        key, item = element
        stage = self._stage(key, state.read())
        outs = stage.process(item)
        state.write(stage.snapshot())
        flush.set(GlobalWindow().max_timestamp())
        for out in outs:
            self._publish(out)
            yield out

    @on_timer(FLUSH)
    def on_flush(self, key=beam.DoFn.KeyParam, state=beam.DoFn.StateParam(STATE)):
        blob = state.read()
        if blob:
            for out in self._stage(key, blob).flush():
                self._publish(out)
                yield out
        state.clear()

    def _publish(self, out):
        STATS.record_stage(out)  # the trace stage's tail sampling counts
        d = self.defs[out.stage]
        publish_stage_output(out, d.options.get("spec"), d.options.get("kafka", False), counters=STATS)


def _wall_clock() -> float:
    import time

    return time.time()


class IdleStageDoFn(StageDoFn):
    """:class:`StageDoFn` plus the idle advance (``stages.idle_advance_after``), for
    unbounded runs: a processing-time timer (``TimeDomain.REAL_TIME``) is armed
    ``idle_ms`` after each input and re-armed every ``idle_ms`` while the key has state;
    when it fires, the stage gets a :class:`pipelines.stages.StageTick` with the firing
    time as the wall time (the stage advances its clock when it has had no input for
    ``idle_ms``). ``clock`` (seconds since the epoch, default ``time.time``) is the
    processing-time clock the input's wall time is read from; a test with ``TestStream``
    passes one that follows its processing time.

    A separate class, not an option of :class:`StageDoFn`: a DoFn with a processing-time
    timer makes the DirectRunner leave the FnApiRunner for the BundleBasedDirectRunner,
    so bounded runs keep the plain :class:`StageDoFn` (and their exact outputs)."""

    IDLE = TimerSpec("idle", TimeDomain.REAL_TIME)

    def __init__(self, defs: dict, stage: str | None = None, idle_ms: int = 5000, clock=None):
        super().__init__(defs, stage)
        self.idle_ms = idle_ms
        self.clock = clock or _wall_clock

    def _arm(self, timer, wall_ms: int) -> None:
        from apache_beam.utils.timestamp import Timestamp

        timer.set(Timestamp(micros=(wall_ms + self.idle_ms) * 1000))

    def process(
        self,
        element,
        state=beam.DoFn.StateParam(StageDoFn.STATE),
        flush=beam.DoFn.TimerParam(StageDoFn.FLUSH),
        idle=beam.DoFn.TimerParam(IDLE),
    ):
        key, item = element
        wall = int(self.clock() * 1000)
        if isinstance(item, StageInput) and item.wall_ms < 0:
            item = dataclasses.replace(item, wall_ms=wall)
        stage = self._stage(key, state.read())
        outs = stage.process(item)
        state.write(stage.snapshot())
        flush.set(GlobalWindow().max_timestamp())
        self._arm(idle, wall)
        for out in outs:
            self._publish(out)
            yield out

    @on_timer(IDLE)
    def on_idle(
        self,
        key=beam.DoFn.KeyParam,
        fired=beam.DoFn.TimestampParam,
        state=beam.DoFn.StateParam(StageDoFn.STATE),
        idle=beam.DoFn.TimerParam(IDLE),
    ):
        blob = state.read()
        if not blob:
            return  # flushed (end of input): nothing to advance, no re-arm
        wall = max(int(fired.micros // 1000), int(self.clock() * 1000))
        name, shard = key.rsplit(":", 1)
        stage = self._stage(key, blob)
        outs = stage.process(StageTick(self.stage or name, int(shard), wall, self.idle_ms))
        self._arm(idle, wall)  # re-armed while the key has state
        state.write(stage.snapshot())  # the clock may have moved even when there is nothing to emit
        for out in outs:
            self._publish(out)
            yield out


#: elements of a keyed stateful DoFn: string keys get a deterministic coder
KEYED = tuple[str, typing.Any]


def process_and_write(
    pcoll,
    spec: PipelineSpec,
    names: list[str],
    partitions: list[str] | None = None,
    kafka: bool = False,
    idle_ms: int = 0,
    dedupe: bool = False,
    run_id: str | None = None,
):
    """RawBatch → flows → (stateful stages) → Iceberg: the part every Beam pipeline shares.

    Every stage fed by the flows runs in one stateful DoFn keyed ``"<stage>:<shard>"``; the
    ``global`` stage (alerts, funnel reports) in a second one, keyed by a constant, fed by
    the metrics and product stages' outputs. ``idle_ms`` > 0 (unbounded runs,
    ``stages.idle_advance_after``): the stages run in :class:`IdleStageDoFn` (idle advance
    on a processing-time timer); the global stage follows their watermarks. ``run_id``: the
    job's run id every writer tags its commits' counters with (default :func:`beam_run_id`)."""
    run_id = run_id or beam_run_id()
    outs = pcoll | "Process" >> beam.ParDo(ProcessBatches(spec))
    defs = {d.name: d for d in plan_stages(spec, partitions, kafka=kafka)}
    if any(n != GLOBAL for n in defs):
        staged = (
            outs
            | "StageInputs" >> beam.FlatMap(lambda o: [(si.key, si) for si in o.stage_inputs]).with_output_types(KEYED)
            | "Stages" >> beam.ParDo(IdleStageDoFn(defs, idle_ms=idle_ms) if idle_ms > 0 else StageDoFn(defs))
        )
        outs = (outs, staged) | "Merge" >> beam.Flatten()
        if GLOBAL in defs:
            # fed from the merged collection (a stateful DoFn's output consumed twice loses elements on the DirectRunner)
            globl = (
                outs
                | "GlobalInputs" >> beam.FlatMap(global_inputs).with_output_types(KEYED)
                | "GlobalStage" >> beam.ParDo(StageDoFn(defs, GLOBAL))
            )
            outs = (outs, globl) | "MergeGlobal" >> beam.Flatten()
    # tables a stage writes need one writer each (positions need every shard's report);
    # the flows' other tables are written where they were produced
    plan = write_plan(spec)  # who writes which table, once for every writer of the job
    anywhere, single = table_writers(plan, names)
    if not single:
        return outs | "WriteIceberg" >> beam.ParDo(WriteIceberg(spec, names, plan, dedupe, run_id))
    direct = (
        outs
        | "FlowTables" >> beam.FlatMap(restrict_to(anywhere))
        | "WriteIceberg" >> beam.ParDo(WriteIceberg(spec, anywhere, plan, dedupe, run_id))
    )
    keyed = (
        outs
        | "ByTable" >> beam.FlatMap(split_by_table(single)).with_output_types(KEYED)
        | "WriteTables" >> beam.ParDo(WriteTables(spec, plan, dedupe, run_id))
    )
    return direct, keyed


def build_pipeline(
    p: beam.Pipeline,
    spec: PipelineSpec,
    source: EmbeddedSource,
    resume: dict[str, int],
    tables: list[str] | None = None,
    dedupe: bool = False,
    run_id: str | None = None,
):
    """The embedded source → the flows → Iceberg, writing ``tables`` (default: all; a
    catch-up writes one, with ``dedupe``: see :class:`sinks.iceberg.IcebergSink`);
    ``run_id``: the run its commits' counters name (default :func:`beam_run_id`)."""
    names = tables or sorted({t for ts in PipelineGraph.tables_by_topic(spec).values() for t in ts})
    keys = [part.key for part in source.partitions()]
    raw = p | "Partitions" >> beam.Create([keys]) | "ReadEmbedded" >> beam.ParDo(ReadEmbedded(source, resume))
    return process_and_write(raw, spec, names, keys, dedupe=dedupe, run_id=run_id)


def build_kafka_pipeline(
    p: beam.Pipeline,
    spec: PipelineSpec,
    source: KafkaSource,
    ranges: list[PartitionRange],
    bounded: bool,
    tables: list[str] | None = None,
    dedupe: bool = False,
    run_id: str | None = None,
):
    """Kafka → the flows → Iceberg. ``ranges`` come from :meth:`KafkaSource.plan`
    (start offsets from the tables; ends when ``bounded``); ``tables``: those written
    (default: all); ``run_id``: the run its commits' counters name, on every worker
    (default :func:`beam_run_id`)."""
    names = tables or PipelineGraph(spec, counters=STATS).table_names
    read = ReadKafkaRange(source) if bounded else ReadKafkaPartition(source)
    # bounded: all ranges in one element, read interleaved; unbounded: one element per partition (splittable)
    elements = [list(ranges)] if bounded else ranges
    raw = (
        p
        | "Partitions" >> beam.Create(elements, reshuffle=False)
        | ("ReadKafkaRange" if bounded else "ReadKafka") >> beam.ParDo(read)
    )
    # unbounded and streaming (Flink, --streaming): the stages advance their clocks on idle. A bounded
    # run decides everything at its end; in a batch-mode run (the DirectRunner without --streaming) a
    # processing-time timer would move the run off the FnApiRunner, so those keep the plain StageDoFn.
    from apache_beam.options.pipeline_options import StandardOptions

    streaming = bool(p.options.view_as(StandardOptions).streaming)
    # the stages' event time waits for the partitions that had records to read when the run was planned
    return process_and_write(
        raw,
        spec,
        names,
        [r.part.key for r in ranges if r.backlog],
        kafka=True,
        idle_ms=spec.stages.idle_advance_ms if streaming and not bounded else 0,
        dedupe=dedupe,
        run_id=run_id,
    )


def direct_options(extra: list[str] | None = None) -> PipelineOptions:
    """DirectRunner options that stay offline (no Prism download) and in-process."""
    return PipelineOptions(
        ["--runner=DirectRunner", "--direct_num_workers=1", "--direct_running_mode=in_memory", *(extra or [])]
    )


#: the trace stage's host, by its former name
TraceStageDoFn = StageDoFn
