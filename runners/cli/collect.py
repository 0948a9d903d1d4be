"""``obsflow collect``: the HTTP / OTLP/HTTP front door (:mod:`collector`)."""

from __future__ import annotations

from runners.cli.common import add_common, int_at_least, port


def cmd_collect(args) -> int:
    from collector.server import serve

    return serve(args.spec, args.host, args.port, args.server, args.workers)


def add_parser(sub) -> None:
    """``obsflow collect``."""
    c = sub.add_parser("collect", help="the HTTP / OTLP/HTTP front door: answers 2xx only after Kafka has the data")
    add_common(c)
    c.add_argument("--host", help="override collect.host")
    c.add_argument("--port", type=port, help="override collect.port (0: a free port, printed)")
    c.add_argument("--server", choices=["granian", "uvicorn"], help="override collect.server")
    c.add_argument("--workers", type=int_at_least(1), default=1, help="granian: worker processes (one per core)")
    c.set_defaults(func=cmd_collect)
