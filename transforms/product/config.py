"""Typed configuration of product analytics: sessions, funnels, error grouping."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from transforms.rollup.config import duration_ms


class FunnelStep(BaseModel):
    """One funnel step: an event matches when every given field equals the event's."""

    model_config = ConfigDict(extra="forbid")

    name: str
    event_type: str
    page: str | None = None
    form: str | None = None
    form_step: int | None = None


class FunnelConfig(BaseModel):
    """An ordered funnel. ``form`` names the form whose abandonment is tracked: a session
    that has a ``form_start`` of it and no ``form_submit`` of it is *abandoned*."""

    model_config = ConfigDict(extra="forbid")

    name: str
    steps: list[FunnelStep] = Field(min_length=1)
    form: str | None = None
    ordered: bool = Field(False, description="steps must occur in event-time order; off: a step counts when it occurs at all "
                                             "(robust to client clock jitter), reached = longest prefix of steps that occur")

    @model_validator(mode="after")
    def _names(self):
        names = [s.name for s in self.steps]
        if len(set(names)) != len(names):
            raise ValueError("step names must be distinct")
        return self


def signup_funnel() -> FunnelConfig:
    """The default funnel: /signup view → form_start → form steps 1..5 → submit → complete."""
    steps = [FunnelStep(name="view", event_type="page_view", page="/signup"),
             FunnelStep(name="form_start", event_type="form_start", form="signup")]
    steps += [FunnelStep(name=f"step_{i}", event_type="form_step", form="signup", form_step=i) for i in range(1, 6)]
    steps += [FunnelStep(name="submit", event_type="form_submit", form="signup"),
              FunnelStep(name="complete", event_type="signup_complete", form="signup")]
    return FunnelConfig(name="signup", steps=steps, form="signup")


class ProductConfig(BaseModel):
    """Sessions and funnels. Durations are strings like ``"30m"`` (or milliseconds)."""

    model_config = ConfigDict(extra="forbid")

    session_gap: str = Field("30m", description="a session ends after this much inactivity")
    watermark_delay: str = Field("10s", description="watermark = max event time seen - watermark_delay")
    report_resolution: str = Field("1h", description="window of the funnel report rows (by session end)")
    funnels: list[FunnelConfig] = Field(default_factory=lambda: [signup_funnel()])
    max_pages: int = Field(100, ge=1, description="pages kept per session row")

    @field_validator("session_gap", "watermark_delay", "report_resolution")
    @classmethod
    def _dur(cls, v):
        if duration_ms(v) < 0:
            raise ValueError("must not be negative")
        return str(v)

    @property
    def gap_ms(self) -> int:
        return duration_ms(self.session_gap)

    @property
    def delay_ms(self) -> int:
        return duration_ms(self.watermark_delay)

    @property
    def report_ms(self) -> int:
        return duration_ms(self.report_resolution)
