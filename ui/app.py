"""The ``obsflow ui`` web app: server-rendered pages (htmx for partial updates, ECharts for
charts, both served from ui/static/vendor/, never a CDN) and a JSON API under every page:
``/health`` <-> ``/api/v1/health``, ``/api/v1/health/<panel>`` (``?format=csv`` for CSV).
Every response carries a Content-Security-Policy of ``'self'``."""

from __future__ import annotations

import csv
import datetime as dt
import html
import io
import json
import re
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlencode

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from core.routing import Route
from ui import panels as P
from ui.data import Reader, jsonable

STATIC = Path(__file__).resolve().parent / "static"
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "font-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
)
PAGES = [
    ("health", "Pipeline health"),
    ("services", "Services"),
    ("traces", "Traces"),
    ("logs", "Logs"),
    ("alerts", "Alerts"),
    ("product", "Product"),
    ("sessions", "Sessions"),
]
MAX_HTML_ROWS = 500


class _Headers(BaseHTTPMiddleware):
    async def dispatch(self, request, call_next):
        resp = await call_next(request)
        resp.headers["Content-Security-Policy"] = CSP
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["Referrer-Policy"] = "no-referrer"
        return resp


def funnel_steps(spec) -> dict[str, int]:
    """``{funnel: number of steps}`` of the spec's product steps, in spec order."""
    out: dict[str, int] = {}
    for flow in getattr(spec, "flows", []):
        for step in flow.steps:
            if getattr(step, "kind", None) == "product":
                for f in step.config.funnels:
                    out.setdefault(f.name, len(f.steps))
    return out


# -- panel answers ---------------------------------------------------------------------
def _preview(raw, is_text) -> str:
    if raw is None:
        return ""
    b = bytes(raw)
    if not b:
        return "(empty: 0 bytes)"
    if is_text:
        s = b[:400].decode("utf-8", "replace")
        return s + ("…" if len(b) > 400 else "")
    return "hex: " + b[:96].hex(" ") + (" …" if len(b) > 96 else "")


def _post_process(reader: Reader, panel: P.Panel, cols: list[str], rows: list[tuple], now: dt.datetime):
    """Per-panel additions that are not SQL: Iceberg metadata next to the tables' rows, a
    decoded preview of a dead letter's raw bytes."""
    if panel.id == "tables" and panel.sql is not None:
        metas = reader.tables()
        idx = {r[0]: r for r in rows}
        cols = [
            "table_name",
            "rows_now",
            "latest_event_time",
            "seconds_since_latest_event",
            "last_commit",
            "seconds_since_last_commit",
            "rows_in_snapshot",
            "data_files",
            "snapshots",
            "snapshot_id",
        ]
        out = []
        for name, m in sorted(metas.items()):
            r = idx.get(name, (name, 0, None))
            latest = r[2]
            commit = dt.datetime.fromtimestamp(m.last_commit_ms / 1000, dt.UTC) if m.last_commit_ms else None
            out.append(
                (
                    name,
                    r[1],
                    latest,
                    round((now - latest).total_seconds(), 1) if latest else None,
                    commit,
                    round((now - commit).total_seconds(), 1) if commit else None,
                    m.rows,
                    m.files,
                    m.snapshots,
                    str(m.snapshot_id) if m.snapshot_id is not None else None,
                )
            )
        return cols, out
    if "raw" in cols and "raw_text" in cols:
        i, t = cols.index("raw"), cols.index("raw_text")
        cols = cols[:i] + ["raw_preview"] + cols[i + 1 :]
        rows = [r[:i] + (_preview(r[i], r[t]),) + r[i + 1 :] for r in rows]
    return cols, rows


def commits(reader: Reader) -> tuple[list[str], list[tuple]]:
    """Every kept snapshot of every table, newest first, from the Iceberg metadata: when it
    was committed, its operation, the records it added and the total after it, and the
    records read from each source partition since the table's previous commit (the
    ``obsflow.offsets`` the job writes in each commit's summary: next offset per
    ``topic:partition``)."""
    out = []
    for name, m in reader.tables().items():
        prev: dict[str, int] = {}
        for c in sorted(m.commits, key=lambda c: (c["timestamp-ms"] or 0, str(c["snapshot-id"]))):
            summ = c["summary"]
            try:
                offsets = {k: int(v) for k, v in json.loads(summ.get("obsflow.offsets") or "{}").items()}
            except (ValueError, TypeError, AttributeError):
                offsets = {}
            read = sum(v - prev.get(k, 0) for k, v in offsets.items()) if offsets else None
            prev = {**prev, **offsets}

            def num(key: str, summ=summ) -> int | None:
                try:
                    return int(summ[key])
                except (KeyError, TypeError, ValueError):
                    return None

            out.append(
                (
                    dt.datetime.fromtimestamp((c["timestamp-ms"] or 0) / 1000, dt.UTC),
                    name,
                    summ.get("operation"),
                    num("added-records"),
                    num("deleted-records"),
                    num("total-records"),
                    read,
                    str(c["snapshot-id"]),
                )
            )
    out.sort(key=lambda r: (r[0], r[1]), reverse=True)
    return [
        "committed_at",
        "table_name",
        "operation",
        "added_records",
        "deleted_records",
        "total_records",
        "source_records_since_previous_commit",
        "snapshot_id",
    ], out[:500]


