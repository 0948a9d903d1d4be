"""Product events at the door: parse a body (JSON array, NDJSON, one object, or
``{"batch": [...], "sent_at": ...}``), normalize the compact shape to the envelope of
``schemas/avro/product_event.avsc``, and judge each envelope with the pipeline's own JSON
codec and validator, so the door rejects exactly what the pipeline would, with its reasons.

Normalization (each envelope):

- ``timeStamp`` → ``timestamp``; a number is epoch milliseconds → ISO-8601 UTC.
- interactions in the compact shape, one key naming the kind: ``{"click": "#next"}`` →
  ``{"type": "click", "target": "#next"}``; ``{"scroll": "50%"}`` (or ``0.5``, ``50``) →
  ``{"type": "scroll", "depth": 0.5}``; ``{"error": {"stackTrace": "…", "message": "…"}}`` →
  ``{"type": "error", ...}``; ``{"form_step": {"form": "signup", "step": 2}}`` → the kind
  plus those fields; ``{"page_view": …}`` → ``{"type": "page_view"}``.
- ``event_id`` missing → ``"d-"`` + the first 32 hex digits of SHA-256 over the write
  key's name and the envelope's canonical JSON without ``client_ip``, ``user_agent`` and
  ``user`` (:func:`derived_event_id`): a client that retries the same envelope gets the
  same id from any address, so a duplicate left by a 503 after a partial write can be
  dropped, and the id holds nothing derived from the sender's address or user id.
- ``sent_at`` (the client's send time) is taken out of the envelope (or from the body's
  ``sent_at`` / header ``X-Obsflow-Sent-At``) and carried in the Kafka header
  ``sent_at``; the server's receive time in header ``received_at`` (epoch ms) and as the
  Kafka record timestamp, so the pipeline can correct device clock skew.
- ``client_ip`` from the connection (X-Forwarded-For only through trusted proxies); a
  server (secret) key may send its own. ``user_agent`` from the request when missing.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any
from datetime import UTC, datetime, timedelta

import orjson

from core.errors import ObsflowError
from pipelines.spec import ValidateStep
from schemas.codecs import codec_for
from schemas.codecs.json_codec import MAX_NESTING
from transforms.batch import RawBatch
from transforms.validate import Validator, clock_skew_ms

INTERACTION_FIELDS = ("type", "target", "depth", "form", "step", "duration_ms", "message", "stackTrace")

#: the wire types the fast path reads (schemas/wire event): a required string, an optional
#: string, an optional double, int32, int64, and the two fields read apart
_REQ, _OPT, _FLOAT, _INT32, _INT64, _OTHER = range(6)
_REQUIRED_STR = ("event_id", "page", "session_id")
_ENVELOPE_KIND = {
    "event_id": _REQ,
    "page": _REQ,
    "session_id": _REQ,
    "user": _OPT,
    "location": _OPT,
    "platform": _OPT,
    "user_agent": _OPT,
    "client_ip": _OPT,
    "timestamp": _OTHER,
    "events": _OTHER,
}
_INTERACTION_KIND = {
    "type": _REQ,
    "target": _OPT,
    "depth": _FLOAT,
    "form": _OPT,
    "step": _INT32,
    "duration_ms": _INT64,
    "message": _OPT,
    "stackTrace": _OPT,
}
#: the only timestamps the fast path reads: UTC, whole seconds or up to microseconds
_PLAIN_TS = re.compile(r"(\d{4})-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?(?:Z|\+00:00)")
#: the same timestamps in two parts (:func:`plain_time_ms`): the 19 characters up to the
#: seconds, and the rest (fraction and zone)
_PLAIN_HEAD = re.compile(r"(\d{4})-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}")
_PLAIN_TAIL = re.compile(r"(?:\.\d{1,6})?(?:Z|\+00:00)")
_TAIL_BASE = "2000-01-01T00:00:00"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_I32 = (-(2**31), 2**31)
_I64 = (-(2**63), 2**63)
_EXACT_FLOAT = 2**53


#: shape caches of :meth:`EventJudge.plainly_valid`: (field names, value types) → verdict on
#: the shape; bounded (cleared when full), so odd shapes sent on purpose cost memory only up to this
_SHAPES_MAX = 2048
_ENV_SHAPES: dict[tuple, bool] = {}
_EVENT_SHAPES: dict[tuple, tuple[tuple[str, int, int], ...] | None] = {}
_MISS: Any = object()  # not in a cache
_NONE = type(None)


#: caches of :func:`plain_time_ms`: seconds part → epoch ms (None: not plain), rest → its
#: microseconds (None: not plain); bounded like the shape caches
_HEADS: dict[str, int | None] = {}
_TAILS: dict[str, int | None] = {}


def _head_ms(head: str) -> int | None:
    m = _PLAIN_HEAD.fullmatch(head)
    if m is None or not 1971 <= int(m.group(1)) <= 2261:
        return None
    try:
        return (datetime.fromisoformat(head + "Z") - _EPOCH) // _MS
    except ValueError:
        return None


def _tail_us(tail: str) -> int | None:
    if _PLAIN_TAIL.fullmatch(tail) is None:
        return None
    try:
        return (datetime.fromisoformat(_TAIL_BASE + tail) - _TAIL_EPOCH) // _US
    except ValueError:
        return None


def plain_time_ms(ts: str) -> int | None:
    """The epoch milliseconds of a UTC ISO-8601 ``ts`` as the fast path reads it (it fully
    matches :data:`_PLAIN_TS`, year 1971-2261, and ``datetime.fromisoformat`` reads it), the
    same value as ``(datetime.fromisoformat(ts) - epoch) // 1 ms``; None for anything else.

    The seconds part (its first 19 characters) and the rest (fraction, zone) are each read
    once per distinct value (bounded caches): a fixed-length head fully matches the head
    pattern and the rest the tail pattern exactly when the whole matches :data:`_PLAIN_TS`,
    and ``fromisoformat`` reads the date and time of day from the head alone and the
    fraction and zone from the rest alone, so the sum is the whole's value (the parity
    tests compare both over edge timestamps and the fuzz corpus)."""
    head = _HEADS.get(ts[:19], _MISS)
    if head is _MISS:
        head = _remember(_HEADS, ts[:19], _head_ms(ts[:19]))
    if head is None:
        return None
    tail = _TAILS.get(ts[19:], _MISS)
    if tail is _MISS:
        tail = _remember(_TAILS, ts[19:], _tail_us(ts[19:]))
    if tail is None:
        return None
    return head + tail // 1000


def _remember(cache: dict, key, value):
    if len(cache) >= _SHAPES_MAX:
        cache.clear()
    cache[key] = value
    return value


def _envelope_shape_ok(names: tuple, types: tuple) -> bool:
    """Whether an envelope with these field names and value types has only wire fields,
    each of its wire type (required strings present), a list of ``events`` and a string
    ``timestamp``: what :meth:`EventJudge.plainly_valid` asks of the envelope besides values."""
    required = 0
    for name, t in zip(names, types, strict=True):
        kind = _ENVELOPE_KIND.get(name)
        if kind is None:
            return False
        if kind == _REQ:
            if t is not str:
                return False
            required += 1
        elif kind == _OPT:
            if t is not _NONE and t is not str:
                return False
    if required != len(_REQUIRED_STR):
        return False
    kinds = dict(zip(names, types, strict=True))
    return kinds.get("events") is list and kinds.get("timestamp") is str


def _interaction_checks(names: tuple, types: tuple) -> tuple[tuple[str, int, int], ...] | None:
    """For an interaction with these field names and value types: None when the shape
    alone rules it out (a field not on the wire, a value not of its wire type, no string
    ``type``), else the range checks its values still need, ``(name, lo, hi)`` for
    ``lo <= value < hi`` (integers: ``step`` int32, ``duration_ms`` int64, an integer
    ``depth`` below 2**53, exactly representable as a double)."""
    checks: list[tuple[str, int, int]] = []
    for name, t in zip(names, types, strict=True):
        kind = _INTERACTION_KIND.get(name)
        if kind is None:
            return None
        if t is _NONE:
            if kind == _REQ:
                return None
        elif kind in (_REQ, _OPT):
            if t is not str:
                return None
        elif kind == _FLOAT:
            if t is int:
                checks.append((name, -_EXACT_FLOAT + 1, _EXACT_FLOAT))
            elif t is not float:
                return None
        elif t is not int:  # _INT32, _INT64
            return None
        else:
            checks.append((name, *(_I32 if kind == _INT32 else _I64)))
    if "type" not in names:
        return None
    return tuple(checks)


class BodyError(ObsflowError, ValueError):
    """The body is not a batch of events at all (400)."""


@dataclass
class Judged:
    """Per-envelope outcome, in request order: ``payloads[i]`` the normalized JSON, and
    ``reasons[i]`` / ``details[i]`` None when accepted."""

    payloads: list[bytes] = field(default_factory=list)
    keys: list[bytes | None] = field(default_factory=list)
    sent_at: list[str | None] = field(default_factory=list)
    reasons: list[str | None] = field(default_factory=list)
    details: list[str | None] = field(default_factory=list)
    envs: list[dict | None] = field(default_factory=list)  # the normalized envelope (None: not an object)
    pending: list[int] = field(default_factory=list)  # positions still to judge with the codec + validator pass


def parse_body(body: bytes, content_type: str) -> tuple[list, str | None]:
    """The envelopes of a body and the batch's ``sent_at``; :class:`BodyError` when the
    body is not JSON / NDJSON of objects."""
    text = body.strip()
    if not text:
        raise BodyError("empty body")
    sent_at = None
    if text[:1] in (b"[", b"{"):
        try:
            doc = orjson.loads(text)
        except orjson.JSONDecodeError:
            doc = None
            if text[:1] != b"{":
                raise BodyError("invalid JSON") from None
        if doc is not None:
            if isinstance(doc, dict) and isinstance(doc.get("batch"), list):
                sent_at = doc.get("sent_at") if isinstance(doc.get("sent_at"), str) else None
                return doc["batch"], sent_at
            return (doc if isinstance(doc, list) else [doc]), None
    items = []
    for n, line in enumerate(text.split(b"\n")):
        line = line.strip()
        if not line:
            continue
        try:
            items.append(orjson.loads(line))
        except orjson.JSONDecodeError as e:
            if "json" not in content_type and "ndjson" not in content_type and n == 0:
                raise BodyError(f"not JSON or NDJSON: {e}") from None
            items.append(_Unparsable(line, str(e)))
    if not items:
        raise BodyError("no events in the body")
    return items, sent_at


class _Unparsable:
    """An NDJSON line that is not JSON: rejected alone (format_violation)."""

    def __init__(self, raw: bytes, why: str):
        self.raw, self.why = raw, why


def _iso_ms(ms: float) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _depth(v):
    if isinstance(v, str):
        s = v.strip()
        try:
            return float(s[:-1]) / 100 if s.endswith("%") else float(s)
        except ValueError:
            return v
    if isinstance(v, (int, float)) and not isinstance(v, bool) and v > 1:
        return v / 100
    return v


def normalize_interaction(item):
    """One interaction in the envelope's shape (see the module doc); other values unchanged."""
    if not isinstance(item, dict) or "type" in item or len(item) != 1:
        return item
    kind, value = next(iter(item.items()))
    out: dict = {"type": kind}
    if isinstance(value, dict):
        out.update({k: v for k, v in value.items() if k != "type"})
    elif kind == "click":
        out["target"] = value
    elif kind == "scroll":
        out["depth"] = _depth(value)
    elif kind == "error":
        out["message" if isinstance(value, str) else "stackTrace"] = value
    elif kind in ("form_start", "form_submit", "form_step") and isinstance(value, str):
        out["form"] = value
    if "depth" in out:
        out["depth"] = _depth(out["depth"])
    return out


