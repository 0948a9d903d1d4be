"""``probabilistic``: Sampled when the trace id's hash is at most the threshold for
``sampling_percentage`` (FNV-1a 64 of ``hash_salt`` + the 16 trace-id bytes, see
``hashing.py``) — the same on every worker and engine, and the same set the head sampler
keeps at that percentage. Kept traces carry ``adjusted_count = 100 / sampling_percentage``.
A percentage above 100 keeps every trace (the threshold saturates, as the Collector's),
with adjusted count 1."""

import numpy as np

from ..decision import from_bool
from ..hashing import threshold
from .base import Policy


class Probabilistic(Policy):
    kind = "probabilistic"

    def __init__(self, name: str, cfg):
        super().__init__(name)
        self.salt = cfg.hash_salt
        self.percentage = cfg.sampling_percentage
        self.threshold = np.uint64(threshold(cfg.sampling_percentage))

    @property
    def probability(self) -> float:
        return min(1.0, self.percentage / 100.0)

    def evaluate_all(self, view):
        return from_bool(view.hashes(self.salt) <= self.threshold)