def _run_counters(summ: dict) -> dict | None:
    try:
        c = json.loads(summ.get("obsflow.stats") or "null")
    except (TypeError, ValueError):
        return None
    return c if isinstance(c, dict) and "records_in" in c else None


_COUNTER_KEYS = ("records_in", "records_accepted", "records_dead", "records_dropped")


def _run_key(c: dict) -> tuple:
    """The run a commit's counters belong to: its ``run_id`` (shared by the processes of a
    cluster run), else its ``run_started`` (counters of a commit that names no run id)."""
    return ("run", c["run_id"]) if c.get("run_id") else ("started", c.get("run_started"))


def _run_total(procs: dict[str, dict]) -> dict:
    """A run's counters: the sum over its processes of each one's latest counters, with
    ``run_started`` the earliest process's start, and ``tail_sampling`` and
    ``dropped_by_reason`` summed per key."""
    total: dict = {k: sum(int(c.get(k) or 0) for c in procs.values()) for k in _COUNTER_KEYS}
    starts = [c["run_started"] for c in procs.values() if isinstance(c.get("run_started"), (int, float))]
    total["run_started"] = min(starts) if starts else None
    for field in ("tail_sampling", "dropped_by_reason"):
        summed: dict[str, int] = {}
        for c in procs.values():
            for key, n in (c.get(field) or {}).items():
                summed[key] = summed.get(key, 0) + int(n)
        total[field] = summed
    total["processes"] = len(procs)
    return total


def _counter_commits(reader: Reader) -> list[tuple[int, str, str, dict]]:
    """(commit ms, table, snapshot id, counters) of every commit carrying ``obsflow.stats``, oldest first."""
    found = []
    for name, m in reader.tables().items():
        for c in m.commits:
            counters = _run_counters(c["summary"])
            if counters is not None:
                found.append((c["timestamp-ms"] or 0, name, str(c["snapshot-id"]), counters))
    found.sort(key=lambda f: (f[0], f[1], f[2]))
    return found


def pipeline_counters(reader: Reader, tr: P.TimeRange | None = None) -> tuple[list[str], list[tuple]]:
    """The job's run counters over time: per commit of any table (oldest first, the newest
    500 in ``tr``), the run's counters as of that commit (``obsflow.stats`` in the snapshot
    summary, cumulative since its run started: records in / accepted / dead-lettered /
    dropped) and what each grew by since the run's previous commit. A commit carries its
    own process's counters; a run of several processes (same ``run_id``) is the sum of
    each process's latest counters so far, ``processes`` of them. A run's last commit
    holds its run's totals."""
    procs: dict[tuple, dict[str, dict]] = {}
    out: list[tuple] = []
    for ms, name, snap, c in _counter_commits(reader):
        run = procs.setdefault(_run_key(c), {})
        before = _run_total(run) if run else {}
        run[str(c.get("process") or "")] = c
        now = _run_total(run)
        at = dt.datetime.fromtimestamp(ms / 1000, dt.UTC)
        if tr is not None and ((tr.start is not None and at < tr.start) or (tr.end is not None and at >= tr.end)):
            continue
        started = now["run_started"]
        out.append(
            (
                at,
                name,
                dt.datetime.fromtimestamp(started, dt.UTC) if started is not None else None,
                *(now[k] for k in _COUNTER_KEYS),
                *(now[k] - int(before.get(k) or 0) for k in _COUNTER_KEYS),
                snap,
                now["processes"],
            )
        )
    return (
        [
            "committed_at",
            "table_name",
            "run_started",
            "records_in",
            "records_accepted",
            "records_dead_lettered",
            "records_dropped",
            "in_since_previous_commit",
            "accepted_since_previous_commit",
            "dead_lettered_since_previous_commit",
            "dropped_since_previous_commit",
            "snapshot_id",
            "processes",
        ],
        out[-500:],
    )


