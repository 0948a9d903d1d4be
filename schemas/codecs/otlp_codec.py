"""OTLP codec: Kafka messages as the OpenTelemetry Collector's Kafka exporter writes
them — each message one serialized ``ExportTraceServiceRequest`` (signal ``span``) or
``ExportLogsServiceRequest`` (signal ``log``), in protobuf (``otlp_proto``) or in the
OTLP/JSON mapping (``otlp_json``: proto3 JSON with lowerCamelCase keys, trace and span
ids as hex strings, 64-bit integers as strings, enums as integers).

One message expands into many rows, one per span or log record, all carrying the
message's ``_i``. A message is accepted or rejected as a whole (its dead letter keeps
the raw bytes); a bad span or log record rejects its message with the record's path in
the detail, so nothing is half-written and nothing is lost silently.

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
from typing import Any, Callable

import numpy as np
import orjson
import pyarrow as pa
from google.protobuf import json_format, unknown_fields
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from schemas.wire import arrow_schema
from transforms.batch import INDEX, Batch, RawBatch, Rejects

ENCODINGS = ("otlp_proto", "otlp_json")
SPAN_KINDS = ("UNSPECIFIED", "INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER")
STATUS_CODES = ("UNSET", "OK", "ERROR")
#: severity_number // 4 (after -1) → level
SEVERITIES = ("TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL")
UNKNOWN_SERVICE = "unknown_service"
ZERO_TRACE = bytes(16)
ZERO_SPAN = bytes(8)

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
_TYPE_NAMES = {"bool_value": "bool", "int_value": "int", "double_value": "double", "bytes_value": "bytes",
               "array_value": "array", "kvlist_value": "kvlist"}


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
    f"SEVERITY_NUMBER_{lvl}{'' if k == 0 else k + 1}": 1 + 4 * n + k for n, lvl in enumerate(SEVERITIES) for k in range(4)}
_ANY_KEYS = (("stringValue", "string_value"), ("boolValue", "bool_value"), ("intValue", "int_value"),
             ("doubleValue", "double_value"), ("bytesValue", "bytes_value"), ("arrayValue", "array_value"),
             ("kvlistValue", "kvlist_value"))


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
    return {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number"}.get(type(v), "null")


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
    return _jint(v, where, -(2 ** 31), 2 ** 31)


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
            return _jint(x, w, -(2 ** 63), 2 ** 63)
        if camel == "doubleValue":
            if isinstance(x, bool) or not isinstance(x, (int, float, str)):
                raise _Reject("schema_violation", f"{w}: expected a number, got {_jkind(x)}")
            try:
                return float(x)
            except ValueError:
                raise _Reject("schema_violation", f"{w}: expected a number, got {x[:40]!r}") from None
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


_JTYPE_NAMES = {"boolValue": "bool", "intValue": "int", "doubleValue": "double", "bytesValue": "bytes",
                "arrayValue": "array", "kvlistValue": "kvlist"}


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

_U64 = 2 ** 64


def _level(number: int, text: str) -> str:
    if 1 <= number <= 24:
        return SEVERITIES[(number - 1) // 4]
    if text:
        return text.strip().upper()
    return "INFO"


class _SpanRows:
    """Span rows (tuples in wire column order); :meth:`add` checks one span and appends it."""

    columns = ("trace_id", "span_id", "parent_span_id", "service", "name", "kind", "start_time", "end_time", "status_code",
               "status_message", "attributes", "resource")

    def __init__(self):
        self.rows: list[tuple] = []

    def add(self, where: str, service: str, resource: dict | None, trace_id: bytes, span_id: bytes, parent: bytes, name: str,
            kind: int, start: int, end: int, code: int, status_message: str, attributes: dict,
            extra: tuple = (None,) * 6) -> None:
        """``extra``: the :data:`SPAN_EXTRA` values (attribute types, resource types, start
        and end nanoseconds, tracestate, flags), appended after the wire columns."""
        t = trace_id.hex() if len(trace_id) == 16 and trace_id != ZERO_TRACE else _hex_id(trace_id, 16, "trace id", where, True)
        s = span_id.hex() if len(span_id) == 8 and span_id != ZERO_SPAN else _hex_id(span_id, 8, "span id", where, True)
        p = parent.hex() if len(parent) == 8 and parent != ZERO_SPAN else _hex_id(parent, 8, "parent span id", where, False)
        if not 0 <= kind < 6:
            raise _Reject("schema_violation", f"{where}: span kind {kind} is not an OTLP SpanKind")
        if not start:
            raise _Reject("schema_violation", f"{where}: no start_time_unix_nano")
        if not end:
            raise _Reject("schema_violation", f"{where}: no end_time_unix_nano")
        if not 0 <= code < 3:
            raise _Reject("schema_violation", f"{where}: status code {code} is not an OTLP StatusCode")
        self.rows.append((t, s, p, service, name, SPAN_KINDS[kind], start // 1000, end // 1000, STATUS_CODES[code],
                          status_message or None, attributes or None, resource, *extra))


#: span columns the OTLP codec adds after the wire columns (see the module docstring)
SPAN_EXTRA = pa.schema([("attribute_types", pa.map_(pa.string(), pa.string())), ("resource_types", pa.map_(pa.string(), pa.string())),
                        ("start_unix_nano", pa.int64()), ("end_unix_nano", pa.int64()), ("trace_state", pa.string()),
                        ("flags", pa.int64())])
_I64_LIMIT = 2 ** 63


def _span_extra(attr_types, res_types, start: int, end: int, trace_state: str, flags: int) -> tuple:
    return (attr_types, res_types, start if start < _I64_LIMIT else None, end if end < _I64_LIMIT else None,
            trace_state or None, flags)


class _LogRows:
    """Log rows (tuples in wire column order); :meth:`add` checks one log record and appends it."""

    columns = ("timestamp", "level", "service", "message", "trace_id", "span_id", "request_id", "user_id", "host", "env", "attributes")

    def __init__(self):
        self.rows: list[tuple] = []

    @staticmethod
    def resource(res: dict[str, str | None]) -> tuple[str, str | None, str | None, dict]:
        """(service, host, env, remaining attributes) of a resource."""
        res = dict(res)
        svc = res.pop("service.name", None) or UNKNOWN_SERVICE
        host = res.pop("host.name", None)
        env_new, env_old = res.pop("deployment.environment.name", None), res.pop("deployment.environment", None)
        return svc, host, env_new or env_old, res

    def add(self, where: str, res: tuple, time_ns: int, observed_ns: int, trace_id: bytes, span_id: bytes, severity_number: int,
            severity_text: str, message: str, attributes: dict, event_name: str) -> None:
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
        self.rows.append((t // 1_000_000, _level(severity_number, severity_text), svc, message, tid, sid, request_id, user_id,
                          host, env, attrs or None))


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
    for a, rs in enumerate(msg.resource_spans):
        res = _attrs(rs.resource.attributes)
        svc = res.get("service.name") or UNKNOWN_SERVICE
        res_map = res or None
        res_types = _attr_types(rs.resource.attributes)
        for b, ss in enumerate(rs.scope_spans):
            for c, sp in enumerate(ss.spans):
                attrs, types = _typed_attrs(sp.attributes)
                start, end = sp.start_time_unix_nano, sp.end_time_unix_nano
                rows.add(f"resource_spans[{a}].scope_spans[{b}].spans[{c}]", svc, res_map, sp.trace_id, sp.span_id, sp.parent_span_id,
                         sp.name, sp.kind, start, end, sp.status.code, sp.status.message, attrs,
                         _span_extra(types, res_types, start, end, sp.trace_state, sp.flags))


def _proto_logs(msg: ExportLogsServiceRequest, rows: _LogRows) -> None:
    for a, rl in enumerate(msg.resource_logs):
        res = rows.resource(_attrs(rl.resource.attributes))
        for b, sl in enumerate(rl.scope_logs):
            for c, lr in enumerate(sl.log_records):
                rows.add(f"resource_logs[{a}].scope_logs[{b}].log_records[{c}]", res, lr.time_unix_nano, lr.observed_time_unix_nano,
                         lr.trace_id, lr.span_id, lr.severity_number, lr.severity_text, _proto_body(lr.body),
                         _attrs(lr.attributes), lr.event_name)


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
                yield (res, resource, w3, _jobj(rec, w3)) if raw_resource else (res, w3, _jobj(rec, w3))


def _json_spans(doc: dict, rows: _SpanRows) -> None:
    last, ctx = None, None
    for res, resource, w, sp in _json_records(doc, "span", raw_resource=True):
        if res is not last:
            last, ctx = res, (res.get("service.name") or UNKNOWN_SERVICE, res or None, _jattr_types(resource))
        status = _jobj(sp.get("status"), f"{w}.status")
        start = _jint(_jget(sp, "startTimeUnixNano", "start_time_unix_nano"), f"{w}.startTimeUnixNano", 0, _U64)
        end = _jint(_jget(sp, "endTimeUnixNano", "end_time_unix_nano"), f"{w}.endTimeUnixNano", 0, _U64)
        attrs = _jattrs(sp, w)
        rows.add(w, ctx[0], ctx[1], _jid(_jget(sp, "traceId", "trace_id"), f"{w}.traceId"), _jid(_jget(sp, "spanId", "span_id"), f"{w}.spanId"),
                 _jid(_jget(sp, "parentSpanId", "parent_span_id"), f"{w}.parentSpanId"), _jstr(sp.get("name"), f"{w}.name"),
                 _jenum(sp.get("kind"), _SPAN_KIND_NAMES, f"{w}.kind"), start, end,
                 _jenum(status.get("code"), _STATUS_NAMES, f"{w}.status.code"), _jstr(status.get("message"), f"{w}.status.message"),
                 attrs, _span_extra(_jattr_types(sp), ctx[2], start, end,
                                    _jstr(_jget(sp, "traceState", "trace_state"), f"{w}.traceState"),
                                    _jint(sp.get("flags"), f"{w}.flags", 0, 2 ** 32)))


def _json_logs(doc: dict, rows: _LogRows) -> None:
    last, res = None, None
    for r, w, lr in _json_records(doc, "log"):
        if r is not last:
            last, res = r, rows.resource(r)
        rows.add(w, res, _jint(_jget(lr, "timeUnixNano", "time_unix_nano"), f"{w}.timeUnixNano", 0, _U64),
                 _jint(_jget(lr, "observedTimeUnixNano", "observed_time_unix_nano"), f"{w}.observedTimeUnixNano", 0, _U64),
                 _jid(_jget(lr, "traceId", "trace_id"), f"{w}.traceId"), _jid(_jget(lr, "spanId", "span_id"), f"{w}.spanId"),
                 _jenum(_jget(lr, "severityNumber", "severity_number"), _SEVERITY_NAMES, f"{w}.severityNumber"),
                 _jstr(_jget(lr, "severityText", "severity_text"), f"{w}.severityText"), _json_body(lr.get("body"), f"{w}.body"),
                 _jattrs(lr, w), _jstr(_jget(lr, "eventName", "event_name"), f"{w}.eventName"))


# -- the codec ------------------------------------------------------------------------------


_DELTA, _CUMULATIVE = 1, 2


def _quantile_label(q: float) -> str:
    """A quantile as Prometheus writes it in a summary's ``quantile`` label (0.5, 0.99, 0, 1)."""
    return format(float(q), ".15g")


