"""Typed model of a pipeline spec. Every key is documented here; unknown keys are errors.

A spec names its sources (topics and their codecs), its flows (a source, an ordered list
of steps, a sink table), the storage the tables live in, the privacy settings and the
service metadata used for enrichment."""

from __future__ import annotations

import os
import re
from datetime import timedelta
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from core.batch import DEFAULT_MAX_BYTES
from core.durations import MIN_WINDOW, Duration, duration_ms, format_duration, parse_duration  # noqa: F401 - re-exported
from core.errors import ConfigurationError
from core.gc_tuning import DEFAULT_YOUNG_THRESHOLD, MAX_YOUNG_THRESHOLD
from pipelines.collect_spec import CollectSpec
from transforms.alerting.config import AlertingConfig
from transforms.product.config import ProductConfig
from transforms.rollup.config import DeriveRule, RollupConfig
from transforms.tail_sampling.config import TailSamplingConfig
from transforms.tail_sampling.log_sampling import LogSamplingConfig


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


#: bounds of the counts every spec model uses (declared once, here)
MAX_SHARDS = 256
MAX_PARTITIONS = 1024
MAX_BYTES = 64 << 20
_NONNEG = timedelta(0)


# -- storage --------------------------------------------------------------------------


class CatalogSpec(Model):
    """Iceberg catalog. Embedded default: SQLite + local files under ``warehouse``."""

    kind: Literal["sql"] = Field("sql", description="pyiceberg's SQL catalog")
    name: str = Field("obsflow", description="catalog name")
    uri: str | None = Field(
        None,
        description="SQLAlchemy URL (``postgresql+psycopg2://…`` for a shared catalog); null: a SQLite "
        "file inside the warehouse directory; ``${VAR}`` references resolved from the environment",
    )
    warehouse: str = Field(".obsflow/warehouse", description="local path or ``s3://bucket/prefix``")
    properties: dict[str, str] = Field(
        default_factory=dict,
        description="extra pyiceberg catalog / FileIO properties (``s3.endpoint``, ``s3.access-key-id``, …)",
    )


class CommitSpec(Model):
    """When the Iceberg sink commits: whichever bound is hit first."""

    max_rows: int = Field(200_000, gt=0, le=100_000_000, description="commit a table when this many rows are buffered")
    max_seconds: Duration = Field(
        timedelta(seconds=5),
        ge=MIN_WINDOW,
        le=timedelta(days=1),
        description="longest time between commits: a table commits once its oldest buffered row is this old",
    )
    retry_seconds: Duration = Field(
        timedelta(minutes=2),
        ge=MIN_WINDOW,
        le=timedelta(days=7),
        description="keep retrying a commit through storage or catalog outages this long",
    )


class ArchiveOptions(Model):
    """Before expired rows are deleted, copy them to ``<table>_archive`` under a cheaper
    storage prefix, with its own (longer) retention."""

    retention: Duration = Field(timedelta(days=365), gt=_NONNEG, description="retention of the archive table")
    location: str | None = Field(
        None, description="where the archive table lives; null: ``<warehouse>/archive/<namespace>/<table>_archive``"
    )


class TableOptions(Model):
    retention: Duration | None = Field(
        None,
        gt=_NONNEG,
        description="rows older than this are deleted by ``obsflow maintain``; "
        "null: the table contract's retention (schemas/tables.py)",
    )
    archive: ArchiveOptions | Literal[False] | None = Field(
        None,
        description="copy expired rows to ``<table>_archive`` first; null: the table contract's (logs: one year in "
        "logs_archive); false: delete expired rows outright",
    )


class MaintenanceSpec(Model):
    """What ``obsflow maintain`` does besides retention."""

    snapshot_max_age: Duration = Field(
        timedelta(days=1), description="expire snapshots older than this (the current one is kept)"
    )
    orphan_min_age: Duration = Field(
        timedelta(hours=1), description="only files older than this can be orphans (protects in-flight writes)"
    )
    target_file_mb: int = Field(128, gt=0, le=1 << 20, description="compaction target file size")
    min_files_to_compact: int = Field(
        4, ge=2, le=1_000_000, description="a partition with at least this many small files is compacted"
    )
    small_file_mb: int = Field(32, gt=0, le=1 << 20, description="files below this size count as small")


class StorageSpec(Model):
    catalog: CatalogSpec = Field(CatalogSpec(), description="the Iceberg catalog and warehouse")
    namespace: str = Field("obs", description="namespace of every table")
    commit: CommitSpec = Field(CommitSpec(), description="when the Iceberg sink commits")
    tables: dict[str, TableOptions] = Field(
        default_factory=dict, description="per table (by name): retention and archiving"
    )
    maintenance: MaintenanceSpec = Field(
        MaintenanceSpec(), description="what `obsflow maintain` does besides retention"
    )