#: envelope fields a derived ``event_id`` does not cover: personal data the pipeline never
#: stores as sent (``client_ip`` is anonymized and dropped; ``user`` becomes a keyed
#: pseudonym, which an unkeyed hash of it would undo) and ``user_agent``, which the door
#: takes from the request's header rather than the body
ID_EXCLUDED = frozenset(("client_ip", "user_agent", "user"))


def derived_event_id(key_name: str, env: dict) -> str:
    """The id the door gives an envelope without its own ``event_id``: ``"d-"`` + the first
    32 hex digits of SHA-256 over the write key's name, a NUL byte and the canonical JSON
    (keys sorted) of the normalized envelope without :data:`ID_EXCLUDED`.

    Guarantees: a pure function of the key name and the envelope's other fields, so a
    retry of the same body gets the same id from any door, whatever address or user agent
    it comes from; no function of the sender's IP address, user agent or user id, so the
    stored id cannot be brute-forced back to them."""
    kept = {k: v for k, v in env.items() if k not in ID_EXCLUDED}
    canon = orjson.dumps(kept, option=orjson.OPT_SORT_KEYS)
    return "d-" + hashlib.sha256(key_name.encode() + b"\0" + canon).hexdigest()[:32]


def normalize(
    doc: dict, key_name: str, client_ip: str | None, user_agent: str | None, trust_client_ip: bool
) -> tuple[dict, str | None]:
    """The envelope of ``doc`` (a copy) and its ``sent_at``."""
    env = dict(doc)
    if "timeStamp" in env and "timestamp" not in env:
        env["timestamp"] = env.pop("timeStamp")
    ts = env.get("timestamp")
    if isinstance(ts, (int, float)) and not isinstance(ts, bool) and 0 <= ts < 1e14:
        env["timestamp"] = _iso_ms(ts)
    sent_at = env.pop("sent_at", None)
    if isinstance(sent_at, (int, float)) and not isinstance(sent_at, bool) and 0 <= sent_at < 1e14:
        sent_at = _iso_ms(sent_at)
    if isinstance(env.get("events"), list):
        env["events"] = [normalize_interaction(e) for e in env["events"]]
    if not (trust_client_ip and env.get("client_ip")):
        env["client_ip"] = client_ip
    if not env.get("user_agent") and user_agent:
        env["user_agent"] = user_agent
    if not env.get("event_id"):
        env["event_id"] = derived_event_id(key_name, env)
    return env, sent_at if isinstance(sent_at, str) else None


