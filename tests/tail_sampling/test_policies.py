"""Each policy with exact decisions; the collector's final-decision rules; and / not /
drop; composite rate allocation."""

import pytest

from tests.tail_sampling.helpers import decide, kept_numbers, span, table, trace, sampler, tid
from transforms.tail_sampling.hashing import fnv1a64, threshold
from transforms.tail_sampling.config import ConfigError, load_config
from transforms.tail_sampling import TailSampler

pytestmark = pytest.mark.traces

ALWAYS = {"name": "all", "type": "always_sample"}


def test_always_sample_keeps_everything_with_adjusted_count_one():
    ids, d = decide([ALWAYS], [trace(1), trace(2, n=5)])
    assert kept_numbers(ids) == [1, 2]
    assert d.spans.num_rows == 8
    assert set(d.spans.column("sampling_policy").to_pylist()) == {"all"}
    assert set(d.spans.column("adjusted_count").to_pylist()) == {1.0}


def test_latency_uses_trace_duration_and_collector_bounds():
    # trace duration = earliest start to latest end, not a span's duration: trace 5 has two
    # 60 ms spans 100 ms apart -> 160 ms
    t5 = [span(5, 0, None, 0, 60), span(5, 1, 0, 100, 60)]
    traces = [trace(1, dur_ms=99.9), trace(2, dur_ms=100), trace(3, dur_ms=200), trace(4, dur_ms=201), t5]
    ids, d = decide([{"name": "slow", "type": "latency", "latency": {"threshold_ms": 100}}], traces)
    assert kept_numbers(ids) == [3, 4, 5]  # strictly longer than 100 ms (Collector v0.161.0): trace 2 is exactly 100
    assert d.traces.column("trace_duration_ms").to_pylist()[-1] == 160.0
    ids, _ = decide(
        [{"name": "band", "type": "latency", "latency": {"threshold_ms": 100, "upper_threshold_ms": 200}}], traces
    )
    assert kept_numbers(ids) == [3, 5]  # 100 < d <= 200


def test_status_code():
    traces = [trace(1), trace(2, status="ERROR"), trace(3, status="OK")]
    ids, d = decide([{"name": "err", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}}], traces)
    assert kept_numbers(ids) == [2]
    assert d.traces.column("error_count").to_pylist() == [1]
    assert d.dropped_traces == {"not_sampled": 2} and d.dropped_spans == {"not_sampled": 6}
    ids, _ = decide([{"name": "ok", "type": "status_code", "status_code": {"status_codes": ["OK", "UNSET"]}}], traces)
    assert kept_numbers(ids) == [1, 2, 3]  # every trace has UNSET children


def test_probabilistic_is_the_documented_hash():
    traces = [trace(k, n=1) for k in range(1, 401)]
    pol = {"name": "p", "type": "probabilistic", "probabilistic": {"sampling_percentage": 25, "hash_salt": "s1"}}
    ids, d = decide([pol], traces)
    expected = [k for k in range(1, 401) if fnv1a64(bytes.fromhex(tid(k)), "s1") <= threshold(25)]
    assert kept_numbers(ids) == expected
    assert 60 < len(expected) < 140
    assert set(d.spans.column("adjusted_count").to_pylist()) == {4.0}
    # default salt is the collector's "default-hash-seed"
    ids, _ = decide([{"name": "p", "type": "probabilistic", "probabilistic": {"sampling_percentage": 25}}], traces)
    assert kept_numbers(ids) == [
        k for k in range(1, 401) if fnv1a64(bytes.fromhex(tid(k)), "default-hash-seed") <= threshold(25)
    ]


def test_rate_limiting_token_bucket_on_the_decision_clock():
    pol = {"name": "rl", "type": "rate_limiting", "rate_limiting": {"spans_per_second": 10}}  # bucket of 20
    ts = sampler(pol)
    ts.add(table([r for k in range(1, 5) for r in trace(k, n=8)]), 0)
    d = ts.advance(10_000)
    assert kept_numbers(d.traces.column("trace_id").to_pylist()) == [1, 2]  # 16 of 20 tokens; 8 more do not fit
    ts.add(table([r for k in range(5, 8) for r in trace(k, n=8)]), 500)
    d = ts.advance(10_500)  # 0.5 s later: 4 + 5 = 9 tokens
    assert kept_numbers(d.traces.column("trace_id").to_pylist()) == [5]
    ts.add(table(trace(8, n=30)), 20_000)
    assert ts.advance(40_000).traces.num_rows == 0  # larger than the bucket: never