# -- privacy and services ---------------------------------------------------------------


class PrivacySpec(Model):
    """Pseudonymization and IP anonymization. The HMAC key comes from ``pseudonym_key``
    or, by default, from the environment variable named by ``pseudonym_key_env``."""

    pseudonym_key_env: str = Field(
        "OBSFLOW_PSEUDONYM_KEY",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,254}$",
        description="environment variable holding the HMAC key",
    )
    pseudonym_key: SecretStr | None = Field(
        None, min_length=16, max_length=4096, description="the HMAC key itself (prefer the environment)"
    )
    ipv4_prefix: int = Field(
        24, ge=0, le=32, description="IPv4 addresses keep this many leading bits (the rest zeroed)"
    )
    ipv6_prefix: int = Field(
        48, ge=0, le=128, description="IPv6 addresses keep this many leading bits (the rest zeroed)"
    )


class ServiceMeta(Model):
    team: str | None = Field(None, description="owning team, added to the service's rows by enrich")
    tier: str | None = Field(None, description="service tier, added to the service's rows by enrich")
    owner: str | None = Field(None, description="owner, added to the service's rows by enrich")
    runbook: str | None = Field(None, description="runbook URL, added to the service's rows by enrich")


# -- sources ---------------------------------------------------------------------------

Signal = Literal["event", "log", "span", "metric"]

#: environment variable that, when set, overrides ``kafka.bootstrap_servers``
KAFKA_BOOTSTRAP_ENV = "OBSFLOW_KAFKA_BOOTSTRAP"


class KafkaSpec(Model):
    """How the job reaches Kafka (``obsflow run --source kafka``).

    Source positions come from the Iceberg tables' snapshot summaries, never from the
    consumer group: ``group_id`` is used only to commit the positions the job has read,
    so that ordinary tools (``kafka-consumer-groups.sh``) show the job's lag."""

    bootstrap_servers: str = Field(
        "127.0.0.1:9092", description=f"host:port[,host:port]; ${KAFKA_BOOTSTRAP_ENV} overrides it"
    )
    group_id: str = Field("obsflow", description="consumer group, for lag reporting only")
    config: dict[str, str] = Field(default_factory=dict, description="extra librdkafka consumer properties")
    schema_registry_url: str | None = Field(
        None, description="Confluent Schema Registry for the avro codec; default: schemas/ by id"
    )
    poll_batch_size: int = Field(5000, gt=0, le=1_000_000, description="records per raw batch at most")
    poll_timeout: Duration = Field(
        timedelta(milliseconds=500),
        ge=MIN_WINDOW,
        le=timedelta(hours=1),
        description="longest wait for a batch to fill",
    )
    commit_group_offsets: bool = Field(True, description="commit read positions to group_id (lag reporting)")
    connect_retries: int = Field(
        5, ge=0, le=1000, description="metadata attempts after the first when the broker does not answer at start"
    )
    connect_backoff: Duration = Field(
        timedelta(seconds=1),
        le=timedelta(hours=1),
        description="first wait between attempts; doubles up to connect_backoff_max",
    )
    connect_backoff_max: Duration = Field(
        timedelta(seconds=10), le=timedelta(hours=1), description="longest wait between attempts"
    )
    connect_timeout: Duration = Field(
        timedelta(seconds=5), ge=MIN_WINDOW, le=timedelta(hours=1), description="one metadata attempt's timeout"
    )

    @property
    def bootstrap(self) -> str:
        """The bootstrap servers in effect: ``$OBSFLOW_KAFKA_BOOTSTRAP`` or ``bootstrap_servers``."""
        return os.environ.get(KAFKA_BOOTSTRAP_ENV) or self.bootstrap_servers


class SourceSpec(Model):
    """One input. With Kafka, exactly one of ``topic`` and ``topic_pattern`` (a regular
    expression matched against whole topic names) names what is read; the embedded
    source generates ``topic`` (or, for a pattern source, a topic named like the source)."""

    name: str = Field(description="the source's name (flows name it in `source`)")
    topic: str | None = Field(None, description="the Kafka topic read (exactly one of topic and topic_pattern)")
    topic_pattern: str | None = Field(None, description="a regular expression matched against whole topic names")
    signal: Signal = Field(description="what the records are: event, log, span or metric")
    codec: Literal["json", "avro", "otlp_proto", "otlp_json"] = Field(
        "json", description="how the record bytes are decoded"
    )
    starting_position: Literal["earliest", "latest"] = Field(
        "earliest", description="where a partition starts when no table records a position for it yet"
    )
    partitions: int = Field(
        4, gt=0, le=MAX_PARTITIONS, description="partitions of the embedded source (Kafka uses the topic's)"
    )

    @property
    def topic_name(self) -> str:
        """The fixed topic, or for a pattern source the name the embedded source uses."""
        return self.topic if self.topic is not None else self.name