def _normalize_plain(
    doc: dict, key_name: str, client_ip: str | None, user_agent: str | None, trust_client_ip: bool
) -> dict | None:
    """:func:`normalize` for an envelope already in the envelope's shape, else None (then
    :func:`normalize` is used): a string ``timestamp``, no ``timeStamp`` and no ``sent_at``
    of its own, ``events`` absent or a list whose objects all carry ``type`` (or are not
    the compact one-key form). For such an envelope :func:`normalize` changes only
    ``client_ip``, ``user_agent`` and ``event_id``, in the same order, and its ``sent_at``
    is None; so is it here: the returned envelope has the same items in the same order
    (its JSON is the same bytes)."""
    if "timeStamp" in doc or "sent_at" in doc or type(doc.get("timestamp")) is not str:
        return None
    events = doc.get("events")
    if type(events) is list:
        for e in events:
            if (
                isinstance(e, dict) and "type" not in e and len(e) == 1
            ):  # the compact form: normalize_interaction changes it
                return None
    elif isinstance(events, list):
        return None
    env = dict(doc)
    if not (trust_client_ip and env.get("client_ip")):
        env["client_ip"] = client_ip
    if not env.get("user_agent") and user_agent:
        env["user_agent"] = user_agent
    if not env.get("event_id"):
        env["event_id"] = derived_event_id(key_name, env)
    return env


