"""Run a spec on Bytewax in this process."""

from __future__ import annotations

from pipelines.graph import PipelineGraph
from pipelines.prebuilt import PrebuiltGraph
from runners.bytewax.flow import EmbeddedBytewaxSource, KafkaBytewaxSource, build_flow, run_flow
from runners.job import RunRequest, catch_up_sources, catch_up_spec, embedded_source, kafka_plan, resume_positions
from sinks.iceberg import OpenTables
from runners.stats import STATS


def run(req: RunRequest) -> dict[str, int]:
    """Run until the source is exhausted (embedded count, Kafka ``bounded``) or its
    duration / record budget ends; return the positions the run resumed from. Tables
    behind the others first catch up alone (:class:`runners.job.CatchUp`).

    The run's graph is built on a thread from the start (:class:`PrebuiltGraph`: the
    lookup tables load while the positions are read and the consumers start), and the
    catalog and tables its positions are read from are those its sink writes."""
    graph = PrebuiltGraph(req.spec, counters=STATS)
    opened: OpenTables | None = OpenTables.open(req.spec, PipelineGraph.names_of(req.spec))
    catch_ups = catch_up_sources(req, opened)
    if catch_ups:
        opened = None  # their commits move the tables: read again after them
    for cu, src in catch_ups:
        if req.source == "kafka":
            source, ranges = src
            flow_source: KafkaBytewaxSource | EmbeddedBytewaxSource = KafkaBytewaxSource(source, ranges)
        else:
            flow_source = EmbeddedBytewaxSource(src, {})
        run_flow(build_flow(catch_up_spec(req.spec), flow_source, tables=[cu.table], dedupe=True))
    if req.source == "kafka":
        opened = opened or OpenTables.open(req.spec, PipelineGraph.names_of(req.spec))
        source, ranges, resume = kafka_plan(req, opened)
        tick = max(0.2, min(1.0, req.spec.storage.commit.max_seconds.total_seconds() / 2))
        _run(build_flow(req.spec, KafkaBytewaxSource(source, ranges, tick_s=tick), graph=graph, opened=opened), graph)
        return resume
    opened = opened or OpenTables.open(req.spec, PipelineGraph.names_of(req.spec))
    resume = resume_positions(req.spec, opened=opened)
    source = EmbeddedBytewaxSource(embedded_source(req), resume)
    _run(build_flow(req.spec, source, graph=graph, opened=opened), graph)
    return resume


def _run(flow, graph: PrebuiltGraph) -> None:
    """:func:`run_flow`; if building ``graph`` failed, that error rather than the engine's."""
    try:
        run_flow(flow)
    except Exception:
        failed = graph.failure()
        if failed is not None:
            raise failed from None
        raise
