"""Tail-based trace sampling with the OpenTelemetry Collector's policy set, head sampling
consistent with it, trace-consistent log sampling and RED span metrics — engine-agnostic
(no apache_beam / bytewax imports), batch-oriented, deterministic. See README.md."""

from .config import ConfigError, TailSamplingConfig, load_config
from .decision import Decision
from .head import HeadSampler
from .log_sampling import LogSampler, LogSamplingConfig
from .red import RedMetrics
from .sampler import REASONS, TRACE_SCHEMA, Decisions, TailSampler

__all__ = [
    "ConfigError",
    "Decision",
    "Decisions",
    "HeadSampler",
    "LogSampler",
    "LogSamplingConfig",
    "REASONS",
    "RedMetrics",
    "TRACE_SCHEMA",
    "TailSampler",
    "TailSamplingConfig",
    "load_config",
]