# -- steps -----------------------------------------------------------------------------


class ValidateStep(Model):
    """Reject records that break the wire contract."""

    kind: Literal["validate"] = Field(description="step kind")
    max_bytes: int = Field(
        DEFAULT_MAX_BYTES, gt=0, le=MAX_BYTES, description="larger records are dead-lettered (size_violation)"
    )
    max_future: Duration = Field(timedelta(minutes=5), description="timestamps later than ingest + this are rejected")
    max_past: Duration = Field(timedelta(days=7), description="timestamps earlier than ingest - this are rejected")
    max_clock_skew: Duration = Field(
        timedelta(days=1),
        description=(
            "product events from obsflow collect: a device clock off by at most this (receive time - sent_at) is "
            "corrected (event time + skew); a larger skew is not applied; 0s: never corrected"
        ),
    )
    event_types: list[str] = Field(
        default_factory=lambda: [
            "page_view",
            "click",
            "scroll",
            "form_start",
            "form_step",
            "form_submit",
            "signup_complete",
            "error",
        ],
        min_length=1,
        description="accepted event types",
    )
    levels: list[str] = Field(
        default_factory=lambda: ["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"],
        min_length=1,
        description="accepted log levels",
    )


#: attribute keys whose values are redacted whole (``ScrubStep.sensitive_keys``): a word of the
#: key, so ``http.request.header.authorization`` and ``x-auth-token`` match, ``input_tokens`` does not
DEFAULT_SENSITIVE_KEYS = (
    r"authorization",
    r"cookie",
    r"password",
    r"passwd",
    r"secret",
    r"credential",
    r"(?:^|[^a-z])token(?:$|[^a-z])",
    r"api[-_. ]?key",
    r"private[-_. ]?key",
    r"session[-_.]?key",
)


class ScrubStep(Model):
    """Remove personal data from free text and identifiers."""

    kind: Literal["scrub"] = Field(description="step kind")
    emails: bool = Field(True, description="replace e-mail addresses in free text")
    card_numbers: bool = Field(True, description="replace payment card numbers (Luhn-checked) in free text")
    bearer_tokens: bool = Field(True, description="replace bearer tokens and JWTs in free text")
    api_keys: bool = Field(True, description="replace API-key assignments (api_key=…, secret_key=…) in free text")
    anonymize_ip: bool = Field(True, description="zero the low bits of client IPs (privacy.ipv4_prefix / ipv6_prefix)")
    pseudonymize_users: bool = Field(True, description="replace user ids by an HMAC pseudonym (privacy's key)")
    sensitive_keys: list[str] = Field(
        default_factory=lambda: list(DEFAULT_SENSITIVE_KEYS),
        description=(
            "regexes (RE2, case-insensitive, searched in the key): the value of a matching attribute / label / "
            "JSON key is replaced whole by [REDACTED]"
        ),
    )


class EnrichStep(Model):
    """Add geo, device and service metadata."""

    kind: Literal["enrich"] = Field(description="step kind")
    geo: bool = Field(True, description="add country / region / city from the client IP")
    user_agent: bool = Field(True, description="add browser, OS and device from the user agent")
    service_metadata: bool = Field(True, description="add the spec's services: metadata (team, tier, owner, runbook)")
    cache_size: int = Field(
        100_000, gt=0, le=100_000_000, description="entries in each lookup cache (IPs, user agents)"
    )
    require_valid_ip: bool = Field(True, description="a client_ip that is not an IP address is an enrichment_failure")


class RedSpec(Model):
    """RED metrics (rate, errors, duration) from every span, before sampling."""

    window: Duration = Field(timedelta(minutes=1), ge=MIN_WINDOW, description="tumbling window of the RED rows")
    relative_accuracy: float = Field(0.01, gt=0, lt=1, description="DDSketch relative accuracy of the quantiles")
    allowed_lateness: Duration = Field(timedelta(minutes=5), description="a window closes this long after its end")
    max_exemplars: int = Field(3, ge=0, le=1000, description="trace ids kept per window and series")


