"""Effectively-once per table (issue 19 item 2): when one table's last commit fails for
good while the other tables' commits land (its earlier commits landed mid-run), a rerun
after the fix gives every table exactly the rows of a run that never failed: the lagging
table catches up alone (:class:`runners.job.CatchUp`), the others are not written twice.

The failure is injected into the commit of one table (a non-transient error); everything
else is real: the default spec (traces, rollups, sessions, alerts; logs unsampled, or
sampled by trace for the traces and logs cases) over the embedded generator, the SQLite
catalog and the local warehouse.

Rows a stage derives with its own clock or decision (a trace's ``decided_at``, a span's
adjusted count, a log line's ``sample_rate``) are deduplicated by what identifies them
(``sinks.iceberg.DEDUPE_KEYS``; tests/sinks/test_catch_up_dedupe.py shows it row by row). What a
catch-up still cannot redo exactly: a row a stage derives from state built before the
table's position (the stage restarts empty there), e.g. a log line whose trace was decided
from spans before it; for the runs below every table comes out exactly as in a run that
never failed."""

from __future__ import annotations

import os
from collections import Counter

import pyarrow as pa
import pytest

from runners.job import RunRequest, catch_up_plan
from sinks.iceberg import _WrittenFiles
from tests.helpers import START_MS, engine_run, local_spec, read_table

COUNT = 600
ALL_ONLY = pytest.mark.skipif(
    not os.environ.get("OBSFLOW_ONCE_ALL"), reason="long variant: OBSFLOW_ONCE_ALL=1 (make once-all)"
)


def tables(spec) -> dict[str, list[tuple]]:
    """Every table's rows, as sorted tuples of every column's repr (a multiset)."""
    from pipelines.graph import PipelineGraph

    out = {}
    for name in PipelineGraph.tables_of(spec):
        t: pa.Table = read_table(spec, name)
        cols = sorted(t.column_names)
        out[name] = sorted(tuple(repr(r[c]) for c in cols) for r in t.select(cols).to_pylist())
    return out


def causes(e: BaseException | None) -> str:
    """The messages of an exception and of everything it was raised from (an engine wraps it)."""
    out = []
    while e is not None:
        out.append(str(e))
        e = e.__cause__ or e.__context__
    return " <- ".join(out)


def spec_at(path, max_rows: int, log_sampling: bool = False):
    """The default spec (traces, rollups, sessions, alerts), without log sampling unless
    ``log_sampling``: a log line then goes to its table from its flow, not from the trace
    stage (with it, log lines wait in the trace stage for their trace's decision)."""
    spec = local_spec(path, traces=True, metrics=True, max_rows=max_rows, max_seconds=3600)
    if log_sampling:
        return spec
    flows = [f.model_copy(update={"steps": [s for s in f.steps if s.kind != "log_sample"]}) for f in spec.flows]
    return spec.model_copy(update={"flows": flows})


def run(runner: str, spec, rate: float = 20.0) -> None:
    """``COUNT`` records per source at ``rate`` a second of event time (at 20: traces decided and
    windows closed during the run; at 5, 2 minutes: longer than the trace stage holds its
    positions back (decision_wait + log_wait), so they move during the run)."""
    req = RunRequest(
        spec=spec,
        runner=runner,
        count=COUNT,
        start_ms=START_MS,
        seed=7,
        batch_size=200,
        bad_fraction=0.15,
        rate_per_s=rate,
    )
    engine_run(req)


def count_commits(monkeypatch) -> Counter:
    """Count every table's commits from now on."""
    calls: Counter = Counter()
    commit = _WrittenFiles.commit

    def counting(self, tbl, properties):
        calls[tbl.name()[-1]] += 1
        return commit(self, tbl, properties)

    monkeypatch.setattr(_WrittenFiles, "commit", counting)
    return calls


def fail_from_commit(monkeypatch, table: str, n: int) -> Counter:
    """``table``'s ``n``-th and later commits raise (not a transient error: the run fails)."""
    calls: Counter = Counter()
    commit = _WrittenFiles.commit

    def failing(self, tbl, properties):
        name = tbl.name()[-1]
        calls[name] += 1
        if name == table and calls[name] >= n:
            raise ValueError(f"injected: the commit to {name} fails for good")
        return commit(self, tbl, properties)

    monkeypatch.setattr(_WrittenFiles, "commit", failing)
    return calls


@pytest.mark.traces
@pytest.mark.parametrize(
    "runner, table, max_rows, log_sampling",
    [
        ("bytewax", "dead_letters", 150, False),
        ("beam", "dead_letters", 150, False),
        ("bytewax", "metrics", 150, False),
        # tables a stage derives (traces) and log lines that wait for their trace's decision (log sampling on);
        # CI runs one per engine, OBSFLOW_ONCE_ALL=1 (make once-all) the others too
        ("bytewax", "traces", 10, True),
        pytest.param("beam", "traces", 10, True, marks=ALL_ONLY),
        pytest.param("bytewax", "logs", 60, True, marks=ALL_ONLY),
        ("beam", "logs", 60, True),
    ],
)
def test_a_table_whose_commit_failed_for_good_catches_up_alone(
    runner, table, max_rows, log_sampling, tmp_path, monkeypatch
):
    rate = 5.0 if log_sampling else 20.0
    want = spec_at(tmp_path / "reference", max_rows, log_sampling)
    with monkeypatch.context() as m:
        made = count_commits(m)
        run(runner, want, rate)
    assert made[table] >= 2
    expected = tables(want)
    assert all(expected[t] for t in ("events", "logs", "spans", "traces", "metrics", "sessions", "dead_letters"))

    spec = spec_at(tmp_path / "wh", max_rows, log_sampling)
    with monkeypatch.context() as m:
        fail_from_commit(m, table, made[table])  # its last commit fails; its earlier ones landed mid-run
        with pytest.raises(Exception) as failed:
            run(runner, spec, rate)
    assert f"injected: the commit to {table} fails for good" in causes(failed.value)
    behind = tables(spec)
    assert behind[table] and behind[table] != expected[table]  # it holds some rows, not all
    assert {t for t in expected if behind[t] != expected[t]} == {table}  # the others' commits landed
    assert [c.table for c in catch_up_plan(spec)] == [table]
    # fixed: the rerun catches the table up alone, then reads nothing new
    run(runner, spec, rate)
    got = tables(spec)
    for name in expected:
        extra = Counter(got[name]) - Counter(expected[name])
        missing = Counter(expected[name]) - Counter(got[name])
        assert not extra and not missing, (
            name,
            sum(extra.values()),
            sum(missing.values()),
            list(extra)[:2],
            list(missing)[:2],
        )
        assert got[name] == expected[name], name
    assert catch_up_plan(spec) == []
    # a third run changes nothing
    run(runner, spec, rate)
    assert tables(spec) == expected
