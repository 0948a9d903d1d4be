"""Traces end to end on both runners: tail sampling keeps exactly the error and slow
traces (with every one of their spans), obs.traces has one exact row per kept trace, RED
metrics count every span before sampling, and log lines follow their trace; the same
input gives the same rows on Bytewax and Beam."""

import json
from collections import defaultdict

import pytest
import yaml

from pipelines import DEFAULT_SPEC
from pipelines.loader import parse_spec
from runners.job import RunRequest
from runners.stats import STATS
from tests.helpers import START_MS, embedded, read_table, sorted_rows

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
    if runner == "bytewax":
        from runners.bytewax.run import run as go
    else:
        from runners.beam.run import run as go
    go(req)


def expected(spec):
    """Computed from the generator's records, independently of the sampler."""
    src = embedded(spec, COUNT, batch_size=400)
    spans = defaultdict(list)
    logs = []
    for part in src.partitions():
        for off, g in enumerate(src.stream(part)):
            if g.label:
                continue
            rec = json.loads(g.value)
            if part.signal == "span":
                spans[rec["trace_id"]].append((part.partition, off, rec))
            elif part.signal == "log":
                logs.append((part.partition, off, rec))
    from datetime import datetime

    def us(t):
        return int(datetime.fromisoformat(t.replace("Z", "+00:00")).timestamp() * 1_000_000)

    kept = {}
    for tid, ss in spans.items():
        errors = sum(1 for _, _, r in ss if r["status_code"] == "ERROR")
        duration_ms = (max(us(r["end_time"]) for _, _, r in ss) - min(us(r["start_time"]) for _, _, r in ss)) // 1000
        if errors:
            kept[tid] = ("errors", len(ss), errors)
        elif duration_ms >= 1000:
            kept[tid] = ("slow", len(ss), errors)
    kept_spans = {("spans", p, o) for tid in kept for p, o, _ in spans[tid]}
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
    return kept, kept_spans, kept_logs, calls


@pytest.fixture(scope="module", params=["bytewax", "beam"])
def landed(request, tmp_path_factory):
    spec = traces_spec(tmp_path_factory.mktemp("traces-" + request.param))
    run(request.param, spec)
    return request.param, spec


@pytest.fixture(scope="module")
def truth():
    return expected(traces_spec("/unused"))


def coords(t):
    return {(r["source_topic"], r["source_partition"], r["source_offset"]) for r in t.select(["source_topic", "source_partition", "source_offset"]).to_pylist()}


def test_kept_traces_are_exactly_the_error_and_slow_ones(landed, truth):
    _, spec = landed
    kept, kept_spans, _, _ = truth
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
    _, spec = landed
    _, _, _, calls = truth
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
    _, spec = landed
    _, _, kept_logs, _ = truth
    logs = read_table(spec, "logs")
    assert coords(logs) == kept_logs
    assert logs.num_rows == len(kept_logs)


def test_same_rows_on_bytewax_and_beam(tmp_path):
    specs = {}
    for runner in ("bytewax", "beam"):
        specs[runner] = parse_spec({**yaml.safe_load(DEFAULT_SPEC.read_text()),
                                    "storage": {"catalog": {"warehouse": str(tmp_path / runner)}}})
        run(runner, specs[runner])
    keys = {"spans": ["trace_id", "span_id"], "traces": ["trace_id"], "logs": ["source_topic", "source_partition", "source_offset"],
            "metrics": ["name", "window_start", "resolution"]}
    for table, k in keys.items():
        a, b = read_table(specs["bytewax"], table), read_table(specs["beam"], table)
        assert a.num_rows > 0, table
        if table == "metrics":
            # labels are maps: compare as sorted tuples
            norm = lambda t: sorted((r["name"], r["window_start"], tuple(sorted(r["labels"])), r["count"], r["sum"]) for r in t.to_pylist())
            assert norm(a) == norm(b)
        else:
            drop = ["decided_at"] if table == "traces" else []
            assert sorted_rows(a.drop_columns(drop), k) == sorted_rows(b.drop_columns(drop), k), table
