"""``obsflow run``: the pipeline on Bytewax or Beam (in this process, or a Bytewax cluster
through :mod:`runners.cli.cluster`), from the embedded source or Kafka, then the run's
summary and the tables."""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time

from runners import defaults
from runners.cli.cluster import add_run_options, cluster_usage_problem, cmd_run_cluster, wants_cluster
from runners.cli.common import (
    UsageError,
    add_common,
    fmt,
    int_at_least,
    load_spec_args,
    number,
    port,
    preflight,
    progress,
    spec_arg,
)
from runners.cli.tables import cmd_tables


def cmd_run(args) -> int:
    from core.stats import STATS
    from runners.job import RunRequest

    problem = cluster_usage_problem(args) if wants_cluster(args) else None
    if problem is not None:  # a wrong flag is named before any service is contacted
        raise UsageError(problem)
    spec = load_spec_args(args)
    if os.environ.get(spec.privacy.pseudonym_key_env) is None and spec.privacy.pseudonym_key is None:
        if args.dev_key:
            os.environ[spec.privacy.pseudonym_key_env] = "obsflow-development-key-not-for-production"
            print(
                f"note: {spec.privacy.pseudonym_key_env} not set; using a development pseudonym key (--dev-key)",
                file=sys.stderr,
            )
    kafka = args.source == "kafka"
    if not kafka and (args.bounded or args.max_records is not None):
        raise UsageError("obsflow run: --bounded and --max-records apply to --source kafka")
    preflight(spec, reads_kafka=kafka, spec_arg=spec_arg(args))
    from runners.query import remember_spec

    remember_spec(args.spec, args.warehouse, spec)  # the first `obsflow query` after the run starts fast
    if wants_cluster(args):
        return cmd_run_cluster(args)
    req = RunRequest(
        spec=spec,
        runner=args.runner,
        source=args.source,
        count=None if args.duration else args.count,
        duration_s=args.duration,
        seed=args.seed,
        rate_per_s=args.rate,
        bad_fraction=args.bad_fraction,
        batch_size=args.batch_size,
        bounded=args.bounded,
        max_records=args.max_records,
    )
    if args.runner == "bytewax":
        from runners.bytewax.run import run
    elif args.runner == "beam":
        from runners.beam.run import run
    else:
        raise UsageError(f"obsflow run: --runner: expected bytewax or beam, got {args.runner!r}")
    STATS.reset()
    metrics = None
    if args.metrics_port is not None:
        from runners.metrics import serve

        try:
            metrics = serve(args.metrics_port, args.metrics_host)
        except OSError as e:  # a port in use, an address not on this machine
            raise UsageError(
                f"obsflow run: --metrics-host/--metrics-port: cannot serve on "
                f"{args.metrics_host}:{args.metrics_port}: {e.strerror or e}"
            ) from None
        print(f"obsflow: metrics on {metrics.url}", flush=True)
    started = time.monotonic()
    stop = threading.Event()
    show = args.progress or (args.progress is None and sys.stderr.isatty())
    th = threading.Thread(target=progress, args=(stop, started, sys.stderr), daemon=True) if show else None
    if th:
        th.start()
    if kafka:
        bounds = [
            b
            for b in (
                "up to the high watermarks at start" if args.bounded else "",
                f"for {args.duration}s" if args.duration else "",
                f"about {fmt(args.max_records)} records" if args.max_records is not None else "",
            )
            if b
        ]
        print(
            f"obsflow: running {spec.name} on {args.runner} from Kafka at {spec.kafka.bootstrap} "
            f"({', '.join(bounds) or 'until stopped'})",
            flush=True,
        )
    else:
        print(
            f"obsflow: running {spec.name} on {args.runner} from the embedded source "
            f"({'%s records per source' % fmt(args.count) if not args.duration else '%ss' % args.duration}, seed {args.seed})"
        )
    try:
        resumed = run(req)
        from sinks.kafka import flush_all

        flush_all()  # alerts still in flight
    finally:
        stop.set()
        if th:
            th.join()
        if metrics is not None:
            metrics.stop()
    secs = time.monotonic() - started
    print(
        f"\nrun finished in {secs:.1f}s: {fmt(STATS.records_in)} records in ({fmt(STATS.records_in / secs if secs else 0)}/s), "
        f"{fmt(STATS.records_accepted)} accepted, {fmt(STATS.records_dead)} dead-lettered, {fmt(STATS.records_dropped)} dropped"
    )
    if STATS.items_in:
        print(
            f"OTLP items (spans, log records, data points): {fmt(STATS.items_in)} in, {fmt(STATS.items_accepted)} accepted, "
            f"{fmt(STATS.items_dead)} dead-lettered, {fmt(STATS.items_dropped)} dropped "
            "(a message counts as accepted when any of its items is)"
        )
    if resumed:
        print(f"resumed from recorded positions: {', '.join(f'{k}@{v}' for k, v in sorted(resumed.items()))}")
    from sinks.iceberg import run_counters  # here: `obsflow query` imports this module without pyiceberg

    dropped_by_reason = run_counters(STATS)["dropped_by_reason"]
    if dropped_by_reason:  # duplicate: retried event envelopes already stored (transforms.dedupe)
        print("dropped by reason: " + ", ".join(f"{k} {fmt(v)}" for k, v in dropped_by_reason.items()))
    if STATS.dead_by_reason:
        print("dead letters by reason: " + ", ".join(f"{k} {fmt(v)}" for k, v in sorted(STATS.dead_by_reason.items())))
    late_rows = STATS.rows_by_table.get(spec.dead_letters.table, 0) - STATS.dead_rows
    if late_rows > 0:  # dead-lettered by a stateful stage after the record was accepted
        print(
            f"of those, {fmt(late_rows)} accepted records dead-lettered by the stateful stages (late_data: metric samples "
            f"and spans whose window had closed, not counted in the rollups / RED metrics; internal_error: a stage raised on them)"
        )
    if STATS.internal_errors:  # pipelines.isolate: records a step raised on, isolated and dead-lettered
        print(
            "internal errors isolated (dead-lettered as internal_error): "
            + ", ".join(f"{k} {fmt(v)}" for k, v in sorted(STATS.internal_errors.items()))
        )
    ts = STATS.tail_sampling
    if ts:
        parts = [
            f"{fmt(ts[('traces', 'sampled')])} traces kept, {fmt(ts[('traces', 'not_sampled')])} not sampled "
            f"({fmt(ts[('dropped_spans', 'not_sampled')])} spans)"
        ]
        for key, what in (("dropped_traces", "traces"), ("dropped_spans", "spans")):
            lost = {r: n for (k, r), n in ts.items() if k == key and n and r != "not_sampled"}
            if lost:
                parts.append(
                    f"{what} dropped otherwise: " + ", ".join(f"{fmt(n)} ({r})" for r, n in sorted(lost.items()))
                )
        early = sum(n for (k, _), n in ts.items() if k == "early_decisions")
        if early:
            parts.append(f"{fmt(early)} decided early")
        if ts[("late_spans_kept", "")]:
            parts.append(f"{fmt(ts[('late_spans_kept', '')])} late spans kept by a cached decision")
        print("tail sampling: " + "; ".join(parts))
    print(
        "rows written: "
        + ", ".join(f"{spec.storage.namespace}.{k} {fmt(v)}" for k, v in sorted(STATS.rows_by_table.items()))
    )
    balanced = (
        STATS.records_in == STATS.records_accepted + STATS.records_dead + STATS.records_dropped
        and STATS.items_in == STATS.items_accepted + STATS.items_dead + STATS.items_dropped
    )
    print(f"reconciliation: in = accepted + dead-lettered + dropped: {'yes' if balanced else 'NO'}")
    print()
    cmd_tables(args)
    print(
        f'\nquery them: obsflow query "SELECT event_type, count(*) FROM {spec.storage.namespace}.events GROUP BY 1 ORDER BY 2 DESC"'
    )
    return 0 if balanced else 1


