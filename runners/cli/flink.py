"""``obsflow submit`` / ``jobs`` / ``cancel``: the pipeline on a Flink session cluster
(Beam's FlinkRunner, detached) and its jobs through Flink's REST API.

``--flink-master`` defaults to ``$OBSFLOW_FLINK_MASTER``; ``--worker-pool`` to
``$OBSFLOW_BEAM_WORKER_POOL`` (else ``localhost:50000``). ``submit`` prints the job id on
stdout and, on stderr, the run id the job's commits name in their counters
(``obsflow.stats``; ``$OBSFLOW_RUN_ID`` when set, else a new one)."""

from __future__ import annotations

import os
import sys
import time
from typing import TYPE_CHECKING

from runners.cli.common import (
    UsageError,
    add_common,
    int_at_least,
    load_spec_args,
    number,
    preflight,
    print_table,
    spec_arg,
)

if TYPE_CHECKING:
    from runners.beam.flink import Submitted

MASTER_ENV = "OBSFLOW_FLINK_MASTER"


def flink_master(args) -> str:
    m = args.flink_master or os.environ.get(MASTER_ENV)
    if not m:
        raise UsageError(
            f"obsflow {args.command}: --flink-master HOST:PORT (Flink's REST address) or ${MASTER_ENV} is required"
        )
    return m


def cmd_submit(args) -> int:
    from runners.beam.flink import submit

    if args.runner != "flink":
        raise UsageError(
            f"obsflow submit: --runner: only flink submits to a cluster (got {args.runner!r}); "
            f"for Bytewax use `obsflow run --runner bytewax --processes N`"
        )
    spec = load_spec_args(args)
    master = flink_master(args)
    preflight(spec, reads_kafka=True, spec_arg=spec_arg(args))
    print(
        f"obsflow: submitting {spec.name} to Flink at {master} (parallelism {args.parallelism})",
        file=sys.stderr,
        flush=True,
    )
    sub = submit(
        spec,
        master,
        parallelism=args.parallelism,
        job_name=args.job_name,
        worker_pool=args.worker_pool,
        job_server_jar=args.job_server_jar,
        job_endpoint=args.job_endpoint,
        timeout=args.timeout,
    )  # SubmitError: exit 1
    print("\n".join(submit_report(sub)), file=sys.stderr)
    print(sub.job.jid, flush=True)
    # the job belongs to the cluster now: stop the job server this process started (it only
    # translated and submitted the job; Flink keeps running it) and leave at once, skipping
    # Beam's exit hooks, which would wait on the job server client
    sys.stdout.flush()
    sys.stderr.flush()
    stop_children()
    os._exit(0)


def submit_report(sub: Submitted) -> list[str]:
    """What ``obsflow submit`` tells its user on stderr about a submitted job: the job, its
    positions, and the run id every commit of the job names in its counters (the UI's
    pipeline health and ``obsflow.stats`` group counters by it). Guarantees: the second line
    is exactly ``run id <sub.run_id>``."""
    resumed = ", ".join(f"{k}@{v}" for k, v in sorted(sub.resumed_from.items())) or "source starting positions"
    return [
        f"job {sub.job.jid} {sub.job.state} as {sub.job_name!r}: {sub.partitions} partitions from {resumed} "
        f"(submitted in {sub.seconds:.0f}s)",
        f"run id {sub.run_id}",
        "  (the job's counters in obsflow.stats and in `obsflow ui` carry it; "
        "set $OBSFLOW_RUN_ID before submitting to choose it)",
    ]


def stop_children(grace_s: float = 10.0) -> list[int]:
    """Terminate this process's child processes (Beam's job-server JVM), SIGKILL after
    ``grace_s``; return their pids. Without this, every ``obsflow submit`` would leave an
    orphaned JVM behind."""
    import signal
    from pathlib import Path

    me = str(os.getpid())
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[1] == me:  # field 4 of /proc/PID/stat: the parent pid
            kids.append(int(stat.parent.name))
    for pid in kids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace_s
    for pid in kids:
        while time.monotonic() < deadline:
            try:
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    break
            except ChildProcessError:
                break
            time.sleep(0.1)
        else:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
    return kids


