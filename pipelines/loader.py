"""Load a pipeline spec from YAML into :class:`pipelines.spec.PipelineSpec`.

A wrong spec fails here, before anything starts, with one line per problem of the form
``flows[0].steps[1].max_future: expected a duration like "30s", "5m", "7d", got 'soon'``."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError

from .spec import PipelineSpec, SpecReferenceError

_STEP_KINDS = {"validate", "scrub", "enrich", "tail_sample", "log_sample"}

_EXPECTED = {
    "float_parsing": "a number", "float_type": "a number", "int_parsing": "an integer", "int_type": "an integer",
    "int_from_float": "an integer", "string_type": "a string", "bool_parsing": "a boolean", "bool_type": "a boolean",
    "dict_type": "a mapping", "list_type": "a list", "model_type": "a mapping", "model_attributes_type": "a mapping",
}


class SpecError(ValueError):
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
        elif prev is not None and isinstance(prev, int) and part in _STEP_KINDS:
            pass  # the discriminator tag pydantic inserts for a step's kind
        else:
            out += ("." if out else "") + str(part)
        prev = part
    return out


def _message(err: dict) -> str:
    typ = err["type"]
    got = err.get("input")
    shown = f"{got!r}" if not isinstance(got, str) else f'"{got}"'
    if typ == "missing":
        return "required key is missing"
    if typ == "extra_forbidden":
        return "unknown key"
    if typ in _EXPECTED:
        return f"expected {_EXPECTED[typ]}, got {shown}"
    if typ == "literal_error":
        return f"expected {err['ctx']['expected']}, got {shown}"
    if typ == "union_tag_invalid":
        return f"expected kind to be one of {err['ctx']['expected_tags']}, got {err['ctx']['tag']!r}"
    if typ == "union_tag_not_found":
        return f"a step needs a 'kind' key (one of {sorted(_STEP_KINDS)})"
    if typ in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        bound = next(iter(err["ctx"].values()))
        word = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}[typ]
        return f"expected a number {word} {bound}, got {shown}"
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    return msg


def parse_spec(data: dict, source: str = "<spec>") -> PipelineSpec:
    """Validate a spec given as a mapping; raise :class:`SpecError` listing every problem."""
    if not isinstance(data, dict):
        raise SpecError(source, [("", f"expected a mapping at the top level, got {type(data).__name__}")])
    try:
        return PipelineSpec.model_validate(data)
    except ValidationError as e:
        problems = []
        for err in e.errors():
            ctx_err = (err.get("ctx") or {}).get("error")
            if isinstance(ctx_err, SpecReferenceError):
                problems.append((ctx_err.path, f"expected {ctx_err.expected}, got {ctx_err.got!r}"))
            else:
                problems.append((_path(err["loc"]), _message(err)))
        raise SpecError(source, problems) from None


def load_spec(path: str | Path) -> PipelineSpec:
    """Read and validate the YAML spec at ``path``."""
    path = Path(path)
    if not path.exists():
        raise SpecError(str(path), [("", "file not found")])
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise SpecError(str(path), [("", f"not valid YAML: {e}")]) from None
    return parse_spec(data, str(path))
