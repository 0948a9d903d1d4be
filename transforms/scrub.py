"""Scrub: remove personal data before anything is stored.

Consumes table-named columns; emits the same rows where no string holds an e-mail address,
a Luhn-valid payment card number, a bearer token or an API key:
- free-text columns (every string column that is not an identifier or a validated code,
  e.g. page, target, form, reported_location, error message and stack, log message, span
  name and status message, metric name, user agent) get placeholders: ``[EMAIL]``
  (also ``%40``-encoded), ``[CARD]`` (13-19 digits, Luhn-checked, also glued to letters
  or ``_``: ``card4111111111111111``), ``Bearer [TOKEN]``, ``[TOKEN]`` (a JWT),
  ``[API_KEY]`` (known key shapes and ``api_key=…``/``token: …`` assignments);
- identifier columns (``IDENTIFIER_COLUMNS``: event_id, session_id, service, request_id,
  host, env) that hold any of those are replaced whole by their keyed pseudonym, so joins
  on them still work (placeholders when no key is configured);
- map columns (span attributes and resource, log attributes, metric labels): the value of
  every key matching ``ScrubStep.sensitive_keys`` (authorization, cookie, set-cookie,
  password, token, secret, api key … as regexes, case-insensitive) is replaced whole by
  ``[REDACTED]`` (the Collector's redaction processor's ``blocked_key_patterns``); every
  other key and value is free text;
- ``client_ip`` kept for enrichment but copied to ``client_ip_anon`` as its network
  address (IPv4 /24, IPv6 /48 by default); the raw IP is never written to a table;
- ``user_id`` replaced by ``user_pseudonym``: HMAC-SHA256 under a key from the spec or
  the environment (never a default key), hex, 32 characters.
Validated codes and random ids (trace/span ids, event type, level, kind, status) are left
as they are. :meth:`Scrubber.scrub_raw` scrubs dead-letter payloads (see there).
All regex work is columnar (RE2 via ``pyarrow.compute``) and runs once per distinct value;
Python only sees the rare card-number candidates (for the Luhn check) and each distinct
pseudonymized value and IPv6 address once per batch.

Two hot paths give the same output (tests/privacy/test_hotpath_parity.py holds that):
``python``, the reference above, and ``native`` (the default): the compiled extension's
one-pass prefilter (``obsflow_native.scrub_hints``, a superset of the hint regex) picks the
values that may hold anything, and only those go through the reference rewrite, each
distinct one once per process (a bounded cache: the rewrite is a pure function of the
value); pseudonyms are computed by the extension (HMAC-SHA256, native/src/pseudonym.rs),
or cached likewise without it. Chosen by ``$OBSFLOW_HOTPATH``, else
``$OBSFLOW_DECODER`` (so ``OBSFLOW_DECODER=python`` runs the whole reference path), else
``native``; without the extension the prefilter is the hint regex itself."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core.encodings import one_array
from core.errors import ConfigurationError
from transforms.sensitive_json import JSON_KEY, OTLP_KEY, json_unescape, keys_met, redact_values

try:  # the compiled prefilter (native/src/scrub.rs); the hint regex stands in without it
    import obsflow_native as _native
except ImportError:  # pragma: no cover - exercised when the extension is not built
    _native = None
if _native is not None and not all(hasattr(_native, f) for f in ("scrub_hints", "control_bytes", "pseudonyms")):
    _native = None  # an older build (decoders only): the hot path's Python stand-ins run
#: the compiled key-candidate scan (native/src/scrub.rs); the gate regex stands in without it
_json_keys = getattr(_native, "json_key_candidates", None)
#: the compiled framed-key listing of binary payloads (native/src/scrub.rs), likewise
_framed_keys = getattr(_native, "framed_key_candidates", None)

if TYPE_CHECKING:  # the spec model is a layer above transforms: types only, never imported at run time
    from pipelines.spec import PrivacySpec, ScrubStep

# Bounded as RFC 5321 bounds an address (local part <= 64, a label <= 63): with unbounded
# runs, Python's backtracking ``re`` (the binary path) took quadratic time on a long run of
# letters (a 1 MB dead-letter payload of one letter: 6 minutes); bounded, it is linear.
EMAIL = (
    r"[A-Za-z0-9._%+\-]{1,64}(?:@|%40)[A-Za-z0-9\-]{1,63}(?:\.[A-Za-z0-9\-]{1,63})*"
    r"\.[A-Za-z]{2,63}"
)
BEARER = r"(?i)\bbearer(?:\s|%20|\+)+[A-Za-z0-9\-._~+/]+=*"
JWT = r"eyJ[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]*"
API_KEY_ASSIGN = (
    r"(?i)(api[_\- ]?key|apikey|access[_\- ]?key|secret[_\- ]?key|client[_\- ]?secret|auth[_\- ]?token|"
    r"access[_\- ]?token|refresh[_\- ]?token|x-api-key|password|passwd|token|secret)"
    r"(\s*[\"']?\s*[:=]\s*[\"']?)[A-Za-z0-9_\-./+=]{6,}"
)
API_KEY_KNOWN = (
    r"(?:sk|pk|rk)_(?:live|test)_[A-Za-z0-9]{10,}|AKIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{20,}"
    r"|xox[abprs]-[A-Za-z0-9\-]{10,}|AIza[0-9A-Za-z\-_]{35}"
)
CARD_CANDIDATE = r"\d(?:[ \-]?\d){12,18}"
CARD_HINT = r"\d(?:[ \-]?\d){12}"
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
IPV4_STRICT = rf"^({_OCTET}\.{_OCTET}\.{_OCTET})\.{_OCTET}$"
#: ``IPV4_STRICT`` with its group named, for ``pc.extract_regex``
IPV4_FIRST3 = rf"^(?P<first3>{_OCTET}\.{_OCTET}\.{_OCTET})\.{_OCTET}$"
API_KEY_HINT = r"(?i)key|secret|token|passw|sk_|pk_|rk_|AKIA|gh[pousr]_|xox|AIza"
IPV4 = r"^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$"
REDACTED = "[REDACTED]"

#: string columns that identify something: a value holding personal data becomes its pseudonym
IDENTIFIER_COLUMNS = frozenset({"event_id", "session_id", "service", "request_id", "host", "env"})
#: string columns never rewritten: validated codes and hex ids (checked before scrubbing),
#: and the columns pseudonymized or anonymized on their own
EXEMPT_COLUMNS = frozenset(
    {
        "trace_id",
        "span_id",
        "parent_span_id",
        "event_type",
        "level",
        "kind",
        "status_code",
        "temporality",
        "user_id",
        "client_ip",
        "_i",
    }
)

_CARD_RUN = re.compile(r"\d(?:[ \-]?\d){12,}")  # maximal runs of 13 digits or more
_SEP = re.compile(r"[ \-]")
_HEX_WORD = re.compile(r"[0-9a-fA-F]+")
_HEX_LETTER = re.compile(r"[a-fA-F]")
_WORD_START = re.compile(r"[A-Za-z0-9]*")
_ALNUM = frozenset("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


HOTPATHS = ("native", "python")
#: a dictionary encoding of a string array (``pc.dictionary_encode`` or a shared one)
Encode = Callable[[pa.Array], pa.DictionaryArray]


def _combined(col):
    """The reference's one array: the chunks concatenated (a copy even of one chunk)."""
    return col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col


