"""``process.gc_young_threshold`` (:mod:`core.gc_tuning`): a real ``obsflow run`` process on
the embedded source (Bytewax in one process; Beam's DirectRunner) runs with the young
threshold of its spec and everything alive once its graph is built frozen; 0 leaves Python's
thresholds and freezes nothing; the tables hold the same rows either way. Each run is a
process of its own, so what it reports is what that process ran with."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import local_spec, read_table, sorted_rows
from tests.runners.test_runners_embedded import KEYS

REPO = Path(__file__).resolve().parents[2]
COUNT = 1200  # records per source

#: one run in this subprocess, started with Python's default thresholds; prints what the
#: process's collector ran with at the end of the run
SCRIPT = """
import gc, json, sys
gc.set_threshold(700, 10, 10)
from runners.job import RunRequest
from tests.helpers import START_MS, engine_run, local_spec
warehouse, runner, threshold = sys.argv[1], sys.argv[2], sys.argv[3]
spec = local_spec(warehouse)
if threshold != "default":
    from pipelines.spec import ProcessSpec
    spec = spec.model_copy(update={"process": ProcessSpec(gc_young_threshold=int(threshold))})
frozen_before = gc.get_freeze_count()
engine_run(RunRequest(spec=spec, runner=runner, count=int(sys.argv[4]), seed=7, start_ms=START_MS,
                      rate_per_s=2000.0, batch_size=400))
print(json.dumps({"threshold": gc.get_threshold(), "frozen": gc.get_freeze_count(), "frozen_before": frozen_before}))
"""


def run_process(warehouse: Path, runner: str, threshold: str) -> dict:
    """Run ``runner`` over the embedded source in a new process; its report (last line)."""
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(warehouse), runner, threshold, str(COUNT)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_spec_default_and_bounds():
    from pipelines.spec import ProcessSpec

    assert ProcessSpec().gc_young_threshold == 10_000
    assert ProcessSpec(gc_young_threshold=0).gc_young_threshold == 0
    for bad in (-1, 10_000_001):
        with pytest.raises(ValueError):
            ProcessSpec(gc_young_threshold=bad)


@pytest.mark.slow
@pytest.mark.parametrize("runner", ["bytewax", "beam"])
def test_run_process_runs_with_the_setting_and_the_same_rows(runner, tmp_path):
    """The default (10000) is applied once the graph is built: the young threshold is 10000,
    the older ones Python's, and the graph, its lookup tables and the imports are frozen (tens
    of thousands of objects; none before the run). A set value is the threshold; 0 leaves
    (700, 10, 10) and nothing frozen. Rows of every table are identical in all three runs."""
    default = run_process(tmp_path / "default", runner, "default")
    assert default["frozen_before"] == 0
    assert default["threshold"] == [10_000, 10, 10]
    assert default["frozen"] > 20_000
    assert run_process(tmp_path / "set", runner, "4321")["threshold"] == [4321, 10, 10]
    off = run_process(tmp_path / "off", runner, "0")
    assert off == {"threshold": [700, 10, 10], "frozen": 0, "frozen_before": 0}
    for table, keys in KEYS.items():
        rows = sorted_rows(read_table(local_spec(tmp_path / "default"), table), keys)
        assert len(rows) > 0
        for other in ("set", "off"):
            assert sorted_rows(read_table(local_spec(tmp_path / other), table), keys) == rows, (table, other)
