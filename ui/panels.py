"""The UI's panels: for each, the SQL it runs (the same text in DuckDB and Trino, every
value inlined as a literal so "show SQL" shows exactly what ran), its title, and what its
empty state says. Pages are lists of panels built from the request's parameters."""

from __future__ import annotations

import datetime as dt
import math
import re
from dataclasses import dataclass, field

from runners.query import sql_string

#: relative ranges a URL may carry (``range=1h``); ``all`` puts no bound on time
RANGES = {
    "15m": dt.timedelta(minutes=15),
    "1h": dt.timedelta(hours=1),
    "6h": dt.timedelta(hours=6),
    "24h": dt.timedelta(hours=24),
    "7d": dt.timedelta(days=7),
    "30d": dt.timedelta(days=30),
}
DEFAULT_RANGE = "7d"

#: the event-time column of each table (the one a time range filters)
TIME_COLUMN = {
    "events": "ts",
    "logs": "ts",
    "spans": "start",
    "traces": "start",
    "metrics": "window_start",
    "sessions": "start",
    "alerts": "ts",
    "dead_letters": "received_at",
    "pipeline_stats": "ts",
}


class BadParam(ValueError):
    """A URL parameter the UI cannot use; the message names it and says what it expects."""


@dataclass(frozen=True)
class TimeRange:
    """``[start, end)`` in UTC; None on a side means unbounded. ``label`` is what the page shows."""

    start: dt.datetime | None
    end: dt.datetime | None
    label: str
    params: tuple[tuple[str, str], ...]

    def where(self, column: str) -> str:
        """A SQL condition on ``column`` (TRUE when unbounded); literals in UTC, valid in
        DuckDB (session zone UTC) and Trino (``TIMESTAMP '... UTC'`` is with time zone)."""
        parts = []
        if self.start is not None:
            parts.append(f"{column} >= {_ts(self.start)}")
        if self.end is not None:
            parts.append(f"{column} < {_ts(self.end)}")
        return " AND ".join(parts) if parts else "TRUE"


def _ts(t: dt.datetime) -> str:
    return f"TIMESTAMP '{t.astimezone(dt.UTC).strftime('%Y-%m-%d %H:%M:%S.%f')} UTC'"


def _parse_time(name: str, text: str) -> dt.datetime:
    try:
        t = dt.datetime.fromisoformat(text)
    except ValueError:
        raise BadParam(f"{name}: expected an ISO-8601 time such as 2026-01-31T12:00:00Z, got {text!r}") from None
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)


def time_range(q, now: dt.datetime | None = None) -> TimeRange:
    """The request's time range: ``from``/``to`` (ISO-8601; no zone means UTC) win over
    ``range`` (one of :data:`RANGES` or ``all``; default :data:`DEFAULT_RANGE`), which
    ends at ``now``. Raises :class:`BadParam` naming the parameter."""
    now = now or dt.datetime.now(dt.UTC)
    frm, to = q.get("from"), q.get("to")
    if frm or to:
        start = _parse_time("from", frm) if frm else None
        end = _parse_time("to", to) if to else None
        if start and end and end <= start:
            raise BadParam(f"to ({to}) must be after from ({frm})")
        params = tuple((k, v) for k, v in (("from", frm), ("to", to)) if v)
        label = f"{start.isoformat() if start else 'beginning'} to {end.isoformat() if end else 'now'} (UTC)"
        return TimeRange(start, end, label, params)
    rng = q.get("range") or DEFAULT_RANGE
    if rng == "all":
        return TimeRange(None, None, "all time (UTC)", (("range", "all"),))
    if rng not in RANGES:
        raise BadParam(f"range: expected one of {', '.join([*RANGES, 'all'])}, got {rng!r}")
    return TimeRange(now - RANGES[rng], None, f"last {rng} (UTC, to now)", (("range", rng),))


@dataclass
class Panel:
    """One panel: ``id`` (unique in its page, the API path's last part), ``sql`` (None
    when the panel reads Iceberg metadata only), ``empty`` (why it is empty when no row
    matches), ``chart`` (how the page draws it: None, or a dict the browser reads)."""

    id: str
    title: str
    sql: str | None
    empty: str
    chart: dict | None = None
    note: str = ""
    links: dict[str, str] = field(default_factory=dict)  # column -> URL template with {value}


