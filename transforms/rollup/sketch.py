"""Columnar DDSketch: the ``ddsketch`` package's logarithmic mapping (bounded relative
error), applied to whole numpy arrays so that a batch's values are added to many series'
sketches at once.

A sketch here is a set of ``(series, code, count)`` rows. ``code`` orders like the value:
positive values are ``2**31 + key``, negative values ``-(2**31 + key(|v|))`` and zero
(and |v| below the mapping's smallest value) ``0``. Sketches merge by adding counts of
equal ``(series, code)``, so merging partial sketches of batches or windows is exact and
the quantile of the merged sketch is within ``relative_accuracy`` of the exact
lower quantile (the sample at index ``floor(q * (n - 1))``)."""

from __future__ import annotations

import numpy as np
from ddsketch.mapping import LogarithmicMapping

_BIAS = 1 << 31
_SHIFT = 34
_CODE_OFF = 1 << 33


class ColumnarSketch:
    """Key mapping and bulk operations for one relative accuracy."""

    def __init__(self, relative_accuracy: float = 0.01):
        self.mapping = LogarithmicMapping(relative_accuracy)
        self.relative_accuracy = relative_accuracy
        self._mult = self.mapping._multiplier  # key = ceil(log2(v) * mult) + offset
        self._offset = self.mapping._offset
        self._min = self.mapping.min_possible

    def codes(self, values: np.ndarray) -> np.ndarray:
        """Sortable sketch codes of ``values`` (finite floats)."""
        v = np.asarray(values, dtype=np.float64)
        a = np.abs(v)
        small = a < self._min
        with np.errstate(divide="ignore", invalid="ignore"):
            k = np.ceil(np.log2(np.where(small, 1.0, a)) * self._mult) + self._offset
        code = k.astype(np.int64) + _BIAS
        code = np.where(v < 0, -code, code)
        return np.where(small, 0, code)

    def values(self, codes: np.ndarray) -> np.ndarray:
        """Representative value of each code (within the relative accuracy of any value mapped to it)."""
        c = np.asarray(codes, dtype=np.int64)
        k = (np.abs(c) - _BIAS).astype(np.float64)
        v = np.power(2.0, (k - self._offset) / self._mult) * (2.0 / (1.0 + self.mapping.gamma))
        return np.where(c == 0, 0.0, np.sign(c) * v)

    @staticmethod
    def aggregate(series: np.ndarray, codes: np.ndarray, counts: np.ndarray | None = None):
        """Merge rows with equal ``(series, code)``: returns sorted ``(series, code, count)``."""
        if len(series) == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
        comp = (np.asarray(series, np.int64) << _SHIFT) | (np.asarray(codes, np.int64) + _CODE_OFF)
        if counts is None:
            u, c = np.unique(comp, return_counts=True)
        else:
            order = np.argsort(comp, kind="stable")
            sc = comp[order]
            starts = np.flatnonzero(np.r_[True, sc[1:] != sc[:-1]])
            u = sc[starts]
            c = np.add.reduceat(np.asarray(counts, np.int64)[order], starts)
        return u >> _SHIFT, (u & ((1 << _SHIFT) - 1)) - _CODE_OFF, c.astype(np.int64)

    def quantiles(self, series: np.ndarray, codes: np.ndarray, counts: np.ndarray, qs) -> tuple[np.ndarray, np.ndarray]:
        """For aggregated rows (sorted by series, then code): the distinct series and a
        ``(len(series), len(qs))`` array of quantile estimates."""
        if len(series) == 0:
            return np.zeros(0, np.int64), np.zeros((0, len(qs)))
        starts = np.flatnonzero(np.r_[True, series[1:] != series[:-1]])
        ends = np.r_[starts[1:], len(series)]
        cum = np.cumsum(counts)
        base = np.r_[0, cum[starts[1:] - 1]] if len(starts) > 1 else np.zeros(1, np.int64)
        total = cum[ends - 1] - base
        out = np.empty((len(starts), len(qs)))
        for j, q in enumerate(qs):
            rank = np.floor(q * (total - 1))
            idx = np.searchsorted(cum, base + rank, side="right")
            idx = np.minimum(idx, ends - 1)
            out[:, j] = self.values(codes[idx])
        return series[starts], out


def histogram_quantiles(
    qs, seg: np.ndarray, pos: np.ndarray, counts: np.ndarray, nseg: int, bounds: np.ndarray
) -> np.ndarray:
    """:func:`histogram_quantile` for ``nseg`` histograms with the same ``bounds`` at once:
    bucket ``pos[i]`` of histogram ``seg[i]`` holds ``counts[i]`` (pairs in any order, at
    most one per bucket). Returns ``[nseg, len(qs)]``, NaN where there is no answer. The
    same arithmetic as the scalar function on each histogram's dense counts, so the same
    floats."""
    out = np.full((nseg, len(qs)), np.nan)
    nb = len(bounds)
    if nseg == 0 or nb == 0 or len(seg) == 0:
        return out
    width = int(pos.max()) + 1
    dense = np.zeros((nseg, width))
    dense[seg, pos] = counts
    cum = np.cumsum(dense, axis=1)
    total = dense.sum(axis=1)
    ok = total > 0
    rows = np.arange(nseg)
    for j, q in enumerate(qs):
        rank = q * total
        b = np.argmax(cum >= rank[:, None], axis=1)  # the first bucket whose cumulative count reaches the rank
        upper = bounds[np.minimum(b, nb - 1)]
        lower = np.where(b > 0, bounds[np.clip(b - 1, 0, nb - 1)], np.where(upper > 0, 0.0, upper))
        below = np.where(b > 0, cum[rows, np.maximum(b - 1, 0)], 0.0)
        inb = dense[rows, b]
        with np.errstate(divide="ignore", invalid="ignore"):
            val = np.where(inb > 0, lower + (upper - lower) * (rank - below) / inb, upper)
        val = np.where(b >= nb, bounds[-1], val)
        out[:, j] = np.where(ok, val, np.nan)
    return out


def histogram_quantile(q: float, bounds: np.ndarray, counts: np.ndarray) -> float | None:
    """Prometheus ``histogram_quantile``: linear interpolation inside the bucket where the
    cumulative count reaches ``q * total``. ``counts[i]`` is the count of bucket ``i``
    (``(bounds[i-1], bounds[i]]``, the first from 0 — or from its bound when it is
    negative); a count beyond the last bound is the +Inf bucket, whose quantile is the
    last finite bound."""
    total = float(counts.sum())
    if total <= 0 or len(bounds) == 0:
        return None
    rank = q * total
    cum = np.cumsum(counts)
    b = int(np.searchsorted(cum, rank, side="left"))
    b = min(b, len(counts) - 1)
    if b >= len(bounds):
        return float(bounds[-1])
    upper = float(bounds[b])
    lower = float(bounds[b - 1]) if b > 0 else (0.0 if upper > 0 else upper)
    below = float(cum[b - 1]) if b > 0 else 0.0
    inb = float(counts[b])
    if inb <= 0:
        return upper
    return lower + (upper - lower) * (rank - below) / inb
