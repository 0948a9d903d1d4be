"""The engine-agnostic graph of a spec: for each source, the chain of transform objects
that turns a raw batch into table rows and dead letters.

A runner hosts :class:`PipelineGraph` inside its own operators (a Bytewax ``map``, a
Beam ``DoFn``); the logic is the same object on every engine."""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa

from pipelines.spec import EnrichStep, FlowSpec, LogSampleStep, PipelineSpec, ScrubStep, TailSampleStep, ValidateStep
from pipelines.stages import TRACE, StageInput, split_by_shard, trace_shards
from schemas.codecs import codec_for
from schemas.tables import TableDef, table_def
from sinks.dead_letters import dead_letter_rows
from transforms import shape
from transforms.batch import INDEX, RawBatch
from transforms.enrich import Enricher
from transforms.scrub import Scrubber
from transforms.validate import Validator


@dataclass
class FlowOutput:
    """What one raw batch became: rows per table, and the position it covers.

    Invariant: ``records_in == records_accepted + records_dead + records_dropped``."""

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


def stage_plan(spec: PipelineSpec):
    """The trace stage step and the log sampling config, if the spec has them."""
    trace_step = next((s for f in spec.flows for s in f.steps if isinstance(s, TailSampleStep)), None)
    log_step = next((s for f in spec.flows for s in f.steps if isinstance(s, LogSampleStep)), None)
    return trace_step, (log_step.config if log_step else None)


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
        max_bytes = validate.max_bytes if validate else 1 << 20
        options = {"schema_registry_url": spec.kafka.schema_registry_url} \
            if self.source.codec == "avro" and spec.kafka.schema_registry_url else None
        self.codec = codec_for(self.source.codec, signal, max_bytes, options)
        self.pre: list = []   # on wire columns
        self.post: list = []  # on table columns
        for step in flow.steps:
            if isinstance(step, ValidateStep):
                self.pre.append(Validator(signal, step))
            elif isinstance(step, ScrubStep):
                self.post.append(Scrubber(signal, step, spec.privacy))
            elif isinstance(step, EnrichStep):
                self.post.append(Enricher(signal, step, spec.services))
        self.extra = {"sample_rate": 1.0} if signal == "log" else {}
        self.trace_step, self.log_config = stage_plan(spec)
        # spans always go through the trace stage; logs do when the spec samples them
        self.staged = self.trace_step is not None and (signal == "span" or (signal == "log" and self.log_config is not None))
        self.head_logs = None
        if signal == "log" and self.log_config is not None and self.trace_step is None:
            from transforms.tail_sampling import LogSampler

            self.head_logs = LogSampler(self.log_config)  # no trace stage: follow the trace by hash (head sampling)

    @property
    def tables(self) -> list[str]:
        if self.signal == "span":
            return ["spans", "traces", "metrics", self.dead_table]
        return [self.table.name, self.dead_table]

    def process(self, raw: RawBatch) -> FlowOutput:
        batch = self.codec.decode(raw)
        for step in self.pre:
            batch = step(batch)
        batch = shape.to_rows(self.signal, batch)
        for step in self.post:
            batch = step(batch)
        accepted = len(set(batch.table.column(INDEX).to_pylist())) if batch.table.num_rows else 0
        dropped = 0
        stage_inputs = []
        table_rows = {}
        if self.staged:
            rows = shape.annotate(batch)
            stage_inputs = self._stage_inputs(raw, rows)
        elif self.head_logs is not None:
            rows = shape.annotate(batch)
            kept = self.head_logs.decide_logs(rows)
            dropped_rows = rows.num_rows - kept.num_rows
            table_rows[self.table.name] = shape.conform(kept, self.table)
            dropped = len(set(batch.table.column(INDEX).to_pylist())) - len(set(kept.column("source_offset").to_pylist())) if dropped_rows else 0
            accepted -= dropped
        else:
            table_rows[self.table.name] = shape.finish(batch, self.table, self.extra)
        dead = dead_letter_rows(raw, batch.rejects, self.spec.dead_letters.max_raw_bytes)
        by_reason: dict[str, int] = {}
        for r in dead.column("reason").to_pylist():
            by_reason[r] = by_reason.get(r, 0) + 1
        return FlowOutput(
            source=raw.source, topic=raw.topic, partition=raw.partition,
            first_offset=raw.offsets[0] if raw.offsets else -1, next_offset=raw.next_offset,
            rows={**table_rows, self.dead_table: dead},
            records_in=len(raw), records_accepted=accepted, records_dead=dead.num_rows, records_dropped=dropped,
            dead_by_reason=by_reason, stage_inputs=stage_inputs,
        )

    def _stage_inputs(self, raw: RawBatch, rows: pa.Table) -> list[StageInput]:
        """One input per shard (empty ones too, so every shard hears of the position)."""
        n = self.trace_step.shards
        shard_of = trace_shards(rows.column("trace_id"), n, raw.partition)
        parts = split_by_shard(rows, shard_of, n)
        now = max(raw.timestamps_ms) if raw.timestamps_ms else 0
        kind = "spans" if self.signal == "span" else "logs"
        first = raw.offsets[0] if raw.offsets else -1
        return [StageInput(TRACE, k, kind, parts[k], raw.topic, raw.partition, first, raw.next_offset, now, raw.topic_partitions)
                for k in range(n)]


class PipelineGraph:
    """All flows of a spec, by source name."""

    def __init__(self, spec: PipelineSpec):
        self.spec = spec
        self.flows = {f.source: CompiledFlow(spec, f) for f in spec.flows}

    @property
    def table_names(self) -> list[str]:
        names: list[str] = []
        for f in self.flows.values():
            for t in f.tables:
                if t not in names:
                    names.append(t)
        return names

    def tables_for_topic(self) -> dict[str, list[str]]:
        """Tables each source topic feeds (its sink table and the dead letters)."""
        return self.tables_by_topic(self.spec)

    @staticmethod
    def tables_by_topic(spec: PipelineSpec) -> dict[str, list[str]]:
        """Like :meth:`tables_for_topic`, without building the transforms."""
        out: dict[str, list[str]] = {}
        for f in spec.flows:
            topic = spec.source(f.source).topic_name  # a pattern source's topics are known only to the Kafka source
            out.setdefault(topic, [])
            tables = ["spans", "traces", "metrics"] if spec.source(f.source).signal == "span" else [f.sink.table]
            for t in (*tables, spec.dead_letters.table):
                if t not in out[topic]:
                    out[topic].append(t)
        return out

    def process(self, raw: RawBatch) -> FlowOutput:
        return self.flows[raw.source].process(raw)
