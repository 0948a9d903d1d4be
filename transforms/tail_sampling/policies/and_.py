"""``and``: Sampled when every ``and_sub_policy`` samples; NotSampled as soon as one
returns NotSampled or InvertNotSampled (later sub-policies are not evaluated for that
trace, which matters for stateful ones). Its keep probability is the product of its
sub-policies' (an ``and`` holding ``probabilistic`` at 1% keeps with adjusted count 100)."""

import numpy as np

from ..decision import INS, NS, S
from .base import Policy


class And(Policy):
    kind = "and"

    def __init__(self, name: str, subs: list[Policy]):
        super().__init__(name)
        self.subs = subs
        self.stateful = any(p.stateful for p in subs)
        self.needs_bytes = any(p.needs_bytes for p in subs)

    def children(self):
        return self.subs

    @property
    def probability(self) -> float:
        p = 1.0
        for s in self.subs:
            p *= s.probability
        return p

    def evaluate(self, view, idx):
        out = np.full(len(idx), S, dtype=np.int8)
        live = np.arange(len(idx))
        for sub in self.subs:
            if not len(live):
                break
            d = sub.evaluate(view, idx[live])
            stop = (d == NS) | (d == INS)
            out[live[stop]] = NS
            live = live[~stop]
        return out