_HEX = re.compile(r"^[0-9a-fA-F]{1,64}$")


def _text_param(q, name: str, max_len: int = 200) -> str | None:
    v = (q.get(name) or "").strip()
    if not v:
        return None
    if len(v) > max_len:
        raise BadParam(f"{name}: at most {max_len} characters")
    return v


def _number_param(q, name: str) -> float | None:
    v = (q.get(name) or "").strip()
    if not v:
        return None
    try:
        x = float(v)
    except ValueError:
        raise BadParam(f"{name}: expected a number, got {v!r}") from None
    if not math.isfinite(x) or x < 0:
        raise BadParam(f"{name}: expected a finite number >= 0, got {v!r}")
    return x


def trace_id_param(text: str) -> str:
    """A trace id from a URL: hex digits only (what the tables hold), lower-cased."""
    if not _HEX.match(text or ""):
        raise BadParam(f"trace id: expected hex digits, got {text!r}")
    return text.lower()


# -- Pipeline health ------------------------------------------------------------------
def health_panels(tables: list[str], tr: TimeRange) -> list[Panel]:
    """Freshness and size per table, dead letters by reason, over time and with examples."""
    parts = [
        f"SELECT '{t}' AS table_name, count(*) AS rows_now, max({TIME_COLUMN[t]}) AS latest_event_time FROM obs.{t}"
        for t in tables
        if t in TIME_COLUMN
    ]
    tables_sql = "\nUNION ALL\n".join(parts) + "\nORDER BY table_name" if parts else None
    dl = tr.where("received_at")
    return [
        Panel(
            "tables",
            "Tables: freshness, rows, files, snapshots",
            tables_sql,
            "No table exists yet in this warehouse: run `obsflow run` (or the Kafka job) first.",
            note="rows_now and latest_event_time come from this SQL (all rows, not only the time range); "
            "last commit, files and snapshots from each table's Iceberg metadata (current snapshot's summary).",
        ),
        Panel(
            "commits",
            "Commits (newest 500, every table)",
            None,
            "No table has a commit yet: run `obsflow run` (or the Kafka job) first.",
            note="From each table's Iceberg metadata (snapshot summaries): records added per commit, and the "
            "source records read since the table's previous commit (the obsflow.offsets each commit carries).",
        ),
        Panel(
            "pipeline_counters",
            "Records in / accepted / dead-lettered / dropped, per commit",
            None,
            "No commit in this time range carries the job's run counters (obsflow.stats in the snapshot summary: "
            "written by `obsflow run` on Bytewax and Beam from this version on).",
            chart={
                "type": "line",
                "x": "committed_at",
                "y": "records_in",
                "also": ["records_accepted", "records_dead_lettered", "records_dropped"],
            },
            note="The run's counters when each commit was made (any table), cumulative since it started "
            "(run_started), and what each grew by since the run's previous commit; a run's last commit "
            "holds its totals. A commit carries its own process's counters (obsflow.stats in the snapshot "
            "summary); a run of several processes (one run_id: a Bytewax cluster) is the sum of each "
            "process's latest counters (processes: how many).",
        ),
        Panel(
            "tail_sampling",
            "Tail sampling: kept and dropped by reason (per run)",
            None,
            "No commit in this time range carries tail-sampling counters (the run read no spans, or its "
            "commits predate obsflow.stats).",
            note="traces sampled / not_sampled, dropped_traces and dropped_spans by reason, early decisions: the "
            "run's counters at its newest commit in the range (kept traces per policy: Traces, kept_by).",
        ),
        Panel(
            "dropped_by_reason",
            "Dropped records by reason (per run)",
            None,
            "No commit in this time range carries dropped-record counters (the run dropped nothing: no "
            "duplicate event, or its commits predate obsflow.stats).",
            note="records_dropped split by reason (duplicate: an event_id the event dedupe had already taken "
            "from that partition; docs/collect.md): the run's counters at its newest commit in the range, "
            "summed over its processes; run_records_dropped is the run's total beside them.",
        ),
        Panel(
            "dead_letters_by_reason",
            "Dead letters by reason",
            f"SELECT reason, count(*) AS records, min(received_at) AS first_seen, max(received_at) AS last_seen\n"
            f"FROM obs.dead_letters\nWHERE {dl}\nGROUP BY reason\nORDER BY records DESC, reason",
            "No dead letters in this time range: every record read was accepted (or none was read).",
        ),
        Panel(
            "dead_letters_over_time",
            "Dead letters per minute by reason",
            f"SELECT date_trunc('minute', received_at) AS minute, reason, count(*) AS records\n"
            f"FROM obs.dead_letters\nWHERE {dl}\nGROUP BY 1, 2\nORDER BY 1, 2",
            "No dead letters in this time range.",
            chart={"type": "line", "x": "minute", "series": "reason", "y": "records"},
        ),
        Panel(
            "dead_letter_examples",
            "Dead letter examples (latest 3 per reason)",
            f"SELECT reason, received_at, detail, source, source_topic, source_partition, source_offset, item_index,\n"
            f"       raw_size, raw_truncated, raw_text, raw\nFROM (\n"
            f"    SELECT *, row_number() OVER (PARTITION BY reason ORDER BY received_at DESC, source_offset DESC) AS n\n"
            f"    FROM obs.dead_letters\n    WHERE {dl}\n) AS d\nWHERE n <= 3\nORDER BY reason, received_at DESC",
            "No dead letters in this time range, so no examples.",
        ),
    ]


