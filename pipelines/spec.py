"""Typed model of a pipeline spec. Every key is documented here; unknown keys are errors.

A spec names its sources (topics and their codecs), its flows (a source, an ordered list
of steps, a sink table), the storage the tables live in, the privacy settings and the
service metadata used for enrichment."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Literal, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SecretStr, model_validator

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(v) -> timedelta:
    """``"500ms"``, ``"30s"``, ``"5m"``, ``"2h"``, ``"7d"``, ``"1w"`` or a number of seconds."""
    if isinstance(v, timedelta):
        return v
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return timedelta(seconds=v)
    if isinstance(v, str):
        m = _DURATION.match(v)
        if m:
            return timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2)])
    raise ValueError(f'expected a duration like "30s", "5m", "7d", got {v!r}')


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# -- storage --------------------------------------------------------------------------

class CatalogSpec(Model):
    """Iceberg catalog. Embedded default: SQLite + local files under ``warehouse``."""

    kind: Literal["sql"] = "sql"
    name: str = "obsflow"
    uri: str | None = Field(None, description="SQLAlchemy URL; default sqlite file inside the warehouse directory")
    warehouse: str = Field(".obsflow/warehouse", description="local path or s3:// URL")
    properties: dict[str, str] = Field(default_factory=dict, description="extra pyiceberg catalog / FileIO properties")


class CommitSpec(Model):
    """When the Iceberg sink commits: whichever bound is hit first."""

    max_rows: int = Field(200_000, gt=0)
    max_seconds: float = Field(5.0, gt=0)


class TableOptions(Model):
    retention: Duration | None = None


class StorageSpec(Model):
    catalog: CatalogSpec = CatalogSpec()
    namespace: str = "obs"
    commit: CommitSpec = CommitSpec()
    tables: dict[str, TableOptions] = Field(default_factory=dict)


# -- privacy and services ---------------------------------------------------------------

class PrivacySpec(Model):
    """Pseudonymization and IP anonymization. The HMAC key comes from ``pseudonym_key``
    or, by default, from the environment variable named by ``pseudonym_key_env``."""

    pseudonym_key_env: str = "OBSFLOW_PSEUDONYM_KEY"
    pseudonym_key: SecretStr | None = None
    ipv4_prefix: int = Field(24, ge=0, le=32)
    ipv6_prefix: int = Field(48, ge=0, le=128)


class ServiceMeta(Model):
    team: str | None = None
    tier: str | None = None
    owner: str | None = None
    runbook: str | None = None


# -- sources ---------------------------------------------------------------------------

Signal = Literal["event", "log"]


class SourceSpec(Model):
    name: str
    topic: str
    signal: Signal
    codec: Literal["json"] = "json"
    partitions: int = Field(4, gt=0, description="partitions of the embedded source (Kafka uses the topic's)")


# -- steps -----------------------------------------------------------------------------

class ValidateStep(Model):
    """Reject records that break the wire contract."""

    kind: Literal["validate"]
    max_bytes: int = Field(65536, gt=0)
    max_future: Duration = timedelta(minutes=5)
    max_past: Duration = timedelta(days=7)
    event_types: list[str] = Field(default_factory=lambda: [
        "page_view", "click", "scroll", "form_start", "form_step", "form_submit", "signup_complete", "error"])
    levels: list[str] = Field(default_factory=lambda: ["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"])


class ScrubStep(Model):
    """Remove personal data from free text and identifiers."""

    kind: Literal["scrub"]
    emails: bool = True
    card_numbers: bool = True
    bearer_tokens: bool = True
    api_keys: bool = True
    anonymize_ip: bool = True
    pseudonymize_users: bool = True


class EnrichStep(Model):
    """Add geo, device and service metadata."""

    kind: Literal["enrich"]
    geo: bool = True
    user_agent: bool = True
    service_metadata: bool = True
    cache_size: int = Field(100_000, gt=0, description="entries in each lookup cache (IPs, user agents)")
    require_valid_ip: bool = Field(True, description="a client_ip that is not an IP address is an enrichment_failure")


Step = Annotated[Union[ValidateStep, ScrubStep, EnrichStep], Field(discriminator="kind")]


class SinkSpec(Model):
    table: str


class FlowSpec(Model):
    name: str
    source: str
    steps: list[Step] = Field(default_factory=list)
    sink: SinkSpec


class DeadLetterSpec(Model):
    table: str = "dead_letters"
    max_raw_bytes: int = Field(16384, ge=0, description="raw payload bytes kept per dead letter")


class PipelineSpec(Model):
    version: Literal[1] = 1
    name: str
    storage: StorageSpec = StorageSpec()
    privacy: PrivacySpec = PrivacySpec()
    services: dict[str, ServiceMeta] = Field(default_factory=dict)
    sources: list[SourceSpec]
    flows: list[FlowSpec]
    dead_letters: DeadLetterSpec = DeadLetterSpec()

    @model_validator(mode="after")
    def _references(self) -> "PipelineSpec":
        from schemas.tables import TABLES

        names = [s.name for s in self.sources]
        for i, flow in enumerate(self.flows):
            if flow.source not in names:
                raise SpecReferenceError(f"flows[{i}].source", f"one of the source names {names}", flow.source)
            if flow.sink.table not in TABLES:
                raise SpecReferenceError(f"flows[{i}].sink.table", f"one of the tables {sorted(TABLES)}", flow.sink.table)
        if self.dead_letters.table not in TABLES:
            raise SpecReferenceError("dead_letters.table", f"one of the tables {sorted(TABLES)}", self.dead_letters.table)
        for t in self.storage.tables:
            if t not in TABLES:
                raise SpecReferenceError(f"storage.tables.{t}", f"one of the tables {sorted(TABLES)}", t)
        return self

    def source(self, name: str) -> SourceSpec:
        return next(s for s in self.sources if s.name == name)


class SpecReferenceError(ValueError):
    """A spec value that names something that does not exist; carries its key path."""

    def __init__(self, path: str, expected: str, got):
        self.path, self.expected, self.got = path, expected, got
        super().__init__(f"{path}: expected {expected}, got {got!r}")
