"""Shared by the attribute policies: a typed value matcher applied to the resource and
span attributes of every span, then the Collector's (v0.161.0) any-span rules:

- plain: Sampled when the resource or any span has a matching value, else NotSampled;
- ``invert_match``: NotSampled when the resource or any span has a matching value, else
  Sampled (plain decisions, as the Collector since v0.150.0: an inverted policy is one
  policy among others, it vetoes nothing). With the sampler's ``legacy_invert_decisions``
  it returns InvertNotSampled / InvertSampled instead (the Collector before v0.150.0:
  InvertNotSampled vetoes every other policy's Sampled).

Values are typed (see ``view.py``). What a present value of another type reads as is
what the Collector's ``pcommon.Value`` accessors return for it: ``Str()`` is ``""``,
``Int()`` is ``0``, ``Bool()`` is ``false``; each matcher gets those through
:class:`Values`."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..decision import INS, IS, NS, S
from .base import Policy


class Values:
    """The values of one attribute key on every span row: ``text`` (null where the key is
    absent) and ``type`` (null for a string; ``int``, ``double``, ``bool``, ... otherwise)."""

    def __init__(self, text: pa.Array, types: pa.Array | None):
        self.text = text
        self.types = types if types is not None else pa.nulls(len(text), pa.string())

    @property
    def present(self) -> np.ndarray:
        return as_bool(pc.is_valid(self.text))

    def is_type(self, name: str | None) -> np.ndarray:
        """Rows whose value is present and of type ``name`` (None: a string)."""
        t = pc.is_null(self.types) if name is None else pc.equal(self.types, name)
        return self.present & as_bool(t)

    def as_str(self) -> pa.Array:
        """``Value.Str()``: the string, ``""`` for a present value of another type, null when absent."""
        return pc.if_else(pc.is_null(self.types), self.text, pa.scalar("", pa.string()))

    def as_int(self) -> np.ndarray:
        """``Value.Int()`` as int64 (exact): the integer, 0 for a present value of another type
        (and for absent rows; combine with :attr:`present`)."""
        ints = pc.if_else(pc.equal(self.types, "int"), self.text, pa.scalar(None, pa.string()))
        try:
            parsed = pc.cast(ints, pa.int64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):  # text that is no int64 (not from our codecs): 0
            parsed = pa.array([_int64_or_none(v) for v in ints.to_pylist()], pa.int64())
        return np.asarray(pc.fill_null(parsed, 0).to_numpy(zero_copy_only=False), dtype=np.int64)

    def as_bool(self) -> np.ndarray:
        """``Value.Bool()``: the boolean, false for a present value of another type."""
        return self.is_type("bool") & as_bool(pc.equal(self.text, "true"))


class AttributePolicy(Policy):
    """Subclasses define :meth:`match_span` and :meth:`match_resource`: per row, whether a
    present value matches (absent rows are never looked at)."""

    legacy_invert = False  # set by the sampler from ``legacy_invert_decisions``

    def __init__(self, name: str, key: str, invert: bool):
        super().__init__(name)
        self.key = key
        self.invert = invert

    def match_span(self, values: Values) -> np.ndarray:
        raise NotImplementedError

    def match_resource(self, values: Values) -> np.ndarray:
        return self.match_span(values)

    @staticmethod
    def _flat(arr):
        if isinstance(arr, pa.ChunkedArray):
            return arr.combine_chunks() if arr.num_chunks != 1 else arr.chunk(0)
        return arr

    def evaluate_all(self, view):
        hit = np.zeros(view.n, dtype=bool)
        for text, types, match in (
            (view.resource_attr(self.key), view.resource_attr_type(self.key), self.match_resource),
            (view.span_attr(self.key), view.span_attr_type(self.key), self.match_span),
        ):
            if text is None:
                continue
            vals = Values(
                self._flat(text).cast(pa.string()), None if types is None else self._flat(types).cast(pa.string())
            )
            rows = vals.present & match(vals)
            hit |= view.any_per_trace(rows)
        if self.invert:
            if self.legacy_invert:
                return np.where(hit, INS, IS).astype(np.int8)
            return np.where(hit, NS, S).astype(np.int8)
        return np.where(hit, S, NS).astype(np.int8)


def _int64_or_none(v: str | None) -> int | None:
    try:
        n = int(v) if v is not None else None
    except ValueError:
        return None
    return n if n is not None and -(2**63) <= n < 2**63 else None


def as_bool(arr) -> np.ndarray:
    return np.asarray(pc.fill_null(arr, False).to_numpy(zero_copy_only=False), dtype=bool)
