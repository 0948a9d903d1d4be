"""Both runners on the embedded source into local Iceberg tables: exact row counts,
every malformed record in dead_letters with its reason and coordinates, no personal
data in the tables, the same contents on both engines, and resume without duplicates."""

import re

import pytest

from runners.job import RunRequest
from runners.stats import STATS
from tests.helpers import START_MS, embedded, engine_run, ground_truth, local_spec, read_table, sorted_rows

COUNT = 3000  # records per source


def run(runner: str, spec, count=COUNT, seed=42):
    STATS.reset()
    req = RunRequest(
        spec=spec, runner=runner, count=count, seed=seed, start_ms=START_MS, rate_per_s=2000.0, batch_size=1000
    )
    return engine_run(req)


@pytest.fixture(scope="module")
def truth():
    spec = local_spec("/unused")
    return ground_truth(embedded(spec, COUNT))


@pytest.fixture(scope="module", params=["bytewax", "beam"])
def landed(request, tmp_path_factory):
    spec = local_spec(tmp_path_factory.mktemp(request.param))
    run(request.param, spec)
    stats = (STATS.records_in, STATS.records_accepted, STATS.records_dead)
    return request.param, spec, stats


def test_counts_reconcile_exactly(landed, truth):
    _, spec, (records_in, accepted, dead) = landed
    assert records_in == truth.records == 2 * COUNT
    assert dead == len(truth.dead)
    assert accepted == records_in - dead
    assert read_table(spec, "events").num_rows == truth.event_rows
    assert read_table(spec, "logs").num_rows == truth.log_rows
    assert read_table(spec, "dead_letters").num_rows == len(truth.dead)


def test_every_malformed_record_is_in_dead_letters_with_its_reason(landed, truth):
    _, spec, _ = landed
    dl = read_table(spec, "dead_letters")
    got = {(r["source_topic"], r["source_partition"], r["source_offset"]): r["reason"] for r in dl.to_pylist()}
    assert got == truth.dead
    # every kind of malformation the generator makes is present, per signal
    kinds = {(k[0], truth.kinds[k]) for k in truth.kinds}
    assert len(kinds) == 12 + 11
    for r in dl.to_pylist():
        assert r["detail"] and r["raw_size"] >= 0
        assert r["raw_truncated"] == (r["raw_size"] > 16384)
        if r["reason"] == "size_violation":
            assert r["raw_truncated"] and len(r["raw"]) == 16384


def test_good_rows_keep_their_source_coordinates(landed, truth):
    _, spec, _ = landed
    logs = read_table(spec, "logs")
    coords = {
        (r["source_topic"], r["source_partition"], r["source_offset"])
        for r in logs.select(["source_topic", "source_partition", "source_offset"]).to_pylist()
    }
    assert len(coords) == truth.log_rows
    assert not coords & set(truth.dead)


def test_no_personal_data_lands(landed):
    _, spec, _ = landed
    email = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
    for name, cols in (
        ("events", ["page", "error_message", "error_stack", "user_pseudonym", "client_ip_anon"]),
        ("logs", ["message", "user_pseudonym"]),
    ):
        t = read_table(spec, name)
        for col in cols:
            for v in t.column(col).to_pylist():
                if v is None:
                    continue
                assert not email.search(v), (name, col, v)
                assert "user-" not in v, (name, col, v)
                assert "4111 1111 1111 1111" not in v and "5555 5555 5555 4444" not in v, (name, col, v)
                assert not re.search(r"Bearer (?!\[TOKEN\])", v), (name, col, v)
    ips = read_table(spec, "events").column("client_ip_anon").to_pylist()
    assert ips and all(ip.endswith(".0") for ip in ips)


def test_snapshot_summaries_record_every_partition_position(landed):
    from sinks.catalog import open_catalog
    from sinks.iceberg import snapshot_offsets

    _, spec, _ = landed
    cat = open_catalog(spec.storage)
    per = COUNT // 4
    assert snapshot_offsets(cat.load_table("obs.events")) == {f"events:{p}": per for p in range(4)}
    assert snapshot_offsets(cat.load_table("obs.logs")) == {f"logs:{p}": per for p in range(4)}
    assert snapshot_offsets(cat.load_table("obs.dead_letters")) == {
        **{f"events:{p}": per for p in range(4)},
        **{f"logs:{p}": per for p in range(4)},
    }


def test_duckdb_reads_the_same_tables(landed, truth):
    from runners.query import query

    _, spec, _ = landed
    cols, rows = query(
        spec,
        "SELECT (SELECT count(*) FROM obs.events), (SELECT count(*) FROM obs.logs), (SELECT count(*) FROM obs.dead_letters)",
    )
    assert rows == [(truth.event_rows, truth.log_rows, len(truth.dead))]
    _, rows = query(spec, "SELECT reason, count(*) FROM obs.dead_letters GROUP BY 1 ORDER BY 1")
    want = {}
    for r in truth.dead.values():
        want[r] = want.get(r, 0) + 1
    assert dict(rows) == want


KEYS = {
    "events": ["source_topic", "source_partition", "source_offset", "event_index"],
    "logs": ["source_topic", "source_partition", "source_offset"],
    "dead_letters": ["source_topic", "source_partition", "source_offset"],
}


def test_parity_same_seed_same_rows_on_bytewax_and_beam(tmp_path):
    specs = {}
    for runner in ("bytewax", "beam"):
        specs[runner] = local_spec(tmp_path / runner)
        run(runner, specs[runner], count=1500, seed=7)
    for table, keys in KEYS.items():
        a = sorted_rows(read_table(specs["bytewax"], table), keys)
        b = sorted_rows(read_table(specs["beam"], table), keys)
        assert len(a) > 0
        assert a == b, table


@pytest.mark.parametrize("runner", ["bytewax", "beam"])
def test_rerun_resumes_and_writes_nothing_twice(runner, tmp_path):
    spec = local_spec(tmp_path / "wh")
    run(runner, spec, count=800)
    first = {t: read_table(spec, t).num_rows for t in KEYS}
    resumed = run(runner, spec, count=800)
    assert resumed == {f"{t}:{p}": 200 for t in ("events", "logs") for p in range(4)}
    assert STATS.records_in == 0
    assert {t: read_table(spec, t).num_rows for t in KEYS} == first
    # a longer run continues where the first stopped: same rows as one long run
    run(runner, spec, count=1600)
    fresh = local_spec(tmp_path / "fresh")
    run(runner, fresh, count=1600)
    for table, keys in KEYS.items():
        assert sorted_rows(read_table(spec, table), keys) == sorted_rows(read_table(fresh, table), keys), table
