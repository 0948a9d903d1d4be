"""The ``obsflow`` command.

    obsflow run     [--runner bytewax|beam] [--spec PATH] [--count N | --duration S] ...
    obsflow run     --source kafka [--bounded] [--duration S] [--max-records N] ...
    obsflow tables  [--spec PATH]
    obsflow query   "SQL" [--spec PATH] [--format table|csv|json]
    obsflow run     --runner bytewax --processes P --workers-per-process W [--process-id I --addresses A,B]
    obsflow submit  --runner flink --flink-master HOST:PORT [--parallelism N]   (runners/cli_engines.py)
    obsflow jobs    --flink-master HOST:PORT;  obsflow cancel JOB_ID --flink-master HOST:PORT
    obsflow maintain [--spec PATH] [--table T] [--steps retention,compact,expire,orphans]
    obsflow topics  list|create [--spec PATH] [--partitions N] [--replication-factor R]

Exit codes: 0 success, 1 the run failed otherwise (or did not reconcile), 2 a wrong spec or
argument (the message names the key path or the flag), a Kafka topic the spec names that
does not exist (all of them are named), or a warehouse that does not exist, 3 a service that
is not reachable (the message says what to start) or Kafka output that could not be
delivered. Whatever fails, the last line printed is obsflow's own one-line reason."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time
from datetime import datetime, timezone

from core.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_UNAVAILABLE, ConfigurationError, ObsflowError, causes
from pipelines import DEFAULT_SPEC


class UsageError(ConfigurationError):
    """A command line that cannot work (exit 2, one line); the message starts with the
    command (``obsflow maintain: --table: ...``)."""

    def report(self) -> str:
        return str(self)


class Parser(argparse.ArgumentParser):
    """argparse whose errors are one line, ``obsflow run: argument --count: ...``, exit 2
    (argparse prints the whole usage first)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: {message} (see `{self.prog} --help`)\n")


