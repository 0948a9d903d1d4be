"""The engine-agnostic graph of a spec: for each source, the chain of transform objects
that turns a raw batch into table rows and dead letters.

A runner hosts :class:`PipelineGraph` inside its own operators (a Bytewax ``map``, a
Beam ``DoFn``); the logic is the same object on every engine."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core.batch import DEFAULT_MAX_BYTES
from core.durations import duration_ms
from core.stats import RunStats
from pipelines.dedupe_seed import TableSeed
from pipelines.spec import (
    DedupeStep,
    EnrichStep,
    FlowSpec,
    LogSampleStep,
    PipelineSpec,
    ProductStep,
    RollupStep,
    ScrubStep,
    TailSampleStep,
    ValidateStep,
)
from pipelines.stages import (
    GLOBAL,
    METRICS,
    PRODUCT,
    TRACE,
    GlobalConfig,
    StageDef,
    StageInput,
    TraceConfig,
    split_by_shard,
    trace_shards,
)
from schemas.codecs import codec_for
from schemas.tables import TableDef, table_def
from sinks.dead_letters import dead_letter_rows
from sinks.plan import StageWrites, WritePlan
from transforms import shape
from transforms.batch import INDEX, ITEM, RawBatch
from transforms.dedupe import DUPLICATE, EventDedupe
from transforms.door_verdicts import apply_door_verdicts
from transforms.enrich import Enricher
from transforms.scrub import Scrubber
from transforms.validate import Validator


@dataclass
class FlowOutput:
    """What one raw batch became: rows per table, and the position it covers.

    Invariant: ``records_in == records_accepted + records_dead + records_dropped``.

    A source whose records hold items (OTLP messages: spans, log records, data points) is
    accepted per item and counted at both levels: ``items_*`` count items (a message
    rejected whole counts as one item) with ``items_in == items_accepted + items_dead +
    items_dropped``; a message counts as accepted when any of its items is, else as dead
    when any is dead-lettered, else as dropped, so it is never both accepted and dead.
    ``dead_rows`` is the number of dead-letter rows (items for such a source)."""

    source: str
    topic: str
    partition: int
    first_offset: int
    next_offset: int
    rows: dict[str, pa.Table]
    records_in: int
    records_accepted: int
    records_dead: int
    records_dropped: int = 0
    dead_by_reason: dict[str, int] = field(default_factory=dict)
    stage_inputs: list = field(default_factory=list)  # list[StageInput], one per shard of the flow's stage
    per_item: bool = False  # whether the items_* counts are kept (OTLP sources)
    items_in: int = 0
    items_accepted: int = 0
    items_dead: int = 0
    items_dropped: int = 0
    dead_rows: int = -1  # dead-letter rows of this batch (-1: records_dead)
    dropped_by_reason: dict[str, int] = field(default_factory=dict)  # records_dropped by reason (duplicate)

    def __post_init__(self):
        if self.dead_rows < 0:
            self.dead_rows = self.records_dead


def stage_plan(spec: PipelineSpec):
    """The trace stage step and the log sampling config, if the spec has them."""
    trace_step = next((s for f in spec.flows for s in f.steps if isinstance(s, TailSampleStep)), None)
    log_step = next((s for f in spec.flows for s in f.steps if isinstance(s, LogSampleStep)), None)
    return trace_step, (log_step.config if log_step else None)


def head_plan(spec: PipelineSpec) -> tuple | None:
    """The trace stage's head sampling settings ``(percentage, salt, policy name)``, if the
    spec's ``tail_sample`` step has ``head_sampling``."""
    step = next((s for f in spec.flows for s in f.steps if isinstance(s, TailSampleStep)), None)
    head = step.head_sampling if step is not None else None
    return (
        (head.sampling_percentage, head.salt(cast(TailSampleStep, step).sampler), head.policy_name)
        if head is not None
        else None
    )


def _step(spec: PipelineSpec, cls):
    return next((s for f in spec.flows for s in f.steps if isinstance(s, cls)), None)


