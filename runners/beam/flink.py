"""Submit the streaming pipeline to a Flink session cluster through Beam's FlinkRunner.

    job = submit(spec, "flink-jobmanager:8081", parallelism=4, worker_pool="localhost:50000")
    print(job.jid)          # the Flink job id; the job keeps running after submit returns

What runs where:

* **The job**: Kafka (``ReadKafkaPartition``, the splittable unbounded read of
  :mod:`runners.beam.pipeline`, one element per topic partition, started at the positions
  the Iceberg tables record) → the flows → Iceberg (and the stateful trace stage when the
  spec has one), built by :func:`runners.beam.pipeline.build_kafka_pipeline` with
  ``--streaming``. Commits happen at the end of every bundle, so a cancelled or crashed
  job resumes from the tables' positions without loss or duplicates.
* **The job server** (Beam's portable → Flink translator, a Java process): either started
  here from ``--flink_job_server_jar`` (``job_server_jar``; default
  ``$OBSFLOW_FLINK_JOB_SERVER_JAR``, else the jar ``python -m infra.flink fetch`` cached:
  :func:`runners.flink_job_server.cached_job_server_jar`), or one
  already running, given as ``job_endpoint`` (``host:port`` of its gRPC job service,
  e.g. a Kubernetes Deployment of ``beam-runners-flink-<minor>-job-server``).
* **The Python SDK workers**: ``--environment_type=EXTERNAL`` — Beam's worker pool
  (``python -m apache_beam.runners.worker.worker_pool_main --service_port=50000``,
  started from an environment where obsflow is installed, with the pseudonym key and
  storage credentials in its environment) reachable from every TaskManager at
  ``worker_pool`` (on Kubernetes: a sidecar container in the TaskManager pod,
  ``localhost:50000``). See docs/running-at-scale.md.

Detached: the submitting process only has to live until Flink reports the job RUNNING
(the job server hands the job graph to the JobManager; a session cluster does not tie a
job to its client), then it returns the job id and exits. Stop the job with
``obsflow cancel JOB_ID`` (Flink's REST API, :mod:`runners.flink_rest`); a resubmission
resumes from the positions in the tables.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from dataclasses import dataclass

from core.errors import ObsflowError
from pipelines.spec import PipelineSpec
from runners.flink_rest import FlinkRest, JobInfo

log = logging.getLogger(__name__)

WORKER_POOL_ENV = "OBSFLOW_BEAM_WORKER_POOL"
DEFAULT_WORKER_POOL = "localhost:50000"
FLINK_VERSION_ENV = "OBSFLOW_FLINK_MINOR"


class SubmitError(ObsflowError, RuntimeError):
    """The job did not reach RUNNING (the message carries Flink's / Beam's reason)."""

    what = "submit: "


@dataclass
class Submitted:
    job: JobInfo
    job_name: str
    resumed_from: dict[str, int]
    partitions: int
    seconds: float
    #: the run id every commit of the job names in its counters (``obsflow.stats``), whichever
    #: SDK worker process made it (:func:`runners.beam.pipeline.beam_run_id`)
    run_id: str = ""


def flink_options(
    master: str,
    *,
    parallelism: int = 1,
    worker_pool: str | None = None,
    job_server_jar: str | None = None,
    job_endpoint: str | None = None,
    java: str | None = None,
    flink_version: str | None = None,
    job_name: str | None = None,
    extra: list[str] | None = None,
) -> list[str]:
    """Beam pipeline options for a streaming run on the Flink session cluster at ``master``
    (its REST ``host:port``)."""
    pool = worker_pool or os.environ.get(WORKER_POOL_ENV) or DEFAULT_WORKER_POOL
    opts = [
        "--streaming",
        f"--parallelism={parallelism}",
        "--environment_type=EXTERNAL",
        f"--environment_config={pool}",
    ]
    if job_name:
        opts.append(f"--job_name={job_name}")
    if job_endpoint:
        # a job server that is already running (it knows its Flink master from its own flags)
        opts += ["--runner=PortableRunner", f"--job_endpoint={job_endpoint}"]
    else:
        from runners import flink_job_server as located

        try:
            cached = None if job_server_jar else located.cached_job_server_jar()
        except located.FlinkSetupError as e:  # $OBSFLOW_FLINK_JOB_SERVER_JAR names no file
            raise SubmitError(str(e)) from e
        jar = job_server_jar or (str(cached) if cached is not None else None)
        if jar is None:
            raise SubmitError(
                f"no Beam Flink job server: none is cached in {located.job_server_dir()}. Give --job-endpoint "
                f"HOST:PORT of a running one, or --job-server-jar (or ${located.JAR_ENV}), or fetch it "
                "from a source checkout with `python -m infra.flink fetch`"
            )
        minor = flink_version or os.environ.get(FLINK_VERSION_ENV) or located.FLINK_MINOR
        opts += [
            "--runner=FlinkRunner",
            f"--flink_master={master}",
            f"--flink_version={minor}",
            f"--flink_job_server_jar={jar}",
        ]
        try:
            opts.append(f"--job_server_java_launcher={java or located.java_home() / 'bin' / 'java'}")
        except located.FlinkSetupError:
            pass  # `java` on PATH, Beam's default
    return opts + list(extra or [])


def submit(
    spec: PipelineSpec,
    master: str,
    *,
    parallelism: int = 1,
    job_name: str | None = None,
    worker_pool: str | None = None,
    job_server_jar: str | None = None,
    job_endpoint: str | None = None,
    timeout: float = 240.0,
    extra_options: list[str] | None = None,
) -> Submitted:
    """Plan the Kafka partitions from the tables' positions, submit the streaming job and
    return once Flink reports it RUNNING (raises :class:`SubmitError` if it fails first)."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from runners.beam.pipeline import beam_run_id, build_kafka_pipeline
    from runners.job import RunRequest, kafka_plan

    rest = FlinkRest(master)
    rest.overview()  # fail early (exit 3) when nothing answers at the address
    started = time.monotonic()
    not_before = int(time.time() * 1000) - 5_000
    job_name = job_name or f"obsflow-{spec.name}-{uuid.uuid4().hex[:8]}"
    source, ranges, resume = kafka_plan(RunRequest(spec=spec, runner="flink", source="kafka"))
    opts = flink_options(
        master,
        parallelism=parallelism,
        worker_pool=worker_pool,
        job_server_jar=job_server_jar,
        job_endpoint=job_endpoint,
        job_name=job_name,
        extra=extra_options,
    )
    p = beam.Pipeline(options=PipelineOptions(opts))
    run_id = beam_run_id()  # fixed here, pickled with the writers: the workers lack $OBSFLOW_RUN_ID
    build_kafka_pipeline(p, spec, source, ranges, bounded=False, run_id=run_id)
    result = p.run()  # the job server translates and hands the job to the JobManager
    try:
        job = rest.wait_for_named(job_name, {"RUNNING"}, timeout=timeout, not_before_ms=not_before)
    except TimeoutError as e:
        raise SubmitError(f"{e}; Beam says the job is {result.state}") from None
    if job.state != "RUNNING":
        raise SubmitError(f"Flink job {job.jid} ({job_name}) is {job.state}: {_failure(rest, job.jid)}")
    return Submitted(job, job_name, resume, len(ranges), time.monotonic() - started, run_id)


def _failure(rest: FlinkRest, jid: str) -> str:
    try:
        exc = rest.request("GET", f"/jobs/{jid}/exceptions")
        root = exc.get("root-exception") or ""
        return root.strip().splitlines()[0][:500] if root else "no exception recorded"
    except Exception as e:  # noqa: BLE001 - best effort
        return f"(exceptions not available: {e})"
