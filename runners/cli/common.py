"""What every command module shares: the one-line argparse, flag types, loading ``--spec``
(with ``--warehouse``), the checks before an engine starts, and table printing. Imports
nothing from the other command modules (they import this one)."""

from __future__ import annotations

import argparse
import threading
import time

from core.errors import ConfigurationError
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
            raise argparse.ArgumentTypeError(
                f"expected a number {low}{f' and <= {hi:g}' if hi is not None else ''}, got {text!r}"
            )
        return v

    return conv


def port(text: str) -> int:
    v = int_at_least(0)(text)
    if v > 65535:
        raise argparse.ArgumentTypeError(f"expected a TCP port 0..65535, got {text!r}")
    return v


def add_common(sp: argparse.ArgumentParser) -> None:
    """``--spec`` and ``--warehouse``, which every command that reads a spec takes."""
    sp.add_argument("--spec", default=str(DEFAULT_SPEC), help="pipeline spec (YAML); default: %(default)s")
    sp.add_argument("--warehouse", help="override storage.catalog.warehouse (embedded SQLite catalog + local files)")


def load_spec_args(args):
    from pipelines.loader import load_spec

    spec = load_spec(args.spec)
    if getattr(args, "warehouse", None):
        catalog = spec.storage.catalog.model_copy(update={"warehouse": args.warehouse, "uri": None})
        spec = spec.model_copy(update={"storage": spec.storage.model_copy(update={"catalog": catalog})})
    return spec


def fmt(n: float) -> str:
    return f"{n:,.0f}"


def progress(stop: threading.Event, started: float, out) -> None:
    from core.stats import STATS

    while not stop.wait(2.0):
        secs = time.monotonic() - started
        out.write(
            f"\r  {fmt(STATS.records_in)} records in, {fmt(STATS.records_accepted)} accepted, "
            f"{fmt(STATS.records_dead)} dead-lettered, {fmt(STATS.records_in / secs if secs else 0)}/s, {secs:.0f}s   "
        )
        out.flush()
    out.write("\n")


def spec_arg(args) -> str | None:
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


def print_table(rows) -> None:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    for k, r in enumerate(rows):
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())
        if k == 0:
            print("  ".join("-" * w for w in widths))
