"""``always_sample``: every trace is Sampled."""

from ..decision import S, filled
from .base import Policy


class AlwaysSample(Policy):
    kind = "always_sample"

    def __init__(self, name: str, cfg=None):
        super().__init__(name)

    def evaluate_all(self, view):
        return filled(view.n, S)
