"""Shared by the attribute policies: a value matcher applied to resource and span
attribute values of every span, then the collector's any-span / invert rules:

- plain: Sampled when the resource or any span has a matching value, else NotSampled;
- ``invert_match``: InvertNotSampled when the resource or any span has a matching value,
  else InvertSampled (so a trace without the key at all is InvertSampled).

Attribute values are text in our span model (OTLP values flattened by the codec)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..decision import INS, IS, NS, S
from .base import Policy


class AttributePolicy(Policy):
    skip_empty_span_values = False

    def __init__(self, name: str, key: str, invert: bool):
        super().__init__(name)
        self.key = key
        self.invert = invert

    def match(self, values) -> np.ndarray:
        raise NotImplementedError

    def _rows(self, values, skip_empty: bool) -> np.ndarray | None:
        if values is None:
            return None
        if isinstance(values, pa.ChunkedArray):
            values = values.combine_chunks() if values.num_chunks != 1 else values.chunk(0)
        m = self.match(values)
        if skip_empty:
            m &= np.asarray(pc.fill_null(pc.not_equal(values, ""), False).to_numpy(zero_copy_only=False), dtype=bool)
        return m

    def evaluate_all(self, view):
        hit = np.zeros(view.n, dtype=bool)
        for vals, skip in ((view.resource_attr(self.key), False), (view.span_attr(self.key), self.skip_empty_span_values)):
            rows = self._rows(vals, skip)
            if rows is not None:
                hit |= view.any_per_trace(rows)
        if self.invert:
            return np.where(hit, INS, IS).astype(np.int8)
        return np.where(hit, S, NS).astype(np.int8)


def as_bool(arr) -> np.ndarray:
    return np.asarray(pc.fill_null(arr, False).to_numpy(zero_copy_only=False), dtype=bool)
