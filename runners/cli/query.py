"""``obsflow query``: SQL over the tables with DuckDB (or a saved query), as a table, CSV or JSON."""

from __future__ import annotations

import json
import sys

from runners.cli.common import UsageError, add_common, load_spec_args, print_table


def _json_value(v):
    """JSON for what ``json`` cannot write itself: binary as base64 (standard alphabet,
    padded), anything else (timestamps, decimals, UUIDs) as its ``str``."""
    if isinstance(v, (bytes, bytearray, memoryview)):
        import base64

        return base64.b64encode(bytes(v)).decode("ascii")
    return str(v)


def cmd_query(args) -> int:
    from runners.query import query, reader_spec

    spec = reader_spec(args.spec, args.warehouse, lambda: load_spec_args(args))
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
        print_table([tuple(cols)] + [tuple("" if v is None else v for v in r) for r in rows])
        print(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return 0


def add_parser(sub) -> None:
    """``obsflow query``."""
    q = sub.add_parser("query", help="run SQL over the tables with DuckDB (tables as obs.<table>)")
    q.add_argument("sql", nargs="?")
    q.add_argument(
        "--saved",
        help="a saved query from pipelines/queries/ (funnel_dropoff, error_rate_by_service, p99_latency_by_service)",
    )
    add_common(q)
    q.add_argument(
        "--format",
        default="table",
        choices=["table", "csv", "json"],
        help="table (default), csv, or json: one object per row; binary columns (e.g. dead_letters.raw) "
        "as base64 strings, timestamps as text",
    )
    q.set_defaults(func=cmd_query)