def _latest_runs(reader: Reader, tr: P.TimeRange | None) -> list[tuple[dt.datetime | None, dt.datetime, dict]]:
    """Per run, newest first: (its start, its newest commit in ``tr``, its counters as of
    that commit: a run of several processes summed over each one's latest counters)."""
    procs: dict[tuple, dict[str, dict]] = {}
    latest: dict[tuple, tuple[dt.datetime, dict]] = {}
    for ms, _name, _snap, c in _counter_commits(reader):
        at = dt.datetime.fromtimestamp(ms / 1000, dt.UTC)
        if tr is not None and ((tr.start is not None and at < tr.start) or (tr.end is not None and at >= tr.end)):
            continue
        key = _run_key(c)
        procs.setdefault(key, {})[str(c.get("process") or "")] = c
        latest[key] = (at, _run_total(procs[key]))
    out = []
    for at, total in sorted(latest.values(), key=lambda v: v[0], reverse=True):
        run = total["run_started"]
        out.append((dt.datetime.fromtimestamp(run, dt.UTC) if run is not None else None, at, total))
    return out


def tail_sampling_counters(reader: Reader, tr: P.TimeRange | None = None) -> tuple[list[str], list[tuple]]:
    """Per run (as of its newest commit in ``tr``; a run of several processes summed over
    each one's latest counters up to then): tail sampling kept and dropped by counter and
    reason (``traces`` sampled / not_sampled, ``dropped_traces`` and ``dropped_spans`` by
    reason, ``early_decisions``, ``late_spans_kept``), as the run summary prints them."""
    out = []
    for started, at, total in _latest_runs(reader, tr):
        for key, n in sorted(total["tail_sampling"].items()):
            counter, _, reason = key.partition(":")
            out.append((started, at, counter, reason, int(n)))
    return ["run_started", "as_of_commit", "counter", "reason", "count"], out


def dropped_counters(reader: Reader, tr: P.TimeRange | None = None) -> tuple[list[str], list[tuple]]:
    """Per run (as :func:`tail_sampling_counters`): its dropped records by reason
    (``duplicate``: the event dedupe; the reasons the run summary's ``dropped by reason``
    names), with the run's ``records_dropped`` beside each; a run that dropped nothing
    has no row."""
    out = []
    for started, at, total in _latest_runs(reader, tr):
        for reason, n in sorted(total["dropped_by_reason"].items()):
            out.append((started, at, reason, int(n), total["records_dropped"]))
    return ["run_started", "as_of_commit", "reason", "records_dropped", "run_records_dropped"], out


def answer(reader: Reader, panel: P.Panel, fresh: bool = False, tr: P.TimeRange | None = None) -> dict:
    """A panel's JSON: its SQL, columns, rows, and when empty, why (``fresh``: run the SQL
    even when a cached answer for the same snapshots exists)."""
    now = dt.datetime.now(dt.UTC)
    if panel.sql is None:
        res = None
        if panel.id == "commits":
            cols, rows = commits(reader)
        elif panel.id == "pipeline_counters":
            cols, rows = pipeline_counters(reader, tr)
        elif panel.id == "tail_sampling":
            cols, rows = tail_sampling_counters(reader, tr)
        elif panel.id == "dropped_by_reason":
            cols, rows = dropped_counters(reader, tr)
        else:
            cols, rows = [], []
    else:
        res = reader.run(panel.sql, fresh)
        cols, rows = _post_process(reader, panel, res.columns, res.rows, now)
    empty = None
    if not rows:
        if res is not None and res.missing:
            empty = (
                "Nothing to read yet: "
                + ", ".join(f"obs.{t}" for t in res.missing)
                + " does not exist or has no commit (the job has not written to it). "
                + panel.empty
            )
        else:
            empty = panel.empty
    return {
        "id": panel.id,
        "title": panel.title,
        "sql": panel.sql,
        "note": panel.note or None,
        "columns": cols,
        "rows": [[jsonable(v) for v in r] for r in rows],
        "row_count": len(rows),
        "empty_reason": empty,
        "chart": panel.chart,
        "links": panel.links or None,
        "snapshots": {k: (str(v) if v is not None else None) for k, v in (res.snapshots if res else {}).items()},
        "cached": bool(res and res.cached),
        "query_ms": round(res.ms, 2) if res else 0.0,
        "backend": reader.backend,
        "generated_at": now.isoformat(),
    }


