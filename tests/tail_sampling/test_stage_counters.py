"""The trace stage hands the tail sampler's counts (dropped spans / traces by reason,
early decisions — the num_traces overflow among them) to the run stats and the
Prometheus endpoint, exactly."""

import pytest
from prometheus_client import generate_latest

from pipelines.spec import TailSampleStep
from pipelines.stages import TRACE, StageInput, TraceStage, make_stage, StageDef
from runners.metrics import registry
from runners.stats import RunStats
from tests.tail_sampling.helpers import table, trace

pytestmark = pytest.mark.traces

ERR = {"name": "err", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}}


def step(**sampler) -> TailSampleStep:
    return TailSampleStep.model_validate(
        {
            "kind": "tail_sample",
            "shards": 1,
            "red": None,
            "sampler": {"decision_wait": "10s", "policies": [ERR]} | sampler,
        }
    )


def feed(stage, traces):
    """One input per trace (2 spans each), trace k arriving at k seconds; then the flush."""
    outs = []
    for k, rows in traces:
        outs.append(stage.process(StageInput(TRACE, 0, "spans", table(rows), "spans", 0, 10 * k, 10 * k + 2, 1000 * k)))
    outs.append(stage.flush())
    return outs


def scrape(stats: RunStats) -> dict[str, float]:
    out = {}
    for line in generate_latest(registry(stats)).decode().splitlines():
        if line.startswith("obsflow_tail_sampling_"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


@pytest.mark.parametrize("overflow", ["decide_early", "drop_oldest"])
def test_num_traces_overflow_is_counted_in_the_run_stats_and_on_metrics(overflow):
    # num_traces 3, five traces of 2 spans: trace 4 pushes out trace 1 (an error: kept when
    # decided early, dropped undecided under drop_oldest), trace 5 pushes out trace 2
    stage = TraceStage(step(num_traces=3, num_traces_overflow=overflow), None, 0)
    outs = feed(stage, [(k, trace(k, n=2, status="ERROR" if k == 1 else "UNSET")) for k in range(1, 6)])
    stats = RunStats()
    for o in outs:
        stats.record_stage(o)
    kept = sum(o.rows["spans"].num_rows for o in outs if "spans" in o.rows)
    if overflow == "decide_early":
        assert kept == 2
        assert [o.counters for o in outs] == [
            {},
            {},
            {},
            {"early_decisions": {"num_traces_overflow": 1}, "sampled_traces": 1},
            {
                "early_decisions": {"num_traces_overflow": 1},
                "dropped_spans": {"num_traces_overflow": 2},
                "dropped_traces": {"num_traces_overflow": 1},
                "not_sampled_traces": 1,
            },
            {"dropped_spans": {"not_sampled": 6}, "dropped_traces": {"not_sampled": 3}, "not_sampled_traces": 3},
        ]
        assert dict(stats.tail_sampling) == {
            ("early_decisions", "num_traces_overflow"): 2,
            ("dropped_spans", "num_traces_overflow"): 2,
            ("dropped_traces", "num_traces_overflow"): 1,
            ("dropped_spans", "not_sampled"): 6,
            ("dropped_traces", "not_sampled"): 3,
            ("traces", "sampled"): 1,
            ("traces", "not_sampled"): 4,
        }
    else:
        assert kept == 0
        assert dict(stats.tail_sampling) == {
            ("early_decisions", "num_traces_overflow"): 2,
            ("dropped_spans", "num_traces_overflow"): 4,
            ("dropped_traces", "num_traces_overflow"): 2,
            ("dropped_spans", "not_sampled"): 6,
            ("dropped_traces", "not_sampled"): 3,
            ("traces", "not_sampled"): 3,
        }
    # every span accounted for: kept + dropped by reason = 10
    assert kept + sum(n for (k, _), n in stats.tail_sampling.items() if k == "dropped_spans") == 10
    m = scrape(stats)
    assert m['obsflow_tail_sampling_early_decisions_total{reason="num_traces_overflow"}'] == 2.0
    assert m['obsflow_tail_sampling_dropped_spans_total{reason="num_traces_overflow"}'] == (
        2.0 if overflow == "decide_early" else 4.0
    )
    assert m['obsflow_tail_sampling_dropped_traces_total{reason="not_sampled"}'] == 3.0
    assert m['obsflow_tail_sampling_traces_total{decision="not_sampled"}'] == (
        4.0 if overflow == "decide_early" else 3.0
    )
    assert m["obsflow_tail_sampling_late_spans_kept_total"] == 0.0
    stats.reset()
    assert not stats.tail_sampling


def test_counts_not_yet_output_survive_a_snapshot():
    stage = TraceStage(step(num_traces=1, num_traces_overflow="drop_oldest"), None, 0)
    stage.sampler.add(table(trace(1, n=2)), 1000)
    stage.sampler.add(table(trace(2, n=3)), 2000)  # overflow: trace 1 dropped, reported by the next advance
    stage._count(stage.sampler.advance(2000))
    blob = stage.snapshot()
    defn = StageDef(TRACE, 1, ("spans", "traces", "metrics"), ("spans",), (stage.step, None))
    again = make_stage(defn, 0, blob)
    out = again.process(StageInput(TRACE, 0, "spans", None, "spans", 0, 0, 0, 2000))
    assert out.counters == {
        "early_decisions": {"num_traces_overflow": 1},
        "dropped_spans": {"num_traces_overflow": 2},
        "dropped_traces": {"num_traces_overflow": 1},
    }
    stats = RunStats()
    stats.record_stage(out)
    stats.record_stage(again.process(StageInput(TRACE, 0, "spans", None, "spans", 0, 0, 0, 2001)))  # nothing new
    assert stats.tail_sampling[("dropped_spans", "num_traces_overflow")] == 2
