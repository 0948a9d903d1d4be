"""The one duration grammar of every config model (spec, transforms' configs).

A duration is one or more ``<number><unit>`` terms written together, as Go's
``time.ParseDuration`` (and so the OpenTelemetry Collector and Alertmanager) writes them:
``"500ms"``, ``"30s"``, ``"1m30s"``, ``"2h"``, ``"7d"``, ``"1w"``, ``"1.5h"``. Units: ``ns``,
``us`` (``µs``), ``ms``, ``s``, ``m``, ``h``, ``d``, ``w``. A bare number (``60``, ``"60"``) is
refused: it meant seconds in some keys and milliseconds in others. Every duration lies in
``[0, MAX_DURATION]``; a field that needs more (a window > 0) says so with a pydantic
``Field`` bound on its :data:`Duration`."""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

#: the longest duration any key accepts (100 years of 365 days)
MAX_DURATION = timedelta(days=36500)
#: the shortest positive duration a window, resolution or timeout accepts
MIN_WINDOW = timedelta(milliseconds=1)

_NS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "μs": 1_000,
    "ms": 1_000_000,
    "s": 10**9,
    "m": 60 * 10**9,
    "h": 3600 * 10**9,
    "d": 86400 * 10**9,
    "w": 7 * 86400 * 10**9,
}
_TERM = re.compile(r"(\d{1,18}(?:\.\d{1,9})?)(ns|us|µs|μs|ms|s|m|h|d|w)")
_MAX_NS = int(MAX_DURATION.total_seconds()) * 10**9
_MAX_TEXT = 64
_EXAMPLES = '"30s", "5m", "7d"'


def _bare_number(v: Any) -> bool:
    if isinstance(v, (int, float, Decimal)) and not isinstance(v, bool):
        return True
    if isinstance(v, str):
        try:
            float(v.strip())
        except ValueError:
            return False
        return True
    return False


def parse_duration(v: Any) -> timedelta:
    """Parse a duration; guarantees a ``timedelta`` within ``[0, MAX_DURATION]`` (whole
    microseconds, ``ns`` terms rounded down) or a ``ValueError`` saying what was expected."""
    if isinstance(v, timedelta):
        if not timedelta(0) <= v <= MAX_DURATION:
            raise ValueError(
                f"expected a duration from 0s to {format_duration(MAX_DURATION)}, got {format_duration(v)}"
            )
        return v
    if _bare_number(v):
        raise ValueError(f'a duration needs a unit, e.g. "500ms", "60s", "1m30s", "7d": got the bare number {v!r}')
    if not isinstance(v, str):
        raise ValueError(f"expected a duration like {_EXAMPLES}, got {type(v).__name__} {_short(v)}")  # noqa: TRY004 - pydantic reports ValueError
    s = v.strip()
    if len(s) > _MAX_TEXT:
        raise ValueError(f"expected a duration like {_EXAMPLES}, got a string of {len(s)} characters")
    pos, total = 0, Decimal(0)
    for m in _TERM.finditer(s):
        if m.start() != pos:
            break
        total += Decimal(m.group(1)) * _NS[m.group(2)]
        pos = m.end()
    if pos == 0 or pos != len(s):
        raise ValueError(f"expected a duration like {_EXAMPLES}, got {v!r}")
    if total > _MAX_NS:
        raise ValueError(f"expected a duration of at most {format_duration(MAX_DURATION)}, got {v!r}")
    try:
        return timedelta(microseconds=int(total // 1000))
    except (InvalidOperation, OverflowError):  # pragma: no cover - bounded above
        raise ValueError(f"expected a duration like {_EXAMPLES}, got {v!r}") from None


def _short(v: Any) -> str:
    r = repr(v)
    return r if len(r) <= 60 else r[:57] + "..."


def to_ms(d: timedelta) -> int:
    """A duration in whole milliseconds (rounded down): exact integer arithmetic."""
    return (d.days * 86_400_000) + d.seconds * 1000 + d.microseconds // 1000


def duration_ms(v: Any) -> int:
    """A :data:`Duration` (or its text, e.g. ``"1m"``) in whole milliseconds."""
    return to_ms(v if isinstance(v, timedelta) else parse_duration(v))


def format_duration(v: int | timedelta) -> str:
    """The shortest text of a duration given in ms or as a timedelta (``60000`` → ``"1m"``,
    ``timedelta(seconds=90)`` → ``"90s"``); :func:`parse_duration` reads it back (to the ms)."""
    ms = to_ms(v) if isinstance(v, timedelta) else int(v)
    if isinstance(v, timedelta) and v.microseconds % 1000:
        return f"{v.days * 86_400_000_000 + v.seconds * 1_000_000 + v.microseconds}us"
    if ms == 0:
        return "0s"
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


#: the type of every duration key: text in, ``timedelta`` in the model, text out in JSON
Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "pattern": _TERM.pattern, "examples": ["500ms", "30s", "1m30s", "7d"]}),
]