class HeadSamplingSpec(Model):
    """Head-based sampling at ingest for the spans of ``sources``: they are sent past the
    tail sampler. A trace is kept when the FNV-1a 64 hash of ``hash_salt`` + its trace id
    is within ``sampling_percentage`` (``transforms.tail_sampling.head.HeadSampler``: the
    hash and threshold of the tail sampler's ``probabilistic`` policy, so every worker and
    engine decides alike, and at the same percentage and salt the same traces are kept).
    Kept spans go to obs.spans at once with ``sampling_policy`` = ``policy_name`` and
    ``adjusted_count`` = 100 / sampling_percentage; RED metrics still count every span, and
    log lines of these traces follow the head decision. No obs.traces row is written for a
    head-sampled trace (its spans are not buffered)."""

    sources: list[str] = Field(
        min_length=1, description="span sources whose spans are head-sampled instead of tail-sampled"
    )
    sampling_percentage: float = Field(10.0, ge=0, le=100, description="percent of traces kept")
    hash_salt: str | None = Field(
        None,
        description="null: the salt of the sampler's first probabilistic policy, else the collector's default seed",
    )
    policy_name: str = Field("head_probabilistic", min_length=1, description="the sampling_policy of kept spans")

    def salt(self, sampler: TailSamplingConfig) -> str:
        """The hash salt in effect: ``hash_salt``, else the tail sampler's first probabilistic policy's."""
        if self.hash_salt is not None:
            return self.hash_salt
        for p in sampler.policies:
            if p.type == "probabilistic":
                return p.probabilistic.hash_salt
        return ""


class TailSampleStep(Model):
    """Tail-based trace sampling (OpenTelemetry Collector tail_sampling names) plus RED
    metrics, in a stateful stage keyed by trace id. Emits obs.spans, obs.traces and the
    RED rows of obs.metrics; log lines with a trace id follow their trace's decision."""

    kind: Literal["tail_sample"] = Field(description="step kind")
    shards: int = Field(4, gt=0, le=MAX_SHARDS, description="state shards (trace id hash); the unit of parallelism")
    sampler: TailSamplingConfig = Field(
        description="the tail sampler (transforms/tail_sampling/README.md); required: its policies have no default"
    )
    red: RedSpec | None = Field(RedSpec(), description="RED metrics from every span, before sampling; null: none")
    log_wait: Duration = Field(
        timedelta(seconds=60),
        description="how long a log line waits for its trace's decision before it is sampled on its own",
    )
    head_sampling: HeadSamplingSpec | None = Field(
        None, description="span sources decided at ingest by head sampling, past the tail sampler"
    )


class LogSampleStep(Model):
    """Log sampling: every WARN/ERROR/FATAL line is kept; others by sampling_percentage,
    following the trace decision when a tail_sample step exists (else the same hash as
    head sampling)."""

    kind: Literal["log_sample"] = Field(description="step kind")
    config: LogSamplingConfig = Field(
        default_factory=LogSamplingConfig, description="the log sampler (transforms/tail_sampling/log_sampling.py)"
    )


class RollupStep(Model):
    """Event-time metric rollups (``transforms.rollup``) in a stateful stage keyed by a hash
    of the metric name (so each metric's cardinality limit and overflow series stay exact
    and a counter's samples meet in one shard). On a ``signal: metric`` flow. Emits
    ``obs.metrics`` rows; samples later than ``allowed_lateness`` go to the dead letters
    with reason ``late_data``. ``derive`` rules add metrics computed from the rows of the
    spec's log and event flows (``source: logs|events``), fed to the same stage."""

    kind: Literal["rollup"] = Field(description="step kind")
    shards: int = Field(4, gt=0, le=MAX_SHARDS, description="state shards (metric name hash)")
    config: RollupConfig = Field(default_factory=RollupConfig, description="the rollup (transforms/rollup/README.md)")
    derive: list[DeriveRule] = Field(default_factory=list, description="metrics derived from log / event rows")


class ProductStep(Model):
    """Sessions, funnels and client-error grouping (``transforms.product``) in a stateful
    stage keyed by a hash of the session id. On a ``signal: event`` flow, after enrich.
    Emits ``obs.sessions`` rows and funnel report / error group rows into ``obs.metrics``;
    the flow's own table (``events``) is still written."""

    kind: Literal["product"] = Field(description="step kind")
    shards: int = Field(4, gt=0, le=MAX_SHARDS, description="state shards (session id hash)")
    config: ProductConfig = Field(
        default_factory=ProductConfig, description="sessions and funnels (transforms/product/README.md)"
    )
    error_groups: bool = Field(
        True,
        description="emit product.errors rows per stack fingerprint and report window: count, "
        "first seen (min) and last seen (max), event time in epoch ms",
    )


#: the dedupe step's defaults (``DedupeStep``; the one place they are set)
DEDUPE_WINDOW = timedelta(minutes=10)
DEDUPE_MAX_IDS = 3_000_000


