"""``obsflow ui``'s JSON API against answers the test computes itself (its own SQL and
Python over the same tables of a demo warehouse built by ``obsflow run --count 3000``)."""

from __future__ import annotations

import csv
import io
import json
from collections import Counter, defaultdict

import pytest

pytestmark = [pytest.mark.ui]

TABLES = ["alerts", "dead_letters", "events", "logs", "metrics", "sessions", "spans", "traces"]


def panel(page: dict, pid: str) -> dict:
    return next(p for p in page["panels"] if p["id"] == pid)


def rows_as_dicts(p: dict) -> list[dict]:
    return [dict(zip(p["columns"], r)) for r in p["rows"]]


def test_health_tables_and_dead_letters(ui_server, sql):
    page = ui_server.api("/health", range="all")
    tables = {r["table_name"]: r for r in rows_as_dicts(panel(page, "tables"))}
    assert sorted(tables) == TABLES
    for t in TABLES:
        n = sql(f"SELECT count(*) FROM obs.{t}")[0][0]
        assert n > 0, t  # the demo warehouse holds every table
        assert tables[t]["rows_now"] == n, t
        assert tables[t]["rows_in_snapshot"] == n, t  # appends only: the snapshot summary's total-records
        assert tables[t]["snapshots"] >= 1 and tables[t]["data_files"] >= 1
        assert tables[t]["seconds_since_last_commit"] >= 0
    by_reason = {r["reason"]: r["records"] for r in rows_as_dicts(panel(page, "dead_letters_by_reason"))}
    assert by_reason == dict(Counter(r[0] for r in sql("SELECT reason FROM obs.dead_letters")))
    examples = rows_as_dicts(panel(page, "dead_letter_examples"))
    per_reason = Counter(e["reason"] for e in examples)
    assert per_reason == {r: min(3, n) for r, n in by_reason.items()}
    assert all(e["detail"] and e["raw_preview"] and e["source_topic"] for e in examples)
    over_time = rows_as_dicts(panel(page, "dead_letters_over_time"))
    assert sum(r["records"] for r in over_time) == sum(by_reason.values())


def test_services_red_numbers(ui_server, sql):
    page = ui_server.api("/services", range="all")
    got = {r["service"]: r for r in rows_as_dicts(panel(page, "per_service"))}
    rows = sql(
        "SELECT name, labels['service'], window_start, \"count\", p50, p95, p99 FROM obs.metrics "
        "WHERE resolution = '1m' AND labels['kind'] = 'SERVER' AND name IN ('span.calls', 'span.errors', 'span.duration_ms')"
    )
    calls, errors, minutes = Counter(), Counter(), defaultdict(set)
    p99: dict[str, float] = {}
    for name, svc, ws, count, _p50, _p95, q99 in rows:
        if name == "span.calls":
            calls[svc] += count
            minutes[svc].add(ws)
        elif name == "span.errors":
            errors[svc] += count
        else:
            p99[svc] = max(p99.get(svc, float("-inf")), q99)
    assert sorted(got) == sorted(calls) and calls
    for svc, r in got.items():
        assert r["calls"] == calls[svc]
        assert r["errors"] == errors[svc]
        assert r["error_rate"] == pytest.approx(round(errors[svc] / calls[svc], 4))
        assert r["rate_per_s"] == pytest.approx(round(calls[svc] / (60.0 * len(minutes[svc])), 3))
        assert r["worst_minute_p99_ms"] == pytest.approx(round(p99[svc], 3))
    ops = rows_as_dicts(panel(page, "per_operation"))
    assert sum(o["calls"] for o in ops) == sum(calls.values())
    known = {
        r[0] for r in sql("SELECT DISTINCT unnest(exemplar_trace_ids) FROM obs.metrics WHERE name = 'span.duration_ms'")
    }
    assert any(o["exemplar_trace_ids"] for o in ops)
    assert all(set(o["exemplar_trace_ids"] or []) <= known for o in ops)


