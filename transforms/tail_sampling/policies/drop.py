"""``drop``: Dropped when every ``drop_sub_policy`` samples (NotSampled as soon as one
returns NotSampled or InvertNotSampled). A Dropped trace is not sampled whatever the other
policies say; drop policies are evaluated first."""

import numpy as np

from ..decision import DROP, INS, NS
from .and_ import And


class Drop(And):
    kind = "drop"

    @property
    def probability(self) -> float:
        return 1.0

    def evaluate(self, view, idx):
        out = np.full(len(idx), DROP, dtype=np.int8)
        live = np.arange(len(idx))
        for sub in self.subs:
            if not len(live):
                break
            d = sub.evaluate(view, idx[live])
            stop = (d == NS) | (d == INS)
            out[live[stop]] = NS
            live = live[~stop]
        return out
