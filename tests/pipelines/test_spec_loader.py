"""The spec loader: the default spec loads, and every kind of mistake fails at load with
its key path and what was expected."""

from datetime import timedelta

import pytest
import yaml

from core.stats import RunStats
from pipelines import DEFAULT_SPEC
from pipelines.loader import SpecError, load_spec, parse_spec
from pipelines.spec import EnrichStep, ScrubStep, ValidateStep, parse_duration, ProductStep
from tests.helpers import default_data
from tests.helpers import spec_problems as problems


def test_default_spec_loads_with_its_flows_and_steps():
    spec = load_spec(DEFAULT_SPEC)
    assert [f.name for f in spec.flows] == ["product_events", "service_logs", "traces", "metric_rollups"]
    steps = spec.flows[0].steps
    assert [type(s) for s in steps] == [ValidateStep, ScrubStep, EnrichStep, ProductStep]
    assert steps[0].max_future == timedelta(minutes=5)
    assert steps[0].max_past == timedelta(days=7)
    assert spec.services["checkout"].team == "payments"
    assert spec.storage.namespace == "obs"


@pytest.mark.parametrize(
    "text,seconds",
    [
        ("500ms", 0.5),
        ("30s", 30),
        ("5m", 300),
        ("2h", 7200),
        ("7d", 604800),
        ("1w", 604800),
        ("1m30s", 90),
        ("1.5h", 5400),
    ],
)
def test_durations(text, seconds):
    assert parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize("bare", [12, 0, 1.5, "60", "0"])
def test_a_bare_number_is_not_a_duration(bare):
    with pytest.raises(ValueError, match="a duration needs a unit"):
        parse_duration(bare)


def test_wrong_types_name_the_key_path_and_the_expectation():
    d = default_data()
    d["flows"][0]["steps"][0]["max_future"] = "soon"
    d["flows"][1]["steps"][0]["max_bytes"] = "big"
    d["storage"]["commit"]["max_rows"] = "fast"
    assert problems(d) == [
        ("storage.commit.max_rows", 'expected an integer, got "fast"'),
        ("flows[0].steps[0].max_future", 'expected a duration like "30s", "5m", "7d", got \'soon\''),
        ("flows[1].steps[0].max_bytes", 'expected an integer, got "big"'),
    ]


def test_unknown_and_missing_keys():
    d = default_data()
    d["flows"][0]["steps"][1]["scrub_everything"] = True
    del d["name"]
    assert problems(d) == [("name", "required key is missing"), ("flows[0].steps[1].scrub_everything", "unknown key")]


def test_unknown_step_kind_and_bounds():
    d = default_data()
    d["flows"][0]["steps"][2]["kind"] = "teleport"
    d["storage"]["commit"]["max_rows"] = 0
    assert problems(d) == [
        ("storage.commit.max_rows", "expected a number > 0, got 0"),
        (
            "flows[0].steps[2]",
            "expected kind to be one of 'validate', 'scrub', 'enrich', 'tail_sample', 'log_sample', 'rollup', 'product', 'dedupe', got 'teleport'",
        ),
    ]


def test_references_to_missing_sources_and_tables():
    d = default_data()
    d["flows"][1]["source"] = "clicks"
    assert problems(d) == [
        ("flows[1].source", "expected one of the source names ['events', 'logs', 'spans', 'metrics'], got 'clicks'")
    ]
    d = default_data()
    d["flows"][0]["sink"]["table"] = "clicks"
    assert problems(d) == [
        (
            "flows[0].sink.table",
            "expected one of the tables ['alerts', 'dead_letters', 'events', 'logs', 'metrics', 'sessions', 'spans', 'traces'], got 'clicks'",
        )
    ]


def test_codec_and_signal_literals():
    d = default_data()
    d["sources"][0]["codec"] = "xml"
    ((path, msg),) = problems(d)
    assert path == "sources[0].codec" and msg.startswith("expected ") and msg.endswith(', got "xml"')


def test_file_level_errors(tmp_path):
    with pytest.raises(SpecError, match="file not found"):
        load_spec(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(bad)
    bad.write_text("- just\n- a list\n")
    with pytest.raises(SpecError, match="expected a mapping at the top level, got list"):
        load_spec(bad)


def test_tables_of_a_spec_without_building_its_transforms():
    import copy

    from pipelines.graph import PipelineGraph
    from tests.helpers import strip_metrics, strip_traces

    base = yaml.safe_load(DEFAULT_SPEC.read_text())
    for data in (
        copy.deepcopy(base),
        strip_traces(copy.deepcopy(base)),
        strip_traces(copy.deepcopy(base), metrics=True),
        strip_metrics(copy.deepcopy(base)),
    ):
        spec = parse_spec(data)
        assert PipelineGraph.tables_of(spec) == sorted(PipelineGraph(spec, counters=RunStats()).table_names)
    assert PipelineGraph.tables_of(parse_spec(strip_traces(copy.deepcopy(base)))) == ["dead_letters", "events", "logs"]


def test_a_tail_sample_step_without_its_sampler_names_the_step():
    """The ``sampler`` of a ``tail_sample`` step is required (its policies have no default):
    the problem names the step's key, not a bare ``policies``."""
    d = default_data()
    del d["flows"][2]["steps"][2]["sampler"]
    assert d["flows"][2]["steps"][2]["kind"] == "tail_sample"
    assert problems(d) == [("flows[2].steps[2].sampler", "required key is missing")]
