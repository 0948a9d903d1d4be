"""Metric rollups: event-time tumbling windows over metric samples → ``obs.metrics`` rows.

Public API: :class:`MetricRollup` (``process`` / ``advance_watermark`` / ``flush`` /
``snapshot`` / ``restore``), :class:`RollupOutput`, :class:`RollupConfig`,
:class:`MetricDeriver` with :class:`DeriveRule` (metrics from log and event rows),
:class:`ColumnarSketch` (bulk DDSketch) and :func:`histogram_quantile`."""

from transforms.rollup.config import DeriveRule, RollupConfig, duration_ms
from transforms.rollup.derive import MetricDeriver
from transforms.rollup.rollup import QUANTILES, MetricRollup, RollupOutput
from transforms.rollup.sketch import ColumnarSketch, histogram_quantile, histogram_quantiles

__all__ = [
    "MetricRollup",
    "RollupOutput",
    "RollupConfig",
    "DeriveRule",
    "MetricDeriver",
    "ColumnarSketch",
    "histogram_quantile",
    "histogram_quantiles",
    "QUANTILES",
    "duration_ms",
]
