"""The CLI's one mapping from an exception to an exit code and a last line (the codes and
the error kinds are :mod:`core.errors`)."""

from __future__ import annotations

from pathlib import Path

from core.errors import EXIT_FAILED, EXIT_UNAVAILABLE, ObsflowError, causes


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
    try:
        return str(Path(path).resolve().relative_to(Path(__file__).resolve().parents[2]))
    except ValueError:
        return path
