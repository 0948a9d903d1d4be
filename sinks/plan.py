"""Who writes which table: the job's write plan, built once from the spec by the pipeline
layer (:func:`pipelines.graph.write_plan`) and handed to every :class:`sinks.iceberg.IcebergSink`
of the job, so the sink does not re-derive the topology.

A table's position for a ``topic:partition`` is the smallest over everything that feeds the
table from that topic: the flows that write it directly (stateless writes, their batch's
next offset) and every shard of every stateful stage that writes it (each shard reports its
positions)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StageWrites:
    """A stateful stage as the sink sees it: its name, its shard count, the tables it writes
    and the topics it consumes."""

    name: str
    shards: int
    tables: tuple[str, ...]
    topics: tuple[str, ...]


@dataclass(frozen=True)
class WritePlan:
    """Who writes which table. ``stages``: the stateful stages by name; ``topics_of``: the
    topics that feed each table; ``stateless``: the ``(table, topic)`` pairs that flows
    write directly (not through a stage)."""

    stages: dict[str, StageWrites]
    topics_of: dict[str, frozenset[str]]
    stateless: frozenset[tuple[str, str]]

    def staged_tables(self) -> set[str]:
        """The tables some stateful stage writes (one writer each: it must hear every
        shard's position reports)."""
        return {t for s in self.stages.values() for t in s.tables}
