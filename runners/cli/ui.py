"""``obsflow ui``: the web UI over the tables (DuckDB embedded, or Trino): pipeline health,
services, traces with their logs, logs, alerts and product funnels (docs/ui.md)."""

from __future__ import annotations

from runners.cli.common import add_common, port


def cmd_ui(args) -> int:
    from ui.server import serve

    return serve(args.spec, args.warehouse, args.host, args.port, "trino" if args.trino else "duckdb", args.trino)


def add_parser(sub) -> None:
    """``obsflow ui``."""
    u = sub.add_parser(
        "ui",
        help="the web UI over the tables (DuckDB embedded, or --trino URL): pipeline health, services, traces, product",
    )
    add_common(u)
    u.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s)")
    u.add_argument("--port", type=port, default=8090, help="port (default %(default)s; 0: a free port, printed)")
    u.add_argument(
        "--trino", metavar="URL", help="read through this Trino (http://host:port, catalog iceberg) instead of DuckDB"
    )
    u.set_defaults(func=cmd_ui)