def test_trace_search_filters(ui_server, sql):
    everything = ui_server.api("/traces/search", range="all", limit="1000")
    assert everything["row_count"] == sql("SELECT count(*) FROM obs.traces")[0][0] > 0
    kept = Counter(r["kept_by"] for r in rows_as_dicts(everything))
    assert kept == dict(sql("SELECT sampling_policy, count(*) FROM obs.traces GROUP BY 1"))
    errs = ui_server.api("/traces/search", range="all", limit="1000", errors="1")
    assert {r[0] for r in sql("SELECT trace_id FROM obs.traces WHERE error_count > 0")} == {
        r["trace_id"] for r in rows_as_dicts(errs)
    }
    svc, op = sql("SELECT service, name FROM obs.spans ORDER BY service, name LIMIT 1")[0]
    found = ui_server.api("/traces/search", range="all", limit="1000", service=svc, operation=op)
    want = {
        r[0]
        for r in sql(
            f"SELECT DISTINCT t.trace_id FROM obs.traces t JOIN obs.spans s USING (trace_id) "
            f"WHERE s.service = '{svc}' AND s.name = '{op}'"
        )
    }
    assert {r["trace_id"] for r in rows_as_dicts(found)} == want and want
    slow = ui_server.api("/traces/search", range="all", limit="1000", min_ms="1000")
    assert slow["row_count"] == sql("SELECT count(*) FROM obs.traces WHERE trace_duration_ms >= 1000")[0][0]


def test_trace_with_its_logs(ui_server, sql):
    tid, n_logs = sql(
        "SELECT t.trace_id, count(*) FROM obs.traces t JOIN obs.logs l USING (trace_id) "
        "GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 1"
    )[0]
    page = ui_server.api(f"/traces/{tid}")
    spans, logs = panel(page, "spans"), panel(page, "logs")
    assert spans["row_count"] == sql(f"SELECT count(*) FROM obs.spans WHERE trace_id = '{tid}'")[0][0] > 0
    assert logs["row_count"] == n_logs
    want = sql(f"SELECT message, service FROM obs.logs WHERE trace_id = '{tid}' ORDER BY ts, service")
    assert [(r["message"], r["service"]) for r in rows_as_dicts(logs)] == [tuple(w) for w in want]
    span_id, n_span = sql(
        f"SELECT span_id, count(*) FROM obs.logs WHERE trace_id = '{tid}' GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 1"
    )[0]
    one = ui_server.api(f"/traces/{tid}/logs", span_id=span_id)
    assert one["row_count"] == n_span and all(r["span_id"] == span_id for r in rows_as_dicts(one))
    unknown = ui_server.api("/traces/" + "0" * 32)
    assert all(p["row_count"] == 0 and p["empty_reason"] for p in unknown["panels"])


