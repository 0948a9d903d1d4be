"""OTLP/HTTP at the door: parse an export request (protobuf or OTLP/JSON), split it into
Kafka messages keyed so order holds (spans and logs by trace id, metrics by service),
each no larger than the pipeline's ``max_bytes``, encoded in the codec the spec's source
for that signal reads, and judged by that codec (a message the pipeline could not decode
is rejected here, counted in ``partial_success`` and dead-lettered).

Codecs: ``otlp_proto`` / ``otlp_json`` get export requests (as the Collector's Kafka
exporter writes them, one trace per message); ``json`` gets one wire row per span / log
record / data point (the rows the OTLP codec decodes, so the mapping is the pipeline's
own); ``avro`` the same rows in the Confluent wire format."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
import pyarrow as pa
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsPartialSuccess,
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsPartialSuccess,
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from core.errors import ObsflowError
from schemas.codecs import codec_for, encode_confluent, to_otlp_json
from transforms.batch import RawBatch

#: one of the three ``Export*ServiceRequest`` messages; which one is named by the signal
#: string that travels with it (the code branches on that string, not on the type)
OtlpRequest = Any

REQUEST: dict[str, type[OtlpRequest]] = {
    "span": ExportTraceServiceRequest,
    "log": ExportLogsServiceRequest,
    "metric": ExportMetricsServiceRequest,
}
_ID_KEYS = {"traceId", "trace_id", "spanId", "span_id", "parentSpanId", "parent_span_id"}


class BadRequest(ObsflowError, ValueError):
    """The body is not an OTLP export request of this signal (400)."""


def _hex_ids_to_b64(o) -> None:
    """OTLP/JSON writes ids in hex; protobuf's JSON parser wants base64."""
    if isinstance(o, dict):
        for k, v in o.items():
            if k in _ID_KEYS and isinstance(v, str):
                try:
                    o[k] = base64.b64encode(bytes.fromhex(v)).decode()
                except ValueError:
                    raise BadRequest(f"{k}: not a hex id: {v[:40]!r}") from None
            else:
                _hex_ids_to_b64(v)
    elif isinstance(o, list):
        for v in o:
            _hex_ids_to_b64(v)


def parse(signal: str, body: bytes, is_json: bool) -> OtlpRequest:
    """The export request in ``body``; :class:`BadRequest` naming why it is not one."""
    mtype = REQUEST[signal]
    if is_json:
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError as e:
            raise BadRequest(f"invalid JSON: {e}") from None
        if not isinstance(doc, dict):
            raise BadRequest(f"expected an OTLP/JSON {mtype.__name__} object")
        _hex_ids_to_b64(doc)
        try:
            return json_format.ParseDict(doc, mtype(), ignore_unknown_fields=True)
        except (json_format.ParseError, ValueError, TypeError, RecursionError) as e:
            raise BadRequest(f"not an OTLP/JSON {mtype.__name__}: {str(e)[:200]}") from None
    try:
        return mtype.FromString(body)
    except (DecodeError, RecursionError, ValueError) as e:
        raise BadRequest(f"not an OTLP {mtype.__name__} (protobuf): {str(e)[:200]}") from None


def response(signal: str, rejected: int, message: str, as_json: bool) -> bytes:
    """An Export*ServiceResponse, with ``partial_success`` when something was rejected."""
    if signal == "span":
        resp = ExportTraceServiceResponse()
        if rejected:
            resp.partial_success.CopyFrom(ExportTracePartialSuccess(rejected_spans=rejected, error_message=message))
    elif signal == "log":
        resp = ExportLogsServiceResponse()
        if rejected:
            resp.partial_success.CopyFrom(
                ExportLogsPartialSuccess(rejected_log_records=rejected, error_message=message)
            )
    else:
        resp = ExportMetricsServiceResponse()
        if rejected:
            resp.partial_success.CopyFrom(
                ExportMetricsPartialSuccess(rejected_data_points=rejected, error_message=message)
            )
    if as_json:
        return orjson.dumps(json_format.MessageToDict(resp))
    return resp.SerializeToString()


