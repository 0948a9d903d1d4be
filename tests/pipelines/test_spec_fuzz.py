"""Spec fuzzer (issue 19 items 12 and 15): mutate every key path of the default spec
(pipelines/observability.yaml) with type confusion, huge / negative / infinite / NaN
numbers, bad durations, empty lists and deletion, and check that each mutated spec either

* fails at load with a :class:`SpecError` whose every problem names a key path, or
* loads, and its graph and stages build, process a small batch of every source and flush
  (the end of input) without an exception.

The CI run is bounded (``OBSFLOW_SPEC_FUZZ_EXAMPLES``, default 40 hypothesis examples,
derandomized so it is repeatable, well under a minute); ``make fuzz`` runs a long random
campaign and the exhaustive sweep of every key path with every mutation (marker ``fuzz``)."""

from __future__ import annotations

import copy
import math
import os
import random
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.stats import RunStats
from pipelines.loader import SpecError, parse_spec
from tests.helpers import default_data

EXAMPLES = int(os.environ.get("OBSFLOW_SPEC_FUZZ_EXAMPLES", "40"))
LONG = os.environ.get("OBSFLOW_SPEC_FUZZ_LONG") == "1"

DELETE = object()
EMPTY = object()
SIBLING = object()
DUPLICATE = object()

#: values put at a key path: type confusion, extremes, bad durations, odd text and containers
VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    1,
    -1,
    2**31,
    2**63,
    2**70,
    -(2**70),
    0.5,
    -0.5,
    1e308,
    math.inf,
    -math.inf,
    math.nan,
    "",
    "x",
    "0",
    "60",
    "0s",
    "1ms",
    "1m30s",
    "0.0001ms",
    "36500d",
    "99999999999d",
    "-5m",
    "1e3s",
    "\x00",
    "\u001f",
    "é" * 3,
    "a" * 300,
    [],
    [None],
    [5],
    ["x"],
    [[]],
    {},
    {"x": 1},
    {"kind": "validate"},
    [[[[[[[[[[1]]]]]]]]]],
    "otlp_proto",
    "metric",
    "events",  # names that are valid somewhere else in a spec
]
OPS: list[Any] = [DELETE, EMPTY, SIBLING, DUPLICATE, *VALUES]


