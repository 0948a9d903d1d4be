"""The ``obsflow`` command.

    obsflow run     [--runner bytewax|beam] [--spec PATH] [--count N | --duration S] ...
    obsflow run     --source kafka [--bounded] [--duration S] [--max-records N] ...
    obsflow tables  [--spec PATH]
    obsflow query   "SQL" [--spec PATH] [--format table|csv|json]
    obsflow run     --runner bytewax --processes P --workers-per-process W [--process-id I --addresses A,B]
    obsflow submit  --runner flink --flink-master HOST:PORT [--parallelism N]   (runners/cli_engines.py)
    obsflow jobs    --flink-master HOST:PORT;  obsflow cancel JOB_ID --flink-master HOST:PORT
    obsflow maintain [--spec PATH] [--table T] [--steps retention,compact,expire,orphans]

Exit codes: 0 success, 2 a wrong spec or argument (the message names the key path) or a
Kafka topic the spec names that does not exist, 3 a service that is not reachable (the
message says what to start) or Kafka output that could not be delivered."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time
from datetime import datetime, timezone

from pipelines import DEFAULT_SPEC
from pipelines.loader import SpecError, load_spec


def _spec(args):
    spec = load_spec(args.spec)
    if getattr(args, "warehouse", None):
        catalog = spec.storage.catalog.model_copy(update={"warehouse": args.warehouse, "uri": None})
        spec = spec.model_copy(update={"storage": spec.storage.model_copy(update={"catalog": catalog})})
    return spec


def _fmt(n: float) -> str:
    return f"{n:,.0f}"


def _progress(stop: threading.Event, started: float, out) -> None:
    from runners.stats import STATS

    while not stop.wait(2.0):
        secs = time.monotonic() - started
        out.write(f"\r  {_fmt(STATS.records_in)} records in, {_fmt(STATS.records_accepted)} accepted, "
                  f"{_fmt(STATS.records_dead)} dead-lettered, {_fmt(STATS.records_in / secs if secs else 0)}/s, {secs:.0f}s   ")
        out.flush()
    out.write("\n")


def cmd_run(args) -> int:
    from runners.job import RunRequest
    from runners.stats import STATS

    from runners.cli_engines import cmd_run_cluster, wants_cluster

    if wants_cluster(args):
        return cmd_run_cluster(args)
    spec = _spec(args)
    if os.environ.get(spec.privacy.pseudonym_key_env) is None and spec.privacy.pseudonym_key is None:
        if args.dev_key:
            os.environ[spec.privacy.pseudonym_key_env] = "obsflow-development-key-not-for-production"
            print(f"note: {spec.privacy.pseudonym_key_env} not set; using a development pseudonym key (--dev-key)", file=sys.stderr)
    kafka = args.source == "kafka"
    if not kafka and (args.bounded or args.max_records is not None):
        print("obsflow run: --bounded and --max-records apply to --source kafka", file=sys.stderr)
        return 2
    req = RunRequest(spec=spec, runner=args.runner, source=args.source, count=None if args.duration else args.count,
                     duration_s=args.duration, seed=args.seed, rate_per_s=args.rate, bad_fraction=args.bad_fraction,
                     batch_size=args.batch_size, bounded=args.bounded, max_records=args.max_records)
    if args.runner == "bytewax":
        from runners.bytewax.run import run
    elif args.runner == "beam":
        from runners.beam.run import run
    else:
        print(f"obsflow run: --runner: expected bytewax or beam, got {args.runner!r}", file=sys.stderr)
        return 2
    STATS.reset()
    metrics = None
    if args.metrics_port is not None:
        from runners.metrics import serve

        metrics = serve(args.metrics_port, args.metrics_host)
        print(f"obsflow: metrics on {metrics.url}", flush=True)
    started = time.monotonic()
    stop = threading.Event()
    show = args.progress or (args.progress is None and sys.stderr.isatty())
    th = threading.Thread(target=_progress, args=(stop, started, sys.stderr), daemon=True) if show else None
    if th:
        th.start()
    if kafka:
        bounds = [b for b in ("up to the high watermarks at start" if args.bounded else "",
                              f"for {args.duration}s" if args.duration else "",
                              f"about {_fmt(args.max_records)} records" if args.max_records is not None else "") if b]
        print(f"obsflow: running {spec.name} on {args.runner} from Kafka at {spec.kafka.bootstrap} "
              f"({', '.join(bounds) or 'until stopped'})", flush=True)
    else:
        print(f"obsflow: running {spec.name} on {args.runner} from the embedded source "
              f"({'%s records per source' % _fmt(args.count) if not args.duration else '%ss' % args.duration}, seed {args.seed})")
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
    print(f"\nrun finished in {secs:.1f}s: {_fmt(STATS.records_in)} records in ({_fmt(STATS.records_in / secs if secs else 0)}/s), "
          f"{_fmt(STATS.records_accepted)} accepted, {_fmt(STATS.records_dead)} dead-lettered, {_fmt(STATS.records_dropped)} dropped")
    if resumed:
        print(f"resumed from recorded positions: {', '.join(f'{k}@{v}' for k, v in sorted(resumed.items()))}")
    if STATS.dead_by_reason:
        print("dead letters by reason: " + ", ".join(f"{k} {_fmt(v)}" for k, v in sorted(STATS.dead_by_reason.items())))
    late_rows = STATS.rows_by_table.get(spec.dead_letters.table, 0) - STATS.records_dead
    if late_rows > 0:  # dead-lettered by a stateful stage after the record was accepted
        print(f"of those, {_fmt(late_rows)} accepted records dead-lettered by the stateful stages as late_data (metric samples "
              f"and spans whose window had closed: not counted in the rollups / RED metrics)")
    ts = STATS.tail_sampling
    if ts:
        parts = [f"{_fmt(ts[('traces', 'sampled')])} traces kept, {_fmt(ts[('traces', 'not_sampled')])} not sampled "
                 f"({_fmt(ts[('dropped_spans', 'not_sampled')])} spans)"]
        for key, what in (("dropped_traces", "traces"), ("dropped_spans", "spans")):
            lost = {r: n for (k, r), n in ts.items() if k == key and n and r != "not_sampled"}
            if lost:
                parts.append(f"{what} dropped otherwise: " + ", ".join(f"{_fmt(n)} ({r})" for r, n in sorted(lost.items())))
        early = sum(n for (k, _), n in ts.items() if k == "early_decisions")
        if early:
            parts.append(f"{_fmt(early)} decided early")
        if ts[("late_spans_kept", "")]:
            parts.append(f"{_fmt(ts[('late_spans_kept', '')])} late spans kept by a cached decision")
        print("tail sampling: " + "; ".join(parts))
    print("rows written: " + ", ".join(f"{spec.storage.namespace}.{k} {_fmt(v)}" for k, v in sorted(STATS.rows_by_table.items())))
    balanced = STATS.records_in == STATS.records_accepted + STATS.records_dead + STATS.records_dropped
    print(f"reconciliation: in = accepted + dead-lettered + dropped: {'yes' if balanced else 'NO'}")
    print()
    cmd_tables(args)
    print(f'\nquery them: obsflow query "SELECT event_type, count(*) FROM {spec.storage.namespace}.events GROUP BY 1 ORDER BY 2 DESC"')
    return 0 if balanced else 1


def cmd_tables(args) -> int:
    from sinks.catalog import open_catalog
    from sinks.iceberg import snapshot_offsets

    spec = _spec(args)
    catalog = open_catalog(spec.storage)
    ns = spec.storage.namespace
    if ns not in {n[0] for n in catalog.list_namespaces()}:
        print(f"no tables yet in namespace {ns!r} (warehouse {spec.storage.catalog.warehouse}); run `obsflow run` first")
        return 0
    rows = [("table", "rows", "files", "snapshots", "latest snapshot", "committed at (UTC)", "positions")]
    for ident in sorted(catalog.list_tables(ns)):
        t = catalog.load_table(ident)
        snap = t.current_snapshot()
        if snap is None:
            rows.append((".".join(ident), "0", "0", "0", "-", "-", "-"))
            continue
        summ = snap.summary.additional_properties if snap.summary else {}
        at = datetime.fromtimestamp(snap.timestamp_ms / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        pos = snapshot_offsets(t)
        rows.append((".".join(ident), _fmt(int(summ.get("total-records", 0))), summ.get("total-data-files", "0"),
                     str(len(t.snapshots())), str(snap.snapshot_id), at, f"{len(pos)} partitions, {_fmt(sum(pos.values()))} records"))
    _print_table(rows)
    return 0


def cmd_maintain(args) -> int:
    from sinks.maintenance import maintain

    spec = _spec(args)
    steps = tuple(args.steps.split(",")) if args.steps else ("retention", "compact", "expire", "orphans")
    reports = maintain(spec, tables=args.table or None, steps=steps)
    if not reports:
        print(f"no tables in namespace {spec.storage.namespace!r}")
        return 0
    rows = [("table", "expired rows", "archived rows", "compacted partitions", "files before", "files after",
             "expired snapshots", "orphan files", "orphan bytes", "retries", "seconds")]
    for r in reports:
        rows.append((r.table, _fmt(r.expired_rows), _fmt(r.archived_rows), str(r.compacted_partitions), str(r.files_before),
                     str(r.files_after), str(r.expired_snapshots), str(r.orphan_files), _fmt(r.orphan_bytes), str(r.retries), f"{r.seconds:.1f}"))
    _print_table(rows)
    return 0


def _print_table(rows) -> None:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    for k, r in enumerate(rows):
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())
        if k == 0:
            print("  ".join("-" * w for w in widths))


def cmd_query(args) -> int:
    from runners.query import query

    spec = _spec(args)
    sql = args.sql
    if args.saved:
        from runners.query import saved_query

        try:
            sql = saved_query(args.saved)
        except KeyError as e:
            print(f"obsflow query: {e.args[0]}", file=sys.stderr)
            return 2
    elif not sql:
        print("obsflow query: give SQL or --saved NAME", file=sys.stderr)
        return 2
    try:
        cols, rows = query(spec, sql)
    except Exception as e:  # duckdb errors: show them plainly
        print(f"obsflow query: {e}", file=sys.stderr)
        return 2
    if args.format == "json":
        for r in rows:
            print(json.dumps(dict(zip(cols, r)), default=str))
    elif args.format == "csv":
        import csv

        w = csv.writer(sys.stdout)
        w.writerow(cols)
        w.writerows(rows)
    else:
        _print_table([tuple(cols)] + [tuple("" if v is None else v for v in r) for r in rows])
        print(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="obsflow", description="Stream processing for product analytics and observability.")
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp):
        sp.add_argument("--spec", default=str(DEFAULT_SPEC), help="pipeline spec (YAML); default: %(default)s")
        sp.add_argument("--warehouse", help="override storage.catalog.warehouse (embedded SQLite catalog + local files)")

    r = sub.add_parser("run", help="run the pipeline")
    common(r)
    r.add_argument("--runner", default="bytewax", choices=["bytewax", "beam"])
    r.add_argument("--source", default="embedded", choices=["embedded", "kafka"],
                   help="where records come from: the embedded generator, or the spec's Kafka topics (kafka: section)")
    r.add_argument("--bounded", action="store_true",
                   help="kafka: read every partition up to its high watermark at start, then stop")
    r.add_argument("--max-records", type=int, help="kafka: stop after about this many records (whole batches)")
    r.add_argument("--count", type=int, default=100_000, help="records per source (default %(default)s)")
    r.add_argument("--duration", type=float, help="run for this many seconds instead of --count (kafka: unbounded read for S seconds)")
    r.add_argument("--seed", type=int, default=42)
    r.add_argument("--rate", type=float, default=2000.0, help="simulated arrival rate of the embedded source, records/s")
    r.add_argument("--bad-fraction", type=float, default=0.01, help="share of malformed records the generator injects")
    r.add_argument("--batch-size", type=int, default=5000)
    r.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None, help="progress line (default: when stderr is a terminal)")
    r.add_argument("--dev-key", action="store_true", help="use a development pseudonym key when none is configured")
    r.add_argument("--metrics-port", type=int, help="serve Prometheus /metrics on this port during the run (0: a free port, printed)")
    r.add_argument("--metrics-host", default="127.0.0.1", help="address the metrics server binds (default %(default)s)")
    r.set_defaults(func=cmd_run)
    from runners.cli_engines import add_commands, add_run_options

    add_run_options(r)
    add_commands(sub, common)

    t = sub.add_parser("tables", help="list tables, row counts and latest snapshots")
    common(t)
    t.set_defaults(func=cmd_tables)

    m = sub.add_parser("maintain", help="retention (and archiving), compaction, snapshot expiry, orphan-file removal")
    common(m)
    m.add_argument("--table", action="append", help="only this table (repeatable)")
    m.add_argument("--steps", help="comma-separated subset of retention,compact,expire,orphans")
    m.set_defaults(func=cmd_maintain)

    q = sub.add_parser("query", help="run SQL over the tables with DuckDB (tables as obs.<table>)")
    q.add_argument("sql", nargs="?")
    q.add_argument("--saved", help="a saved query from pipelines/queries/ (funnel_dropoff, error_rate_by_service, p99_latency_by_service)")
    common(q)
    q.add_argument("--format", default="table", choices=["table", "csv", "json"])
    q.set_defaults(func=cmd_query)
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=os.environ.get("OBSFLOW_LOG", "WARNING"))
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except SpecError as e:
        print(f"obsflow: {e}", file=sys.stderr)
        return 2
    except ConnectionError as e:
        print(f"obsflow: {e}", file=sys.stderr)
        return 3
    except LookupError as e:
        from sources.kafka import MissingTopicError

        if isinstance(e, MissingTopicError):
            print(f"obsflow: {e}", file=sys.stderr)
            return 2
        raise
    except Exception as e:
        from sinks.kafka import DeliveryError
        from transforms.scrub import MissingKeyError

        cause = e
        while cause is not None and not isinstance(cause, DeliveryError):
            cause = cause.__cause__ or cause.__context__  # engines wrap what an operator raised
        if cause is not None:
            print(f"obsflow: Kafka output failed: {cause}", file=sys.stderr)
            return 3

        if isinstance(e, MissingKeyError):
            print(f"obsflow: {e} (or pass --dev-key for a local trial)", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