# -- Services (RED from obs.metrics, as pipelines/queries/p99_latency_by_service.sql) ----------
# Ratios divide a DOUBLE: in Trino a decimal literal (1.0, 60.0) is DECIMAL and a quotient of
# decimals keeps the larger operand scale (60.0 -> one digit), so `x / 60.0` differs from DuckDB.
def _red_where(tr: TimeRange) -> str:
    return (
        f"name IN ('span.calls', 'span.errors', 'span.duration_ms') AND resolution = '1m' "
        f"AND labels['kind'] = 'SERVER'\n  AND {tr.where('window_start')}"
    )


def services_panels(tr: TimeRange) -> list[Panel]:
    """Rate, error rate and p50/p95/p99 per service (overall, over time, per operation)."""
    base = (
        f"SELECT labels['service'] AS service, {{extra}}window_start,\n"
        f"       sum(CASE WHEN name = 'span.calls' THEN \"count\" ELSE 0 END) AS calls,\n"
        f"       sum(CASE WHEN name = 'span.errors' THEN \"count\" ELSE 0 END) AS errors,\n"
        f"       max(CASE WHEN name = 'span.duration_ms' THEN p50 END) AS p50,\n"
        f"       max(CASE WHEN name = 'span.duration_ms' THEN p95 END) AS p95,\n"
        f"       max(CASE WHEN name = 'span.duration_ms' THEN p99 END) AS p99\n"
        f"FROM obs.metrics\nWHERE {_red_where(tr)}\nGROUP BY {{group}}"
    )
    per_service = (
        "WITH m AS (\n" + base.format(extra="", group="labels['service'], window_start") + "\n)\n"
        "SELECT service, sum(calls) AS calls, round(CAST(sum(calls) AS DOUBLE) / (60 * count(*)), 3) AS rate_per_s,\n"
        "       sum(errors) AS errors, round(CAST(sum(errors) AS DOUBLE) / nullif(sum(calls), 0), 4) AS error_rate,\n"
        "       round(max(p50), 3) AS worst_minute_p50_ms, round(max(p95), 3) AS worst_minute_p95_ms,\n"
        "       round(max(p99), 3) AS worst_minute_p99_ms\n"
        "FROM m\nGROUP BY service\nORDER BY service"
    )
    over_time = (
        "SELECT window_start AS minute, labels['service'] AS service,\n"
        "       round(CAST(sum(CASE WHEN name = 'span.calls' THEN \"count\" ELSE 0 END) AS DOUBLE) / 60, 3) AS rate_per_s,\n"
        "       round(CAST(sum(CASE WHEN name = 'span.errors' THEN \"count\" ELSE 0 END) AS DOUBLE)\n"
        "             / nullif(sum(CASE WHEN name = 'span.calls' THEN \"count\" ELSE 0 END), 0), 4) AS error_rate,\n"
        "       round(max(CASE WHEN name = 'span.duration_ms' THEN p99 END), 3) AS p99_ms\n"
        f"FROM obs.metrics\nWHERE {_red_where(tr)}\nGROUP BY 1, 2\nORDER BY 1, 2"
    )
    per_op = (
        "SELECT labels['service'] AS service, labels['operation'] AS operation,\n"
        "       sum(CASE WHEN name = 'span.calls' THEN \"count\" ELSE 0 END) AS calls,\n"
        "       sum(CASE WHEN name = 'span.errors' THEN \"count\" ELSE 0 END) AS errors,\n"
        "       round(max(CASE WHEN name = 'span.duration_ms' THEN p50 END), 3) AS worst_minute_p50_ms,\n"
        "       round(max(CASE WHEN name = 'span.duration_ms' THEN p95 END), 3) AS worst_minute_p95_ms,\n"
        "       round(max(CASE WHEN name = 'span.duration_ms' THEN p99 END), 3) AS worst_minute_p99_ms,\n"
        "       max_by(CASE WHEN name = 'span.duration_ms' THEN exemplar_trace_ids END,\n"
        "              CASE WHEN name = 'span.duration_ms' THEN p99 END) AS exemplar_trace_ids\n"
        f"FROM obs.metrics\nWHERE {_red_where(tr)}\nGROUP BY 1, 2\nORDER BY 1, 2"
    )
    empty = (
        "No RED rollups (span.calls / span.errors / span.duration_ms of SERVER spans, 1m) in this time range: "
        "no spans were read in it, or the trace flow has no `red:` rollup."
    )
    return [
        Panel(
            "per_service",
            "Per service: rate, error rate, latency",
            per_service,
            empty,
            note="From the RED metrics computed over every span before sampling. Rate = calls per second over the "
            "minutes with calls; latency quantiles are the worst series-minute's (as "
            "pipelines/queries/p99_latency_by_service.sql).",
        ),
        Panel(
            "over_time",
            "Per minute: rate, error rate, p99",
            over_time,
            empty,
            chart={
                "type": "line",
                "x": "minute",
                "series": "service",
                "y": "p99_ms",
                "choices": ["p99_ms", "rate_per_s", "error_rate"],
            },
        ),
        Panel(
            "per_operation",
            "Per operation (exemplars open their trace)",
            per_op,
            empty,
            links={"exemplar_trace_ids": "/traces/{value}"},
        ),
    ]


