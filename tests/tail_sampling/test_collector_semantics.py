"""The OpenTelemetry Collector contrib tailsamplingprocessor v0.161.0's semantics, by
default (issue 12 item 4), and the options that keep our earlier behaviour on purpose.
Each case is one the issue found differing from the Collector."""

import pytest

from tests.tail_sampling.helpers import (
    decide,
    kept_numbers,
    sampler,
    span,
    table,
    trace,
)
from transforms.tail_sampling.config import ConfigError, load_config

pytestmark = pytest.mark.traces

ALWAYS = {"name": "all", "type": "always_sample"}
ERR = {"name": "err", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}}
NOT_FREE = {
    "name": "not-free",
    "type": "string_attribute",
    "string_attribute": {"key": "tier", "values": ["free"], "invert_match": True},
}


def test_invert_match_returns_plain_decisions_and_vetoes_nothing():
    traces = [
        trace(1, attrs={"tier": "free"}),
        trace(2, attrs={"tier": "paid"}),
        trace(3),
        trace(4, status="ERROR", attrs={"tier": "free"}),
    ]
    # always_sample + an inverted policy: the Collector keeps every trace (the inverted
    # policy's NotSampled is one vote among others)
    ids, d = decide([ALWAYS, NOT_FREE], traces)
    assert kept_numbers(ids) == [1, 2, 3, 4]
    assert d.traces.column("sampling_policy").to_pylist() == ["all"] * 4
    # alone: Sampled where no resource or span matches, credited to it
    ids, d = decide([NOT_FREE], traces)
    assert kept_numbers(ids) == [2, 3]
    assert d.traces.column("sampling_policy").to_pylist() == ["not-free", "not-free"]
    # a NotSampled from the inverted policy does not stop another policy's Sampled
    assert kept_numbers(decide([ERR, NOT_FREE], traces)[0]) == [2, 3, 4]
    # `not` flips the plain decision: not(not free) keeps the free tier
    not_p = {"name": "free", "type": "not", "not": {"not_sub_policy": NOT_FREE}}
    assert kept_numbers(decide([not_p], traces)[0]) == [1, 4]
    # and / drop see NotSampled
    and_p = {"name": "a", "type": "and", "and": {"and_sub_policy": [ERR, NOT_FREE]}}
    assert kept_numbers(decide([and_p], traces)[0]) == []
    # the earlier Collector's InvertNotSampled veto, on request
    assert kept_numbers(decide([ALWAYS, NOT_FREE], traces, legacy_invert_decisions=True)[0]) == [2, 3]


def test_latency_is_strictly_longer_than_the_threshold_in_nanoseconds():
    # exactly 1000 ms: not kept (the Collector keeps duration > threshold)
    exact = trace(1, dur_ms=1000)
    # 1000.9995 ms from nanosecond timestamps: Milliseconds() = 1000, not kept; truncating
    # start and end to microseconds first would give 1001 ms
    s0 = 1_700_000_000_000_000_999
    e0 = s0 + 1_000_999_500
    nano = [span(2, 0, None, start_ms=0, dur_ms=1001, start_unix_nano=s0, end_unix_nano=e0)]
    nano[0]["start_time"], nano[0]["end_time"] = s0 // 1000, e0 // 1000
    longer = trace(3, dur_ms=1001)
    ids, d = decide([{"name": "slow", "type": "latency", "latency": {"threshold_ms": 1000}}], [exact, nano, longer])
    assert kept_numbers(ids) == [3]
    # the trace row's duration is exact to the nanosecond
    ids, d = decide([ALWAYS], [nano])
    assert d.traces.column("trace_duration_ms").to_pylist() == [1000.9995]