def _service(resource) -> str:
    for kv in resource.attributes:
        if kv.key == "service.name":
            return kv.value.string_value
    return "unknown_service"


def _count(signal: str, msg: OtlpRequest) -> int:
    if signal == "span":
        return sum(len(ss.spans) for rs in msg.resource_spans for ss in rs.scope_spans)
    if signal == "log":
        return sum(len(sl.log_records) for rl in msg.resource_logs for sl in rl.scope_logs)
    n = 0
    for rm in msg.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                kind = m.WhichOneof("data")
                n += len(getattr(m, kind).data_points) if kind else 1
    return n


def _groups(signal: str, msg: OtlpRequest) -> dict[bytes, OtlpRequest]:
    """Sub-requests by key: trace id (spans, logs; logs without one by service), service (metrics)."""
    out: dict[bytes, OtlpRequest] = {}
    mtype = REQUEST[signal]
    if signal == "metric":
        for rm in msg.resource_metrics:
            key = _service(rm.resource).encode()
            req = out.setdefault(key, mtype())
            req.resource_metrics.add().CopyFrom(rm)
        return out
    res_list = msg.resource_spans if signal == "span" else msg.resource_logs
    for _ri, rs in enumerate(res_list):
        scopes = rs.scope_spans if signal == "span" else rs.scope_logs
        copies: dict[bytes, tuple] = {}
        for si, ss in enumerate(scopes):
            items = ss.spans if signal == "span" else ss.log_records
            for item in items:
                tid = item.trace_id
                key = tid.hex().encode() if tid else b"svc:" + _service(rs.resource).encode()
                req = out.get(key)
                if req is None:
                    req = out[key] = mtype()
                slot = copies.get(key)
                if slot is None or slot[0] != si:
                    if slot is None:
                        r_copy = (req.resource_spans if signal == "span" else req.resource_logs).add()
                        r_copy.resource.CopyFrom(rs.resource)
                        r_copy.schema_url = rs.schema_url
                    else:
                        r_copy = slot[1]
                    s_copy = (r_copy.scope_spans if signal == "span" else r_copy.scope_logs).add()
                    s_copy.scope.CopyFrom(ss.scope)
                    s_copy.schema_url = ss.schema_url
                    slot = copies[key] = (si, r_copy, s_copy)
                (slot[2].spans if signal == "span" else slot[2].log_records).add().CopyFrom(item)
    return out


