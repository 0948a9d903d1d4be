"""Typed configuration of the metric rollups (what the spec's ``rollup`` step carries)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from core.durations import MIN_WINDOW, Duration, duration_ms, format_duration

__all__ = ["DeriveRule", "RollupConfig", "duration_ms", "format_duration"]

#: a window size: at least 1ms
Resolution = Annotated[Duration, Field(ge=MIN_WINDOW)]


class RollupConfig(BaseModel):
    """Metric rollup settings. Durations are :data:`core.durations.Duration` (``"1m"``, ``"10s"``)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    resolutions: list[Resolution] = Field(
        default_factory=lambda: [timedelta(minutes=1), timedelta(hours=1)],
        min_length=1,
        max_length=16,
        description="tumbling window sizes; each must be a multiple of the smallest",
    )
    watermark_delay: Duration = Field(
        timedelta(seconds=10), description="watermark = max event time seen - watermark_delay"
    )
    allowed_lateness: Duration = Field(
        timedelta(minutes=1), description="a window closes when the watermark passes its end + allowed_lateness"
    )
    max_series_per_metric: int = Field(
        10_000,
        ge=1,
        le=100_000_000,
        description="output series per (kind, name); further series fold into "
        '`{"__overflow__": "true"}` (counted in `registry.overflowed`)',
    )
    relative_accuracy: float = Field(0.01, gt=0, lt=1, description="DDSketch relative accuracy of gauge quantiles")
    sketch_kinds: list[str] = Field(
        default_factory=lambda: ["gauge"],
        description="kinds whose values feed the quantile sketch (`gauge`, `summary`)",
    )
    exemplars: bool = Field(
        True, description="keep the trace id of each window's largest sample (input column trace_id)"
    )
    compact_rows: int = Field(
        2_000_000, ge=1000, le=1_000_000_000, description="pending partial rows per window before they are merged"
    )
    histogram_buckets: Literal["per_bucket", "cumulative"] = Field(
        "per_bucket",
        description="layout of histogram bucket_counts: per_bucket (OTLP: observations in each bucket) or "
        "cumulative (Prometheus le buckets: observations <= each bound, the last one +Inf); "
        "see *Histogram buckets* in transforms/rollup/README.md",
    )
    counter_gap: Annotated[Duration, Field(ge=MIN_WINDOW)] | None = Field(
        None,
        description="spread a counter's increase linearly over a gap between two samples longer than this: only the "
        "share inside the window is counted; null: the whole increase counts in the window of the later sample "
        "(see *Counter increases after a scrape gap* in transforms/rollup/README.md)",
    )

    @field_validator("resolutions")
    @classmethod
    def _res(cls, v):
        ms = sorted(duration_ms(x) for x in v)
        bad = [format_duration(x) for x in ms if x % ms[0]]
        if bad:
            raise ValueError(
                f"every resolution must be a multiple of the smallest ({format_duration(ms[0])}); not: {bad}"
            )
        if len(set(ms)) != len(ms):
            raise ValueError("duplicate resolutions")
        return v

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

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str = Field(min_length=1, description="metric name of the derived samples")
    source: str = Field(description="logs or events")
    filter: dict[str, str | int | float | bool | list[str | int | float | bool]] = Field(
        default_factory=dict, description="column → value or list of values (all must hold)"
    )
    labels: list[str] = Field(default_factory=list, description='columns that become labels (null → "")')
    value: str | None = Field(None, description="column observed per row; null counts rows")
    time_column: str = Field("ts", description="event-time column")

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
