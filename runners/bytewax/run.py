"""Run a spec on Bytewax in this process."""

from __future__ import annotations

from bytewax.testing import run_main

from runners.bytewax.flow import EmbeddedBytewaxSource, KafkaBytewaxSource, build_flow
from runners.job import RunRequest, embedded_source, kafka_plan, resume_positions


def run(req: RunRequest) -> dict[str, int]:
    """Run until the source is exhausted (embedded count, Kafka ``bounded``) or its
    duration / record budget ends; return the positions the run resumed from."""
    if req.source == "kafka":
        source, ranges, resume = kafka_plan(req)
        tick = max(0.2, min(1.0, req.spec.storage.commit.max_seconds / 2))
        run_main(build_flow(req.spec, KafkaBytewaxSource(source, ranges, tick_s=tick)))
        return resume
    resume = resume_positions(req.spec)
    source = EmbeddedBytewaxSource(embedded_source(req), resume)
    run_main(build_flow(req.spec, source))
    return resume
