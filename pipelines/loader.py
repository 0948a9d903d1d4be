"""Load a pipeline spec from YAML into :class:`pipelines.spec.PipelineSpec`.

A wrong spec fails here, before anything starts, with one line per problem of the form
``flows[0].steps[1].max_future: expected a duration like "30s", "5m", "7d", got 'soon'``."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from core.durations import format_duration, parse_duration
from core.errors import ConfigurationError
from transforms.tail_sampling.config import PolicyCfg

from .spec import PipelineSpec, SpecReferenceError, Step


def _tags(union: Any, field: str) -> frozenset[str]:
    """The discriminator values of an ``Annotated[Union[...], Field(discriminator=field)]``."""
    return frozenset(get_args(m.model_fields[field].annotation)[0] for m in get_args(get_args(union)[0]))


#: every step kind, from the step models' ``kind`` literals
_STEP_KINDS = _tags(Step, "kind")
#: every tag pydantic inserts into an error's location after a list index (step kinds, policy types)
_TAGS = _STEP_KINDS | _tags(PolicyCfg, "type")
#: deepest nesting of mappings and lists a spec may have
MAX_DEPTH = 32
#: most digits an integer in a spec may have
MAX_INT_DIGITS = 30
#: largest spec file read
MAX_SPEC_BYTES = 4 << 20

_EXPECTED = {
    "float_parsing": "a number",
    "float_type": "a number",
    "int_parsing": "an integer",
    "int_type": "an integer",
    "int_from_float": "an integer",
    "string_type": "a string",
    "bool_parsing": "a boolean",
    "bool_type": "a boolean",
    "dict_type": "a mapping",
    "list_type": "a list",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
}


class SpecError(ConfigurationError, ValueError):
    """A spec that does not load. ``problems`` holds (key path, message) pairs."""

    def __init__(self, source: str, problems: list[tuple[str, str]]):
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  {p}: {m}" if p else f"  {m}" for p, m in problems)
        super().__init__(f"invalid pipeline spec {source}:\n{lines}")


def _path(loc: tuple) -> str:
    out = ""
    prev = None
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif prev is not None and isinstance(prev, int) and part in _TAGS:
            pass  # the discriminator tag pydantic inserts for a step's kind or a policy's type
        else:
            out += ("." if out else "") + str(part)
        prev = part
    return out


def _message(err: ErrorDetails) -> str:
    typ = err["type"]
    got = err.get("input")
    shown = _shown(got)
    if typ == "missing":
        return "required key is missing"
    if typ == "extra_forbidden":
        return "unknown key"
    if typ in _EXPECTED:
        return f"expected {_EXPECTED[typ]}, got {shown}"
    if typ == "literal_error":
        return f"expected {err['ctx']['expected']}, got {shown}"
    if typ == "union_tag_invalid":
        key = err["ctx"]["discriminator"].strip("'")
        return f"expected {key} to be one of {err['ctx']['expected_tags']}, got {err['ctx']['tag']!r}"
    if typ == "union_tag_not_found":
        key = err["ctx"]["discriminator"].strip("'")
        if key == "kind":
            return f"a step needs a 'kind' key (one of {sorted(_STEP_KINDS)})"
        return f"a policy needs a '{key}' key (one of {sorted(_TAGS - _STEP_KINDS)})"
    if typ in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        bound = next(iter(err["ctx"].values()))
        word = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}[typ]
        as_duration = _duration_bound(bound)
        if as_duration is not None:
            got_d = _as_duration(got)
            return f"expected a duration {word} {format_duration(as_duration)}, got {format_duration(got_d) if got_d is not None else shown}"
        if isinstance(bound, float) and bound.is_integer():
            bound = int(bound)
        return f"expected a number {word} {bound}, got {shown}"
    if typ in ("too_short", "too_long", "string_too_short", "string_too_long"):
        n = err["ctx"].get("min_length", err["ctx"].get("max_length"))
        word = "at least" if typ.endswith("too_short") else "at most"
        if isinstance(got, str):  # text (a secret too): its length only
            return f"expected text of {word} {n} characters, got {len(got)} characters"
        return f"expected {word} {n} item{'s' if n != 1 else ''}, got {shown}"
    if typ == "string_pattern_mismatch":
        return f"expected text matching {err['ctx']['pattern']}, got {shown}"
    if typ == "finite_number":
        return f"expected a finite number, got {shown}"
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    return msg


_HUMAN_UNITS = {
    "day": "days",
    "hour": "hours",
    "minute": "minutes",
    "second": "seconds",
    "millisecond": "milliseconds",
    "microsecond": "microseconds",
}


def _duration_bound(bound: Any) -> timedelta | None:
    """A timedelta bound as pydantic reports it (a timedelta, its repr, or text such as
    ``"1 minute and 30 seconds"``); None when ``bound`` is not a duration."""
    if isinstance(bound, timedelta):
        return bound
    if not isinstance(bound, str):
        return None
    m = re.fullmatch(r"datetime\.timedelta\((.*)\)", bound)
    if m:
        return timedelta(**{k: int(v) for k, v in re.findall(r"(\w+)=(-?\d+)", m.group(1))})
    parts = re.findall(r"(\d+) (day|hour|minute|second|millisecond|microsecond)s?", bound)
    if parts and re.fullmatch(r"\d+ \w+( and \d+ \w+)*", bound):
        return timedelta(**{_HUMAN_UNITS[u]: int(n) for n, u in parts})
    return None


def _as_duration(got: Any) -> timedelta | None:
    """``got`` as a duration when it is one (or parses as one)."""
    if isinstance(got, timedelta):
        return got
    try:
        return parse_duration(got) if isinstance(got, str) else None
    except ValueError:
        return None


def _shown(got: Any, quote: bool = True) -> str:
    """A value as a problem line shows it: text in double quotes (``quote``) or as its repr,
    durations as written, at most 80 characters."""
    if isinstance(got, timedelta):
        return format_duration(got)
    text = f'"{got}"' if isinstance(got, str) and quote else repr(got)
    return text if len(text) <= 80 else text[:77] + "..."


def _screen(data: Any) -> list[tuple[str, str]]:
    """Problems pydantic cannot name well: nesting deeper than ``MAX_DEPTH``, integers of
    more than ``MAX_INT_DIGITS`` digits, non-text mapping keys. Iterative, so any depth is safe."""
    problems: list[tuple[str, str]] = []
    stack: list[tuple[str, Any, int]] = [("", data, 0)]
    while stack and len(problems) < 20:
        path, v, depth = stack.pop()
        if isinstance(v, (dict, list)) and depth >= MAX_DEPTH:
            problems.append((path, f"expected at most {MAX_DEPTH} levels of nesting"))
        elif isinstance(v, dict):
            for k, x in v.items():
                if not isinstance(k, str):
                    problems.append((path, f"expected text keys, got the key {_shown(k)}"))
                else:
                    stack.append((f"{path}.{k}" if path else k, x, depth + 1))
        elif isinstance(v, list):
            stack.extend((f"{path}[{i}]", x, depth + 1) for i, x in enumerate(v))
        elif isinstance(v, _HugeInt):
            problems.append((path, f"expected an integer of at most {MAX_INT_DIGITS} digits, got one of {v.digits}"))
    return problems


def parse_spec(data: dict, source: str = "<spec>") -> PipelineSpec:
    """Validate a spec given as a mapping; raise :class:`SpecError` listing every problem.

    Guarantees: a spec either validates or raises ``SpecError`` (never another exception)."""
    if not isinstance(data, dict):
        raise SpecError(source, [("", f"expected a mapping at the top level, got {type(data).__name__}")])
    screened = _screen(data)
    if screened:
        raise SpecError(source, sorted(screened))
    try:
        return PipelineSpec.model_validate(data)
    except ValidationError as e:
        problems = []
        for err in e.errors():
            ctx_err = (err.get("ctx") or {}).get("error")
            if isinstance(ctx_err, SpecReferenceError):
                problems.append((ctx_err.path, f"expected {ctx_err.expected}, got {_shown(ctx_err.got, quote=False)}"))
            else:
                problems.append((_path(err["loc"]), _message(err)))
        raise SpecError(source, problems) from None
    except SpecReferenceError as e:
        raise SpecError(source, [(e.path, f"expected {e.expected}, got {_shown(e.got, quote=False)}")]) from None


class _HugeInt:
    """Stands for an integer literal too long to be a count, so the screen can name its key."""

    def __init__(self, digits: int):
        self.digits = digits

    def __repr__(self) -> str:
        return f"<integer of {self.digits} digits>"


class _Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that reads over-long integers as :class:`_HugeInt`."""

    def construct_yaml_int(self, node):
        text = str(node.value).replace("_", "").lstrip("+-")
        if len(text) > MAX_INT_DIGITS:
            return _HugeInt(len(text))
        return super().construct_yaml_int(node)