def test_funnel_numbers(ui_server, sql):
    page = ui_server.api("/product", range="all")
    steps = rows_as_dicts(panel(page, "funnel_signup"))
    reached, dropped, names = Counter(), Counter(), {}
    for name, idx, step, count in sql(
        "SELECT name, labels['step_index'], labels['step'], \"count\" FROM obs.metrics "
        "WHERE labels['funnel'] = 'signup' AND name IN ('funnel.step.reached', 'funnel.step.dropoff')"
    ):
        (reached if name == "funnel.step.reached" else dropped)[int(idx)] += count
        names[int(idx)] = step
    assert [s["step_index"] for s in steps] == sorted(names) and steps
    first = reached[min(names)]
    prev = None
    for s in steps:
        i = s["step_index"]
        assert (s["step"], s["sessions"], s["dropped_after_step"]) == (names[i], reached[i], dropped[i])
        assert s["pct_of_first_step"] == pytest.approx(round(100.0 * reached[i] / first, 1))
        if prev is not None:
            assert s["pct_of_previous_step"] == pytest.approx(round(100.0 * reached[i] / prev, 1))
        prev = reached[i]
    ttc = rows_as_dicts(panel(page, "time_to_convert"))
    assert (
        sum(r["conversions"] for r in ttc)
        == sql("SELECT coalesce(sum(\"count\"), 0) FROM obs.metrics WHERE name = 'funnel.time_to_convert_ms'")[0][0]
    )
    want_ttc = sql(
        "SELECT \"count\", p50, p75, p90, p95 FROM obs.metrics WHERE name = 'funnel.time_to_convert_ms' "
        "ORDER BY labels['funnel'], window_start"
    )
    assert [(r["conversions"], r["p50_ms"], r["p75_ms"], r["p90_ms"], r["p95_ms"]) for r in ttc] == [
        tuple(w) for w in want_ttc
    ]
    assert all(r["p50_ms"] <= r["p75_ms"] <= r["p95_ms"] for r in ttc) and ttc
    # time between steps: per step, sessions, mean and the worst window's median / p75 / p95 (Python over the rows)
    per_step: dict[tuple, list] = defaultdict(list)
    for f, idx, step, n, total, q50, q75, q95 in sql(
        "SELECT labels['funnel'], labels['step_index'], labels['step'], \"count\", \"sum\", p50, p75, p95 "
        "FROM obs.metrics WHERE name = 'funnel.step.time_ms'"
    ):
        per_step[(f, int(idx), step)].append((n, total, q50, q75, q95))
    got = rows_as_dicts(panel(page, "step_time"))
    assert [(r["funnel"], r["step_index"], r["step"]) for r in got] == sorted(per_step) and got
    for r in got:
        ws = per_step[(r["funnel"], r["step_index"], r["step"])]
        n = sum(w[0] for w in ws)
        assert r["sessions"] == n and r["avg_ms"] == pytest.approx(round(sum(w[1] for w in ws) / n, 1), abs=0.051)
        assert (r["worst_window_p50_ms"], r["worst_window_p75_ms"], r["worst_window_p95_ms"]) == tuple(
            round(max(w[k] for w in ws), 1) for k in (2, 3, 4)
        )


def test_csv_equals_json_and_sql_is_shown(ui_server):
    data = ui_server.api("/product/funnel_signup", range="all")
    r = ui_server.get("/api/v1/product/funnel_signup", range="all", format="csv")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    got = list(csv.reader(io.StringIO(r.text)))
    assert got[0] == data["columns"]
    assert got[1:] == [["" if v is None else str(v) for v in row] for row in data["rows"]]
    assert data["sql"].startswith("WITH steps AS") and "obs.metrics" in data["sql"]


def test_empty_states_say_why_and_bad_params_are_named(ui_server):
    old = ui_server.api("/health", **{"from": "2001-01-01T00:00:00Z", "to": "2001-01-02T00:00:00Z"})
    dl = panel(old, "dead_letters_by_reason")
    assert dl["row_count"] == 0 and "No dead letters in this time range" in dl["empty_reason"]
    r = ui_server.get("/api/v1/services", range="3 weeks")
    assert r.status_code == 400 and r.json()["error"].startswith("range: expected one of")
    r = ui_server.get("/api/v1/traces/search", min_ms="fast")
    assert r.status_code == 400 and r.json()["error"] == "min_ms: expected a number, got 'fast'"
    r = ui_server.get("/traces/not-a-trace")
    assert r.status_code == 404


def test_cache_by_snapshot_and_csp(ui_server):
    a = ui_server.api("/services/per_service", range="all")
    b = ui_server.api("/services/per_service", range="all")
    assert (
        b["cached"] is True
        and a["rows"] == b["rows"]
        and b["snapshots"] == a["snapshots"]
        and list(a["snapshots"]) == ["metrics"]
    )
    for path in ("/health", "/static/app.js", "/api/v1/health"):
        r = ui_server.get(path)
        assert r.status_code == 200
        assert r.headers["content-security-policy"].startswith(
            "default-src 'self'; script-src 'self'; style-src 'self'"
        )


