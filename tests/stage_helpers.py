"""Moved to :mod:`tests.helpers` (one helpers module); these names stay importable from here
for branches written before the move. New tests import them from ``tests.helpers``."""

from tests.helpers import BASE, MIN, ListSource, iso, metric_spec, run, sample

__all__ = ["BASE", "MIN", "ListSource", "iso", "metric_spec", "run", "sample"]