class EventJudge:
    """Judge envelopes as the pipeline's ``validate`` step of the events flow would."""

    def __init__(self, step: ValidateStep, max_event_bytes: int, public_max_past_s: float, fast_path: bool = True):
        self.codec = codec_for("json", "event", max_event_bytes)
        self.validator = Validator("event", step, json_hints=True)
        self.max_event_bytes = max_event_bytes
        self.public_max_past_ms = int(public_max_past_s * 1000)
        self.fast_path = fast_path
        self.event_types = frozenset(step.event_types)
        self.max_future_ms = self.validator.max_future_ms
        self.max_past_ms = self.validator.max_past_ms
        self.max_skew_ms = self.validator.max_skew_ms
        self.fast_accepted = 0  # envelopes accepted without the codec + validator pass (for tests and the bench)

    @functools.lru_cache(maxsize=256)  # noqa: B019 - one judge per process; a request's envelopes share their sent_at
    def _skew(self, sent_at: str, received_ms: int) -> tuple[int, int] | None:
        return clock_skew_ms([("sent_at", sent_at.encode()), ("received_at", str(received_ms).encode())])

    def plainly_valid(self, env: dict, payload: bytes, received_ms: int, sent_at: str | None, public: bool) -> bool:
        """True only for an envelope the codec and validator are certain to accept (and,
        for a ``public`` key, not too old): only wire fields, each of exactly its wire type,
        a UTC ISO-8601 timestamp the codec reads as this code does, known interaction types,
        and an event time (corrected for clock skew as the validator does) inside the
        window. Anything else is False, and the full pass gives the verdict and reason:
        so the door's verdicts are those of the full pass whichever path judged them (the
        parity test over the fuzz corpus and the generator checks it).

        The field names and value types of an envelope (and of an interaction) are judged
        once per distinct shape (:func:`_envelope_shape_ok`, :func:`_interaction_checks`;
        a client's envelopes share a few shapes), so per envelope only the values that
        need more than their type are read: interaction types, integer ranges, the time."""
        if len(payload) >= self.max_event_bytes:
            return False
        shape = (tuple(env), tuple(map(type, env.values())))
        ok = _ENV_SHAPES.get(shape)
        if ok is None:
            ok = _remember(_ENV_SHAPES, shape, _envelope_shape_ok(*shape))
        if not ok:
            return False
        events = env["events"]  # a list: the shape says so
        if not events:
            return False
        types = self.event_types
        for e in events:
            if type(e) is not dict:
                return False
            eshape = (tuple(e), tuple(map(type, e.values())))
            checks = _EVENT_SHAPES.get(eshape, _MISS)
            if checks is _MISS:
                checks = _remember(_EVENT_SHAPES, eshape, _interaction_checks(*eshape))
            if checks is None or e["type"] not in types:  # the shape says "type" is a string
                return False
            for name, lo, hi in checks:
                if not lo <= e[name] < hi:
                    return False
        t = plain_time_ms(env["timestamp"])  # a string: the shape says so
        if t is None:
            return False
        if self.max_skew_ms > 0 and sent_at is not None:  # the validator's clock-skew correction (transforms.validate)
            found = self._skew(sent_at, received_ms)
            if found is not None and abs(found[0]) <= self.max_skew_ms:
                t = min(t + found[0], found[1])
        delta = t - received_ms
        if delta > self.max_future_ms or delta < -self.max_past_ms:
            return False
        return not (public and t < received_ms - self.public_max_past_ms)

    def judge(
        self,
        items: list,
        *,
        key_name: str,
        public: bool,
        client_ip: str | None,
        user_agent: str | None,
        sent_at: str | None,
        received_ms: int,
        topic: str,
    ) -> Judged:
        """The outcome of one request's envelopes (see :meth:`judge_many`)."""
        return self.judge_many(
            [
                (
                    items,
                    {
                        "key_name": key_name,
                        "public": public,
                        "client_ip": client_ip,
                        "user_agent": user_agent,
                        "sent_at": sent_at,
                        "received_ms": received_ms,
                    },
                )
            ],
            topic,
        )[0]

    def judge_many(self, requests: list[tuple[list, dict]], topic: str) -> list[Judged]:
        """Judge several requests' envelopes in one pass of the codec and validator (their
        fixed cost is paid once); each request's outcome is the same as judged alone."""
        prepared = [self.prepare(items, kw) for items, kw in requests]
        return self.finish(prepared, [kw for _, kw in requests], topic)

    def prepare(self, items: list, kw: dict) -> Judged:
        """Normalize one request's envelopes and judge what needs no codec pass: items
        that are not objects, and (fast path) plainly valid envelopes. The others are left
        in :attr:`Judged.pending` for :meth:`finish`.

        With the fast path, an envelope already in the envelope's shape (a string
        ``timestamp``, no ``timeStamp`` or ``sent_at``, every interaction with its
        ``type``) is normalized by :func:`_normalize_plain` and judged in the same turn
        of the loop; its payload, key and ``sent_at`` are the same as :func:`normalize`
        gives (the parity test compares them byte for byte)."""
        if not self.fast_path:
            out = self._prepare(items, kw)
            out.pending = [i for i, r in enumerate(out.reasons) if r is None]
            return out
        out = Judged()
        n = len(items)
        out.reasons, out.details = [None] * n, [None] * n
        payloads, envs, keys, sents, pending = out.payloads, out.envs, out.keys, out.sent_at, out.pending
        key_name, client_ip, user_agent, batch_sent = kw["key_name"], kw["client_ip"], kw["user_agent"], kw["sent_at"]
        received_ms, public = kw["received_ms"], kw["public"]
        plainly_valid = self.plainly_valid
        accepted = 0
        for i, item in enumerate(items):
            try:
                env = (
                    _normalize_plain(item, key_name, client_ip, user_agent, not public) if type(item) is dict else None
                )
                payload = orjson.dumps(env) if env is not None else b""
            except (TypeError, RecursionError):  # nested past orjson's bound: the reference path gives the verdict
                env = None
            if env is None:  # anything else: the reference path, for this item
                self._prepare_one(out, i, item, kw)
                if out.reasons[i] is not None:
                    continue
                env, payload, sent = out.envs[i], out.payloads[i], out.sent_at[i]
            else:
                payloads.append(payload)
                envs.append(env)
                sid = env.get("session_id")
                keys.append(sid.encode() if isinstance(sid, str) else None)
                sents.append(sent := batch_sent)
            if env is not None and plainly_valid(env, payload, received_ms, sent or None, public):
                accepted += 1
            else:
                pending.append(i)
        self.fast_accepted += accepted
        return out

    def finish(self, outs: list[Judged], kws: list[dict], topic: str) -> list[Judged]:
        """Judge the pending envelopes of prepared requests (``kws``: their settings, as
        given to :meth:`prepare`) in one pass of the codec and validator."""
        values: list[bytes | None] = []
        stamps: list[int] = []
        headers: list[
            list[tuple[str, bytes | None]] | None
        ] = []  # as the pipeline reads them: its clock-skew correction applies here too
        owners: list[tuple[int, int, bool]] = []  # (request, position, public) per value
        for r, (out, kw) in enumerate(zip(outs, kws)):
            if not out.pending:
                continue
            received_ms, public = kw["received_ms"], kw["public"]
            received: list[tuple[str, bytes | None]] = [("received_at", str(received_ms).encode())]
            by_sent: dict[str | None, list[tuple[str, bytes | None]]] = {
                None: received
            }  # one (read-only) list per distinct sent_at
            for i in out.pending:
                values.append(out.payloads[i])
                stamps.append(received_ms)
                sent = out.sent_at[i] or None
                h = by_sent.get(sent)
                if h is None and sent is not None:
                    h = by_sent[sent] = received + [("sent_at", sent.encode())]
                headers.append(h)
                owners.append((r, i, public))
            out.pending = []
        if not values:
            return outs
        raw = RawBatch(
            source="collect",
            topic=topic,
            partition=-1,
            values=values,
            offsets=list(range(len(values))),
            timestamps_ms=stamps,
            headers=headers,
        )
        batch = self.validator(self.codec.decode(raw))
        for j, reason, detail in zip(batch.rejects.indices, batch.rejects.reasons, batch.rejects.details):
            r, i, _ = owners[j]
            if outs[r].reasons[i] is None:
                outs[r].reasons[i], outs[r].details[i] = reason, detail
        if batch.table.num_rows and any(pub for _, _, pub in owners):
            self._public_age(batch, owners, stamps, outs)
        return outs

    def _prepare(self, items: list, kw: dict) -> Judged:
        """Normalized payloads, keys and ``sent_at`` of one request (the reference
        :func:`normalize`); reasons for items that are not objects."""
        out = Judged()
        n = len(items)
        out.reasons, out.details = [None] * n, [None] * n
        for i, item in enumerate(items):
            self._prepare_one(out, i, item, kw)
        return out

    @staticmethod
    def _prepare_one(out: Judged, i: int, item, kw: dict) -> None:
        """Append item ``i``'s payload, key, ``sent_at`` and envelope to ``out`` (the
        reference :func:`normalize`), with its reason when it is not an object."""
        if isinstance(item, _Unparsable):
            out.payloads.append(item.raw)
            out.keys.append(None)
            out.sent_at.append(kw["sent_at"])
            out.reasons[i], out.details[i] = "format_violation", f"invalid JSON: {item.why}"
            out.envs.append(None)
            return
        if not isinstance(item, dict):
            out.payloads.append(orjson.dumps(item))
            out.keys.append(None)
            out.sent_at.append(kw["sent_at"])
            out.reasons[i], out.details[i] = "schema_violation", f"expected a JSON object, got {type(item).__name__}"
            out.envs.append(None)
            return
        try:
            env, own_sent = normalize(
                item, kw["key_name"], kw["client_ip"], kw["user_agent"], trust_client_ip=not kw["public"]
            )
            payload = orjson.dumps(env)
        except (TypeError, RecursionError):  # nested past orjson's bound: the codec's verdict, without a crash
            out.payloads.append(_too_deep_payload(item))
            out.keys.append(None)
            out.sent_at.append(kw["sent_at"])
            out.reasons[i], out.details[i] = (
                "format_violation",
                f"record: JSON nested too deep (more than {MAX_NESTING} levels)",
            )
            out.envs.append(None)
            return
        out.payloads.append(payload)
        out.envs.append(env)
        sid = env.get("session_id")
        out.keys.append(sid.encode() if isinstance(sid, str) else None)
        out.sent_at.append(own_sent or kw["sent_at"])

    def _public_age(self, batch, owners, stamps, outs) -> None:
        """A public (browser) key may not send event times (corrected for clock skew) older than ``public_max_past``."""
        import pyarrow as pa
        import pyarrow.compute as pc

        ts = pc.cast(pc.cast(batch.table.column("timestamp"), pa.timestamp("ms", tz="UTC")), pa.int64()).to_pylist()
        for j, t in zip(batch.table.column("_i").to_pylist(), ts):
            r, i, public = owners[j]
            if not public or t is None or t >= stamps[j] - self.public_max_past_ms or outs[r].reasons[i] is not None:
                continue
            outs[r].reasons[i] = "timestamp_out_of_range"
            outs[r].details[i] = (
                f"timestamp: {(stamps[j] - t) / 1000:.0f}s before receipt; a public (browser) key may "
                f"send at most {self.public_max_past_ms / 1000:.0f}s old events (use a secret key)"
            )


_MS = timedelta(milliseconds=1)
_US = timedelta(microseconds=1)
_TAIL_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


def _too_deep_payload(item: dict) -> bytes:
    """The bytes kept for an envelope nested too deep for orjson: the standard library's
    JSON of it, or when even that recurses too deep, a note in its place."""
    try:
        return json.dumps(item, ensure_ascii=False, separators=(",", ":")).encode()
    except (RecursionError, ValueError, TypeError):
        return orjson.dumps(
            {"obsflow_door": f"an envelope nested deeper than the door can re-encode (keys: {sorted(item)[:20]})"}
        )


def now_ms() -> int:
    return int(time.time() * 1000)