def test_bytes_limiting():
    # each 1-span trace: 16+8+16+2 + len("GET /")=5 + attrs k=1,v=3 (+4) = 55 bytes
    pol = {"name": "bl", "type": "bytes_limiting", "bytes_limiting": {"bytes_per_second": 100, "burst_capacity": 120}}
    traces = [[span(k, 0, attrs={"k": "vvv"})] for k in range(1, 5)]
    ids, _ = decide([pol], traces)
    assert kept_numbers(ids) == [1, 2]


def test_string_attribute_exact_regex_and_invert():
    traces = [
        trace(1, attrs={"http.route": "/health"}),
        trace(2, attrs={"http.route": "/api/v1/users"}),
        trace(3, attrs={"other": "x"}),
        trace(4, attrs={"http.route": ""}),
    ]
    exact = {"name": "s", "type": "string_attribute", "string_attribute": {"key": "http.route", "values": ["/health"]}}
    assert kept_numbers(decide([exact], traces)[0]) == [1]
    rx = {
        "name": "s",
        "type": "string_attribute",
        "string_attribute": {
            "key": "http.route",
            "values": ["/api/v[0-9]+/.+", "^/metrics$"],
            "enabled_regex_matching": True,
        },
    }
    assert kept_numbers(decide([rx], traces)[0]) == [2]
    inv = {
        "name": "s",
        "type": "string_attribute",
        "string_attribute": {"key": "http.route", "values": ["/health"], "invert_match": True},
    }
    assert kept_numbers(decide([inv], traces)[0]) == [2, 3, 4]  # key absent -> InvertSampled -> kept
    # resource attributes count too (service.name from the resource map)
    svc = {"name": "s", "type": "string_attribute", "string_attribute": {"key": "service.name", "values": ["checkout"]}}
    assert kept_numbers(decide([svc], [trace(1), trace(2, service="checkout")])[0]) == [2]


def test_numeric_attribute_inclusive_bounds_and_invert():
    traces = [trace(k, attrs={"http.status_code": v}) for k, v in ((1, 200), (2, 404), (3, 500), (4, "abc"))] + [
        trace(5)
    ]
    pol = {
        "name": "n",
        "type": "numeric_attribute",
        "numeric_attribute": {"key": "http.status_code", "min_value": 400, "max_value": 500},
    }
    assert kept_numbers(decide([pol], traces)[0]) == [2, 3]
    inv = {
        "name": "n",
        "type": "numeric_attribute",
        "numeric_attribute": {"key": "http.status_code", "min_value": 400, "max_value": 500, "invert_match": True},
    }
    assert kept_numbers(decide([inv], traces)[0]) == [1, 4, 5]
    lower_only = {
        "name": "n",
        "type": "numeric_attribute",
        "numeric_attribute": {"key": "http.status_code", "min_value": 404},
    }
    assert kept_numbers(decide([lower_only], traces)[0]) == [2, 3]


def test_boolean_attribute():
    traces = [trace(1, attrs={"debug": True}), trace(2, attrs={"debug": False}), trace(3)]
    pol = {"name": "b", "type": "boolean_attribute", "boolean_attribute": {"key": "debug", "value": True}}
    assert kept_numbers(decide([pol], traces)[0]) == [1]
    inv = {
        "name": "b",
        "type": "boolean_attribute",
        "boolean_attribute": {"key": "debug", "value": True, "invert_match": True},
    }
    assert kept_numbers(decide([inv], traces)[0]) == [2, 3]