class DedupeStep(Model):
    """Drop a product event envelope whose ``event_id`` an earlier record of the same topic
    partition already carried (a retried request that Kafka had committed: the door
    derives a missing ``event_id`` from the key and the envelope, so a resent envelope
    carries the same id). On a ``signal: event`` flow; a flow of that signal without this
    step dedupes with the defaults (``enabled: false`` turns it off). The duplicate is a
    dropped record (reason ``duplicate``), counted, never written. Within the bound
    (``window`` of Kafka record time after the first copy, at most ``max_ids`` ids held
    per partition) a copy is always recognised, across restarts too (the ids are seeded
    from the table's rows of the partition); beyond it, it may be written again.
    ``docs/collect.md`` ("Retries leave no duplicates") says what is guaranteed."""

    kind: Literal["dedupe"] = Field(description="step kind")
    enabled: bool = Field(True, description="false: keep every copy (no dedupe)")
    window: Duration = Field(
        DEDUPE_WINDOW,
        ge=timedelta(seconds=1),
        le=timedelta(days=7),
        description=(
            "a copy is recognised when its Kafka record time is at most this after the first copy's "
            "(and not older than the partition's newest record time minus this)"
        ),
    )
    max_ids: int = Field(
        DEDUPE_MAX_IDS,
        gt=0,
        le=100_000_000,
        description=(
            "event ids held per source partition at most (a 128-bit digest: about 26 bytes each); the oldest go first"
        ),
    )


Step = Annotated[
    ValidateStep | ScrubStep | EnrichStep | TailSampleStep | LogSampleStep | RollupStep | ProductStep | DedupeStep,
    Field(discriminator="kind"),
]


class AlertsSpec(AlertingConfig):
    """Alert rules over the rollup output with Alertmanager's routing, grouping, timers and
    inhibition (``transforms.alerting``), evaluated by a single-shard stage fed by the
    ``rollup`` stage. Alert events go to ``obs.alerts``, to the Kafka alerts topic and, with
    ``alertmanager_url``, to a real Alertmanager (v2 API)."""

    alertmanager_url: str | None = Field(None, description="POST alert events to this Alertmanager (http://host:9093)")
    alertmanager_timeout: Duration = Field(
        timedelta(seconds=5), ge=MIN_WINDOW, le=timedelta(hours=1), description="timeout of one Alertmanager request"
    )

    def engine_config(self) -> AlertingConfig:
        return AlertingConfig(
            rules=self.rules,
            route=self.route,
            receivers=self.receivers,
            inhibit_rules=self.inhibit_rules,
            external_url=self.external_url,
            resend_delay=self.resend_delay,
        )


class SinkSpec(Model):
    table: str = Field(description="the table a flow writes")


class FlowSpec(Model):
    name: str = Field(description="the flow's name")
    source: str = Field(description="the source it reads (a sources[].name)")
    steps: list[Step] = Field(
        default_factory=list,
        description=(
            "steps in order (validate, scrub, enrich, tail_sample, log_sample, rollup, product; dedupe on an event "
            "flow: where it sits in the list does not matter, it runs after enrich)"
        ),
    )
    sink: SinkSpec = Field(description="where the flow's rows go")


class DeadLetterSpec(Model):
    table: str = Field("dead_letters", description="the dead-letter table")
    max_raw_bytes: int = Field(16384, ge=0, le=MAX_BYTES, description="raw payload bytes kept per dead letter")


class OutputsSpec(Model):
    """What the job pushes to Kafka besides the tables (``sinks/kafka.py``), through an
    idempotent producer (``enable.idempotence``, ``acks=all``) on the ``kafka:`` section's
    brokers. Alerts are keyed by fingerprint and dead letters by ``source topic:partition``,
    so each key's messages stay in order. A topic set to ``null`` is not written."""

    alerts_topic: str | None = Field(
        "alerts", description="alert state changes (schemas/avro/alert_event.avsc); null: none"
    )
    dead_letters_topic: str | None = Field(
        None, description="rejected records (schemas/avro/dead_letter.avsc), besides the table; null: none"
    )
    codec: Literal["json", "avro"] = Field(
        "json", description="json: the .avsc fields as JSON (raw bytes base64); avro: Confluent wire format"
    )
    producer: dict[str, str] = Field(default_factory=dict, description="extra librdkafka producer properties")
    delivery_timeout: Duration = Field(
        timedelta(seconds=60),
        ge=MIN_WINDOW,
        le=timedelta(days=1),
        description="librdkafka retries a message this long (message.timeout.ms), then it is a delivery failure",
    )
    flush_timeout: Duration = Field(
        timedelta(seconds=60),
        ge=MIN_WINDOW,
        le=timedelta(days=1),
        description="longest wait for outstanding messages at a commit or on close",
    )


