"""The key / default / meaning tables of the component READMEs, generated from the config
models (their defaults and ``Field(description=...)``), so the docs cannot drift from the
code: ``tests/pipelines/test_config_docs.py`` fails when a README's table differs from what this
module generates.

    python -m pipelines.config_docs          # rewrite the tables in place
    python -m pipelines.config_docs --check  # exit 1 naming each README whose table drifted

A README holds a generated table between ``<!-- BEGIN GENERATED: NAME -->`` and
``<!-- END GENERATED: NAME -->``; :data:`TABLES` says, per NAME, which models (under which
key prefix) make its rows. A nested model becomes its own rows under its key (``storage``'s
``commit`` → ``storage.commit.max_rows``); a ``dict`` of models under ``<key>.<name>``."""

from __future__ import annotations

import argparse
import json
import re
import sys
import types
import typing
from datetime import timedelta
from pathlib import Path

from pydantic import BaseModel, SecretStr
from pydantic_core import PydanticUndefined

from core.durations import format_duration
from pipelines.spec import AlertsSpec, DeadLetterSpec, DedupeStep, OutputsSpec, ProcessSpec, StorageSpec
from transforms.alerting.config import AlertRule, InhibitRule
from transforms.product.config import FunnelConfig, FunnelStep, ProductConfig
from transforms.rollup.config import DeriveRule, RollupConfig
from transforms.tail_sampling import config as tail_sampling
from transforms.tail_sampling.log_sampling import LogSamplingConfig

REPO = Path(__file__).resolve().parent.parent

#: README → generated tables in it: NAME → [(key prefix, model)]
TABLES: dict[str, dict[str, list[tuple[str, type[BaseModel]]]]] = {
    "sinks/README.md": {
        "sink-keys": [("storage", StorageSpec), ("dead_letters", DeadLetterSpec), ("outputs", OutputsSpec)],
    },
    "docs/collect.md": {
        "dedupe-keys": [("", DedupeStep)],
    },
    "docs/running-at-scale.md": {
        "process-keys": [("process", ProcessSpec)],
    },
    "transforms/rollup/README.md": {
        "rollup-keys": [("", RollupConfig)],
        "derive-keys": [("", DeriveRule)],
    },
    "transforms/product/README.md": {
        "product-keys": [("", ProductConfig)],
        "funnel-keys": [("", FunnelConfig), ("steps[]", FunnelStep)],
    },
    "transforms/tail_sampling/README.md": {
        "tail-sampling-keys": [("", tail_sampling.TailSamplingConfig)],
        "policy-keys": [
            ("latency", tail_sampling.LatencyCfg),
            ("status_code", tail_sampling.StatusCodeCfg),
            ("probabilistic", tail_sampling.ProbabilisticCfg),
            ("rate_limiting", tail_sampling.RateLimitingCfg),
            ("bytes_limiting", tail_sampling.BytesLimitingCfg),
            ("string_attribute", tail_sampling.StringAttributeCfg),
            ("numeric_attribute", tail_sampling.NumericAttributeCfg),
            ("boolean_attribute", tail_sampling.BooleanAttributeCfg),
            ("span_count", tail_sampling.SpanCountCfg),
            ("trace_state", tail_sampling.TraceStateCfg),
            ("and", tail_sampling.AndCfg),
            ("not", tail_sampling.NotCfg),
            ("drop", tail_sampling.DropCfg),
            ("composite", tail_sampling.CompositeCfg),
            ("composite.rate_allocation[]", tail_sampling.RateAllocation),
        ],
        "log-sampling-keys": [("", LogSamplingConfig)],
    },
    "transforms/alerting/README.md": {
        "alerting-keys": [("", AlertsSpec), ("inhibit_rules[]", InhibitRule)],
        "rule-keys": [("", AlertRule)],
    },
}

_BEGIN = "<!-- BEGIN GENERATED: {name} (python -m pipelines.config_docs; edit the models, not this table) -->"
_END = "<!-- END GENERATED: {name} -->"


