"""What every runner shares: the run request, the source it reads, where it resumes, and
the summary it prints."""

from __future__ import annotations

from typing import Any, cast
import time
from dataclasses import dataclass, field

from core.batch import DEFAULT_MAX_BYTES
from pipelines.graph import PipelineGraph
from pipelines.spec import PipelineSpec, ValidateStep
from runners import defaults
from runners.stats import STATS
from sinks.iceberg import OpenTables, resume_from
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
    runner: str = defaults.RUNNER
    source: str = "embedded"
    count: int | None = defaults.COUNT
    duration_s: float | None = None
    seed: int = defaults.SEED
    start_ms: int | None = None
    rate_per_s: float = defaults.RATE_PER_S
    bad_fraction: float = defaults.BAD_FRACTION
    batch_size: int = defaults.BATCH_SIZE
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
        return cast(EmbeddedSource, req.source_override)
    spec = req.spec
    max_bytes = DEFAULT_MAX_BYTES
    for f in spec.flows:
        for s in f.steps:
            if isinstance(s, ValidateStep):
                max_bytes = s.max_bytes
    start = req.start_ms if req.start_ms is not None else (int(time.time() * 1000) // 60_000) * 60_000
    sources = [s if s.topic is not None else s.model_copy(update={"topic": s.topic_name}) for s in spec.sources]
    return EmbeddedSource(
        sources,
        count=req.count if req.count is not None else -1,
        seed=req.seed,
        start_ms=start,
        rate_per_s=req.rate_per_s,
        bad_fraction=req.bad_fraction,
        batch_size=req.batch_size,
        max_bytes=max_bytes,
        deadline=(time.monotonic() + req.duration_s) if req.duration_s else None,
    )


def kafka_source(req: RunRequest):
    """The Kafka source of a run (its deadline and record budget from the request)."""
    from sources.kafka import KafkaSource

    if req.source_override is not None:
        return req.source_override
    return KafkaSource(
        req.spec,
        counters=STATS,
        deadline=(time.time() + req.duration_s) if req.duration_s else None,
        max_records=req.max_records,
    )


def kafka_plan(req: RunRequest, opened: OpenTables | None = None):
    """``(source, ranges, resume)``: the partitions to read, from the positions the
    tables record (else each source's ``starting_position``), bounded if asked.
    ``opened``: the run's catalog and tables, when it has opened them already."""
    source = kafka_source(req)
    tables = source.tables_by_topic()  # discovers partitions: fails early on a missing topic / no broker
    resume = resume_positions(req.spec, tables, opened)
    return source, source.plan(resume, bounded=req.bounded), resume


def resume_positions(
    spec: PipelineSpec, graph_tables: dict[str, list[str]] | None = None, opened: OpenTables | None = None
) -> dict[str, int]:
    """Where each ``topic:partition`` resumes, read from the tables' latest snapshots.
    ``graph_tables`` maps each topic to the tables it feeds (default: the spec's fixed topics);
    ``opened``: the catalog and tables to read them from (default: opened here; also when
    it lacks one of the tables)."""
    if graph_tables is None:
        graph_tables = {}
        for f in spec.flows:  # like PipelineGraph.tables_by_topic, with the embedded topic of pattern sources
            tables = graph_tables.setdefault(spec.source(f.source).topic_name, [])
            tables.extend(t for t in (f.sink.table, spec.dead_letters.table) if t not in tables)
    names = sorted({t for ts in graph_tables.values() for t in ts})
    if opened is None or not opened.has(names):
        opened = OpenTables.open(spec, names)
    return resume_from(opened.committed(), graph_tables)


# -- per-table effectively-once: tables behind the others catch up alone -----------------------------


@dataclass
class CatchUp:
    """A table whose recorded positions are behind those of other tables fed by the same
    topics (its commit failed for good while theirs landed): the run first reads, for
    that table alone, ``[start, end)`` of each partition where it lags (``end``: the
    furthest position any table of the topic recorded)."""

    table: str
    start: dict[str, int]
    end: dict[str, int]


def catch_up_plan(
    spec: PipelineSpec, graph_tables: dict[str, list[str]] | None = None, opened: OpenTables | None = None
) -> list[CatchUp]:
    """The :class:`CatchUp` of every lagging table, from the tables' latest snapshots
    (``graph_tables``: topic -> the tables it feeds, stage tables included; default the
    spec's fixed topics). Empty when every table of a topic recorded the same positions.

    Why: a restart resumes each topic from the smallest position over its tables and
    drops rows a table already holds by their source offset; rows without one (traces,
    rollups, RED metrics, sessions, alerts) cannot be told apart, so a table ahead of the
    others would get them twice. Catching the lagging table up alone, to where the others
    are, gives every table the same positions; the run then resumes from there.
    ``opened``: the catalog and tables to read the positions from (default: opened here;
    also when it lacks one of the tables)."""
    graph_tables = graph_tables if graph_tables is not None else PipelineGraph.tables_by_topic(spec)
    names = sorted({t for ts in graph_tables.values() for t in ts})
    if opened is None or not opened.has(names):
        opened = OpenTables.open(spec, names)
    committed = opened.committed()
    out: dict[str, CatchUp] = {}
    for topic, tables in graph_tables.items():
        keys = {k for t in tables for k in committed.get(t, {}) if k.rsplit(":", 1)[0] == topic}
        for k in sorted(keys):
            high = max(committed.get(t, {}).get(k, 0) for t in tables)
            for t in tables:
                pos = committed.get(t, {}).get(k, 0)
                if pos < high:
                    cu = out.setdefault(t, CatchUp(t, {}, {}))
                    cu.start[k], cu.end[k] = pos, high
    return [out[t] for t in sorted(out)]


def catch_up_spec(spec: PipelineSpec) -> PipelineSpec:
    """``spec`` without side outputs (alerts and dead letters to Kafka, Alertmanager): a
    catch-up re-derives rows for one table; what it would push was pushed the first time."""
    update: dict[str, Any] = {
        "outputs": spec.outputs.model_copy(update={"alerts_topic": None, "dead_letters_topic": None})
    }
    if spec.alerts is not None:
        update["alerts"] = spec.alerts.model_copy(update={"alertmanager_url": None})
    return spec.model_copy(update=update)


class RangeSource:
    """An embedded source restricted to ``[start, end)`` of the partitions in ``start``."""

    def __init__(self, source, start: dict[str, int], end: dict[str, int]):
        self.source, self.start, self.end = source, start, end

    def partitions(self):
        return [p for p in self.source.partitions() if p.key in self.start]

    def batches(self, part, start_offset: int = 0):
        end = self.end[part.key]
        for b in self.source.batches(part, max(start_offset, self.start[part.key])):
            if not b.offsets or b.offsets[0] >= end:
                return
            if b.next_offset > end:
                from pipelines.isolate import sub_batch

                b = sub_batch(b, 0, sum(1 for o in b.offsets if o < end))
            yield b


def catch_up_sources(req: RunRequest, opened: OpenTables | None = None) -> list[tuple[CatchUp, Any]]:
    """Each lagging table's catch-up and what it reads: for Kafka ``(KafkaSource,
    [PartitionRange])`` (a source of its own, outside the run's record budget), else a
    :class:`RangeSource` over the run's embedded source. ``opened``: the catalog and tables
    to read the positions from (see :func:`catch_up_plan`)."""
    if req.source == "kafka":
        from sources.kafka import KafkaSource, PartitionRange

        source = KafkaSource(req.spec, counters=STATS)
        by_name = PipelineGraph.tables_by_topic(req.spec)  # stage tables too, by the source's topic name
        graph_tables: dict[str, list[str]] = {}
        for part in source.partitions():  # a pattern source's topics are known only to the Kafka source
            graph_tables.setdefault(part.topic, by_name[req.spec.source(part.source).topic_name])
        plan = catch_up_plan(req.spec, graph_tables, opened)
        parts = {p.key: p for p in source.partitions()} if plan else {}
        return [
            (cu, (source, [PartitionRange(parts[k], s, cu.end[k]) for k, s in sorted(cu.start.items()) if k in parts]))
            for cu in plan
        ]
    plan = catch_up_plan(req.spec, opened=opened)
    return [(cu, RangeSource(embedded_source(req), cu.start, cu.end)) for cu in plan]