def _csv(data: dict) -> Response:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(data["columns"])
    for r in data["rows"]:
        w.writerow(["" if v is None else json.dumps(v) if isinstance(v, (list, dict)) else v for v in r])
    return Response(
        buf.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{data["id"]}.csv"'},
    )


# -- HTML ------------------------------------------------------------------------------
def _e(v) -> str:
    return html.escape("" if v is None else str(v), quote=True)


_ISO = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?\+00:00$")


def _link(tmpl: str, value, row: dict) -> str:
    from urllib.parse import quote

    return tmpl.format_map({**{k: quote(str(v), safe="") for k, v in row.items()}, "value": quote(str(value), safe="")})


def _cell(col: str, v, links: dict, row: dict) -> str:
    """One table cell: links where the panel has them (a list gives a link per item),
    UTC timestamps shortened (the full value in the title), numbers right-aligned."""
    if v is None:
        return '<td class="null">–</td>'
    tmpl = links.get(col)
    if tmpl and isinstance(v, list):
        return (
            "<td>" + " ".join(f'<a href="{_e(_link(tmpl, x, row))}">{_e(str(x)[:12])}…</a>' for x in v if x) + "</td>"
        )
    if tmpl:
        return f'<td><a href="{_e(_link(tmpl, v, row))}">{_e(v)}</a></td>'
    if isinstance(v, str) and _ISO.match(v):
        short = v[:10] + " " + v[11:19] + (v[19:23] if v[19] == "." else "")
        return f'<td class="ts" title="{_e(v)}">{_e(short)}</td>'
    if isinstance(v, (list, dict)):
        v = json.dumps(v)
    cls = ' class="num"' if isinstance(v, (int, float)) and not isinstance(v, bool) else ""
    return f"<td{cls}>{_e(v)}</td>"


def _qs(params) -> str:
    items = [(k, v) for k, v in params if v not in (None, "")]
    return ("?" + urlencode(items)) if items else ""


def panel_html(data: dict, api: str, params) -> str:
    """A panel: title, toolbar (CSV, JSON, show SQL), a chart when it has one, its table or
    the empty state that says why."""
    pid = _e(data["id"])
    qs = _qs(params)
    csv_qs = _qs([*params, ("format", "csv")])
    parts = [
        f'<section class="panel" id="panel-{pid}" data-panel="{pid}">',
        (
            f'<header><h2>{_e(data["title"])}</h2><nav class="tools">'
            f'<a class="csv" href="{_e(api + csv_qs)}" download>CSV</a> '
            f'<a class="json" href="{_e(api + qs)}">JSON</a></nav></header>'
        ),
    ]
    if data.get("note"):
        parts.append(f'<p class="note">{_e(data["note"])}</p>')
    if data.get("sql"):
        parts.append(f'<details class="sql"><summary>show SQL</summary><pre>{_e(data["sql"])}</pre></details>')
    if data["empty_reason"]:
        parts.append(f'<p class="empty">{_e(data["empty_reason"])}</p></section>')
        return "".join(parts)
    if data.get("chart"):
        parts.append(
            f'<div class="chart" data-src="{_e(api + qs)}" data-chart="{_e(json.dumps(data["chart"]))}"></div>'
        )
    links = data.get("links") or {}
    parts.append(
        '<div class="scroll"><table><thead><tr>'
        + "".join(f"<th>{_e(c)}</th>" for c in data["columns"])
        + "</tr></thead><tbody>"
    )
    for r in data["rows"][:MAX_HTML_ROWS]:
        row = dict(zip(data["columns"], r))
        parts.append("<tr>" + "".join(_cell(c, v, links, row) for c, v in row.items()) + "</tr>")
    parts.append("</tbody></table></div>")
    if data["row_count"] > MAX_HTML_ROWS:
        parts.append(
            f'<p class="note">Showing {MAX_HTML_ROWS} of {data["row_count"]} rows: the CSV and JSON hold all.</p>'
        )
    parts.append("</section>")
    return "".join(parts)