def cmd_jobs(args) -> int:
    from runners.flink_rest import FlinkRest

    jobs = FlinkRest(flink_master(args)).jobs()
    if args.state:
        jobs = [j for j in jobs if j.state == args.state.upper()]
    if args.format == "json":
        import json

        for j in jobs:
            print(
                json.dumps(
                    {
                        "id": j.jid,
                        "name": j.name,
                        "state": j.state,
                        "start_time": j.start_time,
                        "start_time_ms": j.start_time_ms,
                        "duration_ms": j.duration_ms,
                    }
                )
            )
        return 0
    rows = [("id", "name", "state", "start time (UTC)", "duration")]
    rows += [
        (j.jid, j.name, j.state, j.start_time, f"{j.duration_ms / 1000:.0f}s" if j.duration_ms >= 0 else "-")
        for j in jobs
    ]
    print_table(rows)
    return 0


def cmd_cancel(args) -> int:
    from runners.flink_rest import FlinkRest

    rest = FlinkRest(flink_master(args))
    rest.cancel(args.job_id)  # FlinkRestError: exit 2 for an unknown job, else 1
    if args.wait <= 0:
        print(f"{args.job_id} cancelling")
        return 0
    state = rest.wait_for_state(args.job_id, {"CANCELED"}, timeout=args.wait)
    print(f"{args.job_id} {state}")
    return 0 if state == "CANCELED" else 1


def add_parser(sub) -> None:
    """``obsflow submit``, ``jobs`` and ``cancel``."""
    s = sub.add_parser(
        "submit", help="submit the streaming pipeline to a Flink session cluster (Beam FlinkRunner), detached"
    )
    add_common(s)
    s.add_argument("--runner", default="flink", choices=["flink"])
    s.add_argument("--flink-master", help=f"Flink REST address host:port (default ${MASTER_ENV})")
    s.add_argument(
        "--parallelism",
        type=int_at_least(1),
        default=1,
        help="Flink parallelism (up to the number of Kafka partitions)",
    )
    s.add_argument(
        "--worker-pool",
        help="Beam Python worker pool host:port the TaskManagers reach (EXTERNAL environment; "
        "default $OBSFLOW_BEAM_WORKER_POOL or localhost:50000)",
    )
    s.add_argument(
        "--job-server-jar",
        help="Beam Flink job server jar (default: fetched by infra.flink, or $OBSFLOW_FLINK_JOB_SERVER_JAR)",
    )
    s.add_argument(
        "--job-endpoint", help="use a running Beam job server (host:port of its job service) instead of starting one"
    )
    s.add_argument("--job-name", help="Flink job name (default obsflow-<spec name>-<random>)")
    s.add_argument("--timeout", type=number(0, lo_open=True), default=300.0, help="seconds to wait for RUNNING")
    s.set_defaults(func=cmd_submit)

    j = sub.add_parser("jobs", help="list the Flink cluster's jobs (REST API)")
    j.add_argument("--flink-master", help=f"Flink REST address host:port (default ${MASTER_ENV})")
    j.add_argument("--state", help="only jobs in this state (RUNNING, CANCELED, ...)")
    j.add_argument("--format", default="table", choices=["table", "json"])
    j.set_defaults(func=cmd_jobs)

    c = sub.add_parser("cancel", help="cancel a Flink job (REST API)")
    c.add_argument("job_id")
    c.add_argument("--flink-master", help=f"Flink REST address host:port (default ${MASTER_ENV})")
    c.add_argument("--wait", type=number(0), default=60.0, help="seconds to wait for CANCELED (0: return at once)")
    c.set_defaults(func=cmd_cancel)