class StagesSpec(Model):
    """Settings shared by every stateful stage (trace, metrics, product; the global stage
    follows the metrics and product stages' watermarks).

    Idle advance: a stage's clock is event time (Kafka ingest time for the trace stage,
    the data's event time for rollups and sessions), so it stops when input stops. When a
    stage shard has had no input for ``idle_advance_after`` of wall time, its clock moves
    on by the wall time elapsed since its last input (event time ≈ wall time while
    producers are idle; never backwards: it keeps the maximum, and real input resumes at
    max(clock, partition watermark)). The stage then does what a normal advance does: the
    tail sampler decides what ``decision_wait`` allows, rollup windows and sessions close,
    alert rules evaluate (absence included). Only unbounded Kafka runs advance on idle
    (Bytewax: the Kafka partitions' idle ticks; Beam: a processing-time timer); bounded
    runs decide everything at the end of input, as before."""

    idle_advance_after: Duration | None = Field(
        timedelta(seconds=5),
        le=timedelta(days=1),
        description="wall time without input after which a stage's clock follows the wall clock; 0s or null: never",
    )

    @property
    def idle_advance_ms(self) -> int:
        """``idle_advance_after`` in ms; 0 when disabled."""
        d = self.idle_advance_after
        return max(0, int(d.total_seconds() * 1000)) if d is not None else 0


class ProcessSpec(Model):
    """Settings of each process that runs the pipeline (``obsflow run``: the one Bytewax
    process or each process of a cluster, Beam's DirectRunner, each Python SDK worker on
    Flink), applied once per process when its graph is built (:mod:`core.gc_tuning`). The
    collector has its own: ``collect.gc_young_threshold``."""

    gc_young_threshold: int = Field(
        DEFAULT_YOUNG_THRESHOLD,
        ge=0,
        le=MAX_YOUNG_THRESHOLD,
        description=(
            "the process's garbage collector: once the graph is built (imports, lookup tables, consumers) every live "
            "object is frozen (never walked again) and a young collection runs after this many new container objects "
            "(Python's default: 700, which walks each batch's records over and over: 7-8% more CPU a record in a "
            "Kafka → Iceberg run); 0: Python's defaults"
        ),
    )


