"""Fuzz: mixed batches of good and mutated records, every signal x codec, driven through
``PipelineGraph.process`` (decode, validate, scrub, enrich, shape, and the inputs of the
stateful stages) as the runners drive it (one graph per codec, its state carried from
batch to batch).

For every batch: no exception escapes; ``in = accepted + dead-lettered + dropped``
exactly (messages and items for OTLP); every good record is accepted with exactly the
rows it makes alone, at its own offset; every dead letter has a documented reason, a
non-empty detail, its own offset (and item index) and its raw bytes (the record's, scrubbed and cut
to ``dead_letters.max_raw_bytes``, or the item's). The CI run is bounded and
derandomized; ``make fuzz`` runs the long one (see conftest.py)."""

from __future__ import annotations

import json
import random
import re
from collections import defaultdict
from functools import cache

import pyarrow as pa
import pyarrow.compute as pc
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from core.stats import RunStats
from pipelines import DEFAULT_SPEC
from pipelines.graph import PipelineGraph
from pipelines.loader import parse_spec
from schemas.tables import REASONS
from tests.fuzz.corpus import PAIRS, Seed, mutate, seeds
from transforms.batch import RawBatch

pytestmark = pytest.mark.fuzz

SOURCE = {"event": "events", "log": "logs", "span": "spans", "metric": "metrics"}


@cache
def graph_for(codec: str) -> PipelineGraph:
    """The default spec with every source that can use ``codec`` switched to it."""
    d = yaml.safe_load(DEFAULT_SPEC.read_text())
    d["storage"]["catalog"]["warehouse"] = "/nonexistent/fuzz"  # never opened: only the flows run
    for s in d["sources"]:
        if codec in ("json", "avro") or s["signal"] != "event":
            s["codec"] = codec
    # a batch repeats good seeds (the same event_id): the codecs' verdicts are checked, not the dedupe
    for f in d["flows"]:
        if f["source"] == "events":
            f["steps"].append({"kind": "dedupe", "enabled": False})
    return PipelineGraph(parse_spec(d), counters=RunStats())


def canon_rows(out, dead_table: str, offsets: list[int]) -> dict[int, list[str]]:
    """Every row the batch produced for a table or a stage from the records at
    ``offsets``, by source offset (ingest time and offset left out), as sorted reprs.
    (Only those rows are read as Python values: a mutant's may hold a timestamp beyond
    Python's datetime, which is for the stages to handle, issue 19 item 8.)"""
    got: dict[int, list[str]] = defaultdict(list)
    tables = [t for name, t in out.rows.items() if name != dead_table]
    tables += [si.table for si in out.stage_inputs if si.table is not None]
    for t in tables:
        if "source_offset" not in t.column_names:
            continue
        t = t.filter(pc.is_in(t.column("source_offset"), value_set=pa.array(offsets, pa.int64())))
        for r in t.to_pylist():
            off = r.pop("source_offset")
            r.pop("ingested_at", None)
            got[off].append(repr(sorted(r.items())))
    return {k: sorted(v) for k, v in got.items()}


class World:
    """One signal x codec: its graph, good seeds, and what each seed makes alone."""

    def __init__(self, signal: str, codec: str):
        self.signal, self.codec = signal, codec
        self.graph = graph_for(codec)
        self.source = SOURCE[signal]
        self.flow = self.graph.flows[self.source]
        self.dead_table = self.flow.dead_table
        self.max_raw = self.graph.spec.dead_letters.max_raw_bytes
        self.seeds: list[Seed] = []
        self.alone: list[list[str]] = []
        for s in seeds(signal, codec):
            out = self.process([s.value], [s.arrival_ms], base=0)
            if out.rows[self.dead_table].num_rows == 0:  # good: it decodes and validates alone
                self.seeds.append(s)
                self.alone.append(canon_rows(out, self.dead_table, [0]).get(0, []))
        assert len(self.seeds) >= 8, f"too few good seeds for {signal}/{codec}"

    def process(self, values, timestamps, base: int):
        raw = RawBatch(
            self.source, self.source, 0, list(values), list(range(base, base + len(values))), list(timestamps)
        )
        return self.graph.process(raw)


@cache
def world(signal: str, codec: str) -> World:
    return World(signal, codec)


