"""The stage contract of :mod:`pipelines.stages` (issue 16 item 1): every kind implements
:class:`~pipelines.stages.Stage`, is built by name from its typed :class:`StageDef`, and
the global stage's three jobs (alerts, funnels, RED merging) split into their own objects
still answer exactly as one object did, a snapshot taken before the split included."""

from __future__ import annotations

import inspect
import io
import pickle
import zlib
from collections import defaultdict

import pytest
import yaml

from pipelines import DEFAULT_SPEC
from pipelines.graph import plan_stages
from pipelines.loader import parse_spec
from pipelines.stages import (
    GLOBAL,
    METRICS,
    PRODUCT,
    STAGE_KINDS,
    TRACE,
    GlobalConfig,
    GlobalStage,
    Stage,
    StageDef,
    StageOutput,
    TraceConfig,
    make_stage,
)
from tests.groundtruth import traffic
from tests.groundtruth.sim import StageHost, batches_of

BASE = 1_763_000_040_000  # a whole minute


def default_spec(tmp_path):
    """The default spec (every stage kind), spans as OTLP as the ground-truth traffic sends
    them, and alert rules over what that traffic's rollups hold (the log lines' errors, the
    CPU gauges): they fire and resolve."""
    d = yaml.safe_load(DEFAULT_SPEC.read_text())
    d["storage"]["catalog"]["warehouse"] = str(tmp_path)
    for s in d["sources"]:
        if s["name"] == "spans":
            s["codec"] = "otlp_proto"
    d["alerts"]["rules"] += [
        {
            "name": "CheckoutLogErrors",
            "select": {"metric": "log.errors", "match": {"service": "checkout"}, "value": "count"},
            "op": ">",
            "threshold": 3,
            "for": "0s",
            "severity": "P1",
        },
        {
            "name": "BusyCpu",
            "select": {"metric": "process.cpu", "value": "max"},
            "op": ">",
            "threshold": 0.8,
            "for": "1m",
            "severity": "P2",
        },
    ]
    return parse_spec(d)


def test_every_kind_implements_the_contract(tmp_path):
    assert sorted(STAGE_KINDS) == sorted([TRACE, METRICS, PRODUCT, GLOBAL])
    for name, kind in STAGE_KINDS.items():
        assert issubclass(kind, Stage) and kind.kind == name
        assert not inspect.isabstract(kind), (name, kind.__abstractmethods__)
    defs = {d.name: d for d in plan_stages(default_spec(tmp_path))}
    assert set(defs) == set(STAGE_KINDS)  # the default spec has every kind
    assert isinstance(defs[TRACE].config, TraceConfig) and isinstance(defs[GLOBAL].config, GlobalConfig)
    assert defs[GLOBAL].config.alerts is not None and defs[GLOBAL].config.product is not None
    for name, defn in defs.items():
        for shard in range(defn.shards):
            stage = make_stage(defn, shard)
            assert type(stage) is STAGE_KINDS[name]
            again = make_stage(defn, shard, stage.snapshot())  # restored from its own snapshot
            assert type(again) is STAGE_KINDS[name]


def test_unknown_kind_is_named():
    with pytest.raises(ValueError, match=r"no stage kind 'sessions' \(known: global, metrics, product, trace\)"):
        make_stage(StageDef("sessions", 1, (), ()), 0)


def _global_feed(spec) -> tuple[StageDef, list[StageOutput]]:
    """The outputs the fed stages hand the global stage for the ground-truth traffic (every
    signal of the default spec: RED partials, rollup rows for the alert rules, funnel
    tallies), in the order an engine would hand them over, flushes included."""
    model = traffic.build(BASE)
    parts: dict[tuple[str, int], list] = defaultdict(list)
    for r in model.records:
        parts[(r.topic, r.partition)].append((r.value, r.ts_ms))
    topic = {s.name: s.topic_name for s in spec.sources}
    keys = [f"{topic[s]}:{p}" for s in topic for p in range(traffic.PARTITIONS)]
    host = StageHost(spec, keys)
    defn = host.defs[GLOBAL]
    host.defs.pop(GLOBAL)  # the global stage is driven by the test
    batches = [
        b
        for (src, p), recs in sorted(parts.items())
        for b in batches_of(src, topic[src], p, recs, traffic.PARTITIONS, 50)
    ]
    batches.sort(key=lambda b: b.timestamps_ms[-1])  # partitions interleaved in time, as a live reader sees them
    for b in batches:
        host.feed(b)
    host.flush()
    return defn, [o for o in host.outputs if isinstance(o, StageOutput) and o.stage in (METRICS, PRODUCT, TRACE)]


