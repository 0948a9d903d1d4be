"""Run a spec on Bytewax in this process."""

from __future__ import annotations

from bytewax.testing import run_main

from runners.bytewax.flow import EmbeddedBytewaxSource, build_flow
from runners.job import RunRequest, embedded_source, resume_positions


def run(req: RunRequest) -> dict[str, int]:
    """Run until the embedded source is exhausted (or its duration ends); return the
    positions the run resumed from."""
    resume = resume_positions(req.spec)
    source = EmbeddedBytewaxSource(embedded_source(req), resume)
    run_main(build_flow(req.spec, source))
    return resume
