"""Validation: an unknown event type is rejected whatever else the batch holds (issue 13
item 3), and a rejected record names every problem it has, with the close name of an
unknown field (issue 13 item 4)."""

from __future__ import annotations

import json

import pytest

from core.stats import RunStats
from pipelines.graph import PipelineGraph
from pipelines.loader import parse_spec
from transforms.batch import RawBatch

T = 1_763_000_000_000
ISO = "2025-11-13T02:13:20Z"  # = T
TYPES = "['click', 'error', 'form_start', 'form_step', 'form_submit', 'page_view', 'scroll', 'signup_complete']"


@pytest.fixture()
def graph(tmp_path):
    spec = parse_spec(
        {
            "name": "v",
            "storage": {"catalog": {"warehouse": str(tmp_path / "wh")}},
            "privacy": {"pseudonym_key": "validation-key-0123456789"},
            "sources": [{"name": "events", "topic": "events", "signal": "event"}],
            "flows": [
                {
                    "name": "p",
                    "source": "events",
                    "sink": {"table": "events"},
                    "steps": [{"kind": "validate"}, {"kind": "scrub"}],
                }
            ],
        }
    )
    return PipelineGraph(spec, counters=RunStats())


def process(graph, docs: list[dict]):
    values = [json.dumps(d).encode() for d in docs]
    out = graph.process(RawBatch("events", "events", 0, values, list(range(len(values))), [T] * len(values)))
    dead = {r["source_offset"]: (r["reason"], r["detail"]) for r in out.rows["dead_letters"].to_pylist()}
    return out.rows["events"], dead


def envelope(event_id: str, events: list[dict]) -> dict:
    return {"event_id": event_id, "timestamp": ISO, "page": "/", "session_id": "s1", "events": events}


def test_an_unknown_event_type_is_rejected_beside_an_interaction_without_type(graph):
    tap = envelope("e1", [{"type": "tap"}])
    untyped = envelope("e2", [{"target": "#x"}])
    good = envelope("e3", [{"type": "click", "target": "#y"}])
    for docs in ([tap], [tap, untyped, good], [untyped, tap, good]):
        rows, dead = process(graph, docs)
        assert rows.column("event_id").to_pylist() == (["e3"] if good in docs else [])
        assert sorted(dead) == sorted(docs.index(d) for d in (tap, untyped) if d in docs)
    for docs in ([tap], [tap, untyped, good], [untyped, tap, good]):
        rows, dead = process(graph, docs)
        at = docs.index(tap)
        assert dead[at] == ("schema_violation", f"events[0].type: unknown event type 'tap'; expected one of {TYPES}")
        if untyped in docs:
            assert dead[docs.index(untyped)] == (
                "schema_violation",
                "events[0].type: required field is missing or null",
            )


def test_every_interaction_problem_is_named_by_position(graph):
    doc = envelope("e1", [{"type": "click"}, {"type": "tap"}, {"target": "#x"}, {"type": "swipe"}])
    _, dead = process(graph, [doc])
    assert dead[0] == (
        "schema_violation",
        f"events[1].type: unknown event type 'tap'; expected one of {TYPES}; "
        "events[2].type: required field is missing or null; "
        f"events[3].type: unknown event type 'swipe'; expected one of {TYPES}",
    )


def test_the_design_documents_payload_gets_every_problem_and_close_names(graph):
    doc = {
        "page": "/signup",
        "timeStamp": ISO,
        "events": [{"click": "#next"}, {"scroll": "50%"}, {"error": {"stackTrace": "Error: x"}}],
        "user": "u1",
        "location": "Berlin",
    }
    doc2 = {**envelope("e9", [{"type": "click", "targt": "#a"}]), "sessionID": "s", "session_id": None}
    rows, dead = process(graph, [doc, doc2])
    assert rows.num_rows == 0
    assert dead[0] == (
        "schema_violation",
        "; ".join(
            [
                "event_id: required field is missing or null",
                "timestamp: required field is missing or null",
                "session_id: required field is missing or null",
                "events[0].type: required field is missing or null",
                "events[1].type: required field is missing or null",
                "events[2].type: required field is missing or null",
                "unknown field 'timeStamp' (did you mean 'timestamp'?)",
                """events[0]: unknown field 'click' (an interaction names its kind in 'type': {"type": "click", ...})""",
                """events[1]: unknown field 'scroll' (an interaction names its kind in 'type': {"type": "scroll", ...})""",
                """events[2]: unknown field 'error' (an interaction names its kind in 'type': {"type": "error", ...})""",
            ]
        ),
    )
    assert dead[1] == (
        "schema_violation",
        "session_id: required field is missing or null; "
        "unknown field 'sessionID' (did you mean 'session_id'?); "
        "events[0]: unknown field 'targt' (did you mean 'target'?)",
    )


def test_problems_are_bounded(graph):
    doc = envelope("e1", [{"type": f"t{i}"} for i in range(30)])
    _, dead = process(graph, [doc])
    detail = dead[0][1]
    assert detail.count("unknown event type") == 10 and detail.endswith("… (20 more)")
    doc = {f"field{i}": 1 for i in range(30)}
    _, dead = process(graph, [doc])
    assert dead[0][1].count("; ") == 16 and dead[0][1].endswith("unknown field 'field9'; … (20 more unknown fields)")