_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_yaml_int)


def load_spec(path: str | Path) -> PipelineSpec:
    """Read and validate the YAML spec at ``path``.

    Guarantees: returns a valid spec or raises :class:`SpecError` (a missing file, a
    directory, unreadable or non-UTF-8 bytes, YAML that does not parse or nests too deep
    included); no other exception escapes for any file content."""
    path = Path(path)
    if not path.exists():
        raise SpecError(str(path), [("", "file not found")])
    if path.is_dir():
        raise SpecError(str(path), [("", "expected a YAML file, got a directory")])
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_SPEC_BYTES + 1)
    except OSError as e:
        raise SpecError(str(path), [("", f"cannot read the file: {e.strerror or e}")]) from None
    if len(raw) > MAX_SPEC_BYTES:
        raise SpecError(str(path), [("", f"expected a spec of at most {MAX_SPEC_BYTES} bytes")])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SpecError(
            str(path), [("", f"expected UTF-8 text, got byte 0x{raw[e.start]:02x} at offset {e.start}")]
        ) from None
    return parse_spec(_parse_yaml(text, str(path)), str(path))


def _parse_yaml(text: str, source: str) -> Any:
    """The YAML document in ``text``; ``SpecError`` for anything that does not parse."""
    try:
        return yaml.load(text, Loader=_Loader)  # a SafeLoader subclass
    except yaml.YAMLError as e:
        raise SpecError(source, [("", f"not valid YAML: {e}")]) from None
    except RecursionError:
        nested = f"expected at most {MAX_DEPTH} levels of nesting, got YAML nested deeper than Python can read"
        raise SpecError(source, [("", nested)]) from None
    except (ValueError, TypeError, OverflowError) as e:  # a scalar the YAML constructors cannot build
        raise SpecError(source, [("", f"not valid YAML: {e}")]) from None