def layout(
    title: str, active: str, body: str, tr: P.TimeRange | None, request: Request, reader: Reader
) -> HTMLResponse:
    nav = "".join(
        f'<a href="/{p}{_qs(tr.params if tr else [])}" class="{"on" if p == active else ""}">{_e(t)}</a>'
        for p, t in PAGES
    )
    rng = ""
    if tr is not None:
        keep = "".join(
            f'<input type="hidden" name="{_e(k)}" value="{_e(v)}">'
            for k, v in request.query_params.multi_items()
            if k not in ("range", "from", "to")
        )
        cur = request.query_params.get("range") or (
            "" if request.query_params.get("from") or request.query_params.get("to") else P.DEFAULT_RANGE
        )
        opts = "".join(f'<option value="{r}"{" selected" if r == cur else ""}>last {r}</option>' for r in P.RANGES)
        opts += f'<option value="all"{" selected" if cur == "all" else ""}>all time</option>'
        opts = ('<option value=""' + (" selected" if not cur else "") + ">absolute (from / to)</option>") + opts
        rng = (
            f'<form class="range" method="get">{keep}<label>Time range <select name="range">{opts}</select></label> '
            f'<label>from <input name="from" value="{_e(request.query_params.get("from"))}" placeholder="2026-01-31T12:00Z"></label> '
            f'<label>to <input name="to" value="{_e(request.query_params.get("to"))}" placeholder="now"></label> '
            f'<button>Apply</button> <span class="zone">{_e(tr.label)}</span></form>'
        )
    page = (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{_e(title)} · obsflow</title>'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="htmx-config" content=\'{"includeIndicatorStyles": false, "allowEval": false, "allowScriptTags": false}\'>'
        '<link rel="icon" href="/static/favicon.svg">'
        '<link rel="stylesheet" href="/static/ui.css"><script src="/static/vendor/htmx.min.js" defer></script>'
        + ('<script src="/static/vendor/echarts.min.js" defer></script>' if 'class="chart"' in body else "")
        + '<script src="/static/app.js" defer></script></head>'
        f'<body><header class="top"><span class="brand">obsflow</span><nav>{nav}</nav>'
        f'<span class="backend">{_e(reader.backend)}</span></header>{rng}<main><h1>{_e(title)}</h1>{body}</main></body></html>'
    )
    return HTMLResponse(page)


def error_page(msg: str, status: int = 400) -> HTMLResponse:
    return HTMLResponse(
        f'<!doctype html><html><head><meta charset="utf-8"><title>obsflow: error</title>'
        f'<link rel="stylesheet" href="/static/ui.css"></head><body><main><p class="error">{_e(msg)}</p>'
        f'<p><a href="/health">Pipeline health</a></p></main></body></html>',
        status_code=status,
    )


