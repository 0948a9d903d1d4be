"""What every runner shares: the run request, the source it reads, where it resumes, and
the summary it prints."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from pipelines.graph import PipelineGraph
from pipelines.spec import PipelineSpec, ValidateStep
from sinks.iceberg import IcebergSink
from sources.generator import EmbeddedSource


@dataclass
class RunRequest:
    """One run of a spec on an engine.

    ``count`` bounds each embedded source (records per source); ``duration_s`` bounds
    the run by wall time instead (the embedded streams are then unbounded).

    With ``source="kafka"``: ``bounded`` reads every partition up to the high watermark
    seen at start and stops; otherwise the run is unbounded and ends after
    ``duration_s`` seconds or about ``max_records`` records (whole batches), or never.
    """

    spec: PipelineSpec
    runner: str = "bytewax"
    source: str = "embedded"
    count: int | None = 100_000
    duration_s: float | None = None
    seed: int = 42
    start_ms: int | None = None
    rate_per_s: float = 2000.0
    bad_fraction: float = 0.01
    batch_size: int = 5000
    source_override: object | None = None  # a prepared source (benchmarks, tests)
    bounded: bool = False
    max_records: int | None = None
    beam_options: list[str] | None = None  # extra Beam pipeline options (e.g. --runner=FlinkRunner --streaming)


@dataclass
class RunResult:
    runner: str
    seconds: float
    records_in: int
    records_accepted: int
    records_dead: int
    records_dropped: int
    dead_by_reason: dict[str, int]
    rows_by_table: dict[str, int]
    resumed_from: dict[str, int] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.records_in / self.seconds if self.seconds else 0.0


def embedded_source(req: RunRequest) -> EmbeddedSource:
    if req.source_override is not None:
        return req.source_override
    spec = req.spec
    max_bytes = 65536
    for f in spec.flows:
        for s in f.steps:
            if isinstance(s, ValidateStep):
                max_bytes = s.max_bytes
    start = req.start_ms if req.start_ms is not None else (int(time.time() * 1000) // 60_000) * 60_000
    sources = [s if s.topic is not None else s.model_copy(update={"topic": s.topic_name}) for s in spec.sources]
    return EmbeddedSource(sources, count=req.count if req.count is not None else -1, seed=req.seed, start_ms=start,
                          rate_per_s=req.rate_per_s, bad_fraction=req.bad_fraction, batch_size=req.batch_size,
                          max_bytes=max_bytes, deadline=(time.monotonic() + req.duration_s) if req.duration_s else None)


def kafka_source(req: RunRequest):
    """The Kafka source of a run (its deadline and record budget from the request)."""
    from sources.kafka import KafkaSource

    if req.source_override is not None:
        return req.source_override
    return KafkaSource(req.spec, deadline=(time.time() + req.duration_s) if req.duration_s else None,
                       max_records=req.max_records)


def kafka_plan(req: RunRequest):
    """``(source, ranges, resume)``: the partitions to read, from the positions the
    tables record (else each source's ``starting_position``), bounded if asked."""
    source = kafka_source(req)
    tables = source.tables_by_topic()  # discovers partitions: fails early on a missing topic / no broker
    resume = resume_positions(req.spec, tables)
    return source, source.plan(resume, bounded=req.bounded), resume


def resume_positions(spec: PipelineSpec, graph_tables: dict[str, list[str]] | None = None) -> dict[str, int]:
    """Where each ``topic:partition`` resumes, read from the tables' latest snapshots.
    ``graph_tables`` maps each topic to the tables it feeds (default: the spec's fixed topics)."""
    if graph_tables is None:
        graph_tables = {}
        for f in spec.flows:  # like PipelineGraph.tables_by_topic, with the embedded topic of pattern sources
            tables = graph_tables.setdefault(spec.source(f.source).topic_name, [])
            tables.extend(t for t in (f.sink.table, spec.dead_letters.table) if t not in tables)
    names = sorted({t for ts in graph_tables.values() for t in ts})
    sink = IcebergSink(spec, names)
    return sink.resume_offsets(graph_tables)
