"""Values under sensitive keys in JSON text: where each ``"key": value`` is, and the text
with the values under the keys judged sensitive replaced whole by ``"[REDACTED]"``.

The text may be anything a dead letter or a map value holds: JSON, JSON cut short, or
free text quoting JSON. The scan is lenient and never fails: a key is a JSON string
followed by ``:``; its value is a string (up to its closing quote, or the end of the text
when it is cut short), a number, ``true`` / ``false``, or an object or array (up to the
bracket that closes it, counted outside strings, or the end of the text). ``null`` and
anything else is no value: nothing to hide. Two shapes of key are scanned, each in its own
pass (:data:`JSON_KEY`, then :data:`OTLP_KEY` first in a scrubber): a plain
``"key": value`` and OTLP JSON's attribute ``{"key": "k", "value": {"<type>Value": value}}``,
whose typed value is judged by ``k``. The key's verdict is the caller's (a scrubber's
sensitive-key regex on the key with its escapes decoded, :func:`json_unescape`)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import cast

REDACTED_JSON = '"[REDACTED]"'

#: the inside of a JSON string: ``(?:[^"\\]|\\.)*`` unrolled (a run of plain characters,
#: then escapes each followed by a run), possessive. The same matches: the two
#: alternatives start with different characters and a string ends at its first unescaped
#: ``"``, so backtracking never finds another; unrolled, Python's ``re`` scans a long
#: value in a tight character-class loop instead of one group repeat per character
#: (a 66 kB dead letter: ms, not tens of ms)
JSON_CHARS = r'[^"\\]*+(?:\\.[^"\\]*+)*+'
_JSON_STR = r'"(' + JSON_CHARS + r')"'
#: ``"key":`` and the blanks after it (group 1: up to the value, group 2: the key as written)
JSON_KEY = re.compile(r"(" + _JSON_STR + r"\s*:\s*)")
#: OTLP JSON's ``{"key": "k", "value": {"stringValue": `` (any of the AnyValue types), up to
#: the typed value (group 2: ``k`` as written)
OTLP_KEY = re.compile(
    r'("key"\s*:\s*'
    + _JSON_STR
    + r'\s*,\s*"value"\s*:\s*\{\s*"(?:string|int|double|bytes|bool|array|kvlist)Value"\s*:\s*)'
)
#: a string (its closing quote optional: a text cut short), a number, or a bracket
_STRING = re.compile(r'"' + JSON_CHARS + r'"?')
_NUMBER = re.compile(r"-?\d[\d.eE+\-]*+")
_TOKEN = re.compile(r'"' + JSON_CHARS + r'"?|[\[{]|[\]}]')


def json_unescape(raw: str) -> str:
    """The inside of a JSON string with its escapes decoded (``raw`` as it is when one is
    not valid JSON, or decodes to a lone surrogate: no key a column can hold)."""
    try:
        decoded = cast(str, json.loads(f'"{raw}"'))
        decoded.encode("utf-8")
    except ValueError:  # UnicodeEncodeError is one
        return raw
    return decoded


def value_end(text: str, at: int) -> int | None:
    """The end of the JSON value starting at ``at`` (see the module doc: lenient, the end
    of the text when the value is cut short), or None when none starts there (``null``
    included)."""
    if at >= len(text):
        return None
    c = text[at]
    if c == '"':
        return cast(re.Match, _STRING.match(text, at)).end()
    if c == "-" or "0" <= c <= "9":
        m = _NUMBER.match(text, at)
        return m.end() if m else None
    if c in "{[":
        depth = 0
        for m in _TOKEN.finditer(text, at):
            b = text[m.start()]
            if b in "{[":
                depth += 1
            elif b in "}]":
                depth -= 1
                if depth == 0:
                    return m.end()
        return len(text)
    for word in ("true", "false"):
        if text.startswith(word, at):
            return at + len(word)
    return None


def redact_values(text: str, key: re.Pattern[str], hidden: Callable[[str], bool]) -> str:
    """``text`` with the value under each key ``key`` finds that ``hidden`` (given the key
    as written) holds sensitive replaced whole by ``"[REDACTED]"``.

    The scan goes left to right: past a redacted value and past a kept string or number,
    into a kept object or array (its own keys are judged). ``hidden`` is asked about every
    key met whose value is not null (:func:`keys_met` lists them when nothing is hidden)."""
    parts: list[str] = []
    last = pos = 0
    while (m := key.search(text, pos)) is not None:
        at = m.end()
        end = value_end(text, at)
        if end is None:
            pos = at
        elif hidden(m.group(2)):
            parts += [text[last:at], REDACTED_JSON]
            last = pos = end
        else:
            pos = at if text[at] in "{[" else end
    if not parts:
        return text
    parts.append(text[last:])
    return "".join(parts)


def keys_met(text: str, key: re.Pattern[str]) -> set[str]:
    """The keys (as written) :func:`redact_values` asks about when it hides nothing: those
    it meets when it hides some, except, rarely, a key it meets only past a hidden value."""
    met: set[str] = set()

    def collect(k: str) -> bool:
        met.add(k)
        return False

    redact_values(text, key, collect)
    return met
