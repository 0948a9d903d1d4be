"""``numeric_attribute``: ``key`` holding a value within ``[min_value, max_value]``
(inclusive, int64, compared exactly). As the Collector (v0.161.0), an unset *or zero*
bound means unbounded on that side, and values are read with ``Value.Int()``: an integer
is itself, and a present value of any other type (a double, a string such as ``"404"``,
a boolean) reads as **0** — so it matches exactly when 0 is within the bounds.
``invert_match`` as described in ``_attributes.py``."""

import numpy as np

from ._attributes import AttributePolicy, Values

_I64 = np.iinfo(np.int64)


class NumericAttribute(AttributePolicy):
    kind = "numeric_attribute"

    def __init__(self, name: str, cfg):
        super().__init__(name, cfg.key, cfg.invert_match)
        self.lo = np.int64(cfg.min_value if cfg.min_value else _I64.min)
        self.hi = np.int64(cfg.max_value if cfg.max_value else _I64.max)

    def match_span(self, values: Values):
        v = values.as_int()
        return (v >= self.lo) & (v <= self.hi)