def _split(signal: str, req: OtlpRequest, max_bytes: int) -> list[OtlpRequest]:
    """``req`` cut into requests of at most ``max_bytes`` serialized (halving its items);
    a single item larger than that stays alone (and is rejected by the codec)."""
    if req.ByteSize() <= max_bytes or _count(signal, req) <= 1:
        return [req]
    mtype = REQUEST[signal]
    items = []  # (resource holder, scope holder, item)
    if signal == "metric":
        left, right = mtype(), mtype()
        rms = list(req.resource_metrics)
        if len(rms) > 1:
            for rm in rms[: len(rms) // 2]:
                left.resource_metrics.add().CopyFrom(rm)
            for rm in rms[len(rms) // 2 :]:
                right.resource_metrics.add().CopyFrom(rm)
            return _split(signal, left, max_bytes) + _split(signal, right, max_bytes)
        return [req]
    for rs in req.resource_spans if signal == "span" else req.resource_logs:
        for ss in rs.scope_spans if signal == "span" else rs.scope_logs:
            for it in ss.spans if signal == "span" else ss.log_records:
                items.append((rs, ss, it))
    half = len(items) // 2
    parts = []
    for chunk in (items[:half], items[half:]):
        sub = mtype()
        last = None
        for rs, ss, it in chunk:
            if last is None or last[0] is not rs or last[1] is not ss:
                r_copy = (sub.resource_spans if signal == "span" else sub.resource_logs).add()
                r_copy.resource.CopyFrom(rs.resource)
                s_copy = (r_copy.scope_spans if signal == "span" else r_copy.scope_logs).add()
                s_copy.scope.CopyFrom(ss.scope)
                last = (rs, ss, s_copy)
            (last[2].spans if signal == "span" else last[2].log_records).add().CopyFrom(it)
        parts.extend(_split(signal, sub, max_bytes))
    return parts


@dataclass
class Split:
    """Messages to produce and door rejects (raw message, reason, detail, item count)."""

    messages: list[tuple[bytes | None, bytes]] = field(default_factory=list)
    rejects: list[tuple[bytes, str, str, int]] = field(default_factory=list)
    accepted_items: int = 0

    @property
    def rejected_items(self) -> int:
        return sum(r[3] for r in self.rejects)


def _json_value(v):
    if isinstance(v, datetime):
        return v.isoformat().replace("+00:00", "Z")
    if isinstance(v, list) and v and isinstance(v[0], tuple) and len(v[0]) == 2:
        return {k: _json_value(x) for k, x in v}
    if isinstance(v, list):
        return [_json_value(x) for x in v]
    if isinstance(v, dict):
        return {k: _json_value(x) for k, x in v.items()}
    return v


class OtlpSplitter:
    """Turn export requests of one signal into the messages its source's codec reads."""

    def __init__(self, signal: str, codec: str, max_bytes: int):
        self.signal, self.codec, self.max_bytes = signal, codec, max_bytes
        self.judge = codec_for("otlp_proto", signal, max_bytes)
        self.map_fields: set[str] = set()
        if codec in ("json", "avro"):
            self.judge = codec_for("otlp_proto", signal, 1 << 30)
            self.map_fields = {f.name for f in self.judge.wire if pa.types.is_map(f.type)}

    def split(self, msg: OtlpRequest) -> Split:
        out = Split()
        subs: list[tuple[bytes, OtlpRequest]] = []
        for key, req in _groups(self.signal, msg).items():
            for part in _split(self.signal, req, self.max_bytes):
                subs.append((key, part))
        if not subs:
            return out
        payloads = [p.SerializeToString() for _, p in subs]
        raw = RawBatch(
            source="collect",
            topic="",
            partition=-1,
            values=payloads,
            offsets=list(range(len(payloads))),
            timestamps_ms=[0] * len(payloads),
        )
        batch = self.judge.decode(raw)
        bad: dict[int, tuple[str, str]] = {}
        for i, r, d in zip(batch.rejects.indices, batch.rejects.reasons, batch.rejects.details):
            bad.setdefault(i, (r, d))
        for i, (key, part) in enumerate(subs):
            if i in bad:
                out.rejects.append((payloads[i], bad[i][0], bad[i][1], _count(self.signal, part)))
        if self.codec in ("otlp_proto", "otlp_json"):
            for i, (key, part) in enumerate(subs):
                if i in bad:
                    continue
                n = _count(self.signal, part)
                if self.codec == "otlp_proto":
                    value = payloads[i]
                elif self.signal == "metric":
                    value = orjson.dumps(json_format.MessageToDict(part, use_integers_for_enums=True))
                else:
                    value = to_otlp_json(part)
                out.messages.append((key, value))
                out.accepted_items += n
            return out
        self._rows(batch, out)
        return out

    def _rows(self, batch, out: Split) -> None:
        """One message per decoded row (codec ``json`` or ``avro``)."""
        table = batch.table.drop(["_i"])
        key_col = {"span": "trace_id", "log": "trace_id", "metric": "name"}[self.signal]
        for row in table.to_pylist():
            key = row.get(key_col) or row.get("service") or None
            if self.codec == "json":
                value = orjson.dumps({k: _json_value(v) for k, v in row.items()})
            else:
                rec = {k: (dict(v) if k in self.map_fields and v is not None else v) for k, v in row.items()}
                value = encode_confluent(self.signal, rec)
            if len(value) > self.max_bytes:
                out.rejects.append(
                    (
                        value,
                        "size_violation",
                        f"record of {len(value)} bytes exceeds the limit of {self.max_bytes} bytes",
                        1,
                    )
                )
                continue
            out.messages.append((key.encode() if isinstance(key, str) else None, value))
            out.accepted_items += 1
