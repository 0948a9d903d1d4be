"""Run a spec on Beam's DirectRunner in this process."""

from __future__ import annotations

import apache_beam as beam

from runners.beam.pipeline import beam_run_id, build_kafka_pipeline, build_pipeline, direct_options
from runners.job import RunRequest, catch_up_sources, catch_up_spec, embedded_source, kafka_plan, resume_positions


def run(req: RunRequest) -> dict[str, int]:
    """Run on the DirectRunner (or the runner ``req.beam_options`` name); return the
    positions the run resumed from. Tables behind the others first catch up alone
    (:class:`runners.job.CatchUp`), in a bounded run of their own. Every pipeline of the
    request names one run id (:func:`runners.beam.pipeline.beam_run_id`): they count into
    this process's one ``STATS``, so their commits' counters belong to one run."""
    run_id = beam_run_id()
    for cu, src in catch_up_sources(req):
        with beam.Pipeline(options=direct_options(req.beam_options)) as p:
            if req.source == "kafka":
                cu_source, cu_ranges = src
                build_kafka_pipeline(
                    p,
                    catch_up_spec(req.spec),
                    cu_source,
                    cu_ranges,
                    bounded=True,
                    tables=[cu.table],
                    dedupe=True,
                    run_id=run_id,
                )
            else:
                build_pipeline(p, catch_up_spec(req.spec), src, {}, tables=[cu.table], dedupe=True, run_id=run_id)
    if req.source == "kafka":
        source, ranges, resume = kafka_plan(req)
        with beam.Pipeline(options=direct_options(req.beam_options)) as p:
            build_kafka_pipeline(p, req.spec, source, ranges, bounded=req.bounded, run_id=run_id)
        return resume
    resume = resume_positions(req.spec)
    with beam.Pipeline(options=direct_options()) as p:
        build_pipeline(p, req.spec, embedded_source(req), resume, run_id=run_id)
    return resume
