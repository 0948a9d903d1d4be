"""``string_attribute``: ``key`` whose value is one of ``values`` (exact), or — with
``enabled_regex_matching`` — matches any of the regular expressions (RE2 syntax, as the
collector's Go regexp, unanchored like Go's ``MatchString``). Empty span values never
match (as the collector). ``invert_match`` as described in ``_attributes.py``."""

import pyarrow as pa
import pyarrow.compute as pc

from ._attributes import AttributePolicy, as_bool


class StringAttribute(AttributePolicy):
    kind = "string_attribute"
    skip_empty_span_values = True

    def __init__(self, name: str, cfg):
        super().__init__(name, cfg.key, cfg.invert_match)
        self.regex = cfg.enabled_regex_matching
        if self.regex:
            self.pattern = "|".join(f"(?:{v})" for v in cfg.values)
            try:
                pc.match_substring_regex(pa.array([""], pa.string()), pattern=self.pattern)
            except pa.ArrowInvalid as e:
                raise ValueError(f"policy {name!r}: values are not RE2 regular expressions: {e}") from None
        else:
            self.values = pa.array(sorted({v for v in cfg.values if v}), pa.string())

    def match(self, values):
        values = values.cast(pa.string())
        if self.regex:
            return as_bool(pc.match_substring_regex(values, pattern=self.pattern))
        return as_bool(pc.is_in(values, value_set=self.values))
