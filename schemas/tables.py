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
    BinaryType,
    BooleanType,
    DoubleType,
    IntegerType,
    ListType,
    LongType,
    MapType,
    NestedField,
    StringType,
    TimestamptzType,
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
    #: retention that depends on a column's value, ``(column, ((value, retention), ...))``;
    #: rows whose value is not listed keep ``retention`` (metrics: 1h rollups 400 days)
    retention_by: tuple[str, tuple[tuple[str, timedelta], ...]] | None = None
    #: when set, expired rows are first moved to ``<name>_archive`` (under the warehouse's
    #: ``archive/`` prefix) and kept there this long; None: expired rows are deleted outright.
    #: A spec's ``storage.tables.<name>.archive`` overrides it.
    archive_retention: timedelta | None = None

    def partition_spec(self) -> PartitionSpec:
        fields = []
        for i, (col, transform) in enumerate(self.partition):
            source = self.schema.find_field(col)
            tr: DayTransform | IdentityTransform = DayTransform() if transform == "day" else IdentityTransform()
            suffix = "_day" if transform == "day" else ""
            fields.append(
                PartitionField(source_id=source.field_id, field_id=1000 + i, transform=tr, name=f"{col}{suffix}")
            )
        return PartitionSpec(*fields)

    def sort_order(self) -> SortOrder:
        return SortOrder(
            *[SortField(source_id=self.schema.find_field(c).field_id, transform=IdentityTransform()) for c in self.sort]
        )

    def arrow_schema(self) -> pa.Schema:
        """Arrow schema the sink writes: pyiceberg's, with 32-bit-offset string and binary
        types (what the transforms produce, so no column is copied to be widened). Built
        once per definition (the hot path asks for it every batch; ``schema`` is frozen)."""
        cached = self.__dict__.get("_arrow_schema")
        if cached is None:
            cached = pa.schema([_small(f) for f in schema_to_pyarrow(self.schema, include_field_ids=False)])
            object.__setattr__(self, "_arrow_schema", cached)
        return cached


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
        if typ == "list<string>":
            typ = ListType(element_id=next_id + 1, element_type=StringType(), element_required=False)
            fields.append(NestedField(next_id, name, typ, required=required, doc=doc))
            next_id += 2
            continue
        if typ == "map<string,string>":
            typ = MapType(
                key_id=next_id + 1,
                key_type=StringType(),
                value_id=next_id + 2,
                value_type=StringType(),
                value_required=False,
            )
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
    archive_retention=timedelta(days=365),  # 30 days hot, then one year in logs_archive
)

DEAD_LETTERS = TableDef(
    name="dead_letters",
    doc="One row per rejected input record, with the reason and the raw bytes.",
    schema=_schema(
        ("received_at", TimestamptzType(), True),
        (
            "reason",
            StringType(),
            True,
            "format_violation, schema_violation, size_violation, timestamp_out_of_range, enrichment_failure, late_data",
        ),
        ("detail", StringType(), True),
        ("source", StringType(), True, "source name in the spec"),
        ("source_topic", StringType(), True),
        ("source_partition", IntegerType(), True),
        ("source_offset", LongType(), True),
        ("raw", BinaryType(), False, "payload, personal data scrubbed (see raw_text), cut to the configured bound"),
        ("raw_size", LongType(), True, "size of the whole payload in bytes"),
        ("raw_truncated", BooleanType(), True),
        (
            "raw_text",
            BooleanType(),
            False,
            "true: raw was UTF-8 text, scrubbed with placeholders; false: binary, "
            "personal data masked byte for byte with '*'; null: not scrubbed",
        ),
        (
            "item_index",
            IntegerType(),
            False,
            "index of the span, log record or data point in its OTLP message when that item "
            "was rejected alone (raw then holds the item); null for a whole record",
        ),
    ),
    partition=(("received_at", "day"), ("reason", "identity")),
    sort=("received_at",),
    time_column="received_at",
    retention=timedelta(days=30),
)

SPANS = TableDef(
    name="spans",
    doc="One row per kept span, with the sampling policy that kept its trace and the adjusted count for extrapolation.",
    schema=_schema(
        ("trace_id", StringType(), True),
        ("span_id", StringType(), True),
        ("parent_span_id", StringType(), False),
        ("service", StringType(), True),
        ("name", StringType(), True),
        ("kind", StringType(), True, "UNSPECIFIED INTERNAL SERVER CLIENT PRODUCER CONSUMER"),
        ("start", TimestamptzType(), True),
        ("end", TimestamptzType(), True),
        ("duration_ms", DoubleType(), True, "span duration (end - start)"),
        ("status_code", StringType(), True, "UNSET OK ERROR"),
        ("status_message", StringType(), False),
        ("attributes", "map<string,string>", False, "every value as text; attribute_types says which are not strings"),
        ("resource", "map<string,string>", False),
        (
            "attribute_types",
            "map<string,string>",
            False,
            "OTLP type of each attribute that is not a string: int, double, bool, bytes, array, kvlist (absent key: string)",
        ),
        ("resource_types", "map<string,string>", False, "the same for resource attributes"),
        ("sampling_policy", StringType(), True, "name of the policy that decided to keep the trace"),
        ("adjusted_count", DoubleType(), True, "how many spans this one stands for (1/sampling probability)"),
        ("ingested_at", TimestamptzType(), True),
        *SOURCE_COLUMNS,
    ),
    partition=(("start", "day"), ("service", "identity")),
    sort=("start",),
    time_column="start",
    retention=timedelta(days=14),
)

