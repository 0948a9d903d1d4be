"""Iceberg table definitions: schema, partition spec, sort order and default retention,
declared once here and used by the sink, maintenance and the readers.

The table contract is the one in ``design.md``; every table lives in the namespace the
spec names (``obs`` by default)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

import pyarrow as pa
from pyiceberg.io.pyarrow import schema_to_pyarrow
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.table.sorting import SortField, SortOrder
from pyiceberg.transforms import DayTransform, IdentityTransform
from pyiceberg.types import (
    BinaryType, BooleanType, DoubleType, IntegerType, LongType, MapType, NestedField,
    StringType, TimestamptzType,
)


@dataclass(frozen=True)
class TableDef:
    """One Iceberg table of the contract.

    ``time_column`` is the event-time column retention and time-range queries use;
    ``partition`` lists (source column, transform name) pairs, transform ``day`` or ``identity``.
    """

    name: str
    doc: str
    schema: Schema
    partition: tuple[tuple[str, str], ...]
    sort: tuple[str, ...]
    time_column: str
    retention: timedelta
    properties: dict = field(default_factory=dict)

    def partition_spec(self) -> PartitionSpec:
        fields = []
        for i, (col, transform) in enumerate(self.partition):
            source = self.schema.find_field(col)
            tr = DayTransform() if transform == "day" else IdentityTransform()
            suffix = "_day" if transform == "day" else ""
            fields.append(PartitionField(source_id=source.field_id, field_id=1000 + i, transform=tr, name=f"{col}{suffix}"))
        return PartitionSpec(*fields)

    def sort_order(self) -> SortOrder:
        return SortOrder(*[SortField(source_id=self.schema.find_field(c).field_id, transform=IdentityTransform()) for c in self.sort])

    def arrow_schema(self) -> pa.Schema:
        """Arrow schema the sink writes: pyiceberg's, with 32-bit-offset string and binary
        types (what the transforms produce, so no column is copied to be widened)."""
        return pa.schema([_small(f) for f in schema_to_pyarrow(self.schema, include_field_ids=False)])


def _small_type(t: pa.DataType) -> pa.DataType:
    if pa.types.is_large_string(t):
        return pa.string()
    if pa.types.is_large_binary(t):
        return pa.binary()
    if pa.types.is_map(t):
        return pa.map_(_small(t.key_field), _small(t.item_field))
    if pa.types.is_large_list(t) or pa.types.is_list(t):
        return pa.list_(_small(t.value_field))
    if pa.types.is_struct(t):
        return pa.struct([_small(f) for f in t])
    return t


def _small(f: pa.Field) -> pa.Field:
    return pa.field(f.name, _small_type(f.type), nullable=f.nullable, metadata=f.metadata)


def _schema(*cols: tuple) -> Schema:
    """Build a schema from (name, type, required[, doc]) tuples, numbering field ids from 1."""
    fields = []
    next_id = 1
    for col in cols:
        name, typ, required = col[:3]
        doc = col[3] if len(col) > 3 else None
        if typ == "map<string,string>":
            typ = MapType(key_id=next_id + 1, key_type=StringType(), value_id=next_id + 2, value_type=StringType(), value_required=False)
            fields.append(NestedField(next_id, name, typ, required=required, doc=doc))
            next_id += 3
            continue
        fields.append(NestedField(next_id, name, typ, required=required, doc=doc))
        next_id += 1
    return Schema(*fields)


SOURCE_COLUMNS = (
    ("source_topic", StringType(), False, "Kafka topic (or embedded source) the record came from"),
    ("source_partition", IntegerType(), False),
    ("source_offset", LongType(), False),
)

EVENTS = TableDef(
    name="events",
    doc="One row per product event (one interaction of an app envelope), scrubbed and enriched.",
    schema=_schema(
        ("event_id", StringType(), True, "client envelope id"),
        ("event_index", IntegerType(), True, "position of the interaction in its envelope"),
        ("ts", TimestamptzType(), True, "client event time"),
        ("event_type", StringType(), True),
        ("page", StringType(), True),
        ("target", StringType(), False),
        ("scroll_depth", DoubleType(), False),
        ("form", StringType(), False),
        ("form_step", IntegerType(), False),
        ("duration_ms", LongType(), False),
        ("session_id", StringType(), True),
        ("user_pseudonym", StringType(), False, "keyed HMAC-SHA256 pseudonym of the app user id"),
        ("platform", StringType(), False),
        ("reported_location", StringType(), False),
        ("error_message", StringType(), False, "scrubbed"),
        ("error_stack", StringType(), False, "scrubbed stack trace"),
        ("client_ip_anon", StringType(), False, "IPv4 /24 or IPv6 /48 network address"),
        ("geo_country", StringType(), False, "ISO 3166 country code"),
        ("geo_city", StringType(), False),
        ("device", StringType(), False),
        ("browser", StringType(), False),
        ("browser_version", StringType(), False),
        ("os", StringType(), False),
        ("os_version", StringType(), False),
        ("ingested_at", TimestamptzType(), True, "time the record entered the source (Kafka record timestamp)"),
        *SOURCE_COLUMNS,
    ),
    partition=(("ts", "day"), ("event_type", "identity")),
    sort=("ts",),
    time_column="ts",
    retention=timedelta(days=90),
)

LOGS = TableDef(
    name="logs",
    doc="One row per kept log line, scrubbed and enriched with service metadata.",
    schema=_schema(
        ("ts", TimestamptzType(), True),
        ("level", StringType(), True, "upper case: TRACE DEBUG INFO WARN ERROR FATAL"),
        ("service", StringType(), True),
        ("message", StringType(), True, "scrubbed"),
        ("trace_id", StringType(), False),
        ("span_id", StringType(), False),
        ("request_id", StringType(), False),
        ("user_pseudonym", StringType(), False),
        ("host", StringType(), False),
        ("env", StringType(), False),
        ("attributes", "map<string,string>", False),
        ("service_team", StringType(), False, "from the spec's service metadata"),
        ("service_tier", StringType(), False),
        ("sample_rate", DoubleType(), True, "fraction of such lines kept; 1/sample_rate extrapolates"),
        ("ingested_at", TimestamptzType(), True),
        *SOURCE_COLUMNS,
    ),
    partition=(("ts", "day"), ("service", "identity")),
    sort=("ts",),
    time_column="ts",
    retention=timedelta(days=30),
)

DEAD_LETTERS = TableDef(
    name="dead_letters",
    doc="One row per rejected input record, with the reason and the raw bytes.",
    schema=_schema(
        ("received_at", TimestamptzType(), True),
        ("reason", StringType(), True, "format_violation, schema_violation, size_violation, timestamp_out_of_range, enrichment_failure"),
        ("detail", StringType(), True),
        ("source", StringType(), True, "source name in the spec"),
        ("source_topic", StringType(), True),
        ("source_partition", IntegerType(), True),
        ("source_offset", LongType(), True),
        ("raw", BinaryType(), False, "payload, cut to the configured bound"),
        ("raw_size", LongType(), True, "size of the whole payload in bytes"),
        ("raw_truncated", BooleanType(), True),
    ),
    partition=(("received_at", "day"), ("reason", "identity")),
    sort=("received_at",),
    time_column="received_at",
    retention=timedelta(days=30),
)

TABLES: dict[str, TableDef] = {t.name: t for t in (EVENTS, LOGS, DEAD_LETTERS)}

REASONS = ("format_violation", "schema_violation", "size_violation", "timestamp_out_of_range", "enrichment_failure")


def table_def(name: str) -> TableDef:
    """The definition of table ``name``; ``KeyError`` names the known tables."""
    try:
        return TABLES[name]
    except KeyError:
        raise KeyError(f"unknown table {name!r}; known tables: {', '.join(sorted(TABLES))}") from None
