"""``boolean_attribute``: ``key`` whose value is the boolean ``value``. Values are text:
``true`` / ``false`` (any case); anything else never matches."""

import pyarrow as pa
import pyarrow.compute as pc

from ._attributes import AttributePolicy, as_bool


class BooleanAttribute(AttributePolicy):
    kind = "boolean_attribute"

    def __init__(self, name: str, cfg):
        super().__init__(name, cfg.key, cfg.invert_match)
        self.text = "true" if cfg.value else "false"

    def match(self, values):
        return as_bool(pc.equal(pc.utf8_lower(values.cast(pa.string())), self.text))
