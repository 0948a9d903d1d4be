"""Typed configuration of product analytics: sessions, funnels, error grouping."""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel, ConfigDict, Field, model_validator

from core.durations import MIN_WINDOW, Duration, duration_ms


class FunnelStep(BaseModel):
    """One funnel step: an event matches when every given field equals the event's."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="step name (distinct within the funnel)")
    event_type: str = Field(description="event type to match")
    page: str | None = Field(None, description="the event's page must equal this; null: any")
    form: str | None = Field(None, description="the event's form must equal this; null: any")
    form_step: int | None = Field(None, ge=-(2**31), lt=2**31, description="the event's form step (a 32-bit integer)")


class FunnelConfig(BaseModel):
    """An ordered funnel. ``form`` names the form whose abandonment is tracked: a session
    that has a ``form_start`` of it and no ``form_submit`` of it is *abandoned*."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="funnel name")
    steps: list[FunnelStep] = Field(min_length=1, description="ordered steps (at least one; keys below)")
    form: str | None = Field(None, description="form whose abandonment is tracked")
    ordered: bool = Field(
        False,
        description="steps must occur in event-time order; off: a step counts when it occurs at all "
        "(robust to client clock jitter), reached = longest prefix of steps that occur",
    )

    @model_validator(mode="after")
    def _names(self):
        names = [s.name for s in self.steps]
        if len(set(names)) != len(names):
            raise ValueError("step names must be distinct")
        return self


def signup_funnel() -> FunnelConfig:
    """The default funnel: /signup view → form_start → form steps 1..5 → submit → complete."""
    steps = [
        FunnelStep(name="view", event_type="page_view", page="/signup"),
        FunnelStep(name="form_start", event_type="form_start", form="signup"),
    ]
    steps += [FunnelStep(name=f"step_{i}", event_type="form_step", form="signup", form_step=i) for i in range(1, 6)]
    steps += [
        FunnelStep(name="submit", event_type="form_submit", form="signup"),
        FunnelStep(name="complete", event_type="signup_complete", form="signup"),
    ]
    return FunnelConfig(name="signup", steps=steps, form="signup")


class ProductConfig(BaseModel):
    """Sessions and funnels. Durations are :data:`core.durations.Duration` (``"30m"``, ``"10s"``)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    session_gap: Duration = Field(
        timedelta(minutes=30), ge=MIN_WINDOW, description="a session ends after this much inactivity"
    )
    watermark_delay: Duration = Field(
        timedelta(seconds=10), description="watermark = max event time seen - watermark_delay"
    )
    report_resolution: Duration = Field(
        timedelta(hours=1), ge=MIN_WINDOW, description="window of the funnel report rows (by session end)"
    )
    funnels: list[FunnelConfig] = Field(
        default_factory=lambda: [signup_funnel()], description="funnels (keys below); default: the signup funnel"
    )
    max_pages: int = Field(
        100, ge=1, le=100_000, description="pages kept per session row (consecutive repeats collapsed)"
    )

    @property
    def gap_ms(self) -> int:
        return duration_ms(self.session_gap)

    @property
    def delay_ms(self) -> int:
        return duration_ms(self.watermark_delay)

    @property
    def report_ms(self) -> int:
        return duration_ms(self.report_resolution)
