"""Issue 16 item 3: defaults written once. A run's defaults (``obsflow run``'s flags,
``RunRequest``, ``ClusterRun``) come from :mod:`runners.defaults`; the largest record a flow
accepts has one default (:data:`core.batch.DEFAULT_MAX_BYTES`) in the spec, the codecs, the
embedded generator and a flow without a validate step. No services."""

from __future__ import annotations

import dataclasses
import inspect

import yaml

from core.batch import DEFAULT_MAX_BYTES
from core.stats import RunStats
from pipelines import DEFAULT_SPEC
from pipelines.graph import PipelineGraph
from pipelines.loader import parse_spec
from pipelines.spec import ValidateStep
from runners import defaults
from runners.bytewax.cluster import ClusterRun
from runners.cli import parser
from runners.job import RunRequest
from schemas.codecs.avro_codec import AvroCodec
from schemas.codecs.json_codec import JsonCodec
from schemas.codecs.otlp_codec import OtlpCodec
from sources.generator import EmbeddedSource

RUN_KEYS = {
    "count": "COUNT",
    "seed": "SEED",
    "rate_per_s": "RATE_PER_S",
    "bad_fraction": "BAD_FRACTION",
    "batch_size": "BATCH_SIZE",
}


def _defaults(cls) -> dict:
    return {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}


def test_run_defaults_are_written_once():
    args = parser().parse_args(["run"])
    request, cluster = _defaults(RunRequest), _defaults(ClusterRun)
    for field, const in RUN_KEYS.items():
        value = getattr(defaults, const)
        flag = {"rate_per_s": "rate"}.get(field, field)
        assert getattr(args, flag) == request[field] == cluster[field] == value, field
    assert args.runner == request["runner"] == defaults.RUNNER


def _param_default(fn, name: str):
    return inspect.signature(fn).parameters[name].default


def test_max_bytes_has_one_default():
    assert ValidateStep(kind="validate").max_bytes == DEFAULT_MAX_BYTES
    for codec in (JsonCodec, AvroCodec, OtlpCodec):
        assert _param_default(codec.__init__, "max_bytes") == DEFAULT_MAX_BYTES, codec.__name__
    assert _param_default(EmbeddedSource.__init__, "max_bytes") == DEFAULT_MAX_BYTES


def test_a_flow_without_a_validate_step_takes_the_same_max_bytes():
    d = yaml.safe_load(DEFAULT_SPEC.read_text())
    flow = d["flows"][1]
    flow["steps"] = [s for s in flow["steps"] if s["kind"] != "validate"]
    spec = parse_spec(d)
    graph = PipelineGraph(spec, counters=RunStats())
    plan = next(c for c in graph.flows.values() if c.flow.name == flow["name"])
    assert plan.codec.max_bytes == DEFAULT_MAX_BYTES