def plan_stages(spec: PipelineSpec, partitions: list[str] | None = None, kafka: bool = False) -> list[StageDef]:
    """The stateful stages of a spec, in feeding order (``global`` last: it is fed by the
    ``metrics`` and ``product`` stages). ``partitions`` are the ``topic:partition`` keys the
    run reads (the event-time watermark of a stage waits for each of them); default: the
    spec's sources with their ``partitions`` count. ``kafka``: the run reads Kafka, so alert
    events are also pushed to the alerts topic."""
    if partitions is None:
        partitions = [f"{s.topic_name}:{p}" for s in spec.sources for p in range(s.partitions)]

    def topics_of(signals):
        return tuple(
            sorted({spec.source(f.source).topic_name for f in spec.flows if spec.source(f.source).signal in signals})
        )

    def expected(topics):
        return tuple(k for k in partitions if k.rsplit(":", 1)[0] in topics)

    out: list[StageDef] = []
    trace_step, log_config = stage_plan(spec)
    if trace_step is not None:
        sig = ("span", "log") if log_config is not None else ("span",)
        tables = ["spans", "traces", "metrics"] + (
            sorted({f.sink.table for f in spec.flows if spec.source(f.source).signal == "log"})
            if log_config is not None
            else []
        )
        head = head_plan(spec)
        opts = {"head": head} if head is not None else {}
        if trace_step.red is not None:  # RED rows are written by the global stage (shards' windows merged)
            tables.remove("metrics")
        tables.append(spec.dead_letters.table)  # internal_error rows (pipelines.isolate), late spans
        topics = topics_of(sig)
        # the span topics' event time closes RED windows; late spans are dead letters
        out.append(
            StageDef(
                TRACE,
                trace_step.shards,
                tuple(tables),
                topics,
                TraceConfig(trace_step, log_config),
                expected(topics),
                options=opts,
                red_topics=topics_of(("span",)),
                dead_letters=spec.dead_letters.table,
            )
        )
    rollup = _step(spec, RollupStep)
    if rollup is not None:
        signals = {"metric"} | {("log" if r.source == "logs" else "event") for r in rollup.derive}
        topics = topics_of(signals)
        out.append(
            StageDef(METRICS, rollup.shards, ("metrics", spec.dead_letters.table), topics, rollup, expected(topics))
        )
    product = _step(spec, ProductStep)
    if product is not None:
        topics = topics_of({"event"})
        out.append(
            StageDef(PRODUCT, product.shards, ("sessions", spec.dead_letters.table), topics, product, expected(topics))
        )
    alerts = spec.alerts if spec.alerts is not None and spec.alerts.rules else None
    red = trace_step.red if trace_step is not None else None
    if alerts is not None or product is not None or red is not None:
        up = {
            d.name: (d.shards, d.topics)
            for d in out
            if d.name in (METRICS, PRODUCT) or (d.name == TRACE and red is not None)
        }
        global_tables = (("alerts",) if alerts is not None else ()) + (
            ("metrics",) if product is not None or red is not None else ()
        )
        topics = tuple(sorted({t for _, ts in up.values() for t in ts}))
        out.append(
            StageDef(
                GLOBAL,
                1,
                global_tables,
                topics,
                GlobalConfig(
                    alerts.engine_config() if alerts is not None else None, product, rollup.config if rollup else None
                ),
                upstream=up,
                options={
                    "spec": spec,
                    "kafka": kafka,
                    "red": (int(red.window.total_seconds() * 1000), red.max_exemplars) if red else None,
                },
            )
        )
    return out


def write_plan(spec: PipelineSpec) -> WritePlan:
    """Who writes which table (:class:`sinks.plan.WritePlan`), built once per job and handed to
    its sinks: the stateful stages (each shard reports its positions), the topics feeding each
    table, and the ``(table, topic)`` pairs flows write directly (their batch's next offset):
    every flow's dead letters, and its own table unless a stage writes it (spans and metrics
    always; logs when the trace stage samples them)."""
    defs = {d.name: d for d in plan_stages(spec)}
    topics_of: dict[str, set[str]] = {}
    for topic, names in PipelineGraph.tables_by_topic(spec).items():
        for n in names:
            topics_of.setdefault(n, set()).add(topic)
    stateless: set[tuple[str, str]] = set()
    staged_logs = any(d.name == TRACE and d.config[1] is not None for d in defs.values())
    for f in spec.flows:
        src = spec.source(f.source)
        sig = src.signal
        stateless.add((spec.dead_letters.table, src.topic_name))
        if sig not in ("span", "metric") and not (sig == "log" and staged_logs and TRACE in defs):
            stateless.add((f.sink.table, src.topic_name))
    stages = {n: StageWrites(n, d.shards, tuple(d.tables), tuple(d.topics)) for n, d in defs.items()}
    return WritePlan(stages, {t: frozenset(ts) for t, ts in topics_of.items()}, frozenset(stateless))