def _answers(outs: list[StageOutput]) -> dict:
    """What the global stage's outputs say: rows per table (sorted), alert events, notifications."""
    rows: dict[str, list] = defaultdict(list)
    for o in outs:
        for name, t in o.rows.items():
            rows[name] += [repr(sorted(r.items())) for r in t.to_pylist()]
    return {
        "rows": {n: sorted(v) for n, v in rows.items()},
        "alerts": [(e.status, e.rule, sorted(e.labels.items())) for o in outs for e in o.alerts],
        "notifications": [(n.at, n.receiver, n.status) for o in outs for n in o.notifications],
        "positions": outs[-1].positions,
    }


def _pre_split_blob(stage: GlobalStage) -> bytes:
    """A snapshot of ``stage`` in the layout a global stage had before its jobs were split:
    one object with every job's attributes (``engine``, ``pending``, ``report``, ``red_aggs``, ...)."""
    s = dict(stage.__dict__)
    a, f, red = s.pop("alerting"), s.pop("funnels"), s.pop("red")
    s.update(
        engine=a.engine if a else None,
        lateness=a.lateness if a else 0,
        rule_res=a.rule_res if a else [],
        metric_names=a.metric_names if a else set(),
        pending=a.pending if a else {},
        next_end=a.next_end if a else {},
        report=f.report if f else None,
        res=f.res if f else 0,
        errors=f.errors if f else {},
        sessionless=f.sessionless if f else {},
        red_window=red.window,
        red_exemplars=red.exemplars,
        red_aggs=red.aggs,
    )
    old = GlobalStage.__new__(GlobalStage)
    old.__dict__.update(s)  # pickled as its __dict__: the old layout
    return zlib.compress(pickle.dumps(old, protocol=5), 1)


def test_global_stage_jobs_and_a_pre_split_snapshot(tmp_path):
    defn, feed = _global_feed(default_spec(tmp_path))
    assert any(o.stage == METRICS for o in feed) and any(o.stage == PRODUCT for o in feed)
    assert any(o.extra.get("red") for o in feed if o.stage == TRACE)

    blob = pickle.dumps(feed, protocol=5)  # each run gets its own copy: merging takes over the partial aggregates

    whole = make_stage(defn, 0)
    outs = [x for o in pickle.loads(blob) if (x := whole.process(o)) is not None] + [whole.flush()]
    want = _answers(outs)
    # the three jobs answered: RED rows, funnel report rows, alert state changes
    names = {r.split("'name', '", 1)[1].split("'", 1)[0] for r in want["rows"]["metrics"]}
    assert "span.calls" in names and "funnel.step.reached" in names, names
    assert want["rows"]["alerts"] and want["alerts"]

    for cut in (len(feed) // 3, 2 * len(feed) // 3):
        feed = pickle.loads(blob)
        first = make_stage(defn, 0)
        outs = [x for o in feed[:cut] if (x := first.process(o)) is not None]
        restored = make_stage(defn, 0, _pre_split_blob(first))
        assert set(vars(restored)) == set(vars(first))  # restored into the split layout
        outs += [x for o in feed[cut:] if (x := restored.process(o)) is not None] + [restored.flush()]
        assert _answers(outs) == want


def test_snapshots_from_the_single_module_still_resolve():
    """Snapshots taken when the stages were one module (``pipelines/stages.py``) pickled
    their classes as ``pipelines.stages.<name>``: each still resolves to the class the
    package defines. (Checked by hand when the package was made: every kind's snapshot
    taken by the single module, mid-traffic, restores and continues to the same rows.)"""
    from pipelines.stages import clock, contract, global_stage, metrics, product

    pickled = {
        "MetricsStage": metrics,
        "_StageRollup": metrics,
        "ProductStage": product,
        "_TallyReport": product,
        "GlobalStage": global_stage,
        "PartitionClock": clock,
        "StageOutput": contract,
        "StageInput": contract,
        "StageTick": contract,
        "StageDef": contract,
    }
    up = pickle.Unpickler(io.BytesIO(b""))
    for name, module in pickled.items():
        assert up.find_class("pipelines.stages", name) is getattr(module, name), name
