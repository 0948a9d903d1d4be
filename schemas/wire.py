"""Wire schemas: the Avro ``.avsc`` files are the single source of truth for what
producers send. This module loads them and derives the Arrow schema the JSON codec
parses with, so JSON and Avro topics of one signal decode to the same columns."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import cast

import fastavro
import pyarrow as pa

AVRO_DIR = Path(__file__).parent / "avro"

#: wire schema file per signal
SIGNAL_SCHEMAS = {
    "event": "product_event",
    "log": "log_record",
    "span": "span",
    "metric": "metric_sample_v2",  # v1 ("metric_sample", id 4) lacks temporality and start_time
    "alert": "alert_event",
    "dead_letter": "dead_letter_v2",  # v1 ("dead_letter", id 6) lacks late_data, internal_error, raw_truncated, item_index
}

UTC_MS = pa.timestamp("ms", tz="UTC")
UTC_US = pa.timestamp("us", tz="UTC")


@cache
def avro_schema(name: str) -> dict:
    """The parsed Avro schema ``schemas/avro/<name>.avsc`` (fastavro's parsed form)."""
    path = AVRO_DIR / f"{name}.avsc"
    if not path.exists():
        raise FileNotFoundError(f"no wire schema {name!r}: expected {path}")
    return cast(dict, fastavro.parse_schema(json.loads(path.read_text())))  # a record schema parses to a dict


@cache
def raw_avro_schema(name: str) -> dict:
    """The ``.avsc`` document as written (not fastavro-parsed)."""
    return json.loads((AVRO_DIR / f"{name}.avsc").read_text())


def _arrow_type(avro_type) -> tuple[pa.DataType, bool]:
    """Arrow type and nullability for one Avro type; maps become ``map<string, V>``."""
    if isinstance(avro_type, list):
        non_null = [t for t in avro_type if t != "null"]
        if len(non_null) != 1:
            raise ValueError(f"only [null, T] unions are supported, got {avro_type}")
        inner, _ = _arrow_type(non_null[0])
        return inner, True
    if isinstance(avro_type, dict):
        t = avro_type["type"]
        logical = avro_type.get("logicalType")
        if logical == "timestamp-millis":
            return UTC_MS, False
        if logical == "timestamp-micros":
            return UTC_US, False
        if t == "record":
            return pa.struct([_arrow_field(f) for f in avro_type["fields"]]), False
        if t == "array":
            return pa.list_(_arrow_type(avro_type["items"])[0]), False
        if t == "map":
            return pa.map_(pa.string(), _arrow_type(avro_type["values"])[0]), False
        if t == "enum":
            return pa.string(), False
        return _arrow_type(t)
    return {
        "string": pa.string(),
        "int": pa.int32(),
        "long": pa.int64(),
        "float": pa.float32(),
        "double": pa.float64(),
        "boolean": pa.bool_(),
        "bytes": pa.binary(),
    }[avro_type], False


def _arrow_field(avro_field: dict) -> pa.Field:
    typ, nullable = _arrow_type(avro_field["type"])
    return pa.field(avro_field["name"], typ, nullable=nullable)


@cache
def arrow_schema(signal: str) -> pa.Schema:
    """Arrow schema of a signal's wire record (from its ``.avsc``)."""
    doc = raw_avro_schema(SIGNAL_SCHEMAS[signal])
    return pa.schema([_arrow_field(f) for f in doc["fields"]])


def json_read_schema(signal: str) -> tuple[pa.Schema, list[str]]:
    """Schema for ``pyarrow.json`` plus the names of map fields it cannot parse directly.

    ``pyarrow.json`` has no map type, so map-typed fields are left out of the explicit
    schema, inferred as structs and converted to maps by the JSON codec.
    """
    schema = arrow_schema(signal)
    keep = [f for f in schema if not pa.types.is_map(f.type)]
    maps = [f.name for f in schema if pa.types.is_map(f.type)]
    return pa.schema(keep), maps