class PipelineSpec(Model):
    version: Literal[1] = Field(1, description="spec format version")
    name: str = Field(description="the pipeline's name")
    storage: StorageSpec = Field(
        StorageSpec(), description="Iceberg catalog, warehouse, commits, retention, maintenance"
    )
    privacy: PrivacySpec = Field(PrivacySpec(), description="pseudonymization key and IP anonymization")
    services: dict[str, ServiceMeta] = Field(
        default_factory=dict, description="metadata per service name, added by enrich"
    )
    sources: list[SourceSpec] = Field(description="the inputs")
    flows: list[FlowSpec] = Field(description="one per source: its steps and table")
    dead_letters: DeadLetterSpec = Field(DeadLetterSpec(), description="the dead-letter table")
    kafka: KafkaSpec = Field(KafkaSpec(), description="brokers and consumer settings")
    outputs: OutputsSpec = Field(OutputsSpec(), description="what the job pushes to Kafka besides the tables")
    alerts: AlertsSpec | None = Field(None, description="alert rules and routing; null: none")
    stages: StagesSpec = Field(StagesSpec(), description="the stateful stages' clocks")
    collect: CollectSpec = Field(CollectSpec(), description="`obsflow collect`, the HTTP front door")
    process: ProcessSpec = Field(ProcessSpec(), description="settings of each process of `obsflow run`")

    @model_validator(mode="after")
    def _references(self) -> PipelineSpec:
        from schemas.tables import TABLES

        names = [s.name for s in self.sources]
        read = [f.source for f in self.flows]
        for i, src in enumerate(self.sources):
            _check_codec(f"sources[{i}]", src)
            if (src.topic is None) == (src.topic_pattern is None):
                raise SpecReferenceError(
                    f"sources[{i}]",
                    "exactly one of 'topic' and 'topic_pattern'",
                    "both" if src.topic is not None else "neither",
                )
            if src.topic_pattern is not None:
                try:
                    re.compile(src.topic_pattern)
                except re.error as e:
                    raise SpecReferenceError(
                        f"sources[{i}].topic_pattern", f"a regular expression ({e})", src.topic_pattern
                    ) from None
            if names.count(src.name) > 1:
                raise SpecReferenceError(f"sources[{i}].name", "a name no other source uses", src.name)
        for i, flow in enumerate(self.flows):
            if flow.source not in names:
                raise SpecReferenceError(f"flows[{i}].source", f"one of the source names {names}", flow.source)
            if read.index(flow.source) != i:
                raise SpecReferenceError(f"flows[{i}].source", "a source no other flow reads", flow.source)
            if flow.sink.table not in TABLES:
                raise SpecReferenceError(
                    f"flows[{i}].sink.table", f"one of the tables {sorted(TABLES)}", flow.sink.table
                )
        for i, src in enumerate(self.sources):
            if src.name not in read:
                raise SpecReferenceError(
                    f"sources[{i}].name", "a source that some flow reads (flows[*].source)", src.name
                )
        self._check_stages()
        if self.dead_letters.table not in TABLES:
            raise SpecReferenceError(
                "dead_letters.table", f"one of the tables {sorted(TABLES)}", self.dead_letters.table
            )
        for t in self.storage.tables:
            if t not in TABLES:
                raise SpecReferenceError(f"storage.tables.{t}", f"one of the tables {sorted(TABLES)}", t)
        return self

    def _check_stages(self) -> None:
        rollups = []
        once: dict[str, tuple[str, object]] = {}  # kind -> (key path, step) of the spec's first step of that kind
        for i, flow in enumerate(self.flows):
            sig = self.source(flow.source).signal
            kinds = [st.kind for st in flow.steps]
            for j, st in enumerate(flow.steps):
                if kinds.index(st.kind) != j:
                    raise SpecReferenceError(f"flows[{i}].steps[{j}]", "each step kind at most once in a flow", st.kind)
                if st.kind in _ONE_PER_SPEC:
                    stage, want = _ONE_PER_SPEC[st.kind]
                    if sig != want:
                        raise SpecReferenceError(
                            f"flows[{i}].steps[{j}]", f"a {st.kind} step on a flow whose source has signal: {want}", sig
                        )
                    if st.kind in once and st != once[st.kind][1]:
                        # several flows may feed the one stage (e.g. JSON and Avro event topics), with the same step;
                        # a step that differs would be ignored: the stage is built from the first
                        raise SpecReferenceError(
                            f"flows[{i}].steps[{j}]",
                            f"the same {st.kind} step as {once[st.kind][0]} ({stage}, built from the first)",
                            "a different one",
                        )
                    once.setdefault(st.kind, (f"flows[{i}].steps[{j}]", st))
                if isinstance(st, DedupeStep) and sig != "event":
                    raise SpecReferenceError(
                        f"flows[{i}].steps[{j}]", "a dedupe step on a flow whose source has signal: event", sig
                    )
                if isinstance(st, RollupStep):
                    if sig != "metric":
                        raise SpecReferenceError(
                            f"flows[{i}].steps[{j}]", "a rollup step on a flow whose source has signal: metric", sig
                        )
                    rollups.append(st)
                    for k, rule in enumerate(st.derive):
                        _check_derive(f"flows[{i}].steps[{j}].derive[{k}]", rule, self._row_columns(rule.source))
            for j, st in enumerate(flow.steps):
                if isinstance(st, TailSampleStep) and st.head_sampling is not None:
                    spans = [s.name for s in self.sources if s.signal == "span"]
                    for k, name in enumerate(st.head_sampling.sources):
                        if name not in spans:
                            raise SpecReferenceError(
                                f"flows[{i}].steps[{j}].head_sampling.sources[{k}]",
                                f"one of the span sources {spans}",
                                name,
                            )
            if sig == "metric" and not any(isinstance(st, RollupStep) for st in flow.steps):
                raise SpecReferenceError(
                    f"flows[{i}].steps", "a rollup step (metric samples are only written as rollups)", "none"
                )
        if len(rollups) > 1:
            raise SpecReferenceError("flows", "at most one rollup step (one metrics stage)", len(rollups))

        if self.alerts is not None and self.alerts.rules:
            if not rollups:
                raise SpecReferenceError(
                    "alerts", "a rollup step in some flow (alert rules are evaluated over its output)", "none"
                )
            res = set(rollups[0].config.resolutions_ms)
            for i, r in enumerate(self.alerts.rules):
                if duration_ms(r.resolution) not in res:
                    raise SpecReferenceError(
                        f"alerts.rules[{i}].resolution",
                        f"one of the rollup resolutions {[format_duration(x) for x in rollups[0].config.resolutions]}",
                        format_duration(r.resolution),
                    )

    def _row_columns(self, table: str) -> set[str] | None:
        """Columns every flow feeding derive rules of ``table`` (logs / events) has in its
        rows: the table's columns, without those a scrub or enrich option adds when that
        option is off (or its step absent) in some such flow. None when no flow feeds it."""
        signal = {"logs": "log", "events": "event"}[table]
        out = None
        for flow in self.flows:
            if self.source(flow.source).signal != signal:
                continue
            added = set()
            for st in flow.steps:
                for (kind, option), cols in _ADDED_BY.items():
                    if st.kind == kind and getattr(st, option) and (option != "service_metadata" or self.services):
                        added |= cols
            missing = set().union(*_ADDED_BY.values()) - added
            out = (out if out is not None else _table_columns(table)) - missing
        return out

    def source(self, name: str) -> SourceSpec:
        return next(s for s in self.sources if s.name == name)


