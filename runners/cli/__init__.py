"""The ``obsflow`` command: a package with one module per command, imported one way
(``__init__`` → each command module → :mod:`runners.cli.common`; no command module imports
this one).

    obsflow run     [--runner bytewax|beam] [--spec PATH] [--count N | --duration S] ...    (run.py)
    obsflow run     --source kafka [--bounded] [--duration S] [--max-records N] ...
    obsflow run     --runner bytewax --processes P --workers-per-process W [--process-id I --addresses A,B]   (cluster.py)
    obsflow tables  [--spec PATH]                                                          (tables.py)
    obsflow query   "SQL" [--spec PATH] [--format table|csv|json]                           (query.py)
    obsflow submit  --runner flink --flink-master HOST:PORT [--parallelism N]               (flink.py)
    obsflow jobs    --flink-master HOST:PORT;  obsflow cancel JOB_ID --flink-master HOST:PORT
    obsflow maintain [--spec PATH] [--table T] [--steps retention,compact,expire,orphans]   (maintain.py)
    obsflow topics  list|create [--spec PATH] [--partitions N] [--replication-factor R]     (topics.py)
    obsflow collect [--spec PATH] [--host H] [--port P]                                     (collect.py)
    obsflow ui      [--spec PATH] [--warehouse DIR] [--port P] [--trino URL]                (ui.py)

A command module has ``add_parser(sub)`` (its flags, and ``func`` set to its ``cmd_*``);
:data:`COMMANDS` lists them in ``--help`` order.

Exit codes (:mod:`core.errors`, mapped in one place, :func:`runners.cli.errors.failure`):
0 success, 1 the run failed otherwise (or did not reconcile), 2 a wrong spec or argument (the
message names the key path or the flag), a Kafka topic the spec names that does not exist
(all of them are named), or a warehouse that does not exist, 3 a service that is not
reachable (the message says what to start) or Kafka output that could not be delivered.
Whatever fails, the last line printed is obsflow's own one-line reason."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from core.errors import EXIT_FAILED, EXIT_INTERRUPTED, ObsflowError, causes
from runners.cli import collect, flink, maintain, query, run, tables, topics, ui
from runners.cli.common import Parser, UsageError
from runners.cli.errors import failure

__all__ = ["COMMANDS", "UsageError", "failure", "main", "parser"]

#: the command modules, in ``--help`` order (``flink`` adds submit, jobs and cancel)
COMMANDS = (run, flink, tables, maintain, topics, query, collect, ui)


def parser() -> argparse.ArgumentParser:
    """The ``obsflow`` argument parser: every command module's ``add_parser``."""
    p = Parser(prog="obsflow", description="Stream processing for product analytics and observability.")
    sub = p.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    return p


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
        if any(isinstance(c, KeyboardInterrupt) for c in causes(e)):  # Ctrl-C an engine wrapped (bytewax)
            print("\nobsflow: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
        rc, line = failure(e)
        if rc == EXIT_FAILED and not any(isinstance(c, ObsflowError) for c in causes(e)):
            import traceback

            traceback.print_exc(file=sys.stderr)
        sys.stdout.flush()
        print(line, file=sys.stderr, flush=True)
        return rc
