"""``string_attribute``: ``key`` holding a *string* value that is one of ``values``
(exact), or — with ``enabled_regex_matching`` — matches any of the regular expressions
(RE2 syntax, as the Collector's Go regexp, unanchored like Go's ``MatchString``).

As the Collector (v0.161.0), which reads values with ``Value.Str()``: a span value that
is not a string, or the empty string, never matches; a resource value that is not a
string reads as ``""`` (which only a regex such as ``^$`` or ``.*`` matches).
``invert_match`` as described in ``_attributes.py``."""

import pyarrow as pa
import pyarrow.compute as pc

from ._attributes import AttributePolicy, Values, as_bool


class StringAttribute(AttributePolicy):
    kind = "string_attribute"

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

    def _matches(self, text) -> object:
        if self.regex:
            return as_bool(pc.match_substring_regex(text, pattern=self.pattern))
        return as_bool(pc.is_in(text, value_set=self.values))

    def match_span(self, values: Values):
        strings = values.is_type(None) & as_bool(pc.not_equal(values.text, ""))
        return strings & self._matches(values.text)

    def match_resource(self, values: Values):
        return self._matches(values.as_str())
