"""``boolean_attribute``: ``key`` holding the boolean ``value``. As the Collector
(v0.161.0), values are read with ``Value.Bool()``: a present value that is not a boolean
(the string ``"true"`` included) reads as ``false``, so it matches ``value: false``.
``invert_match`` as described in ``_attributes.py``."""

from ._attributes import AttributePolicy, Values


class BooleanAttribute(AttributePolicy):
    kind = "boolean_attribute"

    def __init__(self, name: str, cfg):
        super().__init__(name, cfg.key, cfg.invert_match)
        self.value = bool(cfg.value)

    def match_span(self, values: Values):
        b = values.as_bool()
        return b if self.value else ~b
