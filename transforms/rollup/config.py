"""Typed configuration of the metric rollups (what the spec's ``rollup`` step carries)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_DUR = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def duration_ms(value) -> int:
    """``"30s"``, ``"5m"``, ``"1h"``, ``"250ms"``, ``"7d"`` or a number of milliseconds → milliseconds."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration like \"30s\", \"5m\", \"1h\", got {value!r}")
    if isinstance(value, (int, float)):
        return int(value)
    m = _DUR.match(str(value))
    if not m:
        raise ValueError(f"expected a duration like \"30s\", \"5m\", \"1h\", got {value!r}")
    return int(float(m.group(1)) * _UNIT_MS[m.group(2)])


def format_duration(ms: int) -> str:
    """Inverse of :func:`duration_ms` for whole units (``60000`` → ``"1m"``)."""
    for unit in ("d", "h", "m", "s"):
        if ms % _UNIT_MS[unit] == 0:
            return f"{ms // _UNIT_MS[unit]}{unit}"
    return f"{ms}ms"


class RollupConfig(BaseModel):
    """Metric rollup settings. Durations are strings like ``"1m"`` (or milliseconds)."""

    model_config = ConfigDict(extra="forbid")

    resolutions: list[str] = Field(default_factory=lambda: ["1m", "1h"],
                                   description="tumbling window sizes; each must be a multiple of the smallest")
    watermark_delay: str = Field("10s", description="watermark = max event time seen - watermark_delay")
    allowed_lateness: str = Field("1m", description="a window closes when the watermark passes its end + allowed_lateness")
    max_series_per_metric: int = Field(10_000, ge=1, description="series per (kind, name) before folding into the overflow series")
    relative_accuracy: float = Field(0.01, gt=0, lt=1, description="DDSketch relative accuracy of gauge quantiles")
    sketch_kinds: list[str] = Field(default_factory=lambda: ["gauge"], description="kinds whose values feed the quantile sketch")
    exemplars: bool = Field(True, description="keep the trace id of each window's largest sample (input column trace_id)")
    compact_rows: int = Field(2_000_000, ge=1000, description="pending partial rows per window before they are merged")
    histogram_buckets: Literal["per_bucket", "cumulative"] = Field(
        "per_bucket", description="layout of histogram bucket_counts: per_bucket (OTLP: observations in each bucket) or "
                                  "cumulative (Prometheus le buckets: observations <= each bound, the last one +Inf)")
    counter_gap: str | None = Field(None, description="spread a counter's increase linearly over a gap between two samples "
                                                      "longer than this: only the share inside the window is counted; "
                                                      "null: the whole increase counts in the window of the later sample")

    @field_validator("counter_gap")
    @classmethod
    def _gap(cls, v):
        if v is not None and duration_ms(v) <= 0:
            raise ValueError(f"expected a duration above 0 or null, got {v!r}")
        return None if v is None else str(v)

    @field_validator("watermark_delay", "allowed_lateness")
    @classmethod
    def _dur(cls, v):
        duration_ms(v)
        return str(v)

    @field_validator("resolutions")
    @classmethod
    def _res(cls, v):
        if not v:
            raise ValueError("at least one resolution is required")
        ms = sorted(duration_ms(x) for x in v)
        if ms[0] <= 0:
            raise ValueError("resolutions must be positive")
        bad = [format_duration(x) for x in ms if x % ms[0]]
        if bad:
            raise ValueError(f"every resolution must be a multiple of the smallest ({format_duration(ms[0])}); not: {bad}")
        if len(set(ms)) != len(ms):
            raise ValueError("duplicate resolutions")
        return [str(x) for x in v]

    @field_validator("sketch_kinds")
    @classmethod
    def _kinds(cls, v):
        bad = [k for k in v if k not in ("gauge", "summary")]
        if bad:
            raise ValueError(f"sketch_kinds may hold gauge and summary, got {bad}")
        return v

    @property
    def resolutions_ms(self) -> list[int]:
        return sorted(duration_ms(x) for x in self.resolutions)

    @property
    def delay_ms(self) -> int:
        return duration_ms(self.watermark_delay)

    @property
    def lateness_ms(self) -> int:
        return duration_ms(self.allowed_lateness)

    @property
    def counter_gap_ms(self) -> int | None:
        return None if self.counter_gap is None else duration_ms(self.counter_gap)


class DeriveRule(BaseModel):
    """A metric derived from log or event rows.

    ``filter`` maps a column to a value or a list of values (equality / membership, all
    must hold); ``labels`` are the columns that become labels (null → ``""``); ``value`` is
    the column whose values are observed (a gauge sample per row), or ``None`` to count
    rows (a summary sample with count 1 per row, so the rollup row's ``count`` is the number
    of matching rows per window)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    source: str = Field(description="logs or events")
    filter: dict[str, str | int | float | bool | list[str | int | float | bool]] = Field(default_factory=dict)
    labels: list[str] = Field(default_factory=list)
    value: str | None = None
    time_column: str = "ts"

    @field_validator("source")
    @classmethod
    def _src(cls, v):
        if v not in ("logs", "events"):
            raise ValueError(f"expected logs or events, got {v!r}")
        return v

    @model_validator(mode="after")
    def _labels_unique(self):
        if len(set(self.labels)) != len(self.labels):
            raise ValueError("labels must be distinct")
        return self
