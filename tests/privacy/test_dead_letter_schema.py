"""A dead-letter table made before ``raw_text`` existed gets the column when the
pipeline opens it, and the pipeline writes into it (old rows read null)."""

from __future__ import annotations

import json

import pyarrow as pa
from pyiceberg.schema import Schema

from core.stats import RunStats
from pipelines.graph import PipelineGraph, write_plan
from pipelines.loader import parse_spec
from schemas.tables import DEAD_LETTERS
from sinks.catalog import open_catalog
from sinks.iceberg import IcebergSink
from transforms.batch import RawBatch


def test_an_old_dead_letter_table_gets_raw_text(tmp_path):
    spec = parse_spec(
        {
            "name": "v",
            "storage": {"catalog": {"warehouse": str(tmp_path / "wh")}},
            "privacy": {"pseudonym_key": "schema-key-0123456789"},
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
    catalog = open_catalog(spec.storage)
    catalog.create_namespace("obs")
    old = Schema(*[f for f in DEAD_LETTERS.schema.fields if f.name != "raw_text"])
    table = catalog.create_table("obs.dead_letters", schema=old, partition_spec=DEAD_LETTERS.partition_spec())
    old_row = {f.name: None for f in old.fields}
    table.append(
        pa.Table.from_pylist(
            [
                {
                    **old_row,
                    "received_at": 0,
                    "reason": "format_violation",
                    "detail": "x",
                    "source": "s",
                    "source_topic": "t",
                    "source_partition": 0,
                    "source_offset": 0,
                    "raw_size": 0,
                    "raw_truncated": False,
                }
            ],
            schema=table.schema().as_arrow(),
        )
    )
    graph = PipelineGraph(spec, counters=RunStats())
    sink = IcebergSink(spec, graph.table_names, plan=write_plan(spec), counters=RunStats())
    sink.write(
        graph.process(
            RawBatch(
                "events",
                "events",
                0,
                [b"not json jane@example.org", json.dumps({"x": 1}).encode()],
                [0, 1],
                [1_763_000_000_000] * 2,
            )
        )
    )
    sink.close()
    rows = catalog.load_table("obs.dead_letters").scan().to_arrow().sort_by("source_topic").to_pylist()
    assert [(r["source_topic"], r["raw_text"], r["raw"]) for r in rows] == [
        ("events", True, b"not json [EMAIL]"),
        ("events", True, b'{"x": 1}'),
        ("t", None, None),
    ]