def _crc_shards(values: pa.Array, shards: int) -> np.ndarray:
    """Shard of each value: CRC-32 of its text modulo ``shards`` (nulls: 0), per distinct value."""
    import zlib

    values = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    uniq = pc.unique(values)
    table = np.asarray([zlib.crc32(v.encode()) % shards if v is not None else 0 for v in uniq.to_pylist()], np.int64)
    return (
        table[pc.index_in(values, value_set=uniq).to_numpy(zero_copy_only=False)]
        if len(values)
        else np.zeros(0, np.int64)
    )


def fed_stages(spec: PipelineSpec, flow: FlowSpec) -> tuple[StageDef | None, StageDef | None]:
    """``(metrics, product)``: the definitions of the metrics and product stages ``flow``
    feeds (None for a stage it does not feed)."""
    defs = {d.name: d for d in plan_stages(spec)}
    source = spec.source(flow.source)
    metrics = defs.get(METRICS) if METRICS in defs and source.topic_name in defs[METRICS].topics else None
    product = (
        defs.get(PRODUCT) if source.signal == "event" and any(isinstance(s, ProductStep) for s in flow.steps) else None
    )
    return metrics, product


def flow_tables(spec: PipelineSpec, flow: FlowSpec) -> list[str]:
    """The tables ``flow`` writes, directly or through the stages it feeds, in a fixed
    order (its own table, the dead letters, then the stages' tables), from the spec alone:
    no transform is built."""
    if spec.source(flow.source).signal == "span":
        return ["spans", "traces", "metrics", spec.dead_letters.table]
    out = [table_def(flow.sink.table).name, spec.dead_letters.table]
    for d in fed_stages(spec, flow):
        out += [t for t in (d.tables if d is not None else ()) if t not in out]
    return out


