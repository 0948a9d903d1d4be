"""Iceberg output for Bytewax with one sink partition per table, for any number of workers.

Why: an :class:`sinks.iceberg.IcebergSink` records in each commit the source positions
the table has fully received. With several workers, a per-worker sink only sees what its
own worker produced: flow outputs stay on the worker that read their Kafka partition
(fine), but the stateful stages' outputs are keyed by shard and land on whichever worker
owns the shard — and a stage table may record a position only when *every* shard has
reported it (:meth:`IcebergSink.write_stage`), which no per-worker sink ever sees.

So every output is split by stage table and routed to the one sink partition of that
table (:class:`IcebergTableSink`, a ``FixedPartitionedSink`` keyed by table name; Bytewax
puts each partition on exactly one worker of the cluster). The tables only flows write
(events, logs, dead letters) do not need it: each worker commits their rows itself
(:func:`runners.bytewax.flow.build_flow`), as a flow output's positions are its own
partition's; concurrent commits to one table conflict, and the retry commits the same
Parquet files again with merged positions. Routed to a stage table's partition:

* a flow output (:class:`pipelines.graph.FlowOutput`) goes, restricted to each table's
  rows, to that table's partition;
* a stage output (:class:`pipelines.stages.StageOutput`) goes to every table's partition
  (restricted to that table's rows, possibly none), so each stage table hears every
  shard's positions;
* a tick (idle source) goes to every partition, so commits by age happen with no data.

Decoding, validation, scrubbing and enrichment stay spread over all workers; only the
Arrow rows of a stage table travel to the worker that commits it. With one worker
nothing travels."""

from __future__ import annotations

import bytewax.operators as op
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from pipelines.spec import PipelineSpec
from runners.stats import STATS
from sinks.iceberg import IcebergSink, split_by_table
from sinks.plan import WritePlan


class _TablePartition(StatefulSinkPartition):
    def __init__(self, spec: PipelineSpec, table: str, plan: WritePlan, dedupe: bool = False):
        self.sink = IcebergSink(spec, [table], dedupe=dedupe, plan=plan, counters=STATS)

    def write_batch(self, items) -> None:
        for out in items:
            self.sink.accept(out)

    def snapshot(self) -> None:
        return None  # positions live in the Iceberg snapshot summaries

    def close(self) -> None:
        from runners.bytewax.flow import close_sink

        close_sink(self.sink)


class IcebergTableSink(FixedPartitionedSink):
    """One partition per table; items are ``(table, piece)``."""

    def __init__(self, spec: PipelineSpec, tables: list[str], plan: WritePlan, dedupe: bool = False):
        self.spec = spec
        self.tables = sorted(tables)
        self.plan = plan
        self.dedupe = dedupe

    def list_parts(self) -> list[str]:
        return list(self.tables)

    def part_fn(self, item_key: str) -> int:
        return self.tables.index(item_key)

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _TablePartition:
        return _TablePartition(self.spec, for_part, self.plan, self.dedupe)


def output_by_table(
    step_id: str, outs, spec: PipelineSpec, tables: list[str], plan: WritePlan, dedupe: bool = False
) -> None:
    """``op.output`` of every flow / stage output and tick, routed to its table's partition."""
    keyed = op.flat_map(f"{step_id}_by_table", outs, split_by_table(sorted(tables)))
    op.output(step_id, keyed, IcebergTableSink(spec, tables, plan, dedupe))