# -- Traces -----------------------------------------------------------------------------
def trace_search_panel(q, tr: TimeRange) -> Panel:
    """Kept traces matching the search (service, operation, min duration, errors only,
    attribute key=value on any of its spans), newest first, with why each was kept."""
    where = [tr.where("t.start")]
    span_conds = []
    service, operation = _text_param(q, "service"), _text_param(q, "operation")
    if service:
        span_conds.append(f"s.service = {sql_string(service)}")
    if operation:
        span_conds.append(f"s.name = {sql_string(operation)}")
    attr = _text_param(q, "attr", 400)
    if attr:
        if "=" not in attr:
            raise BadParam(f"attr: expected key=value, got {attr!r}")
        k, v = attr.split("=", 1)
        span_conds.append(f"s.attributes[{sql_string(k.strip())}] = {sql_string(v.strip())}")
    if span_conds:
        where.append("t.trace_id IN (SELECT s.trace_id FROM obs.spans AS s WHERE " + " AND ".join(span_conds) + ")")
    min_ms = _number_param(q, "min_ms")
    if min_ms is not None:
        where.append(f"t.trace_duration_ms >= {min_ms!r}")
    if q.get("errors") in ("1", "true", "on"):
        where.append("t.error_count > 0")
    limit = int(_number_param(q, "limit") or 100)
    limit = max(1, min(limit, 1000))
    sql = (
        "SELECT t.trace_id, t.root_service, t.root_name, t.start, round(t.trace_duration_ms, 3) AS duration_ms,\n"
        "       t.span_count, t.error_count, t.services, t.sampling_policy AS kept_by, t.adjusted_count\n"
        "FROM obs.traces AS t\nWHERE " + "\n  AND ".join(where) + f"\nORDER BY t.start DESC, t.trace_id\nLIMIT {limit}"
    )
    return Panel(
        "search",
        "Kept traces",
        sql,
        "No kept trace matches this search in this time range (a trace the tail sampler dropped is not stored; "
        "its spans still count in Services).",
        note="kept_by: the tail-sampling policy that kept the trace; adjusted_count: how many traces it stands "
        "for (1 / the sampling probability).",
        links={"trace_id": "/traces/{value}"},
    )


