"""Traces end to end on both runners: tail sampling keeps exactly the error and slow
traces (with every one of their spans), obs.traces has one exact row per kept trace, RED
metrics count every span before sampling, and log lines follow their trace; the same
input gives the same rows on Bytewax and Beam."""

import json
from collections import defaultdict
from fractions import Fraction

import pytest
import yaml

from pipelines import DEFAULT_SPEC
from pipelines.loader import parse_spec
from runners.job import RunRequest
from runners.stats import STATS
from tests.helpers import START_MS, embedded, engine_run, read_table, sorted_rows

pytestmark = pytest.mark.traces

COUNT = 2400
LEVELS = {"WARNING": "WARN", "CRITICAL": "FATAL", "ERR": "ERROR", "INFORMATION": "INFO"}


def traces_spec(warehouse):
    """The default spec with policies whose decisions are computable exactly: errors and
    slow traces kept, nothing by chance; untraced INFO/DEBUG logs all dropped."""
    d = yaml.safe_load(DEFAULT_SPEC.read_text())
    d["storage"]["catalog"]["warehouse"] = str(warehouse)
    for f in d["flows"]:
        for st in f["steps"]:
            if st["kind"] == "tail_sample":
                st["sampler"]["policies"] = [
                    {"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}},
                    {"name": "slow", "type": "latency", "latency": {"threshold_ms": 1000}},
                ]
            if st["kind"] == "log_sample":
                st["config"] = {"sampling_percentage": 0}
    return parse_spec(d)


def run(runner, spec):
    STATS.reset()
    req = RunRequest(spec=spec, runner=runner, count=COUNT, start_ms=START_MS, rate_per_s=2000.0, batch_size=400)
    engine_run(req)


def generated(spec):
    """The generator's well-formed records: spans by trace id and log lines, each as
    (partition, offset, record)."""
    src = embedded(spec, COUNT, batch_size=400)
    spans, logs = defaultdict(list), []
    for part in src.partitions():
        for off, g in enumerate(src.stream(part)):
            if g.label:
                continue
            rec = json.loads(g.value)
            if part.signal == "span":
                spans[rec["trace_id"]].append((part.partition, off, rec))
            elif part.signal == "log":
                logs.append((part.partition, off, rec))
    return spans, logs


def expected(spec):
    """Computed from the generator's records, independently of the sampler."""
    spans, logs = generated(spec)
    from datetime import datetime

    def us(t):
        return int(datetime.fromisoformat(t.replace("Z", "+00:00")).timestamp() * 1_000_000)

    kept = {}
    for tid, ss in spans.items():
        errors = sum(1 for _, _, r in ss if r["status_code"] == "ERROR")
        duration_ms = (max(us(r["end_time"]) for _, _, r in ss) - min(us(r["start_time"]) for _, _, r in ss)) // 1000
        if errors:
            kept[tid] = ("errors", len(ss), errors)
        elif duration_ms > 1000:  # the Collector v0.161.0: strictly longer than threshold_ms
            kept[tid] = ("slow", len(ss), errors)
    kept_spans = {("spans", p, o) for tid in kept for p, o, _ in spans[tid]}
    calls_by_trace = {tid: len(ss) for tid, ss in spans.items()}
    kept_logs = set()
    for p, o, r in logs:
        level = r["level"].upper()
        level = LEVELS.get(level, level)
        if level in ("WARN", "ERROR", "FATAL") or (r.get("trace_id") in kept):
            kept_logs.add(("logs", p, o))
    calls = defaultdict(int)
    for ss in spans.values():
        for _, _, r in ss:
            calls[(r["service"], r["name"])] += 1
    return kept, kept_spans, kept_logs, calls, calls_by_trace


@pytest.fixture(scope="module", params=["bytewax", "beam"])
def landed(request, tmp_path_factory):
    spec = traces_spec(tmp_path_factory.mktemp("traces-" + request.param))
    run(request.param, spec)
    return request.param, spec, STATS.snapshot()


@pytest.fixture(scope="module")
def truth():
    return expected(traces_spec("/unused"))


def coords(t):
    return {
        (r["source_topic"], r["source_partition"], r["source_offset"])
        for r in t.select(["source_topic", "source_partition", "source_offset"]).to_pylist()
    }


def test_kept_traces_are_exactly_the_error_and_slow_ones(landed, truth):
    _, spec, _ = landed
    kept, kept_spans, _, _, _ = truth
    assert any(v[0] == "errors" for v in kept.values()) and any(v[0] == "slow" for v in kept.values())
    traces = read_table(spec, "traces")
    got = {r["trace_id"]: (r["sampling_policy"], r["span_count"], r["error_count"]) for r in traces.to_pylist()}
    assert got == kept
    spans = read_table(spec, "spans")
    assert coords(spans) == kept_spans
    assert spans.num_rows == len(kept_spans)
    assert set(spans.column("sampling_policy").to_pylist()) == {"errors", "slow"}
    assert set(spans.column("adjusted_count").to_pylist()) == {1.0}
    for r in traces.to_pylist():
        assert r["trace_duration_ms"] >= 0 and r["root_service"] == "frontend"


def test_red_metrics_count_every_span_before_sampling(landed, truth):
    _, spec, _ = landed
    _, _, _, calls, _ = truth
    m = read_table(spec, "metrics").to_pylist()
    got = defaultdict(int)
    for r in m:
        if r["name"] == "span.calls":
            labels = dict(r["labels"])
            got[(labels["service"], labels["operation"])] += r["count"]
    assert dict(got) == dict(calls)
    durations = [r for r in m if r["name"] == "span.duration_ms"]
    assert durations and all(r["p50"] <= r["p99"] <= r["max"] * 1.01 for r in durations)


def test_logs_follow_their_trace(landed, truth):
    _, spec, _ = landed
    _, _, kept_logs, _, _ = truth
    logs = read_table(spec, "logs")
    assert coords(logs) == kept_logs
    assert logs.num_rows == len(kept_logs)


def test_tail_sampling_counts_reach_the_run_stats_and_metrics(landed, truth):
    """Every trace not kept is counted as not_sampled (spans and traces), nothing else is
    dropped (num_traces is not reached), and the /metrics collector shows the same."""
    from prometheus_client import generate_latest

    from runners.metrics import registry
    from runners.stats import RunStats

    _, _, snap = landed
    kept, kept_spans, _, _, per_trace = truth
    total_spans = sum(per_trace.values())
    assert dict(snap["tail_sampling"]) == {
        ("dropped_spans", "not_sampled"): total_spans - len(kept_spans),
        ("dropped_traces", "not_sampled"): len(per_trace) - len(kept),
        ("traces", "sampled"): len(kept),
        ("traces", "not_sampled"): len(per_trace) - len(kept),
    }
    stats = RunStats()
    stats.tail_sampling.update(snap["tail_sampling"])
    text = generate_latest(registry(stats)).decode()
    assert (
        f'obsflow_tail_sampling_dropped_spans_total{{reason="not_sampled"}} {float(total_spans - len(kept_spans))}'
        in text
    )
    assert f'obsflow_tail_sampling_traces_total{{decision="sampled"}} {float(len(kept))}' in text


# -- sample_rate on kept log rows, and head sampling --------------------------------------------

SALT = b"default-hash-seed"  # the collector's default hash seed (hash_salt "")


def fnv_keep(data: bytes, pct: float) -> bool:
    """FNV-1a 64 of the default seed + data within pct percent (the collector's rule, written
    out here independently of transforms.tail_sampling.hashing)."""
    h = 0xCBF29CE484222325
    for b in SALT + data:
        h = ((h ^ b) * 0x100000001B3) % (1 << 64)
    return h <= int(Fraction(pct / 100) * ((1 << 64) - 1))


def sampling_spec(warehouse, head: bool):
    """Default spec, logs at INFO 20% / DEBUG 10%; spans tail-sampled by errors then a 25%
    probabilistic baseline, or (``head``) all spans head-sampled at ingest at 25%."""
    d = yaml.safe_load(DEFAULT_SPEC.read_text())
    d["storage"]["catalog"]["warehouse"] = str(warehouse)
    for f in d["flows"]:
        if f["source"] == "spans":
            for i, st in enumerate(f["steps"]):
                if st["kind"] == "tail_sample":
                    st["sampler"]["policies"] = [
                        {"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}},
                        {"name": "baseline", "type": "probabilistic", "probabilistic": {"sampling_percentage": 25}},
                    ]
                    if head:  # the spans source skips the tail sampler (salt: the baseline policy's, "")
                        st["head_sampling"] = {"sources": ["spans"], "sampling_percentage": 25}
        for st in f["steps"]:
            if st["kind"] == "log_sample":
                st["config"] = {"sampling_percentage": 20, "level_percentages": {"DEBUG": 10}}
    return parse_spec(d)


def sampling_truth(spec, head: bool):
    """(kept trace id -> (policy, adjusted count), kept span coords, kept log coords -> sample_rate),
    from the generator's records."""
    spans, logs = generated(spec)
    kept = {}
    for tid, ss in spans.items():
        if head:
            if fnv_keep(bytes.fromhex(tid), 25):
                kept[tid] = ("head_probabilistic", 4.0)
        elif any(r["status_code"] == "ERROR" for _, _, r in ss):
            kept[tid] = ("errors", 1.0)
        elif fnv_keep(bytes.fromhex(tid), 25):
            kept[tid] = ("baseline", 4.0)
    kept_spans = {("spans", p, o): kept[tid] for tid in kept for p, o, _ in spans[tid]}
    rates = {}
    for p, o, r in logs:
        level = LEVELS.get(r["level"].upper(), r["level"].upper())
        pct = 10 if level == "DEBUG" else 20
        tid = r.get("trace_id")
        if level in ("WARN", "ERROR", "FATAL"):
            rates[("logs", p, o)] = 1.0  # always kept
        elif tid and tid in spans:
            if tid in kept:
                rates[("logs", p, o)] = 1.0 / kept[tid][1]  # follows its kept trace: 1 / adjusted count
        elif tid:
            if fnv_keep(bytes.fromhex(tid), pct):  # trace never seen: by the trace id's hash
                rates[("logs", p, o)] = pct / 100
        elif fnv_keep(r["request_id"].encode(), pct):  # no trace id: by request_id's hash
            rates[("logs", p, o)] = pct / 100
    return kept, kept_spans, rates


def log_rates(spec) -> dict:
    t = (
        read_table(spec, "logs")
        .select(["source_topic", "source_partition", "source_offset", "sample_rate"])
        .to_pylist()
    )
    return {(r["source_topic"], r["source_partition"], r["source_offset"]): r["sample_rate"] for r in t}


def test_sample_rate_is_the_fraction_kept_on_every_kept_log_row(tmp_path):
    spec = sampling_spec(tmp_path, head=False)
    run("bytewax", spec)
    kept, _, rates = sampling_truth(spec, head=False)
    assert {v for v in kept.values()} == {("errors", 1.0), ("baseline", 4.0)}
    got = log_rates(spec)
    assert got == rates
    # every kind of row is there: always kept (1.0), following a baseline trace (0.25),
    # hash-sampled INFO (0.2) and DEBUG (0.1)
    assert set(got.values()) == {1.0, 0.25, 0.2, 0.1}


@pytest.mark.parametrize("runner", ["bytewax", "beam"])
def test_head_sampling_at_ingest_keeps_exactly_the_hash_selected_traces(tmp_path, runner):
    spec = sampling_spec(tmp_path, head=True)
    run(runner, spec)
    kept, kept_spans, rates = sampling_truth(spec, head=True)
    assert 0 < len(kept) < len(truth_traces(spec))
    spans = read_table(spec, "spans").to_pylist()
    got = {
        (r["source_topic"], r["source_partition"], r["source_offset"]): (r["sampling_policy"], r["adjusted_count"])
        for r in spans
    }
    assert len(spans) == len(got) and got == kept_spans
    assert read_table(spec, "traces").num_rows == 0  # head-sampled traces are not buffered: no trace rows
    assert log_rates(spec) == rates  # logs follow the head decision
    # RED metrics count every span, kept or not
    calls = sum(r["count"] for r in read_table(spec, "metrics").to_pylist() if r["name"] == "span.calls")
    assert calls == sum(truth_traces(spec).values())
    snap = STATS.snapshot()["tail_sampling"]
    assert dict(snap) == {("dropped_spans", "head_not_sampled"): sum(truth_traces(spec).values()) - len(kept_spans)}


def truth_traces(spec) -> dict:
    """trace id -> span count, from the generator."""
    return expected(spec)[4]


def test_same_rows_on_bytewax_and_beam(tmp_path):
    specs = {}
    for runner in ("bytewax", "beam"):
        specs[runner] = parse_spec(
            {**yaml.safe_load(DEFAULT_SPEC.read_text()), "storage": {"catalog": {"warehouse": str(tmp_path / runner)}}}
        )
        run(runner, specs[runner])
    keys = {
        "spans": ["trace_id", "span_id"],
        "traces": ["trace_id"],
        "logs": ["source_topic", "source_partition", "source_offset"],
        "metrics": ["name", "window_start", "resolution"],
    }
    for table, k in keys.items():
        a, b = read_table(specs["bytewax"], table), read_table(specs["beam"], table)
        assert a.num_rows > 0, table
        if table == "metrics":
            # labels are maps: compare as sorted tuples
            norm = lambda t: sorted(
                (r["name"], r["window_start"], tuple(sorted(r["labels"])), r["count"], r["sum"]) for r in t.to_pylist()
            )
            assert norm(a) == norm(b)
        else:
            drop = ["decided_at"] if table == "traces" else []
            assert sorted_rows(a.drop_columns(drop), k) == sorted_rows(b.drop_columns(drop), k), table