def check_batch(w: World, plan: list[tuple[bool, int, int]], base: int = 1000) -> None:
    values, stamps, good = [], [], {}
    for k, (is_good, seed_no, rseed) in enumerate(plan):
        s = w.seeds[seed_no % len(w.seeds)]
        if is_good:
            values.append(s.value)
            good[base + k] = seed_no % len(w.seeds)
        else:
            other = w.seeds[(seed_no + 1) % len(w.seeds)].value
            values.append(mutate(s.value, other, w.signal, w.codec, random.Random(rseed)))
        stamps.append(s.arrival_ms)
    out = w.process(values, stamps, base)  # no exception may escape

    n = len(values)
    dead = out.rows[w.dead_table].to_pylist()
    assert out.records_in == n
    assert out.records_in == out.records_accepted + out.records_dead + out.records_dropped, out
    if out.per_item:
        assert out.items_in == out.items_accepted + out.items_dead + out.items_dropped, out
        assert out.items_dead == len(dead)
        assert out.records_accepted >= len(good)
    else:
        assert out.records_dead == len(dead) and out.records_accepted >= len(good)
    keys = [(d["source_offset"], d["item_index"]) for d in dead]
    assert len(keys) == len(set(keys)), "a record or item dead-lettered twice"
    for d in dead:
        assert d["reason"] in REASONS, d
        assert isinstance(d["detail"], str) and d["detail"].strip(), d
        assert base <= d["source_offset"] < base + n, d
        v = values[d["source_offset"] - base]
        if d["item_index"] is None:
            # raw is the record's bytes scrubbed of personal data (issue 13), then cut
            scrubbed = None if v is None else w.flow.scrubber.scrub_raw([v])[0][0]
            assert d["raw"] == (None if v is None else scrubbed[: w.max_raw]), d
            assert d["raw_size"] == (0 if v is None else len(v))
            assert d["raw_truncated"] == (v is not None and len(v) > w.max_raw)
        else:
            assert out.per_item and d["raw"] is not None and d["item_index"] >= 0, d
            assert item_parses(w, d["raw"], v, d["raw_truncated"]), d  # the item's own bytes, in the message's encoding
    dead_offsets = {d["source_offset"] for d in dead}
    rows = canon_rows(out, w.dead_table, list(good))
    for off, seed_no in good.items():
        assert off not in dead_offsets, (off, [d for d in dead if d["source_offset"] == off])
        assert rows.get(off, []) == w.alone[seed_no], f"good record at offset {off} changed in a mixed batch"


def item_parses(w: World, raw: bytes, message: bytes, truncated: bool) -> bool:
    """Whether ``raw`` is one item (span / log record) of ``w``'s encoding: in protobuf cut from
    ``message``, the message's own bytes at some offset, except where scrubbing masked a byte with ``*``
    (lengths kept), and, when not truncated, readable as an item (protobuf) or JSON."""
    if w.codec == "otlp_json":  # the item re-serialized as JSON, scrubbed as text (placeholders)
        return truncated or isinstance(json.loads(raw), (dict, list, str, int, float, bool, type(None)))
    if w.signal == "metric":
        return True  # a data point of one of four types, or a metric (re-serialized): not told apart here
    pattern = re.compile(b"".join(b"." if c == 0x2A else re.escape(bytes([c])) for c in raw), re.DOTALL)
    if pattern.search(message) is None:
        return False
    if truncated:
        return True
    item = Span() if w.signal == "span" else LogRecord()
    item.ParseFromString(raw)  # a mutated message may encode fields out of canonical order: no re-serialize check
    return True


entries = st.tuples(st.booleans(), st.integers(0, 1000), st.integers(0, 2**32 - 1))


@pytest.mark.parametrize("signal,codec", PAIRS, ids=[f"{s}-{c}" for s, c in PAIRS])
def test_mixed_batches(signal, codec):
    w = world(signal, codec)

    @given(plan=st.lists(entries, min_size=1, max_size=16))
    def run(plan):
        check_batch(w, plan)

    run()


@pytest.mark.parametrize("signal,codec", PAIRS, ids=[f"{s}-{c}" for s, c in PAIRS])
def test_all_bad_then_all_good(signal, codec):
    """A batch of only mutants, then a clean batch: the codec's state after a dirty batch
    never costs a good record."""
    w = world(signal, codec)

    @given(plan=st.lists(entries.map(lambda e: (False, e[1], e[2])), min_size=1, max_size=12))
    def run(plan):
        check_batch(w, plan)
        check_batch(w, [(True, k, 0) for k in range(len(w.seeds))], base=5000)

    run()


def test_found_cases():
    """Examples the long runs found, kept as fixed cases (each was a failure once)."""
    check_batch(world("span", "avro"), [(False, 1, 2951)])  # a timestamp beyond datetime in a mutant's row