def trace_panels(trace_id: str, span_id: str | None = None) -> list[Panel]:
    """One trace: its summary row, its spans (the waterfall) and its logs (every service,
    time order; only one span's with ``span_id``)."""
    tid = sql_string(trace_id)
    log_where = f"trace_id = {tid}" + (f" AND span_id = {sql_string(span_id)}" if span_id else "")
    return [
        Panel(
            "summary",
            "Trace",
            'SELECT trace_id, root_service, root_name, start, "end", trace_duration_ms, span_count,\n'
            "       error_count, services, sampling_policy AS kept_by, adjusted_count, decided_at\n"
            f"FROM obs.traces\nWHERE trace_id = {tid}",
            "This trace is not in obs.traces: it was not kept by the tail sampler, has expired, or the id is wrong.",
        ),
        Panel(
            "spans",
            "Spans",
            'SELECT span_id, parent_span_id, service, name, kind, start, "end", duration_ms, status_code,\n'
            "       status_message, sampling_policy\n"
            f"FROM obs.spans\nWHERE trace_id = {tid}\nORDER BY start, span_id",
            "No span of this trace is stored (not kept, or expired).",
        ),
        Panel(
            "logs",
            "Logs of this trace" + (f" (span {span_id})" if span_id else ""),
            "SELECT ts, service, level, message, span_id, host, sample_rate\n"
            f"FROM obs.logs\nWHERE {log_where}\nORDER BY ts, service",
            "No log line of this trace is stored"
            + (" for this span" if span_id else "")
            + " (its services logged nothing with its trace id, or the lines were sampled out).",
        ),
    ]


# -- Product ----------------------------------------------------------------------------
def funnel_panels(funnels: list[str], tr: TimeRange) -> list[Panel]:
    """Per funnel of the spec: steps with sessions, % of the first step, step-to-step
    conversion and drop-off (as pipelines/queries/funnel_dropoff.sql, in the time range);
    then time to convert."""
    out = []
    for f in funnels:
        sql = (
            "WITH steps AS (\n"
            "    SELECT CAST(labels['step_index'] AS INTEGER) AS step_index,\n"
            "           labels['step'] AS step,\n"
            "           sum(CASE WHEN name = 'funnel.step.reached' THEN \"count\" ELSE 0 END) AS sessions,\n"
            "           sum(CASE WHEN name = 'funnel.step.dropoff' THEN \"count\" ELSE 0 END) AS dropped_after_step\n"
            "    FROM obs.metrics\n"
            f"    WHERE name IN ('funnel.step.reached', 'funnel.step.dropoff') AND labels['funnel'] = {sql_string(f)}\n"
            f"      AND {tr.where('window_start')}\n"
            "    GROUP BY 1, 2\n)\n"
            "SELECT step_index, step, sessions, dropped_after_step,\n"
            "       round(100 * CAST(sessions AS DOUBLE) / nullif(first_value(sessions) OVER (ORDER BY step_index), 0), 1) AS pct_of_first_step,\n"
            "       round(100 * CAST(sessions AS DOUBLE) / nullif(lag(sessions) OVER (ORDER BY step_index), 0), 1) AS pct_of_previous_step\n"
            "FROM steps\nORDER BY step_index"
        )
        out.append(
            Panel(
                f"funnel_{f}",
                f"Funnel {f!r}",
                sql,
                f"No funnel report rows for {f!r} in this time range: report rows are written when a report "
                "window closes (sessions end after the session gap), so a short or recent run may have none yet.",
                chart={"type": "bar", "x": "step", "y": "sessions"},
                note="sessions: sessions that reached the step; dropped_after_step: sessions whose last step it "
                "was (a converted session did not drop out).",
            )
        )
    out.append(
        Panel(
            "time_to_convert",
            "Time to convert (ms, per report window)",
            "SELECT labels['funnel'] AS funnel, window_start, \"count\" AS conversions,\n"
            '       round("sum" / "count", 1) AS avg_ms, p50 AS p50_ms, p75 AS p75_ms, p90 AS p90_ms, p95 AS p95_ms,\n'
            '       "min" AS min_ms, "max" AS max_ms\n'
            f"FROM obs.metrics\nWHERE name = 'funnel.time_to_convert_ms' AND {tr.where('window_start')}\n"
            "ORDER BY funnel, window_start",
            "No session converted (reached a funnel's last step) in a closed report window of this time range.",
        )
    )
    out.append(
        Panel(
            "step_time",
            "Time between steps (ms, from the previous step)",
            "SELECT labels['funnel'] AS funnel, CAST(labels['step_index'] AS INTEGER) AS step_index,\n"
            "       labels['step'] AS step, sum(\"count\") AS sessions,\n"
            '       round(sum("sum") / nullif(sum("count"), 0), 1) AS avg_ms,\n'
            "       round(max(p50), 1) AS worst_window_p50_ms, round(max(p75), 1) AS worst_window_p75_ms,\n"
            "       round(max(p95), 1) AS worst_window_p95_ms\n"
            f"FROM obs.metrics\nWHERE name = 'funnel.step.time_ms' AND {tr.where('window_start')}\n"
            "GROUP BY 1, 2, 3\nORDER BY 1, 2",
            "No step timings in a closed report window of this time range.",
        )
    )
    return out


