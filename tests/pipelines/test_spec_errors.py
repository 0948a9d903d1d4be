"""Issue 19 item 12 and issue 16 item 2: every mutated spec that used to raise something
other than a spec error (or load, then crash or hang on the first records) fails at load
with a :class:`SpecError` naming the key path and what was expected; through the CLI that
is exit 2 and no traceback. And one duration grammar: every duration key reads ``1m30s``,
``500ms``, ``7d``, and a bare number is refused with a message asking for a unit."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from core.stats import RunStats
from pipelines import DEFAULT_SPEC
from pipelines.loader import SpecError, load_spec, parse_spec
from tests.helpers import default_data
from tests.helpers import spec_problems as problems

REPO = Path(__file__).resolve().parents[2]


def flow(d: dict, name: str) -> dict:
    return next(f for f in d["flows"] if f["name"] == name)


def step(d: dict, flow_name: str, kind: str) -> dict:
    return next(s for s in flow(d, flow_name)["steps"] if s["kind"] == kind)


def set_path(d: dict, path: tuple, value) -> dict:
    node = d
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    return d


# -- durations: one grammar, bounded --------------------------------------------------------

# every duration key of the default spec (with the units spelled as a user would)
DURATION_KEYS = [
    (("kafka", "poll_timeout"), "kafka.poll_timeout"),
    (("outputs", "delivery_timeout"), "outputs.delivery_timeout"),
    (("stages", "idle_advance_after"), "stages.idle_advance_after"),
    (("flows", 0, "steps", 0, "max_future"), "flows[0].steps[0].max_future"),
    (("flows", 0, "steps", 3, "config", "session_gap"), "flows[0].steps[3].config.session_gap"),
    (("flows", 2, "steps", 2, "log_wait"), "flows[2].steps[2].log_wait"),
    (("flows", 2, "steps", 2, "sampler", "decision_wait"), "flows[2].steps[2].sampler.decision_wait"),
    (("flows", 2, "steps", 2, "red", "allowed_lateness"), "flows[2].steps[2].red.allowed_lateness"),
    (("flows", 3, "steps", 1, "config", "watermark_delay"), "flows[3].steps[1].config.watermark_delay"),
    (("alerts", "rules", 0, "for"), "alerts.rules[0].for"),
    (("alerts", "route", "group_wait"), "alerts.route.group_wait"),
    (("storage", "commit", "max_seconds"), "storage.commit.max_seconds"),
    (("storage", "commit", "retry_seconds"), "storage.commit.retry_seconds"),
    (("alerts", "alertmanager_timeout"), "alerts.alertmanager_timeout"),
    (("collect", "request_timeout"), "collect.request_timeout"),
    (("collect", "drain_timeout"), "collect.drain_timeout"),
]


def default_data_with_collect() -> dict:
    """The default spec plus an empty ``collect:`` section (its keys all have defaults)."""
    d = default_data()
    d.setdefault("collect", {})
    return d


def test_the_default_spec_has_the_keys_this_file_mutates():
    d = default_data_with_collect()
    for path, _ in DURATION_KEYS:
        set_path(d, path, "1m30s")
    spec = parse_spec(d)
    assert (
        spec.kafka.poll_timeout
        == spec.flows[2].steps[2].sampler.decision_wait
        == spec.alerts.rules[0].for_
        == timedelta(seconds=90)
    )
    assert spec.flows[3].steps[1].config.delay_ms == 90_000 and spec.flows[0].steps[3].config.gap_ms == 90_000
    assert (
        spec.storage.commit.max_seconds
        == spec.storage.commit.retry_seconds
        == spec.alerts.alertmanager_timeout
        == timedelta(seconds=90)
    )
    assert spec.collect.request_timeout == spec.collect.drain_timeout == timedelta(seconds=90)


@pytest.mark.parametrize(
    "text,ms",
    [
        ("1m30s", 90_000),
        ("500ms", 500),
        ("7d", 604_800_000),
        ("1.5h", 5_400_000),
        ("2h45m", 9_900_000),
        ("1w", 604_800_000),
    ],
)
@pytest.mark.parametrize("path,key", DURATION_KEYS)
def test_every_duration_key_reads_the_same_grammar(path, key, text, ms):
    if key == "stages.idle_advance_after" and ms > 86_400_000:
        pytest.skip("bounded to a day")
    if key in ("kafka.poll_timeout",) and ms > 3_600_000:
        pytest.skip("bounded to an hour")
    if key in ("outputs.delivery_timeout", "storage.commit.max_seconds") and ms > 86_400_000:
        pytest.skip("bounded to a day")
    if key == "alerts.alertmanager_timeout" and ms > 3_600_000:
        pytest.skip("bounded to an hour")
    if key == "collect.request_timeout" and ms > 300_000 or key == "collect.drain_timeout" and ms > 600_000:
        pytest.skip("bounded to minutes")
    d = set_path(default_data_with_collect(), path, text)
    spec = parse_spec(d)
    node = spec
    for k in path:
        node = node[k] if isinstance(k, int) else getattr(node, {"for": "for_"}.get(k, k))
    assert int(node.total_seconds() * 1000) == ms


@pytest.mark.parametrize("bare", [60, 0, 1.5, "60"])
@pytest.mark.parametrize("path,key", DURATION_KEYS)
def test_a_bare_number_is_refused_asking_for_a_unit(path, key, bare):
    d = set_path(default_data_with_collect(), path, bare)
    ((got_path, msg),) = problems(d)
    assert got_path == key
    assert msg == f'a duration needs a unit, e.g. "500ms", "60s", "1m30s", "7d": got the bare number {bare!r}'


def test_rollup_resolutions_and_alert_resolutions_share_the_grammar():
    d = default_data()
    step(d, "metric_rollups", "rollup")["config"]["resolutions"] = ["30s", "1m30s"]
    d["alerts"]["rules"][0]["resolution"] = "90s"
    d["alerts"]["rules"][1]["resolution"] = "30000ms"
    spec = parse_spec(d)
    assert spec.flows[3].steps[1].config.resolutions_ms == [30_000, 90_000]
    d["alerts"]["rules"][1]["resolution"] = "2m"
    assert problems(d) == [
        ("alerts.rules[1].resolution", "expected one of the rollup resolutions ['30s', '90s'], got '2m'")
    ]


@pytest.mark.parametrize(
    "value,expected",
    [
        (float("inf"), "a duration needs a unit"),
        ("99999999999d", "expected a duration of at most 36500d, got '99999999999d'"),
        ("-300s", 'expected a duration like "30s", "5m", "7d", got \'-300s\''),
        (-300, "a duration needs a unit"),
        ([5], 'expected a duration like "30s", "5m", "7d", got list [5]'),
        (True, 'expected a duration like "30s", "5m", "7d", got bool True'),
    ],
)
@pytest.mark.parametrize(
    "path,key",
    [
        (("flows", 0, "steps", 0, "max_future"), "flows[0].steps[0].max_future"),
        (("kafka", "poll_timeout"), "kafka.poll_timeout"),
        (("flows", 2, "steps", 2, "sampler", "decision_wait"), "flows[2].steps[2].sampler.decision_wait"),
    ],
)
def test_huge_infinite_negative_and_wrong_typed_durations_fail_at_load(path, key, value, expected):
    ((got_path, msg),) = problems(set_path(default_data(), path, value))
    assert got_path == key and msg.startswith(expected), msg


@pytest.mark.parametrize(
    "path,key,value,expected",
    [
        (
            ("flows", 2, "steps", 2, "red", "window"),
            "flows[2].steps[2].red.window",
            "0s",
            "expected a duration >= 1ms, got 0s",
        ),
        (
            ("flows", 0, "steps", 3, "config", "report_resolution"),
            "flows[0].steps[3].config.report_resolution",
            "0.0001ms",
            "expected a duration >= 1ms, got 0s",
        ),
        (
            ("flows", 3, "steps", 1, "config", "resolutions"),
            "flows[3].steps[1].config.resolutions[0]",
            ["0s"],
            "expected a duration >= 1ms, got 0s",
        ),
        (("kafka", "poll_timeout"), "kafka.poll_timeout", "2h", "expected a duration <= 1h, got 2h"),
    ],
)
def test_zero_windows_and_over_long_timeouts_fail_at_load(path, key, value, expected):
    assert problems(set_path(default_data(), path, value)) == [(key, expected)]


# -- numbers: bounded ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "path,key,value,expected",
    [
        (
            ("flows", 2, "steps", 2, "shards"),
            "flows[2].steps[2].shards",
            2**70,
            "expected a number <= 256, got 1180591620717411303424",
        ),
        (
            ("flows", 3, "steps", 1, "shards"),
            "flows[3].steps[1].shards",
            100_000,
            "expected a number <= 256, got 100000",
        ),
        (("flows", 0, "steps", 3, "shards"), "flows[0].steps[3].shards", 0, "expected a number > 0, got 0"),
        (
            ("sources", 0, "partitions"),
            "sources[0].partitions",
            2**70,
            "expected a number <= 1024, got 1180591620717411303424",
        ),
        (
            ("storage", "commit", "max_rows"),
            "storage.commit.max_rows",
            float("inf"),
            "expected a finite number, got inf",
        ),
        (
            ("storage", "commit", "max_rows"),
            "storage.commit.max_rows",
            float("nan"),
            "expected a finite number, got nan",
        ),
        (
            ("flows", 1, "steps", 3, "config", "level_percentages"),
            "flows[1].steps[3].config.level_percentages.DEBUG",
            {"DEBUG": 101},
            "expected a number <= 100, got 101",
        ),
        (
            ("flows", 0, "steps", 0, "event_types"),
            "flows[0].steps[0].event_types",
            [],
            "expected at least 1 item, got []",
        ),
        (("flows", 1, "steps", 0, "levels"), "flows[1].steps[0].levels", [], "expected at least 1 item, got []"),
    ],
)
def test_absurd_counts_and_empty_lists_fail_at_load(path, key, value, expected):
    assert problems(set_path(default_data(), path, value)) == [(key, expected)]


# -- specs that loaded, then crashed or hung on the first records ----------------------------


def test_a_codec_that_cannot_decode_the_signal_fails_at_load():
    d = default_data()
    d["sources"][0]["codec"] = "otlp_proto"
    ((path, msg),) = problems(d)
    assert (
        path == "sources[0].codec"
        and msg.startswith("expected a codec that decodes signal 'event'")
        and msg.endswith("got 'otlp_proto'")
    )


def test_sources_no_flow_reads_fail_at_load():
    d = default_data()
    d["flows"] = []
    assert problems(d)[0] == (
        "sources[0].name",
        "expected a source that some flow reads (flows[*].source), got 'events'",
    )
    d = default_data()
    d["flows"].append(dict(flow(d, "service_logs"), name="again"))
    assert problems(d) == [("flows[4].source", "expected a source no other flow reads, got 'logs'")]


@pytest.mark.parametrize(
    "rule,key,expected",
    [
        (
            {"name": "x", "source": "logs", "filter": {"nope": "a"}},
            "filter.nope",
            "expected a column the logs rows have",
        ),
        ({"name": "x", "source": "logs", "labels": ["nope"]}, "labels[0]", "expected a column the logs rows have"),
        ({"name": "x", "source": "events", "value": "nope"}, "value", "expected a column the events rows have"),
        ({"name": "x", "source": "events", "value": "page"}, "value", "expected a numeric column, got 'page (string)'"),
        (
            {"name": "x", "source": "logs", "time_column": "level"},
            "time_column",
            "expected a timestamp column, got 'level'",
        ),
        ({"name": "x", "source": "logs", "labels": ["attributes"]}, "labels[0]", "expected a column of a scalar type"),
        (
            {"name": "x", "source": "events", "filter": {"form_step": "two"}},
            "filter.form_step",
            "expected values of one type that casts to the column's type int32, got 'two'",
        ),
        (
            {"name": "x", "source": "events", "filter": {"form_step": 2**40}},
            "filter.form_step",
            "expected values of one type",
        ),
        (
            {"name": "x", "source": "events", "filter": {"duration_ms": 1.5}},
            "filter.duration_ms",
            "expected values of one type",
        ),
        (
            {"name": "x", "source": "logs", "filter": {"level": ["ERROR", 5]}},
            "filter.level",
            "expected values of one type",
        ),
        (
            {"name": "x", "source": "logs", "filter": {"level": []}},
            "filter.level",
            "expected a value or a non-empty list of values",
        ),
    ],
)
def test_derive_rules_naming_missing_columns_or_wrong_typed_values_fail_at_load(rule, key, expected):
    d = default_data()
    step(d, "metric_rollups", "rollup")["derive"].append(rule)
    ((path, msg),) = problems(d)
    assert path == f"flows[3].steps[1].derive[2].{key}" and msg.startswith(expected), msg


def test_a_negative_max_future_fails_at_load():
    d = default_data()
    step(d, "product_events", "validate")["max_future"] = -300
    ((path, msg),) = problems(d)
    assert path == "flows[0].steps[0].max_future" and "needs a unit" in msg


# -- alert matchers of the wrong type -----------------------------------------------------


@pytest.mark.parametrize("matchers", [5, [5], [None], 'severity="P0"', {"a": 1}])
@pytest.mark.parametrize("where", ["route", "inhibit"])
def test_wrong_typed_matchers_fail_at_load(matchers, where):
    d = default_data()
    if where == "route":
        d["alerts"]["route"]["routes"][0]["matchers"] = matchers
        key = "alerts.route.routes[0].matchers"
    else:
        d["alerts"]["inhibit_rules"][0]["source_matchers"] = matchers
        key = "alerts.inhibit_rules[0].source_matchers"
    ((path, msg),) = problems(d)
    assert path == key and msg.startswith("expected a "), msg


# -- files that are not a readable spec ------------------------------------------------------


def test_file_level_problems_are_spec_errors(tmp_path):
    cases = {
        "latin1.yaml": "name: caf\xe9\n".encode("latin-1"),
        "deep.yaml": ("a: " + "[" * 5000 + "]" * 5000 + "\n").encode(),
        "deepmap.yaml": ("".join("  " * i + f"k{i}:\n" for i in range(400)) + "  " * 400 + "v: 1\n").encode(),
        "hugeint.yaml": DEFAULT_SPEC.read_text()
        .replace("max_bytes: 65536,", "max_bytes: " + "9" * 5000 + ",", 1)
        .encode(),
    }
    expected = {
        "latin1.yaml": ("", "expected UTF-8 text, got byte 0xe9 at offset 9"),
        "deep.yaml": ("", "levels of nesting"),
        "deepmap.yaml": ("", "levels of nesting"),
        "hugeint.yaml": ("flows[0].steps[0].max_bytes", "expected an integer of at most 30 digits, got one of 5000"),
    }
    for name, data in cases.items():
        p = tmp_path / name
        p.write_bytes(data)
        with pytest.raises(SpecError) as e:
            load_spec(p)
        ((path, msg),) = e.value.problems
        want_path, want_msg = expected[name]
        if name == "deepmap.yaml":
            assert path == ".".join(f"k{i}" for i in range(32)) and msg == "expected at most 32 levels of nesting"
        else:
            assert path == want_path and want_msg in msg, (name, e.value)
    with pytest.raises(SpecError, match="expected a YAML file, got a directory"):
        load_spec(tmp_path)


def test_the_cli_exits_2_with_the_key_path_and_no_traceback(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    d = default_data()
    d["alerts"]["route"]["routes"][0]["matchers"] = 5
    step(d, "product_events", "validate")["max_future"] = float("inf")
    bad.write_text(yaml.safe_dump(d))
    (tmp_path / "latin1.yaml").write_bytes("name: caf\xe9\n".encode("latin-1"))
    (tmp_path / "deep.yaml").write_text("a: " + "[" * 5000 + "]" * 5000 + "\n")
    (tmp_path / "huge.yaml").write_text(DEFAULT_SPEC.read_text().replace("shards: 4", "shards: " + "7" * 5000, 1))
    expected = {
        bad: [
            "  flows[0].steps[0].max_future: a duration needs a unit",
            '  alerts.route.routes[0].matchers: expected a list of matchers like [severity="P0"], got int 5',
        ],
        tmp_path: ["expected a YAML file, got a directory"],
        tmp_path / "latin1.yaml": ["expected UTF-8 text, got byte 0xe9 at offset 9"],
        tmp_path / "deep.yaml": ["levels of nesting"],
        tmp_path / "huge.yaml": [
            "  flows[0].steps[3].shards: expected an integer of at most 30 digits, got one of 5000"
        ],
    }
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    for spec, lines in expected.items():
        if spec.suffix == ".yaml" and spec != bad:  # in process: the same main() the command runs
            from runners.cli import main

            assert main(["tables", "--spec", str(spec), "--warehouse", str(tmp_path / "wh")]) == 2
            err = capsys.readouterr().err
            assert err.startswith(f"obsflow: invalid pipeline spec {spec}:\n") and all(x in err for x in lines), err
            continue
        r = subprocess.run(
            [sys.executable, "-m", "runners.cli", "tables", "--spec", str(spec), "--warehouse", str(tmp_path / "wh")],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
            cwd=REPO,
            check=False,
        )
        assert r.returncode == 2, r.stderr
        assert "Traceback" not in r.stderr and r.stdout == ""
        assert r.stderr.startswith(f"obsflow: invalid pipeline spec {spec}:\n")
        for line in lines:
            assert line in r.stderr, (spec, r.stderr)


def test_the_pseudonym_key_settings_are_checked_at_load_without_showing_the_key():
    d = default_data()
    d["privacy"]["pseudonym_key_env"] = "not a name"
    d["privacy"]["pseudonym_key"] = "short-secret"
    assert problems(d) == [
        ("privacy.pseudonym_key_env", 'expected text matching ^[A-Za-z_][A-Za-z0-9_]{0,254}$, got "not a name"'),
        ("privacy.pseudonym_key", "expected text of at least 16 characters, got 12 characters"),
    ]


def _numbers_without_bounds() -> list[str]:
    """Every int or float field reachable from PipelineSpec without both a lower and an
    upper bound (Field constraints, also inside Annotated dict/list items)."""
    import types
    import typing

    import annotated_types as at
    from pydantic import BaseModel

    from pipelines.spec import PipelineSpec

    seen, out = set(), []

    def leaves(t, metas):
        origin = typing.get_origin(t)
        if origin is typing.Annotated:
            inner, *extra = typing.get_args(t)
            more = [m for x in extra for m in (getattr(x, "metadata", None) or [x])]
            return leaves(inner, metas + more)
        if origin in (typing.Union, types.UnionType, list, dict, tuple):
            args = typing.get_args(t)[1:] if origin is dict else typing.get_args(t)
            return [leaf for a in args for leaf in leaves(a, metas)]
        return [(t, metas)]

    def walk(model):
        if model in seen:
            return
        seen.add(model)
        for name, f in model.model_fields.items():
            for t, metas in leaves(f.annotation, list(f.metadata)):
                if isinstance(t, type) and issubclass(t, BaseModel):
                    walk(t)
                elif t in (int, float):
                    lo = any(isinstance(m, (at.Ge, at.Gt)) for m in metas)
                    hi = any(isinstance(m, (at.Le, at.Lt)) for m in metas)
                    if not (lo and hi):
                        out.append(f"{model.__name__}.{name}")

    walk(PipelineSpec)
    return sorted(set(out))


def test_every_number_in_the_spec_models_is_bounded():
    # values compared with data (thresholds, attribute bounds, derive filter values) are
    # only required to be finite (allow_inf_nan=False) and, for filters, castable to their column;
    # numeric_attribute bounds are int64, as the Collector's
    assert _numbers_without_bounds() == ["AlertRule.threshold", "DeriveRule.filter"]


def test_step_kinds_and_policy_types_come_from_the_models_and_leave_the_key_path():
    d = default_data()
    step(d, "metric_rollups", "rollup")["shards"] = 0
    step(d, "product_events", "product")["shards"] = 0
    step(d, "traces", "tail_sample")["sampler"]["policies"][1]["latency"]["threshold_ms"] = -1
    del step(d, "traces", "tail_sample")["sampler"]["policies"][0]["type"]
    assert problems(d) == [
        ("flows[0].steps[3].shards", "expected a number > 0, got 0"),
        (
            "flows[2].steps[2].sampler.policies[0]",
            (
                "a policy needs a 'type' key (one of ['always_sample', 'and', 'boolean_attribute', "
                "'bytes_limiting', 'composite', 'drop', 'latency', 'not', 'numeric_attribute', "
                "'ottl_condition', 'probabilistic', 'rate_limiting', 'span_count', 'status_code', "
                "'string_attribute', 'trace_flags', 'trace_state'])"
            ),
        ),
        ("flows[2].steps[2].sampler.policies[1].latency.threshold_ms", "expected a number >= 0, got -1"),
        ("flows[3].steps[1].shards", "expected a number > 0, got 0"),
    ]


@pytest.mark.parametrize(
    "label,source,flow_name,change",
    [
        ("geo_country", "events", "product_events", ("enrich", "geo", False)),
        ("device", "events", "product_events", ("enrich", "user_agent", False)),
        ("service_team", "logs", "service_logs", ("enrich", "service_metadata", False)),
        ("user_pseudonym", "logs", "service_logs", ("scrub", None, None)),
        ("client_ip_anon", "events", "product_events", ("scrub", "anonymize_ip", False)),
    ],
)
def test_derive_rules_naming_a_column_the_flow_does_not_add_fail_at_load(label, source, flow_name, change):
    d = default_data()
    rule = {"name": "x", "source": source, "labels": [label]}
    step(d, "metric_rollups", "rollup")["derive"].append(rule)
    parse_spec(copy.deepcopy(d))  # with the step and option on, the column is there
    kind, option, value = change
    if option is None:
        flow(d, flow_name)["steps"] = [s for s in flow(d, flow_name)["steps"] if s["kind"] != kind]
    else:
        step(d, flow_name, kind)[option] = value
    ((path, msg),) = problems(d)
    assert path == "flows[3].steps[1].derive[2].labels[0]" and msg.startswith(
        f"expected a column the {source} rows have"
    )
    assert msg.endswith(f"got {label!r}")


@pytest.mark.parametrize(
    "kind,into,expected",
    [
        (
            "scrub",
            "product_events",
            ("flows[0].steps[4]", "expected each step kind at most once in a flow, got 'scrub'"),
        ),
        (
            "enrich",
            "service_logs",
            ("flows[1].steps[4]", "expected each step kind at most once in a flow, got 'enrich'"),
        ),
        (
            "tail_sample",
            "service_logs",
            ("flows[1].steps[4]", "expected a tail_sample step on a flow whose source has signal: span, got 'log'"),
        ),
        (
            "product",
            "service_logs",
            ("flows[1].steps[4]", "expected a product step on a flow whose source has signal: event, got 'log'"),
        ),
    ],
)
def test_repeated_steps_fail_at_load(kind, into, expected):
    d = default_data()
    source_flow = next(f for f in d["flows"] if any(s["kind"] == kind for s in f["steps"]))
    flow(d, into)["steps"].append(copy.deepcopy(step(d, source_flow["name"], kind)))
    assert problems(d) == [expected]


def test_a_second_event_flow_feeds_the_one_product_stage_with_the_same_step_only():
    """Two event topics (e.g. JSON and Avro) may both feed the product stage, each flow with
    the same product step; a product step that differs would be ignored (the stage is built
    from the first), so it fails at load."""
    from pipelines.graph import PipelineGraph

    d = default_data()
    d["sources"].append(
        {"name": "events_avro", "topic": "events_avro", "signal": "event", "codec": "avro", "partitions": 1}
    )
    second = copy.deepcopy(flow(d, "product_events"))
    second.update(name="product_events_avro", source="events_avro")
    d["flows"].append(second)
    spec = parse_spec(copy.deepcopy(d))
    graph = PipelineGraph(spec, counters=RunStats())
    assert graph.flows["events"].product_def is not None and graph.flows["events_avro"].product_def is not None
    step(d, "product_events_avro", "product")["shards"] = 2
    n = len(d["flows"]) - 1
    assert problems(d) == [
        (
            f"flows[{n}].steps[3]",
            (
                "expected the same product step as flows[0].steps[3] (one product stage, "
                "built from the first), got 'a different one'"
            ),
        )
    ]