def test_attribute_policies_match_typed_values_only():
    traces = [
        trace(1, attrs={"http.status_code": 500}),
        trace(2, attrs={"http.status_code": "500"}),
        trace(3, attrs={"http.status_code": 500.0}),
        trace(4, attrs={"debug": True}),
        trace(5, attrs={"debug": "true"}),
        trace(6, attrs={"big": 2**53 + 3}),
        trace(7, attrs={"big": 2**53 + 5}),
    ]
    s = {"name": "s", "type": "string_attribute", "string_attribute": {"key": "http.status_code", "values": ["500"]}}
    assert kept_numbers(decide([s], traces)[0]) == [2]  # an int 500 is not the string "500"
    rx = {
        "name": "s",
        "type": "string_attribute",
        "string_attribute": {"key": "http.status_code", "values": ["^5"], "enabled_regex_matching": True},
    }
    assert kept_numbers(decide([rx], traces)[0]) == [2]
    n = {
        "name": "n",
        "type": "numeric_attribute",
        "numeric_attribute": {"key": "http.status_code", "min_value": 500, "max_value": 599},
    }
    assert kept_numbers(decide([n], traces)[0]) == [1]  # neither the string nor the double
    # a present value of another type reads as 0 (pcommon Value.Int()): within [-10, 10]
    around0 = {
        "name": "n",
        "type": "numeric_attribute",
        "numeric_attribute": {"key": "http.status_code", "min_value": -10, "max_value": 10},
    }
    assert kept_numbers(decide([around0], traces)[0]) == [2, 3]
    b = {"name": "b", "type": "boolean_attribute", "boolean_attribute": {"key": "debug", "value": True}}
    assert kept_numbers(decide([b], traces)[0]) == [4]  # the string "true" is not a boolean
    bf = {"name": "b", "type": "boolean_attribute", "boolean_attribute": {"key": "debug", "value": False}}
    assert kept_numbers(decide([bf], traces)[0]) == [5]  # ... it reads as false (Value.Bool())
    # int64 compared exactly: 2^53+3 and 2^53+5 are one float64 apart... and equal as float64s
    exact = {
        "name": "n",
        "type": "numeric_attribute",
        "numeric_attribute": {"key": "big", "min_value": 2**53 + 5, "max_value": 2**53 + 5},
    }
    assert kept_numbers(decide([exact], traces)[0]) == [7]
    # text typed "int" that is no int64 (no codec of ours writes it) reads as 0 instead of failing the stage
    bogus = span(8, 0, attrs={"big": "x"})
    bogus["attribute_types"] = {"big": "int"}
    zero = {
        "name": "n",
        "type": "numeric_attribute",
        "numeric_attribute": {"key": "big", "min_value": -1, "max_value": 1},
    }
    assert kept_numbers(decide([zero], [[bogus], trace(9, attrs={"big": 1})])[0]) == [8, 9]


def test_typed_resource_values_read_as_the_collector_reads_them():
    # a resource value that is not a string reads as "" for string_attribute (only a regex
    # matching the empty string matches it), as 0 for numeric, false for boolean
    t1 = [span(1, 0, resource={"service.name": "api", "shard": 7})]
    t2 = [span(2, 0, resource={"service.name": "api", "shard": "7"})]
    empty_rx = {
        "name": "s",
        "type": "string_attribute",
        "string_attribute": {"key": "shard", "values": ["^$"], "enabled_regex_matching": True},
    }
    assert kept_numbers(decide([empty_rx], [t1, t2])[0]) == [1]
    seven = {"name": "s", "type": "string_attribute", "string_attribute": {"key": "shard", "values": ["7"]}}
    assert kept_numbers(decide([seven], [t1, t2])[0]) == [2]
    n = {"name": "n", "type": "numeric_attribute", "numeric_attribute": {"key": "shard", "min_value": 7}}
    assert kept_numbers(decide([n], [t1, t2])[0]) == [1]


def test_composite_default_share_is_total_over_sub_policies():
    comp = {
        "name": "comp",
        "type": "composite",
        "composite": {
            "max_total_spans_per_second": 20,
            "composite_sub_policy": [ERR, {"name": "rest", "type": "always_sample"}],
            "rate_allocation": [{"policy": "err", "percent": 100}],
        },
    }
    traces = [trace(k, n=2, status="ERROR" if k <= 3 else "UNSET") for k in range(1, 17)]
    # "rest" has no entry: 20 / 2 = 10 spans a second (5 two-span traces), as v0.161.0;
    # the remainder rule gave it 20 - 20 = 0
    assert kept_numbers(decide([comp], traces)[0]) == [1, 2, 3, 4, 5, 6, 7, 8]
    comp["composite"]["unallocated_share"] = "remainder"
    assert kept_numbers(decide([comp], traces)[0]) == [1, 2, 3]