class CompiledFlow:
    """One flow of the spec: codec → validate → shape → scrub → enrich → finish."""

    def __init__(self, spec: PipelineSpec, flow: FlowSpec):
        self.spec = spec
        self.flow = flow
        self.source = spec.source(flow.source)
        signal = self.source.signal
        self.signal = signal
        self.table: TableDef = table_def(flow.sink.table)
        self.dead_table = spec.dead_letters.table
        validate = next((s for s in flow.steps if isinstance(s, ValidateStep)), None)
        max_bytes = validate.max_bytes if validate else DEFAULT_MAX_BYTES
        options = (
            {"schema_registry_url": spec.kafka.schema_registry_url}
            if self.source.codec == "avro" and spec.kafka.schema_registry_url
            else None
        )
        self.codec = codec_for(self.source.codec, signal, max_bytes, options)
        self.pre: list = []  # on wire columns
        self.post: list = []  # on table columns
        self.scrubber: Scrubber | None = None
        last_validate = max((k for k, s in enumerate(flow.steps) if isinstance(s, ValidateStep)), default=-1)
        for k, step in enumerate(flow.steps):
            if isinstance(step, ValidateStep):
                # the last one leaves its rejected rows for shape.to_rows (or process) to drop
                leave = k == last_validate
                self.pre.append(Validator(signal, step, json_hints=self.source.codec == "json", leave_drops=leave))
            elif isinstance(step, ScrubStep):
                self.scrubber = Scrubber(signal, step, spec.privacy)
                self.post.append(self.scrubber)
            elif isinstance(step, EnrichStep):
                self.post.append(Enricher(signal, step, spec.services))
        if self.scrubber is None:  # no personal data is stored, scrub step or not: text, ids, maps, dead letters
            self.scrubber = Scrubber(
                signal,
                ScrubStep(kind="scrub", pseudonymize_users=False, anonymize_ip=False),
                spec.privacy,
                implicit=True,
            )
            self.post.insert(0, self.scrubber)
        self.extra = {"sample_rate": 1.0} if signal == "log" else {}
        self.dedupe: EventDedupe | None = None
        if signal == "event":  # on by default: a flow without a dedupe step dedupes with the defaults
            dd = next((s for s in flow.steps if isinstance(s, DedupeStep)), None) or DedupeStep(kind="dedupe")
            if dd.enabled:
                self.dedupe = EventDedupe(duration_ms(dd.window), dd.max_ids, TableSeed(spec, flow.sink.table))
        self.trace_step, self.log_config = stage_plan(spec)
        # spans always go through the trace stage; logs do when the spec samples them
        self.staged = self.trace_step is not None and (
            signal == "span" or (signal == "log" and self.log_config is not None)
        )
        # spans of a head_sampling source are decided at ingest by the trace stage's head sampler, past the tail sampler
        self.head_sampled = (
            signal == "span"
            and self.trace_step is not None
            and self.trace_step.head_sampling is not None
            and self.source.name in self.trace_step.head_sampling.sources
        )
        self.head_logs = None
        if signal == "log" and self.log_config is not None and self.trace_step is None:
            from transforms.tail_sampling import LogSampler

            self.head_logs = LogSampler(self.log_config)  # no trace stage: follow the trace by hash (head sampling)
        # the other stateful stages this flow feeds
        self.metrics_def, self.product_def = fed_stages(spec, flow)
        self.deriver = None
        if self.metrics_def is not None and signal in ("log", "event"):
            from transforms.rollup import MetricDeriver

            self.deriver = MetricDeriver(self.metrics_def.config.derive, "logs" if signal == "log" else "events")
            if not self.deriver.rules:
                self.deriver = None

    @property
    def tables(self) -> list[str]:
        return flow_tables(self.spec, self.flow)

    def process(self, raw: RawBatch) -> FlowOutput:
        batch = apply_door_verdicts(self.codec.decode(raw))
        for step in self.pre:
            batch = step(batch)
        if self.signal != "metric":
            batch = shape.to_rows(self.signal, batch)  # drops the rows the validator rejected
        else:
            batch.drop_rejected()
        for step in self.post:
            batch = step(batch)
        judged = None
        if self.dedupe is not None:  # after every step that may reject: only accepted envelopes are held
            judged = self.dedupe.judge(raw, batch.table)
            if judged.keep is not None:
                batch.table = batch.table.filter(judged.keep)
        per_item = batch.items_in is not None
        item_rows = 0
        if per_item and ITEM in batch.table.column_names:
            keys = list(zip(batch.table.column(INDEX).to_pylist(), batch.table.column(ITEM).to_pylist()))
            dead_keys = set(batch.rejects.keys())
            if dead_keys:  # an item one of whose rows was rejected is dead as a whole (a summary's quantile rows)
                gone = np.asarray([k in dead_keys for k in keys], dtype=bool)
                if gone.any():
                    batch.table = batch.table.filter(pa.array(~gone))
                    keys = [k for k, g in zip(keys, gone) if not g]
            item_rows = len(set(keys))
            batch.table = batch.table.drop_columns([ITEM])
        accepted = len(set(batch.table.column(INDEX).to_pylist())) if batch.table.num_rows else 0
        dropped = judged.duplicates if judged is not None else 0
        items_dropped = 0
        stage_inputs = []
        table_rows = {}
        annotated = shape.annotate(batch) if (self.signal == "metric" or self.deriver or self.product_def) else None
        if self.signal == "metric":
            stage_inputs = self._metric_inputs(raw, annotated, "samples", self._max_ms(annotated, "timestamp"))
        elif self.staged:
            rows = shape.annotate(batch)
            stage_inputs = self._stage_inputs(raw, rows)
        elif self.head_logs is not None:
            rows = shape.annotate(batch)
            kept = self.head_logs.decide_logs(rows)
            dropped_rows = rows.num_rows - kept.num_rows
            table_rows[self.table.name] = shape.conform(kept, self.table)
            dropped = (
                len(set(batch.table.column(INDEX).to_pylist())) - len(set(kept.column("source_offset").to_pylist()))
                if dropped_rows
                else 0
            )
            accepted -= dropped
            items_dropped = dropped_rows  # one row per log record
        else:
            table_rows[self.table.name] = (
                shape.conform(annotated, self.table, self.extra)
                if annotated is not None
                else shape.finish(batch, self.table, self.extra)
            )
        if self.deriver is not None:
            stage_inputs = stage_inputs + self._metric_inputs(
                raw, self.deriver(annotated), "derived", self._max_ms(annotated, "ts")
            )
        if self.product_def is not None:
            stage_inputs = stage_inputs + self._product_inputs(raw, annotated)
        dead = dead_letter_rows(raw, batch.rejects, self.spec.dead_letters.max_raw_bytes, self.scrubber, batch.item_raw)
        by_reason: dict[str, int] = {}
        for r in dead.column("reason").to_pylist():
            by_reason[r] = by_reason.get(r, 0) + 1
        records_dead = dead.num_rows
        items = {}
        if per_item:
            # messages: accepted if any item is, else dead if any item is dead-lettered, else dropped
            if table_rows.get(self.table.name) is not None and self.head_logs is not None:
                at = {o: i for i, o in enumerate(raw.offsets)}
                kept_idx = {at[o] for o in table_rows[self.table.name].column("source_offset").to_pylist()}
            else:
                kept_idx = set(batch.table.column(INDEX).to_pylist())
            records_dead = len(set(batch.rejects.indices) - kept_idx)
            dropped = len(raw) - accepted - records_dead
            items = dict(
                per_item=True,
                items_in=sum(cast("list[int]", batch.items_in)),
                items_accepted=item_rows - items_dropped,
                items_dead=dead.num_rows,
                items_dropped=items_dropped,
            )
        out = FlowOutput(
            source=raw.source,
            topic=raw.topic,
            partition=raw.partition,
            first_offset=raw.offsets[0] if raw.offsets else -1,
            next_offset=raw.next_offset,
            rows={**table_rows, self.dead_table: dead},
            records_in=len(raw),
            records_accepted=accepted,
            records_dead=records_dead,
            records_dropped=dropped,
            dead_by_reason=by_reason,
            stage_inputs=stage_inputs,
            dead_rows=dead.num_rows,
            dropped_by_reason={DUPLICATE: judged.duplicates} if judged is not None and judged.duplicates else {},
            **items,
        )
        if judged is not None:
            cast(EventDedupe, self.dedupe).commit(judged)  # only once the batch's output is made
        return out

    def _stage_inputs(self, raw: RawBatch, rows: pa.Table) -> list[StageInput]:
        """One input per shard (empty ones too, so every shard hears of the position)."""
        n = self.trace_step.shards
        shard_of = trace_shards(rows.column("trace_id"), n, raw.partition)
        parts = split_by_shard(rows, shard_of, n)
        now = max(raw.timestamps_ms) if raw.timestamps_ms else 0
        kind = ("head_spans" if self.head_sampled else "spans") if self.signal == "span" else "logs"
        first = raw.offsets[0] if raw.offsets else -1
        # spans: the batch's largest start time is the partition's event time (RED windows), the same on every shard
        event_ms = self._max_ms(rows, "start_time") if self.signal == "span" else -1
        return [
            StageInput(
                TRACE,
                k,
                kind,
                parts[k],
                raw.topic,
                raw.partition,
                first,
                raw.next_offset,
                now,
                raw.topic_partitions,
                event_ms=event_ms,
                source=raw.source,
                lag=raw.lag,
            )
            for k in range(n)
        ]

    @staticmethod
    def _max_ms(rows: pa.Table, col: str) -> int:
        if rows is None or rows.num_rows == 0:
            return -1
        v = pc.max(rows.column(col))
        if not v.is_valid:
            return -1
        if pa.types.is_timestamp(v.type) and v.type.unit in ("us", "ns"):  # to ms, truncating
            return v.value // (1000 if v.type.unit == "us" else 1_000_000)
        return v.cast(pa.timestamp("ms", tz="UTC")).value

    def _inputs(self, stage: str, n: int, raw: RawBatch, parts, kind: str, event_ms: int) -> list[StageInput]:
        now = max(raw.timestamps_ms) if raw.timestamps_ms else 0
        first = raw.offsets[0] if raw.offsets else -1
        return [
            StageInput(
                stage,
                k,
                kind,
                parts[k],
                raw.topic,
                raw.partition,
                first,
                raw.next_offset,
                now,
                topic_partitions=raw.topic_partitions,
                event_ms=event_ms,
                source=raw.source,
                lag=raw.lag,
            )
            for k in range(n)
        ]

    def _metric_inputs(self, raw: RawBatch, samples: pa.Table, kind: str, event_ms: int) -> list[StageInput]:
        """One input per metrics shard (by a hash of the metric name)."""
        n = cast(StageDef, self.metrics_def).shards
        parts = split_by_shard(samples, _crc_shards(samples.column("name"), n), n)
        return self._inputs(METRICS, n, raw, parts, kind, event_ms)

    def _product_inputs(self, raw: RawBatch, rows: pa.Table) -> list[StageInput]:
        """One input per product shard (by a hash of the session id)."""
        n = cast(StageDef, self.product_def).shards
        parts = split_by_shard(rows, _crc_shards(rows.column("session_id"), n), n)
        return self._inputs(PRODUCT, n, raw, parts, "events", self._max_ms(rows, "ts"))