TRACES = TableDef(
    name="traces",
    doc="One row per kept trace: root service and name, start, trace duration (earliest span start to latest span end), counts.",
    schema=_schema(
        ("trace_id", StringType(), True),
        ("root_service", StringType(), False, "null when the root span never arrived"),
        ("root_name", StringType(), False),
        ("start", TimestamptzType(), True),
        ("end", TimestamptzType(), True),
        ("trace_duration_ms", DoubleType(), True, "earliest span start to latest span end, not a span's duration"),
        ("span_count", IntegerType(), True),
        ("error_count", IntegerType(), True),
        ("services", "list<string>", True),
        ("sampling_policy", StringType(), True),
        ("adjusted_count", DoubleType(), True),
        ("decided_at", TimestamptzType(), True),
    ),
    partition=(("start", "day"),),
    sort=("start",),
    time_column="start",
    retention=timedelta(days=14),
)

METRICS = TableDef(
    name="metrics",
    doc="One row per rollup point: a series (name + labels) over one window at one resolution.",
    schema=_schema(
        ("window_start", TimestamptzType(), True),
        ("window_end", TimestamptzType(), True),
        ("resolution", StringType(), True, "e.g. 1m, 1h"),
        ("name", StringType(), True),
        ("kind", StringType(), True, "counter gauge histogram summary"),
        ("labels", "map<string,string>", False),
        ("count", LongType(), False),
        ("sum", DoubleType(), False),
        ("min", DoubleType(), False),
        ("max", DoubleType(), False),
        ("last", DoubleType(), False),
        ("increase", DoubleType(), False, "counters: increase over the window, resets handled"),
        ("rate", DoubleType(), False, "counters: increase per second"),
        ("p50", DoubleType(), False),
        ("p75", DoubleType(), False, "added after p50/p90/p95/p99: null in rows written before it"),
        ("p90", DoubleType(), False),
        ("p95", DoubleType(), False),
        ("p99", DoubleType(), False),
        ("exemplar_trace_ids", "list<string>", False),
        ("late_samples", LongType(), False, "samples that arrived after the watermark but within the allowed lateness"),
    ),
    partition=(("window_start", "day"), ("resolution", "identity")),
    sort=("window_start",),
    time_column="window_start",
    retention=timedelta(days=30),  # 1m (and any other resolution not listed below)
    retention_by=("resolution", (("1h", timedelta(days=400)),)),
)

SESSIONS = TableDef(
    name="sessions",
    doc="One row per user session: pages, funnel steps reached, abandonment and durations.",
    schema=_schema(
        ("session_id", StringType(), True),
        ("user_pseudonym", StringType(), False),
        ("start", TimestamptzType(), True),
        ("end", TimestamptzType(), True),
        ("duration_ms", LongType(), True),
        ("events", IntegerType(), True),
        ("pages", "list<string>", True),
        ("funnel", StringType(), False),
        ("funnel_steps_reached", IntegerType(), False),
        ("funnel_last_step", StringType(), False),
        ("abandoned", BooleanType(), False, "started the funnel's form, not submitted within the session"),
        ("errors", IntegerType(), True),
        ("geo_country", StringType(), False),
        ("device", StringType(), False),
    ),
    partition=(("start", "day"),),
    sort=("start",),
    time_column="start",
    retention=timedelta(days=90),
)

ALERTS = TableDef(
    name="alerts",
    doc="One row per alert state change (pending / firing / resolved / inactive).",
    schema=_schema(
        ("ts", TimestamptzType(), True),
        ("fingerprint", StringType(), True),
        (
            "status",
            StringType(),
            True,
            "pending, firing, resolved, or inactive (a pending alert that cleared before its for)",
        ),
        ("rule", StringType(), True),
        ("severity", StringType(), True),
        ("labels", "map<string,string>", False),
        ("annotations", "map<string,string>", False),
        ("value", DoubleType(), False),
        ("starts_at", TimestamptzType(), True),
        ("ends_at", TimestamptzType(), False),
    ),
    partition=(("ts", "day"),),
    sort=("ts",),
    time_column="ts",
    retention=timedelta(days=400),
)

TABLES: dict[str, TableDef] = {
    t.name: t for t in (EVENTS, LOGS, SPANS, TRACES, METRICS, SESSIONS, ALERTS, DEAD_LETTERS)
}

REASONS = (
    "format_violation",
    "schema_violation",
    "size_violation",
    "timestamp_out_of_range",
    "enrichment_failure",
    "late_data",
)


def table_def(name: str) -> TableDef:
    """The definition of table ``name``; ``KeyError`` names the known tables."""
    try:
        return TABLES[name]
    except KeyError:
        raise KeyError(f"unknown table {name!r}; known tables: {', '.join(sorted(TABLES))}") from None
