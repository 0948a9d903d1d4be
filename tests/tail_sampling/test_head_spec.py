"""The tail_sample step's head_sampling option: spec validation, the salt it inherits from
the probabilistic policy, and the trace stage deciding head_spans inputs on arrival."""

from fractions import Fraction

import pytest
import yaml

from pipelines import DEFAULT_SPEC
from pipelines.graph import head_plan, plan_stages
from pipelines.loader import SpecError, parse_spec
from pipelines.stages import TRACE, StageInput, make_stage
from tests.tail_sampling.helpers import table, tid, trace

pytestmark = pytest.mark.traces


def spec_with(head: dict, salt: str = ""):
    d = yaml.safe_load(DEFAULT_SPEC.read_text())
    for f in d["flows"]:
        for st in f["steps"]:
            if st["kind"] == "tail_sample":
                st["sampler"]["policies"] = [
                    {"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}},
                    {
                        "name": "baseline",
                        "type": "probabilistic",
                        "probabilistic": {"sampling_percentage": 25, "hash_salt": salt},
                    },
                ]
                st["head_sampling"] = head
    return parse_spec(d)


def fnv(data: bytes, seed: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in seed + data:
        h = ((h ^ b) * 0x100000001B3) % (1 << 64)
    return h


def test_head_sampling_sources_must_be_span_sources():
    with pytest.raises(SpecError) as e:
        spec_with({"sources": ["logs"]})
    assert e.value.problems == [
        ("flows[2].steps[2].head_sampling.sources[0]", "expected one of the span sources ['spans'], got 'logs'")
    ]


def test_head_sampling_inherits_the_probabilistic_policy_salt():
    assert head_plan(spec_with({"sources": ["spans"], "sampling_percentage": 30}, salt="pepper")) == (
        30.0,
        "pepper",
        "head_probabilistic",
    )
    assert head_plan(spec_with({"sources": ["spans"], "hash_salt": "own", "policy_name": "edge"}, salt="pepper")) == (
        10.0,
        "own",
        "edge",
    )
    trace_def = next(d for d in plan_stages(spec_with({"sources": ["spans"]}, salt="pepper")) if d.name == TRACE)
    assert trace_def.options == {"head": (10.0, "pepper", "head_probabilistic")}
    assert head_plan(parse_spec(yaml.safe_load(DEFAULT_SPEC.read_text()))) is None


def test_trace_stage_decides_head_spans_on_arrival_with_the_salt():
    spec = spec_with({"sources": ["spans"], "sampling_percentage": 40}, salt="pepper")
    defn = next(d for d in plan_stages(spec) if d.name == TRACE)
    stage = make_stage(defn, 0)
    rows = [r for k in range(1, 201) for r in trace(k, n=2)]
    out = stage.process(StageInput(TRACE, 0, "head_spans", table(rows), "spans", 0, 0, 400, 1000))
    want = [
        k for k in range(1, 201) if fnv(bytes.fromhex(tid(k)), b"pepper") <= int(Fraction(40 / 100) * ((1 << 64) - 1))
    ]
    got = out.rows["spans"]
    assert got.column("trace_id").to_pylist() == [tid(k) for k in want for _ in range(2)]
    assert set(got.column("sampling_policy").to_pylist()) == {"head_probabilistic"} and set(
        got.column("adjusted_count").to_pylist()
    ) == {2.5}
    assert "traces" not in out.rows and stage.sampler.buffered_spans == 0  # past the tail sampler, nothing buffered
    assert out.counters == {"dropped_spans": {"head_not_sampled": 2 * (200 - len(want))}}
    assert 40 < len(want) < 120


def test_head_spans_without_a_trace_id_are_counted_not_kept():
    spec = spec_with({"sources": ["spans"], "sampling_percentage": 100})
    stage = make_stage(next(d for d in plan_stages(spec) if d.name == TRACE), 0)
    rows = trace(1, n=2) + [dict(trace(2, n=1)[0], trace_id=None)]
    out = stage.process(StageInput(TRACE, 0, "head_spans", table(rows), "spans", 0, 0, 3, 1000))
    assert out.rows["spans"].column("trace_id").to_pylist() == [tid(1), tid(1)]
    assert set(out.rows["spans"].column("adjusted_count").to_pylist()) == {1.0}
    assert out.counters == {"dropped_spans": {"no_trace_id": 1}}
