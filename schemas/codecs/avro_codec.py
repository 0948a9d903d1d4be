"""Avro codec: records in the Confluent wire format — magic byte ``0x00``, a 4-byte
big-endian schema id, then the Avro binary body written with that (writer) schema.

The writer schema comes from a Confluent Schema Registry (``GET {url}/schemas/ids/{id}``,
cached) when ``schema_registry_url`` is set, otherwise from ``schemas/avro/registry.json``
(id → ``.avsc`` name). Each body is read with ``fastavro.schemaless_reader`` and resolved
against the signal's wire schema (the reader schema), so producers may add fields with
defaults or drop optional ones. Records are read one by one (fastavro has no batch
reader); the Arrow columns are then built once per batch, column by column.

Timestamps never pass through ``datetime``: the timestamp logical types are stripped from
the top-level fields of both schemas, the raw longs are read, scaled when the writer's
unit differs from the reader's (``timestamp-micros`` written, ``timestamp-millis`` read),
and handed to Arrow as integers of the wire unit."""

from __future__ import annotations

import io
import json
import struct
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from functools import cache
from typing import Any

import fastavro
import numpy as np
import pyarrow as pa
from fastavro.read import SchemaResolutionError
from fastavro.types import Schema

from core.errors import ObsflowError, ServiceUnavailable
from schemas.wire import AVRO_DIR, SIGNAL_SCHEMAS, avro_schema, raw_avro_schema, arrow_schema
from core.batch import DEFAULT_MAX_BYTES, INDEX, Batch, RawBatch, Rejects

MAGIC = 0
HEADER = struct.Struct(">bI")
REGISTRY_FILE = AVRO_DIR / "registry.json"
#: units per second of the timestamp logical types
TS_UNITS = {
    "timestamp-millis": 1_000,
    "timestamp-micros": 1_000_000,
    "timestamp-nanos": 1_000_000_000,
    "local-timestamp-millis": 1_000,
    "local-timestamp-micros": 1_000_000,
    "local-timestamp-nanos": 1_000_000_000,
}


class SchemaRegistryUnavailable(ServiceUnavailable, RuntimeError):
    """The Schema Registry could not be asked (connection, timeout, 5xx, auth). Not the
    record's fault, so it is raised rather than dead-lettered: the job retries the batch."""


class UnknownSchema(ObsflowError, LookupError):
    """A schema id the registry does not know, or whose schema is unusable."""


# -- the local registry and the producer-side helper -------------------------------------


@cache
def local_registry() -> dict[int, str]:
    """Schema id → ``.avsc`` name from ``schemas/avro/registry.json``."""
    doc = json.loads(REGISTRY_FILE.read_text())
    return {int(k): v for k, v in doc["ids"].items()}


def _schema_name(signal_or_schema_name: str) -> str:
    return SIGNAL_SCHEMAS.get(signal_or_schema_name, signal_or_schema_name)


def schema_id_for(signal_or_schema_name: str) -> int:
    """The local registry id of a signal's (or a named) wire schema."""
    name = _schema_name(signal_or_schema_name)
    for sid, n in local_registry().items():
        if n == name:
            return sid
    raise KeyError(f"schema {name!r} has no id in {REGISTRY_FILE}")


def encode_confluent(signal_or_schema_name: str | dict, record: dict, schema_id: int | None = None) -> bytes:
    """One record in the Confluent wire format.

    ``signal_or_schema_name`` is a signal (``"log"``), a wire schema name
    (``"log_record"``) or an Avro schema dict (then ``schema_id`` is required).
    Timestamps may be given as integers of the schema's unit or as aware datetimes.
    """
    if isinstance(signal_or_schema_name, dict):
        if schema_id is None:
            raise ValueError("schema_id is required with an explicit schema")
        schema = fastavro.parse_schema(signal_or_schema_name)
    else:
        schema = avro_schema(_schema_name(signal_or_schema_name))
        if schema_id is None:
            schema_id = schema_id_for(signal_or_schema_name)
    out = io.BytesIO()
    out.write(HEADER.pack(MAGIC, schema_id))
    fastavro.schemaless_writer(out, schema, record)
    return out.getvalue()


# -- schema sources ------------------------------------------------------------------------