# -- Logs -------------------------------------------------------------------------------
def logs_panels(q, tr: TimeRange) -> list[Panel]:
    """Log search (service, level, text, trace id; newest first) and counts per service and
    level, extrapolated with sum(1 / sample_rate) and labelled as estimates."""
    where = [tr.where("ts")]
    service, level, text = _text_param(q, "service"), _text_param(q, "level"), _text_param(q, "text")
    if service:
        where.append(f"service = {sql_string(service)}")
    if level:
        where.append(f"level = {sql_string(level.upper())}")
    if text:
        where.append(f"strpos(lower(message), {sql_string(text.lower())}) > 0")
    tid = _text_param(q, "trace_id")
    if tid:
        where.append(f"trace_id = {sql_string(trace_id_param(tid))}")
    cond = "\n  AND ".join(where)
    empty = "No stored log line matches in this time range (lines the log sampler dropped are not stored)."
    return [
        Panel(
            "counts",
            "Lines per service and level (estimated)",
            "SELECT service, level, count(*) AS lines_stored, round(sum(1.0 / sample_rate), 1) AS lines_estimated\n"
            f"FROM obs.logs\nWHERE {cond}\nGROUP BY service, level\nORDER BY service, level",
            empty,
            note="lines_estimated = sum(1 / sample_rate): an estimate of the lines sent, since sampled-out lines "
            "are not stored.",
        ),
        Panel(
            "search",
            "Log lines (newest 200)",
            "SELECT ts, service, level, message, trace_id, span_id, host, sample_rate\n"
            f"FROM obs.logs\nWHERE {cond}\nORDER BY ts DESC, service\nLIMIT 200",
            empty,
            links={"trace_id": "/traces/{value}"},
        ),
    ]