def add_parser(sub) -> None:
    """``obsflow run``."""
    r = sub.add_parser("run", help="run the pipeline")
    add_common(r)
    r.add_argument("--runner", default=defaults.RUNNER, choices=["bytewax", "beam"])
    r.add_argument(
        "--source",
        default="embedded",
        choices=["embedded", "kafka"],
        help="where records come from: the embedded generator, or the spec's Kafka topics (kafka: section)",
    )
    r.add_argument(
        "--bounded",
        action="store_true",
        help="kafka: read every partition up to its high watermark at start, then stop",
    )
    r.add_argument(
        "--max-records", type=int_at_least(1), help="kafka: stop after about this many records (whole batches)"
    )
    r.add_argument(
        "--count", type=int_at_least(1), default=defaults.COUNT, help="records per source (default %(default)s)"
    )
    r.add_argument(
        "--duration",
        type=number(0, lo_open=True),
        help="run for this many seconds instead of --count (kafka: unbounded read for S seconds)",
    )
    r.add_argument("--seed", type=int, default=defaults.SEED)
    r.add_argument(
        "--rate",
        type=number(0, lo_open=True),
        default=defaults.RATE_PER_S,
        help="simulated arrival rate of the embedded source, records/s",
    )
    r.add_argument(
        "--bad-fraction",
        type=number(0, 1),
        default=defaults.BAD_FRACTION,
        help="share of malformed records the generator injects",
    )
    r.add_argument(
        "--batch-size",
        type=int_at_least(1),
        default=defaults.BATCH_SIZE,
        help="records per embedded batch (default %(default)s)",
    )
    r.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress line (default: when stderr is a terminal)",
    )
    r.add_argument("--dev-key", action="store_true", help="use a development pseudonym key when none is configured")
    r.add_argument(
        "--metrics-port",
        type=port,
        help="serve Prometheus /metrics on this port during the run (0: a free port, printed)",
    )
    r.add_argument("--metrics-host", default="127.0.0.1", help="address the metrics server binds (default %(default)s)")
    r.set_defaults(func=cmd_run)

    add_run_options(r)