#: distinct scrubbed values (and pseudonyms) kept per scrubber; a full cache empties itself
CACHE_SIZE = 100_000


def chosen_hotpath() -> str:
    """``native`` or ``python``: ``$OBSFLOW_HOTPATH``, else ``$OBSFLOW_DECODER``, else
    ``native``. ``ValueError`` names a value that is neither."""
    choice = os.environ.get("OBSFLOW_HOTPATH") or os.environ.get("OBSFLOW_DECODER") or "native"
    if choice not in HOTPATHS:
        raise ValueError(f"hot path: expected one of {', '.join(HOTPATHS)}, got {choice!r}")
    return choice


class _Cache(dict):
    """A dict that empties itself when it reaches ``limit`` entries."""

    def __init__(self, limit: int):
        super().__init__()
        self.limit = limit

    def put(self, key, value):
        if len(self) >= self.limit:
            self.clear()
        self[key] = value
        return value


class MissingKeyError(ConfigurationError, RuntimeError):
    """No pseudonymization key configured."""

    hint = " (or pass --dev-key for a local trial)"


def _rewrite(col: pa.Array, candidates: pa.Array, fn) -> pa.Array:
    """Apply ``fn`` to the rows where ``candidates`` is true; keep the others as they are."""
    if not pc.any(candidates).as_py():  # the common case: one call, nothing to do
        return col
    candidates = candidates.fill_null(False)
    if pc.all(candidates).as_py():
        return fn(col)
    return pc.replace_with_mask(col, candidates, fn(col.filter(candidates)))


def luhn_ok(digits: str) -> bool:
    total, alt = 0, False
    for ch in reversed(digits):
        d = ord(ch) - 48
        if alt:
            d *= 2
            if d > 9:
                d -= 9
        total += d
        alt = not alt
    return total % 10 == 0


def _card_number(digits: str) -> bool:
    """13-19 digits that pass the Luhn check and start as payment cards do: 2-6 (Visa,
    Mastercard, Amex, Diners, Discover, JCB, UnionPay, Maestro), or 1 with 15 digits
    (UATP). Epoch timestamps in ms, µs and ns (13, 16, 19 digits starting with 1) are not."""
    n = len(digits)
    if not 13 <= n <= 19:
        return False
    first = digits[0]
    return ("2" <= first <= "6" or (first == "1" and n == 15)) and luhn_ok(digits)


def _in_hex_id(text: str, start: int, end: int) -> bool:
    """True when the digits at ``start:end`` sit in a word of 16 or more hexadecimal
    characters with at least 4 letters (a trace id, a hash, a hex event id): random ids,
    whose digit runs are not card numbers (a card glued to up to 3 hex letters is still one). ``card4111…``, ``4111…USD`` and
    ``x_4111…`` are not such words (``r``, ``U``, ``S`` are no hex digits, ``_`` ends a word)."""
    lo = start
    while lo > 0 and text[lo - 1] in _ALNUM:
        lo -= 1
    hi = cast(re.Match, _WORD_START.match(text, end)).end()
    if hi - lo < 16:
        return False
    word = text[lo:hi]
    return _HEX_WORD.fullmatch(word) is not None and len(_HEX_LETTER.findall(word)) >= 4