def test_logs_estimates_and_search(ui_server, sql):
    page = ui_server.api("/logs", range="all")
    counts = {(r["service"], r["level"]): r for r in rows_as_dicts(panel(page, "counts"))}
    want = {}
    for svc, level, rate in sql("SELECT service, level, sample_rate FROM obs.logs"):
        n, est = want.get((svc, level), (0, 0.0))
        want[(svc, level)] = (n + 1, est + 1.0 / rate)
    assert sorted(counts) == sorted(want) and want
    for k, (n, est) in want.items():
        assert counts[k]["lines_stored"] == n
        assert counts[k]["lines_estimated"] == pytest.approx(round(est, 1))
    errors = ui_server.api("/logs/search", range="all", level="error")
    assert errors["row_count"] == min(200, sql("SELECT count(*) FROM obs.logs WHERE level = 'ERROR'")[0][0])
    word = sql("SELECT split_part(message, ' ', 1) FROM obs.logs ORDER BY ts LIMIT 1")[0][0]
    found = ui_server.api("/logs/counts", range="all", text=word.upper())
    assert (
        sum(r["lines_stored"] for r in rows_as_dicts(found))
        == sql(f"SELECT count(*) FROM obs.logs WHERE strpos(lower(message), lower('{word}')) > 0")[0][0]
    )


def test_alerts_now_and_history(ui_server, sql):
    page = ui_server.api("/alerts", range="all")
    changes = panel(page, "changes")
    assert changes["row_count"] == sql("SELECT count(*) FROM obs.alerts")[0][0] > 0
    latest = {}
    for fp, status, ts in sql("SELECT fingerprint, status, ts FROM obs.alerts ORDER BY ts"):
        latest[fp] = status
    assert sorted(r["fingerprint"] for r in rows_as_dicts(panel(page, "firing_now"))) == sorted(
        fp for fp, st in latest.items() if st == "firing"
    )


def test_breakdowns_sessions_dropoff_and_error_groups(ui_server, sql):
    page = ui_server.api("/product", range="all")
    n_steps = len(panel(page, "funnel_signup")["rows"])
    by_country = {r["geo_country"]: r for r in rows_as_dicts(panel(page, "breakdown_signup_geo_country"))}
    want: dict[str, list[int]] = {}
    for country, reached in sql(
        "SELECT geo_country, funnel_steps_reached FROM obs.sessions "
        "WHERE funnel = 'signup' AND funnel_steps_reached >= 1"
    ):
        w = want.setdefault(country or "(unknown)", [0, 0])
        w[0] += 1
        w[1] += reached >= n_steps
    assert {k: [v["sessions_entered"], v["converted"]] for k, v in by_country.items()} == want and want
    # a drop-off opens the sessions that stopped at that step
    step = next(r for r in rows_as_dicts(panel(page, "funnel_signup")) if r["dropped_after_step"])
    dropped = ui_server.api("/sessions/list", range="all", funnel="signup", last_step=step["step"])
    assert dropped["row_count"] == step["dropped_after_step"]
    assert {r["funnel_last_step"] for r in rows_as_dicts(dropped)} == {step["step"]}
    # a session's timeline is its events in time order
    sid = rows_as_dicts(dropped)[0]["session_id"]
    timeline = ui_server.api(f"/sessions/{sid}/timeline")
    assert [r["event_type"] for r in rows_as_dicts(timeline)] == [
        r[0] for r in sql(f"SELECT event_type FROM obs.events WHERE session_id = '{sid}' ORDER BY ts, event_index")
    ]
    groups = {r["error_message"]: r for r in rows_as_dicts(panel(page, "error_groups"))}
    want_groups = {
        m: (n, s)
        for m, n, s in sql(
            "SELECT error_message, count(*), count(DISTINCT session_id) FROM obs.events "
            "WHERE event_type = 'error' GROUP BY 1"
        )
    }
    assert {m: (g["occurrences"], g["affected_sessions"]) for m, g in groups.items()} == want_groups
    assert all(g["sample_stack"] for g in groups.values())