def _models_in(annotation) -> tuple[type[BaseModel] | None, bool]:
    """``(model, keyed)``: the config model a field holds (``keyed``: as the values of a
    dict), or ``(None, False)`` for a plain value."""
    origin = typing.get_origin(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False
    if origin is dict:
        _, value = typing.get_args(annotation)
        if isinstance(value, type) and issubclass(value, BaseModel):
            return value, True
    if origin in (typing.Union, types.UnionType):
        models = [a for a in typing.get_args(annotation) if isinstance(a, type) and issubclass(a, BaseModel)]
        if len(models) == 1:
            return models[0], False
    return None, False


def show_default(field) -> str:
    """A field's default as a spec would write it (``5s``, ``null``, ``{}``), in backticks;
    ``required`` when there is none."""
    if field.default_factory is not None:
        value = field.default_factory()
    elif field.default is PydanticUndefined:
        return "required"
    else:
        value = field.default
    if isinstance(value, BaseModel):
        return "see below"
    if isinstance(value, timedelta):
        text = format_duration(value)
    elif value is None:
        text = "null"
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, SecretStr):
        text = "(secret)"
    elif isinstance(value, list) and value and all(isinstance(v, BaseModel) for v in value):
        text = f"[{len(value)} × {type(value[0]).__name__}]"
    elif isinstance(value, (dict, list)):
        text = json.dumps(_plain(value))
    elif value == "":
        text = '""'
    else:
        text = str(value)
    return f"`{text}`"


def _plain(value):
    """``value`` with durations as their text, for JSON."""
    if isinstance(value, timedelta):
        return format_duration(value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def rows(prefix: str, model: type[BaseModel]) -> list[tuple[str, str, str]]:
    """``(key, default, meaning)`` of every key of ``model`` under ``prefix``, nested models
    expanded in field order. Guarantees: every field appears (its own row or its model's rows)."""
    out = []
    for name, field in model.model_fields.items():
        key = f"{prefix}.{field.alias or name}" if prefix else (field.alias or name)
        sub, keyed = _models_in(field.annotation)
        if sub is not None and keyed:
            out += rows(f"{key}.<name>", sub)
            continue
        if sub is not None and isinstance(field.default, BaseModel):
            out += rows(key, sub)
            continue
        meaning = " ".join((field.description or "").split()).replace("``", "`").replace("|", "\\|")
        out.append((f"`{key}`", show_default(field), meaning))
        if sub is not None:  # optional nested model (e.g. archive): its keys follow
            out += rows(key, sub)
    return out


def table(sections: list[tuple[str, type[BaseModel]]]) -> str:
    lines = ["| key | default | meaning |", "|---|---|---|"]
    for prefix, model in sections:
        lines += [f"| {k} | {d} | {m} |" for k, d, m in rows(prefix, model)]
    return "\n".join(lines)


def render(text: str, tables: dict[str, list[tuple[str, type[BaseModel]]]], where: str) -> str:
    """``text`` with each generated table replaced by what the models say now; a
    ``ValueError`` naming the README when a table's markers are missing."""
    for name, sections in tables.items():
        begin, end = _BEGIN.format(name=name), _END.format(name=name)
        pattern = re.compile(re.escape(begin) + r"\n.*?" + re.escape(end), re.S)
        if not pattern.search(text):
            raise ValueError(f"{where}: no generated table {name!r} (expected the line {begin!r} and, later, {end!r})")
        text = pattern.sub(lambda _m: f"{begin}\n{table(sections)}\n{end}", text, count=1)
    return text


def drifted() -> list[str]:
    """The READMEs whose generated tables differ from the models' (empty: none)."""
    out = []
    for path, tables in TABLES.items():
        current = (REPO / path).read_text()
        if render(current, tables, path) != current:
            out.append(path)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pipelines.config_docs", description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="only report READMEs whose tables drifted (exit 1)")
    args = p.parse_args(argv)
    if args.check:
        stale = drifted()
        for path in stale:
            print(f"{path}: generated table out of date; run python -m pipelines.config_docs", file=sys.stderr)
        return 1 if stale else 0
    for path, tables in TABLES.items():
        f = REPO / path
        f.write_text(render(f.read_text(), tables, path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
