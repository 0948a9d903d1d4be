"""``obsflow run --runner bytewax --processes P --workers-per-process W [--process-id I --addresses A,B]``: a Bytewax cluster."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from runners.cli.common import UsageError, int_at_least
from runners.cli.tables import cmd_tables


def wants_cluster(args) -> bool:
    return args.runner == "bytewax" and (
        args.processes > 1 or args.workers_per_process > 1 or args.process_id is not None
    )


def cluster_usage_problem(args) -> str | None:
    """The one-line problem of the cluster flags (``--process-id`` / ``--addresses``), or None;
    checked before any service is contacted."""
    if args.process_id is None:
        return None
    if not args.addresses:
        return "obsflow run: --process-id needs --addresses (host:port of every process, comma-separated)"
    addresses = [a.strip() for a in args.addresses.split(",") if a.strip()]
    if args.process_id >= len(addresses):
        return f"obsflow run: --process-id {args.process_id}: expected 0..{len(addresses) - 1} (one per address in --addresses)"
    return None


def cmd_run_cluster(args) -> int:
    """``obsflow run --runner bytewax`` with processes / workers: a Bytewax cluster."""
    from runners.bytewax.cluster import ClusterRun, launch, run_process

    problem = cluster_usage_problem(args)
    if problem is not None:
        raise UsageError(problem)
    addresses = [a.strip() for a in (args.addresses or "").split(",") if a.strip()]
    run = ClusterRun(
        spec=str(Path(args.spec).resolve()),
        warehouse=args.warehouse,
        source=args.source,
        bounded=args.bounded,
        duration_s=args.duration,
        max_records=args.max_records,
        count=None if args.duration else args.count,
        seed=args.seed,
        rate_per_s=args.rate,
        bad_fraction=args.bad_fraction,
        batch_size=args.batch_size,
    )
    started = time.monotonic()
    if args.process_id is not None:
        print(
            f"obsflow: process {args.process_id} of {len(addresses)} × {args.workers_per_process} workers", flush=True
        )
        run_process(run, args.process_id, addresses, args.workers_per_process)
        print(f"process {args.process_id} finished in {time.monotonic() - started:.1f}s")
        return 0
    print(
        f"obsflow: running on a Bytewax cluster of {args.processes} processes × {args.workers_per_process} workers "
        f"from {args.source}",
        flush=True,
    )
    rc = launch(run, args.processes, args.workers_per_process)
    print(f"\ncluster finished in {time.monotonic() - started:.1f}s ({'ok' if rc == 0 else 'a process failed'})\n")
    cmd_tables(args)
    return rc


def add_run_options(r: argparse.ArgumentParser) -> None:
    g = r.add_argument_group("Bytewax cluster")
    g.add_argument(
        "--processes", type=int_at_least(1), default=1, help="bytewax: processes started on this machine (default 1)"
    )
    g.add_argument("--workers-per-process", type=int_at_least(1), default=1, help="bytewax: worker threads per process")
    g.add_argument(
        "--process-id", type=int_at_least(0), help="bytewax: run only this process of a cluster spread over machines"
    )
    g.add_argument("--addresses", help="bytewax: host:port of every process, comma-separated, the same on each")