def _check_codec(path: str, src: SourceSpec) -> None:
    """The source's codec decodes its signal (the codec registry is asked, so it cannot drift)."""
    from schemas.codecs import codec_for

    try:
        codec_for(src.codec, src.signal, 65536)
    except (KeyError, ValueError, TypeError) as e:
        raise SpecReferenceError(
            f"{path}.codec", f"a codec that decodes signal {src.signal!r} ({e})", src.codec
        ) from None


#: step kinds that configure the spec's one stage of their kind (pipelines.graph.plan_stages)
#: step kinds that configure one stage for the whole spec: (what it is, the signal of the flows it may sit on)
_ONE_PER_SPEC = {
    "tail_sample": ("one trace stage", "span"),
    "log_sample": ("one log sampling config", "log"),
    "product": ("one product stage", "event"),
}

#: row columns a scrub or enrich option adds (transforms/scrub.py, transforms/enrich.py);
#: ``service_metadata`` adds its columns only when the spec has ``services``
_ADDED_BY = {
    ("scrub", "pseudonymize_users"): {"user_pseudonym"},
    ("scrub", "anonymize_ip"): {"client_ip_anon"},
    ("enrich", "geo"): {"geo_country", "geo_city"},
    ("enrich", "user_agent"): {"device", "browser", "browser_version", "os", "os_version"},
    ("enrich", "service_metadata"): {"service_team", "service_tier"},
}


def _table_columns(table: str) -> set[str]:
    from schemas.tables import TABLES

    return {
        f.name for f in TABLES[table].arrow_schema() if f.name != "sample_rate"
    }  # sample_rate: set when rows are written


def _check_derive(path: str, rule: DeriveRule, available: set[str] | None) -> None:
    """Every column ``rule`` names is in the rows its flows give it (``available``: the
    source table's columns, less what a scrub/enrich option that is off would have added),
    of a type the derive step can use: filter values cast to the column's type, labels
    are scalars, ``value`` is numeric and ``time_column`` a timestamp."""
    import pyarrow as pa

    from schemas.tables import TABLES

    types = {f.name: f.type for f in TABLES[rule.source].arrow_schema()}
    cols = sorted(available if available is not None else _table_columns(rule.source))

    def column(key: str, name: str) -> pa.DataType:
        if name not in cols:
            raise SpecReferenceError(key, f"a column the {rule.source} rows have {cols}", name)
        return types[name]

    for col, want in rule.filter.items():
        typ = column(f"{path}.filter.{col}", col)
        values = want if isinstance(want, list) else [want]
        if not values:
            raise SpecReferenceError(f"{path}.filter.{col}", "a value or a non-empty list of values", want)
        try:
            pa.array(values).cast(typ)
        except (pa.ArrowException, OverflowError, ValueError, TypeError):
            raise SpecReferenceError(
                f"{path}.filter.{col}", f"values of one type that casts to the column's type {typ}", want
            ) from None
    for k, name in enumerate(rule.labels):
        typ = column(f"{path}.labels[{k}]", name)
        if pa.types.is_nested(typ):
            raise SpecReferenceError(f"{path}.labels[{k}]", "a column of a scalar type", f"{name} ({typ})")
    if rule.value is not None:
        typ = column(f"{path}.value", rule.value)
        if not (pa.types.is_integer(typ) or pa.types.is_floating(typ)):
            raise SpecReferenceError(f"{path}.value", "a numeric column", f"{rule.value} ({typ})")
    if not pa.types.is_timestamp(column(f"{path}.time_column", rule.time_column)):
        raise SpecReferenceError(f"{path}.time_column", "a timestamp column", rule.time_column)


class SpecReferenceError(ConfigurationError, ValueError):
    """A spec value that names something that does not exist; carries its key path."""

    def __init__(self, path: str, expected: str, got):
        self.path, self.expected, self.got = path, expected, got
        super().__init__(f"{path}: expected {expected}, got {got!r}")
