"""The collector's garbage-collector settings (``collect.gc_young_threshold``,
:mod:`core.gc_tuning`): applied by ``obsflow collect`` after start-up; 0 leaves Python's."""

from __future__ import annotations

import gc

import pytest

from core.gc_tuning import tune_gc
from pipelines.collect_spec import CollectSpec

pytestmark = pytest.mark.collect


@pytest.fixture
def gc_restored():
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


def test_threshold_and_freeze_applied(gc_restored):
    gc.set_threshold(700, 11, 12)
    gc.unfreeze()
    assert tune_gc(CollectSpec().gc_young_threshold) is True
    assert gc.get_threshold() == (10_000, 11, 12)
    frozen = gc.get_freeze_count()
    assert frozen > 1000  # the modules of this process
    live = [object(), [1], {"a": 1}]  # made after the freeze: not frozen
    assert gc.get_freeze_count() == frozen
    assert tune_gc(25_000) is True and gc.get_threshold() == (25_000, 11, 12)
    assert gc.get_freeze_count() >= frozen + 1  # at least the list and dict made meanwhile
    del live


def test_zero_leaves_python_defaults(gc_restored):
    gc.set_threshold(700, 10, 10)
    gc.unfreeze()
    assert tune_gc(0) is False
    assert gc.get_threshold() == (700, 10, 10) and gc.get_freeze_count() == 0


def test_spec_bounds():
    assert CollectSpec(gc_young_threshold=0).gc_young_threshold == 0
    with pytest.raises(ValueError):
        CollectSpec(gc_young_threshold=-1)
    with pytest.raises(ValueError):
        CollectSpec(gc_young_threshold=10_000_001)


@pytest.mark.parametrize("threshold", [None, 0, 4321])
def test_obsflow_collect_builds_its_door_then_sets_the_collector(
    threshold, gc_restored, kafka_broker, collect_topics, tmp_path
):
    """``obsflow collect`` (uvicorn and Granian alike) builds its door through
    :func:`collector.server.build_door`: the setting is applied after the door and its
    producer exist (default 10000), and 0 leaves Python's thresholds and nothing frozen."""
    from collector.server import build_door
    from pipelines.loader import parse_spec
    from tests.collect.conftest import collect_spec_dict

    gc.set_threshold(700, 10, 10)
    gc.unfreeze()
    d = collect_spec_dict(
        tmp_path, kafka_broker.bootstrap, collect_topics, {} if threshold is None else {"gc_young_threshold": threshold}
    )
    door = build_door(parse_spec(d))
    try:
        if threshold == 0:
            assert gc.get_threshold() == (700, 10, 10) and gc.get_freeze_count() == 0
        else:
            assert gc.get_threshold() == (threshold or 10_000, 10, 10) and gc.get_freeze_count() > 1000
    finally:
        door.producer.close(5)
