"""``trace_flags``: Sampled when any span has the W3C *sampled* flag (bit 0 of the span's
``flags``, span column ``flags``), as the Collector. Spans without the column (JSON and
Avro spans carry no flags) never match."""

import pyarrow as pa
import pyarrow.compute as pc

from ..decision import NS, filled, from_bool
from .base import Policy


class TraceFlags(Policy):
    kind = "trace_flags"

    def __init__(self, name: str, cfg=None):
        super().__init__(name)

    def evaluate_all(self, view):
        col = view.column("flags")
        if col is None:
            return filled(view.n, NS)
        sampled = pc.not_equal(pc.bit_wise_and(pc.cast(col, pa.int64()), pa.scalar(1, pa.int64())), 0)
        return from_bool(view.any_per_trace(sampled))
