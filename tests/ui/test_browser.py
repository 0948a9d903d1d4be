"""``obsflow ui`` in a real headless Chromium (Debian's ``chromium``, driven by Playwright
through its executable path): every page renders with no console error, no request leaves
127.0.0.1 (each one is intercepted; any other host fails the test), charts draw, and one
click-through: trace search → a trace → its waterfall → one span's logs. Screenshots are
kept as test output (``OBSFLOW_UI_SCREENSHOTS`` or the test's tmp dir)."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from urllib.parse import urlparse

import pytest

pytestmark = [pytest.mark.ui]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture()
def browser_page(ui_server, tmp_path):
    from playwright.sync_api import sync_playwright

    shots = Path(os.environ.get("OBSFLOW_UI_SCREENSHOTS") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            ctx = browser.new_context(viewport={"width": 1400, "height": 1000})

            def route(r):
                host = urlparse(r.request.url).hostname
                if host != "127.0.0.1":
                    problems.append(f"request left 127.0.0.1: {r.request.url}")
                    r.abort()
                else:
                    r.continue_()

            ctx.route("**/*", route)
            page = ctx.new_page()
            page.on(
                "console",
                lambda m: problems.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning") else None,
            )
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            # a request cancelled by the next navigation (net::ERR_ABORTED) is not a failure of the page
            page.on(
                "requestfailed",
                lambda r: (
                    problems.append(f"request failed: {r.url} {r.failure}")
                    if "ERR_ABORTED" not in (r.failure or "")
                    else None
                ),
            )
            yield page, problems, shots
        finally:
            browser.close()


def test_pages_render_offline_without_console_errors(ui_server, browser_page, sql):
    page, problems, shots = browser_page
    for path, title in [
        ("/health", "Pipeline health"),
        ("/services", "Services"),
        ("/traces", "Traces"),
        ("/logs", "Logs"),
        ("/alerts", "Alerts"),
        ("/product", "Product"),
        ("/sessions", "Sessions"),
    ]:
        page.goto(f"{ui_server.url}{path}?range=all")
        assert page.locator("main h1").inner_text() == title
        assert page.locator("section.panel").count() >= 1
        for chart in page.locator(".chart").all():  # every chart drew a canvas from its panel's API
            chart.locator("canvas").first.wait_for(state="attached", timeout=15_000)
        page.screenshot(path=str(shots / f"{path.strip('/')}.png"), full_page=True)
    # the funnel table shows the same first step count as the test's SQL
    page.goto(f"{ui_server.url}/product?range=all")
    first = sql(
        "SELECT sum(\"count\") FROM obs.metrics WHERE name = 'funnel.step.reached' "
        "AND labels['funnel'] = 'signup' AND labels['step_index'] = '00'"
    )[0][0]
    cell = page.locator("#panel-funnel_signup tbody tr").first.locator("td").nth(2)
    assert int(cell.inner_text()) == first
    # show SQL opens the panel's SQL
    page.locator("#panel-funnel_signup details.sql summary").click()
    assert "funnel.step.reached" in page.locator("#panel-funnel_signup details.sql pre").inner_text()
    # a drop-off opens the sessions that stopped at that step
    step, n = sql(
        "SELECT funnel_last_step, count(*) FROM obs.sessions WHERE funnel = 'signup' AND funnel_last_step <> 'complete' "
        "AND funnel_last_step <> '' GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 1"
    )[0]
    page.locator(f'#panel-funnel_signup a[href*="last_step={step}"]').click()
    page.wait_for_url(f"**/sessions?funnel=signup&last_step={step}&range=all")  # the page's time range goes along
    assert page.locator("#panel-list tbody tr").count() == n
    assert problems == []


def test_click_trace_to_its_logs(ui_server, browser_page, sql):
    page, problems, shots = browser_page
    tid, n_trace = sql(
        "SELECT l.trace_id, count(*) FROM obs.logs l JOIN obs.traces t USING (trace_id) "
        "GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 1"
    )[0]
    span_id = sql(f"SELECT span_id FROM obs.spans WHERE trace_id = '{tid}' ORDER BY start, span_id LIMIT 1")[0][0]
    n_span = sql(f"SELECT count(*) FROM obs.logs WHERE trace_id = '{tid}' AND span_id = '{span_id}'")[0][0]
    n_spans = sql(f"SELECT count(*) FROM obs.spans WHERE trace_id = '{tid}'")[0][0]
    page.goto(f"{ui_server.url}/traces?range=all&limit=1000")
    page.locator(f'#panel-search a[href="/traces/{tid}"]').click()
    page.wait_for_url(f"**/traces/{tid}")
    page.locator('table.waterfall[data-ready="done"]').wait_for(state="attached")  # rows come from the spans API
    assert page.locator("table.waterfall tr.span").count() == n_spans
    assert page.locator("#trace-logs tbody tr").count() == n_trace
    page.screenshot(path=str(shots / "trace.png"), full_page=True)
    # one span's logs (htmx swaps the logs panel and puts the span in the URL)
    page.locator(f'table.waterfall tr.span[data-id="{span_id}"] a.span-logs').click()
    page.wait_for_url(f"**/traces/{tid}?span_id={span_id}")
    page.locator("#trace-logs h2", has_text=f"(span {span_id})").wait_for()
    assert page.locator("#trace-logs tbody tr").count() == n_span
    if n_span == 0:
        assert "for this span" in page.locator("#trace-logs p.empty").inner_text()
    page.screenshot(path=str(shots / "trace-span-logs.png"), full_page=True)
    page.locator("a.all-logs").click()
    page.wait_for_url(f"**/traces/{tid}")
    page.locator("#trace-logs h2", has_text=re.compile(r"^Logs of this trace$")).wait_for()
    assert page.locator("#trace-logs tbody tr").count() == n_trace
    # folding a span with children hides its subtree: exactly its descendants (from the test's SQL)
    page.locator('table.waterfall[data-ready="done"]').wait_for(state="attached")
    parent = page.locator("table.waterfall tr.span:has(button.fold)").first
    if parent.count():
        pid = parent.get_attribute("data-id")
        kids: dict = {}
        for s, p in sql(f"SELECT span_id, parent_span_id FROM obs.spans WHERE trace_id = '{tid}'"):
            kids.setdefault(p, []).append(s)
        below, todo = 0, list(kids.get(pid, []))
        while todo:
            below += 1
            todo.extend(kids.get(todo.pop(), []))
        parent.locator("button.fold").click()
        assert page.locator("table.waterfall tr.span").count() == n_spans - below
        assert page.locator("table.waterfall").get_attribute("data-visible") == str(n_spans - below)
        parent = page.locator(f'table.waterfall tr.span[data-id="{pid}"]')
        parent.locator("button.fold").click()
        assert page.locator("table.waterfall tr.span").count() == n_spans
    assert problems == []


def test_click_alert_to_series_to_trace(ui_server, browser_page, sql):
    page, problems, shots = browser_page
    fp, labels = sql("SELECT fingerprint, labels FROM obs.alerts ORDER BY ts DESC, fingerprint LIMIT 1")[0]
    conds = " AND ".join(
        f"m.labels['{k}'] = '{v}'" for k, v in sorted(labels.items()) if k not in ("alertname", "severity")
    )
    # per window of the series: the kept traces that started in it and have a span of the alert's service
    windows = sql(
        "SELECT m.window_start, m.window_end, (SELECT count(*) FROM obs.traces t WHERE t.start >= m.window_start "
        "AND t.start < m.window_end AND t.trace_id IN (SELECT s.trace_id FROM obs.spans s WHERE s.service = m.labels['service'])) "
        f"FROM obs.metrics m WHERE m.name = 'http.latency_ms' AND m.resolution = '1m' AND {conds} ORDER BY 1"
    )
    page.goto(f"{ui_server.url}/alerts?range=all")
    page.locator(f'#panel-changes a[href="/alerts/{fp}?range=all"]').first.click()
    page.wait_for_url(f"**/alerts/{fp}?range=all")  # the page's time range goes along
    page.locator("#panel-series .chart canvas").first.wait_for(state="attached", timeout=15_000)
    assert page.locator("#panel-series tbody tr").count() == len(windows)
    page.screenshot(path=str(shots / "alert.png"), full_page=True)
    i, (_ws, _we, n) = next(
        (i, w) for i, w in enumerate(windows) if w[2] > 0
    )  # a window with kept traces of the service
    page.locator("#panel-series tbody tr").nth(i).locator("td").first.locator("a").click()
    page.wait_for_url("**/traces?service=*")
    assert page.locator("#panel-search tbody tr").count() == n
    first = page.locator("#panel-search tbody tr").first.locator("a").first
    tid = first.inner_text()
    first.click()
    page.wait_for_url(f"**/traces/{tid}")
    page.locator('table.waterfall[data-ready="done"]').wait_for(state="attached")
    assert (
        page.locator("table.waterfall tr.span").count()
        == sql(f"SELECT count(*) FROM obs.spans WHERE trace_id = '{tid}'")[0][0]
    )
    assert problems == []


def _append_tree_trace(warehouse, n: int) -> str:
    """Append one trace of ``n`` spans (a tree, fan-out 4, each child inside its parent, one
    span in 97 an error) to obs.spans and its row to obs.traces; return its trace id."""
    import datetime as dt

    import pyarrow as pa

    from pipelines import DEFAULT_SPEC
    from sinks.catalog import open_catalog
    from ui.server import load

    cat = open_catalog(load(str(DEFAULT_SPEC), str(warehouse)).storage, create=False)
    spans, traces = cat.load_table("obs.spans"), cat.load_table("obs.traces")
    proto = spans.scan(limit=1).to_arrow()
    tid, t0, rows = "5e" * 16, dt.datetime(2026, 1, 1, tzinfo=dt.UTC), []
    for i in range(n):
        start = t0 + dt.timedelta(microseconds=10 * i)
        rows.append(
            {
                **proto.to_pylist()[0],
                "trace_id": tid,
                "span_id": f"{i + 1:016x}",
                "parent_span_id": None if i == 0 else f"{(i - 1) // 4 + 1:016x}",
                "name": f"op-{i % 50}",
                "start": start,
                "end": start + dt.timedelta(milliseconds=100),
                "duration_ms": 100.0,
                "status_code": "ERROR" if i % 97 == 0 else "OK",
            }
        )
    spans.append(pa.Table.from_pylist(rows, schema=proto.schema))
    tproto = traces.scan(limit=1).to_arrow()
    traces.append(
        pa.Table.from_pylist(
            [{**tproto.to_pylist()[0], "trace_id": tid, "start": t0, "span_count": n}], schema=tproto.schema
        )
    )
    return tid


def test_a_large_trace_keeps_only_the_rows_in_view(ui_server, browser_page, sql, demo_warehouse):
    """A 2,000-span trace: the page carries no span row, the document holds only the rows in
    view, scrolling to the end shows the last span in tree order, a fold hides exactly the
    span's descendants. (Runs last: it appends to the shared warehouse.)"""
    page, problems, shots = browser_page
    tid = _append_tree_trace(demo_warehouse, 2000)
    kids: dict = {}
    for s, p in sql(f"SELECT span_id, parent_span_id FROM obs.spans WHERE trace_id = '{tid}' ORDER BY start, span_id"):
        kids.setdefault(p, []).append(s)
    order, todo = [], list(reversed(kids[None]))  # the tree in preorder, children in start order
    while todo:
        s = todo.pop()
        order.append(s)
        todo.extend(reversed(kids.get(s, [])))
    assert len(order) == 2000
    html = ui_server.get(f"/traces/{tid}").text
    assert 'data-spans="2000"' in html and 'class="span' not in html and len(html) < 20_000
    page.goto(f"{ui_server.url}/traces/{tid}")
    table = page.locator('table.waterfall[data-ready="done"]')
    table.wait_for(state="attached")
    assert table.get_attribute("data-visible") == "2000"
    in_doc = page.locator("table.waterfall tr.span")
    assert 0 < in_doc.count() < 300
    assert in_doc.first.get_attribute("data-id") == order[0]
    page.locator(".waterfall-wrap").evaluate("w => { w.scrollTop = w.scrollHeight; }")
    page.locator(f'table.waterfall tr.span[data-id="{order[-1]}"]').wait_for()
    assert 0 < in_doc.count() < 300
    page.screenshot(path=str(shots / "trace-2000-spans-end.png"))
    page.locator(".waterfall-wrap").evaluate("w => { w.scrollTop = 0; }")
    first_child = page.locator(f'table.waterfall tr.span[data-id="{kids[order[0]][0]}"]')
    first_child.wait_for()
    below, todo = 0, list(kids.get(kids[order[0]][0], []))
    while todo:
        below += 1
        todo.extend(kids.get(todo.pop(), []))
    first_child.locator("button.fold").click()
    assert table.get_attribute("data-visible") == str(2000 - below) and below == 975
    assert problems == []
