"""The policy interface. A policy decides a batch of traces at once:
``evaluate(view, idx)`` returns one :class:`~..decision.Decision` (int8) per position in
``idx`` (positions into the view, in decision order). Stateless policies compute every
trace of the view vectorized; stateful ones (rate and byte limiters, composite) walk
``idx`` in order, so their state evolves exactly as if traces were decided one by one."""

from __future__ import annotations

import numpy as np

from ..view import TraceView


class Policy:
    kind = ""
    stateful = False
    needs_bytes = False

    def __init__(self, name: str):
        self.name = name

    #: probability with which this policy keeps a trace it samples (for adjusted counts)
    @property
    def probability(self) -> float:
        return 1.0

    def evaluate(self, view: TraceView, idx: np.ndarray) -> np.ndarray:
        key = ("policy", id(self))
        full = view._cache.get(key)
        if full is None:
            full = view._cache[key] = self.evaluate_all(view)
        return full[idx]

    def evaluate_all(self, view: TraceView) -> np.ndarray:  # stateless policies
        raise NotImplementedError

    def children(self) -> list[Policy]:
        return []

    # state (stateful policies override)
    def get_state(self):
        return None

    def set_state(self, state) -> None:
        pass

    def walk(self):
        yield self
        for c in self.children():
            yield from c.walk()