def int_at_least(lo: int):
    """An argparse type: a whole number ``>= lo``."""
    def conv(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if v < lo:
            raise argparse.ArgumentTypeError(f"expected a whole number >= {lo}, got {text!r}")
        return v
    return conv


def number(lo: float, hi: float | None = None, *, lo_open: bool = False):
    """An argparse type: a finite number in ``[lo, hi]`` (``(lo, hi]`` with ``lo_open``)."""
    import math

    def conv(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            v = math.nan
        ok = math.isfinite(v) and (v > lo if lo_open else v >= lo) and (hi is None or v <= hi)
        if not ok:
            low = f"> {lo:g}" if lo_open else f">= {lo:g}"
            raise argparse.ArgumentTypeError(f"expected a number {low}{f' and <= {hi:g}' if hi is not None else ''}, got {text!r}")
        return v
    return conv


def _port(text: str) -> int:
    v = int_at_least(0)(text)
    if v > 65535:
        raise argparse.ArgumentTypeError(f"expected a TCP port 0..65535, got {text!r}")
    return v


def _spec(args):
    from pipelines.loader import load_spec

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


def _spec_arg(args) -> str | None:
    """``--spec`` as the user gave it, None for the default spec (for hints)."""
    return None if args.spec == str(DEFAULT_SPEC) else args.spec


def preflight(spec, *, reads_kafka: bool, spec_arg: str | None = None) -> None:
    """What must hold before an engine starts, checked here so the answer is one line
    and comes at once: the pseudonymization key (a worker would fail on it, on Beam after
    logging a traceback), every Kafka topic the job reads or writes (all missing ones
    named; an alerts topic would otherwise fail only when the first alert fires), and the
    bucket of an S3 warehouse."""
    from pipelines.spec import ScrubStep
    from runners.topics import check_topics, spec_topics
    from sinks.catalog import check_bucket

    if any(isinstance(s, ScrubStep) and s.pseudonymize_users for f in spec.flows for s in f.steps):
        from transforms.scrub import pseudonym_key

        pseudonym_key(spec.privacy)  # MissingKeyError says what to set
    if spec_topics(spec, reads_kafka=reads_kafka):
        check_topics(spec, reads_kafka=reads_kafka, spec_arg=spec_arg)
    check_bucket(spec.storage, spec_arg)  # an S3 warehouse's bucket: named, with how to create it


def cmd_run(args) -> int:
    from runners.job import RunRequest
    from runners.stats import STATS

    from runners.cli_engines import cluster_usage_problem, cmd_run_cluster, wants_cluster

    problem = cluster_usage_problem(args) if wants_cluster(args) else None
    if problem is not None:  # a wrong flag is named before any service is contacted
        raise UsageError(problem)
    spec = _spec(args)
    if os.environ.get(spec.privacy.pseudonym_key_env) is None and spec.privacy.pseudonym_key is None:
        if args.dev_key:
            os.environ[spec.privacy.pseudonym_key_env] = "obsflow-development-key-not-for-production"
            print(f"note: {spec.privacy.pseudonym_key_env} not set; using a development pseudonym key (--dev-key)", file=sys.stderr)
    kafka = args.source == "kafka"
    if not kafka and (args.bounded or args.max_records is not None):
        raise UsageError("obsflow run: --bounded and --max-records apply to --source kafka")
    preflight(spec, reads_kafka=kafka, spec_arg=_spec_arg(args))
    from runners.query import remember_spec

    remember_spec(args.spec, args.warehouse, spec)  # the first `obsflow query` after the run starts fast
    if wants_cluster(args):
        return cmd_run_cluster(args)
    req = RunRequest(spec=spec, runner=args.runner, source=args.source, count=None if args.duration else args.count,
                     duration_s=args.duration, seed=args.seed, rate_per_s=args.rate, bad_fraction=args.bad_fraction,
                     batch_size=args.batch_size, bounded=args.bounded, max_records=args.max_records)
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
            raise UsageError(f"obsflow run: --metrics-host/--metrics-port: cannot serve on "
                             f"{args.metrics_host}:{args.metrics_port}: {e.strerror or e}") from None
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
    if STATS.items_in:
        print(f"OTLP items (spans, log records, data points): {_fmt(STATS.items_in)} in, {_fmt(STATS.items_accepted)} accepted, "
              f"{_fmt(STATS.items_dead)} dead-lettered, {_fmt(STATS.items_dropped)} dropped "
              "(a message counts as accepted when any of its items is)")
    if resumed:
        print(f"resumed from recorded positions: {', '.join(f'{k}@{v}' for k, v in sorted(resumed.items()))}")
    if STATS.dead_by_reason:
        print("dead letters by reason: " + ", ".join(f"{k} {_fmt(v)}" for k, v in sorted(STATS.dead_by_reason.items())))
    late_rows = STATS.rows_by_table.get(spec.dead_letters.table, 0) - STATS.dead_rows
    if late_rows > 0:  # dead-lettered by a stateful stage after the record was accepted
        print(f"of those, {_fmt(late_rows)} accepted records dead-lettered by the stateful stages (late_data: metric samples "
              f"and spans whose window had closed, not counted in the rollups / RED metrics; internal_error: a stage raised on them)")
    if STATS.internal_errors:  # pipelines.isolate: records a step raised on, isolated and dead-lettered
        print("internal errors isolated (dead-lettered as internal_error): "
              + ", ".join(f"{k} {_fmt(v)}" for k, v in sorted(STATS.internal_errors.items())))
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
    balanced = STATS.records_in == STATS.records_accepted + STATS.records_dead + STATS.records_dropped \
        and STATS.items_in == STATS.items_accepted + STATS.items_dead + STATS.items_dropped
    print(f"reconciliation: in = accepted + dead-lettered + dropped: {'yes' if balanced else 'NO'}")
    print()
    cmd_tables(args)
    print(f'\nquery them: obsflow query "SELECT event_type, count(*) FROM {spec.storage.namespace}.events GROUP BY 1 ORDER BY 2 DESC"')
    return 0 if balanced else 1


def cmd_tables(args) -> int:
    from sinks.catalog import open_catalog
    from sinks.iceberg import snapshot_offsets

    spec = _spec(args)
    from sinks.catalog import check_bucket

    check_bucket(spec.storage, _spec_arg(args))
    catalog = open_catalog(spec.storage, create=False)
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


MAINTAIN_STEPS = ("retention", "compact", "expire", "orphans")


def _table_name(spec, name: str) -> str:
    """A table ``--table`` names (``logs`` or ``obs.logs``; archives too), checked against
    the tables obsflow writes; :class:`UsageError` naming them otherwise."""
    from schemas.tables import TABLES

    ns = spec.storage.namespace
    bare = name.removeprefix(ns + ".")
    base = bare.removesuffix("_archive")
    if base not in TABLES:
        raise UsageError(f"obsflow maintain: --table: no table {name!r}; tables: {', '.join(sorted(TABLES))} "
                         f"(and <table>_archive)")
    return bare


def cmd_maintain(args) -> int:
    from sinks.maintenance import maintain

    spec = _spec(args)
    steps = tuple(s.strip() for s in args.steps.split(",")) if args.steps else MAINTAIN_STEPS
    unknown = [s for s in steps if s not in MAINTAIN_STEPS]
    if unknown or not steps:
        raise UsageError(f"obsflow maintain: --steps: expected a comma-separated subset of {','.join(MAINTAIN_STEPS)}, "
                         f"got {args.steps!r}")
    tables = [_table_name(spec, t) for t in args.table] if args.table else None
    from sinks.catalog import check_bucket

    check_bucket(spec.storage, _spec_arg(args))
    reports = maintain(spec, tables=tables, steps=steps)
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


def cmd_topics(args) -> int:
    """``obsflow topics list|create``: the spec's Kafka topics, as the broker has them."""
    from runners.topics import create_topics, topic_states

    spec = _spec(args)
    if args.action == "create":
        results = create_topics(spec, partitions=args.partitions, replication=args.replication_factor or -1)
        for t, outcome in results:
            print(f"{t.name}  ({t.key}, {t.role}): {outcome}")
        created = sum(1 for _, o in results if o == "created")
        print(f"{created} topic{'s' if created != 1 else ''} created on {spec.kafka.bootstrap}")
        return 0
    rows = [("topic", "spec key", "role", "partitions", "replication")]
    missing = 0
    for st in topic_states(spec):
        if not st.found:
            missing += 1
            rows.append((st.topic.name, st.topic.key, st.topic.role, "missing", "-"))
        for name, parts, repl in st.found:
            rows.append((name, st.topic.key, st.topic.role, str(parts), str(repl)))
    _print_table(rows)
    if missing:
        print(f"{missing} missing: create with `obsflow topics create{'' if _spec_arg(args) is None else ' --spec ' + args.spec}`")
    return 0


def _json_value(v):
    """JSON for what ``json`` cannot write itself: binary as base64 (standard alphabet,
    padded), anything else (timestamps, decimals, UUIDs) as its ``str``."""
    if isinstance(v, (bytes, bytearray, memoryview)):
        import base64

        return base64.b64encode(bytes(v)).decode("ascii")
    return str(v)


def cmd_query(args) -> int:
    from runners.query import query, reader_spec

    spec = reader_spec(args.spec, args.warehouse, lambda: _spec(args))
    sql = args.sql
    if args.saved:
        from runners.query import saved_query

        try:
            sql = saved_query(args.saved)
        except KeyError as e:
            raise UsageError(f"obsflow query: {e.args[0]}") from None
    elif not sql:
        raise UsageError("obsflow query: give SQL or --saved NAME")
    import duckdb

    try:
        cols, rows = query(spec, sql)
    except duckdb.Error as e:  # the SQL's own errors: shown plainly, on one line
        print(f"obsflow query: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    if args.format == "json":
        for r in rows:
            print(json.dumps(dict(zip(cols, r)), default=_json_value))
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
    p = Parser(prog="obsflow", description="Stream processing for product analytics and observability.")
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
    r.add_argument("--max-records", type=int_at_least(1), help="kafka: stop after about this many records (whole batches)")
    r.add_argument("--count", type=int_at_least(1), default=100_000, help="records per source (default %(default)s)")
    r.add_argument("--duration", type=number(0, lo_open=True), help="run for this many seconds instead of --count (kafka: unbounded read for S seconds)")
    r.add_argument("--seed", type=int, default=42)
    r.add_argument("--rate", type=number(0, lo_open=True), default=2000.0, help="simulated arrival rate of the embedded source, records/s")
    r.add_argument("--bad-fraction", type=number(0, 1), default=0.01, help="share of malformed records the generator injects")
    r.add_argument("--batch-size", type=int_at_least(1), default=5000, help="records per embedded batch (default %(default)s)")
    r.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None, help="progress line (default: when stderr is a terminal)")
    r.add_argument("--dev-key", action="store_true", help="use a development pseudonym key when none is configured")
    r.add_argument("--metrics-port", type=_port, help="serve Prometheus /metrics on this port during the run (0: a free port, printed)")
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

    k = sub.add_parser("topics", help="list or create the Kafka topics the spec reads and writes (sources and outputs)")
    k.add_argument("action", choices=["list", "create"])
    common(k)
    k.add_argument("--partitions", type=int_at_least(1),
                   help="create: partitions of each new topic (default: the source's `partitions`; outputs: the largest)")
    k.add_argument("--replication-factor", type=int_at_least(1),
                   help="create: replicas of each new topic (default: the broker's default.replication.factor)")
    k.set_defaults(func=cmd_topics)

    q = sub.add_parser("query", help="run SQL over the tables with DuckDB (tables as obs.<table>)")
    q.add_argument("sql", nargs="?")
    q.add_argument("--saved", help="a saved query from pipelines/queries/ (funnel_dropoff, error_rate_by_service, p99_latency_by_service)")
    common(q)
    q.add_argument("--format", default="table", choices=["table", "csv", "json"],
                   help="table (default), csv, or json: one object per row; binary columns (e.g. dead_letters.raw) "
                        "as base64 strings, timestamps as text")
    q.set_defaults(func=cmd_query)

    c = sub.add_parser("collect", help="the HTTP / OTLP/HTTP front door: answers 2xx only after Kafka has the data")
    common(c)
    c.add_argument("--host", help="override collect.host")
    c.add_argument("--port", type=_port, help="override collect.port (0: a free port, printed)")
    c.add_argument("--server", choices=["granian", "uvicorn"], help="override collect.server")
    c.add_argument("--workers", type=int_at_least(1), default=1, help="granian: worker processes (one per core)")
    c.set_defaults(func=cmd_collect)
    return p


def failure(e: BaseException) -> tuple[int, str]:
    """The exit code and the one-line reason for an exception that ended a command, decided
    here and only here from :mod:`core.errors`: the outermost obsflow error in the chain
    (``e`` and what it wraps: engines wrap what an operator raised) gives its ``exit_code``
    and :meth:`~core.errors.ObsflowError.report` (2 for a wrong spec, argument, missing
    topic, warehouse, bucket, variable or pseudonymization key; 3 for a service that is not
    reachable or Kafka output that could not be delivered); else a bare ``ConnectionError``
    is 3; anything else is 1, the line naming the innermost exception and where it was
    raised."""
    chain = list(causes(e))
    for c in chain:
        if isinstance(c, ObsflowError):
            return c.exit_code, c.report()
    for c in chain:
        if isinstance(c, ConnectionError):
            return EXIT_UNAVAILABLE, f"obsflow: {c}"
    root = chain[-1]
    where = ""
    tb = root.__traceback__
    if tb is not None:
        while tb.tb_next is not None:
            tb = tb.tb_next
        where = f" (at {_short_path(tb.tb_frame.f_code.co_filename)}:{tb.tb_lineno})"
    text = " ".join(str(root).split())
    if len(text) > 500:
        text = text[:500] + "..."
    return EXIT_FAILED, f"obsflow: failed: {type(root).__name__}: {text}{where}"


def _short_path(path: str) -> str:
    from pathlib import Path

    try:
        return str(Path(path).resolve().relative_to(Path(__file__).resolve().parent.parent))
    except ValueError:
        return path


def cmd_collect(args) -> int:
    from collector.server import serve

    return serve(args.spec, args.host, args.port, args.server, args.workers)


def main(argv: list[str] | None = None) -> int:
    """Run one command; whatever fails, print the one-line reason last and return the
    documented exit code (tracebacks of unexpected failures come before it, for a bug
    report; none for a wrong spec, argument or environment)."""
    logging.basicConfig(level=os.environ.get("OBSFLOW_LOG", "WARNING"))
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("\nobsflow: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:  # noqa: BLE001 - every failure ends in one line and an exit code
        rc, line = failure(e)
        if not any(isinstance(c, ObsflowError) for c in causes(e)) and rc == EXIT_FAILED:
            import traceback

            traceback.print_exc(file=sys.stderr)
        sys.stdout.flush()
        print(line, file=sys.stderr, flush=True)
        return rc


if __name__ == "__main__":
    # run the module as `runners.cli`, not `__main__`, so that the other command modules,
    # which import runners.cli, share its classes (UsageError)
    from runners.cli import main as _main

    sys.exit(_main())