# -- the app ---------------------------------------------------------------------------
def create_app(spec, reader: Reader) -> Starlette:
    """The app over ``reader`` (its backend's tables); ``spec`` gives the funnels."""
    funnels = funnel_steps(spec)

    def page_panels(page: str, q, tr: P.TimeRange) -> list[P.Panel]:
        if page == "health":
            return P.health_panels(sorted(reader.tables()), tr)
        if page == "services":
            return P.services_panels(tr)
        if page == "traces":
            return [P.trace_search_panel(q, tr)]
        if page == "product":
            ps = P.funnel_panels(list(funnels), tr)
            for p in ps:
                if p.id.startswith("funnel_"):
                    p.links = {"dropped_after_step": "/sessions?funnel=" + p.id[len("funnel_") :] + "&last_step={step}"}
            return with_range(ps + P.product_extra_panels(funnels, tr), tr)
        if page == "sessions":
            return P.sessions_panels(q, tr)
        if page == "logs":
            return P.logs_panels(q, tr)
        if page == "alerts":
            return with_range(P.alerts_panels(tr), tr)
        raise KeyError(page)

    def with_range(panels: list[P.Panel], tr: P.TimeRange) -> list[P.Panel]:
        """``panels`` whose row-built links to a time-ranged page (sessions, an alert, the trace
        search) carry the page's time range, unless the link has its own bounds (``from=``)."""
        extra = urlencode(tr.params).replace("{", "{{").replace("}", "}}")
        for p in panels:
            p.links = {
                c: t
                if "from=" in t or not t.startswith(("/sessions", "/alerts/", "/traces?"))
                else t + ("&" if "?" in t else "?") + extra
                for c, t in p.links.items()
            }
        return panels

    def _params(request: Request, drop=("format",)) -> list[tuple[str, str]]:
        return [(k, v) for k, v in request.query_params.multi_items() if k not in drop]

    def api_page(request: Request) -> Response:
        page = request.path_params["page"]
        if page not in dict(PAGES):
            return JSONResponse(
                {"error": f"no page {page!r}; pages: {', '.join(p for p, _ in PAGES)}"}, status_code=404
            )
        try:
            tr = P.time_range(request.query_params)
            panels = page_panels(page, request.query_params, tr)
        except P.BadParam as e:
            return JSONResponse({"error": str(e)}, status_code=400)
        return JSONResponse(
            {
                "page": page,
                "time_range": {"label": tr.label, "start": jsonable(tr.start), "end": jsonable(tr.end)},
                "panels": [answer(reader, p, tr=tr) for p in panels],
            }
        )

    def api_panel(request: Request) -> Response:
        page, part = request.path_params["page"], request.path_params["panel"]
        if page == "traces" and part != "search":
            return api_trace(request, part, None)
        if page == "sessions" and part != "list":
            return api_session(request, part, None)
        if page == "alerts" and part not in ("firing_now", "changes", "per_rule"):
            return api_alert(request, part, None)
        if page not in dict(PAGES):
            return JSONResponse({"error": f"no page {page!r}"}, status_code=404)
        try:
            tr = P.time_range(request.query_params)
            found = [p for p in page_panels(page, request.query_params, tr) if p.id == part]
        except P.BadParam as e:
            return JSONResponse({"error": str(e)}, status_code=400)
        if not found:
            return JSONResponse({"error": f"page {page!r} has no panel {part!r}"}, status_code=404)
        data = answer(reader, found[0], request.query_params.get("fresh") == "1", tr)
        return _csv(data) if request.query_params.get("format") == "csv" else JSONResponse(data)

    def api_trace(request: Request, trace_id: str, panel: str | None) -> Response:
        try:
            tid = P.trace_id_param(trace_id)
        except P.BadParam as e:
            return JSONResponse({"error": str(e)}, status_code=404)
        ps = P.trace_panels(tid, request.query_params.get("span_id") or None)
        if panel is not None:
            ps = [p for p in ps if p.id == panel]
            if not ps:
                return JSONResponse(
                    {"error": f"a trace has no panel {panel!r}; panels: summary, spans, logs"}, status_code=404
                )
            data = answer(reader, ps[0])
            return _csv(data) if request.query_params.get("format") == "csv" else JSONResponse(data)
        return JSONResponse({"trace_id": tid, "panels": [answer(reader, p) for p in ps]})

    def alert_panels(fingerprint: str, tr: P.TimeRange) -> list[P.Panel]:
        """The alert's history, then (when its rule is in the spec) its rollup series."""
        hist = P.alert_history_panel(fingerprint)
        out = [hist]
        assert hist.sql is not None  # the history panel is SQL
        res = reader.run(hist.sql)
        if res.rows:
            last = dict(zip(res.columns, res.rows[-1]))
            rules = {r.name: r for r in (spec.alerts.rules if getattr(spec, "alerts", None) else [])}
            rule = rules.get(last["rule"])
            if rule is not None:
                skip = {"alertname", "severity", *rule.labels}
                labels = {k: v for k, v in (last["labels"] or {}).items() if k not in skip}
                out.append(P.alert_series_panel(rule, labels, tr))
        return with_range(out, tr)

    def api_alert(request: Request, fingerprint: str, panel: str | None) -> Response:
        try:
            fp = P.fingerprint_param(fingerprint)
            ps = alert_panels(fp, P.time_range(request.query_params))
        except P.BadParam as e:
            return JSONResponse({"error": str(e)}, status_code=404 if "fingerprint" in str(e) else 400)
        if panel is not None:
            ps = [p for p in ps if p.id == panel]
            if not ps:
                return JSONResponse(
                    {"error": f"this alert has no panel {panel!r}; panels: history, series"}, status_code=404
                )
            data = answer(reader, ps[0])
            return _csv(data) if request.query_params.get("format") == "csv" else JSONResponse(data)
        return JSONResponse({"fingerprint": fp, "panels": [answer(reader, p) for p in ps]})

    def api_alert_panel(request: Request) -> Response:
        return api_alert(request, request.path_params["fingerprint"], request.path_params["panel"])

    def alert_page(request: Request) -> Response:
        try:
            fp = P.fingerprint_param(request.path_params["fingerprint"])
            tr = P.time_range(request.query_params)
            ps = alert_panels(fp, tr)
        except P.BadParam as e:
            return error_page(str(e), 404 if "fingerprint" in str(e) else 400)
        params = _params(request)
        body = "".join(panel_html(answer(reader, p), f"/api/v1/alerts/{fp}/{p.id}", params) for p in ps)
        return layout(f"Alert {fp}", "alerts", body, tr, request, reader)

    def api_session(request: Request, session_id: str, panel: str | None) -> Response:
        try:
            sid = P.session_id_param(session_id)
        except P.BadParam as e:
            return JSONResponse({"error": str(e)}, status_code=404)
        ps = P.session_panels(sid)
        if panel is not None:
            ps = [p for p in ps if p.id == panel]
            if not ps:
                return JSONResponse(
                    {"error": f"a session has no panel {panel!r}; panels: summary, timeline"}, status_code=404
                )
            data = answer(reader, ps[0])
            return _csv(data) if request.query_params.get("format") == "csv" else JSONResponse(data)
        return JSONResponse({"session_id": sid, "panels": [answer(reader, p) for p in ps]})

    def api_session_panel(request: Request) -> Response:
        return api_session(request, request.path_params["session_id"], request.path_params["panel"])

    def session_page(request: Request) -> Response:
        try:
            sid = P.session_id_param(request.path_params["session_id"])
        except P.BadParam as e:
            return error_page(str(e), 404)
        api = f"/api/v1/sessions/{sid}"
        body = "".join(panel_html(answer(reader, p), f"{api}/{p.id}", []) for p in P.session_panels(sid))
        return layout(f"Session {sid}", "sessions", body, None, request, reader)

    def api_trace_panel(request: Request) -> Response:
        return api_trace(request, request.path_params["trace_id"], request.path_params["panel"])

    def api_index(request: Request) -> Response:
        return JSONResponse(
            {
                "pages": [{"page": p, "title": t, "api": f"/api/v1/{p}"} for p, t in PAGES],
                "trace": "/api/v1/traces/{trace_id}",
                "backend": reader.backend,
            }
        )

    def html_page(request: Request) -> Response:
        page = request.url.path.strip("/")
        try:
            tr = P.time_range(request.query_params)
            panels = page_panels(page, request.query_params, tr)
        except P.BadParam as e:
            return error_page(str(e))
        params = _params(request)
        body = _page_form(page, request)
        body += "".join(panel_html(answer(reader, p, tr=tr), f"/api/v1/{page}/{p.id}", params) for p in panels)
        return layout(dict(PAGES)[page], page, body, tr, request, reader)

    def trace_page(request: Request) -> Response:
        try:
            tid = P.trace_id_param(request.path_params["trace_id"])
        except P.BadParam as e:
            return error_page(str(e), 404)
        span_id = request.query_params.get("span_id") or None
        summary, spans, logs = (answer(reader, p) for p in P.trace_panels(tid, span_id))
        api = f"/api/v1/traces/{tid}"
        params = _params(request)
        body = panel_html(summary, api + "/summary", [])
        body += _waterfall(tid, spans, api + "/spans")
        body += f'<div id="trace-logs">{panel_html(logs, api + "/logs", params)}</div>'
        return layout(f"Trace {tid}", "traces", body, None, request, reader)

    def trace_logs_fragment(request: Request) -> Response:
        try:
            tid = P.trace_id_param(request.path_params["trace_id"])
        except P.BadParam as e:
            return PlainTextResponse(str(e), status_code=404)
        span_id = request.query_params.get("span_id") or None
        logs = answer(reader, P.trace_panels(tid, span_id)[2])
        return HTMLResponse(panel_html(logs, f"/api/v1/traces/{tid}/logs", _params(request)))

    def home(request: Request) -> Response:
        return RedirectResponse("/health" + (("?" + request.url.query) if request.url.query else ""))

    routes = [
        Route("/", home),
        *[Route(f"/{p}", html_page) for p, _ in PAGES],
        Route("/traces/{trace_id}", trace_page),
        Route("/traces/{trace_id}/logs", trace_logs_fragment),
        Route("/sessions/{session_id}", session_page),
        Route("/alerts/{fingerprint}", alert_page),
        Route("/api/v1", api_index),
        Route("/api/v1/{page}", api_page),
        Route("/api/v1/{page}/{panel}", api_panel),
        Route("/api/v1/traces/{trace_id}/{panel}", api_trace_panel),
        Route("/api/v1/sessions/{session_id}/{panel}", api_session_panel),
        Route("/api/v1/alerts/{fingerprint}/{panel}", api_alert_panel),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]

    async def failed(request: Request, exc: Exception) -> Response:
        """An unexpected failure (a query the backend rejected, a table it cannot read):
        a 500 whose body names the cause in one line, JSON under /api/, HTML elsewhere."""
        msg = f"{type(exc).__name__}: {' '.join(str(exc).split())[:500]}"
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": msg}, status_code=500)
        return error_page(msg, 500)

    app = Starlette(routes=routes, middleware=[Middleware(_Headers)], exception_handlers={Exception: failed})
    app.state.reader = reader
    return app