def key_paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key path of ``node`` (mappings and lists, leaves and containers)."""
    out = []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for k, v in items:
        out.append(prefix + (k,))
        out += key_paths(v, prefix + (k,))
    return out


BASE = default_data()
PATHS = key_paths(BASE)


def _get(node: Any, path: tuple) -> Any:
    for k in path:
        node = node[k]
    return node


LEAF_VALUES = [_get(BASE, p) for p in PATHS if not isinstance(_get(BASE, p), (dict, list))]


def mutate(data: dict, path: tuple, op: Any, rng: random.Random) -> bool:
    """Apply ``op`` at ``path`` of ``data`` in place (a value may add a missing mapping
    key); False when the path no longer exists."""
    try:
        parent = _get(data, path[:-1])
        key = path[-1]
        current = parent.get(key) if isinstance(parent, dict) and key not in parent and op in VALUES else parent[key]
    except (KeyError, IndexError, TypeError):
        return False
    if op is DELETE:
        del parent[key]
    elif op is EMPTY:
        parent[key] = [] if isinstance(current, list) else {} if isinstance(current, dict) else ""
    elif op is SIBLING:  # a value of another key: right type for some key, wrong for this one
        parent[key] = copy.deepcopy(rng.choice(LEAF_VALUES))
    elif op is DUPLICATE:
        if isinstance(parent, list):
            parent.insert(key, copy.deepcopy(current))
        elif isinstance(current, list) and current:
            current.append(copy.deepcopy(current[0]))
        else:
            return False
    else:
        parent[key] = copy.deepcopy(op)
    return True


def exercise(spec) -> None:
    """Build the graph and the stages of ``spec``, process one small raw batch of every
    source partition, feed the stages as the Bytewax flow wires them (stage inputs to their
    shard; metrics and product outputs to the global stage), round-trip a snapshot, and
    flush every stage as the end of input does."""
    from pipelines.graph import PipelineGraph, plan_stages
    from pipelines.stages import GLOBAL, METRICS, PRODUCT, make_stage
    from runners.job import RunRequest, embedded_source

    graph = PipelineGraph(spec, counters=RunStats())
    defs = {d.name: d for d in plan_stages(spec)}
    globl = make_stage(defs[GLOBAL], 0) if GLOBAL in defs else None
    stages: dict = {}

    def to_global(out) -> None:
        if out is not None and globl is not None and out.stage in (METRICS, PRODUCT):
            globl.process(out)

    src = embedded_source(RunRequest(spec=spec, runner="bytewax", count=24))
    for part in src.partitions():
        for raw in src.batches(part, 0):
            fo = graph.process(raw)
            for si in fo.stage_inputs:
                stage = stages.get((si.stage, si.shard))
                if stage is None:
                    stage = stages[(si.stage, si.shard)] = make_stage(defs[si.stage], si.shard)
                to_global(stage.process(si))
            break  # one batch per partition
    for (name, shard), stage in sorted(stages.items()):
        stage = make_stage(defs[name], shard, stage.snapshot())
        to_global(stage.flush())
    if globl is not None:
        globl.flush()


def check(data: dict) -> str:
    """Load ``data``; a spec error must name a key path for every problem; a spec that
    loads must run a small batch. Returns "error" or "ran"."""
    try:
        spec = parse_spec(data)
    except SpecError as e:
        assert e.problems, e
        for path, msg in e.problems:
            assert path, f"a problem without a key path: {msg!r}\n{e}"
            assert msg and "Traceback" not in msg, e
        return "error"
    env = spec.privacy.pseudonym_key_env  # the key lives in the environment, not in the spec
    saved = os.environ.get(env)
    os.environ[env] = "spec-fuzz-test-key-0123456789"
    try:
        exercise(spec)
    finally:
        if saved is None:
            del os.environ[env]
        else:
            os.environ[env] = saved
    return "ran"


_GEO: dict = {}


@pytest.fixture(autouse=True)
def _pseudonym_key_and_one_geo_database(monkeypatch):
    """The scrub step's key from the environment; and one real GeoLookup per cache size
    for the whole module (building it takes 0.6 s, most of a graph's build)."""
    import transforms.enrich

    real = transforms.enrich.GeoLookup
    monkeypatch.setenv("OBSFLOW_PSEUDONYM_KEY", "spec-fuzz-test-key-0123456789")
    monkeypatch.setattr(
        transforms.enrich, "GeoLookup", lambda size: _GEO.get(size) or _GEO.setdefault(size, real(size))
    )


def test_every_key_path_is_enumerated():
    assert len(PATHS) > 150
    assert ("flows", 2, "steps", 2, "sampler", "policies", 1, "latency", "threshold_ms") in PATHS
    assert ("alerts", "inhibit_rules", 0, "equal", 1) in PATHS


def test_the_default_spec_runs_through_the_harness():
    assert check(default_data()) == "ran"


@pytest.mark.parametrize(
    "path,op",
    [
        (("flows", 3, "steps", 1, "derive", 1, "value"), "x"),
        (("flows", 3, "steps", 1, "derive", 0, "filter", "level"), []),
        (("flows",), []),
        (("sources", 0, "codec"), "otlp_proto"),
        (("flows", 2, "steps", 2, "red", "window"), "0s"),
        (("flows", 0, "steps", 3, "config", "report_resolution"), "0.0001ms"),
        (("flows", 2, "steps", 2, "shards"), 2**70),
        (("sources", 1, "partitions"), 2**70),
        (("flows", 0, "steps", 0, "event_types"), []),
        (("alerts", "route", "routes", 0, "matchers"), [None]),
        (("alerts", "inhibit_rules", 0, "target_matchers"), 5),
    ],
)
def test_issue_reproducers_fail_at_load(path, op):
    d = default_data()
    assert mutate(d, path, op, random.Random(0))
    assert check(d) == "error"


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    derandomize=not LONG,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    st.lists(st.tuples(st.sampled_from(PATHS), st.sampled_from(range(len(OPS)))), min_size=1, max_size=3), st.randoms()
)
def test_mutated_specs_fail_at_load_or_run(mutations, rng):
    d = default_data()
    for path, op in mutations:
        mutate(d, path, OPS[op], rng)
    check(d)


@pytest.mark.fuzz
@pytest.mark.skipif(not LONG, reason="exhaustive sweep of every key path with every mutation: make fuzz")
def test_every_key_path_with_every_mutation():
    failures = []
    for path in PATHS:
        for i, op in enumerate(OPS):
            d = default_data()
            if mutate(d, path, op, random.Random(i)):
                try:
                    check(d)
                except Exception as e:  # noqa: BLE001 - collected, reported together below
                    failures.append(f"{'.'.join(map(str, path))} <- {_name(op)}: {type(e).__name__}: {str(e)[:300]}")
    assert not failures, f"{len(failures)} mutated specs neither failed at load nor ran:\n" + "\n".join(failures)


def _name(op: Any) -> str:
    names = {id(DELETE): "delete", id(EMPTY): "empty", id(SIBLING): "a sibling's value", id(DUPLICATE): "duplicate"}
    return names.get(id(op), repr(op)[:40])
