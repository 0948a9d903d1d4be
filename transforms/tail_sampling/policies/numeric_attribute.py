"""``numeric_attribute``: ``key`` holding a number within ``[min_value, max_value]``
(inclusive). As the collector, an unset *or zero* bound means unbounded on that side.
Values are the attribute text parsed as a decimal number; text that is not a number
never matches."""

import math

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ._attributes import AttributePolicy, as_bool

_NUMBER = r"^\s*[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\s*$"


class NumericAttribute(AttributePolicy):
    kind = "numeric_attribute"

    def __init__(self, name: str, cfg):
        super().__init__(name, cfg.key, cfg.invert_match)
        self.lo = cfg.min_value if cfg.min_value else -math.inf
        self.hi = cfg.max_value if cfg.max_value else math.inf

    def match(self, values):
        values = values.cast(pa.string())
        ok = pc.match_substring_regex(values, pattern=_NUMBER)
        nums = pc.if_else(ok, values, pa.scalar(None, pa.string()))
        v = pc.utf8_trim_whitespace(nums).cast(pa.float64()).to_numpy(zero_copy_only=False)
        with np.errstate(invalid="ignore"):
            return as_bool(ok) & (v >= self.lo) & (v <= self.hi)