# -- Alerts -----------------------------------------------------------------------------
def alerts_panels(tr: TimeRange) -> list[Panel]:
    """What fires now (each alert's latest state, whatever the range) and the state changes
    (pending, firing, resolved, inactive) in the range."""
    return [
        Panel(
            "firing_now",
            "Firing now",
            "SELECT rule, severity, fingerprint, labels, value, ts AS since\n"
            "FROM (\n    SELECT *, row_number() OVER (PARTITION BY fingerprint ORDER BY ts DESC) AS n\n"
            "    FROM obs.alerts\n) AS a\nWHERE n = 1 AND status = 'firing'\nORDER BY severity, rule, fingerprint",
            "No alert is firing: every alert's latest state change is pending, resolved or inactive (or no rule ever fired).",
            links={"fingerprint": "/alerts/{value}"},
        ),
        Panel(
            "changes",
            "State changes",
            "SELECT ts, rule, status, severity, fingerprint, labels, round(value, 3) AS value, starts_at, ends_at\n"
            f"FROM obs.alerts\nWHERE {tr.where('ts')}\nORDER BY ts DESC, rule, fingerprint",
            "No alert changed state in this time range.",
            links={"fingerprint": "/alerts/{value}"},
        ),
        Panel(
            "per_rule",
            "State changes per rule and status",
            f"SELECT rule, status, count(*) AS changes\nFROM obs.alerts\nWHERE {tr.where('ts')}\nGROUP BY 1, 2\nORDER BY 1, 2",
            "No alert changed state in this time range.",
            chart={"type": "bar", "x": "status", "series": None, "y": "changes"},
        ),
    ]


# -- Product: breakdowns, sessions, error groups ----------------------------------------
BREAKDOWNS = ("geo_country", "device", "browser")
_SESSION_ID = re.compile(r"^[A-Za-z0-9_.:\-]{1,128}$")


def session_id_param(text: str) -> str:
    """A session id from a URL: letters, digits and ``_.:-`` only (what the tables hold)."""
    if not _SESSION_ID.match(text or ""):
        raise BadParam(f"session id: expected letters, digits, '_', '.', ':' or '-', got {text!r}")
    return text


def product_extra_panels(funnels: dict[str, int], tr: TimeRange) -> list[Panel]:
    """Per funnel, conversion broken down by country, device and browser (from obs.sessions;
    a session converted when it reached every step), then error groups from error events."""
    out = []
    for f, n_steps in funnels.items():
        for b in BREAKDOWNS:
            src = (
                "obs.sessions AS s"
                if b != "browser"
                else "obs.sessions AS s\nLEFT JOIN (SELECT session_id, min(browser) AS browser FROM obs.events GROUP BY session_id) AS e\n"
                "  ON e.session_id = s.session_id"
            )
            col = f"s.{b}" if b != "browser" else "e.browser"
            out.append(
                Panel(
                    f"breakdown_{f}_{b}",
                    f"Funnel {f!r} by {b.replace('geo_', '')}",
                    f"SELECT coalesce({col}, '(unknown)') AS {b}, count(*) AS sessions_entered,\n"
                    f"       sum(CASE WHEN s.funnel_steps_reached >= {n_steps} THEN 1 ELSE 0 END) AS converted,\n"
                    f"       round(100 * CAST(sum(CASE WHEN s.funnel_steps_reached >= {n_steps} THEN 1 ELSE 0 END) AS DOUBLE) / count(*), 1) AS pct_converted\n"
                    f"FROM {src}\nWHERE s.funnel = {sql_string(f)} AND s.funnel_steps_reached >= 1 AND {tr.where('s.start')}\n"
                    f"GROUP BY 1\nORDER BY sessions_entered DESC, 1",
                    f"No session entered funnel {f!r} in this time range (sessions are written when they end).",
                )
            )
    out.append(
        Panel(
            "error_groups",
            "Client error groups",
            "SELECT error_message, count(*) AS occurrences, count(DISTINCT session_id) AS affected_sessions,\n"
            "       min(ts) AS first_seen, max(ts) AS last_seen, min(error_stack) AS sample_stack\n"
            f"FROM obs.events\nWHERE event_type = 'error' AND {tr.where('ts')}\n"
            "GROUP BY error_message\nORDER BY occurrences DESC, error_message",
            "No client error event in this time range.",
        )
    )
    return out


