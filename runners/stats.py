"""Moved to :mod:`core.stats` (the run counters are a shared type below sinks, sources and
pipelines, which record into them); this name stays so existing imports keep working."""

from core.stats import COMMIT_ROWS_BUCKETS, COMMIT_SECONDS_BUCKETS, STATS, Histogram, PartitionProgress, RunStats

__all__ = ["COMMIT_ROWS_BUCKETS", "COMMIT_SECONDS_BUCKETS", "STATS", "Histogram", "PartitionProgress", "RunStats"]
