"""``not``: the opposite of ``not_sub_policy`` as the collector defines it — Sampled
becomes NotSampled and NotSampled becomes Sampled; every other decision passes through
unchanged (InvertSampled / InvertNotSampled only occur with ``legacy_invert_decisions``;
since v0.150.0 an inverted sub-policy returns plain decisions, which ``not`` flips)."""

from ..decision import NS, S
from .base import Policy


class Not(Policy):
    kind = "not"

    def __init__(self, name: str, sub: Policy):
        super().__init__(name)
        self.sub = sub
        self.stateful = sub.stateful
        self.needs_bytes = sub.needs_bytes

    def children(self):
        return [self.sub]

    def evaluate(self, view, idx):
        d = self.sub.evaluate(view, idx)
        out = d.copy()
        out[d == S] = NS
        out[d == NS] = S
        return out