def test_sampling_percentage_above_100_keeps_everything_with_adjusted_count_one():
    ids, d = decide(
        [{"name": "p", "type": "probabilistic", "probabilistic": {"sampling_percentage": 250}}],
        [trace(k, n=1) for k in range(1, 41)],
    )
    assert len(ids) == 40 and set(d.traces.column("adjusted_count").to_pylist()) == {1.0}


def test_trace_state_and_trace_flags_policies():
    traces = [
        [span(1, 0, trace_state="vendor=gold,ot=th:8")],
        [span(2, 0, trace_state="vendor=silver")],
        [span(3, 0, trace_state="Vendor=gold")],  # upper-case key: an invalid tracestate holds nothing
        [span(4, 0, trace_state="a=1,a=2,vendor=gold")],  # duplicate key: invalid
        [span(5, 0, flags=0x101)],
        [span(6, 0, flags=0x100)],
        trace(7),
    ]
    ts = {"name": "t", "type": "trace_state", "trace_state": {"key": "vendor", "values": ["gold", "platinum"]}}
    assert kept_numbers(decide([ts], traces)[0]) == [1]
    assert kept_numbers(decide([{"name": "f", "type": "trace_flags"}], traces)[0]) == [5]


def test_maximum_trace_size_bytes_drops_at_once_and_later_spans_follow():
    # each span: 16+8+16+2 + len("GET /") = 47 bytes (+8 with a parent): a 3-span trace is 47 + 2*55 = 157 bytes
    ts = sampler(ALWAYS, maximum_trace_size_bytes=150)
    ts.add(table(trace(1, n=3) + trace(2, n=2)), 0)
    ts.add(table([span(1, 9, 0)]), 5)  # a late span of the dropped trace
    d = ts.advance(10_000)
    assert kept_numbers(d.traces.column("trace_id").to_pylist()) == [2]
    assert d.dropped_traces == {"maximum_trace_size_bytes": 1}
    assert d.dropped_spans == {"maximum_trace_size_bytes": 3, "late_after_drop": 1}


def test_block_on_overflow_never_evicts_and_drop_pending_on_shutdown():
    ts = sampler(ALWAYS, num_traces=2, block_on_overflow=True)
    ts.add(table([r for k in range(1, 6) for r in trace(k, n=1)]), 0)
    assert ts.buffered_traces == 5
    assert kept_numbers(ts.advance(10_000).traces.column("trace_id").to_pylist()) == [1, 2, 3, 4, 5]
    ts = sampler(ALWAYS, drop_pending_traces_on_shutdown=True)
    ts.add(table(trace(1) + trace(2)), 0)
    d = ts.flush_all(1)
    assert d.traces.num_rows == 0 and d.dropped_traces == {"shutdown": 2} and d.dropped_spans == {"shutdown": 6}


