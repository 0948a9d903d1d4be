"""A dead letter keeps no person's identifier: its ``raw`` JSON has the values of the wire
fields the tables hold only pseudonymized or anonymized (``user``, ``user_id``,
``client_ip``) redacted whole, and its ``detail`` names a wrong value's kind, never the
value. On both decoders and both hot paths (the compiled ones and the Python reference)."""

from __future__ import annotations

import json

import pytest
import yaml

from core.stats import RunStats
from pipelines import DEFAULT_SPEC
from pipelines.graph import PipelineGraph
from pipelines.loader import parse_spec
from transforms.batch import RawBatch

NOW_MS = 1_763_719_200_000  # 2025-11-21T10:00:00Z
SECRETS = ("u-4f9c2e-secret", "90210417", "203.0.113.77", "198.51.100.7", "u-plain-77", "u-esc-55", "u-log-31")
EVENT = {
    "event_id": "e1",
    "page": "/signup",
    "session_id": "s1",
    "user": "u-plain-77",
    "timestamp": "2025-11-21T10:00:00Z",
    "events": [{"type": "click"}],
    "client_ip": "198.51.100.7",
}
EVENTS = [
    ({**EVENT, "user": {"id": "u-4f9c2e-secret"}}, "user: expected a string, got object"),
    ({**EVENT, "user": 90210417}, "user: expected a string, got number"),
    ({**EVENT, "client_ip": ["203.0.113.77"]}, "client_ip: expected a string, got array"),
    ({**EVENT, "page": 5}, "page: expected a string, got number"),
    ({**EVENT, "timestamp": "noon, my time"}, "timestamp: not an ISO-8601 timestamp with a zone"),
    ({**EVENT, "user": "u-esc-55", "page": 7}, "page: expected a string, got number"),
]
LOG = {
    "timestamp": "2025-11-21T10:00:00Z",
    "service": "checkout",
    "level": "ERROR",
    "message": "failed",
    "user_id": "u-log-31",
}


def _graph(path: str, monkeypatch) -> PipelineGraph:
    d = yaml.safe_load(DEFAULT_SPEC.read_text())
    d["storage"]["catalog"]["warehouse"] = "/nonexistent/personal"  # never opened: only the flows run
    d.setdefault("privacy", {})["pseudonym_key"] = "personal-fields-key-0123456789"
    monkeypatch.setenv("OBSFLOW_HOTPATH", path)
    monkeypatch.setenv("OBSFLOW_DECODER", path)
    try:
        return PipelineGraph(parse_spec(d), counters=RunStats())
    finally:
        monkeypatch.delenv("OBSFLOW_HOTPATH")
        monkeypatch.delenv("OBSFLOW_DECODER")


def _escaped(record: dict) -> bytes:
    """``record`` as JSON with its ``user`` key written with an escape (``"us\\u0065r"``)."""
    return json.dumps(record).replace('"user"', '"us\\u0065r"').encode()


@pytest.mark.parametrize("path", ["native", "python"])
def test_dead_letters_keep_no_identifier_in_raw_or_detail(path, monkeypatch):
    graph = _graph(path, monkeypatch)
    payloads = [json.dumps(r).encode() for r, _ in EVENTS[:-1]] + [_escaped(EVENTS[-1][0])]
    raw = RawBatch("events", "events", 0, payloads, list(range(len(payloads))), [NOW_MS] * len(payloads))
    dead = graph.process(raw).rows["dead_letters"].to_pylist()
    assert [(r["source_offset"], r["reason"], r["detail"]) for r in dead] == [
        (k, "schema_violation", detail) for k, (_, detail) in enumerate(EVENTS)
    ]
    for r in dead:
        stored = json.loads(r["raw"])
        assert stored["user"] == "[REDACTED]" and stored["client_ip"] == "[REDACTED]", r["raw"]
        assert r["raw_text"] is True
    text = repr(dead)
    assert [s for s in SECRETS if s in text] == []

    logs = [{**LOG, "level": 5}, {**LOG, "user_id": {"id": "u-log-31"}, "timestamp": 17}]
    raw = RawBatch("logs", "logs", 0, [json.dumps(x).encode() for x in logs], [0, 1], [NOW_MS] * 2)
    dead = graph.process(raw).rows["dead_letters"].to_pylist()
    assert [(r["source_offset"], r["detail"]) for r in dead] == [
        (0, "level: expected a string, got number"),
        (1, "timestamp: expected an ISO-8601 timestamp string with a zone, got number"),
    ]
    assert [json.loads(r["raw"])["user_id"] for r in dead] == ["[REDACTED]", "[REDACTED]"]
    assert "u-log-31" not in repr(dead)