def _card_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of every Luhn-valid card number in ``text``: a maximal run of digits
    (single spaces or dashes between them allowed) with 13-19 digits; in a longer run,
    any consecutive separator-delimited groups that form one. Letters and ``_`` around a
    run do not protect it (``card4111111111111111``); a random hex id does
    (:func:`_in_hex_id`)."""
    out = []
    for m in _CARD_RUN.finditer(text):
        if _in_hex_id(text, m.start(), m.end()):
            continue
        run = m.group(0)
        digits = _SEP.sub("", run)
        if _card_number(digits):
            out.append((m.start(), m.end()))
            continue
        if len(digits) < 13 or not _SEP.search(run):
            continue
        groups = [(g.start(), g.end()) for g in re.finditer(r"\d+", run)]
        k = 0
        while k < len(groups):
            hit = None
            for j in range(k, len(groups)):
                n = sum(e - s for s, e in groups[k : j + 1])
                if n > 19:
                    break
                if n >= 13 and _card_number("".join(run[s:e] for s, e in groups[k : j + 1])):
                    hit = j
            if hit is None:
                k += 1
                continue
            out.append((m.start() + groups[k][0], m.start() + groups[hit][1]))
            k = hit + 1
    return out


def _mask_cards(text: str, same_length: bool = False) -> str:
    """``text`` with each card number (:func:`_card_spans`) replaced by ``[CARD]`` (or by
    as many ``*`` as it has characters)."""
    spans = _card_spans(text)
    if not spans:
        return text
    parts, last = [], 0
    for s, e in spans:
        parts += [text[last:s], "*" * (e - s) if same_length else "[CARD]"]
        last = e
    parts.append(text[last:])
    return "".join(parts)


def sensitive_key_regex(patterns: list[str]) -> str:
    """One RE2 regex (case-insensitive) matching any key that ``patterns`` match."""
    return "(?i)" + "|".join(f"(?:{p})" for p in patterns)


#: RE2's zero-width assertions written as an escape (``\Z``: Python's spelling of ``\z``)
_ASSERTION_ESCAPES = frozenset("AzZbB")


def without_assertions(pattern: str) -> str:
    r"""``pattern`` with every zero-width assertion outside a character class (``^``, ``$``,
    ``\A``, ``\z``, ``\b``, ``\B``) replaced by the empty group ``(?:)``.

    Guarantee: a string the result does not match holds no substring that ``pattern``
    matches. An assertion only forbids matches, so dropping it can only add some; a match
    inside a substring (a key inside a dead letter) is a match inside the whole string
    once nothing refers to the substring's ends. Escaped characters, ``\Q…\E`` literals
    and classes (``[^a-z]``, ``[$^]``, ``[[:alpha:]]``) are kept as they are."""
    out: list[str] = []
    i, n = 0, len(pattern)
    in_class = False
    while i < n:
        c = pattern[i]
        if c == "\\" and i + 1 < n:
            nxt = pattern[i + 1]
            if nxt == "Q":  # a literal up to \E (or the end)
                end = pattern.find("\\E", i + 2)
                end = n if end < 0 else end + 2
                out.append(pattern[i:end])
                i = end
                continue
            out.append("(?:)" if not in_class and nxt in _ASSERTION_ESCAPES else pattern[i : i + 2])
            i += 2
            continue
        if in_class:
            if pattern.startswith("[:", i):  # a POSIX class inside a class: [[:alpha:]]
                end = pattern.find(":]", i + 2)
                end = n if end < 0 else end + 2
                out.append(pattern[i:end])
                i = end
                continue
            in_class = c != "]"
            out.append(c)
            i += 1
            continue
        if c == "[":
            # a "]" first in the class (after an optional "^") is a literal, not its end
            j = i + 1 + (pattern.startswith("^", i + 1))
            j += pattern.startswith("]", j)
            out.append(pattern[i:j])
            i, in_class = j, True
            continue
        out.append("(?:)" if c in "^$" else c)
        i += 1
    return "".join(out)


def sensitive_key_gate(patterns: list[str]) -> str | None:
    """One RE2 regex (case-insensitive) that matches every text holding a key that
    ``patterns`` match (:func:`without_assertions` of each), or None when that regex does
    not compile (then every text must be looked at)."""
    gate = sensitive_key_regex([without_assertions(p) for p in patterns])
    try:
        pc.match_substring_regex(pa.array([""], pa.string()), gate)
    except pa.ArrowInvalid:
        return None
    return gate


def pseudonym_key(privacy: PrivacySpec) -> bytes:
    """The HMAC key: ``privacy.pseudonym_key`` or ``$<privacy.pseudonym_key_env>``."""
    if privacy.pseudonym_key is not None:
        return privacy.pseudonym_key.get_secret_value().encode()
    value = os.environ.get(privacy.pseudonym_key_env)
    if not value:
        raise MissingKeyError(
            f"no pseudonymization key: set the environment variable {privacy.pseudonym_key_env} "
            f"(or privacy.pseudonym_key in the spec) to a secret of at least 16 characters"
        )
    if len(value) < 16:
        raise MissingKeyError(f"{privacy.pseudonym_key_env} is too short: use at least 16 characters")
    return value.encode()


#: Python patterns (same meaning as the RE2 ones) for byte-for-byte masking of binary payloads
_BINARY_EMAIL, _BINARY_JWT, _BINARY_KNOWN = (re.compile(p) for p in (EMAIL, JWT, API_KEY_KNOWN))
_BINARY_ASSIGN = re.compile(API_KEY_ASSIGN[4:], re.IGNORECASE)
_BINARY_BEARER = re.compile(BEARER[4:], re.IGNORECASE)
#: literals (lowered) one of which every API_KEY_KNOWN and API_KEY_ASSIGN match holds
_BINARY_API_HINTS = ("key", "secret", "token", "passw", "sk_", "pk_", "rk_", "akia", "gh", "xox", "aiza")

_PRINTABLE = re.compile(r"[\x20-\x7e]+")  # where a framed key may be (a key may be 1 byte long)
_KEY = re.compile(r"[A-Za-z0-9._\-:/]+")  # what an attribute key in framed binary looks like
_CONTROL = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _mask_value_at(data: bytearray, at: int) -> bool:
    """Mask the length-prefixed value framed at ``at`` (Avro string, or OTLP ``12 len 0a
    len value``: printable, masked byte for byte; or an OTLP ``AnyValue`` of another type,
    :func:`_mask_any_value`); True when one was found."""
    n = len(data)
    if data[at] == 0x12 and at + 3 < n and data[at + 2] == 0x0A:  # protobuf AnyValue{string_value}
        length, first = data[at + 3], at + 4
    elif data[at] % 2 == 0:  # Avro: zigzag varint of a non-negative length
        length, first = data[at] >> 1, at + 1
    else:
        return False
    last = first + length
    if length == 0 or last > n or not all(0x20 <= c < 0x7F for c in data[first:last]):
        return _mask_any_value(data, at)
    data[first:last] = b"*" * length
    return True


#: protobuf tags of an OTLP ``AnyValue`` that is not a string: bool, int (varints), double
#: (fixed64); array, kvlist, bytes (length-delimited)
_ANY_VARINT, _ANY_DOUBLE, _ANY_DELIMITED = frozenset({0x10, 0x18}), 0x21, frozenset({0x2A, 0x32, 0x3A})


def _mask_any_value(data: bytearray, at: int) -> bool:
    """Replace an OTLP ``KeyValue``'s value framed at ``at`` (``12 len AnyValue``, one-byte
    length) that is a bool, an int, a double, an array, a key-value list or bytes by a
    string value of ``*`` of the same size (``0a len-2 ***``): the message keeps its length
    and still decodes, and nothing of the value is left. True when one was found: the
    ``AnyValue`` must be exactly one such field filling the frame."""
    n = len(data)
    if data[at] != 0x12 or at + 3 >= n:
        return False
    size, first = data[at + 1], at + 2
    last = first + size
    if size >= 0x80 or size < 2 or last > n:
        return False
    tag = data[first]
    if tag in _ANY_VARINT:
        varint = data[first + 1 : last]
        fits = all(b >= 0x80 for b in varint[:-1]) and varint[-1] < 0x80 and len(varint) <= 10
    elif tag == _ANY_DOUBLE:
        fits = size == 9
    else:
        fits = tag in _ANY_DELIMITED and data[first + 1] < 0x80 and data[first + 1] + 2 == size
    if not fits:
        return False
    data[first:last] = bytes([0x0A, size - 2]) + b"*" * (size - 2)
    return True


_NO_DATA = pa.py_buffer(b"")


#: wire fields whose value identifies a person: the tables hold them only pseudonymized
#: (``user``, a log record's ``user_id``) or anonymized (``client_ip``); in a dead letter's
#: JSON text their values are redacted whole (:meth:`Scrubber.scrub_raw`)
PERSONAL_FIELDS = frozenset({"user", "user_id", "client_ip"})
_PERSONAL_GATE = "|".join(f'"{f}"' for f in sorted(PERSONAL_FIELDS)) + r"|\\"


def _redact_personal_fields(arr: pa.Array) -> pa.Array:
    """JSON texts with the value under each :data:`PERSONAL_FIELDS` key (escapes decoded)
    replaced whole by ``"[REDACTED]"``; only texts naming one (or holding a backslash) are
    scanned. ``arr`` itself when none changes."""
    gate = pc.fill_null(pc.match_substring_regex(arr, _PERSONAL_GATE), False)
    if not pc.any(gate).as_py():
        return arr
    at = pc.indices_nonzero(gate)
    texts = arr.take(at).to_pylist()
    new = [redact_values(t, JSON_KEY, lambda raw: json_unescape(raw) in PERSONAL_FIELDS) for t in texts]
    if all(n is t for n, t in zip(new, texts)):
        return arr
    mask = np.zeros(len(arr), dtype=np.bool_)
    mask[at.to_numpy()] = True
    return pc.replace_with_mask(arr, pa.array(mask), pa.array(new, arr.type))


class Scrubber:
    """Scrub one signal's rows per ``ScrubStep`` and ``PrivacySpec``.

    ``implicit``: the scrubber a flow without a ``scrub`` step gets (text, identifiers,
    maps and dead letters are scrubbed all the same; user ids and IPs are not stored by
    such a flow, so no key is required)."""

    def __init__(
        self, signal: str, step: ScrubStep, privacy: PrivacySpec, implicit: bool = False, hotpath: str | None = None
    ):
        self.signal = signal
        #: ``native``: prefilter + caches; ``python``: the reference (same output)
        self.hotpath = hotpath or chosen_hotpath()
        if self.hotpath not in HOTPATHS:
            raise ValueError(f"hot path: expected one of {', '.join(HOTPATHS)}, got {self.hotpath!r}")
        self._text_cache: _Cache = _Cache(CACHE_SIZE)
        self._pseudonyms: _Cache = _Cache(CACHE_SIZE)
        #: keys -> sensitive (the ``native`` hot path: :meth:`_sensitive_among`'s verdicts)
        self._key_verdicts: _Cache = _Cache(CACHE_SIZE)
        #: JSON key candidates as written -> sensitive once decoded (the ``native`` gate, :meth:`_may_hide`)
        self._raw_key_verdicts: _Cache = _Cache(CACHE_SIZE)
        self.step = step
        self.privacy = privacy
        if step.pseudonymize_users and not implicit:
            self.key: bytes | None = pseudonym_key(privacy)
        else:
            try:
                self.key = pseudonym_key(privacy)
            except MissingKeyError:
                self.key = None  # identifiers holding personal data get placeholders instead
        self._keyed_hmac: hmac.HMAC | None = None
        self.sensitive = sensitive_key_regex(step.sensitive_keys) if step.sensitive_keys else None
        #: what a text (a dead letter, a printable run of one) must match to hold a sensitive key
        #: (:func:`sensitive_key_gate`); None: every text is looked at
        self.sensitive_gate = sensitive_key_gate(step.sensitive_keys) if step.sensitive_keys else None
        self._v4_mask = (0xFFFFFFFF << (32 - privacy.ipv4_prefix)) & 0xFFFFFFFF
        hints = (
            ([r"@|%40"] if step.emails else [])
            + ([r"(?i:earer)|eyJ"] if step.bearer_tokens else [])
            + ([API_KEY_HINT.replace("(?i)", "(?i:") + ")"] if step.api_keys else [])
            + ([CARD_HINT] if step.card_numbers else [])
        )
        self._any_hint = "|".join(hints) if hints else None

    # -- free text ---------------------------------------------------------------------

    def scrub_text(self, col, distinct_first: bool = True, encode: Encode = pc.dictionary_encode):
        """Replace personal data in one string column (placeholders).

        One RE2 pass finds the values that may hold anything (most hold nothing); only
        those are rewritten, pattern by pattern. With ``distinct_first`` (free text:
        pages, targets and repeated messages collapse a lot) that pass runs once per
        distinct value; without (identifiers, nearly all distinct) over the column.
        ``encode`` (the ``native`` path): the dictionary encoding, e.g. a batch's shared
        one (:class:`core.encodings.Encodings`); it must equal ``pc.dictionary_encode``."""
        col = one_array(col) if self.hotpath == "native" else _combined(col)
        if len(col) == 0 or col.null_count == len(col) or self._any_hint is None:
            return col
        if self.hotpath == "native":
            if distinct_first:
                enc = encode(col)
                if len(enc.dictionary) < len(col):
                    d = enc.dictionary
                    new = self._scrub_prefiltered(d)
                    return col if new is d else new.take(enc.indices)
            return self._scrub_prefiltered(col)
        if distinct_first:
            enc = pc.dictionary_encode(col)
            if len(enc.dictionary) < len(col):
                d = enc.dictionary
                return _rewrite(d, pc.match_substring_regex(d, self._any_hint), self._scrub_candidates).take(
                    enc.indices
                )
        return _rewrite(col, pc.match_substring_regex(col, self._any_hint), self._scrub_candidates)

    def _hint_mask(self, col: pa.Array) -> pa.Array | None:
        """True where a value may hold personal data (a superset of the rows the hint
        regex matches; nulls false), or None when no value may."""
        if _native is not None and pa.types.is_string(col.type):
            _validity, offsets, data = col.buffers()
            flags = np.frombuffer(
                _native.scrub_hints(offsets, data if data is not None else _NO_DATA, col.offset, len(col)),
                dtype=np.bool_,
            )
            if not flags.any():
                return None
            mask = pa.array(flags)
            if col.null_count:
                mask = pc.and_(mask, pc.is_valid(col))
        else:
            mask = pc.match_substring_regex(col, cast(str, self._any_hint)).fill_null(False)
        return mask if pc.any(mask).as_py() else None

    def _scrub_prefiltered(self, col: pa.Array) -> pa.Array:
        """The ``native`` hot path of :meth:`scrub_text`: the reference rewrite
        (:meth:`_scrub_candidates`, identity on values the hint regex does not match) on the
        prefiltered values only, each distinct value once (cached across batches). ``col``
        itself when no value changes."""
        mask = self._hint_mask(col)
        if mask is None:
            return col
        enc = pc.dictionary_encode(col.filter(mask))
        distinct = enc.dictionary.to_pylist()
        cache = self._text_cache
        done = [cache.get(v) for v in distinct]
        todo = [v for v, r in zip(distinct, done) if r is None]
        if todo:
            fresh = iter(self._scrub_candidates(pa.array(todo, col.type)).to_pylist())
            done = [r if r is not None else cache.put(v, next(fresh)) for v, r in zip(distinct, done)]
        if done == distinct:
            return col
        return pc.replace_with_mask(col, mask, pa.array(done, col.type).take(enc.indices))

    def _scrub_candidates(self, col: pa.Array) -> pa.Array:
        s = self.step
        if s.emails:
            col = _rewrite(
                col,
                pc.or_(pc.match_substring(col, "@"), pc.match_substring(col, "%40")),
                lambda c: pc.replace_substring_regex(c, EMAIL, "[EMAIL]"),
            )
        if s.bearer_tokens:
            col = _rewrite(
                col,
                pc.match_substring(col, "earer", ignore_case=True),
                lambda c: pc.replace_substring_regex(c, BEARER, "Bearer [TOKEN]"),
            )
            col = _rewrite(col, pc.match_substring(col, "eyJ"), lambda c: pc.replace_substring_regex(c, JWT, "[TOKEN]"))
        if s.api_keys:
            col = _rewrite(
                col,
                pc.match_substring_regex(col, API_KEY_HINT),
                lambda c: pc.replace_substring_regex(
                    pc.replace_substring_regex(c, API_KEY_KNOWN, "[API_KEY]"), API_KEY_ASSIGN, r"\1\2[API_KEY]"
                ),
            )
        if s.card_numbers:
            col = _rewrite(
                col,
                pc.match_substring_regex(col, CARD_CANDIDATE),
                lambda c: pa.array([None if v is None else _mask_cards(v) for v in c.to_pylist()], pa.string()),
            )
        return col

    # -- identifiers and maps ------------------------------------------------------------

    def scrub_identifier(self, col) -> pa.Array:
        """Values holding personal data replaced whole by their pseudonym (so every row
        with that value still joins); placeholders when no key is configured."""
        col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
        scrubbed = self.scrub_text(col, distinct_first=False)
        if scrubbed is col:  # nothing to rewrite
            return col
        changed = pc.fill_null(pc.not_equal(scrubbed, col), False)
        if not pc.any(changed).as_py():
            return col
        if self.key is None:
            return scrubbed
        return pc.replace_with_mask(col, changed, self.pseudonymize(col.filter(changed)))

    def scrub_map(self, col) -> pa.Array:
        """A ``map<string, string>`` column: sensitive keys' values redacted whole, every
        other key and value scrubbed as free text. Nulls and entry order are kept."""
        col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
        if len(col) == 0 or col.null_count == len(col):
            return col
        offsets = col.offsets
        first = offsets[0].as_py()
        n = offsets[-1].as_py() - first
        keys = col.keys.slice(first, n)
        items = col.items.slice(first, n)
        if not pa.types.is_string(items.type) or not pa.types.is_string(keys.type):
            return col
        if self.sensitive is not None and n:
            hide = pc.fill_null(pc.and_(pc.match_substring_regex(keys, self.sensitive), pc.is_valid(items)), False)
            if pc.any(hide).as_py():
                items = pc.if_else(hide, pa.scalar(REDACTED), items)
        if self.sensitive is not None and n:  # a nested value (JSON text): the values under its sensitive keys
            items = self._redact_json_keys(items)
        new = pa.MapArray.from_arrays(
            pc.subtract(offsets, first),
            self.scrub_text(keys),
            self.scrub_text(items),
            mask=col.is_null() if col.null_count else None,
        )
        return new.cast(col.type) if new.type != col.type else new

    # -- users and IPs ------------------------------------------------------------------

    def pseudonymize(self, col) -> pa.Array:
        """Keyed pseudonyms, computed once per distinct id in the batch."""
        col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
        enc = pc.dictionary_encode(col)
        keyed = self._keyed_hmac
        if keyed is None:
            keyed = self._keyed_hmac = hmac.new(
                cast(bytes, self.key), digestmod=hashlib.sha256
            )  # keyed once, copied per id

        def pseudonym(u: str) -> str:
            h = keyed.copy()
            h.update(u.encode())
            return h.hexdigest()[:32]

        if self.hotpath == "native" and _native is not None and pa.types.is_string(col.type):
            d = enc.dictionary  # the distinct values, no nulls (they stay in the indices)
            if len(d) == 0:
                return pa.nulls(len(col), pa.string())
            _validity, offsets, data = d.buffers()
            hexes = _native.pseudonyms(
                cast(bytes, self.key), offsets, data if data is not None else _NO_DATA, d.offset, len(d)
            )
            ends = pa.py_buffer(np.arange(0, 32 * (len(d) + 1), 32, dtype=np.int32))
            return pa.Array.from_buffers(pa.string(), len(d), [None, ends, pa.py_buffer(hexes)]).take(enc.indices)
        if self.hotpath == "native":  # the same pseudonyms, each computed once per process (bounded)
            cache = self._pseudonyms
            uniq = [
                None if u is None else (cache.get(u) or cache.put(u, pseudonym(u))) for u in enc.dictionary.to_pylist()
            ]
        else:
            uniq = [None if u is None else pseudonym(u) for u in enc.dictionary.to_pylist()]
        return pa.array(uniq, pa.string()).take(enc.indices)

    def anonymize_ip(self, col, encode: Encode = pc.dictionary_encode) -> pa.Array:
        """Network address of each IP: IPv4 columnar (for a /24), everything else once per
        distinct value with ``ipaddress``. Values that are not IPs become null
        (enrichment decides whether that rejects the record). ``encode``: as in
        :meth:`scrub_text`."""
        col = one_array(col) if self.hotpath == "native" else _combined(col)
        enc = encode(col)
        if len(enc.dictionary) < len(col):
            return self._anonymize(enc.dictionary).take(enc.indices)
        return self._anonymize(col)

    def _anonymize(self, col: pa.Array) -> pa.Array:
        if self.privacy.ipv4_prefix == 24:
            if self.hotpath == "native":  # one RE2 pass: the first three octets, null where no IPv4
                first3 = pc.extract_regex(col, IPV4_FIRST3)
                fast = pc.binary_join_element_wise(pc.struct_field(first3, [0]), ".0", "")
                rest = pc.and_(pc.is_null(first3), pc.is_valid(col))
            else:
                is_v4 = pc.match_substring_regex(col, IPV4_STRICT).fill_null(False)
                fast = pc.if_else(
                    is_v4, pc.replace_substring_regex(col, IPV4_STRICT, r"\1.0"), pa.scalar(None, pa.string())
                )
                rest = pc.and_(pc.invert(is_v4), pc.is_valid(col))
            if not pc.any(rest).as_py():
                return fast
            return pc.replace_with_mask(fast, rest, self._anonymize_each(col.filter(rest)))
        return self._anonymize_each(col)

    def _anonymize_each(self, col: pa.Array) -> pa.Array:
        enc = pc.dictionary_encode(col)
        out: list[str | None] = []
        for u in enc.dictionary.to_pylist():
            try:
                ip = ipaddress.ip_address(u)
                prefix = self.privacy.ipv4_prefix if ip.version == 4 else self.privacy.ipv6_prefix
                out.append(str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False).network_address))
            except ValueError:
                out.append(None)
        return pa.array(out, pa.string()).take(enc.indices)

    # -- dead letters ---------------------------------------------------------------------

    def scrub_raw(self, values: list[bytes | None]) -> tuple[list[bytes | None], list[bool | None]]:
        """Dead-letter payloads without personal data, and per payload whether it was text.

        A payload that decodes as UTF-8 without control bytes is scrubbed as free text
        (placeholders); in JSON the value under a wire field that holds a person's
        identifier (:data:`PERSONAL_FIELDS`: a table stores it only pseudonymized or
        anonymized) is redacted whole, whatever the flow's settings, and the value under a
        sensitive key
        (``"authorization": "…"``, OTLP JSON's ``{"key": "…token…", "value": {"stringValue":
        "…"}}``) is redacted whole. Any other payload (Avro, protobuf) has every match, and
        the value framed after a sensitive key (:meth:`_mask_framed_values`), masked byte for
        byte with ``*`` (lengths kept, so it still decodes); ``None`` stays ``None``."""
        texts: list[str | None] = []
        is_text: list[bool | None] = []
        out: list[bytes | None] = [None] * len(values)
        binary_at = []
        if self.hotpath == "native" and _native is not None and all(v is None or type(v) is bytes for v in values):
            control = np.frombuffer(_native.control_bytes(values), dtype=np.bool_).tolist()  # one compiled pass
        else:
            control = [v is not None and _CONTROL.search(v) is not None for v in values]
        for k, v in enumerate(values):
            if v is None:
                texts.append(None)
                is_text.append(None)
                continue
            try:
                if control[k]:  # framed binary (Avro, protobuf) may be all ASCII
                    raise UnicodeDecodeError("utf-8", v, 0, 1, "control bytes")
                texts.append(v.decode("utf-8"))
                is_text.append(True)
            except UnicodeDecodeError:
                texts.append(None)
                is_text.append(False)
                binary_at.append(k)
        if any(t is not None for t in texts):
            arr = _redact_personal_fields(pa.array(texts, pa.string()))
            if self.sensitive is not None:
                arr = self._redact_json_keys(arr)
            for k, t in enumerate(self.scrub_text(arr).to_pylist()):
                if t is not None:
                    out[k] = t.encode("utf-8")
        datas = [bytearray(cast(bytes, values[k])) for k in binary_at]
        self._mask_framed_values(*datas)
        for k, data in zip(binary_at, datas):
            out[k] = self._mask_matches(data)
        return out, is_text

    def _sensitive_among(self, keys: set[str]) -> set[str]:
        """The keys of ``keys`` that a sensitive-key pattern matches: RE2, searched in the
        key, case-insensitive (:meth:`scrub_map`'s verdict on a map key), one columnar call."""
        if not keys or self.sensitive is None:
            return set()
        if self.hotpath == "native":  # each distinct key judged once per process (bounded cache)
            cache = self._key_verdicts
            known = {k: cache[k] for k in keys if k in cache}  # before any put: a full cache empties itself
            unseen = [k for k in keys if k not in known]
            if unseen:
                arr = pa.array(unseen, pa.string())
                hits = set(arr.filter(pc.match_substring_regex(arr, self.sensitive)).to_pylist())
                known.update((k, cache.put(k, k in hits)) for k in unseen)
            return {k for k, hidden in known.items() if hidden}
        arr = pa.array(list(keys), pa.string())
        return set(arr.filter(pc.match_substring_regex(arr, self.sensitive)).to_pylist())

    def _redact_json_keys(self, arr: pa.Array) -> pa.Array:
        """JSON text with the value under each sensitive key replaced whole by
        ``"[REDACTED]"``, whatever its type (string, number, boolean, object, array; a null
        stays null), also in text cut short (:mod:`transforms.sensitive_json`): a plain
        ``"key": value`` and OTLP JSON's ``{"key": "…", "value": {"<type>Value": value}}``.
        A key is sensitive when a pattern matches it as in a map (:meth:`_sensitive_among`),
        with its escapes decoded (``"pass\\u0077ord"``; as written when they are not valid
        JSON). Only texts holding a ``"`` that the gate (:func:`sensitive_key_gate`, a
        superset) or a backslash matches are scanned (in Python: each key judged once per
        call, in one columnar call per key shape). ``arr`` itself when nothing changes."""
        if self.hotpath == "native" and _json_keys is not None and pa.types.is_string(arr.type):
            gated = self._may_hide(arr)
            if gated is None:
                return arr
            mask, known = gated
            at = pc.indices_nonzero(mask)
        else:
            quoted = pc.fill_null(pc.match_substring(arr, '"'), False)  # no quote, no JSON key
            if not pc.any(quoted).as_py():
                return arr
            at = pc.indices_nonzero(quoted)
            if self.sensitive_gate is not None:  # an escaped key may match once decoded: any text with a backslash
                gate = pc.fill_null(pc.match_substring_regex(arr.take(at), self.sensitive_gate + r"|\\"), False)
                if not pc.any(gate).as_py():
                    return arr
                at = at.filter(gate)
            known = None
        texts = self._redacted(arr.take(at).to_pylist(), known)
        if texts is None:
            return arr
        mask = np.zeros(len(arr), dtype=np.bool_)
        mask[at.to_numpy()] = True
        return pc.replace_with_mask(arr, pa.array(mask), pa.array(texts, arr.type))

    def _may_hide(self, texts: pa.Array) -> tuple[np.ndarray, dict[str, bool] | None] | None:
        """The ``native`` hot path's gate of :meth:`_redact_json_keys`: true where a text
        holds a key candidate (``obsflow_native.json_key_candidates``: every string followed
        by ``:`` or ``,``, a superset of the keys the scan meets) that is sensitive, with its
        escapes decoded, or holds too many to list; None when no text does. With it, the
        verdict on every candidate (None when a text held too many to list). No text is
        searched by a regex: each distinct candidate is judged once per process (a bounded
        cache; unseen ones in one columnar call)."""
        _validity, offsets, data = texts.buffers()
        keys, ends, slots, over = cast(Callable, _json_keys)(
            offsets, data if data is not None else _NO_DATA, texts.offset, len(texts)
        )
        flags = np.frombuffer(over, dtype=np.uint8).astype(np.bool_)
        listed_all = not flags.any()
        count = len(ends) // 4 - 1
        verdicts: dict[str, bool] = {}
        if count:
            candidates = pa.Array.from_buffers(pa.string(), count, [None, pa.py_buffer(ends), pa.py_buffer(keys)])
            cache, names = self._raw_key_verdicts, candidates.to_pylist()
            hide = [cache.get(k) for k in names]
            if None in hide:
                unseen = {k for k, h in zip(names, hide) if h is None}
                read = {k: json_unescape(k) if "\\" in k else k for k in unseen}  # the key a decoder reads
                sensitive = self._sensitive_among(set(read.values()))
                fresh = {k: cache.put(k, read[k] in sensitive) for k in unseen}
                hide = [fresh[k] if h is None else h for k, h in zip(names, hide)]
            verdicts = {k: bool(h) for k, h in zip(names, hide)}
            if any(hide):
                slot = np.frombuffer(slots, dtype=np.int32)
                flags[slot[np.asarray(hide, dtype=np.bool_)]] = True
        if texts.null_count:
            flags &= np.asarray(texts.is_valid())
        return (flags, verdicts if listed_all else None) if flags.any() else None

    def _redacted(self, texts: list[str], known: dict[str, bool] | None = None) -> list[str] | None:
        """``texts`` with the values under their sensitive keys redacted whole (see
        :meth:`_redact_json_keys`), or None when none holds one. ``known``: verdicts on
        (a superset of) the keys the scans meet, as written (then no scan lists them first)."""
        verdicts: dict[str, bool] = dict(known or {})

        def judge(raws: set[str]) -> None:
            read = {k: json_unescape(k) if "\\" in k else k for k in raws}  # the key a decoder reads
            sensitive = self._sensitive_among(set(read.values()))
            verdicts.update((k, read[k] in sensitive) for k in raws)

        def hidden(raw: str) -> bool:
            if raw not in verdicts:  # met only once a value before it was skipped: rare
                judge({raw})
            return verdicts[raw]

        changed = False
        for key in (OTLP_KEY, JSON_KEY):
            if known is None:
                met = set().union(*(keys_met(t, key) for t in texts))
                judge(met - verdicts.keys())
                if not any(verdicts[k] for k in met):
                    continue
            new = [redact_values(t, key, hidden) for t in texts]
            changed = changed or any(n is not t for n, t in zip(new, texts))
            texts = new
        return texts if changed else None

    def _redact_json_text(self, col, encode: Encode) -> pa.Array:
        """A free-text column with :meth:`_redact_json_keys` applied to each distinct value
        (the column itself, same buffers, when no value changes). ``encode``: as in
        :meth:`scrub_text`."""
        col = one_array(col) if self.hotpath == "native" else _combined(col)
        if self.sensitive is None or len(col) == 0 or col.null_count == len(col):
            return col
        enc = encode(col)
        d = enc.dictionary
        new = self._redact_json_keys(d)
        return col if new is d else new.take(enc.indices)

    def _mask_framed_values(self, *datas: bytearray) -> None:
        """Mask (``*``, in place) the value after each sensitive key in length-prefixed
        binary: an Avro map entry (key, value: zigzag-varint length + bytes) or an OTLP
        ``KeyValue`` (``0a`` len key ``12`` len ``0a`` len value). One-byte lengths only
        (keys below 64 bytes, values below 64 (Avro) or 128 (protobuf) bytes).

        A key is sensitive as a map key is (:meth:`_sensitive_among`). Every framed key
        of a printable run the gate (:func:`sensitive_key_gate`) matches is a candidate:
        the gate is a superset, so a run it passes over holds no sensitive key. All of
        ``datas`` (a batch's binary dead letters) are judged in two columnar calls. On the
        ``native`` hot path the extension first lists every framed key of ``datas`` without
        the gate (``obsflow_native.framed_key_candidates``, a superset of the candidates);
        when none is sensitive (verdicts cached per key) nothing is masked and no text is
        searched by a regex."""
        if self.sensitive is None or not datas:
            return
        if self.hotpath == "native" and _framed_keys is not None:  # no candidate sensitive: nothing to mask
            keys, ends, complete = _framed_keys([bytes(data) for data in datas])
            count = len(ends) // 4 - 1
            names = pa.Array.from_buffers(pa.string(), count, [None, pa.py_buffer(ends), pa.py_buffer(keys)])
            if complete and not self._sensitive_among(set(names.to_pylist())):
                return
        texts = [data.decode("latin-1") for data in datas]
        runs = [(i, *m.span()) for i, text in enumerate(texts) for m in _PRINTABLE.finditer(text)]
        if runs and self.sensitive_gate is not None:
            hits = pc.match_substring_regex(
                pa.array([texts[i][s:e] for i, s, e in runs], pa.string()), self.sensitive_gate
            )
            runs = [r for r, hit in zip(runs, hits.to_pylist()) if hit]
        candidates: list[tuple[int, int, int]] = []  # (payload, start, end) of each framed key, in order
        for i, run_start, run_end in runs:
            data, text = datas[i], texts[i]
            for start in range(max(run_start, 1), run_end):
                n = data[start - 1]
                for length in ({n >> 1} if n % 2 == 0 else set()) | {n}:
                    end = start + length
                    if length and end <= run_end and end < len(data) and _KEY.fullmatch(text, start, end):
                        candidates.append((i, start, end))
        hidden = self._sensitive_among({texts[i][s:e] for i, s, e in candidates})
        masked_from = (-1, -1)
        for i, start, end in candidates:
            if (i, start) != masked_from and texts[i][start:end] in hidden and _mask_value_at(datas[i], end):
                masked_from = (i, start)  # one value per key start (the first length that frames one)

    def _mask_binary(self, value: bytes) -> bytes:
        data = bytearray(value)
        self._mask_framed_values(data)
        return self._mask_matches(data)

    def _mask_matches(self, data: bytearray) -> bytes:
        """``data`` with every placeholder pattern's match masked byte for byte with ``*``."""
        text = bytes(data).decode("latin-1")  # one character per byte: positions and lengths are kept

        def stars(m: re.Match) -> str:
            return "*" * len(m.group(0))

        s = self.step
        # each pattern runs only where its literal hint is (lowered latin-1 text: a letter
        # folds as the patterns' IGNORECASE folds it; masking with ``*`` never adds a hint)
        lowered = text.lower()
        if s.emails and ("@" in text or "%40" in text):
            text = _BINARY_EMAIL.sub(stars, text)
        if s.bearer_tokens:
            if "bearer" in lowered:
                text = _BINARY_BEARER.sub(stars, text)
            if "eyJ" in text:
                text = _BINARY_JWT.sub(stars, text)
        if s.api_keys and any(h in lowered for h in _BINARY_API_HINTS):
            text = _BINARY_KNOWN.sub(stars, text)
            text = _BINARY_ASSIGN.sub(lambda m: m.group(1) + m.group(2) + "*" * (m.end() - m.end(2)), text)
        if s.card_numbers:
            text = _mask_cards(text, same_length=True)
        return text.encode("latin-1")

    # -- a batch --------------------------------------------------------------------------

    def scrub_table(self, t: pa.Table, encode: Encode = pc.dictionary_encode) -> pa.Table:
        """Every string and map column of ``t`` scrubbed per its role (see the module doc).
        ``encode``: as in :meth:`scrub_text`."""
        for i, f in enumerate(t.schema):
            if f.name in EXEMPT_COLUMNS:
                continue
            if pa.types.is_string(f.type) or pa.types.is_large_string(f.type):
                if f.name in IDENTIFIER_COLUMNS:
                    new = self.scrub_identifier(t.column(i))
                else:  # JSON text in it: the values under sensitive keys first, as in a map value
                    new = self.scrub_text(self._redact_json_text(t.column(i), encode), encode=encode)
            elif pa.types.is_map(f.type):
                new = self.scrub_map(t.column(i))
            else:
                continue
            t = t.set_column(i, f.name, new)
        return t

    def __call__(self, batch):
        """Scrub ``batch`` in place. On the ``native`` path the dictionary encodings are
        the batch's shared ones (the enricher reuses those of unchanged columns)."""
        encode = batch.encodings.dictionary_encode if self.hotpath == "native" else pc.dictionary_encode
        t = self.scrub_table(batch.table, encode)
        if self.step.pseudonymize_users and "user_id" in t.column_names and self.key is not None:
            t = t.append_column("user_pseudonym", self.pseudonymize(t.column("user_id")))
        if self.step.anonymize_ip and "client_ip" in t.column_names:
            t = t.append_column("client_ip_anon", self.anonymize_ip(t.column("client_ip"), encode))
        batch.table = t
        return batch
