"""OTLP codec: Kafka messages as the OpenTelemetry Collector's Kafka exporter writes
them — each message one serialized ``ExportTraceServiceRequest`` (signal ``span``) or
``ExportLogsServiceRequest`` (signal ``log``), in protobuf (``otlp_proto``) or in the
OTLP/JSON mapping (``otlp_json``: proto3 JSON with lowerCamelCase keys, trace and span
ids as hex strings, 64-bit integers as strings, enums as integers).

One message expands into many rows, one per span, log record or data point (an
*item*), all carrying the message's ``_i`` and each its item's index in the message
(``_item``). Items are accepted one by one, as OTLP's ``partial_success`` does: a bad
item is rejected alone (its dead letter has the message's coordinates, ``item_index``
and the item's own bytes as ``raw``: the serialized span / log record / data point,
protobuf or OTLP/JSON as the message was) and the other items of its message go on. A
message that cannot be read at all (not the protobuf or JSON message, no items, a
container of the wrong type) is rejected whole. Sizes: ``max_bytes`` (the validate
step's, default 65,536) bounds each item; a message is bounded only by the Collector's
Kafka exporter's own default, :data:`MAX_MESSAGE_BYTES` (``producer.max_message_bytes``,
1,000,000 bytes). Counts are checked too: a histogram ``count`` or bucket count, a
fixed64 in OTLP, must fit the metrics table's int64.

Span rows (``span.avsc``): ids as lowercase hex, ``parent_span_id`` null for a root,
``service`` from the resource's ``service.name`` (``unknown_service`` when absent, as the
OpenTelemetry resource spec prescribes), ``kind`` without the ``SPAN_KIND_`` prefix,
start/end as ``timestamp[us, UTC]`` (nanoseconds truncated), status, span attributes in
``attributes`` and all resource attributes in ``resource``. Span events and links are
not part of the wire model and are dropped. Besides the wire columns, span rows carry
(:data:`SPAN_EXTRA`): ``attribute_types`` / ``resource_types``, the OTLP type of every
attribute value that is not a string (``int``, ``double``, ``bool``, ``bytes``, ``array``,
``kvlist``; null when all are strings), so the text in the maps reads back as the typed
value; ``start_unix_nano`` / ``end_unix_nano``, the exact times (null beyond int64);
``trace_state`` (W3C tracestate, null when empty) and ``flags``.

Log rows (``log_record.avsc``): ``timestamp`` from ``time_unix_nano``, else
``observed_time_unix_nano`` (milliseconds, truncated); ``level`` from
``severity_number`` (1–4 TRACE … 21–24 FATAL), else ``severity_text`` (upper-cased, the
validator normalizes aliases), else INFO; ``message`` the string body, or the JSON of a
body of another kind (``""`` when unset); ``host`` / ``env`` from resource ``host.name`` /
``deployment.environment.name`` (or the older ``deployment.environment``); ``user_id`` /
``request_id`` from log attributes ``enduser.id`` / ``http.request_id``; every other
resource and log attribute (log wins on a clash, plus ``event.name`` when set) in
``attributes``. Attribute values are flattened to text: strings as they are, booleans
``true``/``false``, numbers in decimal, bytes in base64, arrays and key-value lists as
JSON."""

from __future__ import annotations

import base64
from functools import partial
from typing import Any
from collections.abc import Callable, Iterator

import numpy as np
import orjson
import pyarrow as pa
from google.protobuf import json_format, unknown_fields
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.metrics.v1.metrics_pb2 import HistogramDataPoint, Metric, NumberDataPoint, SummaryDataPoint
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from schemas.wire import arrow_schema
from core.batch import DEFAULT_MAX_BYTES, INDEX, ITEM, Batch, RawBatch, Rejects

ENCODINGS = ("otlp_proto", "otlp_json")
SPAN_KINDS = ("UNSPECIFIED", "INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER")
STATUS_CODES = ("UNSET", "OK", "ERROR")
#: severity_number // 4 (after -1) → level
SEVERITIES = ("TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL")
UNKNOWN_SERVICE = "unknown_service"
ZERO_TRACE = bytes(16)
ZERO_SPAN = bytes(8)
#: the Collector's Kafka exporter's default ``producer.max_message_bytes``: the largest OTLP message accepted
MAX_MESSAGE_BYTES = 1_000_000
_I64_MAX = 2**63 - 1

#: OTLP/JSON container keys per signal (lowerCamelCase as written; the proto names are
#: accepted too, as protobuf JSON parsers do)
_JSON_PATHS = {
    "span": (("resourceSpans", "resource_spans"), ("scopeSpans", "scope_spans"), ("spans", "spans")),
    "log": (("resourceLogs", "resource_logs"), ("scopeLogs", "scope_logs"), ("logRecords", "log_records")),
}