def test_span_count():
    traces = [trace(1, n=1), trace(2, n=2), trace(3, n=5), trace(4, n=6)]
    pol = {"name": "c", "type": "span_count", "span_count": {"min_spans": 2, "max_spans": 5}}
    assert kept_numbers(decide([pol], traces)[0]) == [2, 3]
    pol = {"name": "c", "type": "span_count", "span_count": {"min_spans": 5}}
    assert kept_numbers(decide([pol], traces)[0]) == [3, 4]


def test_and_not_drop():
    traces = [
        trace(1, status="ERROR", attrs={"env": "prod"}),
        trace(2, status="ERROR", attrs={"env": "dev"}),
        trace(3, attrs={"env": "prod"}),
        trace(4, attrs={"url.path": "/health"}, status="ERROR"),
    ]
    err = {"name": "err", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}}
    prod = {"name": "prod", "type": "string_attribute", "string_attribute": {"key": "env", "values": ["prod"]}}
    and_p = {"name": "prod-errors", "type": "and", "and": {"and_sub_policy": [err, prod]}}
    assert kept_numbers(decide([and_p], traces)[0]) == [1]
    not_p = {"name": "not-prod", "type": "not", "not": {"not_sub_policy": prod}}
    assert kept_numbers(decide([not_p], traces)[0]) == [2, 4]
    drop = {
        "name": "no-health",
        "type": "drop",
        "drop": {
            "drop_sub_policy": [
                {
                    "name": "health",
                    "type": "string_attribute",
                    "string_attribute": {"key": "url.path", "values": ["/health"]},
                }
            ]
        },
    }
    ids, d = decide([ALWAYS, drop], traces)  # drop wins over always_sample, whatever the order
    assert kept_numbers(ids) == [1, 2, 3]
    assert d.dropped_traces == {"policy_drop": 1}
    assert set(d.spans.column("sampling_policy").to_pylist()) == {"all"}


def test_final_decision_rules_and_deciding_policy():
    traces = [
        trace(1, status="ERROR", attrs={"tier": "free"}),
        trace(2, status="ERROR"),
        trace(3),
        trace(4, attrs={"tier": "free"}),
    ]
    err = {"name": "err", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}}
    not_free = {
        "name": "not-free",
        "type": "string_attribute",
        "string_attribute": {"key": "tier", "values": ["free"], "invert_match": True},
    }
    # the invert decisions of Collector releases before v0.150.0 (legacy_invert_decisions):
    # trace 1: Sampled + InvertNotSampled -> not sampled (InvertNotSampled beats Sampled)
    # trace 2: Sampled + InvertSampled -> sampled, credited to "err"
    # trace 3: NotSampled + InvertSampled -> not sampled (InvertSampled only counts without a NotSampled)
    ids, d = decide([err, not_free], traces, legacy_invert_decisions=True)
    assert kept_numbers(ids) == [2]
    assert d.traces.column("sampling_policy").to_pylist() == ["err"]
    # InvertSampled alone keeps, credited to the inverted policy
    ids, d = decide([not_free], traces, legacy_invert_decisions=True)
    assert kept_numbers(ids) == [2, 3]
    assert d.traces.column("sampling_policy").to_pylist() == ["not-free", "not-free"]
    # the first policy that returned Sampled gets the credit
    assert decide([err, ALWAYS], traces)[1].traces.column("sampling_policy").to_pylist() == ["err", "err", "all", "all"]
    # sample_on_first_match stops evaluating at the first Sampled (later InvertNotSampled never seen)
    ids, _ = decide([err, not_free], traces, sample_on_first_match=True, legacy_invert_decisions=True)
    assert kept_numbers(ids) == [1, 2]