def test_alert_opens_its_series_with_threshold(ui_server, sql):
    fp, rule, labels = sql("SELECT fingerprint, rule, labels FROM obs.alerts ORDER BY ts DESC, fingerprint LIMIT 1")[0]
    page = ui_server.api(f"/alerts/{fp}", range="all")
    hist = panel(page, "history")
    assert [r["status"] for r in rows_as_dicts(hist)] == [
        r[0] for r in sql(f"SELECT status FROM obs.alerts WHERE fingerprint = '{fp}' ORDER BY ts")
    ]
    assert rule == "CheckoutLatencyP99"  # the default spec: http.latency_ms p99 > 1000, match service=checkout
    series = rows_as_dicts(panel(page, "series"))
    conds = " AND ".join(
        f"labels['{k}'] = '{v}'" for k, v in sorted(labels.items()) if k not in ("alertname", "severity")
    )
    want = sql(
        f"SELECT window_start, p99 FROM obs.metrics WHERE name = 'http.latency_ms' AND resolution = '1m' AND {conds} "
        "ORDER BY window_start"
    )
    assert [(r["window_start"], r["value"]) for r in series] == [(w.isoformat(), round(v, 3)) for w, v in want] and want
    assert {r["threshold"] for r in series} == {1000.0}
    r = ui_server.get("/api/v1/alerts/not-hex")
    assert r.status_code == 404 and "fingerprint" in r.json()["error"]


def test_a_commit_makes_cached_answers_stale(ui_server, sql, demo_warehouse):
    """Runs after the other tests of this module that read the demo warehouse: it appends
    to obs.dead_letters (one row copied), a new snapshot; the cached answer over that table
    is recomputed, the others stay cached."""
    from pipelines import DEFAULT_SPEC
    from sinks.catalog import open_catalog
    from ui.server import load

    before = ui_server.api("/health/dead_letters_by_reason", range="all")
    services = ui_server.api("/services/per_service", range="all")
    again = ui_server.api("/health/dead_letters_by_reason", range="all")
    assert again["cached"] is True
    spec = load(str(DEFAULT_SPEC), str(demo_warehouse))
    table = open_catalog(spec.storage, create=False).load_table("obs.dead_letters")
    row = table.scan(limit=1).to_arrow()
    reason = row.column("reason")[0].as_py()
    table.append(row)
    after = ui_server.api("/health/dead_letters_by_reason", range="all")
    assert after["cached"] is False and after["snapshots"] != before["snapshots"]
    counts = {r["reason"]: r["records"] for r in rows_as_dicts(after)}
    assert counts == {
        **{r["reason"]: r["records"] for r in rows_as_dicts(before)},
        reason: {r["reason"]: r["records"] for r in rows_as_dicts(before)}[reason] + 1,
    }
    assert counts == dict(sql("SELECT reason, count(*) FROM obs.dead_letters GROUP BY 1"))
    assert ui_server.api("/services/per_service", range="all")["cached"] is True
    assert services["rows"] == ui_server.api("/services/per_service", range="all")["rows"]