class _Reject(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


# -- AnyValue flattening --------------------------------------------------------------------


def _plain(v) -> Any:
    """An AnyValue as a plain JSON-able Python value (bytes as base64)."""
    kind = v.WhichOneof("value")
    if kind == "string_value":
        return v.string_value
    if kind == "bool_value":
        return v.bool_value
    if kind == "int_value":
        return v.int_value
    if kind == "double_value":
        return v.double_value
    if kind == "bytes_value":
        return base64.b64encode(v.bytes_value).decode()
    if kind == "array_value":
        return [_plain(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _plain(kv.value) for kv in v.kvlist_value.values}
    return None


def _text(v) -> str | None:
    """An AnyValue as map text (see the module docstring); None when unset."""
    kind = v.WhichOneof("value")
    if kind == "string_value":
        return v.string_value
    if kind == "bool_value":
        return "true" if v.bool_value else "false"
    if kind == "int_value":
        return str(v.int_value)
    if kind == "double_value":
        return repr(v.double_value)
    if kind == "bytes_value":
        return base64.b64encode(v.bytes_value).decode()
    if kind is None:
        return None
    return orjson.dumps(_plain(v), option=orjson.OPT_NON_STR_KEYS).decode()


def _attrs(kvs) -> dict[str, str | None]:
    return {kv.key: _text(kv.value) for kv in kvs}


#: OTLP AnyValue kind -> the type name kept in ``attribute_types`` / ``resource_types``
_TYPE_NAMES = {
    "bool_value": "bool",
    "int_value": "int",
    "double_value": "double",
    "bytes_value": "bytes",
    "array_value": "array",
    "kvlist_value": "kvlist",
}


def _attr_types(kvs) -> dict[str, str] | None:
    """The type of each attribute whose value is not a string (None when there is none)."""
    out = {kv.key: _TYPE_NAMES[k] for kv in kvs if (k := kv.value.WhichOneof("value")) in _TYPE_NAMES}
    return out or None


def _typed_attrs(kvs) -> tuple[dict[str, str | None], dict[str, str] | None]:
    """``(_attrs(kvs), _attr_types(kvs))`` in one pass over the attributes."""
    text: dict[str, str | None] = {}
    types: dict[str, str] = {}
    for kv in kvs:
        v = kv.value
        kind = v.WhichOneof("value")
        if kind == "string_value":
            text[kv.key] = v.string_value
        else:
            text[kv.key] = _text(v)
            if kind in _TYPE_NAMES:
                types[kv.key] = _TYPE_NAMES[kind]
    return text, types or None


def _hex_id(b: bytes, size: int, what: str, where: str, required: bool) -> str | None:
    """Lowercase hex of an id; None when empty (or all zero, for an optional id)."""
    if not b:
        if required:
            raise _Reject("schema_violation", f"{where}: no {what}")
        return None
    if len(b) != size:
        raise _Reject("schema_violation", f"{where}: {what} has {len(b)} bytes, expected {size}")
    if b == bytes(size):
        if required:
            raise _Reject("schema_violation", f"{where}: {what} is all zeros (invalid)")
        return None
    return b.hex()


# -- OTLP/JSON values ------------------------------------------------------------------------
#
# OTLP/JSON is read straight from the parsed JSON (no protobuf round trip: json_format is
# pure Python and about ten times slower) with the same checks and the same flattening as
# the protobuf path, so both encodings of one message decode to the same rows. Accepted
# as protobuf JSON parsers accept them: proto field names besides lowerCamelCase, enum
# names besides integers, 64-bit integers as strings or numbers.

_SPAN_KIND_NAMES = {f"SPAN_KIND_{k}": n for n, k in enumerate(SPAN_KINDS)}
_STATUS_NAMES = {f"STATUS_CODE_{c}": n for n, c in enumerate(STATUS_CODES)}
_SEVERITY_NAMES = {"SEVERITY_NUMBER_UNSPECIFIED": 0} | {
    f"SEVERITY_NUMBER_{lvl}{'' if k == 0 else k + 1}": 1 + 4 * n + k
    for n, lvl in enumerate(SEVERITIES)
    for k in range(4)
}
_ANY_KEYS = (
    ("stringValue", "string_value"),
    ("boolValue", "bool_value"),
    ("intValue", "int_value"),
    ("doubleValue", "double_value"),
    ("bytesValue", "bytes_value"),
    ("arrayValue", "array_value"),
    ("kvlistValue", "kvlist_value"),
)


def _jget(d: dict, camel: str, snake: str):
    v = d.get(camel)
    return d.get(snake) if v is None and snake != camel else v


def _jlist(d: dict, camel: str, snake: str, where: str) -> list:
    v = _jget(d, camel, snake)
    if v is None:
        return []
    if not isinstance(v, list):
        raise _Reject("schema_violation", f"{where}.{camel}: expected an array, got {_jkind(v)}")
    return v


def _jobj(v, where: str) -> dict:
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise _Reject("schema_violation", f"{where}: expected an object, got {_jkind(v)}")
    return v


def _jkind(v) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number"}.get(
        type(v), "null"
    )


def _jstr(v, where: str) -> str:
    if v is None:
        return ""
    if not isinstance(v, str):
        raise _Reject("schema_violation", f"{where}: expected a string, got {_jkind(v)}")
    return v


def _jint(v, where: str, lo: int, hi: int) -> int:
    """A (u)int64 field: a JSON integer or a decimal string, within ``[lo, hi)``."""
    if v is None:
        return 0
    if isinstance(v, bool):
        n = None
    elif isinstance(v, int):
        n = v
    elif isinstance(v, float) and v.is_integer():
        n = int(v)
    elif isinstance(v, str) and v.lstrip("-").isdigit() and v.isascii():
        n = int(v)
    else:
        n = None
    if n is None or not lo <= n < hi:
        raise _Reject("schema_violation", f"{where}: expected an integer, got {_jkind(v)} {str(v)[:40]!r}")
    return n


def _jenum(v, names: dict[str, int], where: str) -> int:
    if isinstance(v, str) and v in names:
        return names[v]
    return _jint(v, where, -(2**31), 2**31)


def _jid(v, where: str) -> bytes:
    """A trace or span id: hex in OTLP/JSON (not base64 as in plain protobuf JSON)."""
    if v is None:
        return b""
    if not isinstance(v, str):
        raise _Reject("schema_violation", f"{where}: expected a hex string, got {_jkind(v)}")
    try:
        return bytes.fromhex(v)
    except ValueError:
        raise _Reject("schema_violation", f"{where}: not a hex id: {v[:48]!r}") from None


def _jplain(v, where: str) -> Any:
    """A JSON AnyValue as a plain value, as :func:`_plain` gives it for protobuf."""
    v = _jobj(v, where)
    for camel, snake in _ANY_KEYS:
        x = _jget(v, camel, snake)
        if x is None:
            continue
        w = f"{where}.{camel}"
        if camel == "stringValue":
            return _jstr(x, w)
        if camel == "boolValue":
            if not isinstance(x, bool):
                raise _Reject("schema_violation", f"{w}: expected a boolean, got {_jkind(x)}")
            return x
        if camel == "intValue":
            return _jint(x, w, -(2**63), 2**63)
        if camel == "doubleValue":
            if isinstance(x, bool) or not isinstance(x, (int, float, str)):
                raise _Reject("schema_violation", f"{w}: expected a number, got {_jkind(x)}")
            try:
                return float(x)
            except ValueError:
                raise _Reject("schema_violation", f"{w}: expected a number, got {str(x)[:40]!r}") from None
        if camel == "bytesValue":
            try:
                return base64.b64encode(base64.b64decode(_jstr(x, w), validate=True)).decode()
            except ValueError:
                raise _Reject("schema_violation", f"{w}: not base64: {str(x)[:40]!r}") from None
        values = _jlist(_jobj(x, w), "values", "values", w)
        if camel == "arrayValue":
            return [_jplain(item, f"{w}.values[{k}]") for k, item in enumerate(values)]
        out = {}
        for k, kv in enumerate(values):
            kv = _jobj(kv, f"{w}.values[{k}]")
            out[_jstr(kv.get("key"), f"{w}.values[{k}].key")] = _jplain(kv.get("value"), f"{w}.values[{k}].value")
        return out
    return None


def _jtext(v, where: str) -> str | None:
    p = _jplain(v, where)
    if p is None or isinstance(p, str):
        return p
    if isinstance(p, bool):
        return "true" if p else "false"
    if isinstance(p, (int, float)):
        return repr(p)
    return orjson.dumps(p, option=orjson.OPT_NON_STR_KEYS).decode()


_JTYPE_NAMES = {
    "boolValue": "bool",
    "intValue": "int",
    "doubleValue": "double",
    "bytesValue": "bytes",
    "arrayValue": "array",
    "kvlistValue": "kvlist",
}


def _jattr_types(holder: dict) -> dict[str, str] | None:
    """As :func:`_attr_types` for OTLP/JSON attributes (already checked by :func:`_jattrs`)."""
    out = {}
    for kv in holder.get("attributes") or ():
        v = kv.get("value")
        if not isinstance(v, dict):
            continue
        for camel, snake in _ANY_KEYS:
            if _jget(v, camel, snake) is not None:
                if camel in _JTYPE_NAMES:
                    out[kv.get("key")] = _JTYPE_NAMES[camel]
                break
    return out or None


def _jattrs(holder: dict, where: str) -> dict[str, str | None]:
    out = {}
    for k, kv in enumerate(_jlist(holder, "attributes", "attributes", where)):
        w = f"{where}.attributes[{k}]"
        kv = _jobj(kv, w)
        out[_jstr(kv.get("key"), f"{w}.key")] = _jtext(kv.get("value"), f"{w}.value")
    return out


def _ids_b64_to_hex(doc: dict, signal: str) -> None:
    top, scope, recs = _JSON_PATHS[signal]
    for rs in doc.get(top[0], []):
        for ss in rs.get(scope[0], []):
            for rec in ss.get(recs[0], []):
                for holder in [rec, *rec.get("links", [])]:
                    for key in ("traceId", "spanId", "parentSpanId"):
                        if key in holder:
                            holder[key] = base64.b64decode(holder[key]).hex()


def to_otlp_json(message: ExportTraceServiceRequest | ExportLogsServiceRequest) -> bytes:
    """The OTLP/JSON form of an export request, as the Collector's ``otlp_json`` encoding
    writes it: lowerCamelCase keys, hex trace/span ids, int64 as strings, enums as ints."""
    signal = "span" if isinstance(message, ExportTraceServiceRequest) else "log"
    doc = json_format.MessageToDict(message, use_integers_for_enums=True)
    _ids_b64_to_hex(doc, signal)
    return orjson.dumps(doc)


# -- rows (shared by both encodings) --------------------------------------------------------

_U64 = 2**64


def _level(number: int, text: str) -> str:
    if 1 <= number <= 24:
        return SEVERITIES[(number - 1) // 4]
    if text:
        return text.strip().upper()
    return "INFO"


class _Items:
    """The rows of one message and the items they came from, each item accepted or
    rejected alone: ``count`` items seen, ``row_item`` the item of each row, ``rejects``
    ``(item, reason, detail)``. The items themselves are not kept: a dead letter's bytes
    are found again by walking the message (:func:`_item_sources`)."""

    columns: tuple[str, ...] = ()

    def __init__(self, limit: int | None = None, size_of: Callable[[Any], int] | None = None):
        self.rows: list[tuple] = []
        self.row_item: list[int] = []
        self.rejects: list[tuple[int, str, str]] = []
        self.count = 0
        self.limit = limit  # item size limit, checked when the message is over it (size_of given)
        self.size_of = size_of

    def check_size(self, source: Any, where: str) -> None:
        """Raise :class:`_Reject` when the message is over the item limit and this item too."""
        size_of, limit = self.size_of, self.limit
        if size_of is None or limit is None:  # built without a limit: nothing to check
            return
        size = size_of(source)
        if size > limit:
            raise _Reject("size_violation", f"{where}: item of {size} bytes exceeds the limit of {self.limit} bytes")

    def fail(self, k: int, where: str, e: Exception, first: int) -> None:
        """Item ``k`` failed with ``e``: withdraw its rows (from ``first``) and reject it alone."""
        del self.rows[first:]
        if isinstance(e, _Reject):
            self.rejects.append((k, e.reason, e.detail))
        else:  # defensive (RecursionError, OverflowError ...): this item only
            self.rejects.append(
                (k, "schema_violation", f"{where}: undecodable item: {type(e).__name__}: {str(e)[:160]}")
            )

    def item(self, source: Any, where: str, build: Callable[[], None]) -> None:
        """Build the rows of the item ``source`` at path ``where`` (``build`` appends them)."""
        k = self.count
        self.count += 1
        first = len(self.rows)
        try:
            if self.size_of is not None:
                self.check_size(source, where)
            build()
        except Exception as e:
            self.fail(k, where, e, first)
            return
        self.row_item.extend([k] * (len(self.rows) - first))


class _SpanRows(_Items):
    """Span rows (tuples in wire column order); :meth:`add` checks one span and appends it."""

    columns = (
        "trace_id",
        "span_id",
        "parent_span_id",
        "service",
        "name",
        "kind",
        "start_time",
        "end_time",
        "status_code",
        "status_message",
        "attributes",
        "resource",
    )

    def add(
        self,
        where: str,
        service: str,
        resource: dict | None,
        trace_id: bytes,
        span_id: bytes,
        parent: bytes,
        name: str,
        kind: int,
        start: int,
        end: int,
        code: int,
        status_message: str,
        attributes: dict,
        extra: tuple = (None,) * 6,
    ) -> None:
        """``extra``: the :data:`SPAN_EXTRA` values (attribute types, resource types, start
        and end nanoseconds, tracestate, flags), appended after the wire columns."""
        t = (
            trace_id.hex()
            if len(trace_id) == 16 and trace_id != ZERO_TRACE
            else _hex_id(trace_id, 16, "trace id", where, True)
        )
        s = span_id.hex() if len(span_id) == 8 and span_id != ZERO_SPAN else _hex_id(span_id, 8, "span id", where, True)
        p = (
            parent.hex()
            if len(parent) == 8 and parent != ZERO_SPAN
            else _hex_id(parent, 8, "parent span id", where, False)
        )
        if not 0 <= kind < 6:
            raise _Reject("schema_violation", f"{where}: span kind {kind} is not an OTLP SpanKind")
        if not start:
            raise _Reject("schema_violation", f"{where}: no start_time_unix_nano")
        if not end:
            raise _Reject("schema_violation", f"{where}: no end_time_unix_nano")
        if not 0 <= code < 3:
            raise _Reject("schema_violation", f"{where}: status code {code} is not an OTLP StatusCode")
        self.rows.append(
            (
                t,
                s,
                p,
                service,
                name,
                SPAN_KINDS[kind],
                start // 1000,
                end // 1000,
                STATUS_CODES[code],
                status_message or None,
                attributes or None,
                resource,
                *extra,
            )
        )


#: span columns the OTLP codec adds after the wire columns (see the module docstring)
SPAN_EXTRA = pa.schema(
    [
        ("attribute_types", pa.map_(pa.string(), pa.string())),
        ("resource_types", pa.map_(pa.string(), pa.string())),
        ("start_unix_nano", pa.int64()),
        ("end_unix_nano", pa.int64()),
        ("trace_state", pa.string()),
        ("flags", pa.int64()),
    ]
)
_I64_LIMIT = 2**63


def _span_extra(attr_types, res_types, start: int, end: int, trace_state: str, flags: int) -> tuple:
    return (
        attr_types,
        res_types,
        start if start < _I64_LIMIT else None,
        end if end < _I64_LIMIT else None,
        trace_state or None,
        flags,
    )


class _LogRows(_Items):
    """Log rows (tuples in wire column order); :meth:`add` checks one log record and appends it."""

    columns = (
        "timestamp",
        "level",
        "service",
        "message",
        "trace_id",
        "span_id",
        "request_id",
        "user_id",
        "host",
        "env",
        "attributes",
    )

    @staticmethod
    def resource(res: dict[str, str | None]) -> tuple[str, str | None, str | None, dict]:
        """(service, host, env, remaining attributes) of a resource."""
        res = dict(res)
        svc = res.pop("service.name", None) or UNKNOWN_SERVICE
        host = res.pop("host.name", None)
        env_new, env_old = res.pop("deployment.environment.name", None), res.pop("deployment.environment", None)
        return svc, host, env_new or env_old, res

    def add(
        self,
        where: str,
        res: tuple,
        time_ns: int,
        observed_ns: int,
        trace_id: bytes,
        span_id: bytes,
        severity_number: int,
        severity_text: str,
        message: str,
        attributes: dict,
        event_name: str,
    ) -> None:
        t = time_ns or observed_ns
        if not t:
            raise _Reject("schema_violation", f"{where}: neither time_unix_nano nor observed_time_unix_nano is set")
        tid = _hex_id(trace_id, 16, "trace id", where, False)
        sid = _hex_id(span_id, 8, "span id", where, False)
        svc, host, env, rest = res
        attrs = dict(rest)
        attrs.update(attributes)
        user_id = attrs.pop("enduser.id", None)
        request_id = attrs.pop("http.request_id", None)
        if event_name:
            attrs["event.name"] = event_name
        self.rows.append(
            (
                t // 1_000_000,
                _level(severity_number, severity_text),
                svc,
                message,
                tid,
                sid,
                request_id,
                user_id,
                host,
                env,
                attrs or None,
            )
        )


def _proto_body(body) -> str:
    kind = body.WhichOneof("value")
    if kind == "string_value":
        return body.string_value
    if kind is None:
        return ""
    return orjson.dumps(_plain(body), option=orjson.OPT_NON_STR_KEYS).decode()


def _json_body(body, where: str) -> str:
    p = _jplain(body, where)
    if p is None:
        return ""
    if isinstance(p, str):
        return p
    return orjson.dumps(p, option=orjson.OPT_NON_STR_KEYS).decode()


def _proto_spans(msg: ExportTraceServiceRequest, rows: _SpanRows) -> None:
    k, sized = rows.count, rows.size_of is not None
    for a, rs in enumerate(msg.resource_spans):
        res = _attrs(rs.resource.attributes)
        svc = res.get("service.name") or UNKNOWN_SERVICE
        res_map = res or None
        res_types = _attr_types(rs.resource.attributes)
        for b, ss in enumerate(rs.scope_spans):
            for c, sp in enumerate(ss.spans):
                w = f"resource_spans[{a}].scope_spans[{b}].spans[{c}]"
                first = len(rows.rows)
                try:  # one item: a bad span is rejected alone
                    if sized:
                        rows.check_size(sp, w)
                    attrs, types = _typed_attrs(sp.attributes)
                    start, end = sp.start_time_unix_nano, sp.end_time_unix_nano
                    rows.add(
                        w,
                        svc,
                        res_map,
                        sp.trace_id,
                        sp.span_id,
                        sp.parent_span_id,
                        sp.name,
                        sp.kind,
                        start,
                        end,
                        sp.status.code,
                        sp.status.message,
                        attrs,
                        _span_extra(types, res_types, start, end, sp.trace_state, sp.flags),
                    )
                    rows.row_item.append(k)
                except Exception as e:
                    rows.fail(k, w, e, first)
                k += 1
    rows.count = k


def _proto_logs(msg: ExportLogsServiceRequest, rows: _LogRows) -> None:
    k, sized = rows.count, rows.size_of is not None
    for a, rl in enumerate(msg.resource_logs):
        res = rows.resource(_attrs(rl.resource.attributes))
        for b, sl in enumerate(rl.scope_logs):
            for c, lr in enumerate(sl.log_records):
                w = f"resource_logs[{a}].scope_logs[{b}].log_records[{c}]"
                first = len(rows.rows)
                try:  # one item: a bad log record is rejected alone
                    if sized:
                        rows.check_size(lr, w)
                    rows.add(
                        w,
                        res,
                        lr.time_unix_nano,
                        lr.observed_time_unix_nano,
                        lr.trace_id,
                        lr.span_id,
                        lr.severity_number,
                        lr.severity_text,
                        _proto_body(lr.body),
                        _attrs(lr.attributes),
                        lr.event_name,
                    )
                    rows.row_item.append(k)
                except Exception as e:
                    rows.fail(k, w, e, first)
                k += 1
    rows.count = k


def _json_records(doc: dict, signal: str, raw_resource: bool = False):
    """(resource, path, record) for each span / log record of an OTLP/JSON document; with
    ``raw_resource``, (resource, resource JSON object, path, record)."""
    (t1, t2), (s1, s2), (r1, r2) = _JSON_PATHS[signal]
    for a, rs in enumerate(_jlist(doc, t1, t2, "")):
        w1 = f"{t1}[{a}]"
        rs = _jobj(rs, w1)
        resource = _jobj(rs.get("resource"), f"{w1}.resource")
        res = _jattrs(resource, f"{w1}.resource")
        for b, ss in enumerate(_jlist(rs, s1, s2, w1)):
            w2 = f"{w1}.{s1}[{b}]"
            ss = _jobj(ss, w2)
            for c, rec in enumerate(_jlist(ss, r1, r2, w2)):
                w3 = f"{w2}.{r1}[{c}]"
                yield (res, resource, w3, rec) if raw_resource else (res, w3, rec)


def _json_spans(doc: dict, rows: _SpanRows) -> None:
    last: dict | None = None
    ctx: tuple[str, dict | None, dict[str, str] | None] = (
        "",
        None,
        None,
    )  # set at the first record (its resource is not None)
    for res, resource, w, sp in _json_records(doc, "span", raw_resource=True):
        if res is not last:
            last, ctx = res, (res.get("service.name") or UNKNOWN_SERVICE, res or None, _jattr_types(resource))
        rows.item(sp, w, lambda: _json_span(rows, ctx, w, sp))


def _json_span(rows: _SpanRows, ctx: tuple, w: str, sp) -> None:
    sp = _jobj(sp, w)
    status = _jobj(sp.get("status"), f"{w}.status")
    start = _jint(_jget(sp, "startTimeUnixNano", "start_time_unix_nano"), f"{w}.startTimeUnixNano", 0, _U64)
    end = _jint(_jget(sp, "endTimeUnixNano", "end_time_unix_nano"), f"{w}.endTimeUnixNano", 0, _U64)
    rows.add(
        w,
        ctx[0],
        ctx[1],
        _jid(_jget(sp, "traceId", "trace_id"), f"{w}.traceId"),
        _jid(_jget(sp, "spanId", "span_id"), f"{w}.spanId"),
        _jid(_jget(sp, "parentSpanId", "parent_span_id"), f"{w}.parentSpanId"),
        _jstr(sp.get("name"), f"{w}.name"),
        _jenum(sp.get("kind"), _SPAN_KIND_NAMES, f"{w}.kind"),
        start,
        end,
        _jenum(status.get("code"), _STATUS_NAMES, f"{w}.status.code"),
        _jstr(status.get("message"), f"{w}.status.message"),
        _jattrs(sp, w),
        _span_extra(
            _jattr_types(sp),
            ctx[2],
            start,
            end,
            _jstr(_jget(sp, "traceState", "trace_state"), f"{w}.traceState"),
            _jint(sp.get("flags"), f"{w}.flags", 0, 2**32),
        ),
    )


def _json_log(rows: _LogRows, res: tuple, w: str, lr) -> None:
    lr = _jobj(lr, w)
    rows.add(
        w,
        res,
        _jint(_jget(lr, "timeUnixNano", "time_unix_nano"), f"{w}.timeUnixNano", 0, _U64),
        _jint(_jget(lr, "observedTimeUnixNano", "observed_time_unix_nano"), f"{w}.observedTimeUnixNano", 0, _U64),
        _jid(_jget(lr, "traceId", "trace_id"), f"{w}.traceId"),
        _jid(_jget(lr, "spanId", "span_id"), f"{w}.spanId"),
        _jenum(_jget(lr, "severityNumber", "severity_number"), _SEVERITY_NAMES, f"{w}.severityNumber"),
        _jstr(_jget(lr, "severityText", "severity_text"), f"{w}.severityText"),
        _json_body(lr.get("body"), f"{w}.body"),
        _jattrs(lr, w),
        _jstr(_jget(lr, "eventName", "event_name"), f"{w}.eventName"),
    )


def _json_logs(doc: dict, rows: _LogRows) -> None:
    last: dict | None = None
    res: tuple[str, str | None, str | None, dict] = ("", None, None, {})  # set at the first record
    for r, w, lr in _json_records(doc, "log"):
        if r is not last:
            last, res = r, rows.resource(r)
        rows.item(lr, w, lambda: _json_log(rows, res, w, lr))


# -- the codec ------------------------------------------------------------------------------


_DELTA, _CUMULATIVE = 1, 2


def _quantile_label(q: float) -> str:
    """A quantile as Prometheus writes it in a summary's ``quantile`` label (0.5, 0.99, 0, 1)."""
    return format(float(q), ".15g")


class _MetricRows(_Items):
    """Metric sample rows (tuples in wire column order, ``temporality`` and ``start_time``
    last), one per data point (and one per summary quantile).

    Mapping (``temporality`` is ``cumulative`` or ``delta`` from the point's
    ``aggregation_temporality``; UNSPECIFIED is read as cumulative; ``start_time`` is
    ``start_time_unix_nano`` in ms, null when 0):

    * Gauge → GAUGE (``temporality`` null).
    * monotonic Sum → COUNTER: cumulative → the running total (the rollup takes increases
      between exports, resets by a drop or a new start time); delta → the increase itself.
    * non-monotonic Sum: cumulative → GAUGE (the level); delta → COUNTER with
      ``temporality`` delta (its increase is the net change, possibly negative).
    * Histogram → HISTOGRAM (explicit bounds, bucket counts, count, sum) with its
      temporality: cumulative ones are turned into per-export differences by the rollup.
    * Summary → SUMMARY (count, sum; cumulative, as OTLP defines summaries), plus one GAUGE
      row per quantile value: the same name, the point's labels plus ``quantile``
      (``0.5``, ``0.99``, ``0``, ``1``); a NaN quantile value (no observations) is skipped.

    Labels are the data point's attributes plus ``service`` (the resource's
    ``service.name``). An exponential histogram is rejected (``schema_violation``): the
    metrics table has no place for it."""

    columns = (
        "name",
        "kind",
        "timestamp",
        "labels",
        "value",
        "bucket_bounds",
        "bucket_counts",
        "count",
        "sum",
        "temporality",
        "start_time",
    )

    def add(
        self,
        where: str,
        name: str,
        kind: str,
        time_ns: int,
        labels: dict,
        value=None,
        bounds=None,
        counts=None,
        count=None,
        total=None,
        temporality: str | None = None,
        start_ns: int = 0,
    ) -> None:
        if not name:
            raise _Reject("schema_violation", f"{where}: metric without a name")
        if not time_ns:
            raise _Reject("schema_violation", f"{where}: data point without time_unix_nano")
        if count is not None and count > _I64_MAX:
            raise _Reject("schema_violation", f"{where}: count {count} exceeds the metrics table's int64 range")
        if counts and max(counts) > _I64_MAX:
            k = next(k for k, c in enumerate(counts) if c > _I64_MAX)
            raise _Reject(
                "schema_violation", f"{where}: bucket_counts[{k}] {counts[k]} exceeds the metrics table's int64 range"
            )
        self.rows.append(
            (
                name,
                kind,
                time_ns // 1_000_000,
                labels,
                value,
                bounds,
                counts,
                count,
                total,
                temporality,
                start_ns // 1_000_000 if start_ns else None,
            )
        )


def _point_value(dp):
    which = dp.WhichOneof("value")
    return float(dp.as_double) if which == "as_double" else float(dp.as_int) if which == "as_int" else None


def _temporality(body) -> str:
    return "delta" if body.aggregation_temporality == _DELTA else "cumulative"


def _gauge_point(rows: _MetricRows, w: str, name: str, svc: str, dp) -> None:
    rows.add(
        w,
        name,
        "GAUGE",
        dp.time_unix_nano,
        {**_attrs(dp.attributes), "service": svc},
        value=_point_value(dp),
        start_ns=dp.start_time_unix_nano,
    )


def _sum_point(rows: _MetricRows, w: str, name: str, svc: str, kind: str, temp: str | None, dp) -> None:
    rows.add(
        w,
        name,
        kind,
        dp.time_unix_nano,
        {**_attrs(dp.attributes), "service": svc},
        value=_point_value(dp),
        temporality=temp,
        start_ns=dp.start_time_unix_nano,
    )


def _histogram_point(rows: _MetricRows, w: str, name: str, svc: str, temp: str, dp) -> None:
    rows.add(
        w,
        name,
        "HISTOGRAM",
        dp.time_unix_nano,
        {**_attrs(dp.attributes), "service": svc},
        bounds=list(dp.explicit_bounds),
        counts=[int(x) for x in dp.bucket_counts],
        count=int(dp.count),
        total=float(dp.sum) if dp.HasField("sum") else None,
        temporality=temp,
        start_ns=dp.start_time_unix_nano,
    )


def _summary_point(rows: _MetricRows, w: str, name: str, svc: str, dp) -> None:
    labels = {**_attrs(dp.attributes), "service": svc}
    rows.add(
        w,
        name,
        "SUMMARY",
        dp.time_unix_nano,
        labels,
        count=int(dp.count),
        total=float(dp.sum),
        temporality="cumulative",
        start_ns=dp.start_time_unix_nano,
    )
    for qv in dp.quantile_values:
        if qv.value == qv.value:  # NaN: no observations behind this quantile
            rows.add(
                w,
                name,
                "GAUGE",
                dp.time_unix_nano,
                {**labels, "quantile": _quantile_label(qv.quantile)},
                value=float(qv.value),
                start_ns=dp.start_time_unix_nano,
            )


def _proto_metrics(msg: ExportMetricsServiceRequest, rows: _MetricRows) -> None:
    """One item per data point (a summary's quantile rows belong to its point); a metric
    of an unsupported kind is one rejected item."""
    for a, rm in enumerate(msg.resource_metrics):
        res = _attrs(rm.resource.attributes)
        svc = res.get("service.name") or UNKNOWN_SERVICE
        for b, sm in enumerate(rm.scope_metrics):
            for c, m in enumerate(sm.metrics):
                where = f"resource_metrics[{a}].scope_metrics[{b}].metrics[{c}]"
                data = m.WhichOneof("data")
                name = m.name
                if data == "gauge":
                    for d, dp in enumerate(m.gauge.data_points):
                        w = f"{where}.gauge.data_points[{d}]"
                        rows.item(dp, w, lambda: _gauge_point(rows, w, name, svc, dp))
                elif data == "sum":
                    temp: str | None = _temporality(m.sum)
                    level = not m.sum.is_monotonic and temp == "cumulative"
                    kind, temp = ("GAUGE", None) if level else ("COUNTER", temp)
                    for d, dp in enumerate(m.sum.data_points):
                        w = f"{where}.sum.data_points[{d}]"
                        rows.item(dp, w, lambda: _sum_point(rows, w, name, svc, kind, temp, dp))
                elif data == "histogram":
                    temp = _temporality(m.histogram)
                    for d, dp in enumerate(m.histogram.data_points):
                        w = f"{where}.histogram.data_points[{d}]"
                        rows.item(dp, w, lambda: _histogram_point(rows, w, name, svc, temp, dp))
                elif data == "summary":
                    for d, dp in enumerate(m.summary.data_points):
                        w = f"{where}.summary.data_points[{d}]"
                        rows.item(dp, w, lambda: _summary_point(rows, w, name, svc, dp))
                else:

                    def unsupported():
                        raise _Reject(
                            "schema_violation",
                            f"{where}: {data or 'no'} data is not supported (gauge, sum, histogram, summary)",
                        )

                    rows.item(m, where, unsupported)


def _strip_exemplars(o) -> Any:
    """``o`` without its exemplars (a copy; their ids are hex in OTLP/JSON, and the metrics
    table keeps none)."""
    if isinstance(o, dict):
        return {k: _strip_exemplars(v) for k, v in o.items() if k != "exemplars"}
    if isinstance(o, list):
        return [_strip_exemplars(v) for v in o]
    return o


def _json_parse(d: Any, message, where: str):
    """``d`` through protobuf's JSON mapping into ``message``; a wrong-typed value is a
    ``schema_violation`` naming ``where``."""
    try:
        return json_format.ParseDict(_strip_exemplars(d), message, ignore_unknown_fields=True)
    except json_format.ParseError as e:
        raise _Reject(
            "schema_violation", f"{where}: not an OTLP/JSON {type(message).__name__}: {str(e)[:200]}"
        ) from None


_JSON_POINT_TYPES = {
    "gauge": NumberDataPoint,
    "sum": NumberDataPoint,
    "histogram": HistogramDataPoint,
    "summary": SummaryDataPoint,
}


#: an item of an OTLP/JSON metrics document: (source, path, build), ``build(rows)`` appends its rows
_MetricItem = tuple[Any, str, Callable[["_MetricRows"], None]]


def _json_metric_items(doc: dict) -> Iterator[_MetricItem]:
    """``(source, where, build)`` for each item of an OTLP/JSON metrics document, in the
    order and with the paths of :func:`_proto_metrics`: each data point is parsed alone, so
    a wrong-typed point is rejected alone (``build`` raises); a metric whose own fields are
    wrong-typed, or of an unsupported kind, is one item. ``build(rows)`` appends its rows.
    JSON containers of the wrong type (not a list or object) reject the whole message."""
    for a, rm in enumerate(_jlist(doc, "resourceMetrics", "resource_metrics", "")):
        w1 = f"resource_metrics[{a}]"
        rm = _jobj(rm, w1)
        res = _json_parse(_jobj(rm.get("resource"), f"{w1}.resource"), Resource(), f"{w1}.resource")
        svc = _attrs(res.attributes).get("service.name") or UNKNOWN_SERVICE
        for b, sm in enumerate(_jlist(rm, "scopeMetrics", "scope_metrics", w1)):
            w2 = f"{w1}.scope_metrics[{b}]"
            sm = _jobj(sm, w2)
            for c, m in enumerate(_jlist(sm, "metrics", "metrics", w2)):
                yield from _json_metric(_jobj(m, f"{w2}.metrics[{c}]"), f"{w2}.metrics[{c}]", svc)


def _json_metric(m: dict, where: str, svc: str) -> Iterator[_MetricItem]:
    """The items of one OTLP/JSON metric (see :func:`_json_metric_items`)."""
    bodies = {k: v for k, v in m.items() if k in _JSON_DATA_KEYS}
    points_of = {
        k: _jlist(
            _jobj(v, f"{where}.{_JSON_DATA_KEYS[k]}"), "dataPoints", "data_points", f"{where}.{_JSON_DATA_KEYS[k]}"
        )
        for k, v in bodies.items()
    }
    shell = {
        k: ({f: x for f, x in v.items() if f not in ("dataPoints", "data_points")} if k in bodies else v)
        for k, v in m.items()
    }
    try:
        metric = _json_parse(shell, Metric(), where)
    except _Reject as e:

        def bad(rows, reason=e.reason, detail=e.detail):
            raise _Reject(reason, detail)

        yield m, where, bad
        return
    data = metric.WhichOneof("data")
    if data not in _JSON_POINT_TYPES:

        def unsupported(rows):
            raise _Reject(
                "schema_violation", f"{where}: {data or 'no'} data is not supported (gauge, sum, histogram, summary)"
            )

        yield m, where, unsupported
        return
    key = next(k for k in bodies if _JSON_DATA_KEYS[k] == data)
    ptype = _JSON_POINT_TYPES[data]
    for d, point in enumerate(points_of[key]):
        w = f"{where}.{data}.data_points[{d}]"
        yield point, w, partial(_json_point, metric, svc, ptype, point, w)


def _json_point(metric: Metric, svc: str, ptype: type, point: Any, w: str, rows: _MetricRows) -> None:
    """The rows of the OTLP/JSON data point ``point`` (at path ``w``) of ``metric``."""
    _metric_point(rows, w, metric, svc, _json_parse(point, ptype(), w))


_JSON_DATA_KEYS = {
    "gauge": "gauge",
    "sum": "sum",
    "histogram": "histogram",
    "summary": "summary",
    "exponentialHistogram": "exponential_histogram",
    "exponential_histogram": "exponential_histogram",
}


def _metric_point(rows: _MetricRows, w: str, m: Metric, svc: str, dp) -> None:
    """The rows of data point ``dp`` of metric ``m`` (gauge, sum, histogram or summary)."""
    data = m.WhichOneof("data")
    if data == "gauge":
        _gauge_point(rows, w, m.name, svc, dp)
    elif data == "sum":
        temp: str | None = _temporality(m.sum)
        level = not m.sum.is_monotonic and temp == "cumulative"
        kind, temp = ("GAUGE", None) if level else ("COUNTER", temp)
        _sum_point(rows, w, m.name, svc, kind, temp, dp)
    elif data == "histogram":
        _histogram_point(rows, w, m.name, svc, _temporality(m.histogram), dp)
    else:
        _summary_point(rows, w, m.name, svc, dp)


def _json_metrics(doc: dict, rows: _MetricRows) -> None:
    for source, where, build in _json_metric_items(doc):
        rows.item(source, where, partial(build, rows))


def _item_sources(parsed, signal: str, encoding: str) -> list:
    """The items of a parsed message in the order the rows builders count them: spans, log
    records, or data points (a metric of an unsupported kind is one item itself)."""
    if signal == "metric":
        if encoding == "otlp_json":
            return [source for source, _, _ in _json_metric_items(parsed)]
        out: list[Any] = []
        for rm in parsed.resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    data = m.WhichOneof("data")
                    out.extend(
                        getattr(m, data).data_points if data in ("gauge", "sum", "histogram", "summary") else [m]
                    )
        return out
    if encoding == "otlp_json":
        return [rec for _, _, rec in _json_records(parsed, signal)]
    if signal == "span":
        return [sp for rs in parsed.resource_spans for ss in rs.scope_spans for sp in ss.spans]
    return [lr for rl in parsed.resource_logs for sl in rl.scope_logs for lr in sl.log_records]


class OtlpCodec:
    """Decode OTLP export requests (one per Kafka message) into span, log or metric rows,
    accepting per item.

    Consumes a :class:`RawBatch` of serialized ``ExportTraceServiceRequest`` (signal
    ``span``), ``ExportLogsServiceRequest`` (signal ``log``) or
    ``ExportMetricsServiceRequest`` (signal ``metric``, see :class:`_MetricRows`)
    messages, protobuf or OTLP/JSON per ``encoding``; emits a :class:`Batch` whose table
    has the signal's wire columns plus ``_i`` (the message) and ``_item`` (the span, log
    record or data point in it), with ``items_in`` (items per message; 1 for a message
    rejected whole) and ``item_raw`` (an item's own bytes).

    Rejects of one item (``Rejects.items`` set): a span without a valid trace or span id,
    start or end time, an unknown span kind or status code, a log record without any
    timestamp, a data point without a time or with a count beyond int64, a metric of an
    unsupported kind, malformed ids and JSON values of the wrong type
    (``schema_violation``, the detail names the item's path); an item over ``max_bytes``
    (``size_violation``). Rejects of a whole message: empty payloads and tombstones,
    bytes that are not the expected protobuf message or not a JSON object, JSON containers
    of the wrong type (``format_violation`` / ``schema_violation``); a message with no
    items (``schema_violation``); a message over :data:`MAX_MESSAGE_BYTES` (or
    ``max_bytes`` when larger) (``size_violation``).
    """

    def __init__(self, signal: str, max_bytes: int = DEFAULT_MAX_BYTES, encoding: str = "otlp_proto"):
        if signal not in ("span", "log", "metric"):
            raise ValueError(f"the OTLP codec decodes signals 'span', 'log' and 'metric', not {signal!r}")
        if encoding not in ENCODINGS:
            raise ValueError(f"unknown OTLP encoding {encoding!r}; expected one of {', '.join(ENCODINGS)}")
        self.signal = signal
        self.max_bytes = max_bytes
        self.max_message_bytes = max(MAX_MESSAGE_BYTES, max_bytes)
        self.encoding = encoding
        self.wire = arrow_schema(signal)
        self.names = [f.name for f in self.wire]
        message_types: dict[
            str, type[ExportTraceServiceRequest | ExportLogsServiceRequest | ExportMetricsServiceRequest]
        ] = {"span": ExportTraceServiceRequest, "log": ExportLogsServiceRequest, "metric": ExportMetricsServiceRequest}
        self.message_type = message_types[signal]
        self.what = {"span": "spans", "log": "log records", "metric": "metric data points"}[signal]
        self._rows = {"span": _SpanRows, "log": _LogRows, "metric": _MetricRows}[signal]
        if set(self._rows.columns) != set(self.names):  # the wire schema changed under us
            raise ValueError(f"OTLP {signal} rows {self._rows.columns} do not match the wire columns {self.names}")
        expanders: dict[str, Callable[[Any, Any], None]]  # (parsed message, rows)
        if encoding == "otlp_proto":
            expanders = {"span": _proto_spans, "log": _proto_logs, "metric": _proto_metrics}
        else:
            expanders = {"span": _json_spans, "log": _json_logs, "metric": _json_metrics}
        self._expand = expanders[signal]

    # -- public -------------------------------------------------------------------------

    def decode(self, raw: RawBatch) -> Batch:
        rejects = Rejects()
        all_rows: list[tuple] = []
        index: list[int] = []
        items: list[int] = []
        items_in: list[int] = []
        limit, message_limit = self.max_bytes, self.max_message_bytes
        for i, v in enumerate(raw.values):
            items_in.append(1)
            if not v:
                rejects.add(i, "format_violation", "tombstone (null value)" if v is None else "empty payload")
                continue
            if len(v) > message_limit:
                rejects.add(
                    i, "size_violation", f"message of {len(v)} bytes exceeds the limit of {message_limit} bytes"
                )
                continue
            # an item can only be over the limit in a message that is
            rows = self._rows(limit, self._item_size) if len(v) > limit else self._rows()
            try:
                self._expand(self._parse(v), rows)
                if not rows.count:
                    raise _Reject("schema_violation", f"OTLP message holds no {self.what}")
            except _Reject as e:
                rejects.add(i, e.reason, e.detail)
                continue
            except Exception as e:  # defensive (e.g. RecursionError on absurd nesting): no input may crash the job
                rejects.add(i, "format_violation", f"undecodable OTLP message: {type(e).__name__}: {str(e)[:160]}")
                continue
            items_in[i] = rows.count
            for k, reason, detail in rows.rejects:
                rejects.add(i, reason, detail, k)
            all_rows.extend(rows.rows)
            index.extend([i] * len(rows.rows))
            items.extend(rows.row_item)
        table = self._table(all_rows, index, items, rejects)
        return Batch(raw=raw, table=table, rejects=rejects, items_in=items_in, item_raw=partial(self._item_raw, raw))

    def _item_raw(self, raw: RawBatch, i: int, k: int) -> bytes:
        """The own bytes of item ``k`` of message ``i`` (a message that had items)."""
        value = raw.values[i]
        if value is None:
            raise ValueError(f"record {i} is a tombstone: it has no items")
        return self._item_bytes(_item_sources(self._parse(value), self.signal, self.encoding)[k])

    def _table(self, all_rows: list[tuple], index: list[int], items: list[int], rejects: Rejects) -> pa.Table:
        """The rows as the wire schema's table plus ``_i`` and ``_item``. Should a value
        not fit its column after all, the items whose rows do not convert are rejected
        alone and the rest is built again."""
        names = self._rows.columns + tuple(self._extra.names)
        try:
            return self._arrays(all_rows, index, items)
        except (pa.ArrowException, OverflowError, TypeError, ValueError):
            pass
        keep = np.ones(len(all_rows), dtype=bool)
        failed: dict[tuple[int, int], str] = {}
        for r, row in enumerate(all_rows):
            for f in (*self.wire, *self._extra):
                try:
                    pa.array([row[names.index(f.name)]], type=f.type)
                except (pa.ArrowException, OverflowError, TypeError, ValueError) as e:
                    failed.setdefault((index[r], items[r]), f"{f.name}: value does not fit {f.type}: {str(e)[:120]}")
                    break
        for r in range(len(all_rows)):
            keep[r] = (index[r], items[r]) not in failed
        for (i, k), detail in failed.items():
            rejects.add(i, "schema_violation", detail, k)
        return self._arrays(
            [row for row, ok in zip(all_rows, keep) if ok],
            [i for i, ok in zip(index, keep) if ok],
            [k for k, ok in zip(items, keep) if ok],
        )

    @property
    def _extra(self) -> pa.Schema:
        """Columns after the wire columns: :data:`SPAN_EXTRA` for spans, none otherwise."""
        return SPAN_EXTRA if self.signal == "span" else pa.schema([])

    def _arrays(self, all_rows: list[tuple], index: list[int], items: list[int]) -> pa.Table:
        extra = self._extra
        names = self._rows.columns + tuple(extra.names)
        columns = list(zip(*all_rows)) if all_rows else [()] * len(names)
        by_name = dict(zip(names, columns))
        arrays = [pa.array(by_name[f.name], type=f.type) for f in (*self.wire, *extra)]
        arrays.append(pa.array(np.asarray(index, dtype=np.int64), pa.int64()))
        arrays.append(pa.array(np.asarray(items, dtype=np.int32), pa.int32()))
        return pa.Table.from_arrays(arrays, names=self.names + extra.names + [INDEX, ITEM])

    def _item_size(self, source) -> int:
        return (
            source.ByteSize()
            if self.encoding == "otlp_proto" or not isinstance(source, (dict, list))
            else len(orjson.dumps(source))
        )

    def _item_bytes(self, source) -> bytes:
        """An item's own bytes for its dead letter: the serialized span / log record / data
        point, in the message's encoding."""
        if self.encoding == "otlp_proto":
            return source.SerializeToString()
        return orjson.dumps(source)

    # -- parsing --------------------------------------------------------------------------

    def _parse(self, payload: bytes):
        mtype = self.message_type
        if self.encoding == "otlp_proto":
            try:
                msg = mtype.FromString(payload)
            except DecodeError as e:
                raise _Reject("format_violation", f"not an OTLP {mtype.__name__} (protobuf): {e}") from None
            if not msg.ListFields() and len(unknown_fields.UnknownFieldSet(msg)):
                nums = sorted({f.field_number for f in unknown_fields.UnknownFieldSet(msg)})[:8]
                raise _Reject(
                    "format_violation", f"not an OTLP {mtype.__name__} (protobuf): only unknown fields {nums}"
                )
            return msg
        try:
            doc = orjson.loads(payload)
        except orjson.JSONDecodeError as e:
            raise _Reject("format_violation", f"not OTLP/JSON: invalid JSON: {e}") from None
        if not isinstance(doc, dict):
            raise _Reject(
                "format_violation", f"not an OTLP/JSON {mtype.__name__}: expected a JSON object, got {_jkind(doc)}"
            )
        return doc
