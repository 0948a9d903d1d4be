"""Build the Bytewax dataflow for a spec.

Operators (each consumes → emits):
- ``input``: :class:`EmbeddedBytewaxSource` → one :class:`RawBatch` per item, one
  source partition per topic partition, resumed at the positions the tables record;
- ``process``: ``map`` hosting :class:`pipelines.graph.PipelineGraph` → :class:`FlowOutput`;
- ``iceberg``: :class:`IcebergBytewaxSink`, one :class:`sinks.iceberg.IcebergSink` per
  worker, committing by rows and seconds and on close.
Bytewax's own recovery store is not needed: the Iceberg snapshot summaries are the
checkpoint (see ``sinks.iceberg``)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Iterator

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from pipelines.graph import PipelineGraph
from pipelines.spec import PipelineSpec
from runners.stats import STATS
from sinks.iceberg import IcebergSink
from sources.generator import EmbeddedSource
from transforms.batch import RawBatch


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


class _IcebergPartition(StatelessSinkPartition):
    def __init__(self, spec: PipelineSpec, tables: list[str]):
        self.sink = IcebergSink(spec, tables)

    def write_batch(self, items) -> None:
        for out in items:
            self.sink.write(out)

    def close(self) -> None:
        self.sink.close()
        STATS.add_commits(self.sink.stats)


class IcebergBytewaxSink(DynamicSink):
    def __init__(self, spec: PipelineSpec, tables: list[str]):
        self.spec = spec
        self.tables = tables

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _IcebergPartition:
        return _IcebergPartition(self.spec, self.tables)


def build_flow(spec: PipelineSpec, source, name: str = "obsflow") -> Dataflow:
    """The dataflow for ``spec`` reading ``source`` (a Bytewax source of RawBatch)."""
    graph = PipelineGraph(spec)

    def process(raw: RawBatch):
        out = graph.process(raw)
        STATS.add_output(out)
        return out

    flow = Dataflow(name)
    raw = op.input("input", flow, source)
    outs = op.map("process", raw, process)
    op.output("iceberg", outs, IcebergBytewaxSink(spec, graph.table_names))
    return flow
