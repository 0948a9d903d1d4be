"""``status_code``: Sampled when any span's status is one of ``status_codes``."""

import pyarrow as pa
import pyarrow.compute as pc

from ..decision import from_bool, filled, NS
from .base import Policy


class StatusCode(Policy):
    kind = "status_code"

    def __init__(self, name: str, cfg):
        super().__init__(name)
        self.codes = pa.array(sorted(set(cfg.status_codes)), pa.string())

    def evaluate_all(self, view):
        col = view.column("status_code")
        if col is None:
            return filled(view.n, NS)
        return from_bool(view.any_per_trace(pc.is_in(col.cast(pa.string()), value_set=self.codes)))