class _Field(NamedTuple):
    """One labelled input of a search form (``checkbox``: the "with errors" kind, value 1)."""

    label: str
    name: str
    size: int | None = None
    placeholder: str | None = None
    checkbox: bool = False


_ERRORS = _Field("with errors", "errors", checkbox=True)
# page -> (fields, button) of the search form above its panels
_FORMS: dict[str, tuple[tuple[_Field, ...], str]] = {
    "traces": (
        (
            _Field("service", "service"),
            _Field("operation", "operation"),
            _Field("min duration (ms)", "min_ms", size=6),
            _Field("attribute", "attr", placeholder="http.route=/checkout"),
            _ERRORS,
        ),
        "Search",
    ),
    "sessions": (
        (
            _Field("funnel", "funnel", size=10),
            _Field("stopped at step", "last_step", size=10),
            _Field("country", "country", size=4),
            _Field("device", "device"),
            _ERRORS,
        ),
        "Filter",
    ),
    "logs": (
        (
            _Field("service", "service"),
            _Field("level", "level", size=6, placeholder="ERROR"),
            _Field("text", "text"),
            _Field("trace id", "trace_id", size=34),
        ),
        "Search",
    ),
}


def _search_form(request: Request, action: str, fields: tuple[_Field, ...], button: str) -> str:
    """A GET form to ``action``: the request's time range (``range``/``from``/``to``) carried in
    hidden fields, then one labelled input per field holding the request's value (escaped), a
    checkbox field checked when the request has it on (1, true, on), then ``button``."""
    q = request.query_params
    keep = "".join(
        f'<input type="hidden" name="{k}" value="{_e(q.get(k))}">' for k in ("range", "from", "to") if q.get(k)
    )
    inputs = []
    for f in fields:
        if f.checkbox:
            checked = " checked" if q.get(f.name) in ("1", "true", "on") else ""
            inputs.append(f'<label><input type="checkbox" name="{f.name}" value="1"{checked}> {f.label}</label> ')
            continue
        size = f' size="{f.size}"' if f.size is not None else ""
        ph = f' placeholder="{_e(f.placeholder)}"' if f.placeholder is not None else ""
        inputs.append(f'<label>{f.label} <input name="{f.name}" value="{_e(q.get(f.name))}"{size}{ph}></label> ')
    return f'<form class="search" method="get" action="{_e(action)}">{keep}{"".join(inputs)}<button>{button}</button></form>'