def sessions_panels(q, tr: TimeRange) -> list[Panel]:
    """Sessions, newest first, filtered by funnel, the funnel step they stopped at
    (a drop-off), country, device, or having errors."""
    where = [tr.where("start")]
    for name, col in (
        ("funnel", "funnel"),
        ("last_step", "funnel_last_step"),
        ("country", "geo_country"),
        ("device", "device"),
    ):
        v = _text_param(q, name)
        if v:
            where.append(f"{col} = {sql_string(v)}")
    if q.get("errors") in ("1", "true", "on"):
        where.append("errors > 0")
    return [
        Panel(
            "list",
            "Sessions (newest 200)",
            "SELECT session_id, start, duration_ms, events, errors, funnel, funnel_steps_reached, funnel_last_step,\n"
            "       abandoned, geo_country, device, user_pseudonym\n"
            "FROM obs.sessions\nWHERE " + "\n  AND ".join(where) + "\nORDER BY start DESC, session_id\nLIMIT 200",
            "No session matches in this time range (a session is written when it ends: after the session gap).",
            links={"session_id": "/sessions/{value}"},
        )
    ]


def session_panels(session_id: str) -> list[Panel]:
    """One session: its row and its events in time order (the timeline)."""
    sid = sql_string(session_id)
    return [
        Panel(
            "summary",
            "Session",
            f"SELECT *\nFROM obs.sessions\nWHERE session_id = {sid}",
            "This session is not in obs.sessions (not ended yet, expired, or the id is wrong).",
        ),
        Panel(
            "timeline",
            "Timeline",
            "SELECT ts, event_type, page, target, form, form_step, scroll_depth, duration_ms, error_message,\n"
            "       browser, device, geo_country\n"
            f"FROM obs.events\nWHERE session_id = {sid}\nORDER BY ts, event_index",
            "No event of this session is stored.",
        ),
    ]


def fingerprint_param(text: str) -> str:
    """An alert fingerprint from a URL: hex digits only."""
    if not _HEX.match(text or ""):
        raise BadParam(f"alert fingerprint: expected hex digits, got {text!r}")
    return text.lower()


def alert_history_panel(fingerprint: str) -> Panel:
    """Every state change of one alert (pending, firing, resolved, inactive), in time order."""
    return Panel(
        "history",
        "State changes of this alert",
        "SELECT ts, status, rule, severity, labels, round(value, 3) AS value, starts_at, ends_at\n"
        f"FROM obs.alerts\nWHERE fingerprint = {sql_string(fingerprint)}\nORDER BY ts",
        "No state change of this alert is stored (expired, or the fingerprint is wrong).",
    )


def _resolution(td: dt.timedelta) -> str:
    s = int(td.total_seconds())
    for unit, n in (("d", 86400), ("h", 3600), ("m", 60)):
        if s % n == 0:
            return f"{s // n}{unit}"
    return f"{s}s"


def alert_series_panel(rule, series_labels: dict[str, str], tr: TimeRange) -> Panel:
    """The rollup series an alert rule evaluates for one alert's labels, with the rule's
    threshold; each window links to its exemplar traces (or the kept traces of the
    service in that window when the series has no exemplar)."""
    sel = rule.select
    conds = [f"name = {sql_string(sel.metric)}", f"resolution = {sql_string(_resolution(rule.resolution))}"]
    for k, v in sorted({**sel.match, **series_labels}.items()):
        conds.append(f"labels[{sql_string(k)}] = {sql_string(v)}")
    conds.append(tr.where("window_start"))
    threshold = "CAST(NULL AS DOUBLE)" if rule.threshold is None else f"CAST({float(rule.threshold)!r} AS DOUBLE)"
    sql = (
        f"SELECT window_start, window_end, labels['service'] AS service, round({sel.value}, 3) AS value,\n"
        f"       {threshold} AS threshold, exemplar_trace_ids\nFROM obs.metrics\nWHERE "
        + "\n  AND ".join(conds)
        + "\nORDER BY window_start"
    )
    note = (
        f"rule {rule.name}: {sel.metric} {sel.value} {rule.op} {rule.threshold}"
        + (f" (the rule divides by {rule.ratio_of.metric}; the series shown is the numerator)" if rule.ratio_of else "")
        + "; a window opens its exemplar traces, or the kept traces of the service in that window."
    )
    return Panel(
        "series",
        "Its rollup series and threshold",
        sql,
        "No rollup row of this series in this time range.",
        chart={"type": "line", "x": "window_start", "y": "value", "also": ["threshold"]},
        note=note,
        links={
            "exemplar_trace_ids": "/traces/{value}",
            "window_start": "/traces?service={service}&from={window_start}&to={window_end}",
        },
    )
