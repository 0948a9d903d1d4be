"""The one base of obsflow's own errors: each class carries the process exit code the CLI
ends with and whether the failure is transient (the same call may succeed later: a service
down, an outage) or terminal (a wrong spec, argument or environment: retrying cannot help).

Every error class of the project derives from :class:`ObsflowError`, most through one of
the two kinds below, and keeps its standard base as well (``SpecError`` is still a
``ValueError``, ``KafkaUnavailableError`` still a ``ConnectionError``), so existing
``except`` clauses keep working. The CLI (``runners/cli``) maps an exception to an exit code
and a last line in one place, :func:`runners.cli.errors.failure`, from these attributes.

Exit codes: :data:`EXIT_OK` 0, :data:`EXIT_FAILED` 1 (the run failed otherwise),
:data:`EXIT_USAGE` 2 (a wrong spec, argument or environment: fix it and run again),
:data:`EXIT_UNAVAILABLE` 3 (a service not reachable, Kafka output not delivered),
:data:`EXIT_INTERRUPTED` 130 (Ctrl-C)."""

from __future__ import annotations

from collections.abc import Iterator

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
EXIT_INTERRUPTED = 130


class ObsflowError(Exception):
    """An error obsflow raises on purpose. Class attributes (an instance may override them):
    ``exit_code`` the CLI's exit code; ``transient`` whether trying again later may succeed;
    ``what`` a prefix of the CLI's one-line reason; ``hint`` appended to it."""

    exit_code: int = EXIT_FAILED
    transient: bool = False
    what: str = ""
    hint: str = ""

    def report(self) -> str:
        """The CLI's last words for this error: ``obsflow: <what><message><hint>`` (a spec
        error keeps its one line per problem)."""
        return f"obsflow: {self.what}{self}{self.hint}"


class ConfigurationError(ObsflowError):
    """A wrong spec, argument or environment (a missing topic, bucket, key, variable):
    terminal, exit 2; the message names what to fix."""

    exit_code: int = EXIT_USAGE


class ServiceUnavailable(ObsflowError):
    """A service (Kafka, object storage, the catalog, a schema registry, Flink) did not
    answer or refused the work: transient, exit 3; the message says what to start or check."""

    exit_code: int = EXIT_UNAVAILABLE
    transient: bool = True


def causes(e: BaseException | None) -> Iterator[BaseException]:
    """``e`` and what it wraps (``__cause__``, else ``__context__``), outermost first;
    guarantees termination on a cyclic chain."""
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__


def is_transient(e: BaseException) -> bool:
    """Whether ``e`` (or the first obsflow error it wraps) is transient; a bare
    ``ConnectionError`` / ``TimeoutError`` counts as transient, anything else does not."""
    for c in causes(e):
        if isinstance(c, ObsflowError):
            return c.transient
        if isinstance(c, (ConnectionError, TimeoutError)):
            return True
    return False
