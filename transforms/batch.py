"""Moved to :mod:`core.batch` (the raw batch and the batch of rows are shared types below
schemas, transforms, sinks and sources); this name stays so existing imports keep working."""

from core.batch import INDEX, ITEM, MAX_PROBLEMS, Batch, RawBatch, Rejects

__all__ = ["INDEX", "ITEM", "MAX_PROBLEMS", "Batch", "RawBatch", "Rejects"]