def test_composite_rate_allocation():
    err = {"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}}
    comp = {
        "name": "comp",
        "type": "composite",
        "composite": {
            "max_total_spans_per_second": 20,
            "policy_order": ["errors", "rest"],
            "composite_sub_policy": [err, {"name": "rest", "type": "always_sample"}],
            "rate_allocation": [{"policy": "errors", "percent": 50}, {"policy": "rest", "percent": 50}],
        },
    }
    # 2-span traces: errors may take 10 spans/s (5 traces), the rest 10 (5 traces)
    traces = [trace(k, n=2, status="ERROR" if k <= 8 else "UNSET") for k in range(1, 17)]
    ts = sampler(comp)
    ts.add(table([r for t in traces for r in t]), 0)
    d = ts.advance(10_000)
    assert kept_numbers(d.traces.column("trace_id").to_pylist()) == [1, 2, 3, 4, 5, 9, 10, 11, 12, 13]
    # an error trace over its budget is NOT tried against "rest" (as the collector)
    # next second: counters restart
    ts.add(table([r for k in range(17, 20) for r in trace(k, n=2, status="ERROR")]), 1000)
    assert ts.advance(11_000).traces.num_rows == 3
    # unallocated_share: remainder (ours): unallocated sub-policies share what is left
    comp2 = {
        "name": "comp",
        "type": "composite",
        "composite": {
            "max_total_spans_per_second": 20,
            "composite_sub_policy": [err, {"name": "rest", "type": "always_sample"}],
            "rate_allocation": [{"policy": "errors", "percent": 25}],
            "unallocated_share": "remainder",
        },
    }
    ids, _ = decide([comp2], traces)
    assert kept_numbers(ids) == [1, 2, 9, 10, 11, 12, 13, 14, 15]  # 5 spans -> 2 error traces; 15 -> 7 others


def test_config_errors_name_the_key_path():
    with pytest.raises(ConfigError, match=r"policies\[0\]\.latency\.threshold_ms"):
        load_config({"policies": [{"name": "a", "type": "latency", "latency": {"threshold_ms": "fast"}}]})
    with pytest.raises(ConfigError, match="duplicate policy name"):
        load_config({"policies": [ALWAYS, ALWAYS]})
    with pytest.raises(ConfigError, match="rate_allocation"):
        load_config(
            {
                "policies": [
                    {
                        "name": "c",
                        "type": "composite",
                        "composite": {
                            "max_total_spans_per_second": 1,
                            "composite_sub_policy": [ALWAYS],
                            "rate_allocation": [{"policy": "x", "percent": 1}],
                        },
                    }
                ]
            }
        )
    cfg = load_config({"decision_wait": "1m30s", "policies": [ALWAYS]})
    assert cfg.decision_wait_ms == 90_000 and cfg.num_traces == 50_000


def test_rate_limiting_per_second_counter_as_earlier_collector_releases():
    # the count restarts each whole second of the decision clock; a trace is sampled while
    # count + its spans stays strictly below spans_per_second
    pol = {"name": "rl", "type": "rate_limiting", "rate_limiting": {"spans_per_second": 20, "algorithm": "per_second"}}
    ts = sampler(pol)
    ts.add(table([r for k in range(1, 5) for r in trace(k, n=6)]), 0)
    d = ts.advance(10_000)  # 6, 12, 18 < 20 kept; 24 is not
    assert kept_numbers(d.traces.column("trace_id").to_pylist()) == [1, 2, 3]
    ts.add(table(trace(5, n=1) + trace(6, n=2)), 400)
    d = ts.advance(10_400)  # same second (10): 18 + 1 = 19 < 20 kept, then 19 + 2 = 21 not
    assert kept_numbers(d.traces.column("trace_id").to_pylist()) == [5]
    ts.add(table(trace(7, n=19) + trace(8, n=1)), 1000)
    d = ts.advance(11_000)  # a new second: 19 < 20 kept, 19 + 1 = 20 not (strictly below)
    assert kept_numbers(d.traces.column("trace_id").to_pylist()) == [7]
    # its state survives a snapshot
    again = TailSampler.restore(ts.config, ts.snapshot())
    again.add(table(trace(9, n=1)), 1500)
    assert again.advance(11_500).traces.num_rows == 0  # still second 11: 19 + 1 = 20
    assert (
        TailSampler({"policies": [{"name": "rl", "type": "rate_limiting", "rate_limiting": {"spans_per_second": 20}}]})
        .config.policies[0]
        .rate_limiting.algorithm
        == "token_bucket"
    )  # the default: the current Collector's bucket