class _MetricRows:
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

    columns = ("name", "kind", "timestamp", "labels", "value", "bucket_bounds", "bucket_counts", "count", "sum",
               "temporality", "start_time")

    def __init__(self):
        self.rows: list[tuple] = []

    def add(self, where: str, name: str, kind: str, time_ns: int, labels: dict, value=None, bounds=None, counts=None,
            count=None, total=None, temporality: str | None = None, start_ns: int = 0) -> None:
        if not name:
            raise _Reject("schema_violation", f"{where}: metric without a name")
        if not time_ns:
            raise _Reject("schema_violation", f"{where}: data point without time_unix_nano")
        self.rows.append((name, kind, time_ns // 1_000_000, labels, value, bounds, counts, count, total, temporality,
                          start_ns // 1_000_000 if start_ns else None))


def _point_value(dp):
    which = dp.WhichOneof("value")
    return float(dp.as_double) if which == "as_double" else float(dp.as_int) if which == "as_int" else None


def _temporality(body) -> str:
    return "delta" if body.aggregation_temporality == _DELTA else "cumulative"


def _proto_metrics(msg: ExportMetricsServiceRequest, rows: _MetricRows) -> None:
    for a, rm in enumerate(msg.resource_metrics):
        res = _attrs(rm.resource.attributes)
        svc = res.get("service.name") or UNKNOWN_SERVICE
        for b, sm in enumerate(rm.scope_metrics):
            for c, m in enumerate(sm.metrics):
                where = f"resource_metrics[{a}].scope_metrics[{b}].metrics[{c}]"
                data = m.WhichOneof("data")
                if data == "gauge":
                    for d, dp in enumerate(m.gauge.data_points):
                        rows.add(f"{where}.gauge.data_points[{d}]", m.name, "GAUGE", dp.time_unix_nano,
                                 {**_attrs(dp.attributes), "service": svc}, value=_point_value(dp), start_ns=dp.start_time_unix_nano)
                elif data == "sum":
                    temp = _temporality(m.sum)
                    level = not m.sum.is_monotonic and temp == "cumulative"
                    kind, temp = ("GAUGE", None) if level else ("COUNTER", temp)
                    for d, dp in enumerate(m.sum.data_points):
                        rows.add(f"{where}.sum.data_points[{d}]", m.name, kind, dp.time_unix_nano,
                                 {**_attrs(dp.attributes), "service": svc}, value=_point_value(dp), temporality=temp,
                                 start_ns=dp.start_time_unix_nano)
                elif data == "histogram":
                    temp = _temporality(m.histogram)
                    for d, dp in enumerate(m.histogram.data_points):
                        rows.add(f"{where}.histogram.data_points[{d}]", m.name, "HISTOGRAM", dp.time_unix_nano,
                                 {**_attrs(dp.attributes), "service": svc}, bounds=list(dp.explicit_bounds),
                                 counts=[int(x) for x in dp.bucket_counts], count=int(dp.count),
                                 total=float(dp.sum) if dp.HasField("sum") else None, temporality=temp,
                                 start_ns=dp.start_time_unix_nano)
                elif data == "summary":
                    for d, dp in enumerate(m.summary.data_points):
                        w = f"{where}.summary.data_points[{d}]"
                        labels = {**_attrs(dp.attributes), "service": svc}
                        rows.add(w, m.name, "SUMMARY", dp.time_unix_nano, labels, count=int(dp.count), total=float(dp.sum),
                                 temporality="cumulative", start_ns=dp.start_time_unix_nano)
                        for qv in dp.quantile_values:
                            if qv.value == qv.value:  # NaN: no observations behind this quantile
                                rows.add(w, m.name, "GAUGE", dp.time_unix_nano, {**labels, "quantile": _quantile_label(qv.quantile)},
                                         value=float(qv.value), start_ns=dp.start_time_unix_nano)
                else:
                    raise _Reject("schema_violation", f"{where}: {data or 'no'} data is not supported (gauge, sum, histogram, summary)")


def _json_metrics(doc: dict, rows: _MetricRows) -> None:
    """OTLP/JSON metrics through protobuf's JSON mapping (exemplars, whose ids are hex in
    OTLP/JSON, are dropped first: the metrics table keeps none)."""
    def strip(o):
        if isinstance(o, dict):
            o.pop("exemplars", None)
            for v in o.values():
                strip(v)
        elif isinstance(o, list):
            for v in o:
                strip(v)
    strip(doc)
    try:
        msg = json_format.ParseDict(doc, ExportMetricsServiceRequest(), ignore_unknown_fields=True)
    except json_format.ParseError as e:
        raise _Reject("schema_violation", f"not an OTLP/JSON ExportMetricsServiceRequest: {str(e)[:200]}") from None
    _proto_metrics(msg, rows)


class OtlpCodec:
    """Decode OTLP export requests (one per Kafka message) into span or log rows.

    Consumes a :class:`RawBatch` of serialized ``ExportTraceServiceRequest`` (signal
    ``span``) or ``ExportLogsServiceRequest`` (signal ``log``) messages, protobuf or
    OTLP/JSON per ``encoding``; emits a :class:`Batch` whose table has the signal's wire
    columns plus ``_i`` (one row per span / log record, all rows of a message sharing its
    ``_i``). Rejects, whole messages: empty payloads and tombstones, bytes that are not
    the expected protobuf message or not a JSON object (``format_violation``); a message
    with no spans / log records, a span without a valid trace or span id, start or end
    time, an unknown span kind or status code, a log record without any timestamp,
    malformed ids and JSON values of the wrong type (``schema_violation``, the detail
    names the record's path); payloads over ``max_bytes`` (``size_violation``).

    Signal ``metric`` (``ExportMetricsServiceRequest``): one row per data point (see
    :class:`_MetricRows`), the wire columns (``temporality`` and ``start_time``
    included), then ``_i``.
    """

    def __init__(self, signal: str, max_bytes: int = 1 << 20, encoding: str = "otlp_proto"):
        if signal not in ("span", "log", "metric"):
            raise ValueError(f"the OTLP codec decodes signals 'span', 'log' and 'metric', not {signal!r}")
        if encoding not in ENCODINGS:
            raise ValueError(f"unknown OTLP encoding {encoding!r}; expected one of {', '.join(ENCODINGS)}")
        self.signal = signal
        self.max_bytes = max_bytes
        self.encoding = encoding
        self.wire = arrow_schema(signal)
        self.names = [f.name for f in self.wire]
        self.message_type = {"span": ExportTraceServiceRequest, "log": ExportLogsServiceRequest,
                             "metric": ExportMetricsServiceRequest}[signal]
        self.what = {"span": "spans", "log": "log records", "metric": "metric data points"}[signal]
        self._rows = {"span": _SpanRows, "log": _LogRows, "metric": _MetricRows}[signal]
        if set(self._rows.columns) != set(self.names):  # the wire schema changed under us
            raise ValueError(f"OTLP {signal} rows {self._rows.columns} do not match the wire columns {self.names}")
        if encoding == "otlp_proto":
            self._expand: Callable[[Any, Any], None] = {"span": _proto_spans, "log": _proto_logs, "metric": _proto_metrics}[signal]
        else:
            self._expand = {"span": _json_spans, "log": _json_logs, "metric": _json_metrics}[signal]

    # -- public -------------------------------------------------------------------------

    def decode(self, raw: RawBatch) -> Batch:
        rejects = Rejects()
        all_rows: list[tuple] = []
        index: list[int] = []
        limit = self.max_bytes
        for i, v in enumerate(raw.values):
            if not v:
                rejects.add(i, "format_violation", "tombstone (null value)" if v is None else "empty payload")
                continue
            if len(v) > limit:
                rejects.add(i, "size_violation", f"payload of {len(v)} bytes exceeds the limit of {limit} bytes")
                continue
            rows = self._rows()
            try:
                self._expand(self._parse(v), rows)
                if not rows.rows:
                    raise _Reject("schema_violation", f"OTLP message holds no {self.what}")
            except _Reject as e:
                rejects.add(i, e.reason, e.detail)
                continue
            except Exception as e:  # defensive (e.g. RecursionError on absurd nesting): no input may crash the job
                rejects.add(i, "format_violation", f"undecodable OTLP message: {type(e).__name__}: {str(e)[:160]}")
                continue
            all_rows.extend(rows.rows)
            index.extend([i] * len(rows.rows))
        extra = SPAN_EXTRA if self.signal == "span" else pa.schema([])
        names = self._rows.columns + tuple(extra.names)
        columns = list(zip(*all_rows)) if all_rows else [()] * len(names)
        by_name = dict(zip(names, columns))
        arrays = [pa.array(by_name[f.name], type=f.type) for f in (*self.wire, *extra)]
        arrays.append(pa.array(np.asarray(index, dtype=np.int64), pa.int64()))
        table = pa.Table.from_arrays(arrays, names=self.names + extra.names + [INDEX])
        return Batch(raw=raw, table=table, rejects=rejects)

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
                raise _Reject("format_violation", f"not an OTLP {mtype.__name__} (protobuf): only unknown fields {nums}")
            return msg
        try:
            doc = orjson.loads(payload)
        except orjson.JSONDecodeError as e:
            raise _Reject("format_violation", f"not OTLP/JSON: invalid JSON: {e}") from None
        if not isinstance(doc, dict):
            raise _Reject("format_violation", f"not an OTLP/JSON {mtype.__name__}: expected a JSON object, got {_jkind(doc)}")
        return doc