class LocalSchemas:
    """Writer schemas by id from ``schemas/avro/registry.json``."""

    def __init__(self, path=REGISTRY_FILE):
        self.path = path
        self.ids = (
            local_registry()
            if path == REGISTRY_FILE
            else {int(k): v for k, v in json.loads(path.read_text())["ids"].items()}
        )

    def describe(self) -> str:
        return f"{self.path.parent.name}/{self.path.name}"

    def fetch(self, schema_id: int) -> tuple[str, dict]:
        """(label, writer schema document) for an id; :class:`UnknownSchema` if unknown."""
        name = self.ids.get(schema_id)
        if name is None:
            known = ", ".join(f"{k} ({v})" for k, v in sorted(self.ids.items()))
            raise UnknownSchema(f"unknown schema id {schema_id}: not in {self.describe()} (known ids: {known})")
        return name, raw_avro_schema(name)


class HttpSchemaRegistry:
    """Writer schemas by id from a Confluent Schema Registry (``GET /schemas/ids/{id}``).

    Found schemas are cached for good (ids are immutable); a 404 is remembered for
    ``negative_ttl_s`` so a burst of records with an unknown id asks once.
    """

    def __init__(self, url: str, timeout_s: float = 5.0, negative_ttl_s: float = 30.0):
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self.negative_ttl_s = negative_ttl_s
        self._found: dict[int, tuple[str, dict]] = {}
        self._missing: dict[int, tuple[float, str]] = {}
        self._lock = threading.Lock()

    def describe(self) -> str:
        return f"schema registry {self.url}"

    def fetch(self, schema_id: int) -> tuple[str, dict]:
        hit = self._found.get(schema_id)
        if hit is not None:
            return hit
        miss = self._missing.get(schema_id)
        if miss is not None and time.monotonic() - miss[0] < self.negative_ttl_s:
            raise UnknownSchema(miss[1])
        with self._lock:
            return self._fetch(schema_id)

    def _fetch(self, schema_id: int) -> tuple[str, dict]:
        url = f"{self.url}/schemas/ids/{schema_id}"
        req = urllib.request.Request(
            url, headers={"Accept": "application/vnd.schemaregistry.v1+json, application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                body = resp.read()
        except urllib.error.HTTPError as e:
            if e.code == 404:
                try:
                    msg = json.loads(e.read()).get("message", "not found")
                except Exception:
                    msg = "not found"
                detail = f"unknown schema id {schema_id}: {self.describe()} answered 404 ({msg})"
                self._missing[schema_id] = (time.monotonic(), detail)
                raise UnknownSchema(detail) from None
            raise SchemaRegistryUnavailable(f"GET {url}: HTTP {e.code} {e.reason}") from e
        except (urllib.error.URLError, OSError) as e:
            raise SchemaRegistryUnavailable(f"GET {url}: {e}") from e
        try:
            doc = json.loads(body)
            if doc.get("schemaType", "AVRO") != "AVRO":
                raise UnknownSchema(f"schema id {schema_id} is a {doc['schemaType']} schema, not Avro")
            schema = json.loads(doc["schema"])
        except UnknownSchema as e:
            self._missing[schema_id] = (time.monotonic(), str(e))
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise SchemaRegistryUnavailable(f"GET {url}: unexpected answer {body[:200]!r}: {e}") from e
        found = (_fullname(schema) or "unnamed schema", schema)
        self._found[schema_id] = found
        return found


# -- resolved readers ----------------------------------------------------------------------


def _strip_timestamps(doc: dict) -> tuple[dict, dict[str, int]]:
    """A copy of a record schema whose top-level timestamp fields are plain longs, and
    each such field's units per second."""
    if not isinstance(doc, dict) or doc.get("type") != "record":
        return doc, {}
    units: dict[str, int] = {}

    def strip(t, name):
        if isinstance(t, list):
            return [strip(x, name) for x in t]
        if isinstance(t, dict) and t.get("logicalType") in TS_UNITS and t.get("type") == "long":
            units[name] = TS_UNITS[t["logicalType"]]
            return "long"
        return t

    fields = [dict(f, type=strip(f["type"], f["name"])) for f in doc["fields"]]
    return dict(doc, fields=fields), units


def _fullname(doc) -> str | None:
    """Full name of a named Avro schema (``namespace.name``), None for other schemas."""
    if not isinstance(doc, dict) or "name" not in doc:
        return None
    name = doc["name"]
    return name if "." in name or not doc.get("namespace") else f"{doc['namespace']}.{name}"


@dataclass
class _Reader:
    """How to read bodies written with one writer schema id."""

    label: str
    writer: Schema  # parsed (fastavro.parse_schema)
    reader: Schema | None  # None: same schema as the writer
    scales: dict[str, tuple[int, int]]  # field -> (multiply, divide)


class AvroCodec:
    """Decode Confluent-framed Avro records of one signal into its wire columns.

    Consumes a :class:`RawBatch` whose values are ``0x00 | schema id (4 bytes, big
    endian) | Avro binary body``; emits a :class:`Batch` with the wire schema's columns
    (timestamps as ``timestamp[ms|us, UTC]``, maps as ``map<string,string>``) plus
    ``_i``. Rejects: empty payloads and tombstones, frames shorter than 5 bytes, a
    magic byte other than 0, truncated or malformed bodies and trailing bytes after the
    record (``format_violation``); an unknown schema id, a writer schema that does not
    resolve against the wire schema (``schema_violation``); payloads over ``max_bytes``
    (``size_violation``). An unreachable Schema Registry raises
    :class:`SchemaRegistryUnavailable` instead: that is not the record's fault.
    """

    def __init__(
        self,
        signal: str,
        max_bytes: int = DEFAULT_MAX_BYTES,
        schema_registry_url: str | None = None,
        registry_timeout_s: float = 5.0,
    ):
        self.signal = signal
        self.max_bytes = max_bytes
        self.wire = arrow_schema(signal)
        self.reader_name = SIGNAL_SCHEMAS[signal]
        self.schemas = (
            HttpSchemaRegistry(schema_registry_url, registry_timeout_s) if schema_registry_url else LocalSchemas()
        )
        reader_doc, self.reader_units = _strip_timestamps(raw_avro_schema(self.reader_name))
        self._reader_doc = reader_doc
        self._reader_parsed = fastavro.parse_schema(reader_doc)
        self._readers: dict[int, _Reader | str] = {}  # id -> reader, or the reason it is unusable
        self.names = [f.name for f in self.wire]

    # -- public -------------------------------------------------------------------------

    def decode(self, raw: RawBatch) -> Batch:
        rejects = Rejects()
        rows: list[dict] = []
        idx: list[int] = []
        limit = self.max_bytes
        readers = self._readers
        for i, v in enumerate(raw.values):
            if not v:
                rejects.add(i, "format_violation", "tombstone (null value)" if v is None else "empty payload")
                continue
            n = len(v)
            if n > limit:
                rejects.add(i, "size_violation", f"payload of {n} bytes exceeds the limit of {limit} bytes")
                continue
            if n < 5:
                rejects.add(
                    i,
                    "format_violation",
                    f"Confluent frame needs 5 header bytes (magic byte 0x00 + 4-byte schema id), got {n} bytes",
                )
                continue
            magic, sid = HEADER.unpack_from(v)
            if magic != MAGIC:
                rejects.add(
                    i, "format_violation", f"wrong magic byte 0x{v[0]:02x}: the Confluent wire format starts with 0x00"
                )
                continue
            rd = readers.get(sid)
            if rd is None:
                rd = self._resolve(sid)
            if isinstance(rd, str):
                rejects.add(i, "schema_violation", rd)
                continue
            bio = io.BytesIO(v)
            bio.seek(5)
            try:
                rec = fastavro.schemaless_reader(bio, rd.writer, rd.reader)
            except SchemaResolutionError as e:
                rejects.add(
                    i,
                    "schema_violation",
                    f"writer schema id {sid} ({rd.label}) does not resolve against the {self.reader_name} wire schema: {str(e)[:200]}",
                )
                continue
            except Exception as e:  # EOFError, IndexError, UnicodeDecodeError, OverflowError, ... on bad bytes
                if bio.tell() >= n or isinstance(e, EOFError):
                    rejects.add(
                        i,
                        "format_violation",
                        f"truncated Avro body: {n - 5} body bytes end inside the record (schema id {sid}, {rd.label})",
                    )
                else:
                    rejects.add(
                        i,
                        "format_violation",
                        f"malformed Avro body at byte {bio.tell()} of {n} (schema id {sid}, {rd.label}): {type(e).__name__}: {str(e)[:120]}",
                    )
                continue
            end = bio.tell()
            if end != n:
                rejects.add(
                    i,
                    "format_violation",
                    f"{n - end} trailing bytes after the Avro record (schema id {sid}, {rd.label}): the record ends at byte {end} of {n}",
                )
                continue
            if not isinstance(rec, dict):  # the writer schema resolved against the reader record, so a record
                rejects.add(
                    i,
                    "schema_violation",
                    f"writer schema id {sid} ({rd.label}) decoded to {type(rec).__name__}, not a record",
                )
                continue
            if rd.scales:
                for f, (mul, div) in rd.scales.items():
                    t = rec.get(f)
                    if t is not None:
                        rec[f] = t * mul // div
            rows.append(rec)
            idx.append(i)
        table = self._table(rows, idx, rejects)
        return Batch(raw=raw, table=table, rejects=rejects)

    # -- internals ----------------------------------------------------------------------

    def _resolve(self, sid: int) -> _Reader | str:
        """The reader for a writer schema id, or the schema_violation detail if unusable.
        :class:`SchemaRegistryUnavailable` propagates (and nothing is cached)."""
        try:
            label, doc = self.schemas.fetch(sid)
        except UnknownSchema as e:
            # a registry 404 is cached by the registry with a TTL; do not pin it here
            return str(e)
        rd: _Reader | str
        try:
            writer_doc, writer_units = _strip_timestamps(doc)
            wname, rname = _fullname(writer_doc), _fullname(self._reader_doc)
            aliases = {
                a if "." in a else f"{self._reader_doc.get('namespace', '')}.{a}".lstrip(".")
                for a in self._reader_doc.get("aliases", [])
            }
            if wname != rname and wname not in aliases:
                rd = f"writer schema id {sid} ({label}) is {wname or 'not a record'}, which does not resolve against the {self.reader_name} wire schema ({rname})"
                self._readers[sid] = rd
                return rd
            if writer_doc == self._reader_doc:
                rd = _Reader(label, self._reader_parsed, None, {})
            else:
                writer = fastavro.parse_schema(writer_doc)
                scales: dict[str, tuple[int, int]] = {}
                for f, ru in self.reader_units.items():
                    wu = writer_units.get(f, ru)
                    if wu != ru:
                        scales[f] = (ru, wu)
                rd = _Reader(label, writer, self._reader_parsed, scales)
        except Exception as e:
            rd = f"schema id {sid} ({label}) is not a usable Avro schema: {type(e).__name__}: {e}"
        self._readers[sid] = rd
        return rd

    def _table(self, rows: list[dict], idx: list[int], rejects: Rejects) -> pa.Table:
        """Arrow columns for the decoded rows; a row Arrow cannot hold is rejected alone."""
        try:
            return self._columns(rows, idx)
        except (pa.ArrowException, TypeError, ValueError, OverflowError):
            pass
        keep_rows, keep_idx = [], []
        for rec, i in zip(rows, idx):
            try:
                self._columns([rec], [i])
            except (pa.ArrowException, TypeError, ValueError, OverflowError) as e:
                field = next((f.name for f in self.wire if not self._fits(rec.get(f.name), f.type)), "?")
                rejects.add(i, "schema_violation", f"{field}: value does not fit the wire type: {str(e)[:160]}")
                continue
            keep_rows.append(rec)
            keep_idx.append(i)
        return self._columns(keep_rows, keep_idx)

    @staticmethod
    def _fits(value: Any, typ: pa.DataType) -> bool:
        try:
            pa.array([value], typ)
            return True
        except Exception:
            return False

    def _columns(self, rows: list[dict], idx: list[int]) -> pa.Table:
        arrays = [pa.array([r.get(name) for r in rows], type=f.type) for name, f in zip(self.names, self.wire)]
        arrays.append(pa.array(np.asarray(idx, dtype=np.int64), pa.int64()))
        return pa.Table.from_arrays(arrays, names=self.names + [INDEX])
