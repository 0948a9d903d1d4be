"""Scrub: remove personal data before anything is stored.

Consumes table-named columns; emits the same rows with
- e-mail addresses, payment card numbers (Luhn-checked), bearer tokens and API keys in
  free-text columns replaced by ``[EMAIL]``, ``[CARD]``, ``Bearer [TOKEN]``, ``[API_KEY]``;
- ``client_ip`` kept for enrichment but copied to ``client_ip_anon`` as its network
  address (IPv4 /24, IPv6 /48 by default); the raw IP is never written to a table;
- ``user_id`` replaced by ``user_pseudonym``: HMAC-SHA256 under a key from the spec or
  the environment (never a default key), hex, 32 characters.
All regex work is columnar (RE2 via ``pyarrow.compute``); Python only sees the rare
card-number candidates (for the Luhn check) and each distinct user id and IPv6 address
once per batch."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.spec import PrivacySpec, ScrubStep

EMAIL = r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}"
BEARER = r"(?i)\bbearer\s+[A-Za-z0-9\-._~+/]+=*"
API_KEY_ASSIGN = r"(?i)\b(api[_-]?key|apikey|access[_-]?key|secret[_-]?key|client[_-]?secret|auth[_-]?token|x-api-key|password|passwd|token)(\s*[\"']?\s*[:=]\s*[\"']?)[A-Za-z0-9_\-./+=]{6,}"
API_KEY_KNOWN = r"\b(?:sk|pk|rk)_(?:live|test)_[A-Za-z0-9]{10,}\b|\bAKIA[0-9A-Z]{16}\b|\bgh[pousr]_[A-Za-z0-9]{20,}\b|\bxox[abprs]-[A-Za-z0-9\-]{10,}\b|\bAIza[0-9A-Za-z\-_]{35}\b"
CARD_CANDIDATE = r"\b(?:\d[ \-]?){12,18}\d\b"
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
IPV4_STRICT = rf"^({_OCTET}\.{_OCTET}\.{_OCTET})\.{_OCTET}$"
API_KEY_HINT = r"(?i)key|secret|token|passw|sk_|pk_|rk_|AKIA|gh[pousr]_|xox|AIza"
IPV4 = r"^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$"

TEXT_COLUMNS = {"event": ("page", "target", "error_message", "error_stack"), "log": ("message",), "span": ("status_message",)}


class MissingKeyError(RuntimeError):
    """No pseudonymization key configured."""


def _rewrite(col: pa.Array, candidates: pa.Array, fn) -> pa.Array:
    """Apply ``fn`` to the rows where ``candidates`` is true; keep the others as they are."""
    candidates = candidates.fill_null(False)
    n = pc.sum(candidates).as_py() or 0
    if n == 0:
        return col
    if n == len(col):
        return fn(col)
    return pc.replace_with_mask(col, candidates, fn(col.filter(candidates)))


_CARD_RE = None


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


def _mask_cards(text: str) -> str:
    global _CARD_RE
    if _CARD_RE is None:
        import re

        _CARD_RE = re.compile(r"\b\d(?:[ \-]?\d){12,18}\b")

    def repl(m):
        digits = m.group(0).replace(" ", "").replace("-", "")
        return "[CARD]" if luhn_ok(digits) else m.group(0)

    return _CARD_RE.sub(repl, text)


def pseudonym_key(privacy: PrivacySpec) -> bytes:
    """The HMAC key: ``privacy.pseudonym_key`` or ``$<privacy.pseudonym_key_env>``."""
    if privacy.pseudonym_key is not None:
        return privacy.pseudonym_key.get_secret_value().encode()
    value = os.environ.get(privacy.pseudonym_key_env)
    if not value:
        raise MissingKeyError(
            f"no pseudonymization key: set the environment variable {privacy.pseudonym_key_env} "
            f"(or privacy.pseudonym_key in the spec) to a secret of at least 16 characters")
    if len(value) < 16:
        raise MissingKeyError(f"{privacy.pseudonym_key_env} is too short: use at least 16 characters")
    return value.encode()


class Scrubber:
    """Scrub one signal's rows per ``ScrubStep`` and ``PrivacySpec``."""

    def __init__(self, signal: str, step: ScrubStep, privacy: PrivacySpec):
        self.signal = signal
        self.step = step
        self.privacy = privacy
        self.key = pseudonym_key(privacy) if step.pseudonymize_users else b""
        self._keyed_hmac = None
        self.text_columns = TEXT_COLUMNS.get(signal, ())
        self._v4_mask = (0xFFFFFFFF << (32 - privacy.ipv4_prefix)) & 0xFFFFFFFF

    def scrub_text(self, col):
        """Replace personal data in one string column.

        Each pattern first finds its candidate rows with a cheap literal or simple-regex
        test, and the full regex rewrites only those rows (most text holds no PII)."""
        col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
        if col.null_count == len(col):
            return col
        # each distinct value once: pages, targets and repeated messages collapse a lot
        enc = pc.dictionary_encode(col)
        if len(enc.dictionary) < len(col):
            return self._scrub_values(enc.dictionary).take(enc.indices)
        return self._scrub_values(col)

    def _scrub_values(self, col: pa.Array) -> pa.Array:
        s = self.step
        if s.emails:
            col = _rewrite(col, pc.match_substring(col, "@"), lambda c: pc.replace_substring_regex(c, EMAIL, "[EMAIL]"))
        if s.bearer_tokens:
            col = _rewrite(col, pc.match_substring(col, "earer", ignore_case=True), lambda c: pc.replace_substring_regex(c, BEARER, "Bearer [TOKEN]"))
        if s.api_keys:
            col = _rewrite(col, pc.match_substring_regex(col, API_KEY_HINT), lambda c: pc.replace_substring_regex(
                pc.replace_substring_regex(c, API_KEY_KNOWN, "[API_KEY]"), API_KEY_ASSIGN, r"\1\2[API_KEY]"))
        if s.card_numbers:
            col = _rewrite(col, pc.match_substring_regex(col, CARD_CANDIDATE),
                           lambda c: pa.array([None if v is None else _mask_cards(v) for v in c.to_pylist()], pa.string()))
        return col

    def pseudonymize(self, col) -> pa.Array:
        """Keyed pseudonyms, computed once per distinct id in the batch."""
        col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
        enc = pc.dictionary_encode(col)
        keyed = self._keyed_hmac
        if keyed is None:
            keyed = self._keyed_hmac = hmac.new(self.key, digestmod=hashlib.sha256)  # keyed once, copied per id

        def pseudonym(u: str) -> str:
            h = keyed.copy()
            h.update(u.encode())
            return h.hexdigest()[:32]

        uniq = [None if u is None else pseudonym(u) for u in enc.dictionary.to_pylist()]
        return pa.array(uniq, pa.string()).take(enc.indices)

    def anonymize_ip(self, col) -> pa.Array:
        """Network address of each IP: IPv4 columnar (for a /24), everything else once per
        distinct value with ``ipaddress``. Values that are not IPs become null
        (enrichment decides whether that rejects the record)."""
        col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
        enc = pc.dictionary_encode(col)
        if len(enc.dictionary) < len(col):
            return self._anonymize(enc.dictionary).take(enc.indices)
        return self._anonymize(col)

    def _anonymize(self, col: pa.Array) -> pa.Array:
        if self.privacy.ipv4_prefix == 24:
            is_v4 = pc.match_substring_regex(col, IPV4_STRICT).fill_null(False)
            fast = pc.if_else(is_v4, pc.replace_substring_regex(col, IPV4_STRICT, r"\1.0"), pa.scalar(None, pa.string()))
            rest = pc.and_(pc.invert(is_v4), pc.is_valid(col))
            if not pc.any(rest).as_py():
                return fast
            return pc.replace_with_mask(fast, rest, self._anonymize_each(col.filter(rest)))
        return self._anonymize_each(col)

    def _anonymize_each(self, col: pa.Array) -> pa.Array:
        enc = pc.dictionary_encode(col)
        out = []
        for u in enc.dictionary.to_pylist():
            try:
                ip = ipaddress.ip_address(u)
                prefix = self.privacy.ipv4_prefix if ip.version == 4 else self.privacy.ipv6_prefix
                out.append(str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False).network_address))
            except ValueError:
                out.append(None)
        return pa.array(out, pa.string()).take(enc.indices)

    def __call__(self, batch):
        t = batch.table
        for name in self.text_columns:
            if name in t.column_names:
                t = t.set_column(t.column_names.index(name), name, self.scrub_text(t.column(name)))
        if self.step.pseudonymize_users and "user_id" in t.column_names:
            t = t.append_column("user_pseudonym", self.pseudonymize(t.column("user_id")))
        if self.step.anonymize_ip and "client_ip" in t.column_names:
            t = t.append_column("client_ip_anon", self.anonymize_ip(t.column("client_ip")))
        batch.table = t
        return batch