def test_v0161_keys_accepted_and_refusals_say_why():
    cfg = load_config(
        {
            "num_shards": 4,
            "sampling_strategy": "trace-complete",
            "tail_storage": "file_storage",
            "policies": [
                {"name": "rl", "type": "rate_limiting", "rate_limiting": {"spans_per_second": 5, "burst_capacity": 7}}
            ],
        }
    )
    assert cfg.num_shards == 4
    with pytest.raises(ConfigError, match=r"policies\[0\]\.type: ottl_condition is not supported: OTTL is a language"):
        load_config(
            {"policies": [{"name": "o", "type": "ottl_condition", "ottl_condition": {"span": ['name == "x"']}}]}
        )
    with pytest.raises(ConfigError, match=r"policies\[0\]\.and\.and_sub_policy\[1\]\.type: ottl_condition"):
        load_config(
            {
                "policies": [
                    {
                        "name": "a",
                        "type": "and",
                        "and": {"and_sub_policy": [ALWAYS, {"name": "o", "type": "ottl_condition"}]},
                    }
                ]
            }
        )
    # in a pipeline spec too, with the key path
    import yaml

    from pipelines import DEFAULT_SPEC
    from pipelines.loader import SpecError, parse_spec

    d = yaml.safe_load(DEFAULT_SPEC.read_text())
    step = next(st for f in d["flows"] for st in f["steps"] if st["kind"] == "tail_sample")
    step["sampler"]["policies"].append({"name": "o", "type": "ottl_condition", "ottl_condition": {"span": ["x"]}})
    with pytest.raises(SpecError, match=r"sampler\.policies\[3\]: ottl_condition is not supported: OTTL"):
        parse_spec(d)
    with pytest.raises(ConfigError, match="sampling_strategy: .*span-ingest is not supported"):
        load_config({"sampling_strategy": "span-ingest", "policies": [ALWAYS]})
    with pytest.raises(ConfigError, match=r"num_shards: Input should be less than or equal to 256"):
        load_config({"num_shards": 257, "policies": [ALWAYS]})
    with pytest.raises(ConfigError, match=r"decision_wait: .*longer than the bound of 7 days"):
        load_config({"decision_wait": "200h", "policies": [ALWAYS]})
    with pytest.raises(ConfigError, match=r"latency\.threshold_ms: Input should be less than or equal to"):
        load_config({"policies": [{"name": "l", "type": "latency", "latency": {"threshold_ms": 10**19}}]})
    with pytest.raises(ConfigError, match="set min_value or max_value"):
        load_config(
            {
                "policies": [
                    {"name": "n", "type": "numeric_attribute", "numeric_attribute": {"key": "k", "min_value": 0}}
                ]
            }
        )
    with pytest.raises(ConfigError, match=r"sampling_percentage: Input should be greater than or equal to 0"):
        load_config(
            {"policies": [{"name": "p", "type": "probabilistic", "probabilistic": {"sampling_percentage": -1}}]}
        )


def test_composite_policy_order_is_honoured():
    # kept on purpose: the Collector v0.161.0 reads policy_order but runs the sub-policies in
    # composite_sub_policy order; we run them in policy_order (the credit shows it)
    comp = {
        "name": "comp",
        "type": "composite",
        "composite": {
            "max_total_spans_per_second": 1000,
            "policy_order": ["rest", "err"],
            "composite_sub_policy": [ERR, {"name": "rest", "type": "always_sample"}],
        },
    }
    ts = sampler(comp)
    ts.add(table(trace(1, status="ERROR") + trace(2)), 0)
    d = ts.advance(10_000)
    assert kept_numbers(d.traces.column("trace_id").to_pylist()) == [1, 2]
    assert d.traces.column("sampling_policy").to_pylist() == ["comp", "comp"]
    # with a budget of 3 spans a second each, "rest" (first) takes trace 1 and leaves no room
    # for trace 2; an error trace is never tried against "err" once "rest" said Sampled
    comp["composite"]["max_total_spans_per_second"] = 6
    ids, _ = decide([comp], [trace(1, status="ERROR"), trace(2)])
    assert kept_numbers(ids) == [1]
    # the Collector's order (composite_sub_policy: err, then rest): each fits its own share
    comp["composite"]["policy_order"] = []
    ids, _ = decide([comp], [trace(1, status="ERROR"), trace(2)])
    assert kept_numbers(ids) == [1, 2]


def test_snapshot_of_the_microsecond_release_restores():
    """Snapshots taken before span times were kept in nanoseconds (version 1: µs) restore
    with their times converted, so a trace buffered across the upgrade keeps its duration."""
    import pickle

    import numpy as np

    cfg = {"decision_wait": "10s", "policies": [ALWAYS]}
    ts = sampler(ALWAYS)
    ts.add(table(trace(1, dur_ms=1500) + trace(2, dur_ms=20)), 0)
    st = pickle.loads(ts.snapshot())
    for k, sentinel in (("_start", np.iinfo(np.int64).max), ("_end", np.iinfo(np.int64).min)):
        a = st["arrays"][k]
        st["arrays"][k] = np.where(a == sentinel, a, a // 1000)
    st["version"] = 1
    from transforms.tail_sampling import TailSampler

    d = TailSampler.restore(cfg, pickle.dumps(st)).advance(10_000)
    assert d.traces.column("trace_duration_ms").to_pylist() == [1500.0, 20.0]
