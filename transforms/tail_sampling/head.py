"""Head-based sampling: a probabilistic decision by trace id at ingest, for spans the spec
sends past the tail sampler.

Consistent with the tail sampler's ``probabilistic`` policy: the same hash (FNV-1a 64 of
``hash_salt`` + the 16 trace-id bytes, see ``hashing.py``) and the same threshold, so at
``p`` percent and the same salt, the set of traces kept at ingest is exactly the set the
``probabilistic`` policy keeps at ``p`` percent — and a trace kept at ``p`` is also kept at
any higher percentage. Every span of a trace gets the same decision on every worker."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from .hashing import hash_trace_ids, threshold


class HeadSampler:
    """Keeps the traces whose sampling hash is within ``sampling_percentage`` (module doc)."""

    def __init__(self, sampling_percentage: float, hash_salt: str = "", policy_name: str = "head_probabilistic"):
        if not 0 <= sampling_percentage <= 100:
            raise ValueError(f"sampling_percentage must be within [0, 100], got {sampling_percentage!r}")
        self.percentage = float(sampling_percentage)
        self.salt = hash_salt
        self.policy_name = policy_name
        self._threshold = np.uint64(threshold(self.percentage))

    def keep_mask(self, trace_ids) -> np.ndarray:
        """True for each trace id that is kept."""
        return hash_trace_ids(trace_ids, self.salt) <= self._threshold

    def sample(self, spans: pa.Table) -> pa.Table:
        """The kept rows, plus ``sampling_policy`` and ``adjusted_count`` (100 / percentage)."""
        keep = self.keep_mask(spans.column("trace_id"))
        out = spans.filter(pa.array(keep))
        n = out.num_rows
        adj = 100.0 / self.percentage if self.percentage else 0.0
        return out.append_column("sampling_policy", pa.array([self.policy_name] * n, pa.string())).append_column(
            "adjusted_count", pa.array(np.full(n, adj), pa.float64())
        )