def test_ui_on_a_missing_warehouse_says_so(tmp_path):
    import subprocess
    import sys

    from tests.ui.conftest import ROOT, _env, ensure_ui_assets

    ensure_ui_assets()
    r = subprocess.run(
        [sys.executable, "-m", "runners.cli", "ui", "--warehouse", str(tmp_path / "nowhere"), "--port", "0"],
        capture_output=True,
        text=True,
        env=_env(),
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert r.returncode == 2, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("obsflow: ") and "nowhere" in last and "Traceback" not in r.stderr


def test_commits_from_snapshot_summaries(ui_server, demo_warehouse):
    from pipelines import DEFAULT_SPEC
    from sinks.catalog import open_catalog
    from tests.ui.conftest import DEMO_COUNT
    from ui.server import load

    cat = open_catalog(load(str(DEFAULT_SPEC), str(demo_warehouse)).storage, create=False)
    got = rows_as_dicts(ui_server.api("/health/commits"))
    for table in TABLES:
        snaps = cat.load_table(f"obs.{table}").snapshots()
        mine = [r for r in got if r["table_name"] == table]
        assert sorted(r["snapshot_id"] for r in mine) == sorted(str(s.snapshot_id) for s in snaps), table
        by_id = {str(s.snapshot_id): s for s in snaps}
        assert all(r["added_records"] == int(by_id[r["snapshot_id"]].summary["added-records"]) for r in mine), table
    first_events = min((r for r in got if r["table_name"] == "events"), key=lambda r: r["committed_at"])
    assert first_events["source_records_since_previous_commit"] == DEMO_COUNT  # every generated event record was read


def test_row_links_carry_the_page_time_range(ui_server, sql):
    """A drop-off opens its sessions, an alert its page, in the time range of the page they
    are on (an alert window's link to traces keeps its own bounds: the window)."""
    import html
    import re

    step = sql(
        "SELECT funnel_last_step FROM obs.sessions WHERE funnel = 'signup' AND funnel_last_step <> 'complete' "
        "GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1"
    )[0][0]
    fp = sql("SELECT fingerprint FROM obs.alerts ORDER BY ts DESC, fingerprint LIMIT 1")[0][0]
    for rng in ("all", "30d"):
        body = ui_server.get("/product", range=rng).text
        hrefs = {html.unescape(h) for h in re.findall(r'href="(/sessions\?funnel=[^"]*)"', body)}
        assert f"/sessions?funnel=signup&last_step={step}&range={rng}" in hrefs
        assert all(h.endswith(f"&range={rng}") for h in hrefs)
        body = ui_server.get("/alerts", range=rng).text
        assert f'href="/alerts/{fp}?range={rng}"' in body
    body = ui_server.get("/product", **{"from": "2020-01-01T00:00:00Z"}).text
    hrefs = {html.unescape(h) for h in re.findall(r'href="(/sessions\?funnel=[^"]*)"', body)}
    assert hrefs and all(h.endswith("&from=2020-01-01T00%3A00%3A00Z") for h in hrefs)
    body = ui_server.get(f"/alerts/{fp}", range="all").text
    windows = [html.unescape(h) for h in re.findall(r'href="(/traces\?service=[^"]*)"', body)]
    assert windows and all("&from=" in h and "&to=" in h and "range=" not in h for h in windows)


def _summary_counters(text: str) -> tuple[tuple[int, ...], dict[str, int]]:
    """From `obsflow run`'s printed summary: (records in, accepted, dead-lettered, dropped) and
    the tail-sampling figures {counter:reason: n} it prints (traces kept / not sampled, spans)."""
    import re

    m = re.search(
        r"run finished in [\d.]+s: ([\d,]+) records in \(.*?\), ([\d,]+) accepted, ([\d,]+) dead-lettered, "
        r"([\d,]+) dropped",
        text,
    )
    assert m, text
    nums = tuple(int(g.replace(",", "")) for g in m.groups())
    m = re.search(r"tail sampling: ([\d,]+) traces kept, ([\d,]+) not sampled \(([\d,]+) spans\)", text)
    assert m, text
    kept, not_sampled, spans = (int(g.replace(",", "")) for g in m.groups())
    return nums, {"traces:sampled": kept, "traces:not_sampled": not_sampled, "dropped_spans:not_sampled": spans}


def _check_counters(counters: dict, tail: dict, summary: str) -> None:
    (n_in, acc, dead, dropped), want_tail = _summary_counters(summary)
    rows = rows_as_dicts(counters)
    assert rows, counters["empty_reason"]
    newest = rows[-1]
    assert (
        newest["records_in"],
        newest["records_accepted"],
        newest["records_dead_lettered"],
        newest["records_dropped"],
    ) == (n_in, acc, dead, dropped)
    assert n_in == acc + dead + dropped
    # the per-commit increments of the run add up to its totals
    assert sum(r["in_since_previous_commit"] for r in rows) == n_in
    assert sum(r["dead_lettered_since_previous_commit"] for r in rows) == dead
    got_tail = {f"{r['counter']}:{r['reason']}": r["count"] for r in rows_as_dicts(tail)}
    assert {k: got_tail.get(k) for k in want_tail} == want_tail


def test_pipeline_counters_equal_the_run_summary(ui_server, demo_warehouse):
    """The job writes its run counters in each commit's summary; the health page's newest
    figures equal the run summary `obsflow run` printed (Bytewax)."""
    page = ui_server.api("/health", range="all")
    _check_counters(
        panel(page, "pipeline_counters"),
        panel(page, "tail_sampling"),
        (demo_warehouse.parent / "run-summary.txt").read_text(),
    )
    assert panel(page, "pipeline_counters")["chart"]["x"] == "committed_at"
    old = ui_server.api("/health/pipeline_counters", **{"to": "2000-01-01T00:00:00Z"})
    assert old["row_count"] == 0 and "obsflow.stats" in old["empty_reason"]


def test_pipeline_counters_on_beam(tmp_path):
    """The same counters in the commits of a run on Beam (DirectRunner, in process)."""
    import subprocess
    import sys

    from pipelines import DEFAULT_SPEC
    from tests.ui.conftest import ROOT, _env
    from ui import panels as P
    from ui.app import answer
    from ui.data import Reader
    from ui.server import load

    wh = tmp_path / "warehouse"
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "runners.cli",
            "run",
            "--runner",
            "beam",
            "--count",
            "300",
            "--dev-key",
            "--warehouse",
            str(wh),
        ],
        check=True,
        env=_env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    reader = Reader(load(str(DEFAULT_SPEC), str(wh)))
    tr = P.time_range({"range": "all"})
    ps = {p.id: p for p in P.health_panels(sorted(reader.tables()), tr)}
    _check_counters(
        answer(reader, ps["pipeline_counters"], tr=tr), answer(reader, ps["tail_sampling"], tr=tr), res.stdout
    )
    # the Beam job's run id (fixed when its pipelines were built, carried by its writing DoFns) on every commit
    run_ids = {
        json.loads(c["summary"]["obsflow.stats"]).get("run_id") for m in reader.tables().values() for c in m.commits
    }
    assert len(run_ids) == 1 and len(run_ids.pop() or "") == 32