class PipelineGraph:
    """All flows of a spec, by source name. ``counters`` are the run's (as the sinks and
    sources take them): the records a step raises on are counted there
    (:func:`pipelines.isolate.process_isolated`), never in another run's."""

    def __init__(self, spec: PipelineSpec, *, counters: RunStats):
        self.spec = spec
        self.counters = counters
        self.flows = {f.source: CompiledFlow(spec, f) for f in spec.flows}

    @property
    def table_names(self) -> list[str]:
        return self.names_of(self.spec)

    @staticmethod
    def names_of(spec: PipelineSpec) -> list[str]:
        """:attr:`table_names` (the flows' tables in flow order, then the stages'), from the
        spec alone: no transform is built (no lookup database loaded)."""
        names: list[str] = []
        for f in spec.flows:
            for t in flow_tables(spec, f):
                if t not in names:
                    names.append(t)
        for d in plan_stages(spec):
            names += [t for t in d.tables if t not in names]
        return names

    def tables_for_topic(self) -> dict[str, list[str]]:
        """Tables each source topic feeds (its sink table and the dead letters)."""
        return self.tables_by_topic(self.spec)

    @staticmethod
    def tables_of(spec: PipelineSpec) -> list[str]:
        """Every table the spec writes (the set :attr:`table_names` gives), without
        building the transforms (no lookup databases loaded)."""
        names = {t for ts in PipelineGraph.tables_by_topic(spec).values() for t in ts}
        return sorted(names | {t for d in plan_stages(spec) for t in d.tables})

    @staticmethod
    def tables_by_topic(spec: PipelineSpec) -> dict[str, list[str]]:
        """Like :meth:`tables_for_topic`, without building the transforms."""
        out: dict[str, list[str]] = {}
        for f in spec.flows:
            topic = spec.source(f.source).topic_name  # a pattern source's topics are known only to the Kafka source
            out.setdefault(topic, [])
            sig = spec.source(f.source).signal
            tables = ["spans", "traces", "metrics"] if sig == "span" else [] if sig == "metric" else [f.sink.table]
            staged = [t for d in plan_stages(spec) if topic in d.topics for t in d.tables]
            for t in (*tables, spec.dead_letters.table, *staged):
                if t not in out[topic]:
                    out[topic].append(t)
        return out

    def process(self, raw: RawBatch) -> FlowOutput:
        """The batch's output; a record that makes a step raise is isolated and
        dead-lettered as ``internal_error`` (:func:`pipelines.isolate.process_isolated`)."""
        from pipelines.isolate import process_isolated

        flow = self.flows[raw.source]
        if flow.dedupe is not None:
            flow.dedupe.prepare(raw)  # reads the table after a restart: its failure is not a record's
        return process_isolated(flow, raw, self.counters)
