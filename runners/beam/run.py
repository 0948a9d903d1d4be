"""Run a spec on Beam's DirectRunner in this process."""

from __future__ import annotations

import apache_beam as beam

from runners.beam.pipeline import build_pipeline, direct_options
from runners.job import RunRequest, embedded_source, resume_positions


def run(req: RunRequest) -> dict[str, int]:
    resume = resume_positions(req.spec)
    with beam.Pipeline(options=direct_options()) as p:
        build_pipeline(p, req.spec, embedded_source(req), resume)
    return resume