def test_pipeline_counters_of_a_bytewax_cluster_add_up_over_its_processes(tmp_path):
    """A Bytewax cluster of 2 processes: each commit carries its own process's counters
    (process, run_id); the health page's newest figures are the run's totals (the sum of
    each process's latest counters), equal to what the tables and sources say. The old
    reader showed the committing process's own: 4,000 of the 8,000 records read."""
    import subprocess
    import sys

    from pipelines import DEFAULT_SPEC
    from runners.query import connect
    from tests.ui.conftest import ROOT, _env
    from ui import panels as P
    from ui.app import answer
    from ui.data import Reader
    from ui.server import load

    wh, count = tmp_path / "warehouse", 2000
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "runners.cli",
            "run",
            "--runner",
            "bytewax",
            "--processes",
            "2",
            "--count",
            str(count),
            "--dev-key",
            "--warehouse",
            str(wh),
        ],
        env=_env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0 and "cluster of 2 processes" in res.stdout, res.stdout[-2000:] + res.stderr[-3000:]
    spec = load(str(DEFAULT_SPEC), str(wh))
    reader = Reader(spec)
    tr = P.time_range({"range": "all"})
    ps = {p.id: p for p in P.health_panels(sorted(reader.tables()), tr)}
    rows = rows_as_dicts(answer(reader, ps["pipeline_counters"], tr=tr))
    procs = {json.loads(c["summary"]["obsflow.stats"])["process"] for m in reader.tables().values() for c in m.commits}
    assert len(procs) == 2  # both processes committed
    con = connect(spec)
    dead, kept = (con.execute(f"SELECT count(*) FROM obs.{t}").fetchone()[0] for t in ("dead_letters", "traces"))
    con.close()
    newest = rows[-1]
    n_in = 4 * count  # the embedded generator: `count` records on each of the 4 sources
    assert (newest["records_in"], newest["records_dead_lettered"], newest["processes"]) == (n_in, dead, 2)
    assert newest["records_accepted"] + newest["records_dead_lettered"] + newest["records_dropped"] == n_in
    assert sum(r["in_since_previous_commit"] for r in rows) == n_in
    assert sum(r["dead_lettered_since_previous_commit"] for r in rows) == dead
    tail = {
        f"{r['counter']}:{r['reason']}": r["count"] for r in rows_as_dicts(answer(reader, ps["tail_sampling"], tr=tr))
    }
    assert tail["traces:sampled"] == kept
    reader.close()
