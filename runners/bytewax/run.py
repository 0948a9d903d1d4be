"""Run a spec on Bytewax in this process."""

from __future__ import annotations

from runners.bytewax.flow import EmbeddedBytewaxSource, KafkaBytewaxSource, build_flow, run_flow
from runners.job import RunRequest, catch_up_sources, catch_up_spec, embedded_source, kafka_plan, resume_positions


def run(req: RunRequest) -> dict[str, int]:
    """Run until the source is exhausted (embedded count, Kafka ``bounded``) or its
    duration / record budget ends; return the positions the run resumed from. Tables
    behind the others first catch up alone (:class:`runners.job.CatchUp`)."""
    for cu, src in catch_up_sources(req):
        if req.source == "kafka":
            source, ranges = src
            flow_source: KafkaBytewaxSource | EmbeddedBytewaxSource = KafkaBytewaxSource(source, ranges)
        else:
            flow_source = EmbeddedBytewaxSource(src, {})
        run_flow(build_flow(catch_up_spec(req.spec), flow_source, tables=[cu.table], dedupe=True))
    if req.source == "kafka":
        source, ranges, resume = kafka_plan(req)
        tick = max(0.2, min(1.0, req.spec.storage.commit.max_seconds.total_seconds() / 2))
        run_flow(build_flow(req.spec, KafkaBytewaxSource(source, ranges, tick_s=tick)))
        return resume
    resume = resume_positions(req.spec)
    source = EmbeddedBytewaxSource(embedded_source(req), resume)
    run_flow(build_flow(req.spec, source))
    return resume