def _page_form(page: str, request: Request) -> str:
    """The search form of ``page`` ("" for a page without one)."""
    if page not in _FORMS:
        return ""
    fields, button = _FORMS[page]
    return _search_form(request, "/" + page, fields, button)


def _waterfall(tid: str, data: dict, api: str) -> str:
    """The spans' section: toolbar, how many spans and how long the trace is, and an empty
    waterfall table that app.js fills from the spans API (``data-src``: the same JSON, cached
    by snapshot) with a collapsible tree, parent before children (start order), a bar per span
    on the trace's time axis, and a "logs" link per span. The page stays small whatever the
    trace's size: only the rows in view are in the document (virtual scrolling)."""
    head = panel_html(
        {**data, "rows": [], "row_count": 0, "chart": None, "empty_reason": data["empty_reason"]}, api, []
    )
    if data["empty_reason"]:
        return head
    # drop the empty table the generic renderer added
    head = head.removesuffix("</section>").split('<div class="scroll">')[0]
    cols = data["columns"]
    i_start, i_end = cols.index("start"), cols.index("end")
    starts = [dt.datetime.fromisoformat(r[i_start]) for r in data["rows"] if r[i_start]]
    ends = [dt.datetime.fromisoformat(r[i_end]) for r in data["rows"] if r[i_end]]
    total = ((max(ends) - min(starts)).total_seconds() * 1000) if starts and ends else 0.0
    n = data["row_count"]
    return (
        head + f'<p class="note">{n} spans; the whole trace is {total:.3f} ms. Click ▾ to fold a subtree, '
        '"logs" to show only that span\'s logs.</p>'
        f'<div class="scroll waterfall-wrap"><table class="waterfall" data-src="{_e(api)}" data-spans="{n}" '
        f'data-trace="{_e(tid)}"><colgroup><col class="c-name"><col class="c-dur"><col class="c-bar"><col class="c-logs">'
        '</colgroup><thead><tr><th>span</th><th>duration ms</th><th class="bar-col">timeline</th><th></th></tr></thead>'
        "<tbody></tbody></table></div>"
        f'<p><a class="all-logs" href="/traces/{tid}">all logs of this trace</a></p></section>'
    )
